//! Boots tiny hand-assembled guests (no Linux needed) through the real
//! `nimbus-vmm` binary and checks the exit code each way of ending gives.
//!
//! The payloads are assembled at test time with binutils (`as`, `ld`);
//! they fail (not skip) when /dev/kvm or binutils is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

fn is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

fn workdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nimbus-payload-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Prints `msg` on COM1 (the code for both 32- and 64-bit mode).
const PRINT: &str = r#"
    mov $msg, %esi
1:  lodsb
    test %al, %al
    jz 2f
    mov $0x3f8, %dx
    out %al, %dx
    jmp 1b
2:
"#;

const POWER_OFF: &str = "mov $0x604, %dx\n mov $0x2000, %ax\n out %ax, %dx\n hlt\n";

/// Assembles `body` into an ELF. `pvh`: 32-bit code with a PVH note;
/// otherwise 64-bit code entered through the Linux 64-bit protocol.
fn build(name: &str, pvh: bool, body: &str) -> Option<PathBuf> {
    let dir = workdir(name);
    let note = if pvh {
        ".section .note.pvh, \"a\", @note\n .balign 4\n .long 4, 4, 18\n .asciz \"Xen\"\n .balign 4\n .long _start\n"
    } else {
        ""
    };
    let mode = if pvh { ".code32" } else { ".code64" };
    let src = format!(
        "{note}\n .text\n {mode}\n .globl _start\n_start:\n{body}\nmsg: .asciz \"NIMBUS PAYLOAD {name}\\n\"\n"
    );
    let s = dir.join("p.S");
    std::fs::write(&s, src).unwrap();
    let o = dir.join("p.o");
    let elf = dir.join("p.elf");
    let ok = Command::new("as")
        .arg("--64")
        .arg("-o")
        .arg(&o)
        .arg(&s)
        .status()
        .ok()?
        .success()
        && Command::new("ld")
            .args([
                "-m",
                "elf_x86_64",
                "-static",
                "-nostdlib",
                "-z",
                "max-page-size=0x1000",
            ])
            .args(["-Ttext=0x200000", "-e", "_start", "-o"])
            .arg(&elf)
            .arg(&o)
            .status()
            .ok()?
            .success();
    ok.then_some(elf)
}

fn run_vmm(kernel: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nimbus-vmm"))
        .arg("--kernel")
        .arg(kernel)
        .args(["--memory", "64M"])
        .args(extra)
        .output()
        .unwrap()
}

macro_rules! payload {
    ($name:expr, $pvh:expr, $body:expr) => {{
        // Not skipped when missing: a test that silently skips hides a
        // broken CI machine. scripts/install-deps.sh installs both.
        assert!(kvm_usable(), "/dev/kvm is not usable on this host");
        build($name, $pvh, &$body)
            .expect("binutils (as, ld) are needed to assemble the test payloads")
    }};
}

#[test]
fn pvh_payload_prints_and_powers_off() {
    let elf = payload!("pvh", true, format!("{PRINT}{POWER_OFF}"));
    let out = run_vmm(&elf, &["--cpus", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(stdout.contains("NIMBUS PAYLOAD pvh"), "stdout: {stdout}");
    assert!(stderr.contains("guest powered off"), "stderr: {stderr}");
}

#[test]
fn long_mode_payload_to_serial_file_and_reboot() {
    let body = format!("{PRINT}mov $0xfe, %al\n out %al, $0x64\n hlt\n");
    let elf = payload!("long", false, body);
    let log = workdir("long").join("serial.log");
    let out = run_vmm(&elf, &["--serial-output", log.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let serial = std::fs::read_to_string(&log).unwrap();
    assert!(serial.contains("NIMBUS PAYLOAD long"), "serial: {serial}");
    assert!(out.stdout.is_empty());
}

#[test]
fn triple_fault_exits_4() {
    // #UD with an empty IDT escalates to a triple fault.
    let elf = payload!("ud2", false, "ud2\n");
    let out = run_vmm(&elf, &[]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unreadable_port_reads_all_ones() {
    // in from an unclaimed port must give 0xff; power off only if it did.
    let body =
        format!("mov $0x80, %dx\n in %dx, %al\n cmp $0xff, %al\n jne 3f\n{POWER_OFF}3: ud2\n");
    let elf = payload!("floating", true, body);
    let out = run_vmm(&elf, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pvm_assists_clac_and_reports_xrstor() {
    if !is_pvm() {
        eprintln!("skipped: not a kvm-pvm host");
        return;
    }
    // clac is assisted (RFLAGS.AC cleared), then the payload powers off.
    let body = format!("clac\n{PRINT}{POWER_OFF}");
    let elf = payload!("clac", false, body);
    let out = run_vmm(&elf, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("clac=1"), "{stderr}");

    // xrstor cannot be assisted: exit 5 naming it.
    let elf = payload!("xrstor", false, "xor %eax, %eax\n xrstor (%rax)\n hlt\n");
    let out = run_vmm(&elf, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("xrstor"), "{stderr}");
    assert!(stderr.contains("0f ae 28"), "{stderr}");
}

#[test]
fn invalid_config_exits_2_with_reason() {
    let out = run_vmm(Path::new("/nonexistent/vmlinux"), &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("kernel /nonexistent/vmlinux"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let me = std::env::current_exe().unwrap();
    for args in [
        &["--cpus", "0"][..],
        &["--cpus", "300"],
        &["--memory", "lots"],
        &["--memory", "8"],
    ] {
        let out = run_vmm(&me, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_nimbus-vmm"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

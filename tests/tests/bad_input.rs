//! Every bad input to `nimbus run` gets a clear error naming the problem and
//! exit status 2, never a panic, and no guest is started.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{images, nimbus, run_with_deadline, Finished};

const LIMIT: Duration = Duration::from_secs(60);

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nimbus-bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir.join(name)
}

/// Runs `nimbus run ARGS` and checks the refusal.
fn refused(args: &[&str], kernel: Option<&Path>, expected: &[&str]) -> Finished {
    let mut command = nimbus();
    command.arg("run");
    if let Some(kernel) = kernel {
        command.arg("--kernel").arg(kernel);
    }
    command.args(args);
    check(command, expected)
}

fn check(command: Command, expected: &[&str]) -> Finished {
    let out = run_with_deadline(command, LIMIT);
    assert_eq!(out.code, Some(2), "{}", out.transcript());
    for needle in expected {
        assert!(
            out.stderr.contains(needle),
            "stderr lacks {needle:?}\n{}",
            out.transcript()
        );
    }
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE"] {
        assert!(!out.stderr.contains(bad), "{}", out.transcript());
    }
    assert!(
        !out.stdout.contains("Linux version"),
        "a guest was started\n{}",
        out.transcript()
    );
    out
}

#[test]
fn missing_kernel_file() {
    refused(
        &[],
        Some(Path::new("/nonexistent/nimbus/vmlinux")),
        &["/nonexistent/nimbus/vmlinux", "kernel"],
    );
}

#[test]
fn kernel_that_is_a_directory() {
    let dir = scratch("a-directory");
    std::fs::create_dir_all(&dir).unwrap();
    refused(&[], Some(&dir), &["kernel", "a-directory"]);
}

#[test]
fn kernel_that_is_neither_elf_nor_bzimage() {
    let file = scratch("garbage-kernel");
    std::fs::write(&file, vec![0x5a_u8; 64 * 1024]).unwrap();
    refused(&[], Some(&file), &["garbage-kernel", "ELF", "bzImage"]);
}

#[test]
fn missing_initrd_file() {
    let images = images();
    refused(
        &["--initrd", "/nonexistent/initrd.img"],
        Some(&images.vmlinux),
        &["/nonexistent/initrd.img", "initrd"],
    );
}

#[test]
fn zero_cpus() {
    let images = images();
    refused(&["--cpus", "0"], Some(&images.vmlinux), &["cpus", "0"]);
}

#[test]
fn memory_below_32_mib() {
    let images = images();
    refused(
        &["--memory", "16M"],
        Some(&images.vmlinux),
        &["memory", "32"],
    );
}

#[test]
fn memory_above_what_the_host_has_free() {
    let images = images();
    refused(
        &["--memory", "65536G"],
        Some(&images.vmlinux),
        &["memory", "available"],
    );
}

#[test]
fn memory_size_that_does_not_parse() {
    let images = images();
    refused(
        &["--memory", "12Q"],
        Some(&images.vmlinux),
        &["memory", "12Q"],
    );
}

/// Runs nimbus in a private mount namespace whose /dev is an empty tmpfs
/// (nothing on the host changes; the namespace ends with the process).
#[test]
fn dev_kvm_missing() {
    let images = images();
    let nimbus_path = common::bin_dir().join("nimbus");
    let script = format!(
        "mount -t tmpfs none /dev && exec '{}' run --kernel '{}' --cmdline nimbus.poweroff=1",
        nimbus_path.display(),
        images.vmlinux.display()
    );
    let mut command = Command::new("unshare");
    command.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    check(command, &["/dev/kvm"]);
}

/// /dev/kvm exists but is not a KVM device (a bind mount of /dev/null in a
/// private mount namespace).
#[test]
fn dev_kvm_not_a_kvm_device() {
    let images = images();
    let nimbus_path = common::bin_dir().join("nimbus");
    let script = format!(
        "mount --bind /dev/null /dev/kvm && exec '{}' run --kernel '{}' --cmdline nimbus.poweroff=1",
        nimbus_path.display(),
        images.vmlinux.display()
    );
    let mut command = Command::new("unshare");
    command.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    check(command, &["/dev/kvm", "not a usable KVM device"]);
}

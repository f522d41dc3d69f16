//! The API socket, the console socket and the exit record, driven through
//! the real `nimbus-vmm` binary with a tiny hand-assembled guest (no Linux):
//! it echoes every byte of serial input back and powers off after an `F`
//! (the shutdown line `NIMBUS_POWEROFF` has one), polling the UART in a busy
//! loop, so its vCPU thread always burns CPU while it runs.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const ECHO_UNTIL_F: &str = r#"
    mov $msg, %esi
1:  lodsb
    test %al, %al
    jz 2f
    mov $0x3f8, %dx
    out %al, %dx
    jmp 1b
2:  mov $0x3fd, %dx
    in %dx, %al
    test $1, %al
    jz 2b
    mov $0x3f8, %dx
    in %dx, %al
    out %al, %dx
    cmp $0x46, %al
    jne 2b
    mov $0x604, %dx
    mov $0x2000, %ax
    out %ax, %dx
    hlt
msg: .asciz "ECHO GUEST UP\n"
"#;

fn workdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nimbus-api-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Assembles the 64-bit payload (entered through the Linux 64-bit protocol).
fn payload(dir: &Path) -> PathBuf {
    assert!(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok(),
        "/dev/kvm is not usable on this host"
    );
    let s = dir.join("p.S");
    std::fs::write(
        &s,
        format!(".text\n.code64\n.globl _start\n_start:\n{ECHO_UNTIL_F}"),
    )
    .unwrap();
    let o = dir.join("p.o");
    let elf = dir.join("p.elf");
    let ok = Command::new("as")
        .args(["--64", "-o"])
        .arg(&o)
        .arg(&s)
        .status()
        .expect("binutils `as` is needed")
        .success()
        && Command::new("ld")
            .args(["-m", "elf_x86_64", "-static", "-nostdlib"])
            .args([
                "-z",
                "max-page-size=0x1000",
                "-Ttext=0x200000",
                "-e",
                "_start",
                "-o",
            ])
            .arg(&elf)
            .arg(&o)
            .status()
            .expect("binutils `ld` is needed")
            .success();
    assert!(ok, "assembling the payload failed");
    elf
}

struct Vmm {
    child: Child,
    dir: PathBuf,
}

impl Vmm {
    fn start(dir: &Path, kernel: &Path) -> Vmm {
        let child = Command::new(env!("CARGO_BIN_EXE_nimbus-vmm"))
            .arg("--kernel")
            .arg(kernel)
            // Two vCPUs: the second never gets a SIPI from this guest and
            // waits inside KVM_RUN, which pause must interrupt too.
            .args(["--memory", "64M", "--cpus", "2"])
            .arg("--serial-output")
            .arg(dir.join("console.log"))
            .arg("--api-socket")
            .arg(dir.join("api.sock"))
            .arg("--console-socket")
            .arg(dir.join("console.sock"))
            .arg("--exit-file")
            .arg(dir.join("exit.json"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
            .spawn()
            .expect("spawn nimbus-vmm");
        let vmm = Vmm {
            child,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(vmm.dir.join("api.sock")).is_err() {
            assert!(Instant::now() < deadline, "no API socket: {}", vmm.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        vmm
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    fn api(&self) -> Api {
        let s = UnixStream::connect(self.dir.join("api.sock")).expect("connect API");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Api {
            reader: BufReader::new(s.try_clone().unwrap()),
            writer: s,
        }
    }

    fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("nimbus-vmm did not exit: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn exit_record(&self) -> Value {
        let text = std::fs::read_to_string(self.dir.join("exit.json")).expect("exit record");
        serde_json::from_str(&text).expect("exit record is JSON")
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Api {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Api {
    fn raw(&mut self, bytes: &[u8]) -> Value {
        self.writer.write_all(bytes).unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("answer line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("answer {line:?}: {e}"))
    }

    fn op(&mut self, op: &str) -> Value {
        let v = self.raw(format!("{{\"op\":\"{op}\"}}\n").as_bytes());
        assert_eq!(v["ok"], true, "{op}: {v}");
        v
    }

    fn vcpu0_cpu_s(&mut self) -> f64 {
        self.op("status")["status"]["vcpu_cpu"][0]["cpu_s"]
            .as_f64()
            .expect("vCPU 0 CPU time")
    }
}

fn read_until(stream: &mut UnixStream, needle: &str) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = stream.read(&mut buf).expect("console read");
        assert!(
            n > 0,
            "console closed; got {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn status_pause_resume_console_garbage_and_graceful_shutdown() {
    let dir = workdir("main");
    let elf = payload(&dir);
    let mut vmm = Vmm::start(&dir, &elf);
    let mut api = vmm.api();

    let status = api.op("status");
    let s = &status["status"];
    assert_eq!(s["pid"], vmm.child.id());
    assert_eq!(s["state"], "running");
    assert_eq!(s["vcpus"], 2);
    assert_eq!(s["memory_mib"], 64);
    assert_eq!(s["vcpu_cpu"].as_array().map(Vec::len), Some(2), "{s}");
    assert_eq!(s["console_attached"], false);
    assert!(s["uptime_s"].as_f64().unwrap() > 0.0);
    assert!(s["process_cpu_s"].as_f64().unwrap() > 0.0);

    // Garbage on the API: an error answer each, the connection goes on.
    let mut long = vec![b'x'; 100_000];
    long.push(b'\n');
    for bad in [
        &b"garbage\n"[..],
        b"\xff\xfe\x00\x01\n",
        b"{\"op\":\"reboot\"}\n",
        b"{\"op\":\"status\",\"x\":1}\n",
        b"[]\n",
        b"\n",
        &long,
    ] {
        let v = api.raw(bad);
        assert_eq!(v["ok"], false, "{v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    // Clients that hang up mid-line, and more clients than allowed.
    for _ in 0..3 {
        let mut s = UnixStream::connect(dir.join("api.sock")).unwrap();
        s.write_all(b"{\"op\":\"sta").unwrap();
    }
    let crowd: Vec<UnixStream> = (0..40)
        .filter_map(|_| UnixStream::connect(dir.join("api.sock")).ok())
        .collect();
    drop(crowd);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(vmm.api().op("status")["status"]["state"], "running");

    // Pause: the busy vCPU stops using CPU; resume: it uses CPU again.
    let v = api.op("pause");
    assert_eq!(v["state"], "paused");
    assert_eq!(api.op("status")["status"]["state"], "paused");
    let t0 = api.vcpu0_cpu_s();
    std::thread::sleep(Duration::from_millis(600));
    let t1 = api.vcpu0_cpu_s();
    assert!(t1 - t0 < 0.05, "paused vCPU used {} s", t1 - t0);
    assert_eq!(api.op("pause")["state"], "paused", "pause is idempotent");
    assert_eq!(api.op("resume")["state"], "running");
    std::thread::sleep(Duration::from_millis(600));
    let t2 = api.vcpu0_cpu_s();
    assert!(t2 - t1 > 0.1, "resumed vCPU used only {} s", t2 - t1);
    assert_eq!(api.op("resume")["state"], "running", "resume is idempotent");

    // Console: input reaches the guest (which echoes it), output reaches
    // both the client and the log; a second client is turned away.
    let mut console = UnixStream::connect(dir.join("console.sock")).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(api.op("status")["status"]["console_attached"], true);
    let mut second = UnixStream::connect(dir.join("console.sock")).unwrap();
    let refused = read_until(&mut second, "already attached");
    assert!(refused.contains("already attached"), "{refused}");
    console.write_all(b"hello-console\r").unwrap();
    read_until(&mut console, "hello-console");
    let log = std::fs::read_to_string(dir.join("console.log")).unwrap();
    assert!(log.contains("ECHO GUEST UP"), "{log}");
    assert!(log.contains("hello-console"), "{log}");
    // Garbage on the console is just input for the guest.
    console.write_all(&[0u8, 0xff, 0x1b, b'[', 0x7f]).unwrap();
    drop(console);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(api.op("status")["status"]["console_attached"], false);

    // Paused, then shutdown: the VMM resumes the guest, which reads the
    // power-off line and powers off.
    api.op("pause");
    assert_eq!(api.op("shutdown")["state"], "running");
    assert_eq!(
        vmm.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        vmm.stderr()
    );
    let log =
        String::from_utf8_lossy(&std::fs::read(dir.join("console.log")).unwrap()).into_owned();
    assert!(log.contains("NIMBUS_POWEROF"), "{log}");
    let record = vmm.exit_record();
    assert_eq!(record["exit_code"], 0, "{record}");
    assert_eq!(record["outcome"], "powered_off", "{record}");
    assert_eq!(record["pid"], vmm.child.id(), "{record}");
    assert!(!dir.join("api.sock").exists(), "API socket left behind");
    assert!(
        !dir.join("console.sock").exists(),
        "console socket left behind"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exit_record_on_sigterm_and_invalid_config() {
    let dir = workdir("term");
    let elf = payload(&dir);
    let mut vmm = Vmm::start(&dir, &elf);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(vmm.child.id() as i32, libc::SIGTERM) };
    assert_eq!(vmm.wait_exit(Duration::from_secs(20)), Some(1));
    let record = vmm.exit_record();
    assert_eq!(record["outcome"], "stopped", "{record}");
    assert_eq!(record["exit_code"], 1, "{record}");
    assert!(
        record["detail"].as_str().unwrap().contains("SIGTERM"),
        "{record}"
    );
    assert!(!dir.join("api.sock").exists());

    // An invalid configuration still leaves a record, and a stale record
    // of an earlier run is replaced.
    let out = Command::new(env!("CARGO_BIN_EXE_nimbus-vmm"))
        .args(["--kernel", "/nonexistent/vmlinux", "--exit-file"])
        .arg(dir.join("exit.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let record = vmm.exit_record();
    assert_eq!(record["outcome"], "failed", "{record}");
    assert_eq!(record["exit_code"], 2, "{record}");
    assert!(
        record["detail"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/vmlinux"),
        "{record}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

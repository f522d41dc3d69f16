//! Shared helpers for the end-to-end tests: find the real binaries, run them
//! with a deadline, parse the guest agent's readiness line.

#![allow(dead_code)] // each test file uses its own subset

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The directory holding `nimbus` and `nimbus-vmm`: NIMBUS_BIN_DIR, or the
/// cargo profile directory this test binary was built into.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NIMBUS_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

pub fn nimbus() -> Command {
    let path = bin_dir().join("nimbus");
    assert!(
        path.is_file(),
        "{} missing: run `cargo build --release --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    Command::new(path)
}

/// What a finished process left behind.
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Finished {
    /// Everything printed, for failure messages.
    pub fn transcript(&self) -> String {
        format!(
            "exit code: {:?} after {:.1} s\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code,
            self.elapsed.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `command` to completion, killing it after `limit` (a hung guest must
/// fail the test, not hang CI).
pub fn run_with_deadline(mut command: Command, limit: Duration) -> Finished {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the command under test");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let finished = Finished {
                code: None,
                stdout: stdout.join().unwrap_or_default(),
                stderr: stderr.join().unwrap_or_default(),
                elapsed: started.elapsed(),
            };
            panic!(
                "still running after {} s, killed\n{}",
                limit.as_secs(),
                finished.transcript()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    Finished {
        code,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        elapsed: started.elapsed(),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The fields of the agent's `NIMBUS_READY key=value ...` line.
#[derive(Debug)]
pub struct Readiness {
    pub uptime_s: f64,
    pub cpus: u32,
    pub mem_total_kib: u64,
}

pub fn parse_readiness(console: &str) -> Option<Readiness> {
    let line = console.lines().find(|l| l.contains("NIMBUS_READY"))?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    };
    Some(Readiness {
        uptime_s: field("uptime_s")?.parse().ok()?,
        cpus: field("cpus")?.parse().ok()?,
        mem_total_kib: field("mem_total_kib")?.parse().ok()?,
    })
}

/// Paths of the default guest images, from `nimbus image show --output json`.
pub struct Images {
    pub vmlinux: PathBuf,
    pub bzimage: PathBuf,
    pub initramfs: PathBuf,
    pub rootfs: PathBuf,
}

pub fn images() -> Images {
    let mut command = nimbus();
    command.args(["image", "show", "--output", "json"]);
    let out = run_with_deadline(command, Duration::from_secs(60));
    assert_eq!(out.code, Some(0), "{}", out.transcript());
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("image show JSON");
    assert_eq!(
        json["built"], true,
        "guest images are not built: run `nimbus image build` (scripts/test.sh does)"
    );
    let path = |key: &str| PathBuf::from(json[key].as_str().expect("path field"));
    Images {
        vmlinux: path("vmlinux"),
        bzimage: path("bzimage"),
        initramfs: path("initramfs"),
        rootfs: path("rootfs"),
    }
}

/// Output that must never appear: a Rust panic, a kernel crash, a guest
/// process killed by a fault.
pub fn assert_no_crash(out: &Finished) {
    for bad in [
        "panicked at",
        "stack backtrace",
        "Kernel panic",
        "segfault at",
        "general protection",
        "emulation failure",
        "NIMBUS_ERROR",
    ] {
        assert!(
            !out.stdout.contains(bad) && !out.stderr.contains(bad),
            "found {bad:?}\n{}",
            out.transcript()
        );
    }
}

//! Helpers for the virtio end-to-end tests: run nimbus-vmm with the serial
//! console in a file and wait for whole lines. The agent's data pattern
//! and checksum come from the agent's own `stream_check`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;

/// A guest boot takes 1-2 minutes on kvm-pvm hosts, and 5-10 under contention (2 cores).
pub const BOOT_LIMIT: Duration = Duration::from_secs(900);

/// The kernel command line `nimbus run` would use on this host.
pub fn base_cmdline() -> String {
    let mut c = common::nimbus();
    c.args(["run", "--print-cmdline"]);
    let out = common::run_with_deadline(c, Duration::from_secs(60));
    assert_eq!(out.code, Some(0), "{}", out.transcript());
    out.stdout.trim().to_string()
}

pub fn vmm_path() -> PathBuf {
    let p = common::bin_dir().join("nimbus-vmm");
    assert!(p.is_file(), "{} missing", p.display());
    p
}

/// A running nimbus-vmm whose console goes to a file.
pub struct Guest {
    pub child: Child,
    pub console: PathBuf,
    pub stderr: PathBuf,
    started: Instant,
}

impl Guest {
    /// Starts `command` (a nimbus-vmm invocation, maybe wrapped in `ip netns
    /// exec`) with `--serial-output` in `dir/name.console`.
    pub fn start(mut command: Command, dir: &Path, name: &str) -> Guest {
        let console = dir.join(format!("{name}.console"));
        let stderr = dir.join(format!("{name}.stderr"));
        command
            .arg("--serial-output")
            .arg(&console)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        let child = command.spawn().expect("spawn nimbus-vmm");
        Guest {
            child,
            console,
            stderr,
            started: Instant::now(),
        }
    }

    pub fn console_text(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    pub fn transcript(&self) -> String {
        format!(
            "--- console ---\n{}\n--- stderr ---\n{}",
            self.console_text(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    /// Waits until a whole console line contains `needle`; returns it.
    pub fn wait_for(&mut self, needle: &str) -> String {
        loop {
            if let Some(l) = whole_line(&self.console_text(), needle) {
                return l;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // One last look: the line may have landed just before exit
                // (a last line without its newline counts then).
                if let Some(l) = self.console_text().lines().find(|l| l.contains(needle)) {
                    return l.to_string();
                }
                panic!(
                    "guest ended ({status}) before printing {needle:?}\n{}",
                    self.transcript()
                );
            }
            if self.started.elapsed() > BOOT_LIMIT {
                let _ = self.child.kill();
                panic!("no {needle:?} after {BOOT_LIMIT:?}\n{}", self.transcript());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits for the VMM to exit; returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if self.started.elapsed() > BOOT_LIMIT {
                let _ = self.child.kill();
                panic!("guest did not end\n{}", self.transcript());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The first whole line of a console log (ended by a newline) that
/// contains `needle`: the serial port writes a line a few bytes at a time,
/// and a line still being written must not be taken for the answer.
pub fn whole_line(text: &str, needle: &str) -> Option<String> {
    let done = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    done.lines()
        .find(|l| l.contains(needle))
        .map(|l| l.trim_end_matches('\r').to_string())
}

/// A scratch directory removed at the end of the test.
pub struct TempDir(pub PathBuf);
impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("nimbus-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("NIMBUS_KEEP_TEST_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

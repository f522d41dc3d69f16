//! A private host for topology tests: a network namespace in which the
//! real nimbus-netd runs (started as `nimbus netd run`), so bridges, TAPs
//! and nft tables live only there, and a state directory of its own.
//! Everything is removed in `Drop`, also when the test fails.
//!
//! Needs root, `ip` and `nft`, like netd's own tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The public pool netd is started with.
pub const PUBLIC_POOL: &str = "203.0.113.0/24";

/// The `nimbus` binary under test.
pub fn nimbus_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nimbus"))
}

/// The repository root (where `examples/` and `tests/` are).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .to_path_buf()
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a `nimbus` run printed.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: Option<i32>,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Self {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Everything, for assertion messages.
    pub fn transcript(&self) -> String {
        format!(
            "exit code {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// One test's host.
pub struct Host {
    /// The namespace netd runs in.
    pub netns: String,
    /// Scratch directory: netd's state, nimbus's state, the log.
    pub dir: PathBuf,
    netd: Option<Child>,
}

impl Host {
    /// Creates the namespace and starts netd in it.
    pub fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let netns = format!("nimbus-topo-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(&netns);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let mut h = Host {
            netns,
            dir,
            netd: None,
        };
        sh(&["ip", "netns", "add", &h.netns]);
        sh(&["ip", "-n", &h.netns, "link", "set", "lo", "up"]);
        h.start_netd();
        h
    }

    /// netd's API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("netd").join("netd.sock")
    }

    /// nimbus's state directory (topology records).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn start_netd(&mut self) {
        let log = std::fs::File::create(self.dir.join("netd.log")).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(nimbus_bin())
            .args(["netd", "run", "--public-pool", PUBLIC_POOL, "--state-dir"])
            .arg(self.dir.join("netd"))
            .env("NIMBUS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nimbus netd run");
        self.netd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.socket().exists() && self.nimbus(&["vnet", "list"]).code == Some(0) {
                return;
            }
            if let Some(Ok(Some(status))) = self.netd.as_mut().map(|c| c.try_wait()) {
                panic!("netd exited with {status}: {}", self.netd_log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("netd did not come up: {}", self.netd_log());
    }

    /// netd's log.
    pub fn netd_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("netd.log")).unwrap_or_default()
    }

    /// Runs `nimbus ARGS` against this host's netd and state directory.
    pub fn nimbus(&self, args: &[&str]) -> Run {
        self.run_nimbus(Command::new(nimbus_bin()), args)
    }

    /// Runs `nimbus ARGS` inside the namespace: VMMs started from there
    /// open their TAPs there.
    pub fn nimbus_in_ns(&self, args: &[&str]) -> Run {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns]).arg(nimbus_bin());
        self.run_nimbus(c, args)
    }

    /// Runs `command ARGS` (nimbus, maybe behind a wrapper) with this
    /// host's netd socket and state directory.
    fn run_nimbus(&self, mut command: Command, args: &[&str]) -> Run {
        let out = command
            .args(args)
            .env("NIMBUS_NETD_SOCKET", self.socket())
            .env("NIMBUS_STATE_DIR", self.state_dir())
            .env("NIMBUS_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run nimbus");
        Run::from(out)
    }

    /// Processes running in the namespace (netd, VMMs).
    pub fn pids(&self) -> Vec<u32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.netns])
            .output()
            .expect("ip netns pids");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Runs `nimbus ARGS`, which must succeed.
    pub fn ok(&self, args: &[&str]) -> Run {
        let r = self.nimbus(args);
        assert_eq!(r.code, Some(0), "nimbus {args:?}:\n{}", r.transcript());
        r
    }

    /// `nft list ruleset` in the namespace.
    pub fn ruleset(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns, "nft", "list", "ruleset"])
            .output()
            .expect("nft");
        assert!(out.status.success(), "nft list ruleset failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -d link` in the namespace, with the counters and timers that
    /// change by themselves removed.
    pub fn links(&self) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.netns, "-d", "link", "show"])
            .output()
            .expect("ip link");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            // Bridge timers (hello_timer, gc_timer...) tick by themselves.
            .map(strip_timers)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// [`Host::links`] once it stopped changing: the kernel applies carrier
    /// and operational state changes of new bridge ports asynchronously
    /// (linkwatch, up to a second), so a snapshot right after a change may
    /// catch them halfway.
    pub fn settled_links(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut last = self.links();
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = self.links();
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    /// Interface names in the namespace.
    pub fn link_names(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-n", &self.netns, "-o", "link", "show"])
            .output()
            .expect("ip link");
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect();
        names.sort();
        names
    }
}

/// Keeps what configures a link from an `ip -d link` line and drops what
/// the kernel changes by itself: timers, carrier and operational state (a
/// TAP nobody has open loses its carrier some time after it is made).
fn strip_timers(line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        if w.ends_with("_timer") || w == "state" {
            i += 2;
            continue;
        }
        if w.starts_with('<') && w.ends_with('>') {
            let flags: Vec<&str> = w
                .trim_matches(['<', '>'])
                .split(',')
                .filter(|f| !matches!(*f, "LOWER_UP" | "NO-CARRIER" | "M-DOWN"))
                .collect();
            out.push(format!("<{}>", flags.join(",")));
        } else {
            out.push(w.to_string());
        }
        i += 1;
    }
    out.join(" ")
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut c) = self.netd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Whatever else runs in this test's namespace was started by the
        // test (VMMs of a failed test): end it, by pid.
        for pid in self.pids() {
            if let Ok(pid) = i32::try_from(pid) {
                // SAFETY: kill(2) on a pid; no memory is involved.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

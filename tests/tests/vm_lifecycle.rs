//! `nimbus vm` end to end, with real guests, a real nimbus-netd in a
//! private network namespace and the real binaries, three boots:
//!
//! 1. bad input is refused with nothing created; `create` a 128 MiB VM with
//!    a 64 MiB data disk and a netd NIC; `start --wait-ready`; `list
//!    --output json` shows it running with its IP; the guest writes a file
//!    on the data disk (and fsyncs it) and answers on its NIC (the agent's
//!    TCP command port reads the file back); `stop` powers it off
//!    gracefully (exit record 0, state stopped, in seconds).
//! 2. `start` again: the file survived; the guest writes it again, then
//!    nimbus-vmm is killed with SIGKILL: `list` shows `failed`.
//! 3. `restart` brings it back and the file is intact; pause/resume; `delete` refuses a
//!    running VM, `delete --force` leaves no process and no directory.
//!
//! The guest's `nimbus.run=` commands run on every boot: `read` (the file
//! the previous boot wrote) and then `write` (a fresh copy, fsynced).
//!
//! Needs root (namespaces, bridges, TAPs), `ip`, and built images.

mod common;
mod virtio;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nimbus_agent::stream_check::expected_answer;
use serde_json::Value;
use virtio::TempDir;

const FILE: &str = "/mnt/data0/persist.bin";
const FILE_BYTES: usize = 64 * 1024;
const VM: &str = "lc1";

/// Network namespace + netd + state directory of this test; all removed
/// on drop, and every VMM the state directory knows of is killed.
struct World {
    ns: String,
    dir: TempDir,
    netd: Option<Child>,
}

impl World {
    fn new() -> World {
        let ns = format!("nvl{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        sh(&["ip", "netns", "add", &ns]);
        let w = World {
            ns,
            dir: TempDir::new("vm-lifecycle"),
            netd: None,
        };
        sh(&["ip", "-n", &w.ns, "link", "set", "lo", "up"]);
        w
    }

    fn state(&self) -> PathBuf {
        self.dir.0.join("state")
    }

    fn netd_socket(&self) -> PathBuf {
        self.dir.0.join("netd").join("netd.sock")
    }

    fn start_netd(&mut self) {
        let log = std::fs::File::create(self.dir.0.join("netd.log")).expect("netd log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(common::bin_dir().join("nimbus-netd"))
            .arg("--state-dir")
            .arg(self.dir.0.join("netd"))
            .env_remove("NIMBUS_NETD_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nimbus-netd");
        self.netd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(self.netd_socket()).is_err() {
            assert!(
                Instant::now() < deadline,
                "netd did not come up: {}",
                std::fs::read_to_string(self.dir.0.join("netd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `nimbus ARGS` with this world's state and netd, optionally inside
    /// the namespace (where the TAPs are, so where a VMM must run).
    fn nimbus(&self, in_ns: bool, args: &[&str]) -> common::Finished {
        let mut c = if in_ns {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &self.ns])
                .arg(common::bin_dir().join("nimbus"));
            c
        } else {
            common::nimbus()
        };
        c.args(args)
            .env("NIMBUS_STATE_DIR", self.state())
            .env("NIMBUS_NETD_SOCKET", self.netd_socket());
        common::run_with_deadline(c, virtio::BOOT_LIMIT)
    }

    fn ok(&self, in_ns: bool, args: &[&str]) -> common::Finished {
        let out = self.nimbus(in_ns, args);
        assert_eq!(out.code, Some(0), "nimbus {args:?}\n{}", out.transcript());
        out
    }

    fn refused(&self, args: &[&str], want: &str) {
        let out = self.nimbus(false, args);
        assert_eq!(out.code, Some(1), "nimbus {args:?}\n{}", out.transcript());
        assert!(
            out.stderr.contains(want),
            "nimbus {args:?}: expected {want:?}\n{}",
            out.transcript()
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.transcript());
    }

    fn vm_json(&self) -> Value {
        let out = self.ok(false, &["vm", "show", VM, "--output", "json"]);
        serde_json::from_str(&out.stdout).expect("vm show JSON")
    }

    fn vm_dir(&self) -> PathBuf {
        self.state().join("vms").join(VM)
    }

    fn console(&self) -> String {
        String::from_utf8_lossy(
            &std::fs::read(self.vm_dir().join("console.log")).unwrap_or_default(),
        )
        .into_owned()
    }

    /// Waits (the guest is running) for a whole console line containing
    /// `needle`.
    fn wait_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(l) = virtio::whole_line(&self.console(), needle) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} on the console:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `f` on a thread inside the namespace.
    fn in_ns<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            // SAFETY: setns(2) on an open namespace fd; affects this thread only.
            let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("netns thread")
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Any VMM still running (a failed assertion midway): kill it.
        if let Ok(text) = std::fs::read_to_string(self.vm_dir().join("run.json")) {
            if let Some(pid) = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["pid"].as_i64())
            {
                // SAFETY: kill(2) on the recorded VMM pid.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        if let Some(mut netd) = self.netd.take() {
            let _ = netd.kill();
            let _ = netd.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run command");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn alive(pid: i64) -> bool {
    // A zombie (nobody reaped the killed VMM yet) is not alive.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn tcp_command(addr: String, line: &'static str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match TcpStream::connect_timeout(&addr.parse().expect("addr"), Duration::from_secs(5)) {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(60))).ok();
                writeln!(s, "{line}").expect("send command");
                let mut answer = String::new();
                BufReader::new(s).read_line(&mut answer).expect("answer");
                return answer.trim().to_string();
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect {addr}: {e}; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    }
}

fn no_vm_dirs_but(state: &Path, keep: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(state.join("vms"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    assert_eq!(names, keep, "VM directories");
}

#[test]
fn create_start_stop_kill_restart_delete() {
    // SAFETY: geteuid(2) cannot fail.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(uid, 0, "needs root for network namespaces and TAPs");
    common::images();
    let mut w = World::new();
    w.start_netd();
    w.ok(
        false,
        &["vnet", "create", "lab", "--address-space", "10.88.0.0/16"],
    );
    w.ok(
        false,
        &[
            "subnet",
            "create",
            "s1",
            "--vnet",
            "lab",
            "--cidr",
            "10.88.1.0/24",
        ],
    );
    w.ok(
        false,
        &[
            "nic", "create", "lc1-nic", "--vnet", "lab", "--subnet", "s1",
        ],
    );
    w.ok(
        false,
        &[
            "nic",
            "create",
            "spare-nic",
            "--vnet",
            "lab",
            "--subnet",
            "s1",
        ],
    );

    let run_params = format!("nimbus.run=read:{FILE} nimbus.run=write:{FILE}:{FILE_BYTES}");
    let create = [
        "vm",
        "create",
        VM,
        "--size",
        "Lab1",
        "--disk",
        "64M",
        "--nic",
        "lc1-nic",
        "--tag",
        "test=lifecycle",
        "--cmdline",
        &run_params,
    ];
    w.ok(false, &create);

    // Bad input: a clear error each, nothing created.
    w.refused(&create, "already exists");
    w.refused(
        &["vm", "create", "x1", "--nic", "no-such-nic"],
        "nic no-such-nic",
    );
    w.refused(
        &["vm", "create", "x2", "--nic", "lc1-nic"],
        "already used by VM lc1",
    );
    w.refused(
        &["vm", "create", "x3", "--size", "B7x"],
        "unknown size \"B7x\"",
    );
    w.refused(
        &["vm", "create", "x4", "--kernel", "/nonexistent/vmlinux"],
        "kernel /nonexistent/vmlinux",
    );
    w.refused(
        &["vm", "create", "x5", "--memory", "16T"],
        "available memory",
    );
    w.refused(&["vm", "create", "bad/name"], "name:");
    w.refused(&["vm", "start", "nope"], "no such VM");
    no_vm_dirs_but(&w.state(), &["lc1"]);

    // Boot 1.
    let started = w.ok(true, &["vm", "start", VM, "--wait-ready"]);
    assert!(
        started.stderr.contains("ready after"),
        "{}",
        started.transcript()
    );
    let list = w.ok(false, &["vm", "list", "--output", "json"]);
    let list: Value = serde_json::from_str(&list.stdout).expect("list JSON");
    let me = &list[0];
    assert_eq!(me["name"], VM, "{list}");
    assert_eq!(me["state"], "running", "{list}");
    assert_eq!(me["vcpus"], 1);
    assert_eq!(me["memory_mib"], 128);
    assert_eq!(me["tags"]["test"], "lifecycle");
    assert!(me["cpu_s"].as_f64().unwrap() > 0.0, "{list}");
    let ip = me["ips"][0].as_str().expect("an IP").to_string();
    assert!(ip.starts_with("10.88.1."), "{ip}");
    let want = expected_answer(FILE_BYTES);
    let line = w.wait_line(&format!("NIMBUS_RESULT read {FILE}"));
    assert!(line.contains("ERR"), "no file yet on a new disk: {line}");
    let line = w.wait_line(&format!("NIMBUS_RESULT write {FILE}"));
    assert!(line.ends_with(&want), "{line}\n{}", w.console());
    // The NIC works: the agent's command port reads the file back.
    let addr = format!("{ip}:7000");
    let answer = w.in_ns(move || tcp_command(addr, "read /mnt/data0/persist.bin"));
    assert_eq!(answer, want);
    // The console attaches and detaches (stdin ends at once here).
    let out = w.ok(false, &["vm", "console", VM]);
    assert!(out.stderr.contains("Ctrl-]"), "{}", out.transcript());
    let out = w.ok(false, &["vm", "logs", VM, "--tail", "1"]);
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.transcript());

    // Graceful stop.
    let t = Instant::now();
    let out = w.ok(false, &["vm", "stop", VM, "--timeout", "60"]);
    assert!(out.stdout.contains("powered off"), "{}", out.transcript());
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "stop took {:?}",
        t.elapsed()
    );
    let v = w.vm_json();
    assert_eq!(v["state"], "stopped", "{v}");
    assert_eq!(v["exit"]["exit_code"], 0, "{v}");
    assert_eq!(v["exit"]["outcome"], "powered_off", "{v}");
    assert!(
        !w.console().contains("NIMBUS_POWEROFF"),
        "the power-off request was echoed into the log"
    );

    // Boot 2: the file survived the power-off; then SIGKILL.
    w.ok(true, &["vm", "start", VM, "--wait-ready"]);
    let line = w.wait_line(&format!("NIMBUS_RESULT read {FILE}"));
    assert!(line.ends_with(&want), "{line}\n{}", w.console());
    let line = w.wait_line(&format!("NIMBUS_RESULT write {FILE}"));
    assert!(line.ends_with(&want), "{line}");
    let pid = w.vm_json()["pid"].as_i64().expect("pid of a running VM");
    // SAFETY: kill(2) on the VMM's pid.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "VMM survived SIGKILL");
        std::thread::sleep(Duration::from_millis(50));
    }
    let list = w.ok(false, &["vm", "list", "--output", "json"]);
    let list: Value = serde_json::from_str(&list.stdout).expect("list JSON");
    assert_eq!(list[0]["state"], "failed", "{list}");
    assert!(
        list[0]["reason"]
            .as_str()
            .unwrap()
            .contains("without an exit record"),
        "{list}"
    );

    // Boot 3: back (restart of a failed VM = start), disk intact.
    w.ok(true, &["vm", "restart", VM, "--wait-ready"]);
    let line = w.wait_line(&format!("NIMBUS_RESULT read {FILE}"));
    assert!(line.ends_with(&want), "{line}\n{}", w.console());
    assert_eq!(w.vm_json()["state"], "running");
    let pid = w.vm_json()["pid"].as_i64().expect("pid");

    // Pause and resume through the CLI.
    w.ok(false, &["vm", "pause", VM]);
    assert_eq!(w.vm_json()["state"], "paused");
    w.ok(false, &["vm", "resume", VM]);
    assert_eq!(w.vm_json()["state"], "running");

    // Delete: refused while running, then forced.
    w.refused(&["vm", "delete", VM], "is running");
    w.ok(false, &["vm", "delete", VM, "--force"]);
    assert!(!alive(pid), "VMM still running after delete --force");
    assert!(!w.vm_dir().exists(), "VM directory left behind");
    let list = w.ok(false, &["vm", "list", "--output", "json"]);
    assert_eq!(list.stdout.trim(), "[]");
}

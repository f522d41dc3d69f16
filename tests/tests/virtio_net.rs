//! virtio-net end to end: guests on a bridge in a network namespace of the
//! test's own (removed even when the test fails).
//!
//! Needs root (namespaces, bridges, TAPs) and `ip`.
//! Two guests boot on one bridge; the test, from inside the namespace:
//! echoes through guest A, moves 8 MiB host->A and A->host with matching
//! checksums, has A fetch 1 MiB from a host listener (the guest reaches the
//! host side), and has B fetch 1 MiB from A (two guests reach each other).

mod common;
mod virtio;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use nimbus_agent::stream_check::{expected_answer, pattern, Fnv};
use virtio::{Guest, TempDir};

const BULK: usize = 8 << 20;
const SMALL: usize = 1 << 20;

/// The namespace and everything in it; deleted on drop.
struct Netns(String);

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    fn create(name: &str, taps: &[&str]) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        let ns = Netns(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ip(&["-n", name, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", name, "addr", "add", "10.77.0.1/24", "dev", "br0"]);
        ip(&["-n", name, "link", "set", "br0", "up"]);
        for tap in taps {
            ip(&["-n", name, "tuntap", "add", tap, "mode", "tap", "vnet_hdr"]);
            ip(&["-n", name, "link", "set", tap, "master", "br0", "up"]);
        }
        ns
    }

    /// Runs `f` on a thread that lives inside the namespace.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.0);
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

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn connect(addr: &str) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match TcpStream::connect_timeout(&addr.parse().expect("addr"), Duration::from_secs(5)) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(120))).ok();
                s.set_write_timeout(Some(Duration::from_secs(120))).ok();
                return s;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect {addr}: {e}; retrying");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    }
}

fn command(addr: &str, line: &str) -> String {
    let mut s = connect(addr);
    writeln!(s, "{line}").expect("send command");
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).expect("answer");
    answer.trim().to_string()
}

fn mib_per_s(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / t.as_secs_f64()
}

/// Every packet costs the guest's emulated ring 0 on kvm-pvm (the vCPU is
/// at 100 % during a transfer), so 8 MiB each way takes a minute or two;
/// the throughput is printed, not asserted (scripts/bench/net.sh compares
/// it with QEMU).
#[test]
fn guests_reach_the_host_and_each_other_with_bulk_transfers() {
    assert!(is_root(), "needs root for network namespaces and TAPs");
    let images = common::images();
    let base = virtio::base_cmdline();
    let dir = TempDir::new("virtio-net");
    let ns_name = format!("nvt{}", std::process::id());
    let ns = Netns::create(&ns_name, &["nvt-a", "nvt-b"]);

    let start = |name: &str, tap: &str, addr: &str| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns_name])
            .arg(virtio::vmm_path())
            .arg("--kernel")
            .arg(&images.vmlinux)
            .arg("--initrd")
            .arg(&images.initramfs)
            .arg("--memory")
            .arg("128")
            .arg("--name")
            .arg(name)
            .arg("--nic")
            .arg(format!("tap={tap}"))
            .arg("--cmdline")
            .arg(format!("{base} nimbus.net=eth0,{addr}/24,gw=10.77.0.1"));
        Guest::start(c, &dir.0, name)
    };
    let mut a = start("vm-a", "nvt-a", "10.77.0.2");
    let mut b = start("vm-b", "nvt-b", "10.77.0.3");
    a.wait_for("NIMBUS_READY");
    b.wait_for("NIMBUS_READY");

    let report = ns.run(move || {
        let mut report = Vec::new();
        // Echo.
        let mut s = connect("10.77.0.2:7000");
        s.write_all(b"echo\nhello virtio\n").expect("echo");
        s.shutdown(std::net::Shutdown::Write).ok();
        let mut back = String::new();
        s.read_to_string(&mut back).expect("echo back");
        assert_eq!(back, "hello virtio\n");

        // Host -> guest, 8 MiB.
        let mut s = connect("10.77.0.2:7000");
        let t = Instant::now();
        writeln!(s, "recv {BULK}").expect("recv command");
        s.write_all(&pattern(BULK)).expect("bulk send");
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).expect("answer");
        report.push(format!(
            "host->guest {:.3} MiB/s",
            mib_per_s(BULK, t.elapsed())
        ));
        assert_eq!(answer.trim(), expected_answer(BULK));

        // Guest -> host, 8 MiB.
        let mut s = connect("10.77.0.2:7000");
        let t = Instant::now();
        writeln!(s, "send {BULK}").expect("send command");
        let mut got = Vec::with_capacity(BULK);
        s.read_to_end(&mut got).expect("bulk receive");
        report.push(format!(
            "guest->host {:.3} MiB/s",
            mib_per_s(BULK, t.elapsed())
        ));
        let (mut want, mut have) = (Fnv::new(), Fnv::new());
        want.update(&pattern(BULK));
        have.update(&got);
        assert_eq!(got.len(), BULK);
        assert_eq!(have.hex(), want.hex());

        // The guest reaches the host side.
        let listener = TcpListener::bind("10.77.0.1:7100").expect("host listener");
        let server = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().expect("accept guest");
            let mut line = String::new();
            BufReader::new(c.try_clone().expect("clone"))
                .read_line(&mut line)
                .ok();
            let n: usize = line
                .trim()
                .strip_prefix("send ")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            c.write_all(&pattern(n)).ok();
        });
        let answer = command("10.77.0.2:7000", &format!("fetch 10.77.0.1:7100 {SMALL}"));
        server.join().expect("server");
        assert_eq!(answer, expected_answer(SMALL));

        // Guest B reaches guest A.
        let answer = command("10.77.0.3:7000", &format!("fetch 10.77.0.2:7000 {SMALL}"));
        assert_eq!(answer, expected_answer(SMALL));
        report
    });
    eprintln!(
        "virtio-net throughput (debug build if so): {}",
        report.join(", ")
    );
    for g in [&a, &b] {
        let t = g.transcript();
        assert!(
            !t.contains("panicked") && !t.contains("NIMBUS_ERROR"),
            "{t}"
        );
    }
    drop(a);
    drop(b);
    drop(ns);
}

//! What the end-to-end tests with real guests share: the prerequisites
//! (which fail the test, never skip it), threads inside the test's network
//! namespace, and small HTTP and agent-command clients.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{nimbus_bin, Host};

/// Panics with what is missing for guests to boot: /dev/kvm, nimbus-vmm
/// next to nimbus, the default guest images (`scripts/test.sh` builds them
/// before the tests; by hand: `cargo build --release --workspace --bins &&
/// target/release/nimbus image build`).
pub fn require_guests() {
    assert!(
        Path::new("/dev/kvm").exists(),
        "this test boots real guests and needs /dev/kvm"
    );
    let vmm = nimbus_bin().with_file_name("nimbus-vmm");
    assert!(
        vmm.is_file() || std::env::var_os("NIMBUS_VMM").is_some(),
        "{} is not built: run `cargo build --workspace --bins` first",
        vmm.display()
    );
    let out = std::process::Command::new(nimbus_bin())
        .args(["image", "show", "--output", "json"])
        .output()
        .expect("run nimbus image show");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert!(
        v["built"] == true,
        "the default guest images are not built: run `{} image build` first",
        nimbus_bin().display()
    );
}

/// Runs `f` on a thread inside `host`'s namespace (setns affects only
/// that thread), where the topology's addresses are.
pub fn in_ns<T: Send + 'static>(host: &Host, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in_ns(host, f)
        .join()
        .expect("thread in the namespace")
}

/// Starts `f` on a thread inside `host`'s namespace.
pub fn spawn_in_ns<T: Send + 'static>(
    host: &Host,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{}", host.netns);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        // SAFETY: setns(2) on an open namespace fd; affects this thread only.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

/// One HTTP/1.1 GET with `Connection: close`: (status, body).
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("read: {e} (after {} bytes)", text.len()))?;
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, body.trim().to_string()))
}

/// The VM name in the agent's `GET /` body (`vm=NAME ip=ADDR`).
pub fn vm_of(body: &str) -> Option<String> {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix("vm="))
        .map(str::to_string)
}

/// Sends one line to a guest agent's command port; its one-line answer.
pub fn agent_command(addr: SocketAddr, line: &str, timeout: Duration) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).ok();
    writeln!(s, "{line}").map_err(|e| format!("send: {e}"))?;
    let mut answer = String::new();
    BufReader::new(s)
        .read_line(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    Ok(answer.trim().to_string())
}

/// Retries `f` until it succeeds or `limit` passes (a guest that just
/// became ready may still be bringing a service up).
pub fn retry<T>(limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let t = Instant::now();
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if t.elapsed() > limit => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// The frontend address of load balancer `lb`.
pub fn frontend(host: &Host, lb: &str) -> String {
    let r = host.ok(&["lb", "show", lb, "--output", "json"]);
    let v: Value = serde_json::from_str(&r.stdout).expect("lb show JSON");
    v["frontend_ip"]
        .as_str()
        .unwrap_or_else(|| panic!("lb {lb} has no frontend_ip: {v}"))
        .to_string()
}

/// Every VM as `nimbus vm list --output json` shows it.
pub fn vm_list(host: &Host) -> Vec<Value> {
    let r = host.nimbus_in_ns(&["vm", "list", "--output", "json"]);
    assert_eq!(r.code, Some(0), "{}", r.transcript());
    let v: Value = serde_json::from_str(&r.stdout).expect("vm list JSON");
    match v {
        Value::Array(all) => all,
        _ => Vec::new(),
    }
}

/// Name -> (state, pid, ips) of every VM.
pub fn vms(host: &Host) -> Vec<(String, String, Option<u64>, Vec<String>)> {
    let mut out: Vec<_> = vm_list(host)
        .iter()
        .map(|vm| {
            (
                vm["name"].as_str().unwrap_or_default().to_string(),
                vm["state"].as_str().unwrap_or_default().to_string(),
                vm["pid"].as_u64(),
                vm["ips"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_string))
                    .collect(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Waits until only netd is left in the namespace (VMMs exit shortly
/// after `down` returns); returns the pids left.
pub fn only_netd_left(host: &Host) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while host.pids().len() > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    host.pids()
}

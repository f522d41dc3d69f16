//! A namespace world for netd's integration tests.
//!
//! Each test gets its own "host" network namespace in which the real
//! `nimbus-netd` binary runs (so bridges, TAPs and nft tables live only
//! there), stand-in VMs as further namespaces attached with veth NICs, and
//! optionally an "internet" namespace behind an uplink veth. Everything is
//! removed in `Drop`, also when the test fails.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use netd::api::client::{Client, ClientError};
use netd::api::protocol::Request;
use serde_json::Value;

/// How long a probe waits before calling the path blocked. Allowed traffic
/// answers in milliseconds; a drop shows as a timeout.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(700);

/// Uplink addressing: host side, internet side, public pool.
pub const UPLINK_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The internet namespace's address.
pub const INTERNET: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The public pool netd is started with.
pub const PUBLIC_POOL: &str = "203.0.113.0/24";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

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

/// Runs `f` in a thread that entered network namespace `ns`.
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).expect("open netns");
    std::thread::spawn(move || {
        // SAFETY: setns on an open namespace fd only affects this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("namespace thread panicked")
}

/// One test's world.
pub struct World {
    /// Prefix of every namespace this world made.
    pub prefix: String,
    /// The namespace netd runs in.
    pub host: String,
    namespaces: Vec<String>,
    netd: Option<Child>,
    /// netd's state directory.
    pub state_dir: PathBuf,
    extra_env: Vec<(String, String)>,
}

impl World {
    /// Creates the host namespace and starts netd in it.
    pub fn new() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("nimbus-t-{}-{n}", std::process::id());
        let state_dir = std::env::temp_dir().join(&prefix);
        let _ = std::fs::remove_dir_all(&state_dir);
        let mut w = World {
            host: format!("{prefix}-h"),
            prefix,
            namespaces: vec![],
            netd: None,
            state_dir,
            extra_env: vec![],
        };
        let host = w.host.clone();
        w.add_ns(&host);
        w.start_netd();
        w
    }

    fn add_ns(&mut self, name: &str) {
        sh(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_string());
        sh(&["ip", "-n", name, "link", "set", "lo", "up"]);
    }

    /// Starts (or restarts) netd with extra environment variables.
    pub fn start_netd_with(&mut self, env: &[(&str, &str)]) {
        self.extra_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.start_netd();
    }

    /// Starts (or restarts) netd and waits until its socket answers.
    pub fn start_netd(&mut self) {
        // A restart replaces the running daemon; without this the old child
        // would be forgotten here and outlive the test.
        self.kill_netd();
        let socket = self.socket();
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::File::create(self.state_dir.with_extension("log")).expect("log file");
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &self.host,
            env!("CARGO_BIN_EXE_nimbus-netd"),
            "--public-pool",
            PUBLIC_POOL,
            "--state-dir",
        ])
        .arg(&self.state_dir)
        .env("NIMBUS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.netd = Some(cmd.spawn().expect("spawn nimbus-netd"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut c) = Client::connect(&socket) {
                if c.call(&Request::Ping).is_ok() {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.netd.as_mut().map(|c| c.try_wait()) {
                panic!("nimbus-netd exited with {status}: {}", self.netd_log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("nimbus-netd did not come up: {}", self.netd_log());
    }

    /// netd's log so far.
    pub fn netd_log(&self) -> String {
        std::fs::read_to_string(self.state_dir.with_extension("log")).unwrap_or_default()
    }

    /// Kills netd with SIGKILL and reaps it.
    pub fn kill_netd(&mut self) {
        if let Some(mut child) = self.netd.take() {
            // `ip netns exec` execs netd, so the child is netd itself.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for netd to exit by itself (crash hooks) and reaps it.
    pub fn wait_netd_exit(&mut self) -> std::process::ExitStatus {
        let mut child = self.netd.take().expect("netd running");
        child.wait().expect("wait netd")
    }

    /// The API socket.
    pub fn socket(&self) -> PathBuf {
        self.state_dir.join(netd::SOCKET_NAME)
    }

    /// Sends one request.
    pub fn try_call(&self, r: Request) -> Result<Value, ClientError> {
        Client::connect(&self.socket())?.call(&r)
    }

    /// Sends one request that must succeed.
    pub fn call(&self, r: Request) -> Value {
        let text = format!("{r:?}");
        match self.try_call(r) {
            Ok(v) => v,
            Err(e) => panic!("{text} failed: {e}\nnetd log:\n{}", self.netd_log()),
        }
    }

    /// Sends raw JSON (to build requests concisely); must succeed.
    pub fn json(&self, v: Value) -> Value {
        let r: Request = serde_json::from_value(v).expect("valid request");
        self.call(r)
    }

    /// Creates a stand-in VM namespace and a NIC for it; returns the
    /// namespace and the NIC's IP.
    pub fn vm(&mut self, nic: &str, vnet: &str, subnet: &str, extra: Value) -> (String, Ipv4Addr) {
        let ns = format!("{}-{nic}", self.prefix);
        self.add_ns(&ns);
        let mut req = serde_json::json!({"op": "nic_create", "name": nic, "vnet": vnet, "subnet": subnet, "attach_netns": ns});
        if let (Some(obj), Value::Object(more)) = (req.as_object_mut(), extra) {
            obj.extend(more);
        }
        let v = self.json(req);
        let ip = v["ip"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("nic ip");
        let port = v["host_interface"].as_str().unwrap_or_default().to_string();
        self.wait_forwarding(&port);
        (ns, ip)
    }

    /// Waits until bridge port `port` forwards: the kernel applies carrier
    /// changes asynchronously (linkwatch, up to a second), and a stand-in VM
    /// that talks before that loses its first packets. Real VMs boot for
    /// longer than that.
    pub fn wait_forwarding(&self, port: &str) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let out = Command::new("bridge")
                .args(["-n", &self.host, "link", "show", "dev", port])
                .output()
                .expect("bridge");
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains("state forwarding") && text.contains("LOWER_UP") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("port {port} never reached forwarding");
    }

    /// Creates the internet namespace behind an uplink veth; it routes the
    /// public pool to the host.
    pub fn internet(&mut self) -> String {
        let ns = format!("{}-x", self.prefix);
        self.add_ns(&ns);
        sh(&[
            "ip", "-n", &self.host, "link", "add", "uplink", "type", "veth", "peer", "name", "wan",
            "netns", &ns,
        ]);
        sh(&[
            "ip",
            "-n",
            &self.host,
            "addr",
            "add",
            &format!("{UPLINK_HOST}/24"),
            "dev",
            "uplink",
        ]);
        sh(&["ip", "-n", &self.host, "link", "set", "uplink", "up"]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{INTERNET}/24"),
            "dev",
            "wan",
        ]);
        sh(&["ip", "-n", &ns, "link", "set", "wan", "up"]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "route",
            "add",
            PUBLIC_POOL,
            "via",
            &UPLINK_HOST.to_string(),
        ]);
        ns
    }

    /// Link names in the host namespace that carry nimbus's prefixes.
    pub fn nimbus_links(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-n", &self.host, "-o", "link", "show"])
            .output()
            .expect("ip link");
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| n.starts_with(netd::BRIDGE_PREFIX) || n.starts_with(netd::PORT_PREFIX))
            .collect();
        names.sort();
        names
    }

    /// `nft list ruleset` in the host namespace.
    pub fn ruleset(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.host, "nft", "-s", "list", "ruleset"])
            .output()
            .expect("nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.kill_netd();
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
        let _ = std::fs::remove_file(self.state_dir.with_extension("log"));
    }
}

/// A TCP server in a namespace: accepts connections on `port` and answers
/// "ok" until dropped with the world.
pub fn tcp_server(ns: &str, port: u16) {
    let listener = in_ns(ns, move || {
        TcpListener::bind(("0.0.0.0", port)).expect("bind")
    });
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(b"ok");
        }
    });
}

/// True when a TCP connection from `ns` to `ip:port` completes and the
/// server's "ok" arrives.
pub fn tcp_ok(ns: &str, ip: Ipv4Addr, port: u16) -> bool {
    in_ns(ns, move || {
        let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(PROBE_TIMEOUT));
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).is_ok() && &buf == b"ok"
    })
}

/// A UDP echo server in a namespace that answers with the sender's
/// address as it saw it.
pub fn udp_server(ns: &str, port: u16) {
    let sock = in_ns(ns, move || {
        UdpSocket::bind(("0.0.0.0", port)).expect("bind udp")
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(from.ip().to_string().as_bytes(), from);
        }
    });
}

/// Sends a datagram from `ns` to `ip:port`; returns the server's answer
/// (the source address it saw) if one came back.
pub fn udp_query(ns: &str, ip: Ipv4Addr, port: u16) -> Option<String> {
    in_ns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").ok()?;
        s.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
        s.send_to(b"hello", (ip, port)).ok()?;
        let mut buf = [0u8; 64];
        let (n, _) = s.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// A TCP server that answers with the peer address it saw.
pub fn tcp_whoami_server(ns: &str, port: u16) {
    let listener = in_ns(ns, move || {
        TcpListener::bind(("0.0.0.0", port)).expect("bind")
    });
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let peer = conn
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = conn.write_all(peer.as_bytes());
        }
    });
}

/// Connects and returns what a whoami server said.
pub fn tcp_whoami(ns: &str, ip: Ipv4Addr, port: u16) -> Option<String> {
    in_ns(ns, move || {
        let addr = SocketAddr::V4(SocketAddrV4::new(ip, port));
        let mut s = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
        s.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    })
}

/// ICMP echo from `ns` to `ip` with a raw socket; true on a reply.
pub fn ping(ns: &str, ip: Ipv4Addr) -> bool {
    use socket2::{Domain, Protocol, Socket, Type};
    in_ns(ns, move || {
        let Ok(sock) = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)) else {
            return false;
        };
        let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
        // A fresh id per probe: a reused id would match an existing ICMP
        // conntrack entry and pass as "established".
        static PING_ID: AtomicUsize = AtomicUsize::new(1);
        let id: u16 = (std::process::id() as u16)
            ^ (PING_ID.fetch_add(1, Ordering::SeqCst) as u16).wrapping_mul(7919);
        let mut pkt = vec![8u8, 0, 0, 0, (id >> 8) as u8, id as u8, 0, 1];
        pkt.extend_from_slice(b"nimbus!!");
        let sum = checksum(&pkt);
        pkt[2..4].copy_from_slice(&sum.to_be_bytes());
        let dest = SocketAddr::V4(SocketAddrV4::new(ip, 0));
        if sock.send_to(&pkt, &dest.into()).is_err() {
            return false;
        }
        let deadline = Instant::now() + PROBE_TIMEOUT;
        let mut bytes = [0u8; 1500];
        while Instant::now() < deadline {
            let Ok(n) = (&sock).read(&mut bytes) else {
                continue;
            };
            let ihl = usize::from(bytes[0] & 0x0f) * 4;
            let src = Ipv4Addr::new(bytes[12], bytes[13], bytes[14], bytes[15]);
            if n >= ihl + 8
                && bytes[ihl] == 0
                && src == ip
                && bytes[ihl + 4..ihl + 6] == id.to_be_bytes()
            {
                return true;
            }
        }
        false
    })
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Runs `ip` inside a namespace (test set-up such as spoofing).
pub fn ip_in(ns: &str, args: &[&str]) {
    let mut all = vec!["ip", "-n", ns];
    all.extend_from_slice(args);
    sh(&all);
}

/// Sends one ARP reply from `ns`'s eth0 claiming `sender_ip` is at
/// `sender_mac`, while `watch_ns` captures ARP on its eth0; returns the
/// sender IPs `watch_ns` saw.
pub fn arp_probe(ns: &str, watch_ns: &str, frames: &[(&str, std::net::Ipv4Addr)]) -> Vec<String> {
    const SNIFF: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind(("eth0", 0)); s.settimeout(0.2)
print("ready", flush=True)
end = time.time() + 1.5
while time.time() < end:
    try:
        f = s.recv(2048)
    except socket.timeout:
        continue
    if len(f) >= 42: print(socket.inet_ntoa(f[28:32]), flush=True)
"#;
    const SEND: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
args = sys.argv[1:]
for i in range(0, len(args), 2):
    mac = bytes.fromhex(args[i].replace(":", "")); ip = socket.inet_aton(args[i + 1])
    frame = b"\xff" * 6 + mac + b"\x08\x06" + b"\x00\x01\x08\x00\x06\x04\x00\x02" + mac + ip + b"\xff" * 6 + ip
    s.send(frame)
"#;
    let mut sniffer = Command::new("ip")
        .args(["netns", "exec", watch_ns, "python3", "-c", SNIFF])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 sniffer");
    let mut out = sniffer.stdout.take().expect("stdout");
    let mut ready = [0u8; 6];
    out.read_exact(&mut ready).expect("sniffer ready");
    let mut args: Vec<String> = vec![
        "netns".into(),
        "exec".into(),
        ns.into(),
        "python3".into(),
        "-c".into(),
        SEND.into(),
    ];
    for (mac, ip) in frames {
        args.push(mac.to_string());
        args.push(ip.to_string());
    }
    let status = Command::new("ip")
        .args(&args)
        .status()
        .expect("python3 sender");
    assert!(status.success());
    let mut text = String::new();
    out.read_to_string(&mut text).expect("sniffer output");
    let _ = sniffer.wait();
    text.lines().map(str::to_string).collect()
}

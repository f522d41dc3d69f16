//! The load balancer with real traffic: stand-in VMs run small HTTP and
//! UDP servers that answer with their name, clients in other namespaces
//! go through netd's frontends.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(3);

/// A backend: an HTTP/1.0 server in a namespace answering with its name.
/// `GET /health` answers `health`'s status; `GET /echo` answers the name,
/// then echoes bytes until EOF; `GET /whoami` answers the client address
/// of the PROXY v2 header. Every response is delayed by `delay_ms`.
struct Backend {
    name: String,
    health: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
    served: Arc<AtomicU64>,
    listener_fd: i32,
    killed: Arc<AtomicBool>,
    _listener: Arc<TcpListener>,
}

impl Backend {
    fn start(ns: &str, name: &str, port: u16) -> Backend {
        let listener = Arc::new(in_ns(ns, move || {
            TcpListener::bind(("0.0.0.0", port)).expect("bind backend")
        }));
        let b = Backend {
            name: name.to_string(),
            health: Arc::new(AtomicU16::new(200)),
            delay_ms: Arc::new(AtomicU64::new(0)),
            served: Arc::new(AtomicU64::new(0)),
            listener_fd: listener.as_raw_fd(),
            killed: Arc::new(AtomicBool::new(false)),
            _listener: listener.clone(),
        };
        let (name, health, delay, served, killed) = (
            b.name.clone(),
            b.health.clone(),
            b.delay_ms.clone(),
            b.served.clone(),
            b.killed.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if killed.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (name, health, delay, served) =
                    (name.clone(), health.clone(), delay.clone(), served.clone());
                std::thread::spawn(move || serve(conn, &name, &health, &delay, &served));
            }
        });
        b
    }

    /// Stops listening: new connections are refused from now on.
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        // SAFETY: shutdown on a listening socket we own; it only wakes
        // accept() and makes the kernel refuse new connections.
        unsafe { libc::shutdown(self.listener_fd, libc::SHUT_RDWR) };
    }
}

fn serve(
    mut conn: TcpStream,
    name: &str,
    health: &AtomicU16,
    delay: &AtomicU64,
    served: &AtomicU64,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    // A PROXY v2 header may come first (its signature starts with CRLFCRLF).
    let (client, skip) = loop {
        let (client, skip) = netd::lb::proxy_header::decode(&head).unwrap_or((None, 0));
        if head[skip..].windows(4).any(|w| w == b"\r\n\r\n") {
            break (client, skip);
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    };
    let text = String::from_utf8_lossy(&head[skip..]).into_owned();
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    served.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(delay.load(Ordering::SeqCst)));
    let (status, body) = match path.as_str() {
        "/health" => (health.load(Ordering::SeqCst), name.to_string()),
        "/whoami" => (200, client.map(|c| c.ip().to_string()).unwrap_or_default()),
        _ => (200, name.to_string()),
    };
    if path == "/echo" {
        let _ = conn.write_all(format!("{name}\n").as_bytes());
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 || conn.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        return;
    }
    let _ = conn.write_all(
        format!(
            "HTTP/1.0 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

/// One HTTP GET from the current namespace; the body.
fn get(addr: SocketAddrV4, path: &str, from: Option<Ipv4Addr>) -> Option<String> {
    let mut s = match from {
        None => TcpStream::connect_timeout(&addr.into(), TIMEOUT).ok()?,
        Some(src) => {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
            sock.bind(&SocketAddr::new(src.into(), 0).into()).ok()?;
            sock.connect_timeout(&SocketAddr::V4(addr).into(), TIMEOUT)
                .ok()?;
            sock.into()
        }
    };
    s.set_read_timeout(Some(TIMEOUT)).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_string())
}

/// `n` sequential GETs from namespace `ns`; counts per answer ("" = failed).
fn tally(ns: &str, addr: SocketAddrV4, n: usize) -> BTreeMap<String, usize> {
    in_ns(ns, move || {
        let mut t = BTreeMap::new();
        for _ in 0..n {
            *t.entry(get(addr, "/", None).unwrap_or_default())
                .or_insert(0) += 1;
        }
        t
    })
}

/// A VNet `v` with subnet `s`, `n` backend VMs `b0..` serving on port 80,
/// a client VM, and an internal LB `lb` with pool `pool` of all backends.
fn internal_world(w: &mut World, n: usize) -> (Vec<Backend>, String, Ipv4Addr) {
    w.json(json!({"op": "vnet_create", "name": "v", "address_space": ["10.0.0.0/16"]}));
    w.json(json!({"op": "subnet_create", "vnet": "v", "name": "s", "cidr": "10.0.1.0/24"}));
    let mut backends = Vec::new();
    for i in 0..n {
        let name = format!("b{i}");
        let (ns, _) = w.vm(&name, "v", "s", json!({}));
        backends.push(Backend::start(&ns, &name, 80));
    }
    let (client, _) = w.vm("client", "v", "s", json!({}));
    let lb = w.json(json!({"op": "lb_create", "name": "lb", "vnet": "v", "subnet": "s", "private_ip": "10.0.1.200"}));
    let fip: Ipv4Addr = lb["frontend_ip"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("frontend ip");
    let members: Vec<Value> = (0..n).map(|i| json!({"nic": format!("b{i}")})).collect();
    w.json(json!({"op": "lb_pool_create", "lb": "lb", "name": "pool", "members": members}));
    (backends, client, fip)
}

fn show(w: &World) -> Value {
    w.json(json!({"op": "lb_show", "name": "lb"}))
}

/// The probe state of backend NIC `nic` in rule 0.
fn state_of(w: &World, nic: &str) -> String {
    let v = show(w);
    v["rules"][0]["backends"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["nic"] == nic))
        .map(|b| b["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not within {limit:?}");
}

#[test]
fn round_robin_exact_weighted_within_5_percent_and_metrics() {
    let mut w = World::new();
    w.start_netd_with(&[("NIMBUS_NETD_METRICS_LISTEN", "127.0.0.1:9101")]);
    let (_b, client, fip) = internal_world(&mut w, 3);
    w.json(
        json!({"op": "lb_rule_create", "lb": "lb", "name": "rr", "protocol": "Tcp",
                  "frontend_port": 80, "pool": "pool", "algorithm": "RoundRobin"}),
    );
    let t = tally(&client, SocketAddrV4::new(fip, 80), 300);
    assert_eq!(
        t.values().copied().collect::<Vec<_>>(),
        vec![100, 100, 100],
        "{t:?}"
    );

    // Bad input: nothing applied.
    let before = show(&w);
    for bad in [
        json!({"op": "lb_rule_create", "lb": "lb", "name": "x", "protocol": "Tcp", "frontend_port": 81, "pool": "nope"}),
        json!({"op": "lb_rule_create", "lb": "lb", "name": "x", "protocol": "Tcp", "frontend_port": 80, "pool": "pool"}),
        json!({"op": "lb_rule_create", "lb": "lb", "name": "x", "protocol": "Tcp", "frontend_port": 81, "pool": "pool", "probe": "nope"}),
        json!({"op": "lb_pool_create", "lb": "lb", "name": "p2", "members": [{"nic": "b0", "weight": 0}]}),
    ] {
        let r: netd::api::protocol::Request = serde_json::from_value(bad.clone()).expect("request");
        assert!(w.try_call(r).is_err(), "{bad} accepted");
    }
    let mut after = show(&w);
    after["rules"][0]["counters"] = before["rules"][0]["counters"].clone();
    after["rules"][0]["backends"] = before["rules"][0]["backends"].clone();
    assert_eq!(before, after, "refused changes change nothing");

    w.json(
        json!({"op": "lb_pool_create", "lb": "lb", "name": "weighted", "members": [
        {"nic": "b0", "weight": 5}, {"nic": "b1", "weight": 3}, {"nic": "b2", "weight": 2}]}),
    );
    w.json(json!({"op": "lb_rule_create", "lb": "lb", "name": "wrr", "protocol": "Tcp",
                  "frontend_port": 81, "backend_port": 80, "pool": "weighted", "algorithm": "WeightedRoundRobin"}));
    let n = 10_000;
    let start = Instant::now();
    let t = tally(&client, SocketAddrV4::new(fip, 81), n);
    println!("weighted: {t:?} in {:?}", start.elapsed());
    for (name, share) in [("b0", 0.5), ("b1", 0.3), ("b2", 0.2)] {
        let got = t.get(name).copied().unwrap_or(0) as f64 / n as f64;
        assert!(
            (got - share).abs() <= share * 0.05,
            "{name}: {got} vs {share}: {t:?}"
        );
    }

    // Metrics: per frontend and backend.
    let text = in_ns(&w.host.clone(), || {
        let mut s = TcpStream::connect("127.0.0.1:9101").expect("metrics endpoint");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    });
    assert!(
        text.contains(&format!(
            "nimbus_lb_frontend_connections_total{{lb=\"lb\",rule=\"wrr\",frontend=\"{fip}:81\",protocol=\"Tcp\"}} 10000"
        )),
        "{text}"
    );
    assert!(text.contains("nimbus_lb_backend_connections_total{lb=\"lb\",rule=\"rr\",backend=\"10.0.1.4:80\",nic=\"b0\"} 100"), "{text}");
    assert!(text.contains("nimbus_lb_backend_up{"), "{text}");
    assert!(text.contains("nimbus_lb_frontend_bytes_total{"), "{text}");
}

#[test]
fn source_ip_hashing_is_stable_and_removal_moves_only_that_backends_clients() {
    let mut w = World::new();
    let inet = w.internet();
    w.json(json!({"op": "vnet_create", "name": "v", "address_space": ["10.0.0.0/16"]}));
    w.json(json!({"op": "subnet_create", "vnet": "v", "name": "s", "cidr": "10.0.1.0/24"}));
    w.json(json!({"op": "public_ip_create", "name": "lb-ip"}));
    let lb = w.json(json!({"op": "lb_create", "name": "lb", "public_ip": "lb-ip"}));
    let fip: Ipv4Addr = lb["frontend_ip"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("frontend ip");
    let mut backends = Vec::new();
    for i in 0..4 {
        let (ns, _) = w.vm(&format!("b{i}"), "v", "s", json!({}));
        backends.push(Backend::start(&ns, &format!("b{i}"), 8080));
    }
    w.json(json!({"op": "lb_pool_create", "lb": "lb", "name": "pool",
                  "members": [{"nic": "b0"}, {"nic": "b1"}, {"nic": "b2"}, {"nic": "b3"}]}));
    w.json(json!({"op": "lb_rule_create", "lb": "lb", "name": "web", "protocol": "Tcp",
                  "frontend_port": 80, "backend_port": 8080, "pool": "pool", "algorithm": "SourceIp"}));
    // 120 internet clients, one address each.
    let clients: Vec<Ipv4Addr> = (0..120)
        .map(|i| Ipv4Addr::new(198, 51, 100, 10 + i))
        .collect();
    for c in &clients {
        ip_in(&inet, &["addr", "add", &format!("{c}/24"), "dev", "wan"]);
    }
    let front = SocketAddrV4::new(fip, 80);
    let map = |clients: Vec<Ipv4Addr>, rounds: usize| {
        in_ns(&inet, move || {
            clients
                .iter()
                .map(|c| {
                    let answers: Vec<String> = (0..rounds)
                        .map(|_| get(front, "/", Some(*c)).unwrap_or_default())
                        .collect();
                    (*c, answers)
                })
                .collect::<Vec<_>>()
        })
    };
    let before: BTreeMap<Ipv4Addr, String> = map(clients.clone(), 3)
        .into_iter()
        .map(|(c, a)| {
            assert!(a.iter().all(|x| x == &a[0] && !x.is_empty()), "{c}: {a:?}");
            (c, a[0].clone())
        })
        .collect();
    let used: std::collections::BTreeSet<&String> = before.values().collect();
    assert_eq!(used.len(), 4, "clients spread over all backends");

    w.json(json!({"op": "lb_pool_remove", "lb": "lb", "pool": "pool", "nic": "b2"}));
    let after = map(clients, 1);
    let mut moved = 0;
    for (c, a) in after {
        let was = &before[&c];
        if was == "b2" {
            assert_ne!(a[0], "b2");
            moved += 1;
        } else {
            assert_eq!(&a[0], was, "{c} moved off a backend that stayed");
        }
    }
    println!("consistent hashing: {moved} of 120 clients moved (all of them b2's)");
}

#[test]
fn least_connections_avoids_the_slow_backend() {
    let mut w = World::new();
    let (b, client, fip) = internal_world(&mut w, 2);
    b[0].delay_ms.store(400, Ordering::SeqCst);
    w.json(
        json!({"op": "lb_rule_create", "lb": "lb", "name": "lc", "protocol": "Tcp",
                  "frontend_port": 80, "pool": "pool", "algorithm": "LeastConnections"}),
    );
    let front = SocketAddrV4::new(fip, 80);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            std::thread::spawn(move || {
                in_ns(&client, move || {
                    let end = Instant::now() + Duration::from_millis(1500);
                    let mut t = BTreeMap::new();
                    while Instant::now() < end {
                        *t.entry(get(front, "/", None).unwrap_or_default())
                            .or_insert(0usize) += 1;
                    }
                    t
                })
            })
        })
        .collect();
    let mut total: BTreeMap<String, usize> = BTreeMap::new();
    for t in threads {
        for (k, v) in t.join().expect("client") {
            *total.entry(k).or_insert(0) += v;
        }
    }
    println!("least connections: {total:?}");
    let slow = total.get("b0").copied().unwrap_or(0);
    let fast = total.get("b1").copied().unwrap_or(0);
    assert!(fast > 10 * slow.max(1), "{total:?}");
}

/// A round-robin TCP rule on port 80 whose backends are probed with
/// `GET /health` every second, out after 2 failures.
fn http_probed_round_robin(w: &World) {
    w.json(
        json!({"op": "lb_probe_create", "lb": "lb", "name": "health", "protocol": "Http",
                  "port": 80, "path": "/health", "interval_seconds": 1, "unhealthy_threshold": 2}),
    );
    w.json(json!({"op": "lb_rule_create", "lb": "lb", "name": "web", "protocol": "Tcp",
                  "frontend_port": 80, "pool": "pool", "probe": "health", "algorithm": "RoundRobin"}));
}

#[test]
fn probe_takes_a_failing_backend_out_and_brings_it_back() {
    let mut w = World::new();
    let (b, client, fip) = internal_world(&mut w, 3);
    http_probed_round_robin(&w);
    wait_for("b1 up", Duration::from_secs(3), || {
        state_of(&w, "b1") == "Up"
    });
    b[1].health.store(503, Ordering::SeqCst);
    let took = wait_for("b1 down", Duration::from_secs(5), || {
        state_of(&w, "b1") == "Down"
    });
    println!("probe: b1 out of rotation after {took:?} (interval 1 s x threshold 2)");
    let v = show(&w);
    let probe = &v["probes"][0]["backends"];
    assert!(
        probe
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["state"] == "Down"
                && p["last_result"].as_str().is_some_and(|r| r.contains("503")))),
        "{probe}"
    );
    let t = tally(&client, SocketAddrV4::new(fip, 80), 30);
    assert_eq!(t.get("b1"), None, "{t:?}");
    assert_eq!(t.values().sum::<usize>(), 30);
    b[1].health.store(200, Ordering::SeqCst);
    wait_for("b1 back", Duration::from_secs(3), || {
        state_of(&w, "b1") == "Up"
    });
    let t = tally(&client, SocketAddrV4::new(fip, 80), 30);
    assert_eq!(t.get("b1"), Some(&10), "{t:?}");
}

#[test]
fn a_backend_joining_a_pool_in_service_gets_flows_only_after_its_probe_passes() {
    let mut w = World::new();
    let (_b, client, fip) = internal_world(&mut w, 2);
    http_probed_round_robin(&w);
    wait_for("b0 and b1 up", Duration::from_secs(3), || {
        state_of(&w, "b0") == "Up" && state_of(&w, "b1") == "Up"
    });
    // A new instance still booting: it does not answer its probe yet.
    let (ns, _) = w.vm("b2", "v", "s", json!({}));
    let b2 = Backend::start(&ns, "b2", 80);
    b2.health.store(503, Ordering::SeqCst);
    w.json(json!({"op": "lb_pool_add", "lb": "lb", "pool": "pool", "nic": "b2"}));
    assert_eq!(state_of(&w, "b2"), "Down", "a joining backend starts down");
    let t = tally(&client, SocketAddrV4::new(fip, 80), 30);
    assert_eq!(t.get("b2"), None, "no flow before its probe passed: {t:?}");
    assert_eq!(t.values().sum::<usize>(), 30, "{t:?}");
    b2.health.store(200, Ordering::SeqCst);
    let took = wait_for("b2 in service", Duration::from_secs(3), || {
        state_of(&w, "b2") == "Up"
    });
    println!("joining backend in service {took:?} after its probe started passing");
    let t = tally(&client, SocketAddrV4::new(fip, 80), 30);
    assert_eq!(t.get("b2"), Some(&10), "{t:?}");
}

#[test]
fn a_backend_killed_under_load() {
    let mut w = World::new();
    let (b, client, fip) = internal_world(&mut w, 3);
    w.json(
        json!({"op": "lb_probe_create", "lb": "lb", "name": "tcp", "protocol": "Tcp",
                  "port": 80, "interval_seconds": 1, "unhealthy_threshold": 2}),
    );
    w.json(
        json!({"op": "lb_rule_create", "lb": "lb", "name": "web", "protocol": "Tcp",
                  "frontend_port": 80, "pool": "pool", "probe": "tcp", "algorithm": "RoundRobin"}),
    );
    let front = SocketAddrV4::new(fip, 80);
    let load = std::thread::spawn(move || {
        in_ns(&client, move || {
            let end = Instant::now() + Duration::from_secs(4);
            let (mut ok, mut failed) = (0usize, 0usize);
            while Instant::now() < end {
                match get(front, "/", None) {
                    Some(_) => ok += 1,
                    None => failed += 1,
                }
            }
            (ok, failed)
        })
    });
    std::thread::sleep(Duration::from_secs(1));
    b[2].kill();
    let killed_at = Instant::now();
    wait_for("b2 marked down", Duration::from_secs(4), || {
        state_of(&w, "b2") == "Down"
    });
    println!("killed backend marked down after {:?}", killed_at.elapsed());
    let (ok, failed) = load.join().expect("load");
    println!("backend killed under load: {ok} requests ok, {failed} failed");
    let v = show(&w);
    let b2 = v["rules"][0]["backends"]
        .as_array()
        .and_then(|a| a.iter().find(|b| b["nic"] == "b2").cloned());
    println!("b2 after the kill: {}", b2.unwrap_or_default());
    assert!(ok > 100);
    assert!(failed <= 3, "{failed} requests failed");
}

#[test]
fn draining_lets_open_connections_finish() {
    let mut w = World::new();
    let (_b, client, fip) = internal_world(&mut w, 2);
    w.json(
        json!({"op": "lb_rule_create", "lb": "lb", "name": "web", "protocol": "Tcp",
                  "frontend_port": 80, "pool": "pool", "algorithm": "RoundRobin"}),
    );
    let front = SocketAddrV4::new(fip, 80);
    let mut held = in_ns(&client, move || {
        let mut s = TcpStream::connect_timeout(&front.into(), TIMEOUT).expect("connect");
        s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        s.write_all(b"GET /echo HTTP/1.0\r\n\r\n").expect("send");
        s
    });
    let mut line = [0u8; 3];
    held.read_exact(&mut line).expect("name");
    let name = String::from_utf8_lossy(&line[..2]).into_owned();
    w.json(json!({"op": "lb_pool_remove", "lb": "lb", "pool": "pool", "nic": name}));
    let v = show(&w);
    let draining = v["rules"][0]["backends"]
        .as_array()
        .and_then(|a| a.iter().find(|b| b["nic"] == name.as_str()).cloned())
        .expect("draining member listed");
    assert_eq!(draining["draining"], true, "{draining}");
    assert_eq!(draining["counters"]["active"], 1, "{draining}");
    let t = tally(&client, front, 20);
    assert_eq!(
        t.get(&name),
        None,
        "new connections avoid the draining backend: {t:?}"
    );
    held.write_all(b"still there?")
        .expect("send on the drained connection");
    let mut echo = [0u8; 12];
    held.read_exact(&mut echo)
        .expect("echo on the drained connection");
    assert_eq!(&echo, b"still there?");
    drop(held);
    wait_for("drained member dropped", Duration::from_secs(3), || {
        let v = show(&w);
        v["rules"][0]["backends"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    });
}

#[test]
fn udp_sessions_stick_and_expire() {
    let mut w = World::new();
    w.json(json!({"op": "vnet_create", "name": "v", "address_space": ["10.0.0.0/16"]}));
    w.json(json!({"op": "subnet_create", "vnet": "v", "name": "s", "cidr": "10.0.1.0/24"}));
    for name in ["u0", "u1"] {
        let (ns, _) = w.vm(name, "v", "s", json!({}));
        let sock = in_ns(&ns, || UdpSocket::bind("0.0.0.0:5353").expect("bind"));
        let name = name.to_string();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((_, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(name.as_bytes(), from);
            }
        });
    }
    let (client, _) = w.vm("client", "v", "s", json!({}));
    w.json(json!({"op": "lb_create", "name": "lb", "vnet": "v", "subnet": "s", "private_ip": "10.0.1.200"}));
    w.json(json!({"op": "lb_pool_create", "lb": "lb", "name": "pool", "members": [{"nic": "u0"}, {"nic": "u1"}]}));
    w.json(json!({"op": "lb_rule_create", "lb": "lb", "name": "dns", "protocol": "Udp", "frontend_port": 53,
                  "backend_port": 5353, "pool": "pool", "algorithm": "RoundRobin", "idle_timeout_seconds": 1}));
    let front = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 200), 53);
    let (first, second) = in_ns(&client, move || {
        let ask = |s: &UdpSocket| {
            s.send_to(b"q", front).expect("send");
            let mut buf = [0u8; 64];
            let n = s.recv(&mut buf).expect("answer");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        let a = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let b = UdpSocket::bind("0.0.0.0:0").expect("bind");
        a.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        b.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let first: Vec<String> = (0..5).map(|_| ask(&a)).collect();
        let second: Vec<String> = (0..5).map(|_| ask(&b)).collect();
        (first, second)
    });
    assert!(first.iter().all(|x| x == &first[0]), "{first:?}");
    assert!(second.iter().all(|x| x == &second[0]), "{second:?}");
    assert_ne!(first[0], second[0], "two sessions, round robin");
    let v = show(&w);
    assert_eq!(v["rules"][0]["counters"]["total"], 2, "{v}");
    assert_eq!(v["rules"][0]["counters"]["active"], 2, "{v}");
    wait_for(
        "sessions expire after the idle timeout",
        Duration::from_secs(4),
        || show(&w)["rules"][0]["counters"]["active"] == 0,
    );
}

#[test]
fn nsg_admits_the_load_balancer_by_service_tag_and_proxy_v2_carries_the_client() {
    let mut w = World::new();
    w.json(json!({"op": "nsg_create", "name": "backends", "rules": [
        {"name": "lb", "priority": 100, "direction": "Inbound", "access": "Allow", "protocol": "Tcp",
         "sources": ["AzureLoadBalancer"], "destination_ports": ["80"]},
        {"name": "no-vnet", "priority": 200, "direction": "Inbound", "access": "Deny", "protocol": "*",
         "sources": ["VirtualNetwork"]}]}));
    w.json(json!({"op": "vnet_create", "name": "v", "address_space": ["10.0.0.0/16"]}));
    w.json(json!({"op": "subnet_create", "vnet": "v", "name": "s", "cidr": "10.0.1.0/24"}));
    let (ns, backend_ip) = w.vm("b0", "v", "s", json!({"nsg": "backends"}));
    let _b = Backend::start(&ns, "b0", 80);
    let (client, client_ip) = w.vm("client", "v", "s", json!({}));
    w.json(json!({"op": "lb_create", "name": "lb", "vnet": "v", "subnet": "s"}));
    let fip: Ipv4Addr = show(&w)["frontend_ip"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("frontend");
    w.json(json!({"op": "lb_pool_create", "lb": "lb", "name": "pool", "members": [{"nic": "b0"}]}));
    w.json(json!({"op": "lb_probe_create", "lb": "lb", "name": "tcp", "protocol": "Tcp", "port": 80, "interval_seconds": 1}));
    w.json(json!({"op": "lb_rule_create", "lb": "lb", "name": "web", "protocol": "Tcp", "frontend_port": 80,
                  "pool": "pool", "probe": "tcp", "proxy_protocol": true}));
    let direct = SocketAddrV4::new(backend_ip, 80);
    let via_lb = SocketAddrV4::new(fip, 80);
    let (d, l) = in_ns(&client, move || {
        (get(direct, "/whoami", None), get(via_lb, "/whoami", None))
    });
    assert_eq!(d, None, "the NSG denies the VNet");
    assert_eq!(
        l,
        Some(client_ip.to_string()),
        "the LB is allowed and the backend learns the client"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(state_of(&w, "b0"), "Up", "probes pass the NSG too");
}

/// GET `/` through `front` `n` times from `ns`: (answers per backend,
/// requests that failed).
fn tally_failures(ns: &str, front: SocketAddrV4, n: usize) -> (BTreeMap<String, usize>, usize) {
    let t = tally(ns, front, n);
    let failed = t.get("").copied().unwrap_or(0);
    (t, failed)
}

/// Backend `nic` of rule 0 as `lb show` lists it.
fn backend_view(w: &World, nic: &str) -> Value {
    show(w)["rules"][0]["backends"]
        .as_array()
        .and_then(|a| a.iter().find(|b| b["nic"] == nic).cloned())
        .unwrap_or_default()
}

/// An internal LB over three backends with a TCP probe of `interval`
/// seconds and threshold 3 (passive checking on, as by default) and a
/// round-robin rule on port 80.
fn passive_world(w: &mut World, interval: u32) -> (Vec<Backend>, String, SocketAddrV4) {
    let (b, client, fip) = internal_world(w, 3);
    let probe = w.json(
        json!({"op": "lb_probe_create", "lb": "lb", "name": "tcp", "protocol": "Tcp",
                              "port": 80, "interval_seconds": interval, "unhealthy_threshold": 3}),
    );
    assert_eq!(
        probe["probes"][0]["passive"], true,
        "on by default: {probe}"
    );
    w.json(
        json!({"op": "lb_rule_create", "lb": "lb", "name": "web", "protocol": "Tcp",
                  "frontend_port": 80, "pool": "pool", "probe": "tcp", "algorithm": "RoundRobin"}),
    );
    let front = SocketAddrV4::new(fip, 80);
    let (t, failed) = tally_failures(&client, front, 30);
    assert_eq!((t.get("b2"), failed), (Some(&10), 0), "{t:?}");
    (b, client, front)
}

#[test]
fn passive_checks_take_a_dead_backend_out_long_before_its_probe() {
    let mut w = World::new();
    w.start_netd_with(&[("NIMBUS_NETD_METRICS_LISTEN", "127.0.0.1:9101")]);
    // A probe every 30 s: on its own it would need 3 x 30 s to notice.
    let (b, client, front) = passive_world(&mut w, 30);
    b[2].kill();
    let killed_at = Instant::now();
    // Every third request picks b2: its connection is refused, the
    // request goes on to another backend, and the third refusal in a row
    // takes b2 out.
    let (t, failed) = tally_failures(&client, front, 60);
    let took = killed_at.elapsed();
    assert_eq!(failed, 0, "no request lost: {t:?}");
    assert_eq!(t.get("b2"), None, "{t:?}");
    let b2 = backend_view(&w, "b2");
    println!("passive check: b2 out {took:?} after the kill (probe interval 30 s): {b2}");
    assert_eq!(b2["state"], "Down", "{b2}");
    assert!(
        b2["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("passive: 3 connect failures in a row to 10.0.1.6:80")),
        "{b2}"
    );
    assert_eq!(
        b2["counters"]["errors"], 3,
        "one refused connection each: {b2}"
    );
    assert_eq!(b2["passive_downs"], 1, "{b2}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    // The verdict is the probe's: `lb show` lists it there too.
    let v = show(&w);
    assert!(
        v["probes"][0]["backends"].as_array().is_some_and(|a| a
            .iter()
            .any(|p| p["address"] == "10.0.1.6:80" && p["state"] == "Down")),
        "{v}"
    );
    // New flows keep away from it.
    let (t, failed) = tally_failures(&client, front, 30);
    assert_eq!(
        (t.get("b0"), t.get("b1"), failed),
        (Some(&15), Some(&15), 0)
    );
    assert_eq!(backend_view(&w, "b2")["counters"]["errors"], 3);

    let text = in_ns(&w.host.clone(), || {
        let mut s = TcpStream::connect("127.0.0.1:9101").expect("metrics endpoint");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    });
    let labels = "{lb=\"lb\",rule=\"web\",backend=\"10.0.1.6:80\",nic=\"b2\"}";
    assert!(
        text.contains(&format!("nimbus_lb_backend_passive_downs_total{labels} 1")),
        "{text}"
    );
    assert!(
        text.contains(&format!("nimbus_lb_backend_up{labels} 0")),
        "{text}"
    );
}

#[test]
fn a_passively_removed_backend_returns_when_its_probe_passes() {
    let mut w = World::new();
    // Probes every 2 s: passive checking acts within the first requests,
    // well before the probe's 3 failures; the probe brings b2 back.
    let (mut b, client, front) = passive_world(&mut w, 2);
    b[2].kill();
    let killed_at = Instant::now();
    let (t, failed) = tally_failures(&client, front, 12);
    assert_eq!(failed, 0, "{t:?}");
    let b2 = backend_view(&w, "b2");
    assert_eq!(b2["state"], "Down", "{b2}");
    assert!(
        b2["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("passive: 3 connect failures")),
        "out by passive checking, {:?} after the kill: {b2}",
        killed_at.elapsed()
    );
    // The server comes back on the same port.
    drop(b.pop());
    let ns = format!("{}-b2", w.prefix);
    let _b2 = Backend::start(&ns, "b2", 80);
    let back = wait_for("b2 back in rotation", Duration::from_secs(6), || {
        state_of(&w, "b2") == "Up"
    });
    println!(
        "passively removed backend back {back:?} after its server returned (probe interval 2 s)"
    );
    let b2 = backend_view(&w, "b2");
    assert_eq!(b2["reason"], Value::Null, "{b2}");
    let (t, failed) = tally_failures(&client, front, 30);
    assert_eq!((t.get("b2"), failed), (Some(&10), 0), "{t:?}");
}

#[test]
fn udp_proxy_v2_tells_the_backend_the_client_address() {
    let mut w = World::new();
    w.json(json!({"op": "vnet_create", "name": "v", "address_space": ["10.0.0.0/16"]}));
    w.json(json!({"op": "subnet_create", "vnet": "v", "name": "s", "cidr": "10.0.1.0/24"}));
    let (ns, _) = w.vm("u0", "v", "s", json!({}));
    // Answers "<client address from the header> <family/transport byte>
    // <payload after the header>", or "no header".
    let sock = in_ns(&ns, || UdpSocket::bind("0.0.0.0:5353").expect("bind"));
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let d = &buf[..n];
            let answer = match netd::lb::proxy_header::decode(d) {
                Some((Some(client), len)) => format!(
                    "{client} {:#04x} {}",
                    d[13],
                    String::from_utf8_lossy(&d[len..])
                ),
                _ => "no header".to_string(),
            };
            let _ = sock.send_to(answer.as_bytes(), from);
        }
    });
    let (client, client_ip) = w.vm("client", "v", "s", json!({}));
    w.json(json!({"op": "lb_create", "name": "lb", "vnet": "v", "subnet": "s", "private_ip": "10.0.1.200"}));
    w.json(json!({"op": "lb_pool_create", "lb": "lb", "name": "pool", "members": [{"nic": "u0"}]}));
    let v = w.json(json!({"op": "lb_rule_create", "lb": "lb", "name": "dns", "protocol": "Udp",
                          "frontend_port": 53, "backend_port": 5353, "pool": "pool", "proxy_protocol": true}));
    assert_eq!(v["rules"][0]["proxy_protocol"], true, "{v}");
    let front = SocketAddrV4::new(Ipv4Addr::new(10, 0, 1, 200), 53);
    let (local, answers) = in_ns(&client, move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        let local = s.local_addr().expect("local address");
        // Every datagram of the session carries the header, not only the
        // first.
        let answers: Vec<String> = (0..3)
            .map(|i| {
                s.send_to(format!("q{i}").as_bytes(), front).expect("send");
                let mut buf = [0u8; 256];
                let n = s.recv(&mut buf).expect("answer");
                String::from_utf8_lossy(&buf[..n]).into_owned()
            })
            .collect();
        (local, answers)
    });
    let seen = SocketAddrV4::new(client_ip, local.port());
    let want: Vec<String> = (0..3).map(|i| format!("{seen} 0x12 q{i}")).collect();
    assert_eq!(answers, want);
}

//! A scale set under continuous HTTP load through its load balancer, with
//! real guests: `nimbus scale web 3` (1→3) and `nimbus scale web 1` (3→1)
//! while a client keeps requesting `GET /` through the frontend, one
//! connection per request. No request may fail: new instances get flows
//! only once their probe passes, leaving ones drain first. The new
//! instances must serve traffic before the set shrinks again, and the
//! topology's record follows every change (`down` removes exactly what is
//! left).
//!
//! Needs root, /dev/kvm, `nimbus-vmm` next to `nimbus` and the default
//! guest images (scripts/test.sh builds them first); without them the test
//! fails and says what is missing.

mod common;
mod guests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Host;
use guests::{frontend, http_get, only_netd_left, spawn_in_ns, vm_of, vms};
use serde_json::Value;

const FILE: &str = "name: sc
vnets:
  app:
    address_space: 10.62.0.0/16
    subnets: {web: {cidr: 10.62.1.0/24, nsg: web}}
nsgs:
  web:
    rules:
      http: {priority: 100, protocol: Tcp, destination_ports: 80}
public_ips:
  ip: {}
load_balancers:
  web:
    frontend: {public_ip: ip}
    pools: {web: {scale_set: web}}
    probes:
      http: {protocol: Http, port: 80, path: /healthz, interval_seconds: 5, unhealthy_threshold: 3}
    rules: {http: {frontend_port: 80, pool: web, probe: http, algorithm: RoundRobin}}
scale_sets:
  web: {replicas: 1, subnet: web, cpus: 1, memory: 96M}
";

/// What the load generator saw, per phase.
#[derive(Debug, Default)]
struct Tally {
    ok: BTreeMap<String, usize>,
    failed: Vec<String>,
}

impl Tally {
    fn total(&self) -> usize {
        self.ok.values().sum::<usize>() + self.failed.len()
    }
}

fn record_objects(host: &Host) -> Vec<String> {
    let text = std::fs::read_to_string(host.state_dir().join("topologies/sc.json"))
        .expect("topology record");
    let v: Value = serde_json::from_str(&text).expect("record JSON");
    let mut out: Vec<String> = v["objects"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                o["kind"].as_str().unwrap_or("?"),
                o["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    out.sort();
    out
}

fn instances(host: &Host) -> Vec<String> {
    vms(host).into_iter().map(|v| v.0).collect()
}

#[test]
fn scale_out_and_in_under_load_fails_no_request() {
    guests::require_guests();
    let host = Host::new();
    let path = host.dir.join("sc.yaml");
    std::fs::write(&path, FILE).expect("write file");
    let file = path.to_string_lossy().into_owned();
    let ruleset_before = host.ruleset();
    let links_before = host.link_names();

    let up = host.nimbus_in_ns(&["up", &file, "--wait-ready", "600"]);
    assert_eq!(up.code, Some(0), "{}", up.transcript());
    assert_eq!(instances(&host), ["sc-web-0"]);
    let fe: SocketAddr = format!("{}:80", frontend(&host, "sc-web"))
        .parse()
        .expect("frontend address");

    // The load: one request at a time, a new connection each, until told
    // to stop; tallied per phase.
    let phase = Arc::new(Mutex::new(0usize));
    let tallies: Arc<Mutex<Vec<Tally>>> = Arc::new(Mutex::new(vec![
        Tally::default(),
        Tally::default(),
        Tally::default(),
        Tally::default(),
    ]));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (phase, tallies, stop) = (phase.clone(), tallies.clone(), stop.clone());
        spawn_in_ns(&host, move || {
            while !stop.load(Ordering::Relaxed) {
                let r = http_get(fe, "/", Duration::from_secs(15));
                let p = *phase.lock().expect("phase");
                let mut t = tallies.lock().expect("tallies");
                match r {
                    Ok((200, body)) => {
                        *t[p].ok.entry(vm_of(&body).unwrap_or(body)).or_default() += 1
                    }
                    Ok((code, body)) => t[p].failed.push(format!("HTTP {code}: {body}")),
                    Err(e) => t[p].failed.push(e),
                }
            }
        })
    };
    let set_phase = |p: usize| *phase.lock().expect("phase") = p;
    std::thread::sleep(Duration::from_secs(5));

    // 1 -> 3.
    set_phase(1);
    let t = Instant::now();
    let out = host.nimbus_in_ns(&["scale", "web", "3", "--wait-ready", "600"]);
    let out_s = t.elapsed().as_secs_f64();
    assert_eq!(out.code, Some(0), "{}", out.transcript());
    println!("scale 1->3: {out_s:.1} s\n{}", out.stdout);
    assert_eq!(instances(&host), ["sc-web-0", "sc-web-1", "sc-web-2"]);
    assert!(record_objects(&host).contains(&"vm sc-web-2".to_string()));

    // All three serve (round robin): wait until each answered a few times.
    set_phase(2);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let served = tallies.lock().expect("tallies")[2]
            .ok
            .values()
            .filter(|n| **n >= 3)
            .count();
        if served == 3 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // 3 -> 1.
    set_phase(3);
    let t = Instant::now();
    let back = host.nimbus_in_ns(&["scale", "web", "1"]);
    let in_s = t.elapsed().as_secs_f64();
    assert_eq!(back.code, Some(0), "{}", back.transcript());
    println!("scale 3->1: {in_s:.1} s\n{}", back.stdout);
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load thread");
    assert_eq!(instances(&host), ["sc-web-0"]);
    let record = record_objects(&host);
    assert!(
        !record
            .iter()
            .any(|o| o.contains("sc-web-1") || o.contains("sc-web-2")),
        "{record:?}"
    );

    let tallies = tallies.lock().expect("tallies");
    let names = ["before", "scaling out", "after scale-out", "scaling in"];
    let mut total = 0;
    for (name, t) in names.iter().zip(tallies.iter()) {
        println!(
            "{name}: {} requests, by VM {:?}, failed {}",
            t.total(),
            t.ok,
            t.failed.len()
        );
        total += t.total();
    }
    println!("requests in all: {total}");
    for (name, t) in names.iter().zip(tallies.iter()) {
        assert!(
            t.failed.is_empty(),
            "{name}: {} of {} requests failed: {:?}",
            t.failed.len(),
            t.total(),
            &t.failed[..t.failed.len().min(5)]
        );
    }
    assert_eq!(
        tallies[2].ok.keys().map(String::as_str).collect::<Vec<_>>(),
        ["sc-web-0", "sc-web-1", "sc-web-2"],
        "every instance served after the scale-out"
    );
    assert!(tallies[1].total() > 0 && tallies[3].total() > 0);

    let down = host.nimbus_in_ns(&["down", &file]);
    assert_eq!(down.code, Some(0), "{}", down.transcript());
    assert!(vms(&host).is_empty());
    assert_eq!(only_netd_left(&host).len(), 1, "a VMM outlived down");
    assert_eq!(host.link_names(), links_before);
    assert_eq!(host.ruleset(), ruleset_before);
    assert!(!host.state_dir().join("topologies/sc.json").exists());
}

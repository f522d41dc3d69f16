//! A scale set under continuous HTTP load through its load balancer, with
//! real guests, through every way its size or its instances change:
//!
//! 1. `nimbus scale web 3` (1→3) and `nimbus scale web 1` (3→1);
//! 2. `nimbus autoscale web --once` with a 1 % vCPU target: 1→2;
//! 3. a rolling update (the file's `memory` 96M→128M, then `nimbus up`):
//!    both instances replaced one at a time, on the same names;
//! 4. `nimbus autoscale web --once` with a 100 % target while the load is
//!    light: 2→1.
//!
//! A client keeps requesting `GET /` through the frontend, one connection
//! per request. No request may fail: new instances get flows only once
//! their probe passes, leaving ones drain first. The new instances must
//! serve traffic before the set shrinks again, and the topology's record
//! follows every change (`down` removes exactly what is left).
//!
//! Needs root, /dev/kvm, `nimbus-vmm` next to `nimbus` and the default
//! guest images (scripts/test.sh builds them first); without them the test
//! fails and says what is missing.

mod common;
mod guests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Host;
use guests::{frontend, http_get, only_netd_left, spawn_in_ns, vm_list, vm_of, vms};
use serde_json::Value;

/// The topology, with the scale set's memory and autoscale rule as
/// parameters (the test edits the file between steps as a user would).
fn topology(memory: &str, max_replicas: u32, target_cpu_percent: u32) -> String {
    format!(
        "name: sc
vnets:
  app:
    address_space: 10.62.0.0/16
    subnets: {{web: {{cidr: 10.62.1.0/24, nsg: web}}}}
nsgs:
  web:
    rules:
      http: {{priority: 100, protocol: Tcp, destination_ports: 80}}
public_ips:
  ip: {{}}
load_balancers:
  web:
    frontend: {{public_ip: ip}}
    pools: {{web: {{scale_set: web}}}}
    probes:
      http: {{protocol: Http, port: 80, path: /healthz, interval_seconds: 5, unhealthy_threshold: 3}}
    rules: {{http: {{frontend_port: 80, pool: web, probe: http, algorithm: RoundRobin}}}}
scale_sets:
  web:
    replicas: 1
    subnet: web
    cpus: 1
    memory: {memory}
    autoscale: {{min_replicas: 1, max_replicas: {max_replicas}, target_cpu_percent: {target_cpu_percent}, cooldown_seconds: 0}}
"
    )
}

/// The phases of the load, in order.
const PHASES: [&str; 7] = [
    "before",
    "scaling out",
    "after scale-out",
    "scaling in",
    "autoscaling out",
    "rolling update",
    "autoscaling in",
];

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

/// (name, memory MiB, pid) of every VM.
fn instance_details(host: &Host) -> Vec<(String, u64, Option<u64>)> {
    let mut out: Vec<_> = vm_list(host)
        .iter()
        .map(|vm| {
            (
                vm["name"].as_str().unwrap_or_default().to_string(),
                vm["memory_mib"].as_u64().unwrap_or_default(),
                vm["pid"].as_u64(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn scale_autoscale_and_rolling_update_under_load_fail_no_request() {
    guests::require_guests();
    let host = Host::new();
    let path = host.dir.join("sc.yaml");
    let write = |memory: &str, max: u32, target: u32| {
        std::fs::write(&path, topology(memory, max, target)).expect("write file")
    };
    write("96M", 3, 1);
    let file = path.to_string_lossy().into_owned();
    let ruleset_before = host.ruleset();
    let links_before = host.link_names();

    let up = host.nimbus_in_ns(&["up", &file, "--wait-ready", "600"]);
    assert_eq!(up.code, Some(0), "{}", up.transcript());
    assert_eq!(instances(&host), ["sc-web-0"]);
    let fe: SocketAddr = format!("{}:80", frontend(&host, "sc-web"))
        .parse()
        .expect("frontend address");

    // The load: one request at a time, a new connection each, `gap_ms`
    // apart, until told to stop; tallied per phase.
    let phase = Arc::new(Mutex::new(0usize));
    let tallies: Arc<Mutex<Vec<Tally>>> = Arc::new(Mutex::new(
        PHASES.iter().map(|_| Tally::default()).collect(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let gap_ms = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let load = {
        let (phase, tallies, stop, gap_ms) =
            (phase.clone(), tallies.clone(), stop.clone(), gap_ms.clone());
        spawn_in_ns(&host, move || {
            while !stop.load(Ordering::Relaxed) {
                let sent = t0.elapsed().as_secs_f64();
                let r = http_get(fe, "/", Duration::from_secs(15))
                    .map_err(|e| format!("sent at {sent:.1} s into the load: {e}"));
                let p = *phase.lock().expect("phase");
                {
                    let mut t = tallies.lock().expect("tallies");
                    match r {
                        Ok((200, body)) => {
                            *t[p].ok.entry(vm_of(&body).unwrap_or(body)).or_default() += 1
                        }
                        Ok((code, body)) => t[p].failed.push(format!("HTTP {code}: {body}")),
                        Err(e) => t[p].failed.push(e),
                    }
                }
                std::thread::sleep(Duration::from_millis(gap_ms.load(Ordering::Relaxed)));
            }
        })
    };
    let set_phase = |name: &str| {
        let p = PHASES.iter().position(|n| *n == name).expect("phase name");
        *phase.lock().expect("phase") = p;
    };
    let served_in = |name: &str| -> BTreeMap<String, usize> {
        let p = PHASES.iter().position(|n| *n == name).expect("phase name");
        tallies.lock().expect("tallies")[p].ok.clone()
    };
    let timed = |what: &str, args: &[&str]| {
        let t = Instant::now();
        let at = t0.elapsed().as_secs_f64();
        let out = host.nimbus_in_ns(args);
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(out.code, Some(0), "{what}: {}", out.transcript());
        println!(
            "{what}: {secs:.1} s (from {at:.1} s into the load)\n{}",
            out.stdout
        );
        out
    };
    std::thread::sleep(Duration::from_secs(5));

    // 1 -> 3 by hand.
    set_phase("scaling out");
    timed("scale 1->3", &["scale", "web", "3", "--wait-ready", "600"]);
    assert_eq!(instances(&host), ["sc-web-0", "sc-web-1", "sc-web-2"]);
    assert!(record_objects(&host).contains(&"vm sc-web-2".to_string()));

    // All three serve (round robin): wait until each answered a few times.
    set_phase("after scale-out");
    let deadline = Instant::now() + Duration::from_secs(60);
    while served_in("after scale-out")
        .values()
        .filter(|n| **n >= 3)
        .count()
        < 3
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(500));
    }

    // 3 -> 1 by hand.
    set_phase("scaling in");
    timed("scale 3->1", &["scale", "web", "1"]);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(instances(&host), ["sc-web-0"]);
    let record = record_objects(&host);
    assert!(
        !record
            .iter()
            .any(|o| o.contains("sc-web-1") || o.contains("sc-web-2")),
        "{record:?}"
    );

    // Autoscale out: the load keeps the one instance far above a 1 %
    // target, and the rule's maximum is 2.
    set_phase("autoscaling out");
    write("96M", 2, 1);
    let out = timed(
        "autoscale out",
        &["autoscale", "web", "--once", "--interval", "10"],
    );
    assert!(out.stdout.contains("scale to 2"), "{}", out.transcript());
    assert_eq!(instances(&host), ["sc-web-0", "sc-web-1"]);

    // Rolling update: a new size for the set; `up` keeps the autoscaled
    // size (within the rule's range) and replaces both instances, one at
    // a time, while the other serves.
    set_phase("rolling update");
    let before = instance_details(&host);
    assert!(before.iter().all(|(_, mib, _)| *mib == 96), "{before:?}");
    write("128M", 2, 1);
    let up = timed("rolling update", &["up", &file, "--wait-ready", "600"]);
    assert_eq!(
        up.transcript().matches("replaced vm sc-web-").count(),
        2,
        "{}",
        up.transcript()
    );
    let after = instance_details(&host);
    assert_eq!(
        after.iter().map(|i| i.0.as_str()).collect::<Vec<_>>(),
        ["sc-web-0", "sc-web-1"]
    );
    for ((name, mib, pid), (_, _, old_pid)) in after.iter().zip(&before) {
        assert_eq!(*mib, 128, "{name} kept its old size");
        assert!(pid.is_some() && pid != old_pid, "{name} was not replaced");
    }
    let again = host.nimbus_in_ns(&["up", &file]);
    assert_eq!(again.code, Some(0), "{}", again.transcript());
    assert_eq!(instance_details(&host), after, "a second up replaced again");

    // Autoscale in: with a request every 3 s over two instances they are
    // far below a 100 % target, so the rule asks for its minimum.
    gap_ms.store(3000, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(5));
    set_phase("autoscaling in");
    write("128M", 2, 100);
    let out = timed(
        "autoscale in",
        &["autoscale", "web", "--once", "--interval", "10"],
    );
    assert!(out.stdout.contains("scale to 1"), "{}", out.transcript());
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load thread");
    assert_eq!(instances(&host), ["sc-web-0"]);

    let tallies = tallies.lock().expect("tallies");
    let mut total = 0;
    for (name, t) in PHASES.iter().zip(tallies.iter()) {
        println!(
            "{name}: {} requests, by VM {:?}, failed {}",
            t.total(),
            t.ok,
            t.failed.len()
        );
        total += t.total();
    }
    println!("requests in all: {total}");
    if tallies.iter().any(|t| !t.failed.is_empty()) {
        let log = host.netd_log();
        let tail: Vec<&str> = log.lines().rev().take(80).collect();
        println!("netd log, last lines:");
        for l in tail.iter().rev() {
            println!("  {l}");
        }
    }
    for (name, t) in PHASES.iter().zip(tallies.iter()) {
        assert!(
            t.failed.is_empty(),
            "{name}: {} of {} requests failed: {:?}",
            t.failed.len(),
            t.total(),
            &t.failed[..t.failed.len().min(5)]
        );
        assert!(t.total() > 0, "no request during {name}");
    }
    assert_eq!(
        tallies[2].ok.keys().map(String::as_str).collect::<Vec<_>>(),
        ["sc-web-0", "sc-web-1", "sc-web-2"],
        "every instance served after the scale-out"
    );
    assert_eq!(
        tallies[5].ok.keys().map(String::as_str).collect::<Vec<_>>(),
        ["sc-web-0", "sc-web-1"],
        "both instances served during the rolling update"
    );
    drop(tallies);

    let down = host.nimbus_in_ns(&["down", &file]);
    assert_eq!(down.code, Some(0), "{}", down.transcript());
    assert!(vms(&host).is_empty());
    assert_eq!(only_netd_left(&host).len(), 1, "a VMM outlived down");
    assert_eq!(host.link_names(), links_before);
    assert_eq!(host.ruleset(), ruleset_before);
    assert!(!host.state_dir().join("topologies/sc.json").exists());
}

//! The two-tier example with real guests (issue 6): `nimbus up
//! examples/two-tier.yaml --wait-ready` boots three VMs behind a real netd
//! in a private namespace; HTTP through the public load balancer reaches
//! both web VMs (their agents name themselves); the db VM answers a web VM
//! (the web guest fetches from db through its agent) but not the host's own
//! addresses (NSG); a second `up` changes nothing (same VMM pids, same
//! ruleset); `down` leaves no bridge, TAP, nft table, VMM or state file.
//!
//! Needs root, /dev/kvm, `nimbus-vmm` next to `nimbus` and the default
//! guest images (scripts/test.sh builds them first); without them the test
//! fails and says what is missing.

mod common;
mod guests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{repo, Host};
use guests::{agent_command, frontend, http_get, in_ns, only_netd_left, retry, vm_of, vms};

const WEB: [&str; 2] = ["two-tier-web-1", "two-tier-web-2"];
const DB: &str = "two-tier-db-1";
const DB_ADDR: &str = "10.20.2.10:7000";

#[test]
fn two_tier_example_up_traffic_nsg_idempotence_down() {
    guests::require_guests();
    let host = Host::new();
    let file = repo().join("examples/two-tier.yaml");
    let file = file.to_string_lossy().into_owned();
    let ruleset_before = host.ruleset();
    let links_before = host.link_names();

    let t = Instant::now();
    let up = host.nimbus_in_ns(&["up", &file, "--wait-ready", "600"]);
    let up_s = t.elapsed().as_secs_f64();
    assert_eq!(up.code, Some(0), "{}", up.transcript());
    println!(
        "nimbus up two-tier --wait-ready: {up_s:.1} s\n{}",
        up.stdout
    );
    for vm in WEB.iter().chain([&DB]) {
        assert!(
            up.stdout
                .contains(&format!("created vm {vm} (started, guest ready")),
            "{}",
            up.transcript()
        );
    }
    let first = vms(&host);
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(first.iter().all(|v| v.1 == "running"), "{first:?}");
    let ip_of = |name: &str| -> String {
        first
            .iter()
            .find(|v| v.0 == name)
            .and_then(|v| v.3.first().cloned())
            .unwrap_or_else(|| panic!("{name} has no IP: {first:?}"))
    };

    // HTTP through the public LB reaches both web VMs.
    let fe: SocketAddr = format!("{}:80", frontend(&host, "two-tier-web"))
        .parse()
        .expect("frontend address");
    let seen = in_ns(&host, move || {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut failures = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while (seen.len() < 2 || seen.values().sum::<usize>() < 20) && Instant::now() < deadline {
            match http_get(fe, "/", Duration::from_secs(10)) {
                Ok((200, body)) => {
                    *seen.entry(vm_of(&body).unwrap_or(body)).or_default() += 1;
                }
                Ok((code, body)) => failures.push(format!("{code} {body}")),
                Err(e) => failures.push(e),
            }
        }
        (seen, failures)
    });
    println!("through the LB: {:?}, failures {:?}", seen.0, seen.1);
    assert_eq!(
        seen.0.keys().map(String::as_str).collect::<Vec<_>>(),
        WEB,
        "both web VMs answer through {fe}: {seen:?}"
    );

    // The db VM answers a web VM: the web guest fetches from db itself.
    let web1: SocketAddr = format!("{}:7000", ip_of(WEB[0])).parse().expect("addr");
    let db_ip = ip_of(DB);
    assert_eq!(format!("{db_ip}:7000"), DB_ADDR);
    let fetched = in_ns(&host, move || {
        retry(Duration::from_secs(60), || {
            agent_command(
                web1,
                &format!("fetch {DB_ADDR} 4096"),
                Duration::from_secs(20),
            )
            .and_then(|a| {
                if a.starts_with("OK bytes=4096") {
                    Ok(a)
                } else {
                    Err(a)
                }
            })
        })
    });
    assert!(
        fetched.is_ok(),
        "web-1 could not fetch from db: {fetched:?}"
    );
    // ...but not the host, from any of its own addresses on the bridges
    // (the db NSG denies the VNet and everything else).
    let db: SocketAddr = DB_ADDR.parse().expect("addr");
    let from_host = in_ns(&host, move || {
        agent_command(db, "fetch 127.0.0.1:1 1", Duration::from_secs(5))
    });
    assert!(
        from_host.is_err(),
        "the host reached db's agent port: {from_host:?}"
    );
    let web_http = in_ns(&host, move || {
        http_get(
            format!("{db_ip}:80").parse().expect("addr"),
            "/",
            Duration::from_secs(5),
        )
    });
    assert!(
        web_http.is_err(),
        "the host reached db's HTTP port: {web_http:?}"
    );

    // `up` again: nothing changes, no VMM restarted, same ruleset.
    let ruleset_up = host.ruleset();
    let again = host.nimbus_in_ns(&["up", &file, "--wait-ready", "600"]);
    assert_eq!(again.code, Some(0), "{}", again.transcript());
    assert!(
        again.stdout.contains("up to date, nothing changed"),
        "{}",
        again.transcript()
    );
    assert_eq!(vms(&host), first, "no VM was restarted");
    assert_eq!(host.ruleset(), ruleset_up, "the ruleset did not change");

    // `down` leaves nothing behind.
    let t = Instant::now();
    let down = host.nimbus_in_ns(&["down", &file]);
    assert_eq!(down.code, Some(0), "{}", down.transcript());
    println!("nimbus down: {:.1} s", t.elapsed().as_secs_f64());
    assert!(vms(&host).is_empty());
    assert_eq!(only_netd_left(&host).len(), 1, "a VMM outlived down");
    assert_eq!(host.link_names(), links_before, "bridges or TAPs left");
    assert_eq!(host.ruleset(), ruleset_before, "nft tables or rules left");
    assert!(!host.state_dir().join("topologies/two-tier.json").exists());
    // The store's `.lock` file stays; no VM directory may.
    let left: Vec<_> = std::fs::read_dir(host.state_dir().join("vms"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().is_none_or(|n| n != ".lock"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "VM state left: {left:?}");
}

//! `nimbus up`, `status` and `down` of a network-only topology against a
//! real netd in a private network namespace: bridges, TAPs and nft rules
//! appear; a second `up` changes nothing (ruleset byte-identical); `down`
//! removes exactly what `up` made (objects made by hand survive) and the
//! record. Needs root.

mod common;

use common::{repo, Host};
use serde_json::Value;

fn file() -> String {
    repo()
        .join("tests/topologies/network-only.yaml")
        .to_string_lossy()
        .into_owned()
}

/// Objects made by hand, which no topology owns.
fn outside_objects(host: &Host) {
    host.ok(&[
        "vnet",
        "create",
        "outside",
        "--address-space",
        "10.99.0.0/16",
    ]);
    host.ok(&[
        "subnet",
        "create",
        "s",
        "--vnet",
        "outside",
        "--cidr",
        "10.99.1.0/24",
    ]);
    host.ok(&["nsg", "create", "outside-nsg"]);
    host.ok(&[
        "nic",
        "create",
        "outside-nic",
        "--vnet",
        "outside",
        "--subnet",
        "s",
    ]);
    host.ok(&["public-ip", "create", "outside-ip"]);
}

#[test]
fn up_is_idempotent_and_down_removes_exactly_what_up_made() {
    let host = Host::new();
    outside_objects(&host);
    let (rules0, names0) = (host.ruleset(), host.link_names());
    let file = file();

    let up = host.ok(&["up", &file]);
    assert!(
        up.stdout.contains("created vnet net-app (bridge nb-"),
        "{}",
        up.transcript()
    );
    assert!(
        up.stdout.contains("created lb net-web"),
        "{}",
        up.transcript()
    );
    let names1 = host.link_names();
    let new: Vec<&String> = names1.iter().filter(|n| !names0.contains(n)).collect();
    assert_eq!(
        new.iter().filter(|n| n.starts_with("nb-")).count(),
        1,
        "one bridge for the VNet: {new:?}"
    );
    assert_eq!(
        new.iter().filter(|n| n.starts_with("nt-")).count(),
        3,
        "a TAP per NIC: {new:?}"
    );
    let rules1 = host.ruleset();
    assert_ne!(rules1, rules0, "the NSGs are in the ruleset");
    let links1 = host.settled_links();
    let record = host.state_dir().join("topologies/net.json");
    assert!(record.is_file(), "the topology is recorded");

    let again = host.ok(&["up", &file]);
    assert!(
        again
            .stdout
            .contains("topology net: up to date, nothing changed"),
        "{}",
        again.transcript()
    );
    assert!(!again.stdout.contains("created"), "{}", again.transcript());
    assert_eq!(host.ruleset(), rules1, "second up: ruleset byte-identical");
    let links2 = host.links();
    let changed: Vec<(&str, &str)> = links1
        .lines()
        .zip(links2.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert!(changed.is_empty(), "second up: links changed: {changed:#?}");

    let status = host.ok(&["status", &file, "--output", "json"]);
    let v: Value = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(v["topology"], "net");
    assert_eq!(v["up_to_date"], true, "{}", status.stdout);
    let rows = v["resources"].as_array().expect("resources");
    assert_eq!(rows.len(), 13, "{}", status.stdout);
    assert!(rows.iter().all(|r| r["state"] == "ok"), "{}", status.stdout);
    let tap_rows = rows.iter().filter(|r| r["kind"] == "nic").count();
    assert_eq!(tap_rows, 3);
    let table = host.ok(&["status", &file]);
    assert!(
        table.stdout.contains("topology net: up to date"),
        "{}",
        table.transcript()
    );

    let down = host.ok(&["down", &file]);
    assert!(
        down.stdout.contains("deleted vnet net-app"),
        "{}",
        down.transcript()
    );
    assert!(!record.exists(), "the record is gone");
    assert_eq!(
        host.link_names(),
        names0,
        "no bridge or TAP of the topology left"
    );
    assert_eq!(host.ruleset(), rules0, "the ruleset is as before up");
    for (noun, name) in [
        ("vnet", "outside"),
        ("nic", "outside-nic"),
        ("nsg", "outside-nsg"),
        ("public-ip", "outside-ip"),
    ] {
        host.ok(&[noun, "show", name]);
    }
    let after = host.ok(&["status", &file, "--output", "json"]);
    let v: Value = serde_json::from_str(&after.stdout).expect("status JSON");
    let rows = v["resources"].as_array().expect("resources");
    assert!(
        rows.iter().all(|r| r["state"] == "missing"),
        "{}",
        after.stdout
    );
    let again = host.ok(&["down", &file]);
    assert!(
        again.stdout.contains("nothing to remove"),
        "{}",
        again.transcript()
    );
}

#[test]
fn a_failure_midway_is_recorded_and_down_cleans_up() {
    let host = Host::new();
    let (rules0, names0) = (host.ruleset(), host.link_names());
    // netd's public pool is 203.0.113.0/24: netd refuses this address
    // only when asked, after the VNet (same stage) was created.
    let path = host.dir.join("half.yaml");
    std::fs::write(
        &path,
        "name: half\nvnets:\n  app:\n    address_space: 10.41.0.0/16\n    subnets: {s: {cidr: 10.41.1.0/24}}\npublic_ips:\n  ip: {address: 198.18.0.5}\n",
    )
    .expect("write file");
    let file = path.to_string_lossy().into_owned();
    let up = host.nimbus(&["up", &file]);
    assert_eq!(up.code, Some(1), "{}", up.transcript());
    assert!(
        up.stderr.contains("not inside the public pool"),
        "{}",
        up.transcript()
    );
    assert!(up.stderr.contains("`nimbus down"), "{}", up.transcript());
    let record = host.state_dir().join("topologies/half.json");
    let text = std::fs::read_to_string(&record).expect("record written");
    assert!(text.contains("half-app"), "{text}");
    assert!(
        !text.contains("half-ip"),
        "a refused create is not recorded: {text}"
    );
    assert!(
        !text.contains("half-app/s"),
        "later stages did not start: {text}"
    );
    assert_ne!(host.link_names(), names0, "the VNet's bridge exists");

    host.ok(&["down", &file]);
    assert!(!record.exists());
    assert_eq!(host.link_names(), names0);
    assert_eq!(host.ruleset(), rules0);
}

#[test]
fn objects_deleted_by_hand_are_recreated_by_up_and_forgotten_by_down() {
    let host = Host::new();
    let file = file();
    host.ok(&["up", &file]);
    // Someone removes a NIC behind the topology's back.
    host.ok(&["nic", "delete", "net-web-b"]);
    let status = host.ok(&["status", &file, "--output", "json"]);
    let v: Value = serde_json::from_str(&status.stdout).expect("status JSON");
    let row = v["resources"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == "net-web-b"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["state"], "missing", "{}", status.stdout);
    let up = host.ok(&["up", &file]);
    assert!(
        up.stdout.contains("created nic net-web-b"),
        "{}",
        up.transcript()
    );
    assert!(
        up.stdout.contains("+net-web-b in pool web"),
        "the load balancer gets it back: {}",
        up.transcript()
    );
    host.ok(&["nic", "delete", "net-web-b"]);
    let down = host.ok(&["down", &file]);
    assert!(
        down.stdout.contains("forgot nic net-web-b (already gone)"),
        "{}",
        down.transcript()
    );
    assert!(!host.state_dir().join("topologies/net.json").exists());
}

//! Crash safety and re-adoption: netd killed during a change converges on
//! restart with no orphans; unknown nimbus links are removed; lost links
//! are re-created; TAPs are what a VMM expects.

mod common;

use common::*;
use serde_json::json;

fn base(w: &World) {
    w.json(json!({"op": "vnet_create", "name": "v", "address_space": ["10.0.0.0/16"]}));
    w.json(json!({"op": "subnet_create", "vnet": "v", "name": "s", "cidr": "10.0.1.0/24"}));
}

/// Host links netd should have for its current state.
fn expected_links(w: &World) -> Vec<String> {
    let mut names: Vec<String> = w
        .json(json!({"op": "vnet_list"}))
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["bridge"].as_str().map(str::to_string))
        .collect();
    names.extend(
        w.json(json!({"op": "nic_list"}))
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["host_interface"].as_str().map(str::to_string)),
    );
    names.sort();
    names
}

#[test]
fn sigkill_in_the_middle_of_a_change_converges_on_restart() {
    let mut w = World::new();
    base(&w);
    let (a, a_ip) = w.vm("a", "v", "s", json!({}));
    tcp_server(&a, 80);
    let before = w.nimbus_links();

    // netd dies (SIGKILL) after creating the new TAP, before saving.
    w.kill_netd();
    w.start_netd_with(&[("NIMBUS_NETD_CRASH_AFTER", "links")]);
    assert!(w
        .try_call(netd::api::protocol::Request::NicCreate {
            name: "doomed".into(),
            vnet: "v".into(),
            subnet: "s".into(),
            ip: None,
            mac: None,
            nsg: None,
            asgs: vec![],
            public_ip: None,
            tap_owner: None,
            attach_netns: None,
        })
        .is_err());
    let status = w.wait_netd_exit();
    assert!(!status.success(), "netd was killed");
    assert!(
        w.nimbus_links().len() > before.len(),
        "the change had reached the host: {:?}",
        w.nimbus_links()
    );

    w.start_netd_with(&[]);
    assert_eq!(w.nimbus_links(), before, "orphan TAP removed on restart");
    assert_eq!(expected_links(&w), before);
    assert!(w
        .try_call(netd::api::protocol::Request::NicShow {
            name: "doomed".into()
        })
        .is_err());
    // The survivors still work and IPAM did not hand out a used address.
    let (b, _) = w.vm("b", "v", "s", json!({}));
    assert!(tcp_ok(&b, a_ip, 80));
}

#[test]
fn sigkill_during_a_stream_of_changes_leaves_no_orphans() {
    let mut w = World::new();
    base(&w);
    let socket = w.socket();
    let writer = std::thread::spawn(move || {
        for i in 0..40 {
            let Ok(mut c) = netd::api::client::Client::connect(&socket) else {
                break;
            };
            let r = netd::api::protocol::Request::NicCreate {
                name: format!("n{i}"),
                vnet: "v".into(),
                subnet: "s".into(),
                ip: None,
                mac: None,
                nsg: None,
                asgs: vec![],
                public_ip: None,
                tap_owner: None,
                attach_netns: None,
            };
            if c.call(&r).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(400));
    w.kill_netd();
    let _ = writer.join();
    w.start_netd();
    let links = w.nimbus_links();
    assert_eq!(
        links,
        expected_links(&w),
        "links match the saved state exactly"
    );
    assert!(
        links.len() > 1,
        "some NICs were created before the kill: {links:?}"
    );
    // Rules match too: every NIC's port is in the anti-spoofing set.
    let rules = w.ruleset();
    for l in links.iter().filter(|l| l.starts_with(netd::PORT_PREFIX)) {
        assert!(
            rules.contains(&format!("\"{l}\"")),
            "{l} missing from the ruleset"
        );
    }
    // Addresses handed out before the crash are not handed out again.
    let ips: Vec<String> = w
        .json(json!({"op": "nic_list"}))
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["ip"].as_str().map(str::to_string))
        .collect();
    let new = w.json(json!({"op": "nic_create", "name": "after", "vnet": "v", "subnet": "s"}));
    assert!(!ips.contains(&new["ip"].as_str().unwrap_or_default().to_string()));
}

#[test]
fn restart_readopts_recreates_and_removes_unknown_links() {
    let mut w = World::new();
    base(&w);
    let nic = w.json(
        json!({"op": "nic_create", "name": "vm1", "vnet": "v", "subnet": "s", "tap_owner": 1000}),
    );
    let tap = nic["host_interface"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let detail = std::process::Command::new("ip")
        .args(["-n", &w.host, "-d", "link", "show", &tap])
        .output()
        .expect("ip");
    let detail = String::from_utf8_lossy(&detail.stdout).to_string();
    assert!(
        detail.contains("tun type tap pi off vnet_hdr on persist on user "),
        "owned persistent TAP: {detail}"
    );
    assert!(detail.contains("master nb-"), "{detail}");
    let before = w.nimbus_links();
    let ruleset_before = w.ruleset();

    w.kill_netd();
    // While netd is down: a stray link with nimbus's prefix appears, the
    // TAP disappears, and someone flushes nimbus's tables.
    ip_in(
        &w.host,
        &[
            "link",
            "add",
            "nt-stray",
            "type",
            "veth",
            "peer",
            "name",
            "nt-strayp",
        ],
    );
    ip_in(&w.host, &["link", "del", &tap]);
    let _ = std::process::Command::new("ip")
        .args([
            "netns", "exec", &w.host, "nft", "delete", "table", "inet", "nimbus",
        ])
        .status();
    // Another program's table must survive netd.
    let _ = std::process::Command::new("ip")
        .args([
            "netns", "exec", &w.host, "nft", "add", "table", "inet", "other",
        ])
        .status();

    w.start_netd();
    assert_eq!(w.nimbus_links(), before);
    assert_eq!(
        w.ruleset().replace("table inet other {\n}\n", ""),
        ruleset_before
    );
    assert!(
        w.ruleset().contains("table inet other"),
        "other software's table untouched"
    );
}

#[test]
fn refused_changes_change_nothing() {
    let w = World::new();
    base(&w);
    w.json(json!({"op": "nic_create", "name": "a", "vnet": "v", "subnet": "s"}));
    let links = w.nimbus_links();
    let rules = w.ruleset();
    let err = w
        .try_call(
            serde_json::from_value(
                json!({"op": "subnet_create", "vnet": "v", "name": "o", "cidr": "10.0.1.128/25"}),
            )
            .expect("request"),
        )
        .unwrap_err();
    assert!(err.to_string().contains("overlaps subnet 's'"), "{err}");
    let err = w
        .try_call(
            serde_json::from_value(json!({"op": "vnet_delete", "name": "v"})).expect("request"),
        )
        .unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(w.nimbus_links(), links);
    assert_eq!(w.ruleset(), rules);
    w.json(json!({"op": "vnet_delete", "name": "v", "force": true}));
    assert!(w.nimbus_links().is_empty());
}

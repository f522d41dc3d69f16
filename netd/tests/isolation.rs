//! Anti-spoofing and VNet isolation with real packets.

mod common;

use common::*;
use serde_json::json;

fn vnet(w: &World, name: &str, space: &str, subnet: &str) {
    w.json(json!({"op": "vnet_create", "name": name, "address_space": [space]}));
    w.json(json!({"op": "subnet_create", "vnet": name, "name": "s", "cidr": subnet}));
}

#[test]
fn spoofed_source_ip_is_dropped() {
    let mut w = World::new();
    vnet(&w, "v", "10.0.0.0/16", "10.0.1.0/24");
    let (server, server_ip) = w.vm("server", "v", "s", json!({}));
    let (attacker, _) = w.vm("attacker", "v", "s", json!({}));
    tcp_server(&server, 80);
    udp_server(&server, 53);
    assert!(tcp_ok(&attacker, server_ip, 80), "baseline");
    // The attacker takes another address of the subnet as its source.
    ip_in(&attacker, &["addr", "flush", "dev", "eth0"]);
    ip_in(&attacker, &["addr", "add", "10.0.1.77/24", "dev", "eth0"]);
    assert!(
        !tcp_ok(&attacker, server_ip, 80),
        "spoofed IP must not reach the server"
    );
    assert!(
        udp_query(&attacker, server_ip, 53).is_none(),
        "spoofed IP (udp)"
    );
    assert!(
        w.ruleset().contains("spoofed"),
        "anti-spoofing rules present"
    );
}

#[test]
fn spoofed_source_mac_is_dropped() {
    let mut w = World::new();
    vnet(&w, "v", "10.0.0.0/16", "10.0.1.0/24");
    let (server, server_ip) = w.vm("server", "v", "s", json!({}));
    let (attacker, _) = w.vm("attacker", "v", "s", json!({}));
    tcp_server(&server, 80);
    assert!(tcp_ok(&attacker, server_ip, 80), "baseline");
    ip_in(
        &attacker,
        &["link", "set", "eth0", "address", "02:00:de:ad:be:ef"],
    );
    ip_in(&server, &["neigh", "flush", "all"]);
    assert!(
        !tcp_ok(&attacker, server_ip, 80),
        "spoofed MAC must not reach the server"
    );
    assert!(!ping(&attacker, server_ip), "spoofed MAC (icmp)");
}

#[test]
fn spoofed_arp_is_dropped() {
    let mut w = World::new();
    vnet(&w, "v", "10.0.0.0/16", "10.0.1.0/24");
    let (server, _) = w.vm("server", "v", "s", json!({}));
    let (attacker, attacker_ip) = w.vm("attacker", "v", "s", json!({}));
    let (_victim, victim_ip) = w.vm("victim", "v", "s", json!({}));
    let nic = |n: &str| {
        w.json(json!({"op": "nic_show", "name": n}))["mac"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let (attacker_mac, victim_mac) = (nic("attacker"), nic("victim"));
    let seen = arp_probe(
        &attacker,
        &server,
        &[
            (&attacker_mac, attacker_ip), // honest: passes
            (&attacker_mac, victim_ip),   // claims the victim's IP
            (&victim_mac, victim_ip),     // claims the victim's MAC and IP
        ],
    );
    assert!(
        seen.contains(&attacker_ip.to_string()),
        "honest ARP must pass: {seen:?}"
    );
    assert!(
        !seen.contains(&victim_ip.to_string()),
        "forged ARP must be dropped: {seen:?}"
    );
}

#[test]
fn vnets_are_isolated_from_each_other() {
    let mut w = World::new();
    vnet(&w, "blue", "10.1.0.0/16", "10.1.1.0/24");
    vnet(&w, "red", "10.2.0.0/16", "10.2.1.0/24");
    let (b1, b1_ip) = w.vm("b1", "blue", "s", json!({}));
    let (b2, _) = w.vm("b2", "blue", "s", json!({}));
    let (r1, r1_ip) = w.vm("r1", "red", "s", json!({}));
    tcp_server(&b1, 80);
    tcp_server(&r1, 80);
    assert!(tcp_ok(&b2, b1_ip, 80), "same VNet works");
    assert!(!tcp_ok(&b2, r1_ip, 80), "blue cannot reach red");
    assert!(!ping(&r1, b1_ip), "red cannot ping blue");
    assert!(!tcp_ok(&r1, b1_ip, 80), "red cannot reach blue");
}

/// The MAC address of the VNet's bridge, as the host namespace shows it.
fn bridge_mac(w: &World) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", &w.host, "-o", "link", "show", "type", "bridge"])
        .output()
        .expect("ip link");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains(netd::BRIDGE_PREFIX))
        .unwrap_or_else(|| panic!("no bridge in {text}"));
    line.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("bridge MAC")
        .to_string()
}

#[test]
fn the_gateway_keeps_its_mac_while_nics_come_and_go() {
    let mut w = World::new();
    vnet(&w, "v", "10.0.0.0/16", "10.0.1.0/24");
    let (a, _) = w.vm("a", "v", "s", json!({}));
    let gw: std::net::Ipv4Addr = "10.0.1.1".parse().unwrap();
    assert!(ping(&a, gw), "baseline");
    let mac = bridge_mac(&w);
    assert!(mac.starts_with("02:4e:43:"), "{mac}");
    // Without a fixed address the bridge would take the lowest port
    // address, so some of these would change it (and the deletes would
    // leave a's ARP entry for its gateway pointing nowhere).
    for n in ["b", "c", "d", "e"] {
        w.vm(n, "v", "s", json!({}));
    }
    for n in ["b", "c", "d", "e"] {
        w.json(json!({"op": "nic_delete", "name": n}));
    }
    assert_eq!(bridge_mac(&w), mac);
    assert!(ping(&a, gw), "a still reaches its gateway");
}

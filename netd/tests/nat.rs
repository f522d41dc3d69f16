//! Public IPs: inbound DNAT and outbound SNAT/masquerade.

mod common;

use common::*;
use serde_json::json;

#[test]
fn public_ip_dnat_inbound_and_snat_outbound() {
    let mut w = World::new();
    let inet = w.internet();
    w.json(json!({"op": "vnet_create", "name": "v", "address_space": ["10.0.0.0/16"]}));
    w.json(json!({"op": "subnet_create", "vnet": "v", "name": "s", "cidr": "10.0.1.0/24"}));
    let pip = w.json(json!({"op": "public_ip_create", "name": "web-ip", "allocation": "static"}));
    let public: std::net::Ipv4Addr = pip["address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("public address");
    let (web, _) = w.vm("web", "v", "s", json!({"public_ip": "web-ip"}));
    let (plain, _) = w.vm("plain", "v", "s", json!({}));
    tcp_whoami_server(&web, 80);
    tcp_whoami_server(&inet, 8080);
    udp_server(&inet, 5000);

    // Inbound: the internet reaches the NIC through its public IP and the
    // NIC sees the real client.
    assert_eq!(
        tcp_whoami(&inet, public, 80).as_deref(),
        Some(INTERNET.to_string().as_str()),
        "DNAT to the NIC"
    );
    // Outbound: the NIC with a public IP leaves with it as source...
    assert_eq!(
        tcp_whoami(&web, INTERNET, 8080).as_deref(),
        Some(public.to_string().as_str()),
        "SNAT to the public IP"
    );
    assert_eq!(
        udp_query(&web, INTERNET, 5000).as_deref(),
        Some(public.to_string().as_str()),
        "SNAT (udp)"
    );
    // ...and one without is masqueraded behind the host's uplink address.
    assert_eq!(
        tcp_whoami(&plain, INTERNET, 8080).as_deref(),
        Some(UPLINK_HOST.to_string().as_str()),
        "masquerade"
    );

    // An NSG that denies inbound from the Internet closes the public IP.
    w.json(
        json!({"op": "nsg_create", "name": "closed", "rules": [{"name": "no-inet", "priority": 100,
        "direction": "Inbound", "access": "Deny", "protocol": "*", "sources": ["Internet"]}]}),
    );
    w.json(json!({"op": "nic_update", "name": "web", "nsg": "closed"}));
    assert_eq!(
        tcp_whoami(&inet, public, 80),
        None,
        "NSG applies after DNAT"
    );

    // Detaching the public IP removes the DNAT.
    w.json(json!({"op": "nic_update", "name": "web", "clear_nsg": true, "clear_public_ip": true}));
    assert_eq!(tcp_whoami(&inet, public, 80), None, "no DNAT once detached");
}

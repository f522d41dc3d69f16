//! NSG behaviour checked with real packets between namespaces.

mod common;

use common::*;
use serde_json::json;

fn rule(
    name: &str,
    priority: u32,
    direction: &str,
    access: &str,
    protocol: &str,
    dports: &[&str],
) -> serde_json::Value {
    json!({"name": name, "priority": priority, "direction": direction, "access": access,
           "protocol": protocol, "destination_ports": dports})
}

/// One VNet, one subnet, a client and a server NIC.
fn two_vms(w: &mut World, server_extra: serde_json::Value) -> (String, String, std::net::Ipv4Addr) {
    w.json(json!({"op": "vnet_create", "name": "v", "address_space": ["10.0.0.0/16"]}));
    w.json(json!({"op": "subnet_create", "vnet": "v", "name": "s", "cidr": "10.0.1.0/24"}));
    let (server, server_ip) = w.vm("server", "v", "s", server_extra);
    let (client, _) = w.vm("client", "v", "s", json!({}));
    (client, server, server_ip)
}

#[test]
fn allow_deny_matrix_and_priority_order() {
    let mut w = World::new();
    w.json(json!({"op": "nsg_create", "name": "g", "rules": [
        rule("web", 200, "Inbound", "Allow", "Tcp", &["80"]),
        rule("no-81-90", 210, "Inbound", "Deny", "Tcp", &["80-90"]),
        rule("dns", 220, "Inbound", "Allow", "Udp", &["5353"]),
        rule("icmp", 230, "Inbound", "Allow", "Icmp", &[]),
        rule("rest", 4096, "Inbound", "Deny", "*", &[]),
    ]}));
    let (client, server, ip) = two_vms(&mut w, json!({"nsg": "g"}));
    for port in [80, 81, 8080] {
        tcp_server(&server, port);
    }
    udp_server(&server, 5353);
    udp_server(&server, 5354);

    assert!(tcp_ok(&client, ip, 80), "tcp 80 allowed by priority 200");
    assert!(!tcp_ok(&client, ip, 81), "tcp 81 denied by priority 210");
    assert!(
        !tcp_ok(&client, ip, 8080),
        "tcp 8080 denied by priority 4096"
    );
    assert!(udp_query(&client, ip, 5353).is_some(), "udp 5353 allowed");
    assert!(udp_query(&client, ip, 5354).is_none(), "udp 5354 denied");
    assert!(ping(&client, ip), "icmp allowed");

    // A lower number wins: deny 80 at 150 overrides the allow at 200.
    w.json(json!({"op": "nsg_rule_add", "nsg": "g", "rule": rule("block-80", 150, "Inbound", "Deny", "Tcp", &["80"])}));
    assert!(!tcp_ok(&client, ip, 80), "tcp 80 denied by priority 150");
    w.json(json!({"op": "nsg_rule_delete", "nsg": "g", "name": "block-80"}));
    assert!(tcp_ok(&client, ip, 80), "tcp 80 allowed again");
    w.json(json!({"op": "nsg_rule_delete", "nsg": "g", "name": "icmp"}));
    assert!(!ping(&client, ip), "icmp denied once its rule is gone");
}

#[test]
fn default_rules_allow_vnet_deny_internet_inbound_allow_outbound() {
    let mut w = World::new();
    w.json(json!({"op": "nsg_create", "name": "empty"}));
    w.json(json!({"op": "vnet_create", "name": "v", "address_space": ["10.0.0.0/16"]}));
    w.json(json!({"op": "subnet_create", "vnet": "v", "name": "s", "cidr": "10.0.1.0/24", "nsg": "empty"}));
    let (server, ip) = w.vm("server", "v", "s", json!({}));
    let (client, _) = w.vm("client", "v", "s", json!({}));
    let inet = w.internet();
    ip_in(
        &inet,
        &[
            "route",
            "add",
            "10.0.0.0/16",
            "via",
            &UPLINK_HOST.to_string(),
        ],
    );
    tcp_server(&server, 22);
    tcp_server(&inet, 443);

    let list = w.json(json!({"op": "nsg_rule_list", "nsg": "empty"}));
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(6),
        "six default rules listed: {list}"
    );
    assert!(tcp_ok(&client, ip, 22), "AllowVnetInBound");
    assert!(ping(&client, ip), "AllowVnetInBound (icmp)");
    assert!(!tcp_ok(&inet, ip, 22), "DenyAllInBound stops the internet");
    assert!(tcp_ok(&server, INTERNET, 443), "AllowInternetOutBound");
}

#[test]
fn replies_to_allowed_flows_pass() {
    let mut w = World::new();
    // The client may send anything out but accepts nothing in.
    w.json(json!({"op": "nsg_create", "name": "closed", "rules": [
        rule("deny-in", 100, "Inbound", "Deny", "*", &[]),
    ]}));
    w.json(json!({"op": "vnet_create", "name": "v", "address_space": ["10.0.0.0/16"]}));
    w.json(json!({"op": "subnet_create", "vnet": "v", "name": "s", "cidr": "10.0.1.0/24"}));
    let (client, client_ip) = w.vm("client", "v", "s", json!({"nsg": "closed"}));
    let (server, server_ip) = w.vm("server", "v", "s", json!({}));
    tcp_server(&server, 8000);
    tcp_server(&client, 8000);
    udp_server(&server, 9000);
    assert!(
        tcp_ok(&client, server_ip, 8000),
        "TCP replies are accepted (conntrack)"
    );
    assert!(
        udp_query(&client, server_ip, 9000).is_some(),
        "UDP replies are accepted"
    );
    assert!(ping(&client, server_ip), "echo replies are accepted");
    assert!(
        !tcp_ok(&server, client_ip, 8000),
        "new inbound flows are denied"
    );
}

#[test]
fn outbound_rules_apply_to_the_sender() {
    let mut w = World::new();
    w.json(json!({"op": "nsg_create", "name": "out", "rules": [
        rule("no-web-out", 100, "Outbound", "Deny", "Tcp", &["80"]),
    ]}));
    let (client, server, ip) = two_vms(&mut w, json!({}));
    w.json(json!({"op": "nic_update", "name": "client", "nsg": "out"}));
    tcp_server(&server, 80);
    tcp_server(&server, 81);
    assert!(!tcp_ok(&client, ip, 80));
    assert!(tcp_ok(&client, ip, 81));
    // Subnet and NIC NSGs both apply: a subnet NSG denying 81 inbound
    // blocks it even though the NIC NSG says nothing about it.
    w.json(json!({"op": "nsg_create", "name": "sub", "rules": [rule("no-81", 100, "Inbound", "Deny", "Tcp", &["81"])]}));
    w.json(json!({"op": "subnet_update", "vnet": "v", "name": "s", "nsg": "sub"}));
    assert!(!tcp_ok(&client, ip, 81));
}

#[test]
fn asg_membership_change_opens_and_closes() {
    let mut w = World::new();
    w.json(json!({"op": "asg_create", "name": "web"}));
    let mut allow = rule("web", 100, "Inbound", "Allow", "Tcp", &["80"]);
    allow["destinations"] = json!(["asg:web"]);
    w.json(json!({"op": "nsg_create", "name": "g", "rules": [allow, rule("rest", 4096, "Inbound", "Deny", "*", &[])]}));
    w.json(json!({"op": "vnet_create", "name": "v", "address_space": ["10.0.0.0/16"]}));
    w.json(
        json!({"op": "subnet_create", "vnet": "v", "name": "s", "cidr": "10.0.1.0/24", "nsg": "g"}),
    );
    let (server, ip) = w.vm("server", "v", "s", json!({}));
    let (client, _) = w.vm("client", "v", "s", json!({}));
    tcp_server(&server, 80);
    assert!(!tcp_ok(&client, ip, 80), "not in the ASG yet");
    let rules_before: String = w
        .ruleset()
        .lines()
        .filter(|l| l.contains("@asg_"))
        .collect();
    w.json(json!({"op": "nic_update", "name": "server", "asgs": ["web"]}));
    assert!(tcp_ok(&client, ip, 80), "member of the ASG");
    let rules_after: String = w
        .ruleset()
        .lines()
        .filter(|l| l.contains("@asg_"))
        .collect();
    assert_eq!(
        rules_before, rules_after,
        "membership changes sets, not rules"
    );
    w.json(json!({"op": "nic_update", "name": "server", "asgs": []}));
    assert!(!tcp_ok(&client, ip, 80), "left the ASG");
}

//! Compiles the state into nimbus's nftables ruleset.
//!
//! * `bridge nimbus`: per-port anti-spoofing. A frame from a NIC's port must
//!   carry the NIC's MAC, and its IPv4 packets and ARP messages the NIC's IP;
//!   other ethertypes are dropped. Lookups are keyed on the port (iifname) in
//!   concatenated sets, so the cost does not grow with the number of NICs.
//! * `inet nimbus`: stateful NSGs, VNet isolation and NAT. Bridged IPv4
//!   reaches it through br_netfilter. Per-NIC evaluation is dispatched with
//!   verdict maps keyed on the NIC's address (trustworthy because of the
//!   anti-spoofing above); each NSG is compiled, per VNet it is used in,
//!   into a chain where every run of consecutive rules with the same action
//!   becomes ONE lookup in a concatenated interval set
//!   (`l4proto . saddr . sport . daddr . dport`). Merging a run is exact
//!   (first-match order only matters between rules with different actions),
//!   so 10,000 rules cost a handful of set lookups, and only for the first
//!   packet of a flow: established traffic is accepted before any NSG.
//! * ASGs are named sets of addresses: a membership change changes set
//!   elements only, never a rule.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::Ipv4Addr;

use super::TABLE;
use crate::model::{
    complement, default_rules, Access, AddressPrefix, Direction, Nic, Nsg, PortRange, Protocol,
    SecurityRule, ServiceTag, VNet,
};
use crate::state::State;

/// The whole ruleset (both tables) as one `nft -f` transaction that
/// replaces nimbus's tables and nothing else.
pub fn render(state: &State) -> String {
    let mut out = String::new();
    render_bridge(state, &mut out);
    render_inet(state, &mut out);
    out
}

/// Chain name of NSG `nsg` compiled for VNet `vnet`, one direction.
fn nsg_chain(nsg: &Nsg, vnet: &VNet, dir: Direction) -> String {
    format!("nsg_{}_v{}_{}", nsg.id, vnet.id, dir_tag(dir))
}

fn dir_tag(dir: Direction) -> &'static str {
    match dir {
        Direction::Inbound => "in",
        Direction::Outbound => "out",
    }
}

fn set_block(out: &mut String, name: &str, ty: &str, flags: Option<&str>, elements: &[String]) {
    let _ = writeln!(out, "  set {name} {{\n    type {ty}");
    if let Some(f) = flags {
        let _ = writeln!(out, "    flags {f}");
    }
    if !elements.is_empty() {
        let _ = writeln!(out, "    elements = {{ {} }}", elements.join(", "));
    }
    out.push_str("  }\n");
}

fn render_bridge(state: &State, out: &mut String) {
    let _ = writeln!(
        out,
        "table bridge {TABLE}\ndelete table bridge {TABLE}\ntable bridge {TABLE} {{"
    );
    let ports: Vec<String> = state
        .nics
        .iter()
        .map(|n| format!("\"{}\"", n.id.port_name()))
        .collect();
    let macs: Vec<String> = state
        .nics
        .iter()
        .map(|n| format!("\"{}\" . {}", n.id.port_name(), n.mac))
        .collect();
    let ips: Vec<String> = state
        .nics
        .iter()
        .map(|n| format!("\"{}\" . {}", n.id.port_name(), n.ip))
        .collect();
    set_block(out, "ports", "ifname", None, &ports);
    set_block(out, "port_mac", "ifname . ether_addr", None, &macs);
    set_block(out, "port_ip", "ifname . ipv4_addr", None, &ips);
    out.push_str(
        "  chain prerouting {
    type filter hook prerouting priority -200; policy accept;
    iifname != @ports accept
    iifname . ether saddr != @port_mac counter drop comment \"spoofed source MAC\"
    ether type arp iifname . arp saddr ether != @port_mac counter drop comment \"spoofed ARP sender MAC\"
    ether type arp iifname . arp saddr ip != @port_ip counter drop comment \"spoofed ARP sender IP\"
    ether type arp accept
    ether type ip iifname . ip saddr != @port_ip counter drop comment \"spoofed source IP\"
    ether type ip accept
    counter drop comment \"only IPv4 and ARP from NICs\"
  }
}
",
    );
}

fn render_inet(state: &State, out: &mut String) {
    let _ = writeln!(
        out,
        "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{"
    );
    let bridges: Vec<String> = state
        .vnets
        .iter()
        .map(|v| format!("\"{}\"", v.id.bridge_name()))
        .collect();
    let same: Vec<String> = state
        .vnets
        .iter()
        .map(|v| format!("\"{b}\" . \"{b}\"", b = v.id.bridge_name()))
        .collect();
    let spaces: Vec<String> = state
        .vnets
        .iter()
        .flat_map(|v| v.address_space.iter().map(|c| c.to_string()))
        .collect();
    set_block(out, "bridges", "ifname", None, &bridges);
    set_block(out, "same_vnet", "ifname . ifname", None, &same);
    set_block(out, "vnet_spaces", "ipv4_addr", Some("interval"), &spaces);
    for asg in &state.asgs {
        let members: BTreeSet<String> = state
            .nics
            .iter()
            .filter(|n| n.asgs.contains(&asg.name))
            .map(|n| n.ip.to_string())
            .collect();
        set_block(
            out,
            &format!("asg_{}", asg.id),
            "ipv4_addr",
            None,
            &members.into_iter().collect::<Vec<_>>(),
        );
    }

    // NAT maps.
    let mut dnat = Vec::new();
    let mut snat = Vec::new();
    for nic in &state.nics {
        if let Some(public) = nic
            .public_ip
            .as_ref()
            .and_then(|p| state.public_ip(p).ok())
            .and_then(|p| p.address)
        {
            dnat.push(format!("{public} : {}", nic.ip));
            snat.push(format!("{} : {public}", nic.ip));
        }
    }
    let _ = writeln!(out, "  map dnat_map {{\n    type ipv4_addr : ipv4_addr");
    if !dnat.is_empty() {
        let _ = writeln!(out, "    elements = {{ {} }}", dnat.join(", "));
    }
    let _ = writeln!(
        out,
        "  }}\n  map snat_map {{\n    type ipv4_addr : ipv4_addr"
    );
    if !snat.is_empty() {
        let _ = writeln!(out, "    elements = {{ {} }}", snat.join(", "));
    }
    out.push_str("  }\n");

    // NSG chains, one per (NSG, VNet, direction) in use.
    let mut used: BTreeSet<(usize, usize)> = BTreeSet::new();
    let nsg_index = |name: &crate::model::Name| state.nsgs.iter().position(|n| &n.name == name);
    for (vi, v) in state.vnets.iter().enumerate() {
        for s in &v.subnets {
            if let Some(i) = s.nsg.as_ref().and_then(nsg_index) {
                used.insert((i, vi));
            }
        }
        for n in state.nics_in_vnet(&v.name) {
            if let Some(i) = n.nsg.as_ref().and_then(nsg_index) {
                used.insert((i, vi));
            }
        }
    }
    for (ni, vi) in &used {
        for dir in [Direction::Inbound, Direction::Outbound] {
            render_nsg_chain(state, &state.nsgs[*ni], &state.vnets[*vi], dir, out);
        }
    }

    // Per-NIC chains: inbound = subnet NSG then NIC NSG; outbound = NIC NSG
    // then subnet NSG (Azure's order). NICs without any NSG allow all.
    let mut nic_in = Vec::new();
    let mut nic_out = Vec::new();
    for nic in &state.nics {
        let Ok(vnet) = state.vnet(&nic.vnet) else {
            continue;
        };
        let subnet_nsg = vnet
            .subnet(&nic.subnet)
            .and_then(|s| s.nsg.as_ref())
            .and_then(|n| state.nsg(n).ok());
        let nic_nsg = nic.nsg.as_ref().and_then(|n| state.nsg(n).ok());
        if subnet_nsg.is_none() && nic_nsg.is_none() {
            continue;
        }
        for (dir, order) in [
            (Direction::Inbound, [subnet_nsg, nic_nsg]),
            (Direction::Outbound, [nic_nsg, subnet_nsg]),
        ] {
            let chain = nic_chain(nic, dir);
            let _ = writeln!(out, "  chain {chain} {{");
            for nsg in order.into_iter().flatten() {
                let _ = writeln!(out, "    jump {}", nsg_chain(nsg, vnet, dir));
            }
            out.push_str("  }\n");
            let entry = format!("{} : jump {chain}", nic.ip);
            match dir {
                Direction::Inbound => nic_in.push(entry),
                Direction::Outbound => nic_out.push(entry),
            }
        }
    }
    for (name, elems) in [("nic_in", &nic_in), ("nic_out", &nic_out)] {
        let _ = writeln!(out, "  map {name} {{\n    type ipv4_addr : verdict");
        if !elems.is_empty() {
            let _ = writeln!(out, "    elements = {{ {} }}", elems.join(", "));
        }
        out.push_str("  }\n");
    }

    out.push_str(
        "  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname != @bridges oifname != @bridges accept
    iifname @bridges oifname @bridges iifname . oifname != @same_vnet counter drop comment \"VNets are isolated\"
    ct state established,related accept
    ct state invalid drop
    ip saddr vmap @nic_out
    ip daddr vmap @nic_in
  }
  chain output {
    type filter hook output priority filter; policy accept;
    oifname != @bridges accept
    ct state established,related accept
    ip daddr vmap @nic_in
  }
  chain prerouting_nat {
    type nat hook prerouting priority dstnat; policy accept;
    iifname @bridges accept
    dnat ip to ip daddr map @dnat_map
  }
  chain postrouting_nat {
    type nat hook postrouting priority srcnat; policy accept;
    oifname @bridges accept
    ip saddr != @vnet_spaces accept
    snat ip to ip saddr map @snat_map
    masquerade
  }
}
",
    );
}

fn nic_chain(nic: &Nic, dir: Direction) -> String {
    format!("nic_{}_{}", nic.id, dir_tag(dir))
}

/// One (source, destination) pair of a rule: the unit rules are split into.
struct Atom<'a> {
    rule: &'a SecurityRule,
    src: &'a AddressPrefix,
    dst: &'a AddressPrefix,
}

/// The ASG guards of an atom: rules that reference ASGs need a set lookup
/// on the address, everything else is in the merged set.
fn guards(atom: &Atom<'_>, state: &State) -> (Option<String>, Option<String>) {
    let g = |p: &AddressPrefix| match p {
        AddressPrefix::Asg(name) => state.asg(name).ok().map(|a| format!("asg_{}", a.id)),
        _ => None,
    };
    (g(atom.src), g(atom.dst))
}

/// Address ranges (inclusive) a prefix stands for inside VNet `vnet`.
fn ranges(p: &AddressPrefix, vnet: &VNet) -> Vec<(u32, u32)> {
    match p {
        AddressPrefix::Any | AddressPrefix::Asg(_) => vec![(0, u32::MAX)],
        AddressPrefix::Cidr(c) => vec![(c.first(), c.last())],
        AddressPrefix::Tag(ServiceTag::VirtualNetwork) => vnet
            .address_space
            .iter()
            .map(|c| (c.first(), c.last()))
            .collect(),
        AddressPrefix::Tag(ServiceTag::Internet) => complement(&vnet.address_space)
            .into_iter()
            .map(|(a, b)| (u32::from(a), u32::from(b)))
            .collect(),
        AddressPrefix::Tag(ServiceTag::AzureLoadBalancer) => {
            // With no subnet yet, 0.0.0.0 matches nothing a NIC can send from.
            let gws: Vec<(u32, u32)> = vnet
                .subnets
                .iter()
                .map(|s| u32::from(s.gateway()))
                .map(|g| (g, g))
                .collect();
            if gws.is_empty() {
                vec![(0, 0)]
            } else {
                gws
            }
        }
    }
}

/// One set element: a box in (l4proto, saddr, sport, daddr, dport) space.
type Element = [(u32, u32); 5];

fn overlaps(a: &Element, b: &Element) -> bool {
    a.iter().zip(b).all(|(x, y)| x.0 <= y.1 && y.0 <= x.1)
}

fn covers(a: &Element, b: &Element) -> bool {
    a.iter().zip(b).all(|(x, y)| x.0 <= y.0 && y.1 <= x.1)
}

fn element_text(e: &Element) -> String {
    let num = |(a, b): (u32, u32)| {
        if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        }
    };
    let ip = |(a, b): (u32, u32)| {
        if a == b {
            Ipv4Addr::from(a).to_string()
        } else {
            format!("{}-{}", Ipv4Addr::from(a), Ipv4Addr::from(b))
        }
    };
    format!(
        "{} . {} . {} . {} . {}",
        num(e[0]),
        ip(e[1]),
        num(e[2]),
        ip(e[3]),
        num(e[4])
    )
}

/// Set elements `l4proto . saddr . sport . daddr . dport` of one atom.
fn elements(atom: &Atom<'_>, vnet: &VNet, out: &mut Vec<Element>) {
    let r = atom.rule;
    let all_ports = r.source_ports.iter().all(PortRange::is_any)
        && r.destination_ports.iter().all(PortRange::is_any);
    let protos: Vec<(u32, u32)> = match (r.protocol, all_ports) {
        (Protocol::Any, true) => vec![(0, 255)],
        (Protocol::Any, false) => vec![(6, 6), (17, 17)],
        (p, _) => {
            let n = u32::from(p.number().unwrap_or(0));
            vec![(n, n)]
        }
    };
    let port = |p: &PortRange| (u32::from(p.first), u32::from(p.last));
    for proto in &protos {
        for s in ranges(atom.src, vnet) {
            for sp in &r.source_ports {
                for d in ranges(atom.dst, vnet) {
                    for dp in &r.destination_ports {
                        out.push([*proto, s, port(sp), d, port(dp)]);
                    }
                }
            }
        }
    }
}

/// Splits a run's elements into sets whose elements do not overlap: the
/// kernel's concatenated-range sets (pipapo) refuse overlapping elements.
/// An element inside another of the same run is redundant (same verdict)
/// and dropped.
fn disjoint_sets(elements: Vec<Element>) -> Vec<Vec<Element>> {
    let mut sets: Vec<Vec<Element>> = Vec::new();
    'next: for e in elements {
        if sets.iter().flatten().any(|x| covers(x, &e)) {
            continue;
        }
        for set in sets.iter_mut() {
            if !set.iter().any(|x| overlaps(x, &e)) {
                set.push(e);
                continue 'next;
            }
        }
        sets.push(vec![e]);
    }
    sets
}

fn render_nsg_chain(state: &State, nsg: &Nsg, vnet: &VNet, dir: Direction, out: &mut String) {
    let chain = nsg_chain(nsg, vnet, dir);
    let defaults = default_rules();
    let mut rules: Vec<&SecurityRule> = nsg
        .rules
        .iter()
        .chain(defaults.iter())
        .filter(|r| r.direction == dir)
        .collect();
    rules.sort_by_key(|r| r.priority);
    let atoms: Vec<Atom<'_>> = rules
        .iter()
        .flat_map(|r| {
            r.sources.iter().flat_map(move |s| {
                r.destinations.iter().map(move |d| Atom {
                    rule: r,
                    src: s,
                    dst: d,
                })
            })
        })
        .collect();

    let mut sets = String::new();
    let mut body = String::new();
    let mut i = 0;
    let mut run_no = 0;
    while i < atoms.len() {
        let key = (atoms[i].rule.access, guards(&atoms[i], state));
        let mut j = i;
        let mut elems = Vec::new();
        let mut names = Vec::new();
        while j < atoms.len() && (atoms[j].rule.access, guards(&atoms[j], state)) == key {
            elements(&atoms[j], vnet, &mut elems);
            if names.last() != Some(&atoms[j].rule.name.as_str()) {
                names.push(atoms[j].rule.name.as_str());
            }
            j += 1;
        }
        let verdict = match key.0 {
            Access::Allow => "return",
            Access::Deny => "drop",
        };
        let (gs, gd) = &key.1;
        let mut guard = String::new();
        if let Some(s) = gs {
            let _ = write!(guard, "ip saddr @{s} ");
        }
        if let Some(d) = gd {
            let _ = write!(guard, "ip daddr @{d} ");
        }
        let shown = if names.len() > 3 {
            format!(
                "{} .. {} ({} rules)",
                names[0],
                names[names.len() - 1],
                names.len()
            )
        } else {
            names.join(", ")
        };
        let everything: Element = [
            (0, 255),
            (0, u32::MAX),
            (0, 65535),
            (0, u32::MAX),
            (0, 65535),
        ];
        if elems.iter().any(|e| covers(e, &everything)) {
            let _ = writeln!(body, "    {guard}counter {verdict} comment \"{shown}\"");
        } else {
            for (k, set_elems) in disjoint_sets(elems).into_iter().enumerate() {
                let set = format!("{chain}_r{run_no}_{k}");
                let list: Vec<String> = set_elems.iter().map(element_text).collect();
                set_block(
                    &mut sets,
                    &set,
                    "inet_proto . ipv4_addr . inet_service . ipv4_addr . inet_service",
                    Some("interval"),
                    &list,
                );
                let _ = writeln!(body, "    {guard}meta l4proto . ip saddr . th sport . ip daddr . th dport @{set} counter {verdict} comment \"{shown}\"");
            }
        }
        run_no += 1;
        i = j;
    }
    out.push_str(&sets);
    let _ = writeln!(out, "  chain {chain} {{\n{body}  }}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::protocol::{Request, RuleSpec};
    use crate::state::test_support::*;

    fn rule(name: &str, prio: u32, access: &str, src: &str, dport: &str) -> RuleSpec {
        RuleSpec {
            name: name.into(),
            priority: prio,
            direction: "Inbound".into(),
            access: access.into(),
            protocol: "Tcp".into(),
            sources: vec![src.into()],
            destination_ports: vec![dport.into()],
            ..RuleSpec::default()
        }
    }

    fn with_nsg(rules: Vec<RuleSpec>) -> State {
        let mut st = world();
        apply(&mut st, Request::AsgCreate { name: "web".into() });
        apply(
            &mut st,
            Request::NsgCreate {
                name: "g".into(),
                rules,
            },
        );
        apply(&mut st, nic("a", None));
        apply(
            &mut st,
            Request::NicUpdate {
                name: "a".into(),
                nsg: Some("g".into()),
                clear_nsg: false,
                asgs: Some(vec!["web".into()]),
                public_ip: None,
                clear_public_ip: false,
            },
        );
        st
    }

    #[test]
    fn runs_of_same_action_share_one_lookup() {
        let rules: Vec<RuleSpec> = (0..100)
            .map(|i| {
                rule(
                    &format!("r{i}"),
                    100 + i,
                    "Allow",
                    &format!("192.168.{i}.0/24"),
                    "80",
                )
            })
            .collect();
        let text = render(&with_nsg(rules));
        let chain = text.split("chain nsg_").nth(1).unwrap();
        // 100 disjoint allow rules share one lookup; DenyAll is a plain drop.
        assert!(
            chain.contains("r0 .. AllowAzureLoadBalancerInBound (102 rules)"),
            "{chain}"
        );
        assert!(chain.matches("@nsg_").count() <= 3, "{chain}");
        assert!(
            chain.contains("counter drop comment \"DenyAllInBound\""),
            "{chain}"
        );
    }

    #[test]
    fn alternating_actions_keep_priority_order() {
        let rules = vec![
            rule("deny-one", 100, "Deny", "10.0.1.9", "22"),
            rule("allow-net", 200, "Allow", "10.0.0.0/16", "22"),
        ];
        let text = render(&with_nsg(rules));
        let chain = text.split("chain nsg_").nth(1).unwrap();
        let d = chain.find("deny-one").unwrap();
        let a = chain.find("allow-net").unwrap();
        assert!(d < a);
        assert!(
            text.contains("6 . 10.0.1.9 . 0-65535 . 0.0.0.0-255.255.255.255 . 22"),
            "{text}"
        );
    }

    #[test]
    fn asg_rules_reference_the_set_and_membership_is_elements() {
        let mut r = rule("to-web", 100, "Allow", "*", "80");
        r.destinations = vec!["asg:web".into()];
        let st = with_nsg(vec![r.clone()]);
        let text = render(&st);
        let asg_id = st.asgs[0].id;
        assert!(
            text.contains(&format!("ip daddr @asg_{asg_id} meta l4proto")),
            "{text}"
        );
        assert!(text.contains("elements = { 10.0.1.4 }"), "{text}");
        // Leaving the ASG changes the set, not the rules.
        let mut st2 = st.clone();
        apply(
            &mut st2,
            Request::NicUpdate {
                name: "a".into(),
                nsg: None,
                clear_nsg: false,
                asgs: Some(vec![]),
                public_ip: None,
                clear_public_ip: false,
            },
        );
        let text2 = render(&st2);
        let rules_only = |t: &str| {
            t.lines()
                .filter(|l| !l.contains("elements"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(rules_only(&text), rules_only(&text2));
    }

    #[test]
    fn service_tags_expand() {
        let mut r = rule("inet", 100, "Deny", "Internet", "*");
        r.protocol = "*".into();
        let text = render(&with_nsg(vec![r]));
        assert!(
            text.contains(
                "0-255 . 0.0.0.0-9.255.255.255 . 0-65535 . 0.0.0.0-255.255.255.255 . 0-65535"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "0-255 . 10.0.0.0-10.0.255.255 . 0-65535 . 10.0.0.0-10.0.255.255 . 0-65535"
            ),
            "{text}"
        );
        assert!(
            text.contains("0-255 . 10.0.1.1 . 0-65535 . 0.0.0.0-255.255.255.255 . 0-65535"),
            "{text}"
        );
    }

    #[test]
    fn anti_spoofing_and_nat_entries() {
        let mut st = with_nsg(vec![]);
        apply(
            &mut st,
            Request::PublicIpCreate {
                name: "p".into(),
                allocation: "static".into(),
                address: None,
            },
        );
        apply(
            &mut st,
            Request::NicUpdate {
                name: "a".into(),
                nsg: None,
                clear_nsg: false,
                asgs: None,
                public_ip: Some("p".into()),
                clear_public_ip: false,
            },
        );
        let text = render(&st);
        let port = st.nics[0].id.port_name();
        assert!(text.contains(&format!("\"{port}\" . 10.0.1.4")), "{text}");
        assert!(
            text.contains(&format!("\"{port}\" . {}", st.nics[0].mac)),
            "{text}"
        );
        assert!(
            text.contains("203.0.113.2 : 10.0.1.4") && text.contains("10.0.1.4 : 203.0.113.2"),
            "{text}"
        );
        assert!(text.starts_with("table bridge nimbus\ndelete table bridge nimbus\n"));
    }
}

//! Every kind of semantic error, with the line it is reported at.

use super::validate;
use crate::topology::desired::{Kind, Spec};
use crate::topology::load::parse;

/// Validates `text`; returns `(line, path, reason)` of every error.
fn errors(text: &str) -> Vec<(usize, String, String)> {
    let (doc, mut errs) = parse(text);
    if errs.is_empty() {
        if let Err(e) = validate(&doc) {
            errs = e;
        }
    }
    errs.sort_by_key(|d| d.pos);
    errs.into_iter()
        .map(|d| (d.pos.line, d.path, d.reason))
        .collect()
}

/// Asserts exactly one error at `line` whose reason contains `needle`.
fn one(text: &str, line: usize, needle: &str) {
    let e = errors(text);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    assert_eq!(e[0].0, line, "{e:#?}");
    assert!(e[0].2.contains(needle), "{e:#?}");
}

const BASE: &str = "name: rg
vnets:
  app:
    address_space: 10.1.0.0/16
    subnets:
      web: {cidr: 10.1.1.0/24, nsg: web}
      db: {cidr: 10.1.2.0/24}
nsgs:
  web:
    rules:
      http: {priority: 100, protocol: Tcp, destination_ports: 80}
asgs: [web]
public_ips:
  lb-ip: {}
";

#[test]
fn base_is_valid_and_prefixed() {
    let (doc, e) = parse(BASE);
    assert!(e.is_empty());
    let d = validate(&doc).expect("valid");
    let names: Vec<String> = d.resources.iter().map(|r| r.id.to_string()).collect();
    assert!(names.contains(&"vnet rg-app".to_string()), "{names:?}");
    assert!(
        names.contains(&"subnet rg-app/web".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"nsg rg-web".to_string()), "{names:?}");
    // Creation order: stages never go down.
    let stages: Vec<u8> = d.resources.iter().map(|r| r.id.kind.stage()).collect();
    assert!(stages.windows(2).all(|w| w[0] <= w[1]), "{stages:?}");
    let subnet = d
        .resources
        .iter()
        .find(|r| r.id.kind == Kind::Subnet)
        .map(|r| &r.spec);
    assert!(matches!(subnet, Some(Spec::Subnet { nsg: Some(n), .. }) if n == "rg-web"));
}

#[test]
fn overlapping_subnets() {
    one(
        &BASE.replace("db: {cidr: 10.1.2.0/24}", "db: {cidr: 10.1.1.128/25}"),
        7,
        "overlaps subnet 'web' (10.1.1.0/24)",
    );
}

#[test]
fn subnet_outside_address_space() {
    one(
        &BASE.replace("10.1.2.0/24", "10.2.2.0/24"),
        7,
        "not inside the address space of vnet 'app'",
    );
}

#[test]
fn host_bits_in_cidr() {
    one(
        &BASE.replace("10.1.2.0/24", "10.1.2.1/24"),
        7,
        "host bits are set; the network prefix is 10.1.2.0/24",
    );
}

#[test]
fn overlapping_vnets() {
    let text = format!("{BASE}  other-ip: {{}}\n")
        .replace("nsgs:", "  hub:\n    address_space: [10.0.0.0/8]\nnsgs:");
    one(&text, 9, "overlaps 10.1.0.0/16 of vnet 'app'");
}

#[test]
fn unknown_nsg_reference() {
    one(
        &BASE.replace("nsg: web}", "nsg: wbe}"),
        6,
        "unknown nsg 'wbe' (declared: web)",
    );
}

#[test]
fn bad_priority_and_duplicate_priority() {
    one(
        &BASE.replace("priority: 100", "priority: 99"),
        11,
        "priority 99 is outside 100-4096",
    );
    let dup = BASE.replace(
        "      http: {priority: 100, protocol: Tcp, destination_ports: 80}\n",
        "      http: {priority: 100, protocol: Tcp, destination_ports: 80}\n      ssh: {priority: 100, protocol: Tcp, destination_ports: 22}\n",
    );
    one(
        &dup,
        12,
        "priority 100 is already used by Inbound rule 'http'",
    );
}

#[test]
fn bad_port_ranges() {
    one(
        &BASE.replace("destination_ports: 80", "destination_ports: 90-80"),
        11,
        "range 90-80 is reversed",
    );
    one(
        &BASE.replace("destination_ports: 80", "destination_ports: [80, 70000]"),
        11,
        "'70000' is not a port",
    );
    one(
        &BASE.replace("protocol: Tcp", "protocol: Icmp"),
        11,
        "protocol Icmp has no ports",
    );
}

#[test]
fn unknown_asg_in_rule() {
    one(
        &BASE.replace(
            "destination_ports: 80}",
            "destination_ports: 80, source: asg:db}",
        ),
        11,
        "unknown asg 'db'",
    );
}

const LB: &str = "load_balancers:
  web:
    frontend: {public_ip: lb-ip}
    pools:
      web: {vms: [web-1]}
    probes:
      http: {protocol: Http, port: 80}
    rules:
      http: {frontend_port: 80, pool: web, probe: http}
vms:
  web-1: {subnet: web}
  db-1: {subnet: app/db, ip: 10.1.2.10}
";

#[test]
fn load_balancer_is_valid() {
    let text = format!("{BASE}{LB}");
    let (doc, e) = parse(&text);
    assert!(e.is_empty(), "{e:?}");
    let d = validate(&doc).expect("valid");
    let lb = d
        .resources
        .iter()
        .find(|r| r.id.kind == Kind::Lb)
        .expect("lb");
    let Spec::Lb {
        pools,
        probes,
        rules,
        ..
    } = &lb.spec
    else {
        panic!()
    };
    assert_eq!(pools[0].members, vec!["rg-web-1".to_string()]);
    assert_eq!(probes[0].path.as_deref(), Some("/"));
    assert_eq!(rules[0].idle_timeout_seconds, Some(240));
    assert_eq!(rules[0].algorithm.as_deref(), Some("FiveTuple"));
    assert_eq!(probes[0].passive, Some(true), "passive checking by default");
}

#[test]
fn passive_checking_can_be_off_and_udp_rules_carry_proxy_headers() {
    let text = format!("{BASE}{LB}")
        .replace(
            "http: {protocol: Http, port: 80}",
            "http: {protocol: Http, port: 80, passive: false}",
        )
        .replace(
            "http: {frontend_port: 80, pool: web, probe: http}",
            "http: {frontend_port: 80, pool: web, probe: http}\n      dns: {protocol: Udp, frontend_port: 53, pool: web, proxy_protocol: true}",
        );
    let (doc, e) = parse(&text);
    assert!(e.is_empty(), "{e:?}");
    let d = validate(&doc).expect("valid");
    let Some(Spec::Lb { probes, rules, .. }) = d
        .resources
        .iter()
        .find(|r| r.id.kind == Kind::Lb)
        .map(|r| &r.spec)
    else {
        panic!("no lb")
    };
    assert_eq!(probes[0].passive, Some(false));
    let dns = rules.iter().find(|r| r.name == "dns").expect("dns rule");
    assert!(dns.proxy_protocol);
    assert_eq!(dns.protocol, "Udp");
}

#[test]
fn lb_rule_to_missing_pool_and_probe() {
    let text = format!("{BASE}{LB}").replace("pool: web, probe: http}", "pool: wbe, probe: htp}");
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:#?}");
    assert!(e.iter().all(|(l, _, _)| *l == 23), "{e:#?}");
    assert!(e[0].2.contains("unknown pool 'wbe'") || e[1].2.contains("unknown pool 'wbe'"));
    assert!(e.iter().any(|(_, _, r)| r.contains("unknown probe 'htp'")));
}

#[test]
fn internal_frontend_backend_in_other_vnet() {
    let text = format!("{BASE}{LB}")
        .replace("frontend: {public_ip: lb-ip}", "frontend: {subnet: hub/s}")
        .replace(
            "nsgs:",
            "  hub:\n    address_space: 10.9.0.0/16\n    subnets: {s: {cidr: 10.9.0.0/24}}\nnsgs:",
        );
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:#?}");
    assert_eq!(e[0].0, 22);
    assert!(
        e[0].2
            .contains("vm 'web-1' is in vnet 'app' but the internal frontend is in vnet 'hub'"),
        "{e:#?}"
    );
}

#[test]
fn static_ip_checks() {
    let text = format!("{BASE}{LB}");
    one(
        &text.replace("ip: 10.1.2.10", "ip: 10.1.2.3"),
        26,
        "reserved by Azure's rules",
    );
    one(
        &text.replace("ip: 10.1.2.10", "ip: 10.1.1.10"),
        26,
        "not inside the subnet (10.1.2.0/24)",
    );
}

#[test]
fn public_ip_used_twice() {
    let text = format!("{BASE}{LB}").replace(
        "db-1: {subnet: app/db, ip: 10.1.2.10}",
        "db-1: {subnet: app/db, public_ip: lb-ip}",
    );
    one(
        &text,
        17,
        "public IP 'lb-ip' is already used by vms.db-1.public_ip",
    );
}

#[test]
fn ambiguous_and_unknown_subnets() {
    let text = format!("{BASE}vms:\n  a: {{subnet: nope}}\n");
    one(&text, 16, "unknown subnet 'nope'");
}

#[test]
fn duplicate_frontend_port() {
    let text = format!("{BASE}{LB}").replace(
        "      http: {frontend_port: 80, pool: web, probe: http}\n",
        "      http: {frontend_port: 80, pool: web, probe: http}\n      again: {frontend_port: 80, pool: web}\n",
    );
    one(
        &text,
        24,
        "Tcp port 80 of the frontend is already used by rule 'http'",
    );
}

#[test]
fn scale_sets_name_instances_and_join_pools() {
    let text = format!(
        "{BASE}scale_sets:\n  web: {{replicas: 3, subnet: web, size: B1s}}\nload_balancers:\n  lb:\n    frontend: {{public_ip: lb-ip}}\n    pools: {{p: {{scale_set: web}}}}\n"
    );
    let (doc, e) = parse(&text);
    assert!(e.is_empty(), "{e:?}");
    let d = validate(&doc).expect("valid");
    let nics: Vec<&str> = d
        .resources
        .iter()
        .filter(|r| r.id.kind == Kind::Nic)
        .map(|r| r.id.name.as_str())
        .collect();
    assert_eq!(nics, ["rg-web-0", "rg-web-1", "rg-web-2"]);
    let vm_clash = format!(
        "{BASE}vms:\n  web-1: {{subnet: web}}\nscale_sets:\n  web: {{replicas: 2, subnet: web}}\n"
    );
    one(&vm_clash, 18, "VM name 'web-1' is already used");
    one(
        &text.replace("replicas: 3", "replicas: 101"),
        16,
        "a scale set has 0 to 100",
    );
}

#[test]
fn all_errors_are_listed_together() {
    let text = BASE
        .replace("nsg: web}", "nsg: wbe}")
        .replace("priority: 100", "priority: 5000")
        .replace("10.1.2.0/24", "10.1.1.0/25");
    let e = errors(&text);
    let lines: Vec<usize> = e.iter().map(|x| x.0).collect();
    assert_eq!(lines, [6, 7, 11], "{e:#?}");
}

#[test]
fn bad_names() {
    one(
        &BASE.replace("name: rg", "name: -rg"),
        1,
        "a name starts with a letter or digit",
    );
    one(
        &BASE.replace("  app:", "  app!:"),
        3,
        "character '!' is not allowed",
    );
}

#[test]
fn examples_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read example");
        let (doc, e) = parse(&text);
        assert!(e.is_empty(), "{}: {e:#?}", path.display());
        let d = validate(&doc).unwrap_or_else(|e| panic!("{}: {e:#?}", path.display()));
        assert!(!d.resources.is_empty());
        seen.push(
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    seen.sort();
    assert_eq!(seen, ["hub-spoke.yaml", "scale-set.yaml", "two-tier.yaml"]);
}

#[test]
fn standalone_nics_join_pools_and_names_do_not_clash() {
    let text = format!("{BASE}nics:\n  gw: {{subnet: web}}\nvms:\n  gw: {{subnet: web}}\n");
    one(
        &text,
        18,
        "NIC host name 'rg-gw' is also the NIC of nics.gw",
    );
}

#[test]
fn autoscale_rules_are_checked_at_their_lines() {
    let set = |rule: &str| {
        format!(
            "{BASE}scale_sets:\n  web:\n    replicas: 2\n    subnet: web\n    autoscale: {rule}\n"
        )
    };
    let (doc, e) = parse(&set("{min_replicas: 1, max_replicas: 4}"));
    assert!(e.is_empty(), "{e:?}");
    let d = validate(&doc).expect("valid");
    let s = d.scale_set("web").expect("scale set");
    assert_eq!(s.replicas, 2);
    let a = s.autoscale.expect("rule");
    assert_eq!((a.min_replicas, a.max_replicas), (1, 4));
    assert_eq!((a.target_cpu_percent, a.cooldown_seconds), (60, 120));
    assert_eq!(s.index_of("rg", "rg-web-1"), Some(1));
    assert_eq!(s.index_of("rg", "rg-web-x"), None);
    assert_eq!(s.index_of("rg", "rg-webby-1"), None);
    one(
        &set("{min_replicas: 0, max_replicas: 4}"),
        19,
        "must be 1 to 100",
    );
    one(
        &set("{min_replicas: 3, max_replicas: 2}"),
        19,
        "must be min_replicas (3)",
    );
    one(
        &set("{min_replicas: 3, max_replicas: 4}"),
        19,
        "outside the autoscale range 3 to 4",
    );
    one(
        &set("{min_replicas: 1, max_replicas: 4, target_cpu_percent: 0}"),
        19,
        "0: must be 1 to 100",
    );
    let e = errors(&set(
        "{min_replicas: 1, max_replicas: 4, cooldown_seconds: 7200}",
    ));
    assert!(e[0].1.ends_with("autoscale.cooldown_seconds"), "{e:?}");
}

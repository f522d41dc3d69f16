//! VNets, subnets, NSGs, ASGs and public IPs.

use marked_yaml::Spanned;
use netd::api::protocol::RuleSpec;
use netd::model::{
    Access, AddressPrefix, Allocation, Cidr, Direction, PortRange, Priority, Protocol, SecurityRule,
};

use super::{Ctx, SubnetInfo};
use crate::topology::desired::{Id, Kind, Resource, Spec};
use crate::topology::schema::{SecurityRuleSpec, StrList};

pub(super) fn check_asgs(ctx: &mut Ctx) {
    for (key, ()) in ctx.doc.asgs.iter() {
        let path = format!("asgs.{}", key.as_str());
        if ctx.check_name(key, &path, true) {
            ctx.out.push(Resource {
                id: Id::new(Kind::Asg, ctx.host(key)),
                spec: Spec::Asg,
                span: *key.span(),
                path,
            });
        }
    }
}

pub(super) fn check_public_ips(ctx: &mut Ctx) {
    for (key, pip) in ctx.doc.public_ips.iter() {
        let path = format!("public_ips.{}", key.as_str());
        let mut ok = ctx.check_name(key, &path, true);
        let allocation = match &pip.allocation {
            None => Allocation::Static,
            Some(a) => match a.parse::<Allocation>() {
                Ok(v) => v,
                Err(reason) => {
                    ctx.err(a.span(), format!("{path}.allocation"), reason);
                    ok = false;
                    Allocation::Static
                }
            },
        };
        let address = match &pip.address {
            None => None,
            Some(a) if allocation == Allocation::Dynamic => {
                ctx.err(
                    a.span(),
                    format!("{path}.address"),
                    "a dynamic public IP gets its address when attached; use allocation: static",
                );
                ok = false;
                None
            }
            Some(a) => match a.parse::<std::net::Ipv4Addr>() {
                Ok(ip) => Some(ip.to_string()),
                Err(_) => {
                    ctx.err(
                        a.span(),
                        format!("{path}.address"),
                        format!("'{}' is not an IPv4 address", a.as_str()),
                    );
                    ok = false;
                    None
                }
            },
        };
        if let (true, Some(a)) = (ok, &pip.address) {
            ctx.field_spans.insert(
                (Id::new(Kind::PublicIp, ctx.host(key)), "address"),
                *a.span(),
            );
        }
        if ok {
            ctx.out.push(Resource {
                id: Id::new(Kind::PublicIp, ctx.host(key)),
                spec: Spec::PublicIp {
                    allocation: allocation.to_string(),
                    address,
                },
                span: *key.span(),
                path,
            });
        }
    }
}

/// Parses a one-or-many field with `parse`, reporting at the field.
fn parse_list<T>(
    ctx: &mut Ctx,
    field: Option<&Spanned<StrList>>,
    path: &str,
    default: T,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Option<Vec<T>> {
    let Some(list) = field else {
        return Some(vec![default]);
    };
    if list.0.is_empty() {
        ctx.err(
            list.span(),
            path,
            "an empty list; leave the field out for '*'",
        );
        return None;
    }
    let mut out = Vec::new();
    for text in &list.0 {
        match parse(text) {
            Ok(v) => out.push(v),
            Err(reason) => {
                ctx.err(list.span(), path, reason);
                return None;
            }
        }
    }
    Some(out)
}

fn text_field<T: std::str::FromStr<Err = String>>(
    ctx: &mut Ctx,
    field: Option<&Spanned<String>>,
    path: String,
    default: T,
) -> Option<T> {
    match field {
        None => Some(default),
        Some(v) => match v.parse::<T>() {
            Ok(t) => Some(t),
            Err(reason) => {
                ctx.err(v.span(), path, format!("'{}': {reason}", v.as_str()));
                None
            }
        },
    }
}

fn check_rule(
    ctx: &mut Ctx,
    asgs: &[String],
    key: &Spanned<String>,
    r: &SecurityRuleSpec,
    path: &str,
) -> Option<SecurityRule> {
    let name = match key.parse() {
        Ok(n) => Some(n),
        Err(reason) => {
            ctx.err(key.span(), path, format!("rule name: {reason}"));
            None
        }
    };
    let priority = match Priority::user(*r.priority) {
        Ok(p) => Some(p),
        Err(reason) => {
            ctx.err(r.priority.span(), format!("{path}.priority"), reason);
            None
        }
    };
    let direction = text_field(
        ctx,
        r.direction.as_ref(),
        format!("{path}.direction"),
        Direction::Inbound,
    );
    let access = text_field(
        ctx,
        r.access.as_ref(),
        format!("{path}.access"),
        Access::Allow,
    );
    let protocol = text_field(
        ctx,
        r.protocol.as_ref(),
        format!("{path}.protocol"),
        Protocol::Any,
    );
    let rg = ctx.rg.clone();
    let prefix = |t: &str| -> Result<AddressPrefix, String> {
        match t.parse::<AddressPrefix>()? {
            AddressPrefix::Asg(a) if !asgs.iter().any(|x| x == a.as_str()) => Err(format!(
                "unknown asg '{a}' (declared: {})",
                super::list_or_none(asgs)
            )),
            // The rule names the host object, as netd knows it.
            AddressPrefix::Asg(a) => format!("asg:{rg}-{a}").parse(),
            p => Ok(p),
        }
    };
    let sources = parse_list(
        ctx,
        r.source.as_ref(),
        &format!("{path}.source"),
        AddressPrefix::Any,
        prefix,
    );
    let destinations = parse_list(
        ctx,
        r.destination.as_ref(),
        &format!("{path}.destination"),
        AddressPrefix::Any,
        prefix,
    );
    let port = |t: &str| t.parse::<PortRange>();
    let source_ports = parse_list(
        ctx,
        r.source_ports.as_ref(),
        &format!("{path}.source_ports"),
        PortRange::ANY,
        port,
    );
    let destination_ports = parse_list(
        ctx,
        r.destination_ports.as_ref(),
        &format!("{path}.destination_ports"),
        PortRange::ANY,
        port,
    );
    let rule = SecurityRule {
        name: name?,
        priority: priority?,
        direction: direction?,
        access: access?,
        protocol: protocol?,
        sources: sources?,
        source_ports: source_ports?,
        destinations: destinations?,
        destination_ports: destination_ports?,
    };
    if let Err((field, value, reason)) = rule.check() {
        let span = match field {
            "source_port" => r.source_ports.as_ref().map(|s| *s.span()),
            "destination_port" => r.destination_ports.as_ref().map(|s| *s.span()),
            _ => None,
        }
        .unwrap_or(*key.span());
        ctx.err(
            &span,
            format!("{path}.{field}s"),
            format!("'{value}': {reason}"),
        );
        return None;
    }
    Some(rule)
}

/// The rule as netd lists it (`nsg rule list`), for comparison.
pub(crate) fn rule_spec(rule: &SecurityRule) -> RuleSpec {
    let strings = |v: &[AddressPrefix]| v.iter().map(|p| p.to_string()).collect();
    let ports = |v: &[PortRange]| v.iter().map(|p| p.to_string()).collect();
    RuleSpec {
        name: rule.name.to_string(),
        priority: u32::from(rule.priority.get()),
        direction: rule.direction.to_string(),
        access: rule.access.to_string(),
        protocol: rule.protocol.to_string(),
        sources: strings(&rule.sources),
        source_ports: ports(&rule.source_ports),
        destinations: strings(&rule.destinations),
        destination_ports: ports(&rule.destination_ports),
    }
}

pub(super) fn check_nsgs(ctx: &mut Ctx) {
    let asgs = Ctx::names(&ctx.doc.asgs);
    for (key, nsg) in ctx.doc.nsgs.iter() {
        let path = format!("nsgs.{}", key.as_str());
        let mut ok = ctx.check_name(key, &path, true);
        let mut rules: Vec<RuleSpec> = Vec::new();
        let mut seen: Vec<(Priority, Direction, String)> = Vec::new();
        for (rkey, r) in nsg.rules.iter() {
            let rpath = format!("{path}.rules.{}", rkey.as_str());
            let Some(rule) = check_rule(ctx, &asgs, rkey, r, &rpath) else {
                ok = false;
                continue;
            };
            if let Some((_, _, other)) = seen
                .iter()
                .find(|(p, d, _)| *p == rule.priority && *d == rule.direction)
            {
                ctx.err(
                    r.priority.span(),
                    format!("{rpath}.priority"),
                    format!(
                        "priority {} is already used by {} rule '{other}'",
                        rule.priority, rule.direction
                    ),
                );
                ok = false;
                continue;
            }
            seen.push((rule.priority, rule.direction, rule.name.to_string()));
            rules.push(rule_spec(&rule));
        }
        rules.sort_by(|a, b| a.name.cmp(&b.name));
        if ok {
            ctx.out.push(Resource {
                id: Id::new(Kind::Nsg, ctx.host(key)),
                spec: Spec::Nsg { rules },
                span: *key.span(),
                path,
            });
        }
    }
}

pub(super) fn check_vnets(ctx: &mut Ctx) {
    let nsgs = Ctx::names(&ctx.doc.nsgs);
    // (prefix, vnet, path) of every address space seen so far.
    let mut spaces: Vec<(Cidr, String)> = Vec::new();
    for (key, vnet) in ctx.doc.vnets.iter() {
        let path = format!("vnets.{}", key.as_str());
        let mut ok = ctx.check_name(key, &path, true);
        let vhost = ctx.host(key);
        let spath = format!("{path}.address_space");
        let mut mine: Vec<Cidr> = Vec::new();
        if vnet.address_space.0.is_empty() {
            ctx.err(
                vnet.address_space.span(),
                &spath,
                "at least one prefix is needed",
            );
            ok = false;
        }
        for text in &vnet.address_space.0 {
            let span = vnet.address_space.span();
            let cidr = match text.parse::<Cidr>() {
                Ok(c) => c,
                Err(reason) => {
                    ctx.err(span, &spath, format!("'{text}': {reason}"));
                    ok = false;
                    continue;
                }
            };
            if !(8..=29).contains(&cidr.prefix_len()) {
                ctx.err(
                    span,
                    &spath,
                    format!("'{text}': prefix length must be between /8 and /29"),
                );
                ok = false;
            } else if let Some(other) = mine.iter().find(|p| p.overlaps(&cidr)) {
                ctx.err(
                    span,
                    &spath,
                    format!("'{text}' overlaps {other} of the same address space"),
                );
                ok = false;
            } else if let Some((other, owner)) = spaces.iter().find(|(p, _)| p.overlaps(&cidr)) {
                ctx.err(
                    span,
                    &spath,
                    format!("'{text}' overlaps {other} of vnet '{owner}'"),
                );
                ok = false;
            }
            mine.push(cidr);
        }
        spaces.extend(mine.iter().map(|c| (*c, key.to_string())));
        let mut taken: Vec<(Cidr, String)> = Vec::new();
        for (skey, subnet) in vnet.subnets.iter() {
            let sp = format!("{path}.subnets.{}", skey.as_str());
            let mut sok = ctx.check_name(skey, &sp, false);
            let cidr = match subnet.cidr.parse::<Cidr>() {
                Ok(c) => Some(c),
                Err(reason) => {
                    ctx.err(
                        subnet.cidr.span(),
                        format!("{sp}.cidr"),
                        format!("'{}': {reason}", subnet.cidr.as_str()),
                    );
                    None
                }
            };
            if let Some(c) = cidr {
                let cpath = format!("{sp}.cidr");
                if c.prefix_len() > 29 {
                    ctx.err(
                        subnet.cidr.span(),
                        &cpath,
                        format!("'{c}': the smallest subnet is /29 (Azure reserves 5 addresses)"),
                    );
                    sok = false;
                } else if !mine.is_empty() && !mine.iter().any(|p| p.covers(&c)) {
                    let space: Vec<String> = mine.iter().map(Cidr::to_string).collect();
                    ctx.err(
                        subnet.cidr.span(),
                        &cpath,
                        format!(
                            "'{c}' is not inside the address space of vnet '{}' ({})",
                            key.as_str(),
                            space.join(", ")
                        ),
                    );
                    sok = false;
                } else if let Some((other, oname)) = taken.iter().find(|(p, _)| p.overlaps(&c)) {
                    ctx.err(
                        subnet.cidr.span(),
                        &cpath,
                        format!("'{c}' overlaps subnet '{oname}' ({other})"),
                    );
                    sok = false;
                }
                taken.push((c, skey.to_string()));
            } else {
                sok = false;
            }
            let nsg = match &subnet.nsg {
                None => None,
                Some(r) => match ctx.object_ref(r, &format!("{sp}.nsg"), "nsg", &nsgs) {
                    Some(h) => Some(h),
                    None => {
                        sok = false;
                        None
                    }
                },
            };
            ctx.subnets.push(SubnetInfo {
                vnet: key.to_string(),
                name: skey.to_string(),
                cidr,
            });
            if sok && ok {
                if let Some(c) = cidr {
                    ctx.out.push(Resource {
                        id: Id::new(Kind::Subnet, format!("{vhost}/{}", skey.as_str())),
                        spec: Spec::Subnet {
                            vnet: vhost.clone(),
                            name: skey.to_string(),
                            cidr: c.to_string(),
                            nsg,
                        },
                        span: *skey.span(),
                        path: sp,
                    });
                }
            }
        }
        if ok {
            ctx.field_spans.insert(
                (Id::new(Kind::Vnet, vhost.clone()), "address_space"),
                *vnet.address_space.span(),
            );
            ctx.out.push(Resource {
                id: Id::new(Kind::Vnet, vhost),
                spec: Spec::Vnet {
                    address_space: mine.iter().map(Cidr::to_string).collect(),
                },
                span: *key.span(),
                path,
            });
        }
    }
}

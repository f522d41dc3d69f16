//! Load balancers: frontend, pools, probes and rules, with netd's ranges
//! and defaults (`netd::model::{Probe, LbRule}`).

use std::net::Ipv4Addr;

use marked_yaml::Spanned;
use netd::api::protocol::{LbRuleSpec, ProbeSpec};
use netd::model::{Algorithm, LbProtocol, LbRule, Probe};

use super::compute::{address_problem, claim_public_ip};
use super::{Ctx, NicInfo};
use crate::topology::desired::{FrontendV, Id, Kind, PoolV, Resource, Spec};
use crate::topology::schema::{LbRuleSpecY, LbSpec, ProbeSpecY};

/// netd's probe defaults (`netd::state::load_balancer`).
const DEFAULT_PROBE_INTERVAL: u32 = 5;
const DEFAULT_PROBE_THRESHOLD: u32 = 2;

fn port(ctx: &mut Ctx, v: &Spanned<u32>, path: String) -> Option<u32> {
    if (1..=65535).contains(&**v) {
        Some(**v)
    } else {
        ctx.err(v.span(), path, format!("{}: a port is 1-65535", **v));
        None
    }
}

fn check_frontend(ctx: &mut Ctx, lb: &LbSpec, path: &str) -> Option<(FrontendV, Option<String>)> {
    let f = &lb.frontend;
    let fpath = format!("{path}.frontend");
    match (&f.public_ip, &f.subnet) {
        (Some(pip), None) => {
            if let Some(ip) = &f.private_ip {
                ctx.err(
                    ip.span(),
                    format!("{fpath}.private_ip"),
                    "a public load balancer has no private frontend address",
                );
                return None;
            }
            let pips = Ctx::names(&ctx.doc.public_ips);
            let host = ctx.object_ref(pip, &format!("{fpath}.public_ip"), "public IP", &pips)?;
            claim_public_ip(ctx, pip, &format!("{fpath}.public_ip"))
                .then_some((FrontendV::Public { public_ip: host }, None))
        }
        (None, Some(subnet)) => {
            let sub = ctx.subnet_ref(subnet, &format!("{fpath}.subnet"))?;
            let private_ip = match &f.private_ip {
                None => None,
                Some(text) => {
                    let Ok(a) = text.parse::<Ipv4Addr>() else {
                        ctx.err(
                            text.span(),
                            format!("{fpath}.private_ip"),
                            format!("'{}' is not an IPv4 address", text.as_str()),
                        );
                        return None;
                    };
                    if let Some(reason) = address_problem(sub.cidr, a) {
                        ctx.err(
                            text.span(),
                            format!("{fpath}.private_ip"),
                            format!("{a}: {reason}"),
                        );
                        return None;
                    }
                    if let Some(other) = ctx.static_ips.get(&a).cloned() {
                        ctx.err(
                            text.span(),
                            format!("{fpath}.private_ip"),
                            format!("{a} is already used by {other}"),
                        );
                        return None;
                    }
                    ctx.static_ips.insert(a, fpath.clone());
                    Some(a.to_string())
                }
            };
            let vnet = ctx.host(&sub.vnet);
            Some((
                FrontendV::Internal {
                    vnet,
                    subnet: sub.name,
                    private_ip,
                },
                Some(sub.vnet),
            ))
        }
        _ => {
            ctx.err(
                f.span(),
                &fpath,
                "give either public_ip (public load balancer) or subnet (internal load balancer)",
            );
            None
        }
    }
}

fn check_probe(
    ctx: &mut Ctx,
    key: &Spanned<String>,
    p: &ProbeSpecY,
    path: &str,
) -> Option<ProbeSpec> {
    let mut ok = ctx.check_name(key, path, false);
    let http = match &p.protocol {
        None => false,
        Some(t) if t.eq_ignore_ascii_case("tcp") => false,
        Some(t) if t.eq_ignore_ascii_case("http") => true,
        Some(t) => {
            ctx.err(
                t.span(),
                format!("{path}.protocol"),
                format!("'{}': expected Tcp or Http", t.as_str()),
            );
            return None;
        }
    };
    let port = port(ctx, &p.port, format!("{path}.port"));
    ok &= port.is_some();
    let (path_v, status) = if http {
        let pth = p
            .path
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "/".into());
        if !pth.starts_with('/') || pth.chars().any(|c| c.is_whitespace() || c.is_control()) {
            let span = p.path.as_ref().map(|s| *s.span()).unwrap_or(*key.span());
            ctx.err(
                &span,
                format!("{path}.path"),
                format!("'{pth}': an HTTP path starts with '/' and has no spaces"),
            );
            ok = false;
        }
        let status = p.expected_status.as_ref().map(|s| **s).unwrap_or(200);
        if !(100..=599).contains(&status) {
            if let Some(s) = &p.expected_status {
                ctx.err(
                    s.span(),
                    format!("{path}.expected_status"),
                    format!("{status}: an HTTP status is 100-599"),
                );
            }
            ok = false;
        }
        (Some(pth), Some(status))
    } else {
        for (field, present) in [
            ("path", p.path.as_ref().map(|s| *s.span())),
            (
                "expected_status",
                p.expected_status.as_ref().map(|s| *s.span()),
            ),
        ] {
            if let Some(span) = present {
                ctx.err(
                    &span,
                    format!("{path}.{field}"),
                    "only HTTP probes have this; set protocol: Http",
                );
                ok = false;
            }
        }
        (None, None)
    };
    let interval = p
        .interval_seconds
        .as_ref()
        .map(|s| **s)
        .unwrap_or(DEFAULT_PROBE_INTERVAL);
    if !Probe::INTERVAL.contains(&interval) {
        if let Some(s) = &p.interval_seconds {
            ctx.err(
                s.span(),
                format!("{path}.interval_seconds"),
                format!("{interval}: the interval is 1 s or more"),
            );
        }
        ok = false;
    }
    let threshold = p
        .unhealthy_threshold
        .as_ref()
        .map(|s| **s)
        .unwrap_or(DEFAULT_PROBE_THRESHOLD);
    if !Probe::THRESHOLD.contains(&threshold) {
        if let Some(s) = &p.unhealthy_threshold {
            ctx.err(
                s.span(),
                format!("{path}.unhealthy_threshold"),
                format!("{threshold}: the threshold is 1-100"),
            );
        }
        ok = false;
    }
    ok.then(|| ProbeSpec {
        name: key.to_string(),
        protocol: if http { "Http" } else { "Tcp" }.into(),
        port: port.unwrap_or_default(),
        path: path_v,
        expected_status: status,
        interval_seconds: Some(interval),
        unhealthy_threshold: Some(threshold),
        passive: Some(p.passive.as_ref().map(|v| **v).unwrap_or(true)),
    })
}

fn check_rule(
    ctx: &mut Ctx,
    key: &Spanned<String>,
    r: &LbRuleSpecY,
    path: &str,
    lb: &LbSpec,
    used: &mut Vec<(LbProtocol, u32, String)>,
) -> Option<LbRuleSpec> {
    let mut ok = ctx.check_name(key, path, false);
    let protocol = match &r.protocol {
        None => LbProtocol::Tcp,
        Some(t) => match t.parse::<LbProtocol>() {
            Ok(p) => p,
            Err(reason) => {
                ctx.err(
                    t.span(),
                    format!("{path}.protocol"),
                    format!("'{}': {reason}", t.as_str()),
                );
                return None;
            }
        },
    };
    let fport = port(ctx, &r.frontend_port, format!("{path}.frontend_port"));
    let bport = match &r.backend_port {
        None => fport,
        Some(b) => port(ctx, b, format!("{path}.backend_port")),
    };
    ok &= fport.is_some() && bport.is_some();
    if let Some(fp) = fport {
        if let Some((_, _, other)) = used.iter().find(|(p, f, _)| *p == protocol && *f == fp) {
            ctx.err(
                r.frontend_port.span(),
                format!("{path}.frontend_port"),
                format!("{protocol} port {fp} of the frontend is already used by rule '{other}'"),
            );
            ok = false;
        }
        used.push((protocol, fp, key.to_string()));
    }
    if lb.pools.get(&r.pool).is_none() {
        let known = Ctx::names(&lb.pools);
        ctx.err(
            r.pool.span(),
            format!("{path}.pool"),
            format!(
                "unknown pool '{}' of this load balancer (pools: {})",
                r.pool.as_str(),
                super::list_or_none(&known)
            ),
        );
        ok = false;
    }
    if let Some(p) = &r.probe {
        if lb.probes.get(p).is_none() {
            let known = Ctx::names(&lb.probes);
            ctx.err(
                p.span(),
                format!("{path}.probe"),
                format!(
                    "unknown probe '{}' of this load balancer (probes: {})",
                    p.as_str(),
                    super::list_or_none(&known)
                ),
            );
            ok = false;
        }
    }
    let idle = match (&r.idle_timeout_seconds, &r.idle_timeout_minutes) {
        (Some(s), _) if **s == 0 || **s > 6000 => {
            ctx.err(
                s.span(),
                format!("{path}.idle_timeout_seconds"),
                format!("{}: the idle timeout is 1-6000 seconds", **s),
            );
            None
        }
        (Some(s), _) => Some(**s),
        (None, Some(m)) if !LbRule::IDLE_MINUTES.contains(&**m) => {
            ctx.err(
                m.span(),
                format!("{path}.idle_timeout_minutes"),
                format!("{}: Azure's idle timeout is 4-100 minutes", **m),
            );
            None
        }
        (None, m) => Some(
            m.as_ref()
                .map(|m| **m)
                .unwrap_or(LbRule::DEFAULT_IDLE_MINUTES)
                * 60,
        ),
    };
    ok &= idle.is_some();
    let algorithm = match &r.algorithm {
        None => Some(Algorithm::default()),
        Some(a) => match a.parse::<Algorithm>() {
            Ok(v) => Some(v),
            Err(reason) => {
                ctx.err(
                    a.span(),
                    format!("{path}.algorithm"),
                    format!("'{}': {reason}", a.as_str()),
                );
                None
            }
        },
    };
    ok &= algorithm.is_some();
    let proxy = r.proxy_protocol.as_ref().map(|p| **p).unwrap_or(false);
    ok.then(|| LbRuleSpec {
        name: key.to_string(),
        protocol: protocol.to_string(),
        frontend_port: fport.unwrap_or_default(),
        backend_port: bport,
        pool: r.pool.to_string(),
        probe: r.probe.as_ref().map(|p| p.to_string()),
        idle_timeout_minutes: None,
        idle_timeout_seconds: idle,
        algorithm: algorithm.map(|a| a.to_string()),
        proxy_protocol: proxy,
    })
}

pub(super) fn check_load_balancers(ctx: &mut Ctx) {
    let doc = ctx.doc;
    for (key, lb) in doc.load_balancers.iter() {
        let path = format!("load_balancers.{}", key.as_str());
        let mut ok = ctx.check_name(key, &path, true);
        let frontend = check_frontend(ctx, lb, &path);
        ok &= frontend.is_some();
        // The VNet every backend must be in: the internal frontend's, or
        // the first member's.
        let mut backend_vnet: Option<(String, String)> = frontend
            .as_ref()
            .and_then(|(_, v)| v.clone())
            .map(|v| (v, "the internal frontend".to_string()));
        let mut pools = Vec::new();
        for (pkey, p) in lb.pools.iter() {
            let ppath = format!("{path}.pools.{}", pkey.as_str());
            ok &= ctx.check_name(pkey, &ppath, false);
            let mut members: Vec<(NicInfo, String, marked_yaml::Span)> = Vec::new();
            if let Some(nics) = &p.nics {
                for nic in &nics.0 {
                    match ctx.standalone_nics.get(nic) {
                        Some(n) => members.push((n.clone(), format!("nic '{nic}'"), *nics.span())),
                        // Declared but invalid: reported where it is.
                        None if doc.nics.get(nic).is_some() || doc.is_broken("nics", nic) => {
                            ok = false
                        }
                        None => {
                            let known = Ctx::names(&doc.nics);
                            ctx.err(
                                nics.span(),
                                format!("{ppath}.nics"),
                                format!(
                                    "unknown nic '{nic}' (declared: {})",
                                    super::list_or_none(&known)
                                ),
                            );
                            ok = false;
                        }
                    }
                }
            }
            if let Some(vms) = &p.vms {
                for vm in &vms.0 {
                    match ctx.vm_nics.get(vm) {
                        Some(n) => members.push((n.clone(), format!("vm '{vm}'"), *vms.span())),
                        None if doc.vms.get(vm).is_some() || doc.is_broken("vms", vm) => ok = false,
                        None => {
                            let known = Ctx::names(&doc.vms);
                            ctx.err(
                                vms.span(),
                                format!("{ppath}.vms"),
                                format!(
                                    "unknown vm '{vm}' (declared: {})",
                                    super::list_or_none(&known)
                                ),
                            );
                            ok = false;
                        }
                    }
                }
            }
            if let Some(ss) = &p.scale_set {
                match ctx.scale_set_nics.get(ss.as_str()) {
                    None if doc.is_broken("scale_sets", ss) => ok = false,
                    Some(list) => members.extend(list.iter().map(|n| {
                        (
                            n.clone(),
                            format!("scale set '{}'", ss.as_str()),
                            *ss.span(),
                        )
                    })),
                    None => {
                        let known = Ctx::names(&doc.scale_sets);
                        ctx.err(
                            ss.span(),
                            format!("{ppath}.scale_set"),
                            format!(
                                "unknown scale set '{}' (declared: {})",
                                ss.as_str(),
                                super::list_or_none(&known)
                            ),
                        );
                        ok = false;
                    }
                }
            }
            let mut names = Vec::new();
            for (nic, who, span) in members {
                match &backend_vnet {
                    Some((v, why)) if *v != nic.vnet => {
                        let field = if who.starts_with("vm") {
                            "vms"
                        } else if who.starts_with("nic") {
                            "nics"
                        } else {
                            "scale_set"
                        };
                        ctx.err(&span, format!("{ppath}.{field}"), format!("{who} is in vnet '{}' but {why} is in vnet '{v}' (one VNet per load balancer)", nic.vnet));
                        ok = false;
                    }
                    Some(_) => {}
                    None => {
                        backend_vnet = Some((
                            nic.vnet.clone(),
                            format!("{who} of pool '{}'", pkey.as_str()),
                        ))
                    }
                }
                names.push(nic.host);
            }
            names.sort();
            names.dedup();
            pools.push(PoolV {
                name: pkey.to_string(),
                members: names,
            });
        }
        let mut probes = Vec::new();
        for (pkey, p) in lb.probes.iter() {
            match check_probe(ctx, pkey, p, &format!("{path}.probes.{}", pkey.as_str())) {
                Some(v) => probes.push(v),
                None => ok = false,
            }
        }
        let mut rules = Vec::new();
        let mut used = Vec::new();
        for (rkey, r) in lb.rules.iter() {
            match check_rule(
                ctx,
                rkey,
                r,
                &format!("{path}.rules.{}", rkey.as_str()),
                lb,
                &mut used,
            ) {
                Some(v) => rules.push(v),
                None => ok = false,
            }
        }
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        probes.sort_by(|a, b| a.name.cmp(&b.name));
        rules.sort_by(|a, b| a.name.cmp(&b.name));
        if let (true, Some((frontend, _))) = (ok, frontend) {
            ctx.out.push(Resource {
                id: Id::new(Kind::Lb, ctx.host(key)),
                spec: Spec::Lb {
                    frontend,
                    pools,
                    probes,
                    rules,
                },
                span: *key.span(),
                path,
            });
        }
    }
}

//! Load balancers: validated operations on frontends, pools, probes and
//! rules. Like every state operation they run on a copy, so a refusal
//! changes nothing.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::{parse_name, parse_ref, State};
use crate::api::protocol::{LbRuleSpec, MemberSpec, ProbeSpec};
use crate::error::{parse_field, Kind, NetError};
use crate::model::{
    Algorithm, Allocation, BackendPool, Frontend, LbProtocol, LbRule, LoadBalancer, Name,
    PoolMember, Probe, ProbeCheck, Subnet, Weight,
};

/// Defaults of a probe, Azure's where Azure has one.
const DEFAULT_PROBE_INTERVAL: u32 = 5;
const DEFAULT_PROBE_THRESHOLD: u32 = 2;

fn port(kind: Kind, owner: &str, field: &str, value: u32) -> Result<u16, NetError> {
    match u16::try_from(value) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(NetError::invalid(
            kind,
            owner,
            field,
            value,
            "a port is 1-65535",
        )),
    }
}

impl State {
    /// The load balancer called `name`.
    pub fn load_balancer(&self, name: &Name) -> Result<&LoadBalancer, NetError> {
        self.load_balancers
            .iter()
            .find(|l| &l.name == name)
            .ok_or_else(|| NetError::not_found(Kind::LoadBalancer, name))
    }

    fn lb_mut(&mut self, lb: &str) -> Result<&mut LoadBalancer, NetError> {
        let name = parse_name(Kind::LoadBalancer, lb)?;
        self.load_balancers
            .iter_mut()
            .find(|l| l.name == name)
            .ok_or_else(|| NetError::not_found(Kind::LoadBalancer, lb))
    }

    fn lb_ref(&self, lb: &str) -> Result<&LoadBalancer, NetError> {
        self.load_balancer(&parse_name(Kind::LoadBalancer, lb)?)
    }

    /// The load balancer whose internal frontend holds `ip`, if any.
    pub(super) fn lb_holding_ip(&self, ip: Ipv4Addr) -> Option<&LoadBalancer> {
        self.load_balancers
            .iter()
            .find(|l| matches!(l.frontend, Frontend::Internal { ip: a, .. } if a == ip))
    }

    /// Load balancers whose frontend is public IP `pip`.
    pub(super) fn lb_using_public_ip(&self, pip: &Name) -> Option<&LoadBalancer> {
        self.load_balancers
            .iter()
            .find(|l| matches!(&l.frontend, Frontend::Public { public_ip } if public_ip == pip))
    }

    /// Load balancers with an internal frontend in `vnet` (and `subnet`).
    pub(super) fn lbs_in(&self, vnet: &Name, subnet: Option<&Name>) -> Vec<Name> {
        self.load_balancers
            .iter()
            .filter(|l| match &l.frontend {
                Frontend::Internal {
                    vnet: v, subnet: s, ..
                } => v == vnet && subnet.is_none_or(|want| want == s),
                Frontend::Public { .. } => false,
            })
            .map(|l| l.name.clone())
            .collect()
    }

    /// The internal frontends of subnet `changed` (of `vnet`) whose address
    /// the subnet's new prefix would not hold as an assignable address:
    /// one line each, naming the load balancer, the address and why.
    /// Another object cannot hold the address already: the new prefix
    /// overlaps no other subnet, and a subnet with NICs keeps its prefix.
    pub(super) fn frontends_stranded_by(&self, vnet: &Name, changed: &Subnet) -> Vec<String> {
        self.load_balancers
            .iter()
            .filter_map(|l| match &l.frontend {
                Frontend::Internal {
                    vnet: v,
                    subnet: s,
                    ip,
                } if v == vnet && s == &changed.name && !changed.is_assignable(*ip) => {
                    let why = if changed.cidr.contains(*ip) {
                        "a reserved address (network, gateway, DNS or broadcast) of"
                    } else {
                        "outside"
                    };
                    Some(format!(
                        "lb '{}' frontend {ip} would be {why} {}",
                        l.name, changed.cidr
                    ))
                }
                _ => None,
            })
            .collect()
    }

    /// The frontend address of `lb` (None while a public IP has none).
    pub fn lb_frontend_ip(&self, lb: &LoadBalancer) -> Option<Ipv4Addr> {
        match &lb.frontend {
            Frontend::Internal { ip, .. } => Some(*ip),
            Frontend::Public { public_ip } => self.public_ip(public_ip).ok()?.address,
        }
    }

    /// The VNet backends of `lb` must be in: the frontend's for an internal
    /// load balancer, else the VNet of the first member of any pool.
    fn lb_backend_vnet(&self, lb: &LoadBalancer) -> Option<Name> {
        if let Frontend::Internal { vnet, .. } = &lb.frontend {
            return Some(vnet.clone());
        }
        lb.pools
            .iter()
            .flat_map(|p| &p.members)
            .find_map(|m| self.nic(&m.nic).ok().map(|n| n.vnet.clone()))
    }

    pub(super) fn lb_create(
        &mut self,
        name: &str,
        public_ip: Option<&str>,
        vnet: Option<&str>,
        subnet: Option<&str>,
        private_ip: Option<&str>,
    ) -> Result<Value, NetError> {
        let lname = parse_name(Kind::LoadBalancer, name)?;
        if self.load_balancer(&lname).is_ok() {
            return Err(NetError::AlreadyExists {
                kind: Kind::LoadBalancer,
                name: name.into(),
            });
        }
        let frontend = match (public_ip, vnet, subnet) {
            (Some(pip), None, None) => {
                if let Some(ip) = private_ip {
                    return Err(NetError::invalid(Kind::LoadBalancer, name, "private_ip", ip, "a public load balancer has no private frontend address"));
                }
                let pname = parse_ref(Kind::LoadBalancer, name, "public_ip", pip)?;
                let p = self.public_ip(&pname)?.clone();
                if let Some(n) = self
                    .nics
                    .iter()
                    .find(|n| n.public_ip.as_ref() == Some(&pname))
                {
                    return Err(NetError::in_use(
                        Kind::PublicIp,
                        pip,
                        format!("attached to nic '{}'", n.name),
                    ));
                }
                if let Some(l) = self.lb_using_public_ip(&pname) {
                    return Err(NetError::in_use(
                        Kind::PublicIp,
                        pip,
                        format!("frontend of lb '{}'", l.name),
                    ));
                }
                if p.allocation == Allocation::Dynamic && p.address.is_none() {
                    let a = self.free_public_address(Kind::PublicIp, pip)?;
                    if let Some(slot) = self.public_ips.iter_mut().find(|x| x.name == pname) {
                        slot.address = Some(a);
                    }
                }
                Frontend::Public { public_ip: pname }
            }
            (None, Some(v), Some(s)) => {
                let vname = parse_ref(Kind::LoadBalancer, name, "vnet", v)?;
                let sname = parse_ref(Kind::LoadBalancer, name, "subnet", s)?;
                let sub = self.subnet(&vname, &sname)?.clone();
                let ip = match private_ip {
                    Some(text) => {
                        let a: Ipv4Addr = text.parse().map_err(|_| {
                            NetError::invalid(
                                Kind::LoadBalancer,
                                name,
                                "private_ip",
                                text,
                                "not an IPv4 address",
                            )
                        })?;
                        self.check_static_ip(name, &sub, a)?;
                        a
                    }
                    None => self.next_free(name, &sub)?,
                };
                self.record_ip(&vname, &sname, ip)?;
                Frontend::Internal {
                    vnet: vname,
                    subnet: sname,
                    ip,
                }
            }
            _ => {
                return Err(NetError::invalid(
                    Kind::LoadBalancer,
                    name,
                    "frontend",
                    "(none)",
                    "give either a public IP (public load balancer) or a VNet and subnet (internal load balancer)",
                ))
            }
        };
        self.load_balancers.push(LoadBalancer {
            name: lname,
            frontend,
            pools: vec![],
            probes: vec![],
            rules: vec![],
        });
        self.lb_show(name)
    }

    pub(super) fn lb_delete(&mut self, name: &str) -> Result<Value, NetError> {
        let lb = self.lb_ref(name)?.clone();
        if let Frontend::Public { public_ip } = &lb.frontend {
            if let Some(p) = self.public_ips.iter_mut().find(|p| &p.name == public_ip) {
                if p.allocation == Allocation::Dynamic {
                    p.address = None;
                }
            }
        }
        self.load_balancers.retain(|l| l.name != lb.name);
        Ok(Value::Null)
    }

    pub(super) fn lb_show(&self, name: &str) -> Result<Value, NetError> {
        Ok(self.lb_view(self.lb_ref(name)?))
    }

    pub(super) fn lb_view(&self, lb: &LoadBalancer) -> Value {
        let (kind, public_ip, vnet, subnet) = match &lb.frontend {
            Frontend::Public { public_ip } => ("Public", Some(public_ip.to_string()), None, None),
            Frontend::Internal { vnet, subnet, .. } => (
                "Internal",
                None,
                Some(vnet.to_string()),
                Some(subnet.to_string()),
            ),
        };
        let pools: Vec<Value> = lb
            .pools
            .iter()
            .map(|p| {
                json!({
                    "name": p.name,
                    "members": p.members.iter().map(|m| json!({
                        "nic": m.nic,
                        "ip": self.nic(&m.nic).ok().map(|n| n.ip.to_string()),
                        "weight": m.weight.0,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let probes: Vec<Value> = lb
            .probes
            .iter()
            .map(|p| {
                let (protocol, path, status) = match &p.check {
                    ProbeCheck::Tcp => ("Tcp", None, None),
                    ProbeCheck::Http {
                        path,
                        expected_status,
                    } => ("Http", Some(path.clone()), Some(*expected_status)),
                };
                json!({
                    "name": p.name, "protocol": protocol, "port": p.port, "path": path,
                    "expected_status": status, "interval_seconds": p.interval_seconds,
                    "unhealthy_threshold": p.unhealthy_threshold, "passive": p.passive,
                })
            })
            .collect();
        let rules: Vec<Value> = lb
            .rules
            .iter()
            .map(|r| {
                json!({
                    "name": r.name, "protocol": r.protocol.to_string(),
                    "frontend_port": r.frontend_port, "backend_port": r.backend_port,
                    "pool": r.pool, "probe": r.probe, "algorithm": r.algorithm.to_string(),
                    "idle_timeout_seconds": r.idle_timeout_seconds,
                    "proxy_protocol": r.proxy_protocol,
                })
            })
            .collect();
        json!({
            "name": lb.name,
            "type": kind,
            "frontend_ip": self.lb_frontend_ip(lb).map(|a| a.to_string()),
            "public_ip": public_ip,
            "vnet": vnet,
            "subnet": subnet,
            "pools": pools,
            "probes": probes,
            "rules": rules,
        })
    }

    /// Checks that `nic` may join a pool of `lb`: it exists and is in the
    /// VNet of the load balancer's backends.
    fn check_member(&self, lb: &LoadBalancer, spec: &MemberSpec) -> Result<PoolMember, NetError> {
        let owner = lb.name.as_str();
        let nname = parse_ref(Kind::LbPool, owner, "nic", &spec.nic)?;
        let nic = self.nic(&nname)?;
        if let Some(vnet) = self.lb_backend_vnet(lb) {
            if nic.vnet != vnet {
                let why = match lb.frontend {
                    Frontend::Internal { .. } => format!(
                        "the nic is in vnet '{}' but the internal frontend is in vnet '{vnet}'",
                        nic.vnet
                    ),
                    Frontend::Public { .. } => format!(
                        "the nic is in vnet '{}' but the other backends are in vnet '{vnet}' (one VNet per load balancer)",
                        nic.vnet
                    ),
                };
                return Err(NetError::invalid(
                    Kind::LbPool,
                    owner,
                    "nic",
                    &spec.nic,
                    why,
                ));
            }
        }
        let weight = match spec.weight {
            None => Weight::default(),
            Some(w) => Weight::new(w)
                .map_err(|reason| NetError::invalid(Kind::LbPool, owner, "weight", w, reason))?,
        };
        Ok(PoolMember { nic: nname, weight })
    }

    pub(super) fn lb_pool_create(
        &mut self,
        lb: &str,
        name: &str,
        members: &[MemberSpec],
    ) -> Result<Value, NetError> {
        let pname = parse_name(Kind::LbPool, name)?;
        let mut l = self.lb_ref(lb)?.clone();
        if l.pool(&pname).is_some() {
            return Err(NetError::AlreadyExists {
                kind: Kind::LbPool,
                name: format!("{lb}/{name}"),
            });
        }
        l.pools.push(BackendPool {
            name: pname.clone(),
            members: vec![],
        });
        for spec in members {
            let m = self.check_member(&l, spec)?;
            add_member(&mut l, &pname, m)?;
        }
        *self.lb_mut(lb)? = l;
        self.lb_show(lb)
    }

    pub(super) fn lb_pool_add(
        &mut self,
        lb: &str,
        pool: &str,
        spec: &MemberSpec,
    ) -> Result<Value, NetError> {
        let pname = parse_ref(Kind::LbPool, lb, "pool", pool)?;
        let mut l = self.lb_ref(lb)?.clone();
        let m = self.check_member(&l, spec)?;
        add_member(&mut l, &pname, m)?;
        *self.lb_mut(lb)? = l;
        self.lb_show(lb)
    }

    pub(super) fn lb_pool_remove(
        &mut self,
        lb: &str,
        pool: &str,
        nic: &str,
    ) -> Result<Value, NetError> {
        let pname = parse_ref(Kind::LbPool, lb, "pool", pool)?;
        let nname = parse_ref(Kind::LbPool, pool, "nic", nic)?;
        let l = self.lb_mut(lb)?;
        let Some(p) = l.pools.iter_mut().find(|p| p.name == pname) else {
            return Err(NetError::not_found(Kind::LbPool, format!("{lb}/{pool}")));
        };
        let before = p.members.len();
        p.members.retain(|m| m.nic != nname);
        if p.members.len() == before {
            return Err(NetError::invalid(
                Kind::LbPool,
                format!("{lb}/{pool}"),
                "nic",
                nic,
                "not a member of the pool",
            ));
        }
        self.lb_show(lb)
    }

    pub(super) fn lb_pool_delete(&mut self, lb: &str, name: &str) -> Result<Value, NetError> {
        let pname = parse_ref(Kind::LbPool, lb, "name", name)?;
        let l = self.lb_mut(lb)?;
        if l.pool(&pname).is_none() {
            return Err(NetError::not_found(Kind::LbPool, format!("{lb}/{name}")));
        }
        if let Some(r) = l.rules.iter().find(|r| r.pool == pname) {
            return Err(NetError::in_use(
                Kind::LbPool,
                format!("{lb}/{name}"),
                format!("used by rule '{}'", r.name),
            ));
        }
        l.pools.retain(|p| p.name != pname);
        Ok(Value::Null)
    }

    pub(super) fn lb_probe_create(
        &mut self,
        lb: &str,
        spec: &ProbeSpec,
    ) -> Result<Value, NetError> {
        let owner = format!("{lb}/{}", spec.name);
        let name = parse_name(Kind::LbProbe, &spec.name)?;
        let l = self.lb_ref(lb)?;
        if l.probe(&name).is_some() {
            return Err(NetError::AlreadyExists {
                kind: Kind::LbProbe,
                name: owner,
            });
        }
        let invalid = |field: &str, value: &dyn std::fmt::Display, reason: &str| -> NetError {
            NetError::invalid(Kind::LbProbe, &owner, field, value, reason)
        };
        let check = match spec.protocol.to_ascii_lowercase().as_str() {
            "tcp" => {
                if let Some(p) = &spec.path {
                    return Err(invalid("path", p, "a TCP probe has no path"));
                }
                ProbeCheck::Tcp
            }
            "http" => {
                let path = spec.path.clone().unwrap_or_else(|| "/".into());
                if !path.starts_with('/')
                    || path.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(invalid(
                        "path",
                        &path,
                        "an HTTP path starts with '/' and has no spaces or control characters",
                    ));
                }
                let status = spec.expected_status.unwrap_or(200);
                let expected_status = u16::try_from(status)
                    .ok()
                    .filter(|s| (100..=599).contains(s))
                    .ok_or_else(|| {
                        invalid("expected_status", &status, "an HTTP status is 100-599")
                    })?;
                ProbeCheck::Http {
                    path,
                    expected_status,
                }
            }
            other => return Err(invalid("protocol", &other, "expected Tcp or Http")),
        };
        let interval = spec.interval_seconds.unwrap_or(DEFAULT_PROBE_INTERVAL);
        if !Probe::INTERVAL.contains(&interval) {
            return Err(invalid(
                "interval_seconds",
                &interval,
                "the interval is 1 s or more",
            ));
        }
        let threshold = spec.unhealthy_threshold.unwrap_or(DEFAULT_PROBE_THRESHOLD);
        if !Probe::THRESHOLD.contains(&threshold) {
            return Err(invalid(
                "unhealthy_threshold",
                &threshold,
                "the threshold is 1-100",
            ));
        }
        let probe = Probe {
            name,
            check,
            port: port(Kind::LbProbe, &owner, "port", spec.port)?,
            interval_seconds: interval,
            unhealthy_threshold: threshold,
            passive: spec.passive.unwrap_or(true),
        };
        self.lb_mut(lb)?.probes.push(probe);
        self.lb_show(lb)
    }

    pub(super) fn lb_probe_delete(&mut self, lb: &str, name: &str) -> Result<Value, NetError> {
        let pname = parse_ref(Kind::LbProbe, lb, "name", name)?;
        let l = self.lb_mut(lb)?;
        if l.probe(&pname).is_none() {
            return Err(NetError::not_found(Kind::LbProbe, format!("{lb}/{name}")));
        }
        if let Some(r) = l.rules.iter().find(|r| r.probe.as_ref() == Some(&pname)) {
            return Err(NetError::in_use(
                Kind::LbProbe,
                format!("{lb}/{name}"),
                format!("used by rule '{}'", r.name),
            ));
        }
        l.probes.retain(|p| p.name != pname);
        Ok(Value::Null)
    }

    pub(super) fn lb_rule_create(
        &mut self,
        lb: &str,
        spec: &LbRuleSpec,
    ) -> Result<Value, NetError> {
        let owner = format!("{lb}/{}", spec.name);
        let name = parse_name(Kind::LbRule, &spec.name)?;
        let l = self.lb_ref(lb)?;
        if l.rules.iter().any(|r| r.name == name) {
            return Err(NetError::AlreadyExists {
                kind: Kind::LbRule,
                name: owner,
            });
        }
        let protocol: LbProtocol = parse_field(Kind::LbRule, &owner, "protocol", &spec.protocol)?;
        let frontend_port = port(Kind::LbRule, &owner, "frontend_port", spec.frontend_port)?;
        let backend_port = match spec.backend_port {
            Some(p) => port(Kind::LbRule, &owner, "backend_port", p)?,
            None => frontend_port,
        };
        if let Some(other) = l
            .rules
            .iter()
            .find(|r| r.protocol == protocol && r.frontend_port == frontend_port)
        {
            return Err(NetError::invalid(
                Kind::LbRule,
                &owner,
                "frontend_port",
                frontend_port,
                format!(
                    "{protocol} port {frontend_port} of the frontend is already used by rule '{}'",
                    other.name
                ),
            ));
        }
        let pool = parse_ref(Kind::LbRule, &owner, "pool", &spec.pool)?;
        if l.pool(&pool).is_none() {
            return Err(NetError::invalid(
                Kind::LbRule,
                &owner,
                "pool",
                &pool,
                format!("load balancer '{lb}' has no backend pool '{pool}'"),
            ));
        }
        let probe = match &spec.probe {
            None => None,
            Some(p) => {
                let pname = parse_ref(Kind::LbRule, &owner, "probe", p)?;
                if l.probe(&pname).is_none() {
                    return Err(NetError::invalid(
                        Kind::LbRule,
                        &owner,
                        "probe",
                        p,
                        format!("load balancer '{lb}' has no probe '{p}'"),
                    ));
                }
                Some(pname)
            }
        };
        let idle_timeout_seconds = match (spec.idle_timeout_seconds, spec.idle_timeout_minutes) {
            (Some(s), _) if s == 0 || s > 6000 => {
                return Err(NetError::invalid(
                    Kind::LbRule,
                    &owner,
                    "idle_timeout_seconds",
                    s,
                    "the idle timeout is 1-6000 seconds",
                ))
            }
            (Some(s), _) => s,
            (None, Some(m)) if !LbRule::IDLE_MINUTES.contains(&m) => {
                return Err(NetError::invalid(
                    Kind::LbRule,
                    &owner,
                    "idle_timeout_minutes",
                    m,
                    "Azure's idle timeout is 4-100 minutes",
                ))
            }
            (None, m) => m.unwrap_or(LbRule::DEFAULT_IDLE_MINUTES) * 60,
        };
        let algorithm: Algorithm = match &spec.algorithm {
            Some(a) => parse_field(Kind::LbRule, &owner, "algorithm", a)?,
            None => Algorithm::default(),
        };
        let rule = LbRule {
            name,
            protocol,
            frontend_port,
            backend_port,
            pool,
            probe,
            idle_timeout_seconds,
            algorithm,
            proxy_protocol: spec.proxy_protocol,
        };
        self.lb_mut(lb)?.rules.push(rule);
        self.lb_show(lb)
    }

    pub(super) fn lb_rule_delete(&mut self, lb: &str, name: &str) -> Result<Value, NetError> {
        let rname = parse_ref(Kind::LbRule, lb, "name", name)?;
        let l = self.lb_mut(lb)?;
        if !l.rules.iter().any(|r| r.name == rname) {
            return Err(NetError::not_found(Kind::LbRule, format!("{lb}/{name}")));
        }
        l.rules.retain(|r| r.name != rname);
        Ok(Value::Null)
    }

    /// Removes a deleted NIC from every pool (its connections drain).
    pub(super) fn lb_forget_nic(&mut self, nic: &Name) {
        for l in &mut self.load_balancers {
            for p in &mut l.pools {
                p.members.retain(|m| &m.nic != nic);
            }
        }
    }
}

fn add_member(lb: &mut LoadBalancer, pool: &Name, m: PoolMember) -> Result<(), NetError> {
    let owner = format!("{}/{pool}", lb.name);
    let Some(p) = lb.pools.iter_mut().find(|p| &p.name == pool) else {
        return Err(NetError::not_found(Kind::LbPool, owner));
    };
    if p.members.iter().any(|x| x.nic == m.nic) {
        return Err(NetError::invalid(
            Kind::LbPool,
            owner,
            "nic",
            &m.nic,
            "already a member of the pool",
        ));
    }
    p.members.push(m);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::protocol::Request;
    use crate::state::test_support::*;

    fn lb_world() -> State {
        let mut st = world();
        apply(&mut st, nic("a", None));
        apply(&mut st, nic("b", None));
        apply(
            &mut st,
            Request::LbCreate {
                name: "ilb".into(),
                public_ip: None,
                vnet: Some("v".into()),
                subnet: Some("s".into()),
                private_ip: Some("10.0.1.100".into()),
            },
        );
        apply(
            &mut st,
            Request::LbPoolCreate {
                lb: "ilb".into(),
                name: "web".into(),
                members: vec![
                    MemberSpec {
                        nic: "a".into(),
                        weight: Some(3),
                    },
                    MemberSpec {
                        nic: "b".into(),
                        weight: None,
                    },
                ],
            },
        );
        apply(
            &mut st,
            Request::LbProbeCreate {
                lb: "ilb".into(),
                probe: ProbeSpec {
                    name: "http".into(),
                    protocol: "Http".into(),
                    port: 80,
                    path: Some("/health".into()),
                    ..ProbeSpec::default()
                },
            },
        );
        st
    }

    fn rule(name: &str, port: u32) -> LbRuleSpec {
        LbRuleSpec {
            name: name.into(),
            protocol: "Tcp".into(),
            frontend_port: port,
            pool: "web".into(),
            probe: Some("http".into()),
            ..LbRuleSpec::default()
        }
    }

    fn refused(st: &State, r: Request) -> NetError {
        let mut copy = st.clone();
        copy.apply(&r).expect_err("must be refused")
    }

    #[test]
    fn a_complete_internal_load_balancer() {
        let mut st = lb_world();
        let v = apply(
            &mut st,
            Request::LbRuleCreate {
                lb: "ilb".into(),
                rule: rule("http", 80),
            },
        );
        assert_eq!(v["frontend_ip"], "10.0.1.100");
        assert_eq!(v["rules"][0]["algorithm"], "FiveTuple");
        assert_eq!(v["rules"][0]["idle_timeout_seconds"], 240);
        assert_eq!(v["rules"][0]["backend_port"], 80);
        assert_eq!(v["pools"][0]["members"][0]["weight"], 3);
        // The frontend address is taken from the subnet: no NIC gets it.
        let e = refused(&st, nic("c", Some("10.0.1.100")));
        assert!(e.to_string().contains("lb 'ilb'"), "{e}");
        // Persisted with the rest of the state.
        let text = serde_json::to_string(&st).unwrap();
        let back: State = serde_json::from_str(&text).unwrap();
        assert_eq!(back, st);
    }

    #[test]
    fn rules_must_point_at_existing_pools_and_probes() {
        let st = lb_world();
        let mut r = rule("x", 80);
        r.pool = "nope".into();
        let e = refused(
            &st,
            Request::LbRuleCreate {
                lb: "ilb".into(),
                rule: r,
            },
        );
        assert!(e.to_string().contains("no backend pool 'nope'"), "{e}");
        let mut r = rule("x", 80);
        r.probe = Some("nope".into());
        let e = refused(
            &st,
            Request::LbRuleCreate {
                lb: "ilb".into(),
                rule: r,
            },
        );
        assert!(e.to_string().contains("no probe 'nope'"), "{e}");
    }

    #[test]
    fn a_frontend_port_is_used_once_per_protocol() {
        let mut st = lb_world();
        apply(
            &mut st,
            Request::LbRuleCreate {
                lb: "ilb".into(),
                rule: rule("a", 80),
            },
        );
        let e = refused(
            &st,
            Request::LbRuleCreate {
                lb: "ilb".into(),
                rule: rule("b", 80),
            },
        );
        assert!(e.to_string().contains("already used by rule 'a'"), "{e}");
        let mut udp = rule("c", 80);
        udp.protocol = "Udp".into();
        udp.probe = None;
        apply(
            &mut st,
            Request::LbRuleCreate {
                lb: "ilb".into(),
                rule: udp,
            },
        );
    }

    #[test]
    fn backends_must_share_the_internal_frontends_vnet() {
        let mut st = lb_world();
        apply(
            &mut st,
            Request::VnetCreate {
                name: "w".into(),
                address_space: vec!["10.9.0.0/16".into()],
            },
        );
        apply(
            &mut st,
            Request::SubnetCreate {
                vnet: "w".into(),
                name: "s".into(),
                cidr: "10.9.1.0/24".into(),
                nsg: None,
            },
        );
        let mut other = nic("far", None);
        if let Request::NicCreate { vnet, .. } = &mut other {
            *vnet = "w".into();
        }
        apply(&mut st, other);
        let e = refused(
            &st,
            Request::LbPoolAdd {
                lb: "ilb".into(),
                pool: "web".into(),
                member: MemberSpec {
                    nic: "far".into(),
                    weight: None,
                },
            },
        );
        assert!(
            e.to_string().contains("internal frontend is in vnet 'v'"),
            "{e}"
        );
    }

    #[test]
    fn weights_out_of_range_are_refused_and_nothing_is_applied() {
        let st = lb_world();
        for w in [0, 101] {
            let e = refused(
                &st,
                Request::LbPoolCreate {
                    lb: "ilb".into(),
                    name: "p2".into(),
                    members: vec![
                        MemberSpec {
                            nic: "a".into(),
                            weight: Some(5),
                        },
                        MemberSpec {
                            nic: "b".into(),
                            weight: Some(w),
                        },
                    ],
                },
            );
            assert!(e.to_string().contains("weight"), "{e}");
        }
        // The daemon applies on a copy; check the copy semantics hold here
        // too: a refused pool leaves no half-made pool behind.
        let mut copy = st.clone();
        let _ = copy.apply(&Request::LbPoolCreate {
            lb: "ilb".into(),
            name: "p2".into(),
            members: vec![MemberSpec {
                nic: "a".into(),
                weight: Some(500),
            }],
        });
        assert_eq!(copy, st);
    }

    #[test]
    fn references_block_deletion_and_nic_delete_leaves_the_pool() {
        let mut st = lb_world();
        apply(
            &mut st,
            Request::LbRuleCreate {
                lb: "ilb".into(),
                rule: rule("a", 80),
            },
        );
        let e = refused(
            &st,
            Request::LbPoolDelete {
                lb: "ilb".into(),
                name: "web".into(),
            },
        );
        assert!(matches!(e, NetError::InUse { .. }), "{e}");
        let e = refused(
            &st,
            Request::LbProbeDelete {
                lb: "ilb".into(),
                name: "http".into(),
            },
        );
        assert!(matches!(e, NetError::InUse { .. }), "{e}");
        apply(&mut st, Request::NicDelete { name: "a".into() });
        let v = apply(&mut st, Request::LbShow { name: "ilb".into() });
        assert_eq!(v["pools"][0]["members"].as_array().map(Vec::len), Some(1));
        apply(&mut st, Request::NicDelete { name: "b".into() });
        let e = refused(
            &st,
            Request::SubnetDelete {
                vnet: "v".into(),
                name: "s".into(),
            },
        );
        assert!(e.to_string().contains("ilb"), "{e}");
        let e = refused(
            &st,
            Request::VnetDelete {
                name: "v".into(),
                force: true,
            },
        );
        assert!(e.to_string().contains("ilb"), "{e}");
    }

    #[test]
    fn public_frontends_take_the_public_ip() {
        let mut st = world();
        apply(
            &mut st,
            Request::PublicIpCreate {
                name: "pip".into(),
                allocation: "dynamic".into(),
                address: None,
            },
        );
        let v = apply(
            &mut st,
            Request::LbCreate {
                name: "plb".into(),
                public_ip: Some("pip".into()),
                vnet: None,
                subnet: None,
                private_ip: None,
            },
        );
        assert_eq!(v["frontend_ip"], "203.0.113.2");
        let e = refused(&st, Request::PublicIpDelete { name: "pip".into() });
        assert!(matches!(e, NetError::InUse { .. }), "{e}");
        let mut n = nic("n", None);
        if let Request::NicCreate { public_ip, .. } = &mut n {
            *public_ip = Some("pip".into());
        }
        let e = refused(&st, n);
        assert!(e.to_string().contains("plb"), "{e}");
        apply(&mut st, Request::LbDelete { name: "plb".into() });
        assert_eq!(st.public_ips[0].address, None, "dynamic address released");
        let e = refused(
            &st,
            Request::LbCreate {
                name: "x".into(),
                public_ip: None,
                vnet: None,
                subnet: None,
                private_ip: None,
            },
        );
        assert!(e.to_string().contains("frontend"), "{e}");
    }

    #[test]
    fn probe_and_rule_fields_are_checked() {
        let st = lb_world();
        let bad_probes = [
            ProbeSpec {
                name: "p".into(),
                protocol: "Icmp".into(),
                port: 80,
                ..ProbeSpec::default()
            },
            ProbeSpec {
                name: "p".into(),
                protocol: "Tcp".into(),
                port: 0,
                ..ProbeSpec::default()
            },
            ProbeSpec {
                name: "p".into(),
                protocol: "Http".into(),
                port: 80,
                path: Some("health".into()),
                ..ProbeSpec::default()
            },
            ProbeSpec {
                name: "p".into(),
                protocol: "Http".into(),
                port: 80,
                expected_status: Some(700),
                ..ProbeSpec::default()
            },
            ProbeSpec {
                name: "p".into(),
                protocol: "Tcp".into(),
                port: 80,
                interval_seconds: Some(0),
                ..ProbeSpec::default()
            },
        ];
        for p in bad_probes {
            let e = refused(
                &st,
                Request::LbProbeCreate {
                    lb: "ilb".into(),
                    probe: p.clone(),
                },
            );
            assert!(matches!(e, NetError::Invalid { .. }), "{p:?}: {e}");
        }
        let mut r = rule("r", 80);
        r.idle_timeout_minutes = Some(3);
        assert!(refused(
            &st,
            Request::LbRuleCreate {
                lb: "ilb".into(),
                rule: r
            }
        )
        .to_string()
        .contains("4-100 minutes"));
        let mut r = rule("r", 70000);
        r.algorithm = None;
        assert!(refused(
            &st,
            Request::LbRuleCreate {
                lb: "ilb".into(),
                rule: r
            }
        )
        .to_string()
        .contains("1-65535"));
        let mut r = rule("r", 80);
        r.algorithm = Some("Random".into());
        assert!(refused(
            &st,
            Request::LbRuleCreate {
                lb: "ilb".into(),
                rule: r
            }
        )
        .to_string()
        .contains("algorithm"));
    }

    #[test]
    fn udp_rules_may_carry_the_proxy_header() {
        let mut st = lb_world();
        let mut r = rule("dns", 53);
        r.protocol = "Udp".into();
        r.probe = None;
        r.proxy_protocol = true;
        let v = apply(
            &mut st,
            Request::LbRuleCreate {
                lb: "ilb".into(),
                rule: r,
            },
        );
        assert_eq!(v["rules"][0]["protocol"], "Udp");
        assert_eq!(v["rules"][0]["proxy_protocol"], true);
    }
}

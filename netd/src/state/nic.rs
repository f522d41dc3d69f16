//! NICs and address management (IPAM).

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::{parse_name, parse_ref, State};
use crate::api::protocol::Request;
use crate::error::{parse_field, Kind, NetError};
use crate::model::{Allocation, MacAddr, Name, Nic, NicBackend, Subnet};

impl State {
    pub(super) fn nic_create(&mut self, r: &Request) -> Result<Value, NetError> {
        let Request::NicCreate {
            name,
            vnet,
            subnet,
            ip,
            mac,
            nsg,
            asgs,
            public_ip,
            tap_owner,
            attach_netns,
        } = r
        else {
            return Err(NetError::BadRequest {
                reason: "not a nic_create".into(),
            });
        };
        let nname = parse_name(Kind::Nic, name)?;
        if self.nic(&nname).is_ok() {
            return Err(NetError::AlreadyExists {
                kind: Kind::Nic,
                name: name.clone(),
            });
        }
        let vname = parse_ref(Kind::Nic, name, "vnet", vnet)?;
        let sname = parse_ref(Kind::Nic, name, "subnet", subnet)?;
        let sub = self.subnet(&vname, &sname)?.clone();
        let address = match ip {
            Some(text) => {
                let a: Ipv4Addr = text.parse().map_err(|_| {
                    NetError::invalid(Kind::Nic, name, "ip", text, "not an IPv4 address")
                })?;
                self.check_static_ip(name, &sub, a)?;
                a
            }
            None => self.next_free(name, &sub)?,
        };
        let mac = match mac {
            Some(text) => {
                let m: MacAddr = parse_field(Kind::Nic, name, "mac", text)?;
                if let Some(other) = self.nics.iter().find(|n| n.mac == m) {
                    return Err(NetError::invalid(
                        Kind::Nic,
                        name,
                        "mac",
                        text,
                        format!("already used by nic '{}'", other.name),
                    ));
                }
                m
            }
            None => MacAddr::generated(self.next_serial),
        };
        let nsg = self.nsg_ref(Kind::Nic, name, nsg.as_deref())?;
        let asgs = self.asg_refs(name, asgs)?;
        let backend = match attach_netns {
            Some(ns) => {
                if ns.is_empty() || ns.contains('/') || ns.starts_with('.') {
                    return Err(NetError::invalid(
                        Kind::Nic,
                        name,
                        "attach_netns",
                        ns,
                        "not a network namespace name",
                    ));
                }
                NicBackend::Veth { netns: ns.clone() }
            }
            None => NicBackend::Tap { owner: *tap_owner },
        };
        let id = self.serial();
        self.record_ip(&vname, &sname, address)?;
        self.nics.push(Nic {
            name: nname.clone(),
            id,
            vnet: vname,
            subnet: sname,
            mac,
            ip: address,
            nsg,
            asgs,
            public_ip: None,
            backend,
        });
        if let Some(pip) = public_ip {
            self.attach_public_ip(&nname, pip)?;
        }
        self.nic_show(name)
    }

    pub(super) fn nic_update(&mut self, r: &Request) -> Result<Value, NetError> {
        let Request::NicUpdate {
            name,
            nsg,
            clear_nsg,
            asgs,
            public_ip,
            clear_public_ip,
        } = r
        else {
            return Err(NetError::BadRequest {
                reason: "not a nic_update".into(),
            });
        };
        let nname = parse_name(Kind::Nic, name)?;
        self.nic(&nname)?;
        let new_nsg = self.nsg_ref(Kind::Nic, name, nsg.as_deref())?;
        let new_asgs = match asgs {
            Some(list) => Some(self.asg_refs(name, list)?),
            None => None,
        };
        if *clear_public_ip || public_ip.is_some() {
            self.detach_public_ip(&nname);
        }
        if let Some(pip) = public_ip {
            self.attach_public_ip(&nname, pip)?;
        }
        let nic = self
            .nics
            .iter_mut()
            .find(|n| n.name == nname)
            .ok_or_else(|| NetError::not_found(Kind::Nic, name))?;
        if *clear_nsg {
            nic.nsg = None;
        }
        if new_nsg.is_some() {
            nic.nsg = new_nsg;
        }
        if let Some(list) = new_asgs {
            nic.asgs = list;
        }
        self.nic_show(name)
    }

    pub(super) fn nic_delete(&mut self, name: &str) -> Result<Value, NetError> {
        let nname = parse_name(Kind::Nic, name)?;
        self.nic(&nname)?;
        self.detach_public_ip(&nname);
        self.lb_forget_nic(&nname);
        self.nics.retain(|n| n.name != nname);
        Ok(Value::Null)
    }

    pub(super) fn nic_show(&self, name: &str) -> Result<Value, NetError> {
        let nname = parse_name(Kind::Nic, name)?;
        Ok(self.nic_view(self.nic(&nname)?))
    }

    pub(super) fn nic_view(&self, n: &Nic) -> Value {
        let public = n
            .public_ip
            .as_ref()
            .and_then(|p| self.public_ip(p).ok())
            .and_then(|p| p.address);
        let (kind, netns, owner) = match &n.backend {
            NicBackend::Tap { owner } => ("tap", None, *owner),
            NicBackend::Veth { netns } => ("veth", Some(netns.clone()), None),
        };
        json!({
            "name": n.name,
            "vnet": n.vnet,
            "subnet": n.subnet,
            "mac": n.mac,
            "ip": n.ip.to_string(),
            "gateway": self.subnet(&n.vnet, &n.subnet).map(|s| s.gateway().to_string()).ok(),
            "nsg": n.nsg,
            "asgs": n.asgs,
            "public_ip": n.public_ip,
            "public_address": public.map(|a| a.to_string()),
            "host_interface": n.id.port_name(),
            "kind": kind,
            "netns": netns,
            "tap_owner": owner,
        })
    }

    pub(super) fn check_static_ip(
        &self,
        name: &str,
        sub: &Subnet,
        a: Ipv4Addr,
    ) -> Result<(), NetError> {
        if !sub.cidr.contains(a) {
            return Err(NetError::invalid(
                Kind::Nic,
                name,
                "ip",
                a,
                format!("not inside subnet '{}' ({})", sub.name, sub.cidr),
            ));
        }
        if !sub.is_assignable(a) {
            return Err(NetError::invalid(
                Kind::Nic,
                name,
                "ip",
                a,
                format!(
                    "reserved by Azure's rules (the first four addresses and the last of {})",
                    sub.cidr
                ),
            ));
        }
        if let Some(other) = self.nics.iter().find(|n| n.ip == a) {
            return Err(NetError::invalid(
                Kind::Nic,
                name,
                "ip",
                a,
                format!("already used by nic '{}'", other.name),
            ));
        }
        if let Some(lb) = self.lb_holding_ip(a) {
            return Err(NetError::invalid(
                Kind::Nic,
                name,
                "ip",
                a,
                format!("already used by the frontend of lb '{}'", lb.name),
            ));
        }
        Ok(())
    }

    pub(super) fn next_free(&self, name: &str, sub: &Subnet) -> Result<Ipv4Addr, NetError> {
        let last_index = sub.cidr.size() - 2;
        let mut index = sub.ipam.next_index.max(Subnet::RESERVED_LOW);
        while index <= last_index {
            if let Some(a) = sub.cidr.nth(index) {
                let taken = self.nics.iter().any(|n| n.ip == a)
                    || self.lb_holding_ip(a).is_some()
                    || sub.ipam.static_above.contains(&index);
                if !taken {
                    return Ok(a);
                }
            }
            index += 1;
        }
        Err(NetError::invalid(
            Kind::Nic,
            name,
            "ip",
            "(dynamic)",
            format!(
                "subnet '{}' ({}) has no address left that was never handed out",
                sub.name, sub.cidr
            ),
        ))
    }

    /// Records that `a` was handed out so it is never handed out again.
    pub(super) fn record_ip(
        &mut self,
        vnet: &Name,
        subnet: &Name,
        a: Ipv4Addr,
    ) -> Result<(), NetError> {
        let v = self.vnet_mut(vnet)?;
        let Some(sub) = v.subnets.iter_mut().find(|s| &s.name == subnet) else {
            return Err(NetError::not_found(Kind::Subnet, subnet));
        };
        let index = u64::from(u32::from(a) - sub.cidr.first());
        if index >= sub.ipam.next_index {
            if index == sub.ipam.next_index {
                sub.ipam.next_index = index + 1;
                while sub.ipam.static_above.contains(&sub.ipam.next_index) {
                    sub.ipam.next_index += 1;
                }
                let next = sub.ipam.next_index;
                sub.ipam.static_above.retain(|i| *i >= next);
            } else {
                sub.ipam.static_above.push(index);
            }
        }
        Ok(())
    }

    fn attach_public_ip(&mut self, nic: &Name, pip: &str) -> Result<(), NetError> {
        let pname = parse_ref(Kind::Nic, nic.as_str(), "public_ip", pip)?;
        let p = self.public_ip(&pname)?.clone();
        if let Some(other) = self
            .nics
            .iter()
            .find(|n| n.public_ip.as_ref() == Some(&pname) && &n.name != nic)
        {
            return Err(NetError::in_use(
                Kind::PublicIp,
                pip,
                format!("attached to nic '{}'", other.name),
            ));
        }
        if let Some(lb) = self.lb_using_public_ip(&pname) {
            return Err(NetError::in_use(
                Kind::PublicIp,
                pip,
                format!("frontend of lb '{}'", lb.name),
            ));
        }
        if p.allocation == Allocation::Dynamic && p.address.is_none() {
            let a = self.free_public_address(Kind::PublicIp, pip)?;
            if let Some(slot) = self.public_ips.iter_mut().find(|x| x.name == pname) {
                slot.address = Some(a);
            }
        }
        if let Some(n) = self.nics.iter_mut().find(|n| &n.name == nic) {
            n.public_ip = Some(pname);
        }
        Ok(())
    }

    fn detach_public_ip(&mut self, nic: &Name) {
        let Some(n) = self.nics.iter_mut().find(|n| &n.name == nic) else {
            return;
        };
        let Some(pname) = n.public_ip.take() else {
            return;
        };
        if let Some(p) = self.public_ips.iter_mut().find(|p| p.name == pname) {
            if p.allocation == Allocation::Dynamic {
                p.address = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::api::protocol::Request;
    use crate::state::test_support::*;

    fn ip_of(v: &serde_json::Value) -> String {
        v["ip"].as_str().unwrap().to_string()
    }

    #[test]
    fn dynamic_addresses_start_after_reserved_and_are_never_reused() {
        let mut st = world();
        assert_eq!(ip_of(&apply(&mut st, nic("a", None))), "10.0.1.4");
        assert_eq!(ip_of(&apply(&mut st, nic("b", None))), "10.0.1.5");
        apply(&mut st, Request::NicDelete { name: "a".into() });
        assert_eq!(ip_of(&apply(&mut st, nic("c", None))), "10.0.1.6");
        // The high-water mark survives a save/load round trip.
        let text = serde_json::to_string(&st).unwrap();
        let mut back: crate::state::State = serde_json::from_str(&text).unwrap();
        assert_eq!(ip_of(&apply(&mut back, nic("d", None))), "10.0.1.7");
    }

    #[test]
    fn static_addresses_are_checked_and_skipped_by_dynamic() {
        let mut st = world();
        for (ip, what) in [
            ("10.0.1.1", "reserved"),
            ("10.0.1.3", "reserved"),
            ("10.0.1.255", "reserved"),
            ("10.0.2.9", "not inside"),
            ("x", "not an IPv4"),
        ] {
            let err = st.apply(&nic("a", Some(ip))).unwrap_err().to_string();
            assert!(
                err.contains(what) && err.contains("nic 'a'") && err.contains("ip"),
                "{ip}: {err}"
            );
        }
        apply(&mut st, nic("a", Some("10.0.1.5")));
        let err = st.apply(&nic("b", Some("10.0.1.5"))).unwrap_err();
        assert!(err.to_string().contains("already used by nic 'a'"), "{err}");
        assert_eq!(ip_of(&apply(&mut st, nic("b", None))), "10.0.1.4");
        assert_eq!(ip_of(&apply(&mut st, nic("c", None))), "10.0.1.6");
        apply(&mut st, Request::NicDelete { name: "a".into() });
        assert_eq!(ip_of(&apply(&mut st, nic("d", None))), "10.0.1.7");
    }

    #[test]
    fn subnet_runs_out_instead_of_reusing() {
        let mut st = world();
        apply(
            &mut st,
            Request::SubnetCreate {
                vnet: "v".into(),
                name: "t".into(),
                cidr: "10.0.9.0/29".into(),
                nsg: None,
            },
        );
        let mk = |name: &str| Request::NicCreate {
            name: name.into(),
            vnet: "v".into(),
            subnet: "t".into(),
            ip: None,
            mac: None,
            nsg: None,
            asgs: vec![],
            public_ip: None,
            tap_owner: None,
            attach_netns: None,
        };
        // A /29 has 8 addresses, 5 reserved: .4, .5, .6.
        for n in ["a", "b", "c"] {
            apply(&mut st, mk(n));
        }
        apply(&mut st, Request::NicDelete { name: "a".into() });
        let err = st.apply(&mk("d")).unwrap_err();
        assert!(err.to_string().contains("never handed out"), "{err}");
    }

    #[test]
    fn unknown_references_are_named() {
        let mut st = world();
        let mut r = nic("a", None);
        if let Request::NicCreate { nsg, .. } = &mut r {
            *nsg = Some("nope".into());
        }
        assert_eq!(
            st.apply(&r).unwrap_err().to_string(),
            "nsg 'nope' not found"
        );
        let mut r = nic("a", None);
        if let Request::NicCreate { subnet, .. } = &mut r {
            *subnet = "zz".into();
        }
        assert_eq!(
            st.apply(&r).unwrap_err().to_string(),
            "subnet 'v/zz' not found"
        );
    }
}

//! VNets and subnets: address-space rules.

use serde_json::{json, Value};

use super::{parse_name, parse_ref, State};
use crate::error::{parse_field, Kind, NetError};
use crate::model::{Cidr, Ipam, Name, Subnet, VNet};

impl State {
    pub(super) fn vnet_create(&mut self, name: &str, space: &[String]) -> Result<Value, NetError> {
        let vname = parse_name(Kind::VNet, name)?;
        if self.vnet(&vname).is_ok() {
            return Err(NetError::AlreadyExists {
                kind: Kind::VNet,
                name: name.into(),
            });
        }
        if space.is_empty() {
            return Err(NetError::invalid(
                Kind::VNet,
                name,
                "address_space",
                "",
                "at least one prefix is needed",
            ));
        }
        let mut prefixes: Vec<Cidr> = Vec::new();
        for text in space {
            let cidr: Cidr = parse_field(Kind::VNet, name, "address_space", text)?;
            if cidr.prefix_len() < 8 || cidr.prefix_len() > 29 {
                return Err(NetError::invalid(
                    Kind::VNet,
                    name,
                    "address_space",
                    text,
                    "prefix length must be between /8 and /29",
                ));
            }
            if let Some(other) = prefixes.iter().find(|p| p.overlaps(&cidr)) {
                return Err(NetError::invalid(
                    Kind::VNet,
                    name,
                    "address_space",
                    text,
                    format!("overlaps {other} of the same address space"),
                ));
            }
            prefixes.push(cidr);
        }
        // VNets are isolated bridges, but the host routes between them, so
        // their spaces must not overlap (Azure refuses it for peering too).
        for v in &self.vnets {
            for theirs in &v.address_space {
                if let Some(mine) = prefixes.iter().find(|p| p.overlaps(theirs)) {
                    return Err(NetError::invalid(
                        Kind::VNet,
                        name,
                        "address_space",
                        mine,
                        format!("overlaps {theirs} of vnet '{}'", v.name),
                    ));
                }
            }
        }
        let id = self.serial();
        self.vnets.push(VNet {
            name: vname,
            id,
            address_space: prefixes,
            subnets: vec![],
        });
        Ok(self.vnet_view(self.vnets.len() - 1))
    }

    pub(super) fn vnet_delete(&mut self, name: &str, force: bool) -> Result<Value, NetError> {
        let vname = parse_name(Kind::VNet, name)?;
        self.vnet(&vname)?;
        let lbs = self.lbs_in(&vname, None);
        if !lbs.is_empty() {
            return Err(NetError::in_use(
                Kind::VNet,
                name,
                format!(
                    "internal load balancers have their frontend in it ({})",
                    join(&lbs)
                ),
            ));
        }
        let nics: Vec<Name> = self.nics_in_vnet(&vname).map(|n| n.name.clone()).collect();
        if !nics.is_empty() && !force {
            return Err(NetError::in_use(
                Kind::VNet,
                name,
                format!(
                    "it has NICs ({}); use --force to delete them too",
                    join(&nics)
                ),
            ));
        }
        for nic in nics {
            self.nic_delete(nic.as_str())?;
        }
        self.vnets.retain(|v| v.name != vname);
        Ok(Value::Null)
    }

    pub(super) fn vnet_view(&self, index: usize) -> Value {
        let v = &self.vnets[index];
        json!({
            "name": v.name,
            "address_space": v.address_space,
            "bridge": v.id.bridge_name(),
            "subnets": v.subnets.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
            "nics": self.nics_in_vnet(&v.name).count(),
        })
    }

    pub(super) fn vnet_show(&self, name: &str) -> Result<Value, NetError> {
        let vname = parse_name(Kind::VNet, name)?;
        let index = self
            .vnets
            .iter()
            .position(|v| v.name == vname)
            .ok_or_else(|| NetError::not_found(Kind::VNet, name))?;
        Ok(self.vnet_view(index))
    }

    /// Checks `cidr` as subnet `name` of VNet `vnet`, ignoring subnet `skip`.
    fn check_subnet_cidr(&self, vnet: &VNet, name: &str, text: &str) -> Result<Cidr, NetError> {
        let owner = format!("{}/{name}", vnet.name);
        let cidr: Cidr = parse_field(Kind::Subnet, &owner, "cidr", text)?;
        if cidr.prefix_len() > 29 {
            return Err(NetError::invalid(
                Kind::Subnet,
                &owner,
                "cidr",
                text,
                "the smallest subnet is /29 (Azure reserves 5 addresses)",
            ));
        }
        if !vnet.address_space.iter().any(|p| p.covers(&cidr)) {
            let space: Vec<String> = vnet.address_space.iter().map(|c| c.to_string()).collect();
            return Err(NetError::invalid(
                Kind::Subnet,
                &owner,
                "cidr",
                text,
                format!(
                    "not inside the address space of vnet '{}' ({})",
                    vnet.name,
                    space.join(", ")
                ),
            ));
        }
        if let Some(other) = vnet
            .subnets
            .iter()
            .find(|s| s.name.as_str() != name && s.cidr.overlaps(&cidr))
        {
            return Err(NetError::invalid(
                Kind::Subnet,
                &owner,
                "cidr",
                text,
                format!("overlaps subnet '{}' ({})", other.name, other.cidr),
            ));
        }
        Ok(cidr)
    }

    pub(super) fn subnet_create(
        &mut self,
        vnet: &str,
        name: &str,
        cidr: &str,
        nsg: Option<&str>,
    ) -> Result<Value, NetError> {
        let vname = parse_ref(Kind::Subnet, name, "vnet", vnet)?;
        let sname = parse_name(Kind::Subnet, name)?;
        let v = self.vnet(&vname)?;
        if v.subnet(&sname).is_some() {
            return Err(NetError::AlreadyExists {
                kind: Kind::Subnet,
                name: format!("{vnet}/{name}"),
            });
        }
        let cidr = self.check_subnet_cidr(v, name, cidr)?;
        let nsg = self.nsg_ref(Kind::Subnet, name, nsg)?;
        let subnet = Subnet {
            name: sname,
            cidr,
            nsg,
            ipam: Ipam {
                next_index: Subnet::RESERVED_LOW,
                static_above: vec![],
            },
        };
        let view = subnet_view(&vname, &subnet);
        self.vnet_mut(&vname)?.subnets.push(subnet);
        Ok(view)
    }

    pub(super) fn subnet_update(
        &mut self,
        vnet: &str,
        name: &str,
        cidr: Option<&str>,
        nsg: Option<&str>,
        clear_nsg: bool,
    ) -> Result<Value, NetError> {
        let vname = parse_ref(Kind::Subnet, name, "vnet", vnet)?;
        let sname = parse_name(Kind::Subnet, name)?;
        let v = self.vnet(&vname)?;
        let old = self.subnet(&vname, &sname)?.clone();
        let mut new = old.clone();
        if let Some(text) = cidr {
            let cidr = self.check_subnet_cidr(v, name, text)?;
            if cidr != old.cidr {
                let users: Vec<Name> = self
                    .nics
                    .iter()
                    .filter(|n| n.vnet == vname && n.subnet == sname)
                    .map(|n| n.name.clone())
                    .collect();
                if !users.is_empty() {
                    return Err(NetError::invalid(
                        Kind::Subnet,
                        format!("{vnet}/{name}"),
                        "cidr",
                        text,
                        format!(
                            "the prefix of a subnet with NICs cannot change (NICs: {})",
                            join(&users)
                        ),
                    ));
                }
                new.cidr = cidr;
                // Internal load balancer frontends live on the host only
                // (a /32 on the bridge), so unlike a NIC's they do not pin
                // the prefix; each must stay an address a NIC could be
                // given in the new one.
                let stranded = self.frontends_stranded_by(&vname, &new);
                if !stranded.is_empty() {
                    return Err(NetError::invalid(
                        Kind::Subnet,
                        format!("{vnet}/{name}"),
                        "cidr",
                        text,
                        format!(
                            "internal load balancer frontends would lose their address: {}",
                            stranded.join("; ")
                        ),
                    ));
                }
                new.ipam = Ipam {
                    next_index: Subnet::RESERVED_LOW,
                    static_above: vec![],
                };
            }
        }
        if clear_nsg {
            new.nsg = None;
        }
        if nsg.is_some() {
            new.nsg = self.nsg_ref(Kind::Subnet, name, nsg)?;
        }
        let view = subnet_view(&vname, &new);
        let v = self.vnet_mut(&vname)?;
        if let Some(slot) = v.subnets.iter_mut().find(|s| s.name == sname) {
            *slot = new;
        }
        Ok(view)
    }

    pub(super) fn subnet_delete(&mut self, vnet: &str, name: &str) -> Result<Value, NetError> {
        let vname = parse_ref(Kind::Subnet, name, "vnet", vnet)?;
        let sname = parse_name(Kind::Subnet, name)?;
        self.subnet(&vname, &sname)?;
        let users: Vec<Name> = self
            .nics
            .iter()
            .filter(|n| n.vnet == vname && n.subnet == sname)
            .map(|n| n.name.clone())
            .collect();
        if !users.is_empty() {
            return Err(NetError::in_use(
                Kind::Subnet,
                format!("{vnet}/{name}"),
                format!("it has NICs ({})", join(&users)),
            ));
        }
        let lbs = self.lbs_in(&vname, Some(&sname));
        if !lbs.is_empty() {
            return Err(NetError::in_use(
                Kind::Subnet,
                format!("{vnet}/{name}"),
                format!("it holds the frontend of lb {}", join(&lbs)),
            ));
        }
        self.vnet_mut(&vname)?.subnets.retain(|s| s.name != sname);
        Ok(Value::Null)
    }

    pub(super) fn subnet_list(&self, vnet: Option<&str>) -> Result<Value, NetError> {
        let filter = match vnet {
            Some(v) => Some(
                parse_ref(Kind::Subnet, "*", "vnet", v)
                    .and_then(|n| self.vnet(&n).map(|v| v.name.clone()))?,
            ),
            None => None,
        };
        Ok(Value::Array(
            self.vnets
                .iter()
                .filter(|v| filter.as_ref().is_none_or(|f| f == &v.name))
                .flat_map(|v| v.subnets.iter().map(|s| subnet_view(&v.name, s)))
                .collect(),
        ))
    }

    pub(super) fn subnet_show(&self, vnet: &str, name: &str) -> Result<Value, NetError> {
        let vname = parse_ref(Kind::Subnet, name, "vnet", vnet)?;
        let sname = parse_name(Kind::Subnet, name)?;
        Ok(subnet_view(&vname, self.subnet(&vname, &sname)?))
    }
}

pub(super) fn subnet_view(vnet: &Name, s: &Subnet) -> Value {
    json!({
        "vnet": vnet,
        "name": s.name,
        "cidr": s.cidr,
        "gateway": s.gateway().to_string(),
        "nsg": s.nsg,
        "usable_addresses": s.cidr.size() - 5,
    })
}

pub(super) fn join(names: &[Name]) -> String {
    names
        .iter()
        .map(Name::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use crate::api::protocol::Request;
    use crate::error::NetError;
    use crate::state::test_support::*;

    fn subnet(name: &str, cidr: &str) -> Request {
        Request::SubnetCreate {
            vnet: "v".into(),
            name: name.into(),
            cidr: cidr.into(),
            nsg: None,
        }
    }

    #[test]
    fn subnet_outside_address_space_is_refused() {
        let mut st = world();
        let err = st.apply(&subnet("out", "10.1.0.0/24")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("subnet 'v/out'")
                && text.contains("cidr '10.1.0.0/24'")
                && text.contains("address space"),
            "{text}"
        );
    }

    #[test]
    fn overlapping_subnet_names_the_other() {
        let mut st = world();
        let err = st.apply(&subnet("o", "10.0.1.128/25")).unwrap_err();
        assert!(
            err.to_string()
                .contains("overlaps subnet 's' (10.0.1.0/24)"),
            "{err}"
        );
        let err = st.apply(&subnet("o2", "10.0.0.0/16")).unwrap_err();
        assert!(err.to_string().contains("overlaps subnet 's'"), "{err}");
        assert!(st.apply(&subnet("ok", "10.0.2.0/24")).is_ok());
    }

    #[test]
    fn subnet_host_bits_and_size() {
        let mut st = world();
        let err = st.apply(&subnet("h", "10.0.2.1/24")).unwrap_err();
        assert!(err.to_string().contains("10.0.2.0/24"), "{err}");
        assert!(st.apply(&subnet("tiny", "10.0.3.0/30")).is_err());
    }

    #[test]
    fn vnet_spaces_must_not_overlap() {
        let mut st = world();
        let err = st
            .apply(&Request::VnetCreate {
                name: "w".into(),
                address_space: vec!["10.0.128.0/17".into()],
            })
            .unwrap_err();
        assert!(err.to_string().contains("vnet 'v'"), "{err}");
        assert!(matches!(
            st.apply(&Request::VnetCreate {
                name: "v".into(),
                address_space: vec!["10.9.0.0/16".into()]
            }),
            Err(NetError::AlreadyExists { .. })
        ));
    }

    #[test]
    fn cidr_fixed_while_in_use() {
        let mut st = world();
        apply(&mut st, nic("n1", None));
        let err = st
            .apply(&Request::SubnetUpdate {
                vnet: "v".into(),
                name: "s".into(),
                cidr: Some("10.0.1.0/25".into()),
                nsg: None,
                clear_nsg: false,
            })
            .unwrap_err();
        assert!(err.to_string().contains("n1"), "{err}");
        assert!(st
            .apply(&Request::SubnetDelete {
                vnet: "v".into(),
                name: "s".into()
            })
            .is_err());
        apply(&mut st, Request::NicDelete { name: "n1".into() });
        apply(
            &mut st,
            Request::SubnetUpdate {
                vnet: "v".into(),
                name: "s".into(),
                cidr: Some("10.0.1.0/25".into()),
                nsg: None,
                clear_nsg: false,
            },
        );
    }

    fn set_cidr(cidr: &str) -> Request {
        Request::SubnetUpdate {
            vnet: "v".into(),
            name: "s".into(),
            cidr: Some(cidr.into()),
            nsg: None,
            clear_nsg: false,
        }
    }

    fn internal_lb(name: &str, ip: &str) -> Request {
        Request::LbCreate {
            name: name.into(),
            public_ip: None,
            vnet: Some("v".into()),
            subnet: Some("s".into()),
            private_ip: Some(ip.into()),
        }
    }

    #[test]
    fn cidr_change_keeps_internal_frontends_assignable() {
        let mut st = world();
        apply(&mut st, internal_lb("ilb", "10.0.1.200"));
        apply(&mut st, internal_lb("edge", "10.0.1.127"));
        // Outside the new prefix, reserved in it (the broadcast of a /25,
        // the network address of a /29): refused, naming each load
        // balancer, its address and the new prefix; nothing applied.
        for (cidr, want) in [
            (
                "10.0.1.0/25",
                vec![
                    "lb 'ilb' frontend 10.0.1.200 would be outside 10.0.1.0/25",
                    "lb 'edge' frontend 10.0.1.127 would be a reserved address (network, gateway, DNS or broadcast) of 10.0.1.0/25",
                ],
            ),
            (
                "10.0.1.200/29",
                vec![
                    "lb 'ilb' frontend 10.0.1.200 would be a reserved address",
                    "lb 'edge' frontend 10.0.1.127 would be outside 10.0.1.200/29",
                ],
            ),
        ] {
            let mut copy = st.clone();
            let err = copy.apply(&set_cidr(cidr)).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, NetError::Invalid { .. })
                    && text.contains(&format!("subnet 'v/s': cidr '{cidr}'")),
                "{text}"
            );
            for w in want {
                assert!(text.contains(w), "{cidr}: {text}");
            }
            assert_eq!(copy, st, "a refused change leaves the state as it was");
        }
        // A prefix in which both stay assignable is fine, and the
        // addresses stay taken.
        let v = apply(&mut st, set_cidr("10.0.0.0/23"));
        assert_eq!(v["cidr"], "10.0.0.0/23");
        let e = st.apply(&nic("n", Some("10.0.1.200"))).unwrap_err();
        assert!(e.to_string().contains("lb 'ilb'"), "{e}");
        let v = apply(&mut st, nic("n", None));
        assert_ne!(v["ip"], "10.0.1.127");
        assert_ne!(v["ip"], "10.0.1.200");
    }

    #[test]
    fn vnet_with_nics_needs_force() {
        let mut st = world();
        apply(&mut st, nic("n1", None));
        let err = st
            .apply(&Request::VnetDelete {
                name: "v".into(),
                force: false,
            })
            .unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        apply(
            &mut st,
            Request::VnetDelete {
                name: "v".into(),
                force: true,
            },
        );
        assert!(st.nics.is_empty() && st.vnets.is_empty());
    }
}

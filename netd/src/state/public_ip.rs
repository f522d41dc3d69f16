//! Public IPs: static or dynamic addresses from the daemon's pool.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::{parse_name, State};
use crate::error::{parse_field, Kind, NetError};
use crate::model::{Allocation, PublicIp};

impl State {
    /// The lowest pool address (past the network and gateway-like first
    /// address) that no public IP holds.
    pub(super) fn free_public_address(&self, kind: Kind, name: &str) -> Result<Ipv4Addr, NetError> {
        let pool = self.public_pool.ok_or_else(|| {
            NetError::invalid(
                kind,
                name,
                "address",
                "(pool)",
                "netd has no public address pool (start it with --public-pool CIDR)",
            )
        })?;
        (2..pool.size().saturating_sub(1))
            .filter_map(|i| pool.nth(i))
            .find(|a| !self.public_ips.iter().any(|p| p.address == Some(*a)))
            .ok_or_else(|| {
                NetError::invalid(
                    kind,
                    name,
                    "address",
                    "(pool)",
                    format!("the public pool {pool} is exhausted"),
                )
            })
    }

    pub(super) fn public_ip_create(
        &mut self,
        name: &str,
        allocation: &str,
        address: Option<&str>,
    ) -> Result<Value, NetError> {
        let pname = parse_name(Kind::PublicIp, name)?;
        if self.public_ip(&pname).is_ok() {
            return Err(NetError::AlreadyExists {
                kind: Kind::PublicIp,
                name: name.into(),
            });
        }
        let allocation: Allocation = parse_field(Kind::PublicIp, name, "allocation", allocation)?;
        let address = match (allocation, address) {
            (Allocation::Dynamic, Some(a)) => {
                return Err(NetError::invalid(Kind::PublicIp, name, "address", a, "a dynamic public IP gets its address when attached; use --allocation static to choose one"));
            }
            (Allocation::Dynamic, None) => None,
            (Allocation::Static, None) => Some(self.free_public_address(Kind::PublicIp, name)?),
            (Allocation::Static, Some(text)) => {
                let a: Ipv4Addr = text.parse().map_err(|_| {
                    NetError::invalid(Kind::PublicIp, name, "address", text, "not an IPv4 address")
                })?;
                if let Some(pool) = self.public_pool {
                    if !pool.contains(a) {
                        return Err(NetError::invalid(
                            Kind::PublicIp,
                            name,
                            "address",
                            text,
                            format!("not inside the public pool {pool}"),
                        ));
                    }
                }
                if let Some(other) = self.public_ips.iter().find(|p| p.address == Some(a)) {
                    return Err(NetError::invalid(
                        Kind::PublicIp,
                        name,
                        "address",
                        text,
                        format!("already held by public-ip '{}'", other.name),
                    ));
                }
                Some(a)
            }
        };
        self.public_ips.push(PublicIp {
            name: pname,
            allocation,
            address,
        });
        self.public_ip_show(name)
    }

    pub(super) fn public_ip_delete(&mut self, name: &str) -> Result<Value, NetError> {
        let pname = parse_name(Kind::PublicIp, name)?;
        self.public_ip(&pname)?;
        if let Some(n) = self
            .nics
            .iter()
            .find(|n| n.public_ip.as_ref() == Some(&pname))
        {
            return Err(NetError::in_use(
                Kind::PublicIp,
                name,
                format!("attached to nic '{}'", n.name),
            ));
        }
        if let Some(lb) = self.lb_using_public_ip(&pname) {
            return Err(NetError::in_use(
                Kind::PublicIp,
                name,
                format!("frontend of lb '{}'", lb.name),
            ));
        }
        self.public_ips.retain(|p| p.name != pname);
        Ok(Value::Null)
    }

    pub(super) fn public_ip_show(&self, name: &str) -> Result<Value, NetError> {
        let pname = parse_name(Kind::PublicIp, name)?;
        let p = self.public_ip(&pname)?;
        Ok(self.public_ip_view(p))
    }

    pub(super) fn public_ip_view(&self, p: &PublicIp) -> Value {
        let nic = self
            .nics
            .iter()
            .find(|n| n.public_ip.as_ref() == Some(&p.name))
            .map(|n| n.name.clone());
        json!({
            "name": p.name,
            "allocation": p.allocation.to_string(),
            "address": p.address.map(|a| a.to_string()),
            "nic": nic,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::api::protocol::Request;
    use crate::state::test_support::*;

    fn pip(name: &str, alloc: &str, addr: Option<&str>) -> Request {
        Request::PublicIpCreate {
            name: name.into(),
            allocation: alloc.into(),
            address: addr.map(Into::into),
        }
    }

    #[test]
    fn static_gets_an_address_at_creation_dynamic_on_attach() {
        let mut st = world();
        let s = apply(&mut st, pip("s", "static", None));
        assert_eq!(s["address"], "203.0.113.2");
        let d = apply(&mut st, pip("d", "dynamic", None));
        assert!(d["address"].is_null());
        apply(&mut st, nic("n", None));
        apply(
            &mut st,
            Request::NicUpdate {
                name: "n".into(),
                nsg: None,
                clear_nsg: false,
                asgs: None,
                public_ip: Some("d".into()),
                clear_public_ip: false,
            },
        );
        assert_eq!(
            apply(&mut st, Request::PublicIpShow { name: "d".into() })["address"],
            "203.0.113.3"
        );
        let err = st
            .apply(&Request::PublicIpDelete { name: "d".into() })
            .unwrap_err();
        assert!(err.to_string().contains("nic 'n'"), "{err}");
        apply(
            &mut st,
            Request::NicUpdate {
                name: "n".into(),
                nsg: None,
                clear_nsg: false,
                asgs: None,
                public_ip: None,
                clear_public_ip: true,
            },
        );
        assert!(apply(&mut st, Request::PublicIpShow { name: "d".into() })["address"].is_null());
    }

    #[test]
    fn static_address_checks() {
        let mut st = world();
        apply(&mut st, pip("a", "static", Some("203.0.113.10")));
        assert!(st
            .apply(&pip("b", "static", Some("203.0.113.10")))
            .unwrap_err()
            .to_string()
            .contains("public-ip 'a'"));
        assert!(st
            .apply(&pip("c", "static", Some("198.51.100.1")))
            .unwrap_err()
            .to_string()
            .contains("pool"));
        assert!(st
            .apply(&pip("d", "dynamic", Some("203.0.113.11")))
            .is_err());
        assert!(st
            .apply(&pip("e", "sometimes", None))
            .unwrap_err()
            .to_string()
            .contains("allocation"));
    }
}

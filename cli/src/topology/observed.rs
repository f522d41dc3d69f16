//! What exists on the host, read from netd's list requests and normalized
//! into the same [`Spec`] values the file produces.

use std::collections::BTreeMap;

use netd::api::client::{Client, ClientError};
use netd::api::protocol::{LbRuleSpec, ProbeSpec, Request, RuleSpec};
use netd::model::Cidr;
use serde_json::Value;

use super::desired::{FrontendV, Id, Kind, PoolV, Spec};

/// The host's network objects.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Every object netd has, by id.
    pub objects: BTreeMap<Id, Spec>,
    /// What a user wants to see about an object (bridge, TAP, address).
    pub details: BTreeMap<Id, String>,
}

impl Observed {
    /// Address spaces of every VNet, with the VNet's host name.
    pub fn vnet_spaces(&self) -> Vec<(Cidr, String)> {
        let mut out = Vec::new();
        for (id, spec) in &self.objects {
            if let Spec::Vnet { address_space } = spec {
                out.extend(
                    address_space
                        .iter()
                        .filter_map(|t| t.parse().ok())
                        .map(|c| (c, id.name.clone())),
                );
            }
        }
        out
    }

    /// Addresses held by public IPs, with their host names.
    pub fn public_addresses(&self) -> Vec<(String, String)> {
        self.objects
            .iter()
            .filter_map(|(id, spec)| match spec {
                Spec::PublicIp {
                    address: Some(a), ..
                } => Some((a.clone(), id.name.clone())),
                _ => None,
            })
            .collect()
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn opt_text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn texts(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn num(v: &Value) -> u32 {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or_default()
}

/// `nsg rule list` joins prefixes and ports with commas.
fn split(v: &Value) -> Vec<String> {
    text(v)
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Reads everything netd has. NSG rules are read for the NSGs that
/// `wanted` says matter (listing every NSG's rules would be slow on a
/// host with many).
pub fn observe(
    client: &mut Client,
    wanted: impl Fn(&str) -> bool,
) -> Result<Observed, ClientError> {
    let mut o = Observed::default();
    for v in list(&client.call(&Request::VnetList)?) {
        let id = Id::new(Kind::Vnet, text(&v["name"]));
        o.details
            .insert(id.clone(), format!("bridge {}", text(&v["bridge"])));
        o.objects.insert(
            id,
            Spec::Vnet {
                address_space: texts(&v["address_space"]),
            },
        );
    }
    for v in list(&client.call(&Request::SubnetList { vnet: None })?) {
        let (vnet, name) = (text(&v["vnet"]), text(&v["name"]));
        let id = Id::new(Kind::Subnet, format!("{vnet}/{name}"));
        o.details.insert(
            id.clone(),
            format!("{} gateway {}", text(&v["cidr"]), text(&v["gateway"])),
        );
        o.objects.insert(
            id,
            Spec::Subnet {
                vnet,
                name,
                cidr: text(&v["cidr"]),
                nsg: opt_text(&v["nsg"]),
            },
        );
    }
    for v in list(&client.call(&Request::NsgList)?) {
        let name = text(&v["name"]);
        let rules = if wanted(&name) {
            let mut rules: Vec<RuleSpec> =
                list(&client.call(&Request::NsgRuleList { nsg: name.clone() })?)
                    .iter()
                    .filter(|r| r["default"] != Value::Bool(true))
                    .map(|r| RuleSpec {
                        name: text(&r["name"]),
                        priority: num(&r["priority"]),
                        direction: text(&r["direction"]),
                        access: text(&r["access"]),
                        protocol: text(&r["protocol"]),
                        sources: split(&r["source"]),
                        source_ports: split(&r["source_ports"]),
                        destinations: split(&r["destination"]),
                        destination_ports: split(&r["destination_ports"]),
                    })
                    .collect();
            rules.sort_by(|a, b| a.name.cmp(&b.name));
            rules
        } else {
            Vec::new()
        };
        let id = Id::new(Kind::Nsg, name);
        o.details
            .insert(id.clone(), format!("{} rules", num(&v["rules"])));
        o.objects.insert(id, Spec::Nsg { rules });
    }
    for v in list(&client.call(&Request::AsgList)?) {
        let id = Id::new(Kind::Asg, text(&v["name"]));
        o.details
            .insert(id.clone(), format!("{} nics", list(&v["nics"]).len()));
        o.objects.insert(id, Spec::Asg);
    }
    for v in list(&client.call(&Request::PublicIpList)?) {
        let id = Id::new(Kind::PublicIp, text(&v["name"]));
        let address = opt_text(&v["address"]);
        o.details.insert(
            id.clone(),
            address.clone().unwrap_or_else(|| "no address".into()),
        );
        o.objects.insert(
            id,
            Spec::PublicIp {
                allocation: text(&v["allocation"]),
                address,
            },
        );
    }
    for v in list(&client.call(&Request::NicList)?) {
        let id = Id::new(Kind::Nic, text(&v["name"]));
        o.details.insert(
            id.clone(),
            format!(
                "{} {} {}",
                text(&v["host_interface"]),
                text(&v["ip"]),
                text(&v["mac"])
            ),
        );
        let mut asgs = texts(&v["asgs"]);
        asgs.sort();
        o.objects.insert(
            id,
            Spec::Nic {
                vnet: text(&v["vnet"]),
                subnet: text(&v["subnet"]),
                ip: opt_text(&v["ip"]),
                nsg: opt_text(&v["nsg"]),
                asgs,
                public_ip: opt_text(&v["public_ip"]),
            },
        );
    }
    for v in list(&client.call(&Request::LbList)?) {
        let id = Id::new(Kind::Lb, text(&v["name"]));
        o.details.insert(
            id.clone(),
            format!(
                "frontend {}",
                opt_text(&v["frontend_ip"]).unwrap_or_else(|| "-".into())
            ),
        );
        o.objects.insert(id, lb_spec(v));
    }
    Ok(o)
}

/// Adds the VMs of the VM store (`nimbus vm list`), with their stored
/// specs.
pub fn observe_vms(ctx: &crate::vm::Context, o: &mut Observed) -> Result<(), crate::vm::VmError> {
    use crate::vm::VmState;
    for s in crate::vm::list(ctx)? {
        let stored = crate::vm::stored(ctx, &s.name)?;
        let id = Id::new(Kind::Vm, s.name.clone());
        let mut detail = s.state.as_str().to_string();
        if !s.ips.is_empty() {
            detail.push_str(&format!(" {}", s.ips.join(",")));
        }
        if let Some(pid) = s.pid {
            detail.push_str(&format!(" pid {pid}"));
        }
        o.details.insert(id.clone(), detail);
        o.objects.insert(
            id,
            Spec::Vm {
                spec: stored.spec,
                running: matches!(s.state, VmState::Running | VmState::Paused),
            },
        );
    }
    Ok(())
}

/// A load balancer view (`lb show`) as a [`Spec`].
fn lb_spec(v: &Value) -> Spec {
    let frontend = if text(&v["type"]) == "Public" {
        FrontendV::Public {
            public_ip: text(&v["public_ip"]),
        }
    } else {
        FrontendV::Internal {
            vnet: text(&v["vnet"]),
            subnet: text(&v["subnet"]),
            private_ip: opt_text(&v["frontend_ip"]),
        }
    };
    let mut pools: Vec<PoolV> = list(&v["pools"])
        .iter()
        .map(|p| {
            let mut members: Vec<String> = list(&p["members"])
                .iter()
                .map(|m| text(&m["nic"]))
                .collect();
            members.sort();
            PoolV {
                name: text(&p["name"]),
                members,
            }
        })
        .collect();
    let mut probes: Vec<ProbeSpec> = list(&v["probes"])
        .iter()
        .map(|p| ProbeSpec {
            name: text(&p["name"]),
            protocol: text(&p["protocol"]),
            port: num(&p["port"]),
            path: opt_text(&p["path"]),
            expected_status: p["expected_status"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok()),
            interval_seconds: Some(num(&p["interval_seconds"])),
            unhealthy_threshold: Some(num(&p["unhealthy_threshold"])),
            passive: Some(p["passive"].as_bool().unwrap_or(true)),
        })
        .collect();
    let mut rules: Vec<LbRuleSpec> = list(&v["rules"])
        .iter()
        .map(|r| LbRuleSpec {
            name: text(&r["name"]),
            protocol: text(&r["protocol"]),
            frontend_port: num(&r["frontend_port"]),
            backend_port: Some(num(&r["backend_port"])),
            pool: text(&r["pool"]),
            probe: opt_text(&r["probe"]),
            idle_timeout_minutes: None,
            idle_timeout_seconds: Some(num(&r["idle_timeout_seconds"])),
            algorithm: opt_text(&r["algorithm"]),
            proxy_protocol: r["proxy_protocol"] == Value::Bool(true),
        })
        .collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    probes.sort_by(|a, b| a.name.cmp(&b.name));
    rules.sort_by(|a, b| a.name.cmp(&b.name));
    Spec::Lb {
        frontend,
        pools,
        probes,
        rules,
    }
}

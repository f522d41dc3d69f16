//! netd's desired state and the pure operations that change it. Every
//! operation validates its whole input before touching anything and works
//! on a copy, so a refused request leaves the state as it was. Nothing here
//! touches the host.

mod load_balancer;
mod network;
mod nic;
mod public_ip;
mod security;
pub mod store;

use serde::{Deserialize, Serialize};

use crate::api::protocol::Request;
use crate::error::{Kind, NetError};
use crate::model::{Asg, Cidr, Name, Nic, Nsg, PublicIp, ShortId, Subnet, VNet};

/// Everything netd manages, as persisted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Format version of the state file.
    pub version: u32,
    /// Next [`ShortId`]; never decreases, so host names are never reused.
    pub next_serial: u64,
    /// VNets with their subnets.
    pub vnets: Vec<VNet>,
    /// NICs.
    pub nics: Vec<Nic>,
    /// NSGs.
    pub nsgs: Vec<Nsg>,
    /// ASGs.
    pub asgs: Vec<Asg>,
    /// Public IPs.
    pub public_ips: Vec<PublicIp>,
    /// Load balancers.
    #[serde(default)]
    pub load_balancers: Vec<crate::model::LoadBalancer>,
    /// Pool public IPs are taken from (daemon setting).
    #[serde(default)]
    pub public_pool: Option<Cidr>,
}

/// Largest serial: ten hex digits keep `nt-<id>p` within IFNAMSIZ (15).
pub const MAX_SERIAL: u64 = (1 << 40) - 1;

/// Current state file format.
pub const STATE_VERSION: u32 = 1;

impl State {
    /// An empty state.
    pub fn new(public_pool: Option<Cidr>) -> Self {
        State {
            version: STATE_VERSION,
            next_serial: 1,
            public_pool,
            ..State::default()
        }
    }

    fn serial(&mut self) -> ShortId {
        // 2^40 creations are out of reach; saturate rather than overflow.
        let id = ShortId(self.next_serial.min(MAX_SERIAL));
        self.next_serial += 1;
        id
    }

    /// The VNet called `name`.
    pub fn vnet(&self, name: &Name) -> Result<&VNet, NetError> {
        self.vnets
            .iter()
            .find(|v| &v.name == name)
            .ok_or_else(|| NetError::not_found(Kind::VNet, name))
    }

    fn vnet_mut(&mut self, name: &Name) -> Result<&mut VNet, NetError> {
        self.vnets
            .iter_mut()
            .find(|v| &v.name == name)
            .ok_or_else(|| NetError::not_found(Kind::VNet, name))
    }

    /// The subnet `name` of VNet `vnet`.
    pub fn subnet(&self, vnet: &Name, name: &Name) -> Result<&Subnet, NetError> {
        self.vnet(vnet)?
            .subnet(name)
            .ok_or_else(|| NetError::not_found(Kind::Subnet, format!("{vnet}/{name}")))
    }

    /// The NIC called `name`.
    pub fn nic(&self, name: &Name) -> Result<&Nic, NetError> {
        self.nics
            .iter()
            .find(|n| &n.name == name)
            .ok_or_else(|| NetError::not_found(Kind::Nic, name))
    }

    /// The NSG called `name`.
    pub fn nsg(&self, name: &Name) -> Result<&Nsg, NetError> {
        self.nsgs
            .iter()
            .find(|n| &n.name == name)
            .ok_or_else(|| NetError::not_found(Kind::Nsg, name))
    }

    /// The ASG called `name`.
    pub fn asg(&self, name: &Name) -> Result<&Asg, NetError> {
        self.asgs
            .iter()
            .find(|n| &n.name == name)
            .ok_or_else(|| NetError::not_found(Kind::Asg, name))
    }

    /// The public IP called `name`.
    pub fn public_ip(&self, name: &Name) -> Result<&PublicIp, NetError> {
        self.public_ips
            .iter()
            .find(|n| &n.name == name)
            .ok_or_else(|| NetError::not_found(Kind::PublicIp, name))
    }

    /// NICs in `vnet`.
    pub fn nics_in_vnet<'a>(&'a self, vnet: &'a Name) -> impl Iterator<Item = &'a Nic> + 'a {
        self.nics.iter().filter(move |n| &n.vnet == vnet)
    }
}

/// Parses a user name for object `kind`.
pub(crate) fn parse_name(kind: Kind, value: &str) -> Result<Name, NetError> {
    value
        .parse()
        .map_err(|reason| NetError::invalid(kind, value, "name", value, reason))
}

/// Parses a reference to another object (`field` of `kind` `owner`).
pub(crate) fn parse_ref(
    kind: Kind,
    owner: &str,
    field: &str,
    value: &str,
) -> Result<Name, NetError> {
    value
        .parse()
        .map_err(|reason| NetError::invalid(kind, owner, field, value, reason))
}

impl State {
    /// Answers a query or applies a change to `self`. On `Err` the state
    /// may be partly changed: callers apply changes to a copy.
    pub fn apply(&mut self, r: &Request) -> Result<serde_json::Value, NetError> {
        use serde_json::Value;
        match r {
            Request::Ping => Ok(Value::String("pong".into())),
            Request::Ruleset => Ok(Value::String(crate::nft::ruleset::render(self))),
            Request::VnetCreate {
                name,
                address_space,
            } => self.vnet_create(name, address_space),
            Request::VnetList => Ok(Value::Array(
                (0..self.vnets.len()).map(|i| self.vnet_view(i)).collect(),
            )),
            Request::VnetShow { name } => self.vnet_show(name),
            Request::VnetDelete { name, force } => self.vnet_delete(name, *force),
            Request::SubnetCreate {
                vnet,
                name,
                cidr,
                nsg,
            } => self.subnet_create(vnet, name, cidr, nsg.as_deref()),
            Request::SubnetUpdate {
                vnet,
                name,
                cidr,
                nsg,
                clear_nsg,
            } => self.subnet_update(vnet, name, cidr.as_deref(), nsg.as_deref(), *clear_nsg),
            Request::SubnetList { vnet } => self.subnet_list(vnet.as_deref()),
            Request::SubnetShow { vnet, name } => self.subnet_show(vnet, name),
            Request::SubnetDelete { vnet, name } => self.subnet_delete(vnet, name),
            Request::NicCreate { .. } => self.nic_create(r),
            Request::NicUpdate { .. } => self.nic_update(r),
            Request::NicList => Ok(Value::Array(
                self.nics.iter().map(|n| self.nic_view(n)).collect(),
            )),
            Request::NicShow { name } => self.nic_show(name),
            Request::NicDelete { name } => self.nic_delete(name),
            Request::NsgCreate { name, rules } => self.nsg_create(name, rules),
            Request::NsgList => {
                let names: Vec<String> = self.nsgs.iter().map(|n| n.name.to_string()).collect();
                names
                    .iter()
                    .map(|n| self.nsg_show(n))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
            }
            Request::NsgShow { name } => self.nsg_show(name),
            Request::NsgDelete { name } => self.nsg_delete(name),
            Request::NsgRuleAdd { nsg, rule } => self.nsg_rule_add(nsg, rule),
            Request::NsgRuleReplace { nsg, rules } => self.nsg_rule_replace(nsg, rules),
            Request::NsgRuleList { nsg } => self.nsg_rule_list(nsg),
            Request::NsgRuleDelete { nsg, name } => self.nsg_rule_delete(nsg, name),
            Request::AsgCreate { name } => self.asg_create(name),
            Request::AsgList => {
                let names: Vec<String> = self.asgs.iter().map(|n| n.name.to_string()).collect();
                names
                    .iter()
                    .map(|n| self.asg_show(n))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
            }
            Request::AsgShow { name } => self.asg_show(name),
            Request::AsgDelete { name } => self.asg_delete(name),
            Request::PublicIpCreate {
                name,
                allocation,
                address,
            } => self.public_ip_create(name, allocation, address.as_deref()),
            Request::PublicIpList => Ok(Value::Array(
                self.public_ips
                    .iter()
                    .map(|p| self.public_ip_view(p))
                    .collect(),
            )),
            Request::PublicIpShow { name } => self.public_ip_show(name),
            Request::PublicIpDelete { name } => self.public_ip_delete(name),
            Request::LbCreate {
                name,
                public_ip,
                vnet,
                subnet,
                private_ip,
            } => self.lb_create(
                name,
                public_ip.as_deref(),
                vnet.as_deref(),
                subnet.as_deref(),
                private_ip.as_deref(),
            ),
            Request::LbList => Ok(Value::Array(
                self.load_balancers
                    .iter()
                    .map(|l| self.lb_view(l))
                    .collect(),
            )),
            Request::LbShow { name } => self.lb_show(name),
            Request::LbDelete { name } => self.lb_delete(name),
            Request::LbPoolCreate { lb, name, members } => self.lb_pool_create(lb, name, members),
            Request::LbPoolAdd { lb, pool, member } => self.lb_pool_add(lb, pool, member),
            Request::LbPoolRemove { lb, pool, nic } => self.lb_pool_remove(lb, pool, nic),
            Request::LbPoolDelete { lb, name } => self.lb_pool_delete(lb, name),
            Request::LbProbeCreate { lb, probe } => self.lb_probe_create(lb, probe),
            Request::LbProbeDelete { lb, name } => self.lb_probe_delete(lb, name),
            Request::LbRuleCreate { lb, rule } => self.lb_rule_create(lb, rule),
            Request::LbRuleDelete { lb, name } => self.lb_rule_delete(lb, name),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A state with VNet `v` 10.0.0.0/16 and subnet `s` 10.0.1.0/24.
    pub fn world() -> State {
        let mut st = State::new(Some("203.0.113.0/24".parse().unwrap()));
        apply(
            &mut st,
            Request::VnetCreate {
                name: "v".into(),
                address_space: vec!["10.0.0.0/16".into()],
            },
        );
        apply(
            &mut st,
            Request::SubnetCreate {
                vnet: "v".into(),
                name: "s".into(),
                cidr: "10.0.1.0/24".into(),
                nsg: None,
            },
        );
        st
    }

    /// Applies a change that must succeed.
    pub fn apply(st: &mut State, r: Request) -> serde_json::Value {
        match st.apply(&r) {
            Ok(v) => v,
            Err(e) => panic!("{r:?} failed: {e}"),
        }
    }

    /// A NIC create request.
    pub fn nic(name: &str, ip: Option<&str>) -> Request {
        Request::NicCreate {
            name: name.into(),
            vnet: "v".into(),
            subnet: "s".into(),
            ip: ip.map(Into::into),
            mac: None,
            nsg: None,
            asgs: vec![],
            public_ip: None,
            tap_owner: None,
            attach_netns: None,
        }
    }
}

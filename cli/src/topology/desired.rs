//! What a valid topology asks for, in netd's terms: every object with the
//! name it has on the host and its properties normalized the way netd
//! reports them, so that "desired" and "observed" compare with `==`.
//!
//! Host names: every top-level object is called `<topology>-<name>` on the
//! host (Azure's resource group as a prefix), so two topologies can both
//! have a VNet `app`. Subnets, pools, probes and rules are scoped by their
//! parent and keep their names. A name that already exists on the host and
//! is not recorded as this topology's is a conflict, found before any
//! change.

use std::fmt;

use marked_yaml::Span;
use netd::api::protocol::{LbRuleSpec, ProbeSpec, RuleSpec};
use serde::{Deserialize, Serialize};

/// Kinds of objects a topology owns, in dependency (creation) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// VNet (a bridge).
    Vnet,
    /// ASG.
    Asg,
    /// Public IP.
    PublicIp,
    /// NSG (its rules may name ASGs).
    Nsg,
    /// Subnet (needs its VNet and NSG).
    Subnet,
    /// NIC (a TAP; needs subnet, NSG, ASGs, public IP).
    Nic,
    /// Load balancer with its pools, probes and rules (needs NICs).
    Lb,
    /// VM (needs its NICs).
    Vm,
}

impl Kind {
    /// Creation stage: objects of one stage do not depend on each other
    /// and are created in parallel; stages run in order (deletion in
    /// reverse).
    pub fn stage(self) -> u8 {
        match self {
            Kind::Vnet | Kind::Asg | Kind::PublicIp => 0,
            Kind::Nsg => 1,
            Kind::Subnet => 2,
            Kind::Nic => 3,
            Kind::Lb => 4,
            Kind::Vm => 5,
        }
    }

    /// Number of stages.
    pub const STAGES: u8 = 6;
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Vnet => "vnet",
            Kind::Asg => "asg",
            Kind::PublicIp => "public-ip",
            Kind::Nsg => "nsg",
            Kind::Subnet => "subnet",
            Kind::Nic => "nic",
            Kind::Lb => "lb",
            Kind::Vm => "vm",
        })
    }
}

/// An object on the host: its kind and host name (`VNET/SUBNET` for
/// subnets).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Id {
    /// Kind.
    pub kind: Kind,
    /// Host name.
    pub name: String,
}

impl Id {
    /// Builds an id.
    pub fn new(kind: Kind, name: impl Into<String>) -> Self {
        Id {
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// Where a load balancer listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum FrontendV {
    /// A public IP (host name).
    Public {
        /// Public IP.
        public_ip: String,
    },
    /// A subnet's private address.
    Internal {
        /// VNet.
        vnet: String,
        /// Subnet.
        subnet: String,
        /// Fixed address, if the file gives one.
        private_ip: Option<String>,
    },
}

/// A backend pool: member NICs, sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolV {
    /// Name.
    pub name: String,
    /// NIC host names, sorted.
    pub members: Vec<String>,
}

/// Tag every VM of a topology carries (`nimbus vm list` shows it).
pub const TOPOLOGY_TAG: &str = "nimbus.topology";
/// Tag of a scale set's instances.
pub const SCALE_SET_TAG: &str = "nimbus.scale_set";

/// The properties of one object, normalized as netd (or the VM store)
/// shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Spec {
    /// VNet.
    Vnet {
        /// Prefixes.
        address_space: Vec<String>,
    },
    /// ASG.
    Asg,
    /// Public IP.
    PublicIp {
        /// `Static` or `Dynamic`.
        allocation: String,
        /// Fixed address.
        address: Option<String>,
    },
    /// NSG with its user rules, sorted by name.
    Nsg {
        /// Rules.
        rules: Vec<RuleSpec>,
    },
    /// Subnet.
    Subnet {
        /// VNet host name.
        vnet: String,
        /// Subnet name.
        name: String,
        /// Prefix.
        cidr: String,
        /// NSG host name.
        nsg: Option<String>,
    },
    /// NIC.
    Nic {
        /// VNet host name.
        vnet: String,
        /// Subnet.
        subnet: String,
        /// Fixed address (None: whatever netd gave).
        ip: Option<String>,
        /// NSG host name.
        nsg: Option<String>,
        /// ASG host names, sorted.
        asgs: Vec<String>,
        /// Public IP host name.
        public_ip: Option<String>,
    },
    /// Load balancer.
    Lb {
        /// Frontend.
        frontend: FrontendV,
        /// Pools by name.
        pools: Vec<PoolV>,
        /// Probes, defaults filled in, sorted by name.
        probes: Vec<ProbeSpec>,
        /// Rules, defaults filled in, sorted by name.
        rules: Vec<LbRuleSpec>,
    },
    /// VM: the spec `nimbus vm create` stores, and whether it runs.
    Vm {
        /// The VM's spec (name = host name, NICs = host NIC names).
        spec: crate::vm::VmSpec,
        /// Running (or paused), as opposed to stopped or failed.
        running: bool,
    },
}

impl Spec {
    /// True when the observed object `actual` is what `self` asks for.
    /// Values the file leaves to netd (a dynamic NIC address, an internal
    /// frontend's address) match whatever netd chose.
    pub fn matches(&self, actual: &Spec) -> bool {
        match (self, actual) {
            (
                Spec::Nic {
                    vnet,
                    subnet,
                    ip,
                    nsg,
                    asgs,
                    public_ip,
                },
                Spec::Nic {
                    vnet: v2,
                    subnet: s2,
                    ip: ip2,
                    nsg: n2,
                    asgs: a2,
                    public_ip: p2,
                },
            ) => {
                vnet == v2
                    && subnet == s2
                    && (ip.is_none() || ip == ip2)
                    && nsg == n2
                    && asgs == a2
                    && public_ip == p2
            }
            (
                Spec::PublicIp {
                    allocation,
                    address,
                },
                Spec::PublicIp {
                    allocation: a2,
                    address: ad2,
                },
            ) => allocation == a2 && (address.is_none() || address == ad2),
            (
                Spec::Lb {
                    frontend,
                    pools,
                    probes,
                    rules,
                },
                Spec::Lb {
                    frontend: f2,
                    pools: p2,
                    probes: pr2,
                    rules: r2,
                },
            ) => frontend_matches(frontend, f2) && pools == p2 && probes == pr2 && rules == r2,
            (a, b) => a == b,
        }
    }
}

/// True when an observed frontend is the desired one.
pub fn frontend_matches(want: &FrontendV, got: &FrontendV) -> bool {
    match (want, got) {
        (
            FrontendV::Internal {
                vnet,
                subnet,
                private_ip,
            },
            FrontendV::Internal {
                vnet: v2,
                subnet: s2,
                private_ip: ip2,
            },
        ) => vnet == v2 && subnet == s2 && (private_ip.is_none() || private_ip == ip2),
        (a, b) => a == b,
    }
}

/// One object the file declares.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Host identity.
    pub id: Id,
    /// Properties.
    pub spec: Spec,
    /// Where the file declares it (for errors found later).
    pub span: Span,
    /// Its path in the file (`vnets.app`).
    pub path: String,
}

/// An autoscale rule, validated (see `schema::AutoscaleSpecY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Autoscale {
    /// Fewest instances (≥ 1).
    pub min_replicas: u32,
    /// Most instances (≥ min).
    pub max_replicas: u32,
    /// Average vCPU utilization aimed at, percent (1–100).
    pub target_cpu_percent: u32,
    /// Seconds between two changes.
    pub cooldown_seconds: u32,
}

/// A scale set of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScaleSetV {
    /// Its name in the file.
    pub name: String,
    /// Instances wanted (`replicas`, or an override of `nimbus scale`).
    pub replicas: u32,
    /// The autoscale rule, if any.
    pub autoscale: Option<Autoscale>,
}

impl ScaleSetV {
    /// The instance index of host name `host`, if it is one of this set's.
    pub fn index_of(&self, rg: &str, host: &str) -> Option<u32> {
        let rest = host.strip_prefix(&host_name(rg, &format!("{}-", self.name)))?;
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        rest.parse().ok()
    }
}

/// A whole valid topology.
#[derive(Debug, Clone)]
pub struct Desired {
    /// The topology (resource group) name.
    pub name: String,
    /// Objects in creation order.
    pub resources: Vec<Resource>,
    /// Scale sets, in file order.
    pub scale_sets: Vec<ScaleSetV>,
    /// Where some fields are written, for errors found against the host
    /// (`address_space` of a VNet, `address` of a public IP).
    pub field_spans: std::collections::BTreeMap<(Id, &'static str), Span>,
}

impl Desired {
    /// The resource with `id`.
    pub fn get(&self, id: &Id) -> Option<&Resource> {
        self.resources.iter().find(|r| &r.id == id)
    }

    /// The scale set called `name` in the file.
    pub fn scale_set(&self, name: &str) -> Option<&ScaleSetV> {
        self.scale_sets.iter().find(|s| s.name == name)
    }

    /// True when the topology declares VMs (or scale set instances).
    pub fn has_vms(&self) -> bool {
        self.resources.iter().any(|r| r.id.kind == Kind::Vm)
    }

    /// Where `field` of `r` is written (else where `r` is declared).
    pub fn span_of(&self, r: &Resource, field: &'static str) -> Span {
        self.field_spans
            .get(&(r.id.clone(), field))
            .copied()
            .unwrap_or(r.span)
    }
}

/// Host name of a top-level object `name` of topology `rg`.
pub fn host_name(rg: &str, name: &str) -> String {
    format!("{rg}-{name}")
}

//! The topology file as written: YAML mappings keyed by name (like
//! containerlab's `nodes:`), every value that a later check may refuse
//! kept with its span so the error names its line.
//!
//! Defaults keep small files small: a rule is Inbound/Allow/any protocol
//! from anywhere to anywhere unless it says otherwise, a probe and an LB
//! rule are TCP, a public IP is static, a VM gets one NIC in its `subnet`.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use marked_yaml::Spanned;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// A mapping from names to `T`, in file order, with each name's span.
#[derive(Debug, Clone)]
pub struct Named<T>(pub Vec<(Spanned<String>, T)>);

impl<T> Default for Named<T> {
    fn default() -> Self {
        Named(Vec::new())
    }
}

impl<T> Named<T> {
    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Option<&(Spanned<String>, T)> {
        self.0.iter().find(|(k, _)| k.as_str() == name)
    }

    /// The entries.
    pub fn iter(&self) -> impl Iterator<Item = &(Spanned<String>, T)> {
        self.0.iter()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Named<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Named<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping from names to objects")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    out.push((key, map.next_value()?));
                }
                Ok(Named(out))
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

/// One value or a list of them (`source: 10.0.0.0/8` or `source: [a, b]`);
/// numbers are kept as text (`destination_ports: [80, 443]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StrList(pub Vec<String>);

impl<'de> Deserialize<'de> for StrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrList, E> {
                Ok(StrList(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrList, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<String>()? {
                    out.push(v);
                }
                Ok(StrList(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Top-level keys of a topology file.
pub const SECTIONS: &[&str] = &[
    "name",
    "description",
    "vnets",
    "nsgs",
    "asgs",
    "public_ips",
    "nics",
    "load_balancers",
    "vms",
    "scale_sets",
];

/// A virtual network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VnetSpec {
    /// One prefix or a list.
    pub address_space: Spanned<StrList>,
    /// Subnets by name.
    #[serde(default)]
    pub subnets: Named<SubnetSpec>,
}

/// A subnet of a VNet.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetSpec {
    /// Prefix inside the VNet's address space.
    pub cidr: Spanned<String>,
    /// NSG of the file attached to the subnet.
    #[serde(default)]
    pub nsg: Option<Spanned<String>>,
}

/// A network security group.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NsgSpec {
    /// Rules by name (Azure's default rules are always there too).
    #[serde(default)]
    pub rules: Named<SecurityRuleSpec>,
}

/// One NSG rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityRuleSpec {
    /// 100–4096, lower first.
    pub priority: Spanned<u32>,
    /// Inbound (default) or Outbound.
    #[serde(default)]
    pub direction: Option<Spanned<String>>,
    /// Allow (default) or Deny.
    #[serde(default)]
    pub access: Option<Spanned<String>>,
    /// Tcp, Udp, Icmp, Esp, Ah or `*` (default).
    #[serde(default)]
    pub protocol: Option<Spanned<String>>,
    /// CIDR, address, `*`, service tag or `asg:NAME` (default `*`).
    #[serde(default)]
    pub source: Option<Spanned<StrList>>,
    /// Port ranges (default `*`).
    #[serde(default)]
    pub source_ports: Option<Spanned<StrList>>,
    /// Same forms as `source` (default `*`).
    #[serde(default)]
    pub destination: Option<Spanned<StrList>>,
    /// Port ranges (default `*`).
    #[serde(default)]
    pub destination_ports: Option<Spanned<StrList>>,
}

/// A public IP address.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicIpSpec {
    /// static (default) or dynamic.
    #[serde(default)]
    pub allocation: Option<Spanned<String>>,
    /// A fixed address from netd's public pool (static only).
    #[serde(default)]
    pub address: Option<Spanned<String>>,
}

/// A load balancer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbSpec {
    /// Where it listens.
    pub frontend: Spanned<FrontendSpec>,
    /// Backend pools by name.
    #[serde(default)]
    pub pools: Named<PoolSpec>,
    /// Health probes by name.
    #[serde(default)]
    pub probes: Named<ProbeSpecY>,
    /// Load-balancing rules by name.
    #[serde(default)]
    pub rules: Named<LbRuleSpecY>,
}

/// A frontend: a public IP of the file, or a subnet (internal LB).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendSpec {
    /// Public IP (public load balancer).
    #[serde(default)]
    pub public_ip: Option<Spanned<String>>,
    /// Subnet, `SUBNET` or `VNET/SUBNET` (internal load balancer).
    #[serde(default)]
    pub subnet: Option<Spanned<String>>,
    /// Fixed private frontend address (internal only).
    #[serde(default)]
    pub private_ip: Option<Spanned<String>>,
}

/// A backend pool: VMs, standalone NICs and/or one scale set of the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Standalone NICs (the `nics:` section).
    #[serde(default)]
    pub nics: Option<Spanned<StrList>>,
    /// VM names (their first NIC joins).
    #[serde(default)]
    pub vms: Option<Spanned<StrList>>,
    /// Scale set whose instances join.
    #[serde(default)]
    pub scale_set: Option<Spanned<String>>,
}

/// A health probe.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpecY {
    /// Tcp (default) or Http.
    #[serde(default)]
    pub protocol: Option<Spanned<String>>,
    /// Port probed on each backend.
    pub port: Spanned<u32>,
    /// HTTP path (default `/`).
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    /// HTTP status that means healthy (default 200).
    #[serde(default)]
    pub expected_status: Option<Spanned<u32>>,
    /// Seconds between probes (default 5).
    #[serde(default)]
    pub interval_seconds: Option<Spanned<u32>>,
    /// Failures in a row that take a backend out (default 2).
    #[serde(default)]
    pub unhealthy_threshold: Option<Spanned<u32>>,
    /// Passive checking: failed connection attempts of TCP rules take a
    /// backend out as well (default true).
    #[serde(default)]
    pub passive: Option<Spanned<bool>>,
}

/// A load-balancing rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbRuleSpecY {
    /// Tcp (default) or Udp.
    #[serde(default)]
    pub protocol: Option<Spanned<String>>,
    /// Port on the frontend.
    pub frontend_port: Spanned<u32>,
    /// Port on the backends (default: the frontend port).
    #[serde(default)]
    pub backend_port: Option<Spanned<u32>>,
    /// Pool of this load balancer.
    pub pool: Spanned<String>,
    /// Probe of this load balancer.
    #[serde(default)]
    pub probe: Option<Spanned<String>>,
    /// FiveTuple (default), SourceIp, SourceIpProtocol, RoundRobin,
    /// WeightedRoundRobin or LeastConnections.
    #[serde(default)]
    pub algorithm: Option<Spanned<String>>,
    /// 4–100 minutes (default 4).
    #[serde(default)]
    pub idle_timeout_minutes: Option<Spanned<u32>>,
    /// 1–6000 seconds (overrides minutes).
    #[serde(default)]
    pub idle_timeout_seconds: Option<Spanned<u32>>,
    /// PROXY protocol v2 header to the backends (TCP: once per connection;
    /// UDP: in front of every datagram).
    #[serde(default)]
    pub proxy_protocol: Option<Spanned<bool>>,
}

/// A NIC: under a VM's `nics:`, or standalone in the top-level `nics:`
/// section (Azure's NIC resource: a TAP for a VM managed elsewhere).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicSpecY {
    /// `SUBNET` or `VNET/SUBNET`.
    pub subnet: Spanned<String>,
    /// Static private address (default: the subnet's next free one).
    #[serde(default)]
    pub ip: Option<Spanned<String>>,
    /// NSG of the NIC.
    #[serde(default)]
    pub nsg: Option<Spanned<String>>,
    /// ASGs the NIC joins.
    #[serde(default)]
    pub asgs: Option<Spanned<StrList>>,
    /// Public IP of the file.
    #[serde(default)]
    pub public_ip: Option<Spanned<String>>,
}

/// A data disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSpecY {
    /// Size of a new raw disk (`1G`, `512M`).
    #[serde(default)]
    pub size: Option<Spanned<String>>,
    /// Existing image file instead.
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    /// Read-only.
    #[serde(default)]
    pub readonly: Option<bool>,
}

/// Compute settings shared by VMs and scale sets (serde's `flatten`
/// would lose the spans, so both specs list the fields and lend them here).
#[derive(Debug, Clone, Copy)]
pub struct Machine<'a> {
    /// Size preset.
    pub size: Option<&'a Spanned<String>>,
    /// vCPUs.
    pub cpus: Option<&'a Spanned<u32>>,
    /// Memory.
    pub memory: Option<&'a Spanned<String>>,
    /// Image.
    pub image: Option<&'a Spanned<String>>,
    /// Data disks.
    pub disks: &'a [DiskSpecY],
    /// Tags.
    pub tags: &'a BTreeMap<String, String>,
}

macro_rules! machine_of {
    ($t:ty) => {
        impl $t {
            /// The compute settings.
            pub fn machine(&self) -> Machine<'_> {
                Machine {
                    size: self.size.as_ref(),
                    cpus: self.cpus.as_ref(),
                    memory: self.memory.as_ref(),
                    image: self.image.as_ref(),
                    disks: &self.disks,
                    tags: &self.tags,
                }
            }
        }
    };
}
machine_of!(VmSpec);
machine_of!(ScaleSetSpec);

/// A VM: one implied NIC in `subnet`, or explicit `nics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// `SUBNET` or `VNET/SUBNET` of the implied NIC.
    #[serde(default)]
    pub subnet: Option<Spanned<String>>,
    /// Static private address of the implied NIC.
    #[serde(default)]
    pub ip: Option<Spanned<String>>,
    /// NSG of the implied NIC.
    #[serde(default)]
    pub nsg: Option<Spanned<String>>,
    /// ASGs of the implied NIC.
    #[serde(default)]
    pub asgs: Option<Spanned<StrList>>,
    /// Public IP of the implied NIC.
    #[serde(default)]
    pub public_ip: Option<Spanned<String>>,
    /// Explicit NICs by name, instead of `subnet`.
    #[serde(default)]
    pub nics: Option<Spanned<Named<NicSpecY>>>,
    /// Size preset (Azure-style, e.g. `B1s`); or `cpus` and `memory`.
    #[serde(default)]
    pub size: Option<Spanned<String>>,
    /// vCPUs.
    #[serde(default)]
    pub cpus: Option<Spanned<u32>>,
    /// Memory (`128M`, `1G`, or MiB as a number).
    #[serde(default)]
    pub memory: Option<Spanned<String>>,
    /// Image name (default: the cached default guest images).
    #[serde(default)]
    pub image: Option<Spanned<String>>,
    /// Data disks.
    #[serde(default)]
    pub disks: Vec<DiskSpecY>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// An autoscale rule on average vCPU utilization (like a Kubernetes
/// HorizontalPodAutoscaler); `nimbus autoscale` runs it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscaleSpecY {
    /// Fewest instances (at least 1).
    pub min_replicas: Spanned<u32>,
    /// Most instances.
    pub max_replicas: Spanned<u32>,
    /// Average vCPU utilization to aim for, percent (default 60).
    #[serde(default)]
    pub target_cpu_percent: Option<Spanned<u32>>,
    /// Seconds after a change before the next one (default 120).
    #[serde(default)]
    pub cooldown_seconds: Option<Spanned<u32>>,
}

/// A scale set: `replicas` identical VMs `NAME-0`, `NAME-1`, ...
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleSetSpec {
    /// Number of instances (0–100); with `autoscale`, the initial number.
    pub replicas: Spanned<u32>,
    /// Autoscale rule.
    #[serde(default)]
    pub autoscale: Option<Spanned<AutoscaleSpecY>>,
    /// `SUBNET` or `VNET/SUBNET` of each instance's NIC.
    pub subnet: Spanned<String>,
    /// NSG of each NIC.
    #[serde(default)]
    pub nsg: Option<Spanned<String>>,
    /// ASGs of each NIC.
    #[serde(default)]
    pub asgs: Option<Spanned<StrList>>,
    /// Size preset (Azure-style, e.g. `B1s`); or `cpus` and `memory`.
    #[serde(default)]
    pub size: Option<Spanned<String>>,
    /// vCPUs.
    #[serde(default)]
    pub cpus: Option<Spanned<u32>>,
    /// Memory (`128M`, `1G`, or MiB as a number).
    #[serde(default)]
    pub memory: Option<Spanned<String>>,
    /// Image name (default: the cached default guest images).
    #[serde(default)]
    pub image: Option<Spanned<String>>,
    /// Data disks.
    #[serde(default)]
    pub disks: Vec<DiskSpecY>,
    /// Free-form tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

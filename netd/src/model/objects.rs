//! VNets, subnets, NICs, NSGs, ASGs and public IPs as stored in netd's state.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{Cidr, MacAddr, Name, SecurityRule};

/// A short, stable, never-reused identifier that host objects are named
/// after (`nb-<id>`, `nt-<id>`, nft chains), so interface names fit
/// IFNAMSIZ whatever the user's names are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShortId(pub u64);

impl fmt::Display for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

impl ShortId {
    /// Name of the VNet bridge with this id.
    pub fn bridge_name(&self) -> String {
        format!("{}{self}", crate::BRIDGE_PREFIX)
    }

    /// Name of the NIC's host-side port (TAP or veth) with this id.
    pub fn port_name(&self) -> String {
        format!("{}{self}", crate::PORT_PREFIX)
    }
}

/// A virtual network: one Linux bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VNet {
    /// User name.
    pub name: Name,
    /// Host id.
    pub id: ShortId,
    /// Address space: one or more prefixes.
    pub address_space: Vec<Cidr>,
    /// Subnets, in creation order.
    pub subnets: Vec<Subnet>,
}

impl VNet {
    /// The subnet called `name`.
    pub fn subnet(&self, name: &Name) -> Option<&Subnet> {
        self.subnets.iter().find(|s| &s.name == name)
    }
}

/// Address bookkeeping of one subnet. Addresses are handed out in order
/// and never again, even after the NIC that had one is gone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam {
    /// Host index (offset into the subnet) the next dynamic address tries.
    pub next_index: u64,
    /// Host indexes at or above `next_index` that were given out as static
    /// addresses; dynamic allocation skips them.
    #[serde(default)]
    pub static_above: Vec<u64>,
}

/// A subnet of a VNet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// User name (unique within the VNet).
    pub name: Name,
    /// The prefix.
    pub cidr: Cidr,
    /// NSG attached to the subnet.
    pub nsg: Option<Name>,
    /// Address bookkeeping.
    pub ipam: Ipam,
}

impl Subnet {
    /// Azure reserves the network address, the next three (gateway and two
    /// for DNS) and the broadcast address.
    pub const RESERVED_LOW: u64 = 4;

    /// The gateway: first usable address (x.x.x.1), held by the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.cidr.first().wrapping_add(1))
    }

    /// True when `address` may be given to a NIC (inside, not reserved).
    pub fn is_assignable(&self, address: Ipv4Addr) -> bool {
        let a = u32::from(address);
        self.cidr.contains(address)
            && u64::from(a - self.cidr.first()) >= Self::RESERVED_LOW
            && a != self.cidr.last()
    }
}

/// How a NIC is realized on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum NicBackend {
    /// A persistent TAP a VMM opens; `owner` lets a non-root VMM open it.
    Tap {
        /// uid allowed to open the TAP.
        owner: Option<u32>,
    },
    /// A veth pair whose peer lives in network namespace `netns` as `eth0`,
    /// configured with the NIC's MAC, IP and default route: the stand-in
    /// VM of tests and labs.
    Veth {
        /// Name under /run/netns.
        netns: String,
    },
}

/// A network interface of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// User name.
    pub name: Name,
    /// Host id.
    pub id: ShortId,
    /// VNet the subnet belongs to.
    pub vnet: Name,
    /// Subnet.
    pub subnet: Name,
    /// MAC address.
    pub mac: MacAddr,
    /// Private IP from the subnet.
    pub ip: Ipv4Addr,
    /// NSG attached to the NIC.
    pub nsg: Option<Name>,
    /// ASGs the NIC is a member of.
    pub asgs: Vec<Name>,
    /// Public IP attached to the NIC.
    pub public_ip: Option<Name>,
    /// Host realization.
    pub backend: NicBackend,
}

/// A network security group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nsg {
    /// User name.
    pub name: Name,
    /// Host id (chain names).
    pub id: ShortId,
    /// User rules (default rules are implicit and listed with them).
    pub rules: Vec<SecurityRule>,
}

/// An application security group: a named set of NICs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Asg {
    /// User name.
    pub name: Name,
    /// Host id (nft set name).
    pub id: ShortId,
}

/// Public IP allocation method, Azure's meaning: a static address is
/// reserved when the public IP is created; a dynamic one only while the
/// public IP is attached to a NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Allocation {
    /// Reserved at creation, kept until deleted.
    Static,
    /// Allocated on attach, released on detach.
    Dynamic,
}

impl std::str::FromStr for Allocation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "static" => Ok(Allocation::Static),
            "dynamic" => Ok(Allocation::Dynamic),
            _ => Err("expected static or dynamic".into()),
        }
    }
}

impl fmt::Display for Allocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Allocation::Static => "Static",
            Allocation::Dynamic => "Dynamic",
        })
    }
}

/// A public IP address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicIp {
    /// User name.
    pub name: Name,
    /// Static or dynamic.
    pub allocation: Allocation,
    /// The address, when allocated.
    pub address: Option<Ipv4Addr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_reserved_addresses() {
        let s = Subnet {
            name: "s".parse().unwrap(),
            cidr: "10.0.1.0/24".parse().unwrap(),
            nsg: None,
            ipam: Ipam::default(),
        };
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 0, 1, 1));
        for reserved in [0, 1, 2, 3, 255] {
            assert!(
                !s.is_assignable(Ipv4Addr::new(10, 0, 1, reserved)),
                "{reserved}"
            );
        }
        assert!(s.is_assignable(Ipv4Addr::new(10, 0, 1, 4)));
        assert!(s.is_assignable(Ipv4Addr::new(10, 0, 1, 254)));
        assert!(!s.is_assignable(Ipv4Addr::new(10, 0, 2, 4)));
    }

    #[test]
    fn host_names_fit_ifnamsiz() {
        assert!(ShortId(crate::state::MAX_SERIAL).bridge_name().len() <= 15);
        assert!(format!("{}p", ShortId(crate::state::MAX_SERIAL).port_name()).len() <= 15);
    }
}

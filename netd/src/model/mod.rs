//! The network objects and the value types they are made of. Everything here
//! is plain data, validated when parsed.

mod cidr;
mod load_balancer;
mod mac;
mod name;
mod objects;
mod security;

pub use cidr::{complement, Cidr};
pub use load_balancer::{
    Algorithm, BackendPool, Frontend, LbProtocol, LbRule, LoadBalancer, PoolMember, Probe,
    ProbeCheck, Weight,
};
pub use mac::MacAddr;
pub use name::Name;
pub use objects::{Allocation, Asg, Ipam, Nic, NicBackend, Nsg, PublicIp, ShortId, Subnet, VNet};
pub use security::{
    default_rules, Access, AddressPrefix, Direction, PortRange, Priority, Protocol, SecurityRule,
    ServiceTag,
};

//! nimbus-netd: the host network daemon of nimbus.
//!
//! It owns every host network object nimbus creates: a Linux bridge per
//! VNet, a TAP (or, for tests and labs, a veth into a network namespace) per
//! NIC, and nimbus's own nftables tables for NSGs/ASGs, anti-spoofing and
//! public IP NAT. Objects follow Azure's model and rules (see DESIGN.md).
//!
//! * [`model`]: the value types and objects.
//! * [`state`]: the desired state, its pure validated operations, and its
//!   atomic persistence.
//! * [`nft`]: the ruleset compiler and its atomic application.
//! * [`host`]: links, addresses, TAPs and namespaces through rtnetlink and
//!   ioctls.
//! * [`lb`]: the load balancer's data path (userspace L4 proxy), probes
//!   and metrics.
//! * [`daemon`]: ties them together; [`api`]: the Unix socket protocol.

pub mod api;
pub mod daemon;
pub mod error;
pub mod host;
pub mod lb;
pub mod model;
pub mod nft;
pub mod state;

/// Prefix of VNet bridges (`nb-<id>`).
pub const BRIDGE_PREFIX: &str = "nb-";
/// Prefix of NIC ports, TAPs or veths (`nt-<id>`).
pub const PORT_PREFIX: &str = "nt-";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/nimbus/netd";
/// Name of the API socket inside the state directory.
pub const SOCKET_NAME: &str = "netd.sock";

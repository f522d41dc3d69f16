//! Load balancers as stored in netd's state, with Azure's vocabulary:
//! a frontend IP configuration, backend pools of NICs, health probes and
//! load-balancing rules. The data path lives in [`crate::lb`].

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Name;

/// Where a load balancer listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Frontend {
    /// Public load balancer: listens on a public IP object's address (put
    /// on `lo` in netd's namespace; the uplink routes the pool to the host).
    Public {
        /// The public IP object.
        public_ip: Name,
    },
    /// Internal load balancer: a private address of a subnet (put on the
    /// VNet's bridge as a /32 so the VNet's NICs reach it directly).
    Internal {
        /// VNet.
        vnet: Name,
        /// Subnet the address belongs to.
        subnet: Name,
        /// The private address (taken from the subnet's IPAM).
        ip: Ipv4Addr,
    },
}

/// Weight of a pool member (HAProxy-like 1–100; Azure has no weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Weight(pub u32);

impl Weight {
    /// Smallest weight.
    pub const MIN: u32 = 1;
    /// Largest weight.
    pub const MAX: u32 = 100;

    /// Checks the range.
    pub fn new(value: u32) -> Result<Self, String> {
        if (Self::MIN..=Self::MAX).contains(&value) {
            Ok(Weight(value))
        } else {
            Err(format!(
                "weight {value} is outside {}-{}",
                Self::MIN,
                Self::MAX
            ))
        }
    }
}

impl Default for Weight {
    fn default() -> Self {
        Weight(1)
    }
}

/// One member of a backend pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolMember {
    /// The NIC (its private IP is the backend address).
    pub nic: Name,
    /// Share of new connections for the weighted algorithms.
    #[serde(default)]
    pub weight: Weight,
}

/// A backend address pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendPool {
    /// Name, unique in the load balancer.
    pub name: Name,
    /// Members, in the order they were added.
    pub members: Vec<PoolMember>,
}

/// What a health probe does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ProbeCheck {
    /// A TCP connection that completes.
    Tcp,
    /// `GET path` over HTTP/1.0 answered with `expected_status`.
    Http {
        /// Request path, starting with `/`.
        path: String,
        /// Status that means healthy (Azure: 200).
        expected_status: u16,
    },
}

/// A health probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Name, unique in the load balancer.
    pub name: Name,
    /// TCP or HTTP.
    pub check: ProbeCheck,
    /// Port probed on each backend.
    pub port: u16,
    /// Seconds between probes.
    pub interval_seconds: u32,
    /// Consecutive failures that take a backend out (Azure's
    /// "unhealthy threshold", numberOfProbes); one success brings it back.
    pub unhealthy_threshold: u32,
    /// Passive checking as well (HAProxy's `observe layer4` with
    /// `on-error mark-down`): as many failed connection attempts in a row
    /// of the TCP data path as the unhealthy threshold take a backend out
    /// at once, without waiting for the probe; the probe brings it back.
    /// On by default, also for state files from before the field.
    #[serde(default = "passive_default")]
    pub passive: bool,
}

fn passive_default() -> bool {
    true
}

impl Probe {
    /// Interval range. Azure's minimum is 5 s; nimbus allows 1 s so that
    /// labs and tests react quickly.
    pub const INTERVAL: std::ops::RangeInclusive<u32> = 1..=2_147_483;
    /// Threshold range.
    pub const THRESHOLD: std::ops::RangeInclusive<u32> = 1..=100;
}

macro_rules! lb_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $($(#[$vdoc])* #[serde(rename = $text)] $variant),+ }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $(Self::$variant => $text),+ })
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                $(if s.eq_ignore_ascii_case($text) { return Ok(Self::$variant); })+
                Err(format!("expected one of: {}", [$($text),+].join(", ")))
            }
        }
    };
}

lb_enum!(
    /// Transport a rule balances.
    LbProtocol { Tcp = "Tcp", Udp = "Udp" }
);

lb_enum!(
    /// How a rule picks a backend for a new flow. The first three are
    /// Azure's distribution modes (`Default`, `SourceIP`,
    /// `SourceIPProtocol`) and use consistent (Maglev) hashing.
    Algorithm {
        /// Hash of source IP, source port, destination IP, destination port
        /// and protocol (Azure's default).
        FiveTuple = "FiveTuple",
        /// Hash of source and destination IP: session affinity per client.
        SourceIp = "SourceIp",
        /// Hash of source IP, destination IP and protocol.
        SourceIpProtocol = "SourceIpProtocol",
        /// Each new flow to the next available backend.
        RoundRobin = "RoundRobin",
        /// Round robin in proportion to the members' weights.
        WeightedRoundRobin = "WeightedRoundRobin",
        /// The backend with the fewest active flows per unit of weight.
        LeastConnections = "LeastConnections",
    }
);

// The enum comes from `lb_enum!`, which has no `#[default]` variant.
#[allow(clippy::derivable_impls)]
impl Default for Algorithm {
    fn default() -> Self {
        Algorithm::FiveTuple
    }
}

/// A load-balancing rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbRule {
    /// Name, unique in the load balancer.
    pub name: Name,
    /// TCP or UDP.
    pub protocol: LbProtocol,
    /// Port on the frontend.
    pub frontend_port: u16,
    /// Port on the backends.
    pub backend_port: u16,
    /// Backend pool.
    pub pool: Name,
    /// Health probe (none: every member counts as healthy).
    pub probe: Option<Name>,
    /// Idle timeout in seconds (Azure: 4–100 minutes; nimbus also takes
    /// seconds, 1 s and up, for labs).
    pub idle_timeout_seconds: u32,
    /// Distribution algorithm.
    pub algorithm: Algorithm,
    /// Send a PROXY protocol v2 header to the backend so it learns the
    /// client's address: first on a TCP connection, in front of every
    /// datagram of a UDP session.
    pub proxy_protocol: bool,
}

impl LbRule {
    /// Azure's idle timeout range in minutes.
    pub const IDLE_MINUTES: std::ops::RangeInclusive<u32> = 4..=100;
    /// Azure's default idle timeout in minutes.
    pub const DEFAULT_IDLE_MINUTES: u32 = 4;
}

/// A load balancer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadBalancer {
    /// Name.
    pub name: Name,
    /// Frontend IP configuration.
    pub frontend: Frontend,
    /// Backend pools.
    pub pools: Vec<BackendPool>,
    /// Health probes.
    pub probes: Vec<Probe>,
    /// Rules.
    pub rules: Vec<LbRule>,
}

impl LoadBalancer {
    /// The pool called `name`.
    pub fn pool(&self, name: &Name) -> Option<&BackendPool> {
        self.pools.iter().find(|p| &p.name == name)
    }

    /// The probe called `name`.
    pub fn probe(&self, name: &Name) -> Option<&Probe> {
        self.probes.iter().find(|p| &p.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_range_checked() {
        assert!(Weight::new(0).is_err());
        assert!(Weight::new(101).is_err());
        assert_eq!(Weight::new(100), Ok(Weight(100)));
    }

    #[test]
    fn algorithms_parse_case_insensitively() {
        assert_eq!("roundrobin".parse(), Ok(Algorithm::RoundRobin));
        assert_eq!("SOURCEIP".parse(), Ok(Algorithm::SourceIp));
        assert!("Random".parse::<Algorithm>().is_err());
        assert_eq!(Algorithm::default(), Algorithm::FiveTuple);
    }
}

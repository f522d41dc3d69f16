//! The wire protocol of netd's Unix socket: one JSON object per line each
//! way. Requests carry user input as text; netd parses and validates it so
//! that refusals name the object, field and value.

use serde::{Deserialize, Serialize};

use crate::error::NetError;

/// One security rule as a client writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RuleSpec {
    /// Rule name.
    pub name: String,
    /// 100–4096.
    pub priority: u32,
    /// `Inbound` or `Outbound`.
    pub direction: String,
    /// `Allow` or `Deny`.
    pub access: String,
    /// `Tcp`, `Udp`, `Icmp`, `Esp`, `Ah` or `*`.
    pub protocol: String,
    /// Source prefixes: CIDR, address, `*`, service tag or `asg:NAME`.
    pub sources: Vec<String>,
    /// Source port ranges (`*`, `80`, `1000-2000`).
    pub source_ports: Vec<String>,
    /// Destination prefixes.
    pub destinations: Vec<String>,
    /// Destination port ranges.
    pub destination_ports: Vec<String>,
}

/// A request to netd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Liveness check.
    Ping,
    /// The nftables ruleset netd generated (for debugging).
    Ruleset,
    /// Create a VNet.
    VnetCreate {
        /// Name.
        name: String,
        /// Address space prefixes.
        address_space: Vec<String>,
    },
    /// List VNets.
    VnetList,
    /// Show a VNet.
    VnetShow {
        /// Name.
        name: String,
    },
    /// Delete a VNet; with NICs only when `force`.
    VnetDelete {
        /// Name.
        name: String,
        /// Also delete its NICs.
        #[serde(default)]
        force: bool,
    },
    /// Create a subnet.
    SubnetCreate {
        /// VNet.
        vnet: String,
        /// Name.
        name: String,
        /// Prefix.
        cidr: String,
        /// NSG to attach.
        #[serde(default)]
        nsg: Option<String>,
    },
    /// Change a subnet's prefix (only while it has no NICs) or NSG.
    SubnetUpdate {
        /// VNet.
        vnet: String,
        /// Name.
        name: String,
        /// New prefix.
        #[serde(default)]
        cidr: Option<String>,
        /// NSG to attach.
        #[serde(default)]
        nsg: Option<String>,
        /// Detach the NSG.
        #[serde(default)]
        clear_nsg: bool,
    },
    /// List subnets (of one VNet or all).
    SubnetList {
        /// VNet filter.
        #[serde(default)]
        vnet: Option<String>,
    },
    /// Show a subnet.
    SubnetShow {
        /// VNet.
        vnet: String,
        /// Name.
        name: String,
    },
    /// Delete a subnet without NICs.
    SubnetDelete {
        /// VNet.
        vnet: String,
        /// Name.
        name: String,
    },
    /// Create a NIC.
    NicCreate {
        /// Name.
        name: String,
        /// VNet.
        vnet: String,
        /// Subnet.
        subnet: String,
        /// Static private IP (else the next free one).
        #[serde(default)]
        ip: Option<String>,
        /// MAC (else generated).
        #[serde(default)]
        mac: Option<String>,
        /// NSG.
        #[serde(default)]
        nsg: Option<String>,
        /// ASGs.
        #[serde(default)]
        asgs: Vec<String>,
        /// Public IP.
        #[serde(default)]
        public_ip: Option<String>,
        /// uid that may open the TAP.
        #[serde(default)]
        tap_owner: Option<u32>,
        /// Realize as a veth whose peer goes into this network namespace.
        #[serde(default)]
        attach_netns: Option<String>,
    },
    /// Change a NIC's NSG, ASGs or public IP.
    NicUpdate {
        /// Name.
        name: String,
        /// NSG to attach.
        #[serde(default)]
        nsg: Option<String>,
        /// Detach the NSG.
        #[serde(default)]
        clear_nsg: bool,
        /// Replace the ASG membership.
        #[serde(default)]
        asgs: Option<Vec<String>>,
        /// Public IP to attach.
        #[serde(default)]
        public_ip: Option<String>,
        /// Detach the public IP.
        #[serde(default)]
        clear_public_ip: bool,
    },
    /// List NICs.
    NicList,
    /// Show a NIC.
    NicShow {
        /// Name.
        name: String,
    },
    /// Delete a NIC.
    NicDelete {
        /// Name.
        name: String,
    },
    /// Create an NSG, optionally with rules.
    NsgCreate {
        /// Name.
        name: String,
        /// Initial rules.
        #[serde(default)]
        rules: Vec<RuleSpec>,
    },
    /// List NSGs.
    NsgList,
    /// Show an NSG with its rules (default rules included).
    NsgShow {
        /// Name.
        name: String,
    },
    /// Delete an NSG that is not attached.
    NsgDelete {
        /// Name.
        name: String,
    },
    /// Add a rule to an NSG.
    NsgRuleAdd {
        /// NSG.
        nsg: String,
        /// The rule.
        rule: RuleSpec,
    },
    /// Replace all user rules of an NSG in one change.
    NsgRuleReplace {
        /// NSG.
        nsg: String,
        /// The rules.
        rules: Vec<RuleSpec>,
    },
    /// List an NSG's rules, default rules included.
    NsgRuleList {
        /// NSG.
        nsg: String,
    },
    /// Delete a rule.
    NsgRuleDelete {
        /// NSG.
        nsg: String,
        /// Rule name.
        name: String,
    },
    /// Create an ASG.
    AsgCreate {
        /// Name.
        name: String,
    },
    /// List ASGs.
    AsgList,
    /// Show an ASG and its members.
    AsgShow {
        /// Name.
        name: String,
    },
    /// Delete an unused ASG.
    AsgDelete {
        /// Name.
        name: String,
    },
    /// Create a public IP.
    PublicIpCreate {
        /// Name.
        name: String,
        /// `static` or `dynamic`.
        #[serde(default = "default_allocation")]
        allocation: String,
        /// Address (static only; else taken from the pool).
        #[serde(default)]
        address: Option<String>,
    },
    /// List public IPs.
    PublicIpList,
    /// Show a public IP.
    PublicIpShow {
        /// Name.
        name: String,
    },
    /// Delete an unattached public IP.
    PublicIpDelete {
        /// Name.
        name: String,
    },
    /// Create a load balancer: public (`public_ip`) or internal (`vnet`,
    /// `subnet`, optional `private_ip`).
    LbCreate {
        /// Name.
        name: String,
        /// Public IP object of a public load balancer.
        #[serde(default)]
        public_ip: Option<String>,
        /// VNet of an internal load balancer.
        #[serde(default)]
        vnet: Option<String>,
        /// Subnet of an internal load balancer.
        #[serde(default)]
        subnet: Option<String>,
        /// Private frontend address (else the subnet's next free one).
        #[serde(default)]
        private_ip: Option<String>,
    },
    /// List load balancers.
    LbList,
    /// Show a load balancer with its pools, probes, rules and, from the
    /// running data path, probe state and counters.
    LbShow {
        /// Name.
        name: String,
    },
    /// Delete a load balancer (open connections are closed).
    LbDelete {
        /// Name.
        name: String,
    },
    /// Create a backend pool.
    LbPoolCreate {
        /// Load balancer.
        lb: String,
        /// Pool name.
        name: String,
        /// Initial members.
        #[serde(default)]
        members: Vec<MemberSpec>,
    },
    /// Add a NIC to a pool.
    LbPoolAdd {
        /// Load balancer.
        lb: String,
        /// Pool.
        pool: String,
        /// The member.
        #[serde(flatten)]
        member: MemberSpec,
    },
    /// Remove a NIC from a pool; its open connections drain.
    LbPoolRemove {
        /// Load balancer.
        lb: String,
        /// Pool.
        pool: String,
        /// NIC.
        nic: String,
    },
    /// Delete a pool no rule uses.
    LbPoolDelete {
        /// Load balancer.
        lb: String,
        /// Pool.
        name: String,
    },
    /// Create a health probe.
    LbProbeCreate {
        /// Load balancer.
        lb: String,
        /// The probe.
        #[serde(flatten)]
        probe: ProbeSpec,
    },
    /// Delete a probe no rule uses.
    LbProbeDelete {
        /// Load balancer.
        lb: String,
        /// Probe.
        name: String,
    },
    /// Create a load-balancing rule.
    LbRuleCreate {
        /// Load balancer.
        lb: String,
        /// The rule.
        #[serde(flatten)]
        rule: LbRuleSpec,
    },
    /// Delete a rule (its open connections are closed).
    LbRuleDelete {
        /// Load balancer.
        lb: String,
        /// Rule.
        name: String,
    },
}

/// A pool member as a client writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSpec {
    /// NIC name.
    pub nic: String,
    /// Weight 1–100 (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
}

/// A health probe as a client writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSpec {
    /// Name.
    pub name: String,
    /// `Tcp` or `Http`.
    pub protocol: String,
    /// Port probed on the backends.
    pub port: u32,
    /// HTTP path (Http only; default `/`).
    #[serde(default)]
    pub path: Option<String>,
    /// HTTP status that means healthy (Http only; default 200).
    #[serde(default)]
    pub expected_status: Option<u32>,
    /// Seconds between probes (default 5).
    #[serde(default)]
    pub interval_seconds: Option<u32>,
    /// Failures in a row that take a backend out (default 2): failed
    /// probes, or failed connection attempts of a TCP rule's data path
    /// when passive checking is on.
    #[serde(default)]
    pub unhealthy_threshold: Option<u32>,
    /// Passive checking: the TCP data path's failed connection attempts
    /// count too and take a backend out at once (default true).
    #[serde(default)]
    pub passive: Option<bool>,
}

/// A load-balancing rule as a client writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbRuleSpec {
    /// Name.
    pub name: String,
    /// `Tcp` or `Udp`.
    pub protocol: String,
    /// Frontend port.
    pub frontend_port: u32,
    /// Backend port (default: the frontend port).
    #[serde(default)]
    pub backend_port: Option<u32>,
    /// Backend pool.
    pub pool: String,
    /// Health probe.
    #[serde(default)]
    pub probe: Option<String>,
    /// Idle timeout, Azure's way (4–100 minutes; default 4).
    #[serde(default)]
    pub idle_timeout_minutes: Option<u32>,
    /// Idle timeout in seconds (nimbus extension for labs; overrides minutes).
    #[serde(default)]
    pub idle_timeout_seconds: Option<u32>,
    /// `FiveTuple` (default), `SourceIp`, `SourceIpProtocol`, `RoundRobin`,
    /// `WeightedRoundRobin` or `LeastConnections`.
    #[serde(default)]
    pub algorithm: Option<String>,
    /// Send a PROXY protocol v2 header to backends (TCP: once per
    /// connection; UDP: in front of every datagram).
    #[serde(default)]
    pub proxy_protocol: bool,
}

fn default_allocation() -> String {
    "static".into()
}

impl Request {
    /// True for requests that change state (and so the host).
    pub fn is_change(&self) -> bool {
        !matches!(
            self,
            Request::Ping
                | Request::Ruleset
                | Request::VnetList
                | Request::VnetShow { .. }
                | Request::SubnetList { .. }
                | Request::SubnetShow { .. }
                | Request::NicList
                | Request::NicShow { .. }
                | Request::NsgList
                | Request::NsgShow { .. }
                | Request::NsgRuleList { .. }
                | Request::AsgList
                | Request::AsgShow { .. }
                | Request::PublicIpList
                | Request::PublicIpShow { .. }
                | Request::LbList
                | Request::LbShow { .. }
        )
    }
}

/// netd's answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Response {
    /// Success with a JSON result (an object, a list, or null).
    Ok {
        /// Always true.
        ok: bool,
        /// The result.
        result: serde_json::Value,
    },
    /// Refusal or failure.
    Err {
        /// Always false.
        ok: bool,
        /// What went wrong.
        error: NetError,
    },
}

impl Response {
    /// Wraps a result.
    pub fn from_result(r: Result<serde_json::Value, NetError>) -> Self {
        match r {
            Ok(result) => Response::Ok { ok: true, result },
            Err(error) => Response::Err { ok: false, error },
        }
    }

    /// Back to a `Result`.
    pub fn into_result(self) -> Result<serde_json::Value, NetError> {
        match self {
            Response::Ok { result, .. } => Ok(result),
            Response::Err { error, .. } => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format() {
        let r: Request = serde_json::from_str(
            r#"{"op":"vnet_create","name":"v","address_space":["10.0.0.0/16"]}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::VnetCreate {
                name: "v".into(),
                address_space: vec!["10.0.0.0/16".into()]
            }
        );
        assert!(r.is_change());
        assert!(!Request::NicList.is_change());
    }

    #[test]
    fn response_round_trip() {
        let ok = Response::from_result(Ok(serde_json::json!({"a": 1})));
        let text = serde_json::to_string(&ok).unwrap();
        assert_eq!(text, r#"{"ok":true,"result":{"a":1}}"#);
        let err = Response::from_result(Err(NetError::BadRequest { reason: "x".into() }));
        let back: Response = serde_json::from_str(&serde_json::to_string(&err).unwrap()).unwrap();
        assert!(back.into_result().is_err());
    }
}

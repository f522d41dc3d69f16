//! Network security rules with Azure's vocabulary: priority, direction,
//! access, protocol, address prefixes (CIDR, `*`, service tags, ASGs) and
//! port ranges, plus Azure's six default rules.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Cidr, Name};

/// A rule priority: 100–4096 for user rules (lower wins); default rules use
/// 65000–65500.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Priority(u16);

impl Priority {
    /// Lowest number a user rule may use.
    pub const MIN: u16 = 100;
    /// Highest number a user rule may use.
    pub const MAX: u16 = 4096;

    /// A user rule's priority, checked against Azure's range.
    pub fn user(value: u32) -> Result<Self, String> {
        if (u32::from(Self::MIN)..=u32::from(Self::MAX)).contains(&value) {
            Ok(Priority(value as u16))
        } else {
            Err(format!(
                "priority {value} is outside {}-{}",
                Self::MIN,
                Self::MAX
            ))
        }
    }

    const fn default_rule(value: u16) -> Self {
        Priority(value)
    }

    /// The number.
    pub fn get(&self) -> u16 {
        self.0
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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

text_enum!(
    /// Which traffic a rule looks at, seen from the NIC.
    Direction { Inbound = "Inbound", Outbound = "Outbound" }
);
text_enum!(
    /// What a matching rule does.
    Access { Allow = "Allow", Deny = "Deny" }
);
text_enum!(
    /// The IP protocols Azure rules name.
    Protocol { Tcp = "Tcp", Udp = "Udp", Icmp = "Icmp", Esp = "Esp", Ah = "Ah", Any = "*" }
);

impl Protocol {
    /// IP protocol number, `None` for `*`.
    pub fn number(&self) -> Option<u8> {
        match self {
            Protocol::Tcp => Some(6),
            Protocol::Udp => Some(17),
            Protocol::Icmp => Some(1),
            Protocol::Esp => Some(50),
            Protocol::Ah => Some(51),
            Protocol::Any => None,
        }
    }

    /// True for protocols that have ports.
    pub fn has_ports(&self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp | Protocol::Any)
    }
}

/// Azure's service tags usable as a source or destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ServiceTag {
    /// The VNet's address space (the VNet the NIC is in).
    VirtualNetwork,
    /// Everything outside the VNet's address space.
    Internet,
    /// The host itself: netd's load balancer and health probes, which
    /// reach guests from the bridges' gateway addresses.
    AzureLoadBalancer,
}

/// The source or destination of a rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AddressPrefix {
    /// `*`: any address.
    Any,
    /// An IPv4 prefix (a bare address means /32).
    Cidr(Cidr),
    /// A service tag.
    Tag(ServiceTag),
    /// An application security group, written `asg:NAME`.
    Asg(Name),
}

impl fmt::Display for AddressPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressPrefix::Any => f.write_str("*"),
            AddressPrefix::Cidr(c) => write!(f, "{c}"),
            AddressPrefix::Tag(t) => write!(f, "{t:?}"),
            AddressPrefix::Asg(n) => write!(f, "asg:{n}"),
        }
    }
}

impl FromStr for AddressPrefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "*" | "Any" | "any" => return Ok(AddressPrefix::Any),
            "VirtualNetwork" => return Ok(AddressPrefix::Tag(ServiceTag::VirtualNetwork)),
            "Internet" => return Ok(AddressPrefix::Tag(ServiceTag::Internet)),
            "AzureLoadBalancer" => return Ok(AddressPrefix::Tag(ServiceTag::AzureLoadBalancer)),
            _ => {}
        }
        if let Some(asg) = s.strip_prefix("asg:") {
            return asg
                .parse()
                .map(AddressPrefix::Asg)
                .map_err(|e| format!("ASG name: {e}"));
        }
        if s.contains('/') {
            return s.parse().map(AddressPrefix::Cidr);
        }
        if let Ok(addr) = s.parse() {
            return Ok(AddressPrefix::Cidr(Cidr::host(addr)));
        }
        Err(format!(
            "'{s}' is not '*', a CIDR, an address, a service tag (VirtualNetwork, Internet, AzureLoadBalancer) or asg:NAME"
        ))
    }
}

impl TryFrom<String> for AddressPrefix {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<AddressPrefix> for String {
    fn from(p: AddressPrefix) -> String {
        p.to_string()
    }
}

/// An inclusive port range; `*` is 0–65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (inclusive).
    pub last: u16,
}

impl PortRange {
    /// Every port.
    pub const ANY: PortRange = PortRange {
        first: 0,
        last: 65535,
    };

    /// True when this is `*`.
    pub fn is_any(&self) -> bool {
        *self == Self::ANY
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_any() {
            f.write_str("*")
        } else if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Self::ANY);
        }
        let port = |p: &str| -> Result<u16, String> {
            p.parse::<u16>()
                .map_err(|_| format!("'{p}' is not a port (0-65535)"))
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if first > last {
            return Err(format!("range {first}-{last} is reversed"));
        }
        Ok(PortRange { first, last })
    }
}

impl TryFrom<String> for PortRange {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<PortRange> for String {
    fn from(p: PortRange) -> String {
        p.to_string()
    }
}

/// One security rule of an NSG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityRule {
    /// Rule name, unique within the NSG.
    pub name: Name,
    /// Lower numbers are evaluated first.
    pub priority: Priority,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Allow or deny.
    pub access: Access,
    /// IP protocol.
    pub protocol: Protocol,
    /// Source prefixes (any of them).
    pub sources: Vec<AddressPrefix>,
    /// Source port ranges.
    pub source_ports: Vec<PortRange>,
    /// Destination prefixes.
    pub destinations: Vec<AddressPrefix>,
    /// Destination port ranges.
    pub destination_ports: Vec<PortRange>,
}

impl SecurityRule {
    /// Checks what can be checked on the rule alone; `Err` is (field, value, reason).
    pub fn check(&self) -> Result<(), (&'static str, String, String)> {
        if self.sources.is_empty() {
            return Err((
                "source",
                String::new(),
                "at least one source is needed".into(),
            ));
        }
        if self.destinations.is_empty() {
            return Err((
                "destination",
                String::new(),
                "at least one destination is needed".into(),
            ));
        }
        for (field, ports) in [
            ("source_port", &self.source_ports),
            ("destination_port", &self.destination_ports),
        ] {
            if ports.is_empty() {
                return Err((
                    field,
                    String::new(),
                    "at least one port range (or '*') is needed".into(),
                ));
            }
            if !self.protocol.has_ports() {
                if let Some(p) = ports.iter().find(|p| !p.is_any()) {
                    return Err((
                        field,
                        p.to_string(),
                        format!("protocol {} has no ports; use '*'", self.protocol),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Azure's default rules, present in every NSG and evaluated after the
/// user's rules (priorities 65000–65500).
pub fn default_rules() -> Vec<SecurityRule> {
    use AddressPrefix::{Any, Tag};
    use ServiceTag::*;
    let rule = |name: &str, priority, direction, access, src, dst| SecurityRule {
        name: Name::from_str(name).unwrap_or_else(|_| unreachable!("constant name")),
        priority: Priority::default_rule(priority),
        direction,
        access,
        protocol: Protocol::Any,
        sources: vec![src],
        source_ports: vec![PortRange::ANY],
        destinations: vec![dst],
        destination_ports: vec![PortRange::ANY],
    };
    vec![
        rule(
            "AllowVnetInBound",
            65000,
            Direction::Inbound,
            Access::Allow,
            Tag(VirtualNetwork),
            Tag(VirtualNetwork),
        ),
        rule(
            "AllowAzureLoadBalancerInBound",
            65001,
            Direction::Inbound,
            Access::Allow,
            Tag(AzureLoadBalancer),
            Any,
        ),
        rule(
            "DenyAllInBound",
            65500,
            Direction::Inbound,
            Access::Deny,
            Any,
            Any,
        ),
        rule(
            "AllowVnetOutBound",
            65000,
            Direction::Outbound,
            Access::Allow,
            Tag(VirtualNetwork),
            Tag(VirtualNetwork),
        ),
        rule(
            "AllowInternetOutBound",
            65001,
            Direction::Outbound,
            Access::Allow,
            Any,
            Tag(Internet),
        ),
        rule(
            "DenyAllOutBound",
            65500,
            Direction::Outbound,
            Access::Deny,
            Any,
            Any,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_range() {
        assert!(Priority::user(99).is_err());
        assert!(Priority::user(100).is_ok());
        assert!(Priority::user(4096).is_ok());
        assert!(Priority::user(4097).is_err());
        assert!(Priority::user(65000).is_err());
    }

    #[test]
    fn prefixes_parse() {
        assert_eq!("*".parse::<AddressPrefix>().unwrap(), AddressPrefix::Any);
        assert_eq!(
            "10.0.0.5".parse::<AddressPrefix>().unwrap(),
            AddressPrefix::Cidr("10.0.0.5/32".parse().unwrap())
        );
        assert_eq!(
            "Internet".parse::<AddressPrefix>().unwrap(),
            AddressPrefix::Tag(ServiceTag::Internet)
        );
        assert!(matches!(
            "asg:web".parse::<AddressPrefix>().unwrap(),
            AddressPrefix::Asg(_)
        ));
        assert!("asg:-x".parse::<AddressPrefix>().is_err());
        assert!("Intranet".parse::<AddressPrefix>().is_err());
    }

    #[test]
    fn ports_parse() {
        assert_eq!("*".parse::<PortRange>().unwrap(), PortRange::ANY);
        assert_eq!(
            "80".parse::<PortRange>().unwrap(),
            PortRange {
                first: 80,
                last: 80
            }
        );
        assert_eq!(
            "1000-2000".parse::<PortRange>().unwrap().to_string(),
            "1000-2000"
        );
        assert!("2000-1000".parse::<PortRange>().is_err());
        assert!("70000".parse::<PortRange>().is_err());
    }

    #[test]
    fn protocol_names() {
        assert_eq!("tcp".parse::<Protocol>().unwrap(), Protocol::Tcp);
        assert_eq!("*".parse::<Protocol>().unwrap(), Protocol::Any);
        assert!("sctp".parse::<Protocol>().is_err());
    }

    #[test]
    fn icmp_rule_with_ports_is_refused() {
        let mut r = default_rules().remove(0);
        r.protocol = Protocol::Icmp;
        r.destination_ports = vec!["80".parse().unwrap()];
        let (field, value, _) = r.check().unwrap_err();
        assert_eq!((field, value.as_str()), ("destination_port", "80"));
    }

    #[test]
    fn six_default_rules() {
        let names: Vec<String> = default_rules().iter().map(|r| r.name.to_string()).collect();
        assert_eq!(
            names,
            [
                "AllowVnetInBound",
                "AllowAzureLoadBalancerInBound",
                "DenyAllInBound",
                "AllowVnetOutBound",
                "AllowInternetOutBound",
                "DenyAllOutBound"
            ]
        );
    }
}

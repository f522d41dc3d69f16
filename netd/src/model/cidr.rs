//! IPv4 CIDR prefixes (`10.0.0.0/16`) with Azure's strictness: host bits
//! must be zero, so `10.0.0.1/16` is refused with the prefix it meant.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 network prefix whose host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Cidr {
    /// Builds a prefix; refuses set host bits.
    pub fn new(network: Ipv4Addr, prefix_len: u8) -> Result<Self, String> {
        if prefix_len > 32 {
            return Err(format!("prefix length {prefix_len} is larger than 32"));
        }
        let cidr = Cidr {
            network: Ipv4Addr::from(u32::from(network) & mask(prefix_len)),
            prefix_len,
        };
        if cidr.network != network {
            return Err(format!("host bits are set; the network prefix is {cidr}"));
        }
        Ok(cidr)
    }

    /// The prefix of exactly one address.
    pub fn host(address: Ipv4Addr) -> Self {
        Cidr {
            network: address,
            prefix_len: 32,
        }
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length (0–32).
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Number of addresses covered (2^(32-len)), as u64 so /0 fits.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_len))
    }

    /// First address as an integer.
    pub fn first(&self) -> u32 {
        u32::from(self.network)
    }

    /// Last address (the broadcast address) as an integer.
    pub fn last(&self) -> u32 {
        self.first() | !mask(self.prefix_len)
    }

    /// The `index`-th address of the prefix, if inside it.
    pub fn nth(&self, index: u64) -> Option<Ipv4Addr> {
        (index < self.size()).then(|| Ipv4Addr::from(self.first() + index as u32))
    }

    /// True when `address` is inside this prefix.
    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & mask(self.prefix_len) == self.first()
    }

    /// True when `other` lies wholly inside this prefix.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix_len >= self.prefix_len && self.contains(other.network)
    }

    /// True when the two prefixes share at least one address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.covers(other) || other.covers(self)
    }
}

fn mask(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| "expected an IPv4 prefix like 10.0.0.0/16".to_string())?;
        let network: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("'{addr}' is not an IPv4 address"))?;
        let prefix_len: u8 = len
            .parse()
            .map_err(|_| format!("'{len}' is not a prefix length (0-32)"))?;
        Cidr::new(network, prefix_len)
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

/// The complement of `prefixes` in the IPv4 space, as inclusive ranges.
/// Used for the `Internet` service tag (everything outside the VNet).
pub fn complement(prefixes: &[Cidr]) -> Vec<(Ipv4Addr, Ipv4Addr)> {
    let mut ranges: Vec<(u64, u64)> = prefixes
        .iter()
        .map(|c| (u64::from(c.first()), u64::from(c.last())))
        .collect();
    ranges.sort_unstable();
    let mut out = Vec::new();
    let mut next: u64 = 0;
    for (first, last) in ranges {
        if first > next {
            out.push((next, first - 1));
        }
        next = next.max(last + 1);
    }
    if next <= u64::from(u32::MAX) {
        out.push((next, u64::from(u32::MAX)));
    }
    out.into_iter()
        .map(|(a, b)| (Ipv4Addr::from(a as u32), Ipv4Addr::from(b as u32)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.1.0.0/16");
        assert_eq!(c.size(), 65536);
        assert_eq!(c.nth(4), Some(Ipv4Addr::new(10, 1, 0, 4)));
        assert_eq!(c.last(), u32::from(Ipv4Addr::new(10, 1, 255, 255)));
    }

    #[test]
    fn refuses_host_bits_naming_the_prefix() {
        let err = "10.1.2.3/16".parse::<Cidr>().unwrap_err();
        assert!(err.contains("10.1.0.0/16"), "{err}");
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn containment_and_overlap() {
        let a: Cidr = "10.0.0.0/16".parse().unwrap();
        let b: Cidr = "10.0.1.0/24".parse().unwrap();
        let c: Cidr = "10.1.0.0/24".parse().unwrap();
        assert!(a.covers(&b) && !b.covers(&a));
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.covers(&c));
        assert_eq!(all.size(), 1 << 32);
    }

    #[test]
    fn complement_of_prefixes() {
        let v = complement(&["10.0.0.0/8".parse().unwrap()]);
        assert_eq!(
            v,
            vec![
                (Ipv4Addr::new(0, 0, 0, 0), Ipv4Addr::new(9, 255, 255, 255)),
                (
                    Ipv4Addr::new(11, 0, 0, 0),
                    Ipv4Addr::new(255, 255, 255, 255)
                ),
            ]
        );
        assert!(complement(&["0.0.0.0/0".parse().unwrap()]).is_empty());
    }
}

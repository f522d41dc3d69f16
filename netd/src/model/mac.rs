//! Ethernet MAC addresses of NICs.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A unicast Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    /// A locally administered unicast address derived from a NIC's serial,
    /// stable across restarts (`02:4e:42:xx:xx:xx`, "NB" for nimbus).
    pub fn generated(serial: u64) -> Self {
        let s = serial.to_be_bytes();
        MacAddr([0x02, 0x4e, 0x42, s[5], s[6], s[7]])
    }

    /// The fixed address of a VNet's bridge, derived from the VNet's id
    /// (`02:4e:43:xx:xx:xx`, apart from the NICs' `02:4e:42`). A bridge
    /// without an address of its own takes the lowest of its ports' and
    /// changes it as ports come and go; the guests' ARP entries for their
    /// gateway then point at an address that is gone, and their traffic to
    /// the host (load balancer, probes, NAT) is lost until they ask again.
    pub fn bridge(serial: u64) -> Self {
        let s = serial.to_be_bytes();
        MacAddr([0x02, 0x4e, 0x43, s[5], s[6], s[7]])
    }

    /// The six octets.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err("expected six hex octets like 02:00:00:00:00:01".into());
        }
        let mut octets = [0u8; 6];
        for (slot, part) in octets.iter_mut().zip(&parts) {
            if part.len() != 2 {
                return Err(format!("octet '{part}' is not two hex digits"));
            }
            *slot = u8::from_str_radix(part, 16)
                .map_err(|_| format!("octet '{part}' is not hexadecimal"))?;
        }
        if octets[0] & 1 == 1 {
            return Err("a multicast address cannot be a NIC's address".into());
        }
        if octets == [0; 6] {
            return Err("the all-zero address cannot be a NIC's address".into());
        }
        Ok(MacAddr(octets))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m: MacAddr = "02:AB:cd:00:11:22".parse().unwrap();
        assert_eq!(m.to_string(), "02:ab:cd:00:11:22");
        assert_eq!("02-ab-cd-00-11-22".parse::<MacAddr>().unwrap(), m);
    }

    #[test]
    fn refuses_multicast_zero_and_garbage() {
        for bad in [
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "02:00:00:00:00",
            "zz:00:00:00:00:00",
            "020:0:00:00:00:00",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_is_local_unicast() {
        let m = MacAddr::generated(0x1234);
        assert_eq!(m.octets()[0] & 3, 2);
        assert_eq!(m.to_string(), "02:4e:42:00:12:34");
    }
}

//! The virtio-net device: MAC and features, offload negotiation with the
//! TAP, and the worker thread started at DRIVER_OK.

use std::fmt;
use std::str::FromStr;

use super::event_handler::NetWorker;
use super::tap::{offload, Tap, TapError};
use crate::virtio::rate_limiter::RateLimiter;
use crate::virtio::worker::Worker;
use crate::virtio::{
    read_config_bytes, ActivateContext, ActivateError, VirtioDevice, F_RING_EVENT_IDX,
    F_RING_INDIRECT_DESC, TYPE_NET,
};

/// Feature bits (virtio 1.2, 5.1.3).
pub mod features {
    #![allow(missing_docs)]
    pub const CSUM: u64 = 1 << 0;
    pub const GUEST_CSUM: u64 = 1 << 1;
    pub const MAC: u64 = 1 << 5;
    pub const GUEST_TSO4: u64 = 1 << 7;
    pub const GUEST_TSO6: u64 = 1 << 8;
    pub const GUEST_ECN: u64 = 1 << 9;
    pub const HOST_TSO4: u64 = 1 << 11;
    pub const HOST_TSO6: u64 = 1 << 12;
    pub const HOST_ECN: u64 = 1 << 13;
    pub const MRG_RXBUF: u64 = 1 << 15;
}

/// Size of each queue (RX = 0, TX = 1).
pub const QUEUE_SIZE: u16 = 256;

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A stable locally administered unicast address derived from the VM
    /// and NIC names (FNV-1a), so a VM keeps its MAC across restarts.
    pub fn derived(vm: &str, nic: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in vm.bytes().chain([0]).chain(nic.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let b = h.to_le_bytes();
        MacAddr([(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]])
    }

    /// Group (multicast/broadcast) address.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }

    /// Locally administered.
    pub fn is_local(&self) -> bool {
        self.0[0] & 2 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let mut n = 0;
        for part in s.split(':') {
            let slot = out.get_mut(n).ok_or("more than 6 bytes")?;
            if part.len() != 2 {
                return Err("expected six two-digit hex bytes separated by ':'".into());
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| format!("{part:?} is not hex"))?;
            n += 1;
        }
        if n != 6 {
            return Err("expected six two-digit hex bytes separated by ':'".into());
        }
        Ok(MacAddr(out))
    }
}

/// A NIC as the user configured it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// TAP interface name.
    pub tap: String,
    /// Guest MAC.
    pub mac: MacAddr,
    /// Cap in bytes per second (both directions together).
    pub bandwidth: Option<u64>,
    /// Cap in frames per second.
    pub pps: Option<u64>,
}

/// Why a NIC cannot be used.
pub type NetError = TapError;

/// The virtio-net device.
pub struct Net {
    config: NetConfig,
    tap: Tap,
    config_space: [u8; 8],
    worker: Option<Worker>,
}

impl Net {
    /// Opens the TAP.
    pub fn new(config: NetConfig) -> Result<Self, NetError> {
        let tap = Tap::open(&config.tap)?;
        let mut cs = [0u8; 8];
        // mac, then status and max_virtqueue_pairs (not offered: zero).
        cs[..6].copy_from_slice(&config.mac.0);
        Ok(Self {
            config,
            tap,
            config_space: cs,
            worker: None,
        })
    }
}

/// TAP offload flags for the features the guest acked.
pub fn tap_offloads(acked: u64) -> u32 {
    use features::*;
    let mut f = 0;
    if acked & GUEST_CSUM != 0 {
        f |= offload::CSUM;
        if acked & GUEST_TSO4 != 0 {
            f |= offload::TSO4;
        }
        if acked & GUEST_TSO6 != 0 {
            f |= offload::TSO6;
        }
        if acked & GUEST_ECN != 0 && f & (offload::TSO4 | offload::TSO6) != 0 {
            f |= offload::TSO_ECN;
        }
    }
    f
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn features(&self) -> u64 {
        use features::*;
        MAC | CSUM
            | GUEST_CSUM
            | GUEST_TSO4
            | GUEST_TSO6
            | GUEST_ECN
            | HOST_TSO4
            | HOST_TSO6
            | HOST_ECN
            | MRG_RXBUF
            | F_RING_EVENT_IDX
            | F_RING_INDIRECT_DESC
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space, offset, data);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let host = |what| move |source| ActivateError::Host { what, source };
        self.tap
            .set_offload(tap_offloads(ctx.acked_features))
            .map_err(|e| ActivateError::Host {
                what: "TUNSETOFFLOAD",
                source: std::io::Error::other(e.to_string()),
            })?;
        let tap = self.tap.try_clone().map_err(host("dup TAP fd"))?;
        let mut queues = ctx.queues.into_iter();
        let mut events = ctx.queue_events.into_iter();
        let (Some(rx), Some(tx), Some(rx_event), Some(tx_event)) =
            (queues.next(), queues.next(), events.next(), events.next())
        else {
            return Err(ActivateError::BadQueue(
                "virtio-net needs two queues".into(),
            ));
        };
        let worker = NetWorker::new(
            ctx.mem,
            [rx, tx],
            [rx_event, tx_event],
            ctx.interrupt,
            tap,
            RateLimiter::new(self.config.bandwidth, self.config.pps),
            ctx.acked_features & features::MRG_RXBUF != 0,
        );
        let name: String = format!("virtio-net {}", self.config.tap)
            .chars()
            .take(15)
            .collect();
        self.worker = Some(
            Worker::spawn(name, move |kill| worker.run(kill))
                .map_err(host("spawn virtio-net thread"))?,
        );
        Ok(())
    }

    fn reset(&mut self) {
        self.worker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_print() {
        let m: MacAddr = "02:ab:00:10:ff:01".parse().unwrap();
        assert_eq!(m.to_string(), "02:ab:00:10:ff:01");
        for bad in [
            "",
            "02:ab",
            "02:ab:00:10:ff:01:02",
            "2:ab:00:10:ff:01",
            "zz:ab:00:10:ff:01",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn derived_mac_is_local_unicast_and_stable() {
        let a = MacAddr::derived("vm1", "eth0");
        assert_eq!(a, MacAddr::derived("vm1", "eth0"));
        assert_ne!(a, MacAddr::derived("vm1", "eth1"));
        assert!(a.is_local() && !a.is_multicast());
    }

    #[test]
    fn offloads_follow_guest_features() {
        use features::*;
        assert_eq!(tap_offloads(0), 0);
        assert_eq!(tap_offloads(GUEST_TSO4), 0, "TSO needs checksum offload");
        assert_eq!(
            tap_offloads(GUEST_CSUM | GUEST_TSO4 | GUEST_ECN),
            offload::CSUM | offload::TSO4 | offload::TSO_ECN
        );
    }
}

//! The per-namespace sysctls netd needs.

use std::fs;

use crate::error::NetError;

/// Turns on IPv4 forwarding (routing between VNets and the uplink) and
/// br_netfilter's IPv4 hook, so bridged packets meet the `inet` table.
pub fn enable_forwarding() -> Result<(), NetError> {
    for (path, value) in [
        ("/proc/sys/net/ipv4/ip_forward", "1"),
        ("/proc/sys/net/bridge/bridge-nf-call-iptables", "1"),
    ] {
        fs::write(path, value).map_err(|e| NetError::host(format!("setting {path}"), e))?;
    }
    Ok(())
}

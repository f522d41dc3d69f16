//! `--disk` and `--nic` option strings, parsed into typed device
//! configurations before anything runs.
//!
//! * `--disk PATH[,ro][,id=SERIAL][,bw=BYTES_PER_S][,iops=N]`
//! * `--nic tap=NAME[,mac=02:..:..][,bw=BYTES_PER_S][,pps=N]`

use std::path::PathBuf;

use clap::Args;

use devices::virtio::block::BlockConfig;
use devices::virtio::net::{MacAddr, NetConfig};

/// A `--disk` or `--nic` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{option} {value:?}: {reason}")]
pub struct OptionError {
    /// "--disk" or "--nic".
    pub option: &'static str,
    /// The whole value given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

fn rate(option: &'static str, value: &str, key: &str, v: &str) -> Result<u64, OptionError> {
    v.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| OptionError {
            option,
            value: value.into(),
            reason: format!("{key}={v:?} is not a positive integer"),
        })
}

/// Parses `PATH[,ro][,id=SERIAL][,bw=BYTES_PER_S][,iops=N]`.
/// The `--disk` and `--nic` options, shared by `nimbus run` and
/// `nimbus-vmm` so both accept and check the same specs.
#[derive(Args, Debug, Clone, Default)]
pub struct DeviceArgs {
    /// A virtio-blk disk: PATH[,ro][,id=SERIAL][,bw=BYTES_PER_S][,iops=N].
    /// Repeatable: /dev/vda, /dev/vdb, ... in order.
    #[arg(long, value_name = "SPEC")]
    pub disk: Vec<String>,
    /// A virtio-net NIC on an existing TAP: tap=NAME[,mac=MAC][,bw=..][,pps=..].
    /// Repeatable: eth0, eth1, ... in order.
    #[arg(long, value_name = "SPEC")]
    pub nic: Vec<String>,
}

impl DeviceArgs {
    /// Parses every spec; default MACs derive from `vm_name`.
    pub fn parse(&self, vm_name: &str) -> Result<(Vec<BlockConfig>, Vec<NetConfig>), OptionError> {
        let disks = self
            .disk
            .iter()
            .map(|d| parse_disk(d))
            .collect::<Result<Vec<_>, _>>()?;
        let nics = self
            .nic
            .iter()
            .map(|n| parse_nic(n, vm_name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((disks, nics))
    }
}

pub fn parse_disk(value: &str) -> Result<BlockConfig, OptionError> {
    let err = |reason: String| OptionError {
        option: "--disk",
        value: value.into(),
        reason,
    };
    let mut parts = value.split(',');
    let path = parts.next().unwrap_or_default();
    if path.is_empty() {
        return Err(err("missing image path".into()));
    }
    let mut config = BlockConfig {
        path: PathBuf::from(path),
        ..Default::default()
    };
    for p in parts {
        match p.split_once('=') {
            None if p == "ro" => config.read_only = true,
            Some(("id", id)) => {
                if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(err(format!(
                        "id={id:?} must be 1-20 printable ASCII characters"
                    )));
                }
                config.serial = Some(id.into());
            }
            Some(("bw", v)) => config.bandwidth = Some(rate("--disk", value, "bw", v)?),
            Some(("iops", v)) => config.iops = Some(rate("--disk", value, "iops", v)?),
            _ => {
                return Err(err(format!(
                    "unknown setting {p:?} (expected ro, id=, bw=, iops=)"
                )))
            }
        }
    }
    Ok(config)
}

/// Parses `tap=NAME[,mac=MAC][,bw=BYTES_PER_S][,pps=N]`; the MAC defaults to
/// a stable locally administered address derived from `vm_name` and the TAP.
pub fn parse_nic(value: &str, vm_name: &str) -> Result<NetConfig, OptionError> {
    let err = |reason: String| OptionError {
        option: "--nic",
        value: value.into(),
        reason,
    };
    let mut tap = None;
    let mut mac = None;
    let mut bandwidth = None;
    let mut pps = None;
    for p in value.split(',') {
        match p.split_once('=') {
            Some(("tap", name)) => {
                if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
                    return Err(err(format!(
                        "tap={name:?} is not an interface name (1-15 characters)"
                    )));
                }
                tap = Some(name.to_string());
            }
            Some(("mac", m)) => {
                let parsed: MacAddr = m.parse().map_err(|e| err(format!("mac={m:?}: {e}")))?;
                if parsed.is_multicast() {
                    return Err(err(format!("mac={m:?} is a multicast address")));
                }
                mac = Some(parsed);
            }
            Some(("bw", v)) => bandwidth = Some(rate("--nic", value, "bw", v)?),
            Some(("pps", v)) => pps = Some(rate("--nic", value, "pps", v)?),
            _ => {
                return Err(err(format!(
                    "unknown setting {p:?} (expected tap=, mac=, bw=, pps=)"
                )))
            }
        }
    }
    let tap = tap.ok_or_else(|| err("tap=NAME is required".into()))?;
    let mac = mac.unwrap_or_else(|| MacAddr::derived(vm_name, &tap));
    Ok(NetConfig {
        tap,
        mac,
        bandwidth,
        pps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks() {
        let d = parse_disk("/a/b.img,ro,id=data-1,iops=100").unwrap();
        assert_eq!(d.path, PathBuf::from("/a/b.img"));
        assert!(d.read_only);
        assert_eq!(d.serial.as_deref(), Some("data-1"));
        assert_eq!(d.iops, Some(100));
        for bad in [
            "",
            ",ro",
            "/x,rw",
            "/x,id=",
            "/x,id=012345678901234567890",
            "/x,iops=0",
            "/x,bw=fast",
        ] {
            let e = parse_disk(bad).unwrap_err();
            assert!(e.to_string().starts_with("--disk"), "{e}");
        }
    }

    #[test]
    fn nics() {
        let n = parse_nic("tap=nt-1,mac=02:00:00:00:00:01", "vm").unwrap();
        assert_eq!(n.tap, "nt-1");
        assert_eq!(n.mac.to_string(), "02:00:00:00:00:01");
        let a = parse_nic("tap=nt-1", "vm-a").unwrap();
        let a2 = parse_nic("tap=nt-1", "vm-a").unwrap();
        let b = parse_nic("tap=nt-1", "vm-b").unwrap();
        assert_eq!(a.mac, a2.mac);
        assert_ne!(a.mac, b.mac);
        assert!(a.mac.is_local() && !a.mac.is_multicast());
        for bad in [
            "",
            "mac=02:00:00:00:00:01",
            "tap=",
            "tap=waytoolonginterfacename",
            "tap=x,mac=01:00:00:00:00:01",
            "tap=x,mac=zz",
            "tap=x,speed=1",
        ] {
            assert!(parse_nic(bad, "vm").is_err(), "{bad}");
        }
    }
}

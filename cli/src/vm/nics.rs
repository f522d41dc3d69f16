//! netd NICs for a VM: the TAP, MAC and addressing the VMM and the guest
//! agent need, asked from nimbus-netd (which owns them).

use std::path::Path;

use netd::api::client::{Client, ClientError};
use netd::api::protocol::Request;
use serde_json::Value;

use super::error::VmError;
use super::store::NicBinding;

fn field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Resolves every NIC of VM `vm` through netd at `socket`.
pub fn resolve(socket: &Path, vm: &str, nics: &[String]) -> Result<Vec<NicBinding>, VmError> {
    if nics.is_empty() {
        return Ok(Vec::new());
    }
    let err = |nic: &str, reason: String| VmError::Nic {
        vm: vm.to_string(),
        nic: nic.to_string(),
        reason,
    };
    let mut client = Client::connect(socket).map_err(|e| err(&nics[0], e.to_string()))?;
    nics.iter()
        .map(|name| {
            let view = client
                .call(&Request::NicShow { name: name.clone() })
                .map_err(|e| match e {
                    ClientError::Refused(why) => err(name, format!("netd: {why}")),
                    other => err(name, other.to_string()),
                })?;
            if field(&view, "kind").is_some_and(|k| k != "tap") {
                return Err(err(
                    name,
                    "is realized as a veth into a namespace (--attach-netns), not a TAP a VM can use"
                        .into(),
                ));
            }
            let missing = |what: &str| err(name, format!("netd's answer has no {what}"));
            let (vnet, subnet) = (
                field(&view, "vnet").ok_or_else(|| missing("vnet"))?,
                field(&view, "subnet").ok_or_else(|| missing("subnet"))?,
            );
            let subnet_view = client
                .call(&Request::SubnetShow {
                    vnet: vnet.to_string(),
                    name: subnet.to_string(),
                })
                .map_err(|e| err(name, format!("subnet {vnet}/{subnet}: {e}")))?;
            let prefix = field(&subnet_view, "cidr")
                .and_then(|c| c.split_once('/'))
                .and_then(|(_, p)| p.parse::<u8>().ok())
                .filter(|p| *p <= 32)
                .ok_or_else(|| missing("subnet CIDR"))?;
            Ok(NicBinding {
                name: name.clone(),
                tap: field(&view, "host_interface")
                    .ok_or_else(|| missing("host_interface"))?
                    .to_string(),
                mac: field(&view, "mac").ok_or_else(|| missing("mac"))?.to_string(),
                ip: field(&view, "ip").ok_or_else(|| missing("ip"))?.to_string(),
                prefix,
                gateway: field(&view, "gateway").map(str::to_string),
            })
        })
        .collect()
}

/// The agent parameter for NIC `index`: `nimbus.net=ethN,IP/PFX[,gw=GW]`.
pub fn agent_parameter(index: usize, nic: &NicBinding) -> String {
    let mut p = format!("nimbus.net=eth{index},{}/{}", nic.ip, nic.prefix);
    if let Some(gw) = &nic.gateway {
        p.push_str(",gw=");
        p.push_str(gw);
    }
    p
}

/// The VMM option for a NIC: `tap=NAME,mac=MAC`.
pub fn vmm_option(nic: &NicBinding) -> String {
    format!("tap={},mac={}", nic.tap, nic.mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters() {
        let n = NicBinding {
            name: "web".into(),
            tap: "nt-3".into(),
            mac: "02:aa:00:00:00:03".into(),
            ip: "10.1.1.4".into(),
            prefix: 24,
            gateway: Some("10.1.1.1".into()),
        };
        assert_eq!(
            agent_parameter(1, &n),
            "nimbus.net=eth1,10.1.1.4/24,gw=10.1.1.1"
        );
        assert_eq!(vmm_option(&n), "tap=nt-3,mac=02:aa:00:00:00:03");
        let e = resolve(Path::new("/nonexistent/netd.sock"), "vm", &["web".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("VM vm: nic web") && e.contains("nimbus-netd"),
            "{e}"
        );
        assert!(resolve(Path::new("/nonexistent"), "vm", &[])
            .unwrap()
            .is_empty());
    }
}

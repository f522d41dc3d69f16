//! Makes the host's links match a state: creates what is missing, fixes
//! what differs, and removes links carrying nimbus's prefixes that the
//! state does not know (leftovers of a crash or of deleted objects).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use tracing::{info, warn};

use super::links::{Link, Links};
use super::{netns, tap};
use crate::error::NetError;
use crate::model::{Frontend, MacAddr, Nic, NicBackend};
use crate::state::State;
use crate::{BRIDGE_PREFIX, PORT_PREFIX};

/// What [`converge`] did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Links created.
    pub created: Vec<String>,
    /// Links removed.
    pub removed: Vec<String>,
}

/// Converges the host's links and bridge addresses to `state`.
pub async fn converge(links: &Links, state: &State) -> Result<Report, NetError> {
    let mut report = Report::default();
    let wanted_bridges: BTreeSet<String> = state.vnets.iter().map(|v| v.id.bridge_name()).collect();
    let wanted_ports: BTreeMap<String, &Nic> =
        state.nics.iter().map(|n| (n.id.port_name(), n)).collect();

    // Remove unknown links first: a stale port must not keep a name.
    for link in links.list().await? {
        let ours = link.name.starts_with(BRIDGE_PREFIX) || link.name.starts_with(PORT_PREFIX);
        let wanted = wanted_bridges.contains(&link.name) || wanted_ports.contains_key(&link.name);
        let right_kind = match link.kind.as_deref() {
            Some("bridge") => link.name.starts_with(BRIDGE_PREFIX),
            Some("tun") => matches!(
                wanted_ports.get(&link.name).map(|n| &n.backend),
                Some(NicBackend::Tap { .. })
            ),
            Some("veth") => matches!(
                wanted_ports.get(&link.name).map(|n| &n.backend),
                Some(NicBackend::Veth { .. })
            ),
            _ => false,
        };
        if ours && !(wanted && right_kind) {
            info!(link = %link.name, "removing link nimbus's state does not know");
            if let Err(e) = links.delete(&link).await {
                // Deleting one end of a veth removes the other end too.
                if links.find(&link.name).await?.is_some() {
                    return Err(e);
                }
            }
            report.removed.push(link.name);
        }
    }

    for vnet in &state.vnets {
        let name = vnet.id.bridge_name();
        let bridge = match links.find(&name).await? {
            Some(b) => b,
            None => {
                report.created.push(name.clone());
                links
                    .add_bridge(&name, MacAddr::bridge(vnet.id.0).octets())
                    .await?
            }
        };
        links.up(&bridge).await?;
        // Gateways, and the /32 frontends of internal load balancers so
        // that the VNet's NICs reach them on the bridge.
        let wanted: BTreeSet<(Ipv4Addr, u8)> = vnet
            .subnets
            .iter()
            .map(|s| (s.gateway(), s.cidr.prefix_len()))
            .chain(
                state
                    .load_balancers
                    .iter()
                    .filter_map(|lb| match &lb.frontend {
                        Frontend::Internal { vnet: v, ip, .. } if v == &vnet.name => {
                            Some((*ip, 32))
                        }
                        _ => None,
                    }),
            )
            .collect();
        let have = links.addresses(&bridge).await?;
        for (addr, len, msg) in have {
            if !wanted.contains(&(addr, len)) {
                links.del_address(&bridge, msg).await?;
            }
        }
        let have: BTreeSet<(Ipv4Addr, u8)> = links
            .addresses(&bridge)
            .await?
            .into_iter()
            .map(|(a, l, _)| (a, l))
            .collect();
        for (addr, len) in wanted.difference(&have) {
            links.add_address(&bridge, *addr, *len).await?;
        }
    }

    converge_public_frontends(links, state).await?;

    for nic in &state.nics {
        let Ok(vnet) = state.vnet(&nic.vnet) else {
            continue;
        };
        let bridge = match links.find(&vnet.id.bridge_name()).await? {
            Some(b) => b,
            None => {
                return Err(NetError::host(
                    format!("attaching nic {}", nic.name),
                    "its bridge is missing",
                ))
            }
        };
        let port_name = nic.id.port_name();
        let port = match links.find(&port_name).await? {
            Some(p) => p,
            None => {
                report.created.push(port_name.clone());
                match create_port(links, state, nic).await {
                    Ok(p) => p,
                    Err(e)
                        if matches!(nic.backend, NicBackend::Veth { .. })
                            && !netns::path(netns_of(nic)).exists() =>
                    {
                        // A stand-in VM whose namespace is gone cannot be
                        // re-created; keep the NIC in the state and go on.
                        warn!(nic = %nic.name, error = %e, "namespace of veth NIC is gone; not realized");
                        report.created.pop();
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        if port.master != Some(bridge.index) {
            links.attach(&port, &bridge).await?;
        } else {
            links.up(&port).await?;
        }
    }
    Ok(report)
}

/// Public load balancer frontends live on `lo` as /32s. Addresses of the
/// public pool on `lo` that no load balancer uses are leftovers: removed.
async fn converge_public_frontends(links: &Links, state: &State) -> Result<(), NetError> {
    let wanted: BTreeSet<Ipv4Addr> = state
        .load_balancers
        .iter()
        .filter(|lb| matches!(lb.frontend, Frontend::Public { .. }))
        .filter_map(|lb| state.lb_frontend_ip(lb))
        .collect();
    let Some(lo) = links.find("lo").await? else {
        return Ok(());
    };
    let mut have = BTreeSet::new();
    for (addr, len, msg) in links.addresses(&lo).await? {
        let pooled = state.public_pool.is_some_and(|p| p.contains(addr));
        if len == 32 && pooled && !wanted.contains(&addr) {
            links.del_address(&lo, msg).await?;
        } else {
            have.insert(addr);
        }
    }
    for addr in wanted.difference(&have) {
        links.add_address(&lo, *addr, 32).await?;
    }
    Ok(())
}

fn netns_of(nic: &Nic) -> &str {
    match &nic.backend {
        NicBackend::Veth { netns } => netns,
        NicBackend::Tap { .. } => "",
    }
}

async fn create_port(links: &Links, state: &State, nic: &Nic) -> Result<Link, NetError> {
    let name = nic.id.port_name();
    match &nic.backend {
        NicBackend::Tap { owner } => {
            tap::create(&name, *owner)?;
            links
                .find(&name)
                .await?
                .ok_or_else(|| NetError::host(format!("creating TAP {name}"), "it vanished"))
        }
        NicBackend::Veth { netns: ns } => {
            let peer_name = format!("{name}p");
            let ns_file = netns::open(ns)?;
            let host_side = links.add_veth(&name, &peer_name).await?;
            let result = configure_peer(links, state, nic, &peer_name, &ns_file, ns).await;
            if let Err(e) = result {
                let _ = links.delete(&host_side).await;
                return Err(e);
            }
            Ok(host_side)
        }
    }
}

async fn configure_peer(
    links: &Links,
    state: &State,
    nic: &Nic,
    peer_name: &str,
    ns_file: &std::fs::File,
    ns: &str,
) -> Result<(), NetError> {
    use std::os::fd::AsRawFd;
    let peer = links
        .find(peer_name)
        .await?
        .ok_or_else(|| NetError::host(format!("creating veth {peer_name}"), "peer missing"))?;
    links.move_to_netns(&peer, ns_file.as_raw_fd()).await?;
    let subnet = state.subnet(&nic.vnet, &nic.subnet)?;
    let (ip, prefix, gateway, mac, peer_name) = (
        nic.ip,
        subnet.cidr.prefix_len(),
        subnet.gateway(),
        nic.mac.octets(),
        peer_name.to_string(),
    );
    netns::run_in(ns, move || async move {
        let links = Links::connect()?;
        let all = links.list().await?;
        let peer = all
            .iter()
            .find(|l| l.name == peer_name)
            .cloned()
            .ok_or_else(|| {
                NetError::host("configuring the stand-in NIC", "peer not in namespace")
            })?;
        let taken: BTreeSet<&str> = all.iter().map(|l| l.name.as_str()).collect();
        let ifname = (0..100)
            .map(|i| format!("eth{i}"))
            .find(|n| !taken.contains(n.as_str()))
            .unwrap_or(peer_name.clone());
        links.configure(&peer, &ifname, mac).await?;
        if let Some(lo) = all.iter().find(|l| l.name == "lo") {
            links.up(lo).await?;
        }
        links.add_address(&peer, ip, prefix).await?;
        links.add_default_route(gateway).await
    })
    .await
}

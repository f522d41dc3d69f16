//! Thin typed wrappers over rtnetlink for the few link and address
//! operations netd needs.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::NetError;

/// What netd needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// ifindex.
    pub index: u32,
    /// Name.
    pub name: String,
    /// rtnetlink kind (`bridge`, `veth`, `tun`, ...), if any.
    pub kind: Option<String>,
    /// ifindex of the bridge it is enslaved to.
    pub master: Option<u32>,
}

/// An rtnetlink connection in the current network namespace.
#[derive(Clone)]
pub struct Links {
    handle: Handle,
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let what = what.into();
    move |e| NetError::host(what, e)
}

impl Links {
    /// Opens a connection; its driver task runs on the current tokio runtime.
    pub fn connect() -> Result<Self, NetError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| NetError::host("opening rtnetlink", e))?;
        tokio::spawn(conn);
        Ok(Links { handle })
    }

    /// All links of the namespace.
    pub async fn list(&self) -> Result<Vec<Link>, NetError> {
        let mut stream = self.handle.link().get().execute();
        let mut out = Vec::new();
        while let Some(msg) = stream.try_next().await.map_err(nl("listing links"))? {
            out.push(parse_link(&msg));
        }
        Ok(out)
    }

    /// The link called `name`, if any.
    pub async fn find(&self, name: &str) -> Result<Option<Link>, NetError> {
        Ok(self.list().await?.into_iter().find(|l| l.name == name))
    }

    async fn must_find(&self, name: &str) -> Result<Link, NetError> {
        self.find(name)
            .await?
            .ok_or_else(|| NetError::host(format!("finding link {name}"), "it does not exist"))
    }

    /// Creates bridge `name` (up) with its own address `mac`, which its
    /// ports coming and going then never change, and returns it.
    pub async fn add_bridge(&self, name: &str, mac: [u8; 6]) -> Result<Link, NetError> {
        self.handle
            .link()
            .add(LinkBridge::new(name).address(mac.to_vec()).up().build())
            .execute()
            .await
            .map_err(nl(format!("creating bridge {name}")))?;
        self.must_find(name).await
    }

    /// Creates veth `name` with peer `peer`, both in this namespace.
    pub async fn add_veth(&self, name: &str, peer: &str) -> Result<Link, NetError> {
        self.handle
            .link()
            .add(LinkVeth::new(name, peer).build())
            .execute()
            .await
            .map_err(nl(format!("creating veth {name}")))?;
        self.must_find(name).await
    }

    /// Deletes a link.
    pub async fn delete(&self, link: &Link) -> Result<(), NetError> {
        self.handle
            .link()
            .del(link.index)
            .execute()
            .await
            .map_err(nl(format!("deleting link {}", link.name)))
    }

    /// Enslaves `port` to `bridge` and sets it up.
    pub async fn attach(&self, port: &Link, bridge: &Link) -> Result<(), NetError> {
        let msg = LinkUnspec::new_with_index(port.index)
            .controller(bridge.index)
            .up()
            .build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl(format!("attaching {} to {}", port.name, bridge.name)))
    }

    /// Sets a link up.
    pub async fn up(&self, link: &Link) -> Result<(), NetError> {
        let msg = LinkUnspec::new_with_index(link.index).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl(format!("setting {} up", link.name)))
    }

    /// Moves a link into the network namespace open as `fd`.
    pub async fn move_to_netns(&self, link: &Link, fd: std::os::fd::RawFd) -> Result<(), NetError> {
        let msg = LinkUnspec::new_with_index(link.index)
            .setns_by_fd(fd)
            .build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl(format!("moving {} to its namespace", link.name)))
    }

    /// Renames a link, sets its MAC and brings it up.
    pub async fn configure(&self, link: &Link, name: &str, mac: [u8; 6]) -> Result<(), NetError> {
        let msg = LinkUnspec::new_with_index(link.index)
            .name(name.to_string())
            .address(mac.to_vec())
            .up()
            .build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl(format!("configuring {}", link.name)))
    }

    /// IPv4 addresses of a link as (address, prefix length).
    pub async fn addresses(
        &self,
        link: &Link,
    ) -> Result<Vec<(Ipv4Addr, u8, AddressMessage)>, NetError> {
        let mut stream = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .execute();
        let mut out = Vec::new();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(nl(format!("listing addresses of {}", link.name)))?
        {
            let addr = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(v4))
                | AddressAttribute::Address(IpAddr::V4(v4)) => Some(*v4),
                _ => None,
            });
            if let Some(a) = addr {
                out.push((a, msg.header.prefix_len, msg));
            }
        }
        Ok(out)
    }

    /// Adds an IPv4 address.
    pub async fn add_address(
        &self,
        link: &Link,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetError> {
        self.handle
            .address()
            .add(link.index, IpAddr::V4(addr), prefix_len)
            .execute()
            .await
            .map_err(nl(format!("adding {addr}/{prefix_len} to {}", link.name)))
    }

    /// Removes an address.
    pub async fn del_address(&self, link: &Link, msg: AddressMessage) -> Result<(), NetError> {
        self.handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(nl(format!("removing an address from {}", link.name)))
    }

    /// Adds the default route via `gateway`.
    pub async fn add_default_route(&self, gateway: Ipv4Addr) -> Result<(), NetError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .build();
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("adding the default route via {gateway}")))
    }
}

fn parse_link(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        master: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Controller(m) => link.master = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(kind_name(kind));
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn kind_name(kind: &InfoKind) -> String {
    match kind {
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Veth => "veth".into(),
        InfoKind::Tun => "tun".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

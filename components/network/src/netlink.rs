//! A netlink connection bound to one network namespace, and the few link/address/route operations the pod
//! network needs, each idempotent (an object already there is success).
//!
//! A netlink socket belongs to the namespace it was created in; to reach a pod's namespace, a short-lived
//! thread enters it, opens the socket, and ends, so no thread of the daemon is ever left in a foreign
//! namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use futures_util::TryStreamExt;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

use crate::NetworkError;

/// errno values the kernel answers with for "already there" and "not there".
const EEXIST: i32 = 17;
const ENOENT: i32 = 2;
const ENODEV: i32 = 19;
const ESRCH: i32 = 3;
const EADDRNOTAVAIL: i32 = 99;

pub(crate) fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}

pub(crate) fn is_exists(e: &rtnetlink::Error) -> bool {
    errno(e) == Some(EEXIST)
}

pub(crate) fn is_gone(e: &rtnetlink::Error) -> bool {
    matches!(errno(e), Some(ENOENT | ENODEV | ESRCH | EADDRNOTAVAIL))
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let what = what.into();
    move |source| NetworkError::Netlink { what, source }
}

/// A netlink connection in one namespace. Must be made inside a tokio runtime (its connection task runs there).
#[derive(Clone, Debug)]
pub struct Netlink {
    pub(crate) handle: Handle,
}

impl Netlink {
    /// A connection in the calling thread's namespace (the node's).
    pub fn current() -> Result<Self, NetworkError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(|source| NetworkError::Io {
            what: "opening a netlink socket".into(),
            source,
        })?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    /// A connection in the namespace at `path` (a pod sandbox's `/var/run/netns/<name>` or `/proc/<pid>/ns/net`).
    pub fn in_namespace(path: &Path) -> Result<Self, NetworkError> {
        let runtime = tokio::runtime::Handle::current();
        let file = std::fs::File::open(path).map_err(|source| NetworkError::Io {
            what: format!("opening network namespace {}", path.display()),
            source,
        })?;
        let path_text = path.display().to_string();
        let opened = std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| NetworkError::Io {
                what: format!("entering network namespace {path_text}"),
                source: e.into(),
            })?;
            let _guard = runtime.enter();
            rtnetlink::new_connection().map_err(|source| NetworkError::Io {
                what: format!("opening a netlink socket in {path_text}"),
                source,
            })
        })
        .join()
        .map_err(|_| NetworkError::Io {
            what: "the namespace thread panicked".into(),
            source: std::io::Error::other("panic"),
        })??;
        let (connection, handle, _) = opened;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    pub async fn link(&self, name: &str) -> Result<Option<LinkMessage>, NetworkError> {
        match self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await
        {
            Ok(link) => Ok(link),
            Err(e) if is_gone(&e) => Ok(None),
            Err(e) => Err(nl(format!("looking up link {name}"))(e)),
        }
    }

    pub async fn index(&self, name: &str) -> Result<Option<u32>, NetworkError> {
        Ok(self.link(name).await?.map(|l| l.header.index))
    }

    pub async fn require_index(&self, name: &str) -> Result<u32, NetworkError> {
        self.index(name)
            .await?
            .ok_or_else(|| NetworkError::Missing(format!("link {name}")))
    }

    pub async fn links(&self) -> Result<Vec<LinkMessage>, NetworkError> {
        self.handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl("listing links"))
    }

    pub async fn add_link(&self, message: LinkMessage, what: &str) -> Result<(), NetworkError> {
        match self.handle.link().add(message).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_exists(&e) => Ok(()),
            Err(e) => Err(nl(format!("adding {what}"))(e)),
        }
    }

    pub async fn set_link(&self, message: LinkMessage, what: &str) -> Result<(), NetworkError> {
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(nl(format!("setting {what}")))
    }

    pub async fn up(&self, index: u32, what: &str) -> Result<(), NetworkError> {
        self.set_link(LinkUnspec::new_with_index(index).up().build(), what)
            .await
    }

    pub async fn delete_link(&self, name: &str) -> Result<bool, NetworkError> {
        let Some(index) = self.index(name).await? else {
            return Ok(false);
        };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_gone(&e) => Ok(false),
            Err(e) => Err(nl(format!("deleting link {name}"))(e)),
        }
    }

    pub async fn add_address(
        &self,
        index: u32,
        ip: Ipv4Addr,
        prefix: u8,
        what: &str,
    ) -> Result<(), NetworkError> {
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(ip), prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_exists(&e) => Ok(()),
            Err(e) => Err(nl(format!("adding address {ip}/{prefix} to {what}"))(e)),
        }
    }

    /// The IPv4 addresses of every interface with their prefix, as (interface, address/prefix).
    pub async fn ipv4_addresses(&self) -> Result<Vec<(String, ipnet::Ipv4Net)>, NetworkError> {
        use netlink_packet_route::address::{AddressAttribute, AddressMessage};
        let links = self.links().await?;
        let name_of = |index: u32| {
            links
                .iter()
                .find(|l| l.header.index == index)
                .and_then(link_name)
                .unwrap_or_default()
        };
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl("listing addresses"))?;
        let mut addresses = Vec::new();
        for a in messages {
            for attr in &a.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = attr
                    && let Ok(address) = ipnet::Ipv4Net::new(*ip, a.header.prefix_len)
                {
                    addresses.push((name_of(a.header.index), address));
                }
            }
        }
        Ok(addresses)
    }

    /// Adds or replaces a route.
    pub async fn replace_route(
        &self,
        route: RouteMessageBuilder<Ipv4Addr>,
        what: &str,
    ) -> Result<(), NetworkError> {
        self.handle
            .route()
            .add(route.build())
            .replace()
            .execute()
            .await
            .map_err(nl(format!("adding route {what}")))
    }

    pub async fn delete_route(
        &self,
        route: netlink_packet_route::route::RouteMessage,
    ) -> Result<(), NetworkError> {
        match self.handle.route().del(route).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_gone(&e) => Ok(()),
            Err(e) => Err(nl("deleting a route")(e)),
        }
    }

    /// Every IPv4 route of the main table.
    pub async fn routes(&self) -> Result<Vec<netlink_packet_route::route::RouteMessage>, NetworkError> {
        self.handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(nl("listing routes"))
    }
}

pub fn link_name(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

pub fn link_mtu(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    })
}

pub fn link_mac(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(mac) => <[u8; 6]>::try_from(mac.as_slice()).ok(),
        _ => None,
    })
}

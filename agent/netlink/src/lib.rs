//! The netlink operations Tessera needs, over rtnetlink: veth pairs with one end born in a
//! network namespace, addresses, routes Tessera owns (marked with its own route protocol number so
//! they can be listed and reconciled without touching anyone else's), and its policy rule.
//!
//! Work inside another network namespace runs on a thread that joined it ([`in_netns`]): a
//! netlink socket belongs to the namespace of the thread that opens it.

pub mod monitor;
pub mod nftables;

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures_util::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::{Handle, IpVersion, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// The route protocol number that marks Tessera's routes (see /etc/iproute2/rt_protos).
pub const PROTOCOL: u8 = 77;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("network namespace {path}: {message}")]
    Netns { path: String, message: String },
    #[error("no interface named `{0}`")]
    NoLink(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// A route Tessera owns: to `destination` through `gateway` or out of `device`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OwnedRoute {
    pub destination: IpNet,
    pub gateway: Option<IpAddr>,
    pub device: Option<u32>,
    pub table: u32,
}

/// A netlink connection in the caller's network namespace.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

fn exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc_eexist())
}

fn missing(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if [-2, -3, -19].contains(&m.raw_code()))
}

const fn libc_eexist() -> i32 {
    17
}

impl Netlink {
    /// Open a connection; its task runs on the current tokio runtime.
    pub fn connect() -> Result<Netlink> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    pub async fn link_index(&self, name: &str) -> Result<Option<u32>> {
        let mut links = self.handle.link().get().match_name(name.to_string()).execute();
        match links.try_next().await {
            Ok(Some(link)) => Ok(Some(link.header.index)),
            Ok(None) => Ok(None),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The index of interface `name`; an error naming it when there is none.
    pub async fn require_index(&self, name: &str) -> Result<u32> {
        self.link_index(name).await?.ok_or_else(|| Error::NoLink(name.to_string()))
    }

    pub async fn link_mac(&self, index: u32) -> Result<Option<Vec<u8>>> {
        let mut links = self.handle.link().get().match_index(index).execute();
        let Some(link): Option<LinkMessage> = links.try_next().await? else { return Ok(None) };
        Ok(link.attributes.into_iter().find_map(|a| match a {
            LinkAttribute::Address(mac) => Some(mac),
            _ => None,
        }))
    }

    /// Every interface: index and name.
    pub async fn links(&self) -> Result<Vec<(u32, String)>> {
        let mut out = Vec::new();
        let mut links = self.handle.link().get().execute();
        while let Some(link) = links.try_next().await? {
            let name = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            });
            out.push((link.header.index, name.unwrap_or_default()));
        }
        Ok(out)
    }

    /// The addresses of one interface.
    pub async fn addresses(&self, index: u32) -> Result<Vec<IpNet>> {
        let mut out = Vec::new();
        let mut addresses = self.handle.address().get().set_link_index_filter(index).execute();
        while let Some(a) = addresses.try_next().await? {
            for attr in &a.attributes {
                if let AddressAttribute::Address(ip) = attr
                    && let Ok(net) = IpNet::new(*ip, a.header.prefix_len)
                {
                    out.push(net);
                }
            }
        }
        Ok(out)
    }

    /// Remove an address from an interface (absent is fine).
    pub async fn delete_address(&self, index: u32, address: IpAddr) -> Result<()> {
        let mut addresses = self.handle.address().get().set_link_index_filter(index).execute();
        while let Some(a) = addresses.try_next().await? {
            if a.attributes.iter().any(|attr| matches!(attr, AddressAttribute::Address(ip) if *ip == address)) {
                return match self.handle.address().del(a).execute().await {
                    Err(e) if missing(&e) => Ok(()),
                    other => Ok(other?),
                };
            }
        }
        Ok(())
    }

    /// Create a veth pair with `host` here and `peer` born in the namespace at `netns`: no
    /// move afterwards, which would wait for an RCU grace period (about 20 ms here).
    pub async fn create_veth_into(&self, host: &str, peer: &str, netns: &File) -> Result<()> {
        let peer_msg = rtnetlink::LinkMessageBuilder::<LinkUnspec>::new().name(peer.to_string()).setns_by_fd(netns.as_raw_fd()).build();
        let msg = rtnetlink::LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.handle.link().add(msg).execute().await?;
        Ok(())
    }

    pub async fn rename(&self, index: u32, name: &str) -> Result<()> {
        self.handle.link().set(LinkUnspec::new_with_index(index).name(name).build()).execute().await?;
        Ok(())
    }

    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await?;
        Ok(())
    }

    /// Delete an interface; `false` when there was none (a veth takes its peer with it).
    pub async fn delete_link(&self, name: &str) -> Result<bool> {
        let Some(index) = self.link_index(name).await? else { return Ok(false) };
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if missing(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Add an address (already present is fine). IPv6 addresses skip duplicate address
    /// detection: IPAM made them unique, and DAD would hold them tentative for a second.
    pub async fn add_address(&self, index: u32, address: IpAddr, prefix: u8) -> Result<()> {
        let mut request = self.handle.address().add(index, address, prefix);
        if address.is_ipv6() {
            request.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match request.execute().await {
            Err(e) if exists(&e) => Ok(()),
            other => Ok(other?),
        }
    }

    /// Add or replace one of Tessera's routes.
    pub async fn replace_route(&self, route: &OwnedRoute) -> Result<()> {
        self.handle.route().add(message(route)).replace().execute().await?;
        Ok(())
    }

    pub async fn delete_route(&self, route: &OwnedRoute) -> Result<()> {
        match self.handle.route().del(message(route)).execute().await {
            Err(e) if missing(&e) => Ok(()),
            other => Ok(other?),
        }
    }

    /// Add a plain route that is not Tessera's to reconcile (inside endpoints: the link-local
    /// gateway and the default route through it).
    pub async fn add_route(&self, destination: IpNet, gateway: Option<IpAddr>, device: u32, link_scope: bool) -> Result<()> {
        let mut msg = route_builder(destination, gateway, Some(device), None);
        if link_scope {
            msg.header.scope = RouteScope::Link;
        }
        match self.handle.route().add(msg).execute().await {
            Err(e) if exists(&e) => Ok(()),
            other => Ok(other?),
        }
    }

    /// Every route Tessera owns, in all tables, both families.
    pub async fn owned_routes(&self) -> Result<Vec<OwnedRoute>> {
        let mut out = Vec::new();
        for probe in [RouteMessageBuilder::<Ipv4Addr>::new().build(), RouteMessageBuilder::<Ipv6Addr>::new().build()] {
            let mut routes = self.handle.route().get(probe).execute();
            while let Some(r) = routes.try_next().await? {
                if r.header.protocol != RouteProtocol::Other(PROTOCOL) {
                    continue;
                }
                if let Some(route) = owned(&r) {
                    out.push(route);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Make sure `from all lookup TABLE` exists at `priority` for both families.
    pub async fn ensure_rule(&self, table: u32, priority: u32) -> Result<()> {
        for version in [IpVersion::V4, IpVersion::V6] {
            let mut rules = self.handle.rule().get(version.clone()).execute();
            let mut found = false;
            while let Some(r) = rules.try_next().await? {
                found |= rule_is(&r, table, priority);
            }
            if found {
                continue;
            }
            // Without an explicit action the kernel answers every lookup through the rule with EINVAL.
            let add = self.handle.rule().add().table_id(table).priority(priority).action(RuleAction::ToTable);
            let outcome = match version {
                IpVersion::V4 => add.v4().execute().await,
                IpVersion::V6 => add.v6().execute().await,
            };
            match outcome {
                Err(e) if exists(&e) => {}
                other => other?,
            }
        }
        Ok(())
    }
}

fn rule_is(r: &RuleMessage, table: u32, priority: u32) -> bool {
    let t = r.attributes.iter().any(|a| matches!(a, RuleAttribute::Table(t) if *t == table)) || u32::from(r.header.table) == table;
    let p = r.attributes.iter().any(|a| matches!(a, RuleAttribute::Priority(p) if *p == priority));
    t && p && r.header.action == RuleAction::ToTable
}

fn route_builder(destination: IpNet, gateway: Option<IpAddr>, device: Option<u32>, table: Option<u32>) -> RouteMessage {
    // Families match by construction (callers pair a destination with a gateway of its family);
    // a mismatch leaves the builder as it was and the kernel refuses the route.
    let mut b = RouteMessageBuilder::<IpAddr>::new();
    b = b.clone().destination_prefix(destination.addr(), destination.prefix_len()).unwrap_or(b);
    if let Some(g) = gateway {
        b = b.clone().gateway(g).unwrap_or(b);
    }
    if let Some(dev) = device {
        b = b.output_interface(dev);
    }
    if let Some(t) = table {
        b = b.table_id(t);
    }
    let mut msg = b.build();
    if gateway.is_none() && device.is_some() {
        msg.header.scope = RouteScope::Link;
    }
    msg
}

fn message(route: &OwnedRoute) -> RouteMessage {
    let mut msg = route_builder(route.destination, route.gateway, route.device, Some(route.table));
    msg.header.protocol = RouteProtocol::Other(PROTOCOL);
    msg
}

fn owned(r: &RouteMessage) -> Option<OwnedRoute> {
    let mut destination = None;
    let mut gateway = None;
    let mut device = None;
    let mut table = u32::from(r.header.table);
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => destination = route_ip(d),
            RouteAttribute::Gateway(g) => gateway = route_ip(g),
            RouteAttribute::Oif(i) => device = Some(*i),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    let destination = match (destination, r.header.address_family) {
        (Some(ip), _) => IpNet::new(ip, r.header.destination_prefix_length).ok()?,
        (None, AddressFamily::Inet) => IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).ok()?,
        (None, _) => IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).ok()?,
    };
    // A route through a gateway is Tessera's by its gateway; one out of a device by the device.
    let device = if gateway.is_some() { None } else { device };
    Some(OwnedRoute { destination, gateway, device, table })
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// Run `work` with a netlink connection inside the network namespace at `path`, on a thread of
/// its own (the caller's thread stays where it is).
pub fn in_netns<T, F, Fut>(path: &Path, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Netlink) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
{
    let file = File::open(path).map_err(|e| Error::Netns { path: path.display().to_string(), message: e.to_string() })?;
    let shown = path.display().to_string();
    let thread = std::thread::spawn(move || -> Result<T> {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::Netns { path: shown.clone(), message: format!("cannot enter: {e}") })?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async move { work(Netlink::connect()?).await })
    });
    thread.join().map_err(|_| Error::Netns { path: path.display().to_string(), message: "the worker thread panicked".into() })?
}

/// Run `work` with a netlink connection in the caller's own namespace, on a fresh runtime.
pub fn here<T, F, Fut>(work: F) -> Result<T>
where
    F: FnOnce(Netlink) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move { work(Netlink::connect()?).await })
}

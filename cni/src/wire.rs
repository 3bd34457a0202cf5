//! The pod's plumbing: a veth pair named after the attachment, the pod side renamed to
//! CNI_IFNAME inside the pod's namespace with its /32 (/128) addresses and a default route
//! through the link-local gateway that the host side holds.

use std::fs::File;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use sha2::{Digest, Sha256};
use tessera_agent_api::AttachmentKey;
use tessera_netlink::{Netlink, here, in_netns};

use crate::config::{CniError, IO_FAILURE, UNKNOWN_CONTAINER};

/// Host-side interfaces of Tessera pods start with this.
pub const HOST_PREFIX: &str = "tsr";

/// `tsr` + 11 hex digits of the attachment's hash: stable, unique, within IFNAMSIZ.
pub fn host_name(key: &AttachmentKey) -> String {
    let hash = hex::encode(Sha256::digest(format!("{}/{}", key.container_id, key.ifname)));
    format!("{HOST_PREFIX}{}", &hash[..11])
}

fn temp_name(key: &AttachmentKey) -> String {
    format!("tsp{}", &host_name(key)[3..])
}

#[derive(Debug, Clone)]
pub struct Wiring {
    pub key: AttachmentKey,
    pub netns: String,
    pub ips: Vec<IpNet>,
    pub gateway_v4: IpAddr,
    pub gateway_v6: IpAddr,
}

#[derive(Debug, Clone)]
pub struct Links {
    pub host: String,
    pub host_mac: String,
    pub pod_mac: String,
}

fn io(what: &str) -> impl Fn(tessera_netlink::Error) -> CniError + '_ {
    move |e| CniError::new(IO_FAILURE, format!("{what}: {e}"))
}

fn mac(bytes: Option<Vec<u8>>) -> String {
    bytes.unwrap_or_default().iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Create and configure both ends; the host end stays down until [`open`].
pub fn wire(w: &Wiring) -> Result<Links, CniError> {
    let host = host_name(&w.key);
    let temp = temp_name(&w.key);
    let netns = File::open(&w.netns).map_err(|e| CniError::new(UNKNOWN_CONTAINER, format!("network namespace {}: {e}", w.netns)))?;
    let (gw4, gw6) = (w.gateway_v4, w.gateway_v6);
    let has_v6 = w.ips.iter().any(|ip| ip.addr().is_ipv6());
    let host_mac = here(|nl: Netlink| {
        let (host, temp) = (host.clone(), temp.clone());
        async move {
            // A retried ADD starts from scratch (the pod end goes with the host end).
            nl.delete_link(&host).await?;
            nl.create_veth_into(&host, &temp, &netns).await?;
            let index = nl.require_index(&host).await?;
            nl.add_address(index, gw4, 32).await?;
            if has_v6 {
                nl.add_address(index, gw6, 64).await?;
            }
            Ok(mac(nl.link_mac(index).await?))
        }
    })
    .map_err(io("creating the veth pair"))?;
    let (ifname, ips) = (w.key.ifname.clone(), w.ips.clone());
    let pod_mac = in_netns(Path::new(&w.netns), move |nl: Netlink| async move {
        let index = nl.require_index(&temp).await?;
        nl.rename(index, &ifname).await?;
        nl.set_up(index).await?;
        for ip in &ips {
            nl.add_address(index, ip.addr(), ip.prefix_len()).await?;
        }
        if ips.iter().any(|ip| ip.addr().is_ipv4()) {
            nl.add_route(IpNet::from(gw4), None, index, true).await?;
            nl.add_route("0.0.0.0/0".parse().unwrap_or_else(|_| IpNet::from(gw4)), Some(gw4), index, false).await?;
        }
        if ips.iter().any(|ip| ip.addr().is_ipv6()) {
            nl.add_route("::/0".parse().unwrap_or_else(|_| IpNet::from(gw6)), Some(gw6), index, false).await?;
        }
        Ok(mac(nl.link_mac(index).await?))
    })
    .map_err(io("configuring the pod's interface"))?;
    Ok(Links { host, host_mac, pod_mac })
}

/// Let traffic through: the pod's rules are enforced.
pub fn open(links: &Links) -> Result<(), CniError> {
    let host = links.host.clone();
    here(|nl: Netlink| async move {
        let index = nl.require_index(&host).await?;
        nl.set_up(index).await
    })
    .map_err(io("bringing the host side up"))
}

/// Remove the veth pair (its pod end goes with it); nothing to remove is fine.
pub fn unwire(key: &AttachmentKey) -> Result<(), CniError> {
    let host = host_name(key);
    here(|nl: Netlink| async move { nl.delete_link(&host).await.map(|_| ()) }).map_err(io("deleting the veth pair"))
}

/// The interfaces exist and the pod's holds the expected addresses.
pub fn check(key: &AttachmentKey, netns: &str, expected: &[IpNet]) -> Result<(), CniError> {
    let host = host_name(key);
    let up = here(|nl: Netlink| async move { nl.link_index(&host).await }).map_err(io("looking up the host side"))?;
    if up.is_none() {
        return Err(CniError::new(IO_FAILURE, format!("host interface {} is missing", host_name(key))));
    }
    let ifname = key.ifname.clone();
    let have = in_netns(Path::new(netns), move |nl: Netlink| async move {
        match nl.link_index(&ifname).await? {
            Some(index) => Ok(Some(nl.addresses(index).await?)),
            None => Ok(None),
        }
    })
    .map_err(io("inspecting the pod's interface"))?;
    let Some(have) = have else { return Err(CniError::new(IO_FAILURE, format!("interface {} is missing in {netns}", key.ifname))) };
    for ip in expected {
        if !have.contains(ip) {
            return Err(CniError::new(IO_FAILURE, format!("{} lacks address {ip}", key.ifname)));
        }
    }
    Ok(())
}

/// GC: remove Tessera host interfaces of attachments the runtime no longer knows.
pub fn remove_others(keep: &[AttachmentKey]) -> Result<(), CniError> {
    let keep: Vec<String> = keep.iter().map(host_name).collect();
    here(|nl: Netlink| async move {
        for (_, name) in nl.links().await? {
            if name.starts_with(HOST_PREFIX) && !keep.contains(&name) {
                nl.delete_link(&name).await?;
            }
        }
        Ok(())
    })
    .map_err(io("removing stale interfaces"))
}

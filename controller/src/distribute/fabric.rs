//! Each node's part in the fabric: its BGP speaker in agent mode (the leaf group's `bgp`
//! section after inheritance) with what it announces, and the VIPs it holds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use tessera_agent_api::{Speaker, SpeakerPeer};
use tessera_topology::fabric::BgpMode;

use crate::store::{BlockRecord, HostRecord, TopologyRecord, VipRecord};

/// What one node runs, before VIPs: its speaker announcing its group's prefixes (and its blocks
/// when asked; nothing when drained).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct NodeFabric {
    pub speaker: Option<Speaker>,
    pub drained: bool,
}

impl NodeFabric {
    /// The node's speaker and VIPs, given the VIPs it holds: a drained node holds none.
    pub fn with_vips(&self, held: &BTreeSet<IpAddr>) -> (Option<Speaker>, Vec<IpAddr>) {
        let vips: Vec<IpAddr> = if self.drained { Vec::new() } else { held.iter().copied().collect() };
        let speaker = self.speaker.clone().map(|mut s| {
            s.prefixes.extend(vips.iter().map(|a| IpNet::from(*a)));
            s.prefixes.sort();
            s.prefixes.dedup();
            s
        });
        (speaker, vips)
    }
}

/// Every host's part, VIPs aside.
pub(super) fn node_fabrics(topology: &TopologyRecord, hosts: &[HostRecord], blocks: &[BlockRecord]) -> BTreeMap<String, NodeFabric> {
    let mut out = BTreeMap::new();
    for host in hosts {
        // A group whose section does not resolve was refused when the topology was stored.
        // Agent mode only: in controller mode the hosts themselves say nothing.
        let fabric = topology
            .layout
            .group_by_path(&host.group)
            .and_then(|g| g.fabric().ok().flatten().filter(|f| f.mode == BgpMode::Agent).map(|f| (g, f)));
        let speaker = fabric.map(|(group, f)| {
            let mut prefixes: Vec<IpNet> = Vec::new();
            if !host.drained {
                prefixes.extend(group.cidrs.values());
                if f.announce_blocks {
                    prefixes.extend(blocks.iter().filter(|b| b.host.as_deref() == Some(&host.name)).map(|b| b.cidr));
                }
            }
            prefixes.sort();
            prefixes.dedup();
            let next_hop_v4 = host.ips.iter().find_map(|ip| if let IpAddr::V4(v4) = ip { Some(*v4) } else { None });
            Speaker {
                local_as: f.local_as,
                router_id: next_hop_v4.unwrap_or_else(|| router_id_of(&host.name)),
                hold_time: f.hold_time,
                graceful_restart: f.graceful_restart,
                peers: f
                    .peers
                    .iter()
                    .map(|p| SpeakerPeer {
                        address: p.address,
                        asn: p.asn,
                        port: p.port,
                        multihop: p.multihop,
                        password_file: p.password_file.clone(),
                        passive: p.passive,
                    })
                    .collect(),
                prefixes,
                next_hop_v4,
                next_hop_v6: host.ips.iter().find_map(|ip| if let IpAddr::V6(v6) = ip { Some(*v6) } else { None }),
                communities: f.communities.clone(),
                large_communities: f.large_communities.clone(),
            }
        });
        out.insert(host.name.clone(), NodeFabric { speaker, drained: host.drained });
    }
    out
}

/// Who holds each VIP, both ways round: a VIP that moves touches two nodes, whatever the count.
#[derive(Debug, Default)]
pub(super) struct Holders {
    by_vip: BTreeMap<IpAddr, String>,
    by_host: BTreeMap<String, BTreeSet<IpAddr>>,
}

impl Holders {
    pub fn load(vips: &[VipRecord]) -> Holders {
        let mut holders = Holders::default();
        for v in vips {
            holders.set(v.address, v.holder.clone());
        }
        holders
    }

    /// Record `vip`'s holder (`None`: nobody, or the VIP is gone); the hosts whose VIPs changed.
    pub fn set(&mut self, vip: IpAddr, holder: Option<String>) -> BTreeSet<String> {
        let mut changed = BTreeSet::new();
        if let Some(old) = self.by_vip.remove(&vip) {
            if let Some(set) = self.by_host.get_mut(&old) {
                set.remove(&vip);
            }
            changed.insert(old);
        }
        if let Some(new) = holder {
            self.by_host.entry(new.clone()).or_default().insert(vip);
            self.by_vip.insert(vip, new.clone());
            changed.insert(new);
        }
        changed
    }

    pub fn held(&self, host: &str) -> BTreeSet<IpAddr> {
        self.by_host.get(host).cloned().unwrap_or_default()
    }
}

/// A stable BGP identifier for a host with no IPv4 address (RFC 6286 asks only for uniqueness
/// within the AS): a hash of its name, never 0.0.0.0.
fn router_id_of(name: &str) -> Ipv4Addr {
    let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    Ipv4Addr::from(hash.max(1))
}

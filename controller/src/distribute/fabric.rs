//! Each node's part in the fabric: its BGP speaker in agent mode (the leaf group's `bgp`
//! section after inheritance) with what it announces, and the VIPs it holds.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use tessera_agent_api::{Speaker, SpeakerPeer};

use crate::store::{BlockRecord, HostRecord, TopologyRecord, VipRecord};

/// What one node runs and holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct NodeFabric {
    pub speaker: Option<Speaker>,
    pub vips: Vec<IpAddr>,
}

/// Every host's part. A drained host keeps its sessions but announces nothing and holds no VIP.
pub(super) fn node_fabrics(
    topology: &TopologyRecord,
    hosts: &[HostRecord],
    blocks: &[BlockRecord],
    vips: &[VipRecord],
) -> BTreeMap<String, NodeFabric> {
    let mut out = BTreeMap::new();
    for host in hosts {
        let held: Vec<IpAddr> = if host.drained {
            Vec::new()
        } else {
            vips.iter().filter(|v| v.holder.as_deref() == Some(&host.name)).map(|v| v.address).collect()
        };
        // A group whose section does not resolve was refused when the topology was stored.
        let fabric = topology.layout.group_by_path(&host.group).and_then(|g| g.fabric().ok().flatten().map(|f| (g, f)));
        let speaker = fabric.map(|(group, f)| {
            let mut prefixes: Vec<IpNet> = Vec::new();
            if !host.drained {
                prefixes.extend(group.cidrs.values());
                if f.announce_blocks {
                    prefixes.extend(blocks.iter().filter(|b| b.host.as_deref() == Some(&host.name)).map(|b| b.cidr));
                }
                prefixes.extend(held.iter().map(|a| IpNet::from(*a)));
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
                    })
                    .collect(),
                prefixes,
                next_hop_v4,
                next_hop_v6: host.ips.iter().find_map(|ip| if let IpAddr::V6(v6) = ip { Some(*v6) } else { None }),
                communities: f.communities.clone(),
                large_communities: f.large_communities.clone(),
            }
        });
        out.insert(host.name.clone(), NodeFabric { speaker, vips: held });
    }
    out
}

/// A stable BGP identifier for a host with no IPv4 address (RFC 6286 asks only for uniqueness
/// within the AS): a hash of its name, never 0.0.0.0.
fn router_id_of(name: &str) -> Ipv4Addr {
    let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    Ipv4Addr::from(hash.max(1))
}

//! Block IPAM decisions, pure: which block an allocation uses and which address inside it.
//!
//! The store loads the few rows a decision needs, calls these functions inside its transaction,
//! and writes the result; unique constraints in the store back the decisions up under concurrency.
//! Order: a block of the same owner on the same host with room, then a released block of the
//! host's group, then a new block (the lowest free, aligned slot of the group's CIDR).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::cidr::{Prefix, addr_to_u128, u128_to_addr};
use crate::layout::Network;

/// Who a block belongs to: one host and one (tenant, segment).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BlockOwner {
    pub host: String,
    pub tenant: String,
    pub segment: String,
}

/// A block as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockState {
    pub cidr: IpNet,
    /// `None` once the block was emptied and released.
    pub owner: Option<BlockOwner>,
    pub used: u64,
}

/// Where the next address comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockChoice {
    /// A block this owner already has, with room.
    Owned(IpNet),
    /// A released block of the group, taken over.
    Reuse(IpNet),
    /// A block not carved before.
    New(IpNet),
}

impl BlockChoice {
    pub fn cidr(self) -> IpNet {
        match self {
            BlockChoice::Owned(c) | BlockChoice::Reuse(c) | BlockChoice::New(c) => c,
        }
    }
}

/// Addresses of the network never handed out: its own address (IPv4's network address, IPv6's
/// subnet-router anycast address) and IPv4's broadcast address. Point-to-point sized networks
/// (/31 and /32, /127 and /128) use every address.
pub fn reserved_addresses(network: &Network) -> Vec<u128> {
    let net = Prefix::from_net(&network.cidr);
    match network.cidr {
        IpNet::V4(c) if c.prefix_len() < 31 => vec![net.addr, net.last()],
        IpNet::V6(c) if c.prefix_len() < 127 => vec![net.addr],
        _ => Vec::new(),
    }
}

/// Usable addresses of `block`: all of them except those inside the network's blackouts and
/// the network's reserved addresses.
pub fn capacity(network: &Network, block: IpNet) -> u64 {
    let block = Prefix::from_net(&block);
    let blackouts: Vec<Prefix> = network.blackouts.iter().map(Prefix::from_net).collect();
    let blacked: u128 =
        blackouts.iter().filter(|b| b.overlaps(block)).map(|b| if b.contains(block) { block.size() } else { b.size() }).sum();
    let reserved = reserved_addresses(network)
        .into_iter()
        .filter(|a| block.contains_addr(block.family, *a) && !blackouts.iter().any(|b| b.contains_addr(block.family, *a)))
        .count() as u128;
    u64::try_from(block.size().saturating_sub(blacked).saturating_sub(reserved)).unwrap_or(u64::MAX)
}

/// Pick the block for `owner` among the group's `blocks` (every block inside `group_cidr`).
pub fn choose_block(network: &Network, group_cidr: IpNet, blocks: &[BlockState], owner: &BlockOwner) -> Option<BlockChoice> {
    let mut in_group: Vec<&BlockState> = blocks.iter().filter(|b| group_cidr.contains(&b.cidr)).collect();
    in_group.sort_by_key(|b| b.cidr);
    if let Some(b) = in_group.iter().find(|b| b.owner.as_ref() == Some(owner) && b.used < capacity(network, b.cidr)) {
        return Some(BlockChoice::Owned(b.cidr));
    }
    if let Some(b) = in_group.iter().find(|b| b.owner.is_none() && capacity(network, b.cidr) > 0) {
        return Some(BlockChoice::Reuse(b.cidr));
    }
    new_block(network, group_cidr, &in_group.iter().map(|b| Prefix::from_net(&b.cidr)).collect())
}

fn new_block(network: &Network, group_cidr: IpNet, existing: &BTreeSet<Prefix>) -> Option<BlockChoice> {
    let group = Prefix::from_net(&group_cidr);
    let step = Prefix::new(group.family, 0, network.block_prefix).size();
    let blackouts: Vec<Prefix> = network.blackouts.iter().map(Prefix::from_net).collect();
    let mut candidate = group.addr;
    loop {
        if !group.contains_addr(group.family, candidate) {
            return None;
        }
        let block = Prefix::new(group.family, candidate, network.block_prefix);
        let next = if existing.contains(&block) {
            candidate.checked_add(step)
        } else if let Some(b) = blackouts.iter().find(|b| b.contains(block)) {
            b.last().checked_add(1)
        } else if capacity(network, block.to_net()) == 0 {
            candidate.checked_add(step)
        } else {
            return Some(BlockChoice::New(block.to_net()));
        };
        candidate = next?;
    }
}

/// The lowest address of `block` that is neither `used`, blacked out nor reserved.
pub fn choose_address(network: &Network, block: IpNet, used: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    let prefix = Prefix::from_net(&block);
    let used: BTreeSet<u128> = used.iter().map(|a| addr_to_u128(*a)).collect();
    let blackouts: Vec<Prefix> = network.blackouts.iter().map(Prefix::from_net).collect();
    let reserved = reserved_addresses(network);
    let mut value = prefix.addr;
    loop {
        if let Some(b) = blackouts.iter().find(|b| b.contains_addr(prefix.family, value)) {
            value = b.last().checked_add(1)?;
        } else if used.contains(&value) || reserved.contains(&value) {
            value = value.checked_add(1)?;
        } else {
            return prefix.contains_addr(prefix.family, value).then(|| u128_to_addr(prefix.family, value));
        }
        if !prefix.contains_addr(prefix.family, value) {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cidr::Family;

    fn net(blackouts: &[&str]) -> Network {
        Network {
            name: "n".into(),
            cidr: "10.0.0.0/16".parse().expect("cidr"),
            family: Family::V4,
            block_prefix: 28,
            tenants: None,
            blackouts: blackouts.iter().map(|b| b.parse().expect("cidr")).collect(),
            tree: None,
        }
    }

    fn owner(host: &str) -> BlockOwner {
        BlockOwner { host: host.into(), tenant: "t".into(), segment: "default".into() }
    }

    fn block(cidr: &str, owner: Option<BlockOwner>, used: u64) -> BlockState {
        BlockState { cidr: cidr.parse().expect("cidr"), owner, used }
    }

    #[test]
    fn allocation_order_owned_then_released_then_new() {
        let n = net(&[]);
        let group: IpNet = "10.0.0.0/24".parse().expect("cidr");
        let blocks = vec![
            block("10.0.0.0/28", Some(owner("h2")), 3),
            block("10.0.0.16/28", None, 0),
            block("10.0.0.32/28", Some(owner("h1")), 16),
            block("10.0.0.48/28", Some(owner("h1")), 2),
        ];
        assert_eq!(choose_block(&n, group, &blocks, &owner("h1")), Some(BlockChoice::Owned("10.0.0.48/28".parse().expect("c"))));
        assert_eq!(choose_block(&n, group, &blocks[..3], &owner("h1")), Some(BlockChoice::Reuse("10.0.0.16/28".parse().expect("c"))));
        let without_free = [blocks[0].clone(), blocks[2].clone()];
        assert_eq!(choose_block(&n, group, &without_free, &owner("h1")), Some(BlockChoice::New("10.0.0.16/28".parse().expect("c"))));
    }

    #[test]
    fn blackouts_are_skipped_and_exhaustion_is_none() {
        let n = net(&["10.0.0.0/28", "10.0.0.16/30"]);
        let group: IpNet = "10.0.0.0/27".parse().expect("cidr");
        let choice = choose_block(&n, group, &[], &owner("h1")).expect("room");
        assert_eq!(choice, BlockChoice::New("10.0.0.16/28".parse().expect("c")));
        assert_eq!(capacity(&n, choice.cidr()), 12);
        let addr = choose_address(&n, choice.cidr(), &BTreeSet::new());
        assert_eq!(addr, Some("10.0.0.20".parse().expect("ip")));
        let full = vec![block("10.0.0.16/28", Some(owner("h2")), 12)];
        assert_eq!(choose_block(&n, group, &full, &owner("h1")), None);
        let used: BTreeSet<IpAddr> = (20..32).map(|i| format!("10.0.0.{i}").parse().expect("ip")).collect();
        assert_eq!(choose_address(&n, choice.cidr(), &used), None);
    }

    #[test]
    fn ipv6_blocks_do_not_scan_the_whole_group() {
        let mut n = net(&[]);
        n.cidr = "fd00::/48".parse().expect("cidr");
        n.family = Family::V6;
        n.block_prefix = 124;
        let group: IpNet = "fd00::/64".parse().expect("cidr");
        let blocks = vec![block("fd00::/124", Some(owner("h2")), 1)];
        assert_eq!(choose_block(&n, group, &blocks, &owner("h1")), Some(BlockChoice::New("fd00::10/124".parse().expect("c"))));
    }

    #[test]
    fn the_network_address_broadcast_and_subnet_router_anycast_are_never_handed_out() {
        let n = net(&[]);
        let first: IpNet = "10.0.0.0/28".parse().expect("c");
        let last: IpNet = "10.0.255.240/28".parse().expect("c");
        assert_eq!((capacity(&n, first), capacity(&n, last)), (15, 15));
        assert_eq!(choose_address(&n, first, &BTreeSet::new()), Some("10.0.0.1".parse().expect("ip")));
        let used: BTreeSet<IpAddr> = (240..255).map(|i| format!("10.0.255.{i}").parse().expect("ip")).collect();
        assert_eq!(choose_address(&n, last, &used), None, "10.0.255.255 is the broadcast address");
        let mut v6 = net(&[]);
        (v6.cidr, v6.family, v6.block_prefix) = ("fd00:7e55::/48".parse().expect("c"), Family::V6, 124);
        assert_eq!(choose_address(&v6, "fd00:7e55::/124".parse().expect("c"), &BTreeSet::new()), Some("fd00:7e55::1".parse().expect("ip")));
        // A block of one address at the network's own address has no room: the next is taken.
        let mut single = net(&[]);
        single.block_prefix = 32;
        let group: IpNet = "10.0.0.0/24".parse().expect("c");
        assert_eq!(choose_block(&single, group, &[], &owner("h1")), Some(BlockChoice::New("10.0.0.1/32".parse().expect("c"))));
        // Point-to-point networks use every address.
        let mut p2p = net(&[]);
        (p2p.cidr, p2p.block_prefix) = ("10.9.0.0/31".parse().expect("c"), 31);
        assert_eq!(capacity(&p2p, p2p.cidr), 2);
    }
}

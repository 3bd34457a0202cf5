//! Live topology changes: what replacing one layout by another would do to what is allocated.
//!
//! A change may add networks, groups and hosts, and move anything that holds no address. It is
//! refused when an allocated address would have to move (its block would leave its host's group,
//! its network, or fall under a blackout). The same plan answers a dry run and guards the apply.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::cidr::{Prefix, addr_to_u128};
use crate::layout::Layout;
use crate::placement::place_host;
use crate::spec::Labels;

/// A host as currently placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedHost {
    pub name: String,
    pub group: String,
    pub labels: Labels,
}

/// A block as currently allocated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldBlock {
    pub cidr: IpNet,
    pub network: String,
    /// `None` for a released block.
    pub host: Option<String>,
    pub tenant: Option<String>,
    pub used: u64,
}

/// What is allocated now.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Allocated {
    pub hosts: Vec<PlacedHost>,
    pub blocks: Vec<HeldBlock>,
    pub addresses: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CidrChange {
    pub group: String,
    pub network: String,
    pub from: Option<IpNet>,
    pub to: Option<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostMove {
    pub host: String,
    pub from: String,
    pub to: String,
}

/// Why a change cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Refusal {
    pub subject: String,
    pub message: String,
}

/// The effect of a topology change.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangePlan {
    pub cidr_changes: Vec<CidrChange>,
    pub host_moves: Vec<HostMove>,
    /// Released (empty) blocks that no longer fit and are forgotten.
    pub released_blocks_dropped: Vec<IpNet>,
    pub refusals: Vec<Refusal>,
}

impl ChangePlan {
    pub fn is_allowed(&self) -> bool {
        self.refusals.is_empty()
    }
}

/// Plan replacing `old` by `new` given what is allocated. `old` may be empty (first topology).
pub fn plan_change(old: &Layout, new: &Layout, now: &Allocated) -> ChangePlan {
    let mut plan = ChangePlan::default();
    cidr_changes(old, new, &mut plan);

    // Hosts stay where they are when they still may; others are placed afresh.
    let mut placement: BTreeMap<&str, String> = BTreeMap::new();
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    let mut replace = Vec::new();
    for h in &now.hosts {
        let stays = match new.static_host(&h.name) {
            Some((g, _)) => Some(g),
            None => new
                .group_by_path(&h.group)
                .filter(|g| g.takes_dynamic_hosts() && g.required.iter().all(|(k, v)| h.labels.get(k) == Some(v))),
        };
        match stays {
            Some(g) => {
                *counts.entry(g.id).or_default() += 1;
                placement.insert(&h.name, g.path.clone());
            }
            None => replace.push(h),
        }
    }
    for h in replace {
        match place_host(new, &h.name, &h.labels, |g| counts.get(&g).copied().unwrap_or(0)) {
            Ok(g) => {
                *counts.entry(g).or_default() += 1;
                placement.insert(&h.name, new.groups[g].path.clone());
            }
            Err(e) => plan.refusals.push(Refusal { subject: format!("host {}", h.name), message: e.to_string() }),
        }
    }
    for h in &now.hosts {
        if let Some(to) = placement.get(h.name.as_str()).filter(|to| **to != h.group) {
            plan.host_moves.push(HostMove { host: h.name.clone(), from: h.group.clone(), to: to.clone() });
        }
    }

    for b in &now.blocks {
        check_block(new, b, &placement, &mut plan);
    }

    let blackouts: Vec<Prefix> = new.networks.iter().flat_map(|n| n.blackouts.iter().map(Prefix::from_net)).collect();
    for addr in &now.addresses {
        let family = crate::cidr::Family::of_addr(addr);
        if let Some(b) = blackouts.iter().find(|b| b.contains_addr(family, addr_to_u128(*addr))) {
            plan.refusals
                .push(Refusal { subject: format!("address {addr}"), message: format!("is allocated, so blackout {b} cannot be added") });
        }
    }
    plan.cidr_changes.sort();
    plan.host_moves.sort();
    plan.refusals.sort();
    plan.released_blocks_dropped.sort();
    plan
}

fn cidr_changes(old: &Layout, new: &Layout, plan: &mut ChangePlan) {
    let cidrs = |l: &Layout| -> BTreeMap<(String, String), IpNet> {
        l.groups.iter().flat_map(|g| g.cidrs.iter().map(move |(n, c)| ((g.path.clone(), l.networks[*n].name.clone()), *c))).collect()
    };
    let (before, after) = (cidrs(old), cidrs(new));
    let keys: BTreeSet<&(String, String)> = before.keys().chain(after.keys()).collect();
    for key in keys {
        let (from, to) = (before.get(key).copied(), after.get(key).copied());
        if from != to {
            plan.cidr_changes.push(CidrChange { group: key.0.clone(), network: key.1.clone(), from, to });
        }
    }
}

fn check_block(new: &Layout, b: &HeldBlock, placement: &BTreeMap<&str, String>, plan: &mut ChangePlan) {
    let subject = format!("block {}", b.cidr);
    let refuse = |plan: &mut ChangePlan, message: String| {
        if b.used == 0 && b.host.is_none() {
            plan.released_blocks_dropped.push(b.cidr);
        } else {
            plan.refusals.push(Refusal { subject: subject.clone(), message });
        }
    };
    let Some((net_id, network)) = new.network_by_name(&b.network) else {
        return refuse(plan, format!("network `{}` would be removed while it has allocated blocks", b.network));
    };
    if !network.cidr.contains(&b.cidr) || b.cidr.prefix_len() != network.block_prefix {
        return refuse(
            plan,
            format!("would no longer be a /{} block of network `{}` ({})", network.block_prefix, network.name, network.cidr),
        );
    }
    let Some(host) = &b.host else { return };
    if let Some(tenant) = &b.tenant.as_ref().filter(|t| !network.allows(t)) {
        return refuse(plan, format!("tenant `{tenant}` would no longer be allowed in network `{}`", network.name));
    }
    let Some(group_path) = placement.get(host.as_str()) else {
        return;
    };
    let Some(group) = new.group_by_path(group_path) else {
        return;
    };
    match group.cidrs.get(&net_id) {
        Some(cidr) if cidr.contains(&b.cidr) => {}
        Some(cidr) => refuse(
            plan,
            format!("holds {} address(es) of host `{host}`, whose group {group_path} would be {cidr}: the addresses would move", b.used),
        ),
        None => refuse(plan, format!("host `{host}`'s group {group_path} would have no CIDR in network `{}`", network.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Format, parse_topology};

    fn layout(doc: &str) -> Layout {
        Layout::build(&parse_topology(doc, Format::Auto).expect("valid")).expect("valid")
    }

    fn allocated(host: &str, group: &str, block: &str, used: u64) -> Allocated {
        Allocated {
            hosts: vec![PlacedHost { name: host.into(), group: group.into(), labels: Labels::new() }],
            blocks: vec![HeldBlock {
                cidr: block.parse().expect("c"),
                network: "n".into(),
                host: Some(host.into()),
                tenant: Some("t".into()),
                used,
            }],
            addresses: vec![],
        }
    }

    #[test]
    fn adding_a_sibling_that_moves_allocated_addresses_is_refused() {
        let old = layout("networks: [{name: n, cidr: 10.0.0.0/16}]\ngroups: [{name: a}, {name: b}]");
        let new = layout("networks: [{name: n, cidr: 10.0.0.0/16}]\ngroups: [{name: a}, {name: b}, {name: c}]");
        // b moves from 10.0.128.0/17 to 10.0.64.0/18: a block in b's old upper half would move.
        let plan = plan_change(&old, &new, &allocated("h", "b", "10.0.128.0/28", 2));
        assert!(!plan.is_allowed());
        assert!(plan.refusals[0].message.contains("would move"), "{:?}", plan.refusals);
        assert!(plan.cidr_changes.iter().any(|c| c.group == "c" && c.from.is_none()));
        // A block in a, which does not move, is fine.
        assert!(plan_change(&old, &new, &allocated("h", "a", "10.0.0.0/28", 2)).is_allowed());
    }

    #[test]
    fn growing_into_reserved_slots_moves_nothing() {
        let old = layout("networks: [{name: n, cidr: 10.0.0.0/16}]\nslots: 4\ngroups: [{name: a}, {name: b}]");
        let new = layout("networks: [{name: n, cidr: 10.0.0.0/16}]\nslots: 4\ngroups: [{name: a}, {name: b}, {name: c}]");
        let plan = plan_change(&old, &new, &allocated("h", "b", "10.0.64.0/28", 5));
        assert!(plan.is_allowed(), "{:?}", plan.refusals);
        assert_eq!(plan.cidr_changes.len(), 1);
    }

    #[test]
    fn blackouts_over_allocated_addresses_and_unplaceable_hosts_are_refused() {
        let old = layout("networks: [{name: n, cidr: 10.0.0.0/16}]\ngroups: [{name: a}]");
        let new = layout("networks: [{name: n, cidr: 10.0.0.0/16, blackouts: [10.0.0.0/24]}]\ngroups: [{name: a}]");
        let mut now = allocated("h", "a", "10.0.0.0/28", 1);
        now.addresses.push("10.0.0.1".parse().expect("ip"));
        let plan = plan_change(&old, &new, &now);
        assert_eq!(plan.refusals[0].subject, "address 10.0.0.1");

        let labelled = layout("networks: [{name: n, cidr: 10.0.0.0/16}]\ngroups: [{name: a, assignment: {zone: x}}]");
        let plan = plan_change(&old, &labelled, &allocated("h", "a", "10.0.0.0/28", 1));
        assert_eq!(plan.refusals[0].subject, "host h");
    }
}

//! Route planning: host routes inside each leaf group, and fabric/VPC routes for populated groups
//! that fit a route budget with the least over-coverage.
//!
//! Fabric routes start at the leaves (one route per populated leaf group per network). When the
//! budget is smaller, subtrees are collapsed into their parent's CIDR; a tree knapsack picks the
//! collapses that cover the fewest addresses belonging to other groups (or to padding), and among
//! equal choices keeps the most specific routes. Every over-covered range is reported. A gateway
//! of a collapsed group gets host routes to the other populated leaves below it, so traffic that
//! reaches it can go on.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::aggregate::aggregate;
use crate::cidr::{Family, Prefix};
use crate::layout::{GroupId, Layout, NetworkId};

/// A host as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    pub name: String,
    pub group: GroupId,
    pub ips: Vec<IpAddr>,
}

/// A block and the host that owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockInfo {
    pub cidr: IpNet,
    pub host: String,
}

/// A route a host's agent installs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostRoute {
    pub dst: IpNet,
    pub via_host: String,
    pub via: IpAddr,
}

/// Where a fabric route sends traffic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Gateway {
    pub host: String,
    pub ip: IpAddr,
}

/// A route announced to the fabric or written to a VPC route table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FabricRoute {
    pub network: String,
    pub dst: IpNet,
    /// The group path the route stands for, or the network's name when collapsed to it.
    pub scope: String,
    /// Hosts that take traffic for `dst` (ECMP for BGP; a VPC route uses the first).
    pub gateways: Vec<Gateway>,
}

/// Addresses a fabric route covers that belong to someone else.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverCoverage {
    pub route: IpNet,
    pub range: IpNet,
    /// `group zone-A/rack-9 (no hosts)` or `padding of zone-A`.
    pub belongs_to: String,
}

/// The routes at every scope.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutePlan {
    pub host_routes: BTreeMap<String, Vec<HostRoute>>,
    pub fabric_routes: Vec<FabricRoute>,
    pub over_coverage: Vec<OverCoverage>,
    pub budget: Option<usize>,
    /// Inputs the planner had to pass over (a host without an address of a network's family).
    pub diagnostics: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("a route budget of {budget} cannot hold the fabric routes: even collapsed to whole networks they need {minimum}")]
    BudgetTooSmall { budget: usize, minimum: usize },
}

/// One node of the per-network planning tree: the network itself at the root, then its groups.
struct Node {
    cidr: IpNet,
    group: Option<GroupId>,
    children: Vec<usize>,
    /// Addresses of populated leaves below (their whole CIDRs).
    populated: u128,
}

/// Exactly-k tables: `cost[k]` is the least over-coverage with exactly `k` routes.
type Table = Vec<Option<u128>>;

struct Planner<'a> {
    layout: &'a Layout,
    network: NetworkId,
    nodes: Vec<Node>,
    /// Hosts of each leaf group, sorted by name.
    hosts_of: &'a BTreeMap<GroupId, Vec<&'a HostInfo>>,
    limit: usize,
    tables: Vec<Table>,
    /// Per node: the knapsack over its children, prefix by prefix, for reconstruction.
    prefixes: Vec<Vec<Table>>,
    /// Per node: whether its best single route is the collapsed one.
    collapse_at_one: Vec<bool>,
}

pub fn plan_routes(layout: &Layout, hosts: &[HostInfo], blocks: &[BlockInfo], budget: Option<usize>) -> Result<RoutePlan, PlanError> {
    let mut plan = RoutePlan { budget, ..RoutePlan::default() };
    let mut hosts_of: BTreeMap<GroupId, Vec<&HostInfo>> = BTreeMap::new();
    for h in hosts {
        hosts_of.entry(h.group).or_default().push(h);
    }
    for list in hosts_of.values_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }
    leaf_host_routes(hosts, blocks, &mut plan);

    // One planning tree per network; the knapsack across networks shares one budget.
    let mut planners = Vec::new();
    let leaves = hosts_of.len();
    let limit = budget.unwrap_or(usize::MAX).min(leaves * layout.networks.len().max(1));
    for (network, net) in layout.networks.iter().enumerate() {
        let Some(tree) = net.tree else { continue };
        let mut planner = Planner {
            layout,
            network,
            nodes: Vec::new(),
            hosts_of: &hosts_of,
            limit,
            tables: Vec::new(),
            prefixes: Vec::new(),
            collapse_at_one: Vec::new(),
        };
        let root = planner.add_node(net.cidr, None, &layout.trees[tree].roots);
        if planner.nodes[root].populated == 0 {
            continue;
        }
        planner.solve(root);
        planners.push((planner, root));
    }
    let mut total: Table = vec![Some(0)];
    let mut steps = Vec::new();
    for (planner, root) in &planners {
        steps.push(total.clone());
        total = convolve(&total, &planner.tables[*root], limit);
    }
    let best = (0..total.len()).filter_map(|k| total[k].map(|cost| (cost, std::cmp::Reverse(k)))).min();
    let Some((_, std::cmp::Reverse(mut k))) = best else {
        let minimum = planners.len();
        return Err(PlanError::BudgetTooSmall { budget: budget.unwrap_or(0), minimum });
    };
    if planners.is_empty() {
        return Ok(plan);
    }
    for (i, (planner, root)) in planners.iter().enumerate().rev() {
        let kk = split_point(&steps[i], &planner.tables[*root], total_at(&steps, &planners, i, k), k);
        planner.emit(*root, kk, &mut plan);
        k -= kk;
    }
    plan.fabric_routes.sort();
    plan.over_coverage.sort();
    for routes in plan.host_routes.values_mut() {
        routes.sort();
        routes.dedup();
    }
    Ok(plan)
}

/// The best cost over the first `i + 1` networks with `k` routes.
fn total_at(steps: &[Table], planners: &[(Planner<'_>, usize)], i: usize, k: usize) -> Option<u128> {
    let (planner, root) = &planners[i];
    convolve(&steps[i], &planner.tables[*root], usize::MAX).get(k).copied().flatten()
}

/// Find how many of `k` routes the right-hand table took in an optimal convolution.
fn split_point(left: &Table, right: &Table, target: Option<u128>, k: usize) -> usize {
    (0..=k.min(right.len().saturating_sub(1)))
        .rev()
        .find(|&kr| {
            let kl = k - kr;
            matches!((left.get(kl).copied().flatten(), right[kr]), (Some(a), Some(b)) if Some(a + b) == target)
        })
        .unwrap_or(0)
}

fn convolve(a: &Table, b: &Table, limit: usize) -> Table {
    let len = (a.len() + b.len() - 1).min(limit.saturating_add(1));
    let mut out = vec![None; len];
    for (i, x) in a.iter().enumerate() {
        let Some(x) = x else { continue };
        for (j, y) in b.iter().enumerate() {
            let (Some(y), true) = (y, i + j < len) else {
                continue;
            };
            let cost = x.saturating_add(*y);
            if out[i + j].is_none_or(|c| cost < c) {
                out[i + j] = Some(cost);
            }
        }
    }
    out
}

fn leaf_host_routes(hosts: &[HostInfo], blocks: &[BlockInfo], plan: &mut RoutePlan) {
    let mut blocks_of: BTreeMap<&str, Vec<IpNet>> = BTreeMap::new();
    for b in blocks {
        blocks_of.entry(b.host.as_str()).or_default().push(b.cidr);
    }
    let mut group_of: BTreeMap<GroupId, Vec<&HostInfo>> = BTreeMap::new();
    for h in hosts {
        group_of.entry(h.group).or_default().push(h);
    }
    // Each host's aggregated blocks, once: every other host of its leaf group routes to them.
    let mut routes_to: BTreeMap<&str, Vec<HostRoute>> = BTreeMap::new();
    for peers in group_of.values().filter(|peers| peers.len() > 1) {
        for peer in peers {
            let Some(peer_blocks) = blocks_of.get(peer.name.as_str()) else { continue };
            let mut routes = Vec::new();
            for dst in aggregate(peer_blocks) {
                match ip_for(peer, Family::of_net(&dst)) {
                    Some(via) => routes.push(HostRoute { dst, via_host: peer.name.clone(), via }),
                    None => plan.diagnostics.push(format!(
                        "host `{}` has no {} address: no route to its block {dst}",
                        peer.name,
                        Family::of_net(&dst)
                    )),
                }
            }
            routes_to.insert(peer.name.as_str(), routes);
        }
    }
    for h in hosts {
        let peers = group_of.get(&h.group).map(Vec::as_slice).unwrap_or_default();
        let routes =
            peers.iter().filter(|p| p.name != h.name).flat_map(|p| routes_to.get(p.name.as_str()).into_iter().flatten().cloned()).collect();
        plan.host_routes.insert(h.name.clone(), routes);
    }
    plan.diagnostics.sort();
    plan.diagnostics.dedup();
}

fn ip_for(host: &HostInfo, family: Family) -> Option<IpAddr> {
    host.ips.iter().copied().find(|ip| Family::of_addr(ip) == family)
}

impl Planner<'_> {
    fn add_node(&mut self, cidr: IpNet, group: Option<GroupId>, children: &[GroupId]) -> usize {
        let id = self.nodes.len();
        self.nodes.push(Node { cidr, group, children: Vec::new(), populated: 0 });
        let mut kids = Vec::new();
        let mut populated = 0u128;
        for &c in children {
            let g = &self.layout.groups[c];
            let Some(&child_cidr) = g.cidrs.get(&self.network) else {
                continue;
            };
            let child = self.add_node(child_cidr, Some(c), &g.children);
            populated = populated.saturating_add(self.nodes[child].populated);
            kids.push(child);
        }
        if children.is_empty() && group.is_some_and(|g| self.hosts_of.contains_key(&g)) {
            populated = Prefix::from_net(&cidr).size();
        }
        self.nodes[id].children = kids;
        self.nodes[id].populated = populated;
        id
    }

    fn solve(&mut self, node: usize) {
        self.tables.resize(self.nodes.len(), Vec::new());
        self.prefixes.resize_with(self.nodes.len(), Vec::new);
        self.collapse_at_one.resize(self.nodes.len(), false);
        let children = self.nodes[node].children.clone();
        for &c in &children {
            self.solve(c);
        }
        let n = &self.nodes[node];
        let table = if n.populated == 0 {
            vec![Some(0)]
        } else if children.is_empty() {
            vec![None, Some(0)]
        } else {
            let mut acc: Table = vec![Some(0)];
            let mut steps = vec![acc.clone()];
            for &c in &children {
                acc = convolve(&acc, &self.tables[c], self.limit);
                steps.push(acc.clone());
            }
            self.prefixes[node] = steps;
            let collapse = Prefix::from_net(&n.cidr).size().saturating_sub(n.populated);
            if acc.len() < 2 {
                acc.resize(2, None);
            }
            if acc[1].is_none_or(|c| collapse < c) {
                acc[1] = Some(collapse);
                self.collapse_at_one[node] = true;
            }
            acc
        };
        self.tables[node] = table;
    }

    /// Write the routes of `node`'s optimal plan with exactly `k` routes.
    fn emit(&self, node: usize, k: usize, plan: &mut RoutePlan) {
        let n = &self.nodes[node];
        if k == 0 || n.populated == 0 {
            return;
        }
        if n.children.is_empty() || (k == 1 && self.collapse_at_one[node]) {
            self.emit_collapsed(node, plan);
            return;
        }
        let mut k = k;
        let steps = &self.prefixes[node];
        for (i, &c) in n.children.iter().enumerate().rev() {
            let target = steps[i + 1].get(k).copied().flatten();
            let kc = split_point(&steps[i], &self.tables[c], target, k);
            self.emit(c, kc, plan);
            k -= kc;
        }
    }

    fn emit_collapsed(&self, node: usize, plan: &mut RoutePlan) {
        let n = &self.nodes[node];
        let network = &self.layout.networks[self.network];
        let family = network.family;
        let mut leaves = Vec::new();
        self.populated_leaves(node, &mut leaves);
        let Some(&first) = leaves.first() else { return };
        let first_hosts = &self.hosts_of[&self.nodes[first].group.unwrap_or_default()];
        let gateways: Vec<Gateway> =
            first_hosts.iter().filter_map(|h| ip_for(h, family).map(|ip| Gateway { host: h.name.clone(), ip })).collect();
        let scope = n.group.map_or_else(|| network.name.clone(), |g| self.layout.groups[g].path.clone());
        if gateways.is_empty() {
            plan.diagnostics.push(format!("no host of {scope} has an {family} address: no route for {}", n.cidr));
            return;
        }
        plan.fabric_routes.push(FabricRoute { network: network.name.clone(), dst: n.cidr, scope, gateways: gateways.clone() });
        // The gateways forward to the other populated leaves under this route.
        for &leaf in &leaves[1..] {
            let leaf_hosts = &self.hosts_of[&self.nodes[leaf].group.unwrap_or_default()];
            let Some(via_host) = leaf_hosts.iter().find(|h| ip_for(h, family).is_some()) else {
                continue;
            };
            let Some(via) = ip_for(via_host, family) else {
                continue;
            };
            for g in &gateways {
                plan.host_routes.entry(g.host.clone()).or_default().push(HostRoute {
                    dst: self.nodes[leaf].cidr,
                    via_host: via_host.name.clone(),
                    via,
                });
            }
        }
        self.over_coverage(node, n.cidr, plan);
    }

    fn populated_leaves(&self, node: usize, out: &mut Vec<usize>) {
        let n = &self.nodes[node];
        if n.populated == 0 {
            return;
        }
        if n.children.is_empty() {
            out.push(node);
        }
        for &c in &n.children {
            self.populated_leaves(c, out);
        }
    }

    fn over_coverage(&self, node: usize, route: IpNet, plan: &mut RoutePlan) {
        let n = &self.nodes[node];
        if n.children.is_empty() {
            return;
        }
        let name =
            n.group.map_or_else(|| format!("network {}", self.layout.networks[self.network].name), |g| self.layout.groups[g].path.clone());
        let taken: Vec<IpNet> = n.children.iter().map(|&c| self.nodes[c].cidr).collect();
        for range in crate::aggregate::subtract(&[n.cidr], &taken) {
            plan.over_coverage.push(OverCoverage { route, range, belongs_to: format!("padding of {name}") });
        }
        for &c in &n.children {
            let child = &self.nodes[c];
            if child.populated == 0 {
                let path = child.group.map(|g| self.layout.groups[g].path.clone()).unwrap_or_default();
                plan.over_coverage.push(OverCoverage { route, range: child.cidr, belongs_to: format!("group {path} (no hosts)") });
            } else {
                self.over_coverage(c, route, plan);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Format, parse_topology};

    fn layout(doc: &str) -> Layout {
        Layout::build(&parse_topology(doc, Format::Auto).expect("valid")).expect("valid")
    }

    fn host(l: &Layout, name: &str, group: &str, ip: &str) -> HostInfo {
        HostInfo { name: name.into(), group: l.group_by_path(group).expect(group).id, ips: vec![ip.parse().expect("ip")] }
    }

    const DOC: &str = "networks: [{name: n, cidr: 10.0.0.0/16}]\ngroups:\n- {name: za, groups: [{name: r1}, {name: r2}, {name: r3}]}\n- {name: zb, groups: [{name: r4}, {name: r5}]}";

    fn dsts(plan: &RoutePlan) -> Vec<String> {
        plan.fabric_routes.iter().map(|r| format!("{} {}", r.dst, r.scope)).collect()
    }

    #[test]
    fn leaf_routes_without_budget_pressure() {
        let l = layout(DOC);
        let hosts = vec![host(&l, "a1", "za/r1", "192.0.2.1"), host(&l, "a2", "za/r1", "192.0.2.2"), host(&l, "b1", "zb/r4", "192.0.2.3")];
        let blocks = vec![
            BlockInfo { cidr: "10.0.0.0/28".parse().expect("c"), host: "a1".into() },
            BlockInfo { cidr: "10.0.0.16/28".parse().expect("c"), host: "a2".into() },
            BlockInfo { cidr: "10.0.0.32/28".parse().expect("c"), host: "a2".into() },
        ];
        let plan = plan_routes(&l, &hosts, &blocks, Some(50)).expect("fits");
        assert_eq!(dsts(&plan), ["10.0.0.0/19 za/r1", "10.0.128.0/18 zb/r4"]);
        assert!(plan.over_coverage.is_empty());
        let a1: Vec<String> = plan.host_routes["a1"].iter().map(|r| format!("{} via {}", r.dst, r.via)).collect();
        assert_eq!(a1, ["10.0.0.16/28 via 192.0.2.2", "10.0.0.32/28 via 192.0.2.2"]);
        assert!(plan.host_routes["b1"].is_empty());
        assert_eq!(plan.fabric_routes[0].gateways.len(), 2);
    }

    #[test]
    fn budget_collapses_where_it_costs_least_and_reports_it() {
        let l = layout(DOC);
        // za: r1, r2 populated, r3 empty, one padding slot; zb: r4 and r5 populated.
        let hosts = vec![
            host(&l, "a1", "za/r1", "192.0.2.1"),
            host(&l, "a2", "za/r2", "192.0.2.2"),
            host(&l, "b1", "zb/r4", "192.0.2.3"),
            host(&l, "b2", "zb/r5", "192.0.2.4"),
        ];
        let plan = plan_routes(&l, &hosts, &[], Some(3)).expect("fits");
        // Collapsing zb covers nothing extra; collapsing za would cover r3 and padding.
        assert_eq!(dsts(&plan), ["10.0.0.0/19 za/r1", "10.0.32.0/19 za/r2", "10.0.128.0/17 zb"]);
        assert!(plan.over_coverage.is_empty());
        assert_eq!(plan.host_routes["b1"][0].dst.to_string(), "10.0.192.0/18");
        assert_eq!(plan.host_routes["b1"][0].via_host, "b2");

        let plan = plan_routes(&l, &hosts, &[], Some(2)).expect("fits");
        assert_eq!(dsts(&plan), ["10.0.0.0/17 za", "10.0.128.0/17 zb"]);
        let over: Vec<String> = plan.over_coverage.iter().map(|o| format!("{} {}", o.range, o.belongs_to)).collect();
        assert_eq!(over, ["10.0.64.0/19 group za/r3 (no hosts)", "10.0.96.0/19 padding of za"]);
        // The gateway of za forwards to r2's hosts.
        assert_eq!(plan.host_routes["a1"][0].dst.to_string(), "10.0.32.0/19");

        let plan = plan_routes(&l, &hosts, &[], Some(1)).expect("fits");
        assert_eq!(dsts(&plan), ["10.0.0.0/16 n"]);
        assert_eq!(plan_routes(&l, &hosts, &[], Some(0)), Err(PlanError::BudgetTooSmall { budget: 0, minimum: 1 }));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;
        use crate::aggregate::subtract;

        /// Every way to cover the populated leaves below a node: (routes, over-covered addresses).
        fn cuts(l: &Layout, cidr: IpNet, children: &[GroupId], populated: &dyn Fn(&crate::layout::Group) -> bool) -> Vec<(usize, u128)> {
            fn populated_size(l: &Layout, children: &[GroupId], populated: &dyn Fn(&crate::layout::Group) -> bool) -> u128 {
                children
                    .iter()
                    .map(|&c| {
                        let g = &l.groups[c];
                        if g.is_leaf() {
                            if populated(g) { Prefix::from_net(&g.cidrs[&0]).size() } else { 0 }
                        } else {
                            populated_size(l, &g.children, populated)
                        }
                    })
                    .sum()
            }
            let inside = populated_size(l, children, populated);
            if inside == 0 {
                return vec![(0, 0)];
            }
            let mut options = vec![(1, Prefix::from_net(&cidr).size() - inside)];
            let mut combined = vec![(0usize, 0u128)];
            for &c in children {
                let g = &l.groups[c];
                let child = if g.is_leaf() {
                    if populated(g) { vec![(1, 0)] } else { vec![(0, 0)] }
                } else {
                    cuts(l, g.cidrs[&0], &g.children, populated)
                };
                combined = combined.iter().flat_map(|(n, o)| child.iter().map(move |(m, p)| (n + m, o + p))).collect();
            }
            options.extend(combined);
            options
        }

        /// Zones (each a list of racks: hosts per rack), plus a budget.
        fn scenario() -> impl Strategy<Value = (Vec<Vec<usize>>, usize)> {
            (prop::collection::vec(prop::collection::vec(0usize..3, 1..6), 1..4), 1usize..14)
        }

        proptest! {
            #[test]
            fn plans_cover_every_populated_leaf_exactly_once_within_budget((zones, budget) in scenario()) {
                let mut doc = String::from("networks: [{name: n, cidr: 10.0.0.0/12}]\ngroups:\n");
                for (z, racks) in zones.iter().enumerate() {
                    doc.push_str(&format!("- name: z{z}\n  groups:\n"));
                    for r in 0..racks.len() {
                        doc.push_str(&format!("  - name: r{r}\n"));
                    }
                }
                let l = layout(&doc);
                let mut hosts = Vec::new();
                for (z, racks) in zones.iter().enumerate() {
                    for (r, count) in racks.iter().enumerate() {
                        for h in 0..*count {
                            hosts.push(host(&l, &format!("h{z}-{r}-{h}"), &format!("z{z}/r{r}"), "192.0.2.1"));
                        }
                    }
                }
                let populated: Vec<IpNet> = l.leaves().filter(|g| hosts.iter().any(|h| h.group == g.id)).map(|g| g.cidrs[&0]).collect();
                let plan = match plan_routes(&l, &hosts, &[], Some(budget)) {
                    Ok(plan) => plan,
                    Err(e) => return Err(TestCaseError::fail(format!("a budget of {budget} always fits one network: {e}"))),
                };
                let routes: Vec<IpNet> = plan.fabric_routes.iter().map(|r| r.dst).collect();
                prop_assert!(routes.len() <= budget);
                for leaf in &populated {
                    prop_assert_eq!(routes.iter().filter(|r| r.contains(leaf)).count(), 1, "leaf {} in {:?}", leaf, routes);
                }
                for (i, a) in routes.iter().enumerate() {
                    for b in &routes[i + 1..] {
                        prop_assert!(!a.contains(b) && !b.contains(a), "{} and {} overlap", a, b);
                    }
                }
                let reported: Vec<IpNet> = plan.over_coverage.iter().map(|o| o.range).collect();
                prop_assert_eq!(aggregate(&reported), subtract(&routes, &populated));
                // Optimal: no cut of the tree within the budget covers fewer foreign addresses.
                let is_populated = |g: &crate::layout::Group| populated.contains(&g.cidrs[&0]);
                let best = cuts(&l, l.networks[0].cidr, &l.trees[0].roots, &is_populated)
                    .into_iter()
                    .filter(|(n, _)| *n <= budget)
                    .map(|(_, over)| over)
                    .min();
                prop_assert_eq!(Some(crate::aggregate::address_count(&reported)), best);
                if budget >= populated.len() {
                    prop_assert!(plan.over_coverage.is_empty());
                    prop_assert_eq!(routes.len(), populated.len());
                }
            }
        }
    }
}

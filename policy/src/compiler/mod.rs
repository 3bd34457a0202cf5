//! The stateful compiler: compiles everything once, then recompiles only what a change affects
//! and reports which nodes' rulesets changed.
//!
//! Each policy rule is prepared once (its peers' addresses, its egress named ports expanded per
//! destination): that does not depend on the endpoint it applies to. An endpoint's rules are then
//! cheap to build from the prepared rules of the policies that select it. When an endpoint
//! changes, only rules whose peers could select it before or after are prepared again; only the
//! subjects of policies whose prepared rules actually changed are recompiled. With segment
//! compression, a pod added inside an existing block changes no prepared rule, hence no other
//! endpoint and no other node.
//!
//! Endpoints whose side is decided alike form a side group (`groups`) and share its rules. A pod
//! relabelled in place, arriving or leaving moves only its own addresses in or out of peer sets
//! (`points`): those sets and clauses are patched, and each side group under a changed policy
//! is decided again at those addresses alone, once, its rules spliced only where that decision
//! changed. Anything else (a pod moved or readdressed, a segment taken whole or no longer)
//! prepares the policies concerned again and recompiles their subjects.

mod groups;
mod points;
mod prepare;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ipnet::IpNet;

use crate::compile::{Clause, EndpointRules, Family, Options, SideRules, UnionMemo, decide, service_sel};
use crate::eval::{Party, namespace_matches, peer_matches};
use crate::model::{Cluster, Direction, Endpoint, Namespace, NamespaceMatch, Peer, Policy, PortMatch, Tier};

use groups::{GroupId, Groups};
use points::{PeerChange, PointChange};
use prepare::{ClauseIds, PeerEntry, PreparedPolicy, RulePeers};

/// Decision tables by side group, valid within one batch.
type SideCache = rustc_hash::FxHashMap<GroupId, Arc<SideRules>>;

/// Compiles a cluster's policies, and keeps the result current as things change.
#[derive(Debug)]
pub struct Compiler {
    cluster: Cluster,
    blocks: BTreeMap<String, Vec<IpNet>>,
    options: Options,
    policies: Vec<Policy>,
    prepared: Vec<PreparedPolicy>,
    /// Endpoint ids by namespace.
    by_namespace: BTreeMap<String, BTreeSet<String>>,
    /// Endpoint ids by (namespace, segment): what decides whether a segment is taken whole.
    by_segment: BTreeMap<(String, String), BTreeSet<String>>,
    /// How many endpoints hold each address (more than one only by mistake).
    holders: rustc_hash::FxHashMap<std::net::IpAddr, u32>,
    /// Policies whose subject is one namespace, by namespace; the others apply cluster-wide.
    policies_by_namespace: BTreeMap<String, Vec<usize>>,
    cluster_wide: Vec<usize>,
    /// Every distinct peer of every rule, with its current addresses; rules refer to them by index.
    peers: Vec<PeerEntry>,
    /// The peers of each rule, by policy index.
    rule_peers: Vec<RulePeers>,
    /// The peers each policy uses, by policy index.
    /// The policies using each peer, by peer index.
    peer_users: Vec<Vec<usize>>,
    /// The policies with an egress named port of each name.
    egress_named: BTreeMap<String, Vec<usize>>,
    clause_ids: ClauseIds,
    groups: Groups,
    rules: BTreeMap<String, EndpointRules>,
}

impl Compiler {
    pub fn new(cluster: Cluster, blocks: BTreeMap<String, Vec<IpNet>>, policies: Vec<Policy>, options: Options) -> Compiler {
        let mut c = Compiler {
            cluster,
            blocks,
            options,
            policies,
            prepared: Vec::new(),
            by_namespace: BTreeMap::new(),
            by_segment: BTreeMap::new(),
            holders: Default::default(),
            policies_by_namespace: BTreeMap::new(),
            cluster_wide: Vec::new(),
            peers: Vec::new(),
            rule_peers: Vec::new(),
            peer_users: Vec::new(),
            egress_named: BTreeMap::new(),
            clause_ids: ClauseIds::default(),
            groups: Groups::default(),
            rules: BTreeMap::new(),
        };
        let endpoints: Vec<Endpoint> = c.cluster.endpoints.values().cloned().collect();
        endpoints.iter().for_each(|e| c.index_endpoint(e, true));
        c.index_policies();
        c.regroup();
        c.prepared = (0..c.policies.len()).map(|i| c.prepare(i)).collect();
        let ids: Vec<String> = c.cluster.endpoints.keys().cloned().collect();
        let mut cache = SideCache::default();
        let mut unions = UnionMemo::new();
        for id in ids {
            let r = c.compile_one(&id, &mut cache, &mut unions);
            c.rules.insert(id, r);
        }
        c
    }

    fn index_policies(&mut self) {
        self.index_peers();
        self.policies_by_namespace.clear();
        self.cluster_wide.clear();
        for (i, p) in self.policies.iter().enumerate() {
            match &p.subject.namespaces {
                NamespaceMatch::Exactly(ns) => self.policies_by_namespace.entry(ns.clone()).or_default().push(i),
                NamespaceMatch::Selector(_) => self.cluster_wide.push(i),
            }
        }
    }

    pub fn rules(&self) -> &BTreeMap<String, EndpointRules> {
        &self.rules
    }

    pub fn into_rules(self) -> BTreeMap<String, EndpointRules> {
        self.rules
    }

    pub fn has_policy(&self, id: &str) -> bool {
        self.policies.iter().any(|p| p.id == id)
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The policies it compiles (in no particular order: evaluation orders them).
    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The compiled endpoints of one node.
    pub fn node_rules(&self, host: &str) -> Vec<&EndpointRules> {
        self.rules.values().filter(|r| r.host.as_deref() == Some(host)).collect()
    }

    /// Add or replace an endpoint; returns the nodes whose rulesets changed.
    pub fn upsert_endpoint(&mut self, e: Endpoint) -> BTreeSet<String> {
        let old = self.cluster.endpoints.insert(e.id.clone(), e.clone());
        if let Some(o) = &old {
            self.index_endpoint(o, false);
        }
        self.index_endpoint(&e, true);
        self.place(&e.id);
        self.after_endpoint_change(old.as_ref(), Some(&e))
    }

    /// Remove an endpoint; returns the nodes whose rulesets changed.
    pub fn remove_endpoint(&mut self, id: &str) -> BTreeSet<String> {
        let Some(old) = self.cluster.endpoints.remove(id) else { return BTreeSet::new() };
        self.index_endpoint(&old, false);
        self.place(id);
        self.after_endpoint_change(Some(&old), None)
    }

    /// Add or replace a namespace (tenant) and its labels; returns the nodes whose rulesets
    /// changed.
    pub fn upsert_namespace(&mut self, ns: Namespace) -> BTreeSet<String> {
        if self.cluster.namespaces.get(&ns.name) == Some(&ns) {
            return BTreeSet::new();
        }
        let name = ns.name.clone();
        let before = self.cluster.namespace_labels(&name).into_owned();
        self.cluster.namespaces.insert(name.clone(), ns);
        self.after_namespace_change(&name, &before)
    }

    /// Forget a namespace's labels (it keeps only its automatic name label, as any namespace
    /// endpoints refer to without describing it); returns the nodes whose rulesets changed.
    pub fn remove_namespace(&mut self, name: &str) -> BTreeSet<String> {
        let Some(before) = self.cluster.namespaces.remove(name) else { return BTreeSet::new() };
        self.after_namespace_change(name, &before.labels)
    }

    /// A namespace's labels changed (they were `before`): peers whose namespace selector now
    /// decides otherwise about it are computed again, and its endpoints placed again (policies
    /// choosing namespaces by label may select them or not any more).
    fn after_namespace_change(&mut self, name: &str, before: &crate::selector::Labels) -> BTreeSet<String> {
        let mut subjects: BTreeSet<String> = self.by_namespace.get(name).cloned().unwrap_or_default();
        for id in &subjects {
            self.place(id);
        }
        let now = self.cluster.namespace_labels(name).into_owned();
        let flips = |_: &Compiler, peer: &Peer| match peer {
            Peer::Endpoints { namespaces: NamespaceMatch::Selector(sel), .. } => sel.matches(before) != sel.matches(&now),
            _ => false,
        };
        self.refresh_policies_of_peers(flips, &mut subjects);
        self.recompile(subjects, BTreeSet::new(), None)
    }

    /// Compute again the peers `which` picks, then prepare again the policies using one that
    /// changed (their egress named ports expand over what those peers select, so they follow
    /// too); the subjects of each policy whose rules changed join `subjects`.
    fn refresh_policies_of_peers(&mut self, which: impl Fn(&Compiler, &Peer) -> bool, subjects: &mut BTreeSet<String>) {
        let mut changed: BTreeSet<usize> = BTreeSet::new();
        for k in 0..self.peers.len() {
            if which(self, &self.peers[k].peer) && self.recompute_peer(k) {
                changed.insert(k);
            }
        }
        let users: BTreeSet<usize> = changed.iter().flat_map(|&k| self.peer_users[k].iter().copied()).collect();
        for i in users {
            let fresh = self.prepare(i);
            if fresh != self.prepared[i] {
                self.prepared[i] = fresh;
                subjects.extend(self.subjects(i));
            }
        }
        self.clause_ids.prune(&self.prepared);
    }

    /// Replace the blocks of one segment (`tenant/segment`; none: it has no blocks any more);
    /// returns the nodes whose rulesets changed. Only peers looking at that tenant can change:
    /// a segment they take whole stands for its blocks.
    pub fn set_segment_blocks(&mut self, segment: &str, blocks: Vec<IpNet>) -> BTreeSet<String> {
        let current = self.blocks.get(segment).map(Vec::as_slice).unwrap_or_default();
        if current == blocks.as_slice() {
            return BTreeSet::new();
        }
        if blocks.is_empty() {
            self.blocks.remove(segment);
        } else {
            self.blocks.insert(segment.to_string(), blocks);
        }
        let tenant = segment.split_once('/').map_or(segment, |(t, _)| t).to_string();
        let looks = |c: &Compiler, peer: &Peer| match peer {
            Peer::Segment { tenant: t, .. } => *t == tenant,
            Peer::Endpoints { namespaces, .. } => namespace_matches(&c.cluster, namespaces, &tenant),
            Peer::Cidr { .. } | Peer::Host(_) | Peer::Any => false,
        };
        let mut subjects = BTreeSet::new();
        self.refresh_policies_of_peers(looks, &mut subjects);
        self.recompile(subjects, BTreeSet::new(), None)
    }

    /// Add an endpoint to the indexes by namespace, segment and address, or take it out.
    fn index_endpoint(&mut self, e: &Endpoint, add: bool) {
        let by_namespace = self.by_namespace.entry(e.namespace.clone()).or_default();
        let by_segment = self.by_segment.entry((e.namespace.clone(), e.segment.clone())).or_default();
        if add {
            by_namespace.insert(e.id.clone());
            by_segment.insert(e.id.clone());
        } else {
            by_namespace.remove(&e.id);
            by_segment.remove(&e.id);
        }
        for ip in &e.ips {
            let count = self.holders.entry(*ip).or_default();
            *count = if add { *count + 1 } else { count.saturating_sub(1) };
            if *count == 0 {
                self.holders.remove(ip);
            }
        }
    }

    /// Add or replace a policy (by id); returns the nodes whose rulesets changed.
    pub fn upsert_policy(&mut self, p: Policy) -> BTreeSet<String> {
        let mut subjects = BTreeSet::new();
        let mut looked_in = vec![p.subject.namespaces.clone()];
        let i = match self.policies.iter().position(|q| q.id == p.id) {
            Some(i) => {
                subjects.extend(self.subjects(i));
                looked_in.push(std::mem::replace(&mut self.policies[i], p).subject.namespaces);
                i
            }
            None => {
                self.policies.push(p);
                self.prepared.push(PreparedPolicy::default());
                self.policies.len() - 1
            }
        };
        self.index_policies();
        self.regroup_in(&looked_in);
        self.prepared[i] = self.prepare(i);
        self.clause_ids.prune(&self.prepared);
        subjects.extend(self.subjects(i));
        self.recompile(subjects, BTreeSet::new(), None)
    }

    /// Remove a policy by id; returns the nodes whose rulesets changed.
    pub fn remove_policy(&mut self, id: &str) -> BTreeSet<String> {
        let Some(i) = self.policies.iter().position(|p| p.id == id) else { return BTreeSet::new() };
        let subjects = self.subjects(i);
        self.policies.remove(i);
        self.prepared.remove(i);
        self.index_policies();
        self.ungroup_policy(i);
        self.clause_ids.prune(&self.prepared);
        self.recompile(subjects, BTreeSet::new(), None)
    }

    fn after_endpoint_change(&mut self, old: Option<&Endpoint>, new: Option<&Endpoint>) -> BTreeSet<String> {
        let mut subjects: BTreeSet<String> = BTreeSet::new();
        let mut hosts: BTreeSet<String> = BTreeSet::new();
        // A node's local addresses change when an endpoint arrives, leaves, moves or is readdressed.
        let placement_changed = match (old, new) {
            (Some(o), Some(n)) => o.host != n.host || o.ips != n.ips,
            _ => true,
        };
        if placement_changed {
            for e in [old, new].into_iter().flatten() {
                hosts.extend(e.host.clone());
            }
            if let Some(o) = old {
                self.rules.remove(&o.id);
            }
        }
        if let Some(e) = new {
            subjects.insert(e.id.clone());
        }
        // A change confined to one endpoint's addresses (a point change): the endpoint changed
        // in place (same namespace, segment and addresses), arrived or left, and no other
        // endpoint holds its addresses.
        let shape = match (old, new) {
            (Some(o), Some(n)) if o.namespace == n.namespace && o.segment == n.segment && o.ips == n.ips => Shape::InPlace(o, n),
            (Some(o), Some(n)) => Shape::Moved(o, n),
            (None, Some(n)) => Shape::Arrived(n),
            (Some(o), None) => Shape::Left(o),
            (None, None) => return hosts,
        };
        let point = match shape {
            Shape::InPlace(_, e) | Shape::Arrived(e) => Some((e, true)),
            Shape::Left(e) => Some((e, false)),
            Shape::Moved(..) => None,
        };
        let alone =
            point.is_some_and(|(e, present)| e.ips.iter().all(|ip| self.holders.get(ip).copied().unwrap_or(0) == u32::from(present)));
        let (changed_peers, points_only) = self.refresh_peers(shape, alone);
        let point = point.filter(|_| points_only);
        let mut replaced: BTreeMap<usize, PreparedPolicy> = BTreeMap::new();
        let mut sides = BTreeSet::new();
        // Policies using a changed peer, and those whose egress named ports expand over this
        // endpoint as a destination.
        let users: BTreeSet<usize> = changed_peers.iter().flat_map(|&k| self.peer_users[k].iter().copied()).collect();
        let names: BTreeSet<&str> =
            [old, new].into_iter().flatten().flat_map(|e| e.named_ports.iter().map(|np| np.name.as_str())).collect();
        let expanding: BTreeSet<usize> = names.iter().flat_map(|n| self.egress_named.get(*n).into_iter().flatten().copied()).collect();
        for i in users.union(&expanding).copied().collect::<Vec<usize>>() {
            if !users.contains(&i) && !self.expansion_may_change(i, shape) {
                continue;
            }
            let fresh = match point {
                Some((e, present)) => self.patch_prepared(i, e, present),
                None => Some(self.prepare(i)).filter(|fresh| *fresh != self.prepared[i]).map(|p| (p, Vec::new())),
            };
            if let Some((fresh, dirs)) = fresh {
                sides.extend(dirs.into_iter().map(|d| (i, d)));
                replaced.insert(i, std::mem::replace(&mut self.prepared[i], fresh));
                // A point change decides the other subjects again at the points only.
                if point.is_none() {
                    subjects.extend(self.subjects(i));
                }
            }
        }
        if point.is_none() {
            self.clause_ids.prune(&self.prepared);
        }
        let point = point.map(|(e, _)| PointChange { points: e.ips.clone(), old: replaced, sides, endpoint: e.id.clone() });
        self.recompile(subjects, hosts, point)
    }

    /// Bring the peers' addresses up to date after one endpoint changed: patched at its
    /// addresses where a point change allows it (`alone`: no other endpoint holds them),
    /// computed again otherwise. Returns the peers that changed, and whether every change was
    /// a patch at the points.
    fn refresh_peers(&mut self, shape: Shape, alone: bool) -> (BTreeSet<usize>, bool) {
        let mut changed: BTreeSet<usize> = BTreeSet::new();
        let mut points_only = alone;
        for k in 0..self.peers.len() {
            let peer = &self.peers[k].peer;
            // The endpoint, and whether the peer selected it before and after (None: absent).
            let (e, before, after) = match shape {
                Shape::InPlace(o, n) => {
                    let Some(now) = flipped(&self.cluster, peer, o, n) else { continue };
                    (n, Some(!now), Some(now))
                }
                Shape::Arrived(n) if self.peer_depends_on(peer, n) => (n, None, Some(endpoint_selected(&self.cluster, peer, n))),
                Shape::Left(o) if self.peer_depends_on(peer, o) => (o, Some(endpoint_selected(&self.cluster, peer, o)), None),
                Shape::Moved(o, n) if self.peer_depends_on(peer, o) || self.peer_depends_on(peer, n) => {
                    points_only = false;
                    if self.recompute_peer(k) {
                        changed.insert(k);
                    }
                    continue;
                }
                _ => continue,
            };
            match self.peer_change(peer, e, before, after) {
                PeerChange::Unchanged => {}
                PeerChange::Patch(now) if points_only => {
                    e.ips.iter().for_each(|ip| points::set_point(&mut self.peers[k].addrs, ip, now));
                    changed.insert(k);
                }
                _ => {
                    points_only = false;
                    if self.recompute_peer(k) {
                        changed.insert(k);
                    }
                }
            }
        }
        (changed, points_only)
    }

    /// Compute peer `k`'s addresses again; whether they changed.
    fn recompute_peer(&mut self, k: usize) -> bool {
        let fresh = self.peer_addresses(&self.peers[k].peer);
        let changed = self.peers[k].addrs != fresh;
        if changed {
            self.peers[k].addrs = fresh;
        }
        changed
    }

    /// Whether policy `i`'s egress named ports, expanded over destination endpoints, may
    /// expand differently after this change. In place with the same ports, only if a rule's
    /// peers take the endpoint before and not after, or the reverse.
    fn expansion_may_change(&self, i: usize, shape: Shape) -> bool {
        let Shape::InPlace(o, n) = shape else { return true };
        if o.named_ports != n.named_ports {
            return true;
        }
        let takes = |r: &crate::model::Rule, e: &Endpoint| {
            e.ips.iter().any(|ip| r.peers.iter().any(|p| peer_matches(&self.cluster, p, Party::Endpoint(e, *ip))))
        };
        let carries = |r: &crate::model::Rule| {
            r.ports.iter().flatten().any(|pr| matches!(&pr.port, PortMatch::Named(name) if n.named_ports.iter().any(|np| np.name == *name)))
        };
        self.policies[i].egress.iter().flatten().any(|r| carries(r) && takes(r, o) != takes(r, n))
    }

    /// Could this peer's addresses change when `e` changes? Any change in a namespace the peer
    /// looks at can: even an endpoint it does not select decides whether a segment is whole.
    fn peer_depends_on(&self, peer: &Peer, e: &Endpoint) -> bool {
        match peer {
            Peer::Segment { tenant, segment } => e.namespace == *tenant && e.segment == *segment,
            Peer::Endpoints { namespaces, .. } => namespace_matches(&self.cluster, namespaces, &e.namespace),
            Peer::Cidr { .. } | Peer::Host(_) | Peer::Any => false,
        }
    }

    fn recompile(&mut self, subjects: BTreeSet<String>, mut hosts: BTreeSet<String>, point: Option<PointChange>) -> BTreeSet<String> {
        let mut cache = SideCache::default();
        let mut unions = UnionMemo::new();
        for id in subjects {
            if !self.cluster.endpoints.contains_key(&id) {
                continue;
            }
            let fresh = self.compile_one(&id, &mut cache, &mut unions);
            if self.rules.get(&id) != Some(&fresh) {
                hosts.extend(fresh.host.clone());
                self.rules.insert(id, fresh);
            }
        }
        // After the changed endpoint's own compile, which let go of the rules it shared.
        if let Some(change) = &point {
            self.splice_at_points(change, &mut hosts);
        }
        hosts
    }

    /// Compile one endpoint. Endpoints selected by the same policies, with the same named
    /// ports, get the same decision tables: `cache` shares them within one batch.
    fn compile_one(&self, id: &str, cache: &mut SideCache, unions: &mut UnionMemo) -> EndpointRules {
        let e = &self.cluster.endpoints[id];
        let families = families(e);
        let mut side = |dir: Direction| {
            let order = self.selecting(e, dir);
            let group = self.groups.of(&e.id, dir);
            if let Some(hit) = group.and_then(|g| cache.get(&g)) {
                return hit.clone();
            }
            let (mut admin, mut namespace, mut baseline): (Vec<&Clause>, Vec<&Clause>, Vec<&Clause>) = (Vec::new(), Vec::new(), Vec::new());
            // Clauses of named ingress ports are resolved on this endpoint, so they are built here.
            let mut named: Vec<(usize, Clause)> = Vec::new();
            let mut isolated = false;
            for &i in order {
                let list = match self.policies[i].tier {
                    Tier::Admin { .. } => &mut admin,
                    Tier::Namespace => {
                        isolated = true;
                        &mut namespace
                    }
                    Tier::Baseline { .. } => &mut baseline,
                };
                for (r, rule) in self.prepared[i].rules(dir).iter().zip(self.policies[i].rules(dir).into_iter().flatten()) {
                    list.extend(r.clauses.iter());
                    for (pr, addrs) in &r.ingress_named {
                        let PortMatch::Named(name) = &pr.port else { continue };
                        let services = service_sel(pr, e.resolve_port(name, pr.protocol));
                        if !services.is_empty() {
                            // Position keeps first-match order within the tier.
                            named.push((
                                tier_index(self.policies[i].tier) * 1_000_000 + list.len(),
                                Clause { action: rule.action, addrs: addrs.clone(), services, id: 0 },
                            ));
                        }
                    }
                }
            }
            if named.is_empty() {
                let r = Arc::new(decide(&admin, &namespace, &baseline, isolated, &families, unions));
                group.map(|g| cache.insert(g, r.clone()));
                return r;
            }
            // Splice the endpoint-resolved clauses in at their positions.
            let splice = |list: &[&Clause], tier: usize| -> Vec<Clause> {
                let mut out: Vec<Clause> = Vec::with_capacity(list.len());
                let mut extra = named.iter().filter(|(pos, _)| pos / 1_000_000 == tier).peekable();
                for (k, c) in list.iter().enumerate() {
                    while let Some((pos, nc)) = extra.peek() {
                        if pos % 1_000_000 > k {
                            break;
                        }
                        out.push(nc.clone());
                        extra.next();
                    }
                    out.push((*c).clone());
                }
                out.extend(extra.map(|(_, c)| c.clone()));
                out
            };
            let (a, n, b) = (splice(&admin, 0), splice(&namespace, 1), splice(&baseline, 2));
            let (a, n, b): (Vec<&Clause>, Vec<&Clause>, Vec<&Clause>) = (a.iter().collect(), n.iter().collect(), b.iter().collect());
            let r = Arc::new(decide(&a, &n, &b, isolated, &families, unions));
            group.map(|g| cache.insert(g, r.clone()));
            r
        };
        EndpointRules {
            endpoint: e.id.clone(),
            host: e.host.clone(),
            ips: e.ips.clone(),
            ingress: side(Direction::Ingress),
            egress: side(Direction::Egress),
        }
    }
}

/// The address families an endpoint has.
fn families(e: &Endpoint) -> Vec<Family> {
    [Family::V4, Family::V6].into_iter().filter(|f| e.ips.iter().any(|ip| Family::of(ip) == *f)).collect()
}

/// A tier's place in evaluation order, as `decide` takes the tiers.
fn tier_index(tier: Tier) -> usize {
    match tier {
        Tier::Admin { .. } => 0,
        Tier::Namespace => 1,
        Tier::Baseline { .. } => 2,
    }
}

/// How an endpoint changed, as far as point changes go.
#[derive(Clone, Copy)]
enum Shape<'a> {
    /// Same namespace, segment and addresses.
    InPlace(&'a Endpoint, &'a Endpoint),
    Arrived(&'a Endpoint),
    Left(&'a Endpoint),
    /// Anything else: moved to another namespace or segment, or readdressed.
    Moved(&'a Endpoint, &'a Endpoint),
}

/// Whether `peer` selects an endpoint changed in place (same namespace and segment) after the
/// change but not before, or the reverse: `Some(selected now)` if it flipped.
fn flipped(cluster: &Cluster, peer: &Peer, old: &Endpoint, new: &Endpoint) -> Option<bool> {
    let Peer::Endpoints { namespaces, pods } = peer else { return None };
    // The labels decide first: namespace selectors are dearer and the same before and after.
    let now = pods.matches(&new.labels);
    (pods.matches(&old.labels) != now && namespace_matches(cluster, namespaces, &new.namespace)).then_some(now)
}

fn endpoint_selected(cluster: &Cluster, peer: &Peer, e: &Endpoint) -> bool {
    match peer {
        Peer::Segment { tenant, segment } => e.namespace == *tenant && e.segment == *segment,
        Peer::Endpoints { namespaces, pods } => namespace_matches(cluster, namespaces, &e.namespace) && pods.matches(&e.labels),
        _ => false,
    }
}

/// Compile every endpoint at once (the stateful `Compiler` without keeping it).
pub fn compile(
    cluster: &Cluster,
    blocks: &BTreeMap<String, Vec<IpNet>>,
    policies: &[Policy],
    options: Options,
) -> BTreeMap<String, EndpointRules> {
    Compiler::new(cluster.clone(), blocks.clone(), policies.to_vec(), options).into_rules()
}

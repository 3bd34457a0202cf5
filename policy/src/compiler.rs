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
//! A pod relabelled in place moves only its own addresses in or out of peer sets: those sets are
//! patched, not rebuilt, and a subject whose decision at those addresses is the same with the old
//! and the new clauses (decided on the few clauses that hold them) keeps its rules untouched.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::compile::{
    AddressSet, Clause, EndpointRules, Family, Options, ServiceSel, UnionMemo, decide, icmp_family, net_range, normalize, service_sel,
    subtract_ranges, to_u128,
};
use crate::eval::{Party, namespace_matches, peer_matches};
use crate::model::{Cluster, Direction, Endpoint, NamespaceMatch, Peer, Policy, PortMatch, Rule, Tier};

/// What decides an endpoint's side: direction, selecting policies, named ports, families.
type SideKey = (Direction, Vec<usize>, Vec<crate::model::NamedPort>, Vec<Family>);

/// Decision tables by side key, valid within one batch.
type SideCache = BTreeMap<SideKey, crate::compile::SideRules>;

/// A rule with everything that does not depend on its subject computed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PreparedRule {
    /// Clauses valid for any subject.
    clauses: Vec<Clause>,
    /// Ingress named ports: resolved on the subject, with these addresses.
    ingress_named: Vec<(crate::model::PortRule, AddressSet)>,
}

/// A change that moved only `points` (one endpoint's addresses) in or out of peer sets: every
/// changed clause differs from its old self at those addresses alone.
struct PointChange {
    points: Vec<IpAddr>,
    /// Prepared rules from before the change, of the policies whose prepared rules changed.
    old: BTreeMap<usize, PreparedPolicy>,
    /// The endpoint that changed: its own selection may have changed, so it is compiled in full.
    endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct PreparedPolicy {
    ingress: Vec<PreparedRule>,
    egress: Vec<PreparedRule>,
}

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
    /// Policies whose subject is one namespace, by namespace; the others apply cluster-wide.
    policies_by_namespace: BTreeMap<String, Vec<usize>>,
    cluster_wide: Vec<usize>,
    /// Every distinct peer of every rule, by key, and its current addresses.
    peer_defs: BTreeMap<String, Peer>,
    /// The peer keys each policy uses, by policy index.
    policy_peers: Vec<BTreeSet<String>>,
    /// Clause address sets by content hash, with the id given to each distinct content.
    interned: std::collections::HashMap<u64, Vec<(u64, AddressSet)>>,
    next_clause_id: u64,
    peer_sets: BTreeMap<String, AddressSet>,
    rules: BTreeMap<String, EndpointRules>,
}

impl Compiler {
    pub fn new(cluster: Cluster, blocks: BTreeMap<String, Vec<IpNet>>, policies: Vec<Policy>, options: Options) -> Compiler {
        let mut by_namespace: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut by_segment: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for e in cluster.endpoints.values() {
            by_namespace.entry(e.namespace.clone()).or_default().insert(e.id.clone());
            by_segment.entry((e.namespace.clone(), e.segment.clone())).or_default().insert(e.id.clone());
        }
        let mut c = Compiler {
            cluster,
            blocks,
            options,
            policies,
            prepared: Vec::new(),
            by_namespace,
            by_segment,
            policies_by_namespace: BTreeMap::new(),
            cluster_wide: Vec::new(),
            peer_defs: BTreeMap::new(),
            policy_peers: Vec::new(),
            interned: std::collections::HashMap::new(),
            next_clause_id: 1,
            peer_sets: BTreeMap::new(),
            rules: BTreeMap::new(),
        };
        c.index_policies();
        let mut peers = BTreeMap::new();
        c.prepared = (0..c.policies.len()).map(|i| c.prepare_cached(&c.policies[i], &mut peers)).collect();
        let mut prepared = std::mem::take(&mut c.prepared);
        prepared.iter_mut().for_each(|p| c.intern(p));
        c.prepared = prepared;
        c.peer_sets = peers;
        let ids: Vec<String> = c.cluster.endpoints.keys().cloned().collect();
        let mut cache = SideCache::new();
        let mut unions = UnionMemo::new();
        for id in ids {
            let r = c.compile_one(&id, &mut cache, &mut unions);
            c.rules.insert(id, r);
        }
        c
    }

    /// Give every prepared clause the id of its address content (equal content, equal id).
    fn intern(&mut self, prepared: &mut PreparedPolicy) {
        use std::hash::{Hash, Hasher};
        for clause in prepared.ingress.iter_mut().chain(prepared.egress.iter_mut()).flat_map(|r| r.clauses.iter_mut()) {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            clause.addrs.hash(&mut h);
            let bucket = self.interned.entry(h.finish()).or_default();
            clause.id = match bucket.iter().find(|(_, a)| *a == clause.addrs) {
                Some((id, _)) => *id,
                None => {
                    let id = self.next_clause_id;
                    self.next_clause_id += 1;
                    bucket.push((id, clause.addrs.clone()));
                    id
                }
            };
        }
    }

    fn index_policies(&mut self) {
        self.policies_by_namespace.clear();
        self.cluster_wide.clear();
        self.peer_defs.clear();
        self.policy_peers.clear();
        for p in &self.policies {
            let mut keys = BTreeSet::new();
            for peer in p.ingress.iter().chain(p.egress.iter()).flatten().flat_map(|r| &r.peers) {
                let key = peer_key(peer);
                self.peer_defs.entry(key.clone()).or_insert_with(|| peer.clone());
                keys.insert(key);
            }
            self.policy_peers.push(keys);
        }
        let defs = &self.peer_defs;
        self.peer_sets.retain(|k, _| defs.contains_key(k));
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

    /// The compiled endpoints of one node.
    pub fn node_rules(&self, host: &str) -> Vec<&EndpointRules> {
        self.rules.values().filter(|r| r.host.as_deref() == Some(host)).collect()
    }

    /// Add or replace an endpoint; returns the nodes whose rulesets changed.
    pub fn upsert_endpoint(&mut self, e: Endpoint) -> BTreeSet<String> {
        let old = self.cluster.endpoints.get(&e.id).cloned();
        if let Some(o) = &old {
            self.by_namespace.entry(o.namespace.clone()).or_default().remove(&o.id);
            self.by_segment.entry((o.namespace.clone(), o.segment.clone())).or_default().remove(&o.id);
        }
        self.by_namespace.entry(e.namespace.clone()).or_default().insert(e.id.clone());
        self.by_segment.entry((e.namespace.clone(), e.segment.clone())).or_default().insert(e.id.clone());
        self.cluster.endpoints.insert(e.id.clone(), e.clone());
        self.after_endpoint_change(old.as_ref(), Some(&e))
    }

    /// Remove an endpoint; returns the nodes whose rulesets changed.
    pub fn remove_endpoint(&mut self, id: &str) -> BTreeSet<String> {
        let Some(old) = self.cluster.endpoints.remove(id) else { return BTreeSet::new() };
        self.by_namespace.entry(old.namespace.clone()).or_default().remove(id);
        self.by_segment.entry((old.namespace.clone(), old.segment.clone())).or_default().remove(id);
        self.after_endpoint_change(Some(&old), None)
    }

    /// Add or replace a policy (by id); returns the nodes whose rulesets changed.
    pub fn upsert_policy(&mut self, p: Policy) -> BTreeSet<String> {
        let mut peers = std::mem::take(&mut self.peer_sets);
        let mut prepared = self.prepare_cached(&p, &mut peers);
        self.peer_sets = peers;
        self.intern(&mut prepared);
        let mut subjects = BTreeSet::new();
        match self.policies.iter().position(|q| q.id == p.id) {
            Some(i) => {
                subjects.extend(self.subjects(&self.policies[i]));
                self.policies[i] = p;
                self.prepared[i] = prepared;
                subjects.extend(self.subjects(&self.policies[i]));
            }
            None => {
                subjects.extend(self.subjects(&p));
                self.policies.push(p);
                self.prepared.push(prepared);
            }
        }
        self.index_policies();
        self.recompile(subjects, BTreeSet::new(), None)
    }

    /// Remove a policy by id; returns the nodes whose rulesets changed.
    pub fn remove_policy(&mut self, id: &str) -> BTreeSet<String> {
        let Some(i) = self.policies.iter().position(|p| p.id == id) else { return BTreeSet::new() };
        let subjects = self.subjects(&self.policies[i]);
        self.policies.remove(i);
        self.prepared.remove(i);
        self.index_policies();
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
        // Peers whose addresses may change are computed again; only policies using a peer that
        // really changed (or expanding egress named ports over endpoints) are prepared again.
        let mut changed_peers: BTreeSet<String> = BTreeSet::new();
        let keys: Vec<String> = self.peer_defs.keys().cloned().collect();
        // Same namespace, segment and addresses: a peer's addresses change only if it selects
        // the endpoint before and not after (or the reverse); segment membership is unchanged.
        let same_place = matches!((old, new), (Some(o), Some(n)) if o.namespace == n.namespace && o.segment == n.segment && o.ips == n.ips);
        // Whether every changed peer set changed only at this endpoint's addresses (patched).
        let mut points_only = same_place;
        for key in keys {
            let peer = &self.peer_defs[&key];
            let (may_change, patch) = match (old, new) {
                (Some(o), Some(n)) if same_place => {
                    let now = endpoint_selected(&self.cluster, peer, n);
                    let flipped = endpoint_selected(&self.cluster, peer, o) != now;
                    (flipped, flipped.then(|| self.patched_peer_set(&key, peer, n, now)).flatten())
                }
                _ => ([old, new].into_iter().flatten().any(|e| self.peer_depends_on(peer, e)), None),
            };
            if may_change {
                points_only &= patch.is_some();
                let fresh = patch.unwrap_or_else(|| self.peer_addresses(peer));
                if self.peer_sets.get(&key) != Some(&fresh) {
                    self.peer_sets.insert(key.clone(), fresh);
                    changed_peers.insert(key);
                }
            }
        }
        let mut peers = std::mem::take(&mut self.peer_sets);
        let mut replaced: BTreeMap<usize, PreparedPolicy> = BTreeMap::new();
        for i in 0..self.policies.len() {
            let p = &self.policies[i];
            let uses_changed = !changed_peers.is_empty() && self.policy_peers[i].iter().any(|k| changed_peers.contains(k));
            // Egress named ports expand over destination endpoints: only an endpoint that has
            // (or had) such a port name can change the expansion.
            let named_egress = p.egress.iter().flatten().any(|r| {
                let carries = r.ports.iter().flatten().any(|pr| match &pr.port {
                    PortMatch::Named(name) => [old, new].into_iter().flatten().any(|e| e.named_ports.iter().any(|np| np.name == *name)),
                    _ => false,
                });
                // In place with the same ports, the expansion changes only if the rule's peers
                // take the endpoint before and not after, or the reverse.
                carries
                    && match (old, new) {
                        (Some(o), Some(n)) if same_place && o.named_ports == n.named_ports => {
                            let takes = |e: &Endpoint| {
                                e.ips.iter().any(|ip| r.peers.iter().any(|p| peer_matches(&self.cluster, p, Party::Endpoint(e, *ip))))
                            };
                            takes(o) != takes(n)
                        }
                        _ => true,
                    }
            });
            // In place, an egress named-port expansion changes only at this endpoint's addresses
            // too (it gains or loses them as a destination); elsewhere it may change anything.
            points_only &= same_place || !named_egress;
            if uses_changed || named_egress {
                let prepared = self.prepare_cached(&self.policies[i], &mut peers);
                if prepared != self.prepared[i] {
                    let mut prepared = prepared;
                    self.intern(&mut prepared);
                    replaced.insert(i, std::mem::replace(&mut self.prepared[i], prepared));
                    subjects.extend(self.subjects(&self.policies[i]));
                }
            }
        }
        self.peer_sets = peers;
        let point = match (points_only, new) {
            (true, Some(n)) => Some(PointChange { points: n.ips.clone(), old: replaced, endpoint: n.id.clone() }),
            _ => None,
        };
        self.recompile(subjects, hosts, point)
    }

    /// A peer's addresses after only `e`'s selection flipped (to `now`), in place: its old set
    /// with `e`'s addresses added or taken out. `None` when that shortcut could be wrong: when
    /// `e`'s segment is taken whole before or after (its blocks stand in for its members), or
    /// when another segment's blocks hold one of `e`'s addresses.
    fn patched_peer_set(&self, key: &str, peer: &Peer, e: &Endpoint, now: bool) -> Option<AddressSet> {
        let mut set = self.peer_sets.get(key)?.clone();
        if self.options.compress {
            if let Some(blocks) = self.blocks.get(&format!("{}/{}", e.namespace, e.segment)) {
                let inside = |m: &Endpoint| m.ips.iter().all(|ip| blocks.iter().any(|b| b.contains(ip)));
                let members = self.by_segment.get(&(e.namespace.clone(), e.segment.clone()))?;
                let (mut others_selected, mut others_inside) = (0usize, true);
                for id in members.iter().filter(|id| **id != e.id) {
                    let m = self.cluster.endpoints.get(id)?;
                    if endpoint_selected(&self.cluster, peer, m) {
                        others_selected += 1;
                        others_inside &= inside(m);
                    }
                }
                let whole =
                    |with_e: bool| others_selected + usize::from(with_e) == members.len() && others_inside && (!with_e || inside(e));
                if whole(now) || whole(!now) {
                    return None;
                }
            }
            let elsewhere = self.blocks.iter().filter(|(k, _)| **k != format!("{}/{}", e.namespace, e.segment));
            if elsewhere.flat_map(|(_, b)| b).any(|b| e.ips.iter().any(|ip| b.contains(ip))) {
                return None;
            }
        }
        for ip in &e.ips {
            let point = (to_u128(ip), to_u128(ip));
            let ranges = set.entry(Family::of(ip)).or_default();
            if now {
                ranges.push(point);
            } else {
                *ranges = subtract_ranges(ranges, &[point]);
            }
        }
        normalize(&mut set);
        Some(set)
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
        let mut cache = SideCache::new();
        let mut unions = UnionMemo::new();
        let mut seen = BTreeMap::new();
        for id in subjects {
            let Some(e) = self.cluster.endpoints.get(&id) else { continue };
            if let Some(change) = &point
                && id != change.endpoint
                && self.unchanged_at_points(e, change, &mut seen)
            {
                continue;
            }
            let fresh = self.compile_one(&id, &mut cache, &mut unions);
            if self.rules.get(&id) != Some(&fresh) {
                hosts.extend(fresh.host.clone());
                self.rules.insert(id, fresh);
            }
        }
        hosts
    }

    /// Endpoints a policy selects.
    fn subjects(&self, p: &Policy) -> BTreeSet<String> {
        let namespaces: Vec<&String> = match &p.subject.namespaces {
            NamespaceMatch::Exactly(ns) => vec![ns],
            NamespaceMatch::Selector(_) => self.by_namespace.keys().collect(),
        };
        namespaces
            .into_iter()
            .flat_map(|ns| self.by_namespace.get(ns).into_iter().flatten())
            .filter(|id| self.cluster.endpoints.get(*id).is_some_and(|e| p.selects(&self.cluster, e)))
            .cloned()
            .collect()
    }

    /// The policies with rules of `dir` that select `e`, in evaluation order (tier, then id).
    fn selecting(&self, e: &Endpoint, dir: Direction) -> Vec<usize> {
        let candidates = self.policies_by_namespace.get(&e.namespace).into_iter().flatten().chain(&self.cluster_wide).copied();
        let mut order: Vec<usize> =
            candidates.filter(|&i| self.policies[i].rules(dir).is_some() && self.policies[i].selects(&self.cluster, e)).collect();
        order.sort_by(|a, b| {
            self.policies[*a].tier.cmp(&self.policies[*b].tier).then_with(|| self.policies[*a].id.cmp(&self.policies[*b].id))
        });
        order
    }

    /// After a point change, whether `e`'s decisions at the moved addresses are the same under
    /// the old and the new clauses; everywhere else nothing moved, so then its rules stand.
    /// Only the clauses holding those addresses can decide there: decide on them alone.
    /// `seen` shares the answer between endpoints with the same policies, named ports and
    /// families, as `compile_one`'s cache does.
    fn unchanged_at_points(&self, e: &Endpoint, change: &PointChange, seen: &mut BTreeMap<SideKey, bool>) -> bool {
        let families: Vec<Family> = [Family::V4, Family::V6].into_iter().filter(|f| e.ips.iter().any(|ip| Family::of(ip) == *f)).collect();
        for dir in [Direction::Ingress, Direction::Egress] {
            let order = self.selecting(e, dir);
            let key = (dir, order, e.named_ports.clone(), families.clone());
            match seen.get(&key) {
                Some(true) => continue,
                Some(false) => return false,
                None => {}
            }
            let same = self.same_decision_at_points(e, change, &key);
            seen.insert(key, same);
            if !same {
                return false;
            }
        }
        true
    }

    /// Decide at the moved addresses alone, with the old and with the new clauses.
    fn same_decision_at_points(&self, e: &Endpoint, change: &PointChange, key: &SideKey) -> bool {
        let (dir, order, _, families) = key;
        let dir = *dir;
        let isolated = order.iter().any(|&i| self.policies[i].tier == Tier::Namespace);
        let restricted = |old: bool| -> [Vec<Clause>; 3] {
            let mut tiers: [Vec<Clause>; 3] = Default::default();
            for &i in order {
                let prepared = if old { change.old.get(&i).unwrap_or(&self.prepared[i]) } else { &self.prepared[i] };
                let rules = match dir {
                    Direction::Ingress => &prepared.ingress,
                    Direction::Egress => &prepared.egress,
                };
                let tier = match self.policies[i].tier {
                    Tier::Admin { .. } => 0,
                    Tier::Namespace => 1,
                    Tier::Baseline { .. } => 2,
                };
                for (rule, source) in rules.iter().zip(self.policies[i].rules(dir).into_iter().flatten()) {
                    for c in &rule.clauses {
                        let addrs = points_within(&c.addrs, &change.points);
                        if !addrs.is_empty() {
                            tiers[tier].push(Clause { action: c.action, addrs, services: c.services.clone(), id: 0 });
                        }
                    }
                    // Named ingress ports resolve on this endpoint, after the rule's own
                    // clauses: the order `compile_one` splices them in.
                    for (pr, named) in &rule.ingress_named {
                        let PortMatch::Named(name) = &pr.port else { continue };
                        let services = service_sel(pr, e.resolve_port(name, pr.protocol));
                        let addrs = points_within(named, &change.points);
                        if !services.is_empty() && !addrs.is_empty() {
                            tiers[tier].push(Clause { action: source.action, addrs, services, id: 0 });
                        }
                    }
                }
            }
            tiers
        };
        let (before, after) = (restricted(true), restricted(false));
        if before == after {
            return true;
        }
        let decide_on = |t: &[Vec<Clause>; 3]| {
            let [a, n, b] = t.each_ref().map(|list| list.iter().collect::<Vec<&Clause>>());
            decide(&a, &n, &b, isolated, families, &mut UnionMemo::new())
        };
        decide_on(&before) == decide_on(&after)
    }

    /// Compile one endpoint. Endpoints selected by the same policies, with the same named
    /// ports, get the same decision tables: `cache` shares them within one batch.
    fn compile_one(&self, id: &str, cache: &mut SideCache, unions: &mut UnionMemo) -> EndpointRules {
        let e = &self.cluster.endpoints[id];
        let families: Vec<Family> = [Family::V4, Family::V6].into_iter().filter(|f| e.ips.iter().any(|ip| Family::of(ip) == *f)).collect();
        let mut side = |dir: Direction| {
            let order = self.selecting(e, dir);
            let key = (dir, order.clone(), e.named_ports.clone(), families.clone());
            if let Some(hit) = cache.get(&key) {
                return hit.clone();
            }
            let (mut admin, mut namespace, mut baseline): (Vec<&Clause>, Vec<&Clause>, Vec<&Clause>) = (Vec::new(), Vec::new(), Vec::new());
            // Clauses of named ingress ports are resolved on this endpoint, so they are built here.
            let mut named: Vec<(usize, Clause)> = Vec::new();
            let mut isolated = false;
            for i in order {
                let list = match self.policies[i].tier {
                    Tier::Admin { .. } => &mut admin,
                    Tier::Namespace => {
                        isolated = true;
                        &mut namespace
                    }
                    Tier::Baseline { .. } => &mut baseline,
                };
                let prepared = match dir {
                    Direction::Ingress => &self.prepared[i].ingress,
                    Direction::Egress => &self.prepared[i].egress,
                };
                for (r, rule) in prepared.iter().zip(self.policies[i].rules(dir).into_iter().flatten()) {
                    list.extend(r.clauses.iter());
                    for (pr, addrs) in &r.ingress_named {
                        let PortMatch::Named(name) = &pr.port else { continue };
                        let services = service_sel(pr, e.resolve_port(name, pr.protocol));
                        if !services.is_empty() {
                            let tier = match self.policies[i].tier {
                                Tier::Admin { .. } => 0,
                                Tier::Namespace => 1,
                                Tier::Baseline { .. } => 2,
                            };
                            // Position keeps first-match order within the tier.
                            named.push((
                                tier * 1_000_000 + list.len(),
                                Clause { action: rule.action, addrs: addrs.clone(), services, id: 0 },
                            ));
                        }
                    }
                }
            }
            if named.is_empty() {
                let r = decide(&admin, &namespace, &baseline, isolated, &families, unions);
                cache.insert(key, r.clone());
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
            let r = decide(&a, &n, &b, isolated, &families, unions);
            cache.insert(key, r.clone());
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

    /// Prepare a policy; `peers` caches the addresses of peers already seen (many policies
    /// share peers such as "every namespace").
    fn prepare_cached(&self, p: &Policy, peers: &mut BTreeMap<String, AddressSet>) -> PreparedPolicy {
        let mut out = PreparedPolicy::default();
        for (dir, list) in [(Direction::Ingress, &mut out.ingress), (Direction::Egress, &mut out.egress)] {
            for r in p.rules(dir).into_iter().flatten() {
                list.push(self.prepare_rule(r, dir, peers));
            }
        }
        out
    }

    fn prepare_rule(&self, rule: &Rule, dir: Direction, peers: &mut BTreeMap<String, AddressSet>) -> PreparedRule {
        let mut addrs = AddressSet::new();
        for p in &rule.peers {
            let set = peers.entry(peer_key(p)).or_insert_with(|| self.peer_addresses(p));
            for (f, r) in set.iter() {
                addrs.entry(*f).or_default().extend(r.iter().copied());
            }
        }
        normalize(&mut addrs);
        let mut prepared = PreparedRule { clauses: Vec::new(), ingress_named: Vec::new() };
        let Some(ports) = &rule.ports else {
            prepared.clauses.push(Clause { action: rule.action, addrs, services: vec![ServiceSel::All], id: 0 });
            return prepared;
        };
        let mut plain = Vec::new();
        for pr in ports {
            let mut fam_addrs = addrs.clone();
            if let Some(f) = icmp_family(pr) {
                fam_addrs.retain(|k, _| *k == f);
            }
            match (&pr.port, dir) {
                (PortMatch::Named(_), Direction::Ingress) => prepared.ingress_named.push((pr.clone(), fam_addrs)),
                (PortMatch::Named(name), Direction::Egress) => {
                    // The destination is the peer: resolve on each peer endpoint, address by address.
                    let mut by_port: BTreeMap<u16, AddressSet> = BTreeMap::new();
                    for d in self.cluster.endpoints.values() {
                        let Some(port) = d.resolve_port(name, pr.protocol) else { continue };
                        for ip in &d.ips {
                            if rule.peers.iter().any(|p| peer_matches(&self.cluster, p, Party::Endpoint(d, *ip))) {
                                by_port.entry(port).or_default().entry(Family::of(ip)).or_default().push((to_u128(ip), to_u128(ip)));
                            }
                        }
                    }
                    for (port, mut set) in by_port {
                        normalize(&mut set);
                        prepared.clauses.push(Clause { action: rule.action, addrs: set, services: service_sel(pr, Some(port)), id: 0 });
                    }
                }
                _ if icmp_family(pr).is_some() => {
                    prepared.clauses.push(Clause { action: rule.action, addrs: fam_addrs, services: service_sel(pr, None), id: 0 })
                }
                _ => plain.extend(service_sel(pr, None)),
            }
        }
        if !plain.is_empty() {
            prepared.clauses.push(Clause { action: rule.action, addrs, services: plain, id: 0 });
        }
        prepared
    }

    /// The addresses a peer stands for. Peers that take whole segments become the segments'
    /// blocks (with compression on); others, the addresses of what they select.
    fn peer_addresses(&self, peer: &Peer) -> AddressSet {
        let mut set = AddressSet::new();
        let add_net = |set: &mut AddressSet, net: &IpNet| {
            let (f, a, b) = net_range(net);
            set.entry(f).or_default().push((a, b));
        };
        match peer {
            Peer::Any => {
                set.insert(Family::V4, vec![(0, Family::V4.max())]);
                set.insert(Family::V6, vec![(0, Family::V6.max())]);
            }
            Peer::Cidr { cidr, except } => {
                add_net(&mut set, cidr);
                let mut holes = AddressSet::new();
                for e in except {
                    add_net(&mut holes, e);
                }
                normalize(&mut holes);
                for (f, ranges) in set.iter_mut() {
                    if let Some(h) = holes.get(f) {
                        *ranges = subtract_ranges(ranges, h);
                    }
                }
            }
            Peer::Host(name) => {
                for ip in self.cluster.hosts.get(name).into_iter().flatten() {
                    set.entry(Family::of(ip)).or_default().push((to_u128(ip), to_u128(ip)));
                }
            }
            Peer::Segment { .. } | Peer::Endpoints { .. } => {
                let namespaces: Vec<&String> = match peer {
                    Peer::Segment { tenant, .. } => vec![tenant],
                    Peer::Endpoints { namespaces: NamespaceMatch::Exactly(ns), .. } => vec![ns],
                    _ => self
                        .by_namespace
                        .keys()
                        .filter(|ns| matches!(peer, Peer::Endpoints { namespaces, .. } if namespace_matches(&self.cluster, namespaces, ns)))
                        .collect(),
                };
                let mut segments: BTreeMap<(&str, &str), Vec<&Endpoint>> = BTreeMap::new();
                let mut members: BTreeMap<(&str, &str), usize> = BTreeMap::new();
                for ns in namespaces {
                    for id in self.by_namespace.get(ns).into_iter().flatten() {
                        let e = &self.cluster.endpoints[id];
                        let key = (e.namespace.as_str(), e.segment.as_str());
                        *members.entry(key).or_default() += 1;
                        // The namespace already matched: only the pod part is left to check.
                        let taken = match peer {
                            Peer::Segment { segment, .. } => e.segment == *segment,
                            Peer::Endpoints { pods, .. } => pods.matches(&e.labels),
                            _ => false,
                        };
                        if taken {
                            segments.entry(key).or_default().push(e);
                        }
                    }
                }
                for ((ns, seg), selected) in segments {
                    let seg_blocks = self.blocks.get(&format!("{ns}/{seg}")).filter(|_| self.options.compress);
                    // A segment is its blocks only when the peer takes all of it and every
                    // member lives inside those blocks; otherwise address by address.
                    let whole = seg_blocks.is_some_and(|b| {
                        members.get(&(ns, seg)) == Some(&selected.len())
                            && selected.iter().all(|e| e.ips.iter().all(|ip| b.iter().any(|n| n.contains(ip))))
                    });
                    match (whole, seg_blocks) {
                        (true, Some(b)) => b.iter().for_each(|n| add_net(&mut set, n)),
                        _ => {
                            for e in selected {
                                for ip in &e.ips {
                                    set.entry(Family::of(ip)).or_default().push((to_u128(ip), to_u128(ip)));
                                }
                            }
                        }
                    }
                }
            }
        }
        normalize(&mut set);
        set
    }
}

/// The `points` that lie in `addrs`, as single-address ranges.
fn points_within(addrs: &AddressSet, points: &[IpAddr]) -> AddressSet {
    let mut out = AddressSet::new();
    for ip in points {
        let v = to_u128(ip);
        let ranges = addrs.get(&Family::of(ip)).map(Vec::as_slice).unwrap_or_default();
        let at = ranges.partition_point(|r| r.1 < v);
        if ranges.get(at).is_some_and(|r| r.0 <= v) {
            out.entry(Family::of(ip)).or_default().push((v, v));
        }
    }
    normalize(&mut out);
    out
}

/// A peer's identity for caching: its serialized form.
fn peer_key(peer: &Peer) -> String {
    serde_json::to_string(peer).unwrap_or_default()
}

fn endpoint_selected(cluster: &Cluster, peer: &Peer, e: &Endpoint) -> bool {
    match peer {
        Peer::Segment { tenant, segment } => e.namespace == *tenant && e.segment == *segment,
        Peer::Endpoints { namespaces, pods } => namespace_matches(cluster, namespaces, &e.namespace) && pods.matches(&e.labels),
        _ => false,
    }
}

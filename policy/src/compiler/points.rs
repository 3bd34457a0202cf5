//! Point changes: a pod relabelled in place, arriving or leaving moves only its own addresses
//! in or out of peer sets. Those sets and the prepared clauses holding them are patched, not
//! rebuilt; each side group under a changed policy is decided again at those addresses alone,
//! once, and the answer spliced into the rules its members share.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use rustc_hash::FxHashSet as HashSet;

use crate::compile::{
    ALL_CLASSES, AddressSet, Class, Clause, Family, ServiceSel, SideRules, UnionMemo, Verdict, decide, service_sel, splice_points,
    subtract_ranges, to_u128,
};
use crate::eval::{Party, peer_matches};
use crate::model::{Direction, Endpoint, Peer, PortMatch, Rule, Tier};

use super::groups::{GroupId, SideKey};
use super::prepare::{ClauseKind, PreparedPolicy, PreparedRule, holds};
use super::{Compiler, endpoint_selected};

/// A change that moved only `points` (one endpoint's addresses) in or out of peer sets: every
/// changed clause differs from its old self at those addresses alone.
pub(super) struct PointChange {
    pub points: Vec<IpAddr>,
    /// Prepared rules from before the change, of the policies whose prepared rules changed.
    pub old: BTreeMap<usize, PreparedPolicy>,
    /// The (policy, direction) pairs whose prepared rules changed.
    pub sides: BTreeSet<(usize, Direction)>,
    /// The endpoint that changed: its own selection may have changed, so it is compiled in full.
    pub endpoint: String,
}

impl Compiler {
    /// How `peer`'s addresses change when only `e` changed, arrived or left, and the peer
    /// selected it `before` and selects it `after` (`None`: absent then). Patched at `e`'s
    /// addresses, unless `e`'s segment is taken whole before or after but not both (its blocks
    /// stand in for its members), or another segment's blocks hold one of `e`'s addresses.
    pub(super) fn peer_change(&self, peer: &Peer, e: &Endpoint, before: Option<bool>, after: Option<bool>) -> PeerChange {
        let (was, is) = (before == Some(true), after == Some(true));
        if self.options.compress {
            let segment = format!("{}/{}", e.namespace, e.segment);
            if let Some(blocks) = self.blocks.get(&segment) {
                let inside = |m: &Endpoint| m.ips.iter().all(|ip| blocks.iter().any(|b| b.contains(ip)));
                let members = self.by_segment.get(&(e.namespace.clone(), e.segment.clone()));
                let mut others = members.into_iter().flatten().filter(|id| **id != e.id).peekable();
                let has_others = others.peek().is_some();
                // Whole with `e` absent (`None`), or selected or not: every member selected and
                // inside the blocks (a segment without members is not taken).
                let could_be_whole = |state: Option<bool>| match state {
                    None => has_others,
                    Some(selected) => selected && inside(e),
                };
                let (b, a) = (could_be_whole(before), could_be_whole(after));
                if b || a {
                    let others_whole = others
                        .all(|id| self.cluster.endpoints.get(id).is_some_and(|m| endpoint_selected(&self.cluster, peer, m) && inside(m)));
                    match (b && others_whole, a && others_whole) {
                        (true, true) => return PeerChange::Unchanged,
                        (true, false) | (false, true) => return PeerChange::Rebuild,
                        (false, false) => {}
                    }
                }
            }
            let elsewhere = self.blocks.iter().filter(|(k, _)| **k != segment);
            if was != is && elsewhere.flat_map(|(_, b)| b).any(|b| e.ips.iter().any(|ip| b.contains(ip))) {
                return PeerChange::Rebuild;
            }
        }
        if was == is { PeerChange::Unchanged } else { PeerChange::Patch(is) }
    }

    /// Policy `i`'s prepared rules after only `e`'s addresses moved in or out of its peers'
    /// sets (patched already) or of its egress named-port destinations; `None` if no clause
    /// changed. Changed and new clauses get fresh ids.
    /// `present`: whether `e` is still there (else it left, and takes no named port).
    pub(super) fn patch_prepared(&mut self, i: usize, e: &Endpoint, present: bool) -> Option<(PreparedPolicy, Vec<Direction>)> {
        let mut patched: Vec<(Direction, usize, PreparedRule)> = Vec::new();
        for dir in [Direction::Ingress, Direction::Egress] {
            let rules = self.policies[i].rules(dir).into_iter().flatten().zip(self.rule_peers[i].rules(dir));
            for (r, (rule, peer_ids)) in rules.enumerate() {
                if let Some(p) = self.patch_rule(rule, dir, peer_ids, &self.prepared[i].rules(dir)[r], e, present) {
                    patched.push((dir, r, p));
                }
            }
        }
        if patched.is_empty() {
            return None;
        }
        let mut dirs: Vec<Direction> = patched.iter().map(|(d, _, _)| *d).collect();
        dirs.dedup();
        let mut out = PreparedPolicy::by_direction(|dir| {
            (0..self.prepared[i].rules(dir).len())
                .map(|r| match patched.iter().position(|(d, k, _)| *d == dir && *k == r) {
                    Some(at) => patched.swap_remove(at).2,
                    None => self.prepared[i].rules(dir)[r].clone(),
                })
                .collect()
        });
        for c in out.clauses_mut().filter(|c| c.id == 0) {
            c.id = self.clause_ids.fresh();
        }
        Some((out, dirs))
    }

    /// One rule patched at `e`'s addresses, or `None` if nothing there changed. Patched clauses
    /// get id 0 (the caller gives them fresh ids).
    fn patch_rule(
        &self,
        rule: &Rule,
        dir: Direction,
        peer_ids: &[usize],
        prepared: &PreparedRule,
        e: &Endpoint,
        present: bool,
    ) -> Option<PreparedRule> {
        let member = |ip: &IpAddr| peer_ids.iter().any(|&k| holds(&self.peers[k].addrs, ip));
        let in_family = |family: Option<Family>, ip: &IpAddr| family.is_none_or(|f| f == Family::of(ip));
        // The port an egress named-port entry takes `e`'s address at, if it takes it.
        let named_port = |entry: usize, ip: &IpAddr| -> Option<u16> {
            let pr = rule.ports.as_ref()?.get(entry).filter(|_| present)?;
            let PortMatch::Named(name) = &pr.port else { return None };
            let port = e.resolve_port(name, pr.protocol)?;
            rule.peers.iter().any(|p| peer_matches(&self.cluster, p, Party::Endpoint(e, *ip))).then_some(port)
        };
        let wanted = |kind: ClauseKind, ip: &IpAddr| match kind {
            ClauseKind::Peers { family, .. } => member(ip) && in_family(family, ip),
            ClauseKind::EgressNamed { entry, port } => named_port(entry, ip) == Some(port),
        };
        let mut out: Option<PreparedRule> = None;
        for (k, (clause, kind)) in prepared.clauses.iter().zip(&prepared.kinds).enumerate() {
            for ip in &e.ips {
                let want = wanted(*kind, ip);
                if holds(&clause.addrs, ip) != want {
                    let c = &mut out.get_or_insert_with(|| prepared.clone()).clauses[k];
                    set_point(&mut c.addrs, ip, want);
                    c.id = 0;
                }
            }
        }
        for (k, (pr, addrs)) in prepared.ingress_named.iter().enumerate() {
            for ip in &e.ips {
                let want = member(ip) && in_family(crate::compile::icmp_family(pr), ip);
                if holds(addrs, ip) != want {
                    set_point(&mut out.get_or_insert_with(|| prepared.clone()).ingress_named[k].1, ip, want);
                }
            }
        }
        // An egress named port that now takes `e` at a port no destination had before: a new
        // clause, in port order within its entry.
        let egress_named =
            rule.ports.iter().flatten().enumerate().filter(|(_, pr)| dir == Direction::Egress && matches!(pr.port, PortMatch::Named(_)));
        for (entry, pr) in egress_named {
            for ip in &e.ips {
                let Some(port) = named_port(entry, ip) else { continue };
                let kind = ClauseKind::EgressNamed { entry, port };
                let current = out.as_ref().unwrap_or(prepared);
                if current.kinds.contains(&kind) {
                    continue;
                }
                let p = out.get_or_insert_with(|| prepared.clone());
                let at = p.kinds.iter().position(|k| k.position() > kind.position()).unwrap_or(p.kinds.len());
                let mut addrs = AddressSet::new();
                set_point(&mut addrs, ip, true);
                p.clauses.insert(at, Clause { action: rule.action, addrs, services: service_sel(pr, Some(port)), id: 0 });
                p.kinds.insert(at, kind);
            }
        }
        // A named-port clause left without destinations goes, as a fresh preparation has none.
        if let Some(p) = out.as_mut() {
            let keep: Vec<bool> =
                p.clauses.iter().zip(&p.kinds).map(|(c, k)| !(matches!(k, ClauseKind::EgressNamed { .. }) && c.addrs.is_empty())).collect();
            let mut flags = keep.iter();
            p.clauses.retain(|_| *flags.next().unwrap_or(&true));
            let mut flags = keep.iter();
            p.kinds.retain(|_| *flags.next().unwrap_or(&true));
        }
        out
    }

    /// After a point change, decide each side group under a changed policy again at the moved
    /// addresses, once; where that changed, splice it into the group's rules and give them to
    /// every member but the changed endpoint (compiled in full), recording their nodes.
    pub(super) fn splice_at_points(&mut self, change: &PointChange, hosts: &mut BTreeSet<String>) {
        // Each policy's side at the points, by `2 * policy + direction`.
        let mut memo: Vec<Option<AtPoints>> = (0..2 * self.policies.len()).map(|_| None).collect();
        let mut seen: HashSet<GroupId> = HashSet::default();
        let mut decided: Vec<(GroupId, SideRules)> = Vec::new();
        for &(i, dir) in &change.sides {
            for g in self.groups.under(i, dir) {
                if !seen.insert(g) {
                    continue;
                }
                let group = self.groups.get(g);
                // Any other member stands for the group: their rules are equal.
                let Some(member) = group.members.iter().find(|m| **m != change.endpoint) else { continue };
                if let Some(now) = self.decision_at_points(member, change, &group.key, &mut memo) {
                    decided.push((g, now));
                }
            }
        }
        // The members give their shared rules up first, so that the splice has them to itself
        // (no copy of a large list); then they all take the spliced rules.
        let blank = Arc::new(SideRules { default: Verdict::Allow, exceptions: Vec::new() });
        for (g, now) in decided {
            let group = self.groups.get(g);
            let members = || group.members.iter().filter(|m| **m != change.endpoint);
            let mut shared: Option<Arc<SideRules>> = None;
            for m in members() {
                if let Some(rules) = self.rules.get_mut(m) {
                    let given = std::mem::replace(rules.side_mut(group.key.dir), blank.clone());
                    shared.get_or_insert(given);
                }
            }
            let Some(mut side) = shared else { continue };
            splice_points(Arc::make_mut(&mut side), &change.points, &now);
            for m in members() {
                if let Some(rules) = self.rules.get_mut(m) {
                    *rules.side_mut(group.key.dir) = side.clone();
                    hosts.extend(rules.host.clone());
                }
            }
        }
    }

    /// After a point change, the decision of a side (as `key` describes it; `member` is one of
    /// its endpoints) at the moved addresses, if it differs from the one before; everywhere
    /// else nothing moved. Only the clauses holding those addresses can decide there: it is
    /// decided on them alone.
    fn decision_at_points(&self, member: &str, change: &PointChange, key: &SideKey, memo: &mut [Option<AtPoints>]) -> Option<SideRules> {
        let (dir, order, families) = (key.dir, key.policies.as_slice(), key.families.as_slice());
        let slot = |i: usize| 2 * i + usize::from(dir == Direction::Egress);
        for &i in order {
            if memo[slot(i)].is_none() {
                memo[slot(i)] = Some(self.at_points(i, dir, change));
            }
        }
        let at = |i: usize| memo[slot(i)].as_ref().expect("memoised above");
        // Named ingress ports resolve on the endpoint: (policy, rule, before/after, clause).
        let mut named: Vec<(usize, usize, usize, Clause)> = Vec::new();
        if !key.named.is_empty() {
            let e = &self.cluster.endpoints[member];
            for &i in order {
                let sources = self.policies[i].rules(dir).into_iter().flatten();
                for (r, (rule, source)) in self.prepared[i].rules(dir).iter().zip(sources).enumerate() {
                    let old_rule = change.old.get(&i).map_or(rule, |p| &p.rules(dir)[r]);
                    for (when, prepared) in [old_rule, rule].into_iter().enumerate() {
                        for (pr, addrs) in &prepared.ingress_named {
                            let PortMatch::Named(name) = &pr.port else { continue };
                            let services = service_sel(pr, e.resolve_port(name, pr.protocol));
                            let addrs = points_within(addrs, &change.points);
                            if !services.is_empty() && !addrs.is_empty() {
                                named.push((i, r, when, Clause { action: source.action, addrs, services, id: 0 }));
                            }
                        }
                    }
                }
            }
        }
        // Under namespace policies alone, a point's decision is the union of the services
        // allowed from it.
        if order.iter().all(|&i| self.policies[i].tier == Tier::Namespace) {
            let allowed = |when: usize, k: usize| {
                let ip = &change.points[k];
                let of_named = named.iter().filter(|n| n.2 == when && holds(&n.3.addrs, ip)).flat_map(|n| &n.3.services);
                let of_policies = order.iter().flat_map(|&i| at(i).services[when][k].iter().copied());
                merged(of_policies.chain(of_named.flat_map(service_ranges)))
            };
            if (0..change.points.len()).all(|k| allowed(0, k) == allowed(1, k)) {
                return None;
            }
        }
        let mut tiers: [[Vec<&Clause>; 3]; 2] = Default::default();
        for &i in order {
            let tier = super::tier_index(self.policies[i].tier);
            for (r, restricted) in at(i).rules.iter().enumerate() {
                for (when, lists) in tiers.iter_mut().enumerate() {
                    lists[tier].extend(&restricted[when]);
                    // After the rule's own clauses: the order `compile_one` splices them in.
                    lists[tier].extend(named.iter().filter(|n| (n.0, n.1, n.2) == (i, r, when)).map(|n| &n.3));
                }
            }
        }
        let [before, after] = tiers;
        if before == after {
            return None;
        }
        let isolated = order.iter().any(|&i| self.policies[i].tier == Tier::Namespace);
        let decide_on = |[a, n, b]: &[Vec<&Clause>; 3]| decide(a, n, b, isolated, families, &mut UnionMemo::new());
        let now = decide_on(&after);
        (decide_on(&before) != now).then_some(now)
    }

    /// Policy `i`'s side `dir` at the moved addresses, before the change and after it.
    fn at_points(&self, i: usize, dir: Direction, change: &PointChange) -> AtPoints {
        let now = self.prepared[i].rules(dir);
        let then = change.old.get(&i).map_or(now, |p| p.rules(dir));
        let restrict = |rule: &PreparedRule| -> Vec<Clause> {
            let within = rule.clauses.iter().map(|c| (c, points_within(&c.addrs, &change.points)));
            within
                .filter(|(_, a)| !a.is_empty())
                .map(|(c, addrs)| Clause { action: c.action, addrs, services: c.services.clone(), id: 0 })
                .collect()
        };
        let rules: Vec<[Vec<Clause>; 2]> = then.iter().zip(now).map(|(b, a)| [restrict(b), restrict(a)]).collect();
        let services = [0, 1].map(|when| {
            let clauses = || rules.iter().flat_map(|r| &r[when]);
            change
                .points
                .iter()
                .map(|ip| merged(clauses().filter(|c| holds(&c.addrs, ip)).flat_map(|c| &c.services).flat_map(service_ranges)))
                .collect()
        });
        AtPoints { rules, services }
    }
}

/// What happens to a peer's addresses when one endpoint changed.
pub(super) enum PeerChange {
    Unchanged,
    /// The endpoint's addresses are added (`true`) or taken out.
    Patch(bool),
    /// Computed again: a segment's blocks stand in for its members before or after.
    Rebuild,
}

/// One policy's side at the moved addresses.
pub(super) struct AtPoints {
    /// Its clauses restricted to the points, rule by rule: before the change and after it.
    rules: Vec<[Vec<Clause>; 2]>,
    /// The services its clauses take from each point (merged ranges per class), before and
    /// after: what it allows from there if it is an allow-list.
    services: [Vec<Vec<(Class, u16, u16)>>; 2],
}

/// A clause's services as ranges per class.
fn service_ranges(s: &ServiceSel) -> Vec<(Class, u16, u16)> {
    match *s {
        ServiceSel::All => ALL_CLASSES.map(|class| (class, 0, u16::MAX)).to_vec(),
        ServiceSel::Range(class, a, b) => vec![(class, a, b)],
    }
}

/// Service ranges sorted and merged per class.
fn merged(ranges: impl Iterator<Item = (Class, u16, u16)>) -> Vec<(Class, u16, u16)> {
    let mut out: Vec<(Class, u16, u16)> = ranges.collect();
    out.sort_unstable();
    let mut merged: Vec<(Class, u16, u16)> = Vec::with_capacity(out.len());
    for (class, a, b) in out {
        match merged.last_mut() {
            Some(last) if last.0 == class && u32::from(a) <= u32::from(last.2) + 1 => last.2 = last.2.max(b),
            _ => merged.push((class, a, b)),
        }
    }
    merged
}

/// Add `ip` to `set` or take it out, keeping the ranges sorted, disjoint and merged (and no
/// family without ranges), as `normalize` leaves them.
pub(super) fn set_point(set: &mut AddressSet, ip: &IpAddr, present: bool) {
    let v = to_u128(ip);
    let family = Family::of(ip);
    let ranges = set.entry(family).or_default();
    let at = ranges.partition_point(|r| r.1 < v);
    let held = ranges.get(at).is_some_and(|r| r.0 <= v);
    match (held, present) {
        (true, false) => {
            let (a, b) = ranges[at];
            let pieces: Vec<(u128, u128)> = subtract_ranges(&[(a, b)], &[(v, v)]);
            ranges.splice(at..=at, pieces);
        }
        (false, true) => {
            let joins_before = at > 0 && ranges[at - 1].1.checked_add(1) == Some(v);
            let joins_after = ranges.get(at).is_some_and(|r| v.checked_add(1) == Some(r.0));
            match (joins_before, joins_after) {
                (true, true) => {
                    ranges[at - 1].1 = ranges[at].1;
                    ranges.remove(at);
                }
                (true, false) => ranges[at - 1].1 = v,
                (false, true) => ranges[at].0 = v,
                (false, false) => ranges.insert(at, (v, v)),
            }
        }
        _ => {}
    }
    if ranges.is_empty() {
        set.remove(&family);
    }
}

/// The `points` that lie in `addrs`, as single-address ranges.
fn points_within(addrs: &AddressSet, points: &[IpAddr]) -> AddressSet {
    let mut out = AddressSet::new();
    for ip in points.iter().filter(|ip| holds(addrs, ip)) {
        set_point(&mut out, ip, true);
    }
    out
}

//! Side groups: the endpoints whose ingress (or egress) side is decided alike, because the
//! same policies select them in the same order, they have the same address families, and
//! their named ports are the same where they resolve on the endpoint itself. Their rules for
//! that side are equal, so a change decides each group once. The groups are kept between
//! changes: evaluating every candidate policy's selectors for thousands of endpoints would
//! otherwise dominate a small change.

use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::compile::Family;
use crate::model::{Direction, Endpoint, NamedPort, NamespaceMatch, PortMatch};

use super::Compiler;

pub(super) type GroupId = usize;

/// What decides one side of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct SideKey {
    pub dir: Direction,
    /// The policies with rules of `dir` that select the endpoint, in evaluation order (tier,
    /// then id).
    pub policies: Vec<usize>,
    /// The endpoint's named ports where they resolve on it (named ingress ports of one of
    /// `policies`); empty otherwise.
    pub named: Vec<NamedPort>,
    pub families: Vec<Family>,
}

#[derive(Debug)]
pub(super) struct Group {
    pub key: SideKey,
    pub members: BTreeSet<String>,
}

#[derive(Debug, Default)]
pub(super) struct Groups {
    slots: Vec<Option<Group>>,
    free: Vec<GroupId>,
    by_key: FxHashMap<SideKey, GroupId>,
    /// Each endpoint's ingress and egress group.
    of_endpoint: FxHashMap<String, [GroupId; 2]>,
    /// The groups whose policies include each policy, by policy index.
    of_policy: Vec<FxHashSet<GroupId>>,
}

impl Groups {
    pub fn get(&self, g: GroupId) -> &Group {
        self.slots[g].as_ref().expect("a live group")
    }

    /// An endpoint's group for one side.
    pub fn of(&self, id: &str, dir: Direction) -> Option<GroupId> {
        self.of_endpoint.get(id).map(|g| g[side(dir)])
    }

    /// The groups of `dir` under policy `i`.
    pub fn under(&self, i: usize, dir: Direction) -> impl Iterator<Item = GroupId> + '_ {
        self.of_policy.get(i).into_iter().flatten().copied().filter(move |&g| self.get(g).key.dir == dir)
    }

    fn join(&mut self, key: SideKey, id: &str) -> GroupId {
        let g = match self.by_key.get(&key) {
            Some(&g) => g,
            None => {
                let g = self.free.pop().unwrap_or_else(|| {
                    self.slots.push(None);
                    self.slots.len() - 1
                });
                self.install(g, key);
                g
            }
        };
        if let Some(group) = self.slots[g].as_mut() {
            group.members.insert(id.to_string());
        }
        g
    }

    /// A new, empty group with this key in slot `g`.
    fn install(&mut self, g: GroupId, key: SideKey) {
        for &i in &key.policies {
            if self.of_policy.len() <= i {
                self.of_policy.resize_with(i + 1, FxHashSet::default);
            }
            self.of_policy[i].insert(g);
        }
        self.by_key.insert(key.clone(), g);
        self.slots[g] = Some(Group { key, members: BTreeSet::new() });
    }

    fn leave(&mut self, g: GroupId, id: &str) {
        let Some(group) = self.slots[g].as_mut() else { return };
        group.members.remove(id);
        if group.members.is_empty() {
            let key = group.key.clone();
            for &i in &key.policies {
                self.of_policy[i].remove(&g);
            }
            self.by_key.remove(&key);
            self.slots[g] = None;
            self.free.push(g);
        }
    }
}

fn side(dir: Direction) -> usize {
    match dir {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

impl Compiler {
    /// The policies with rules of `dir` that select `e`, in evaluation order.
    pub(super) fn selecting(&self, e: &Endpoint, dir: Direction) -> &[usize] {
        self.groups.of(&e.id, dir).map_or(&[], |g| self.groups.get(g).key.policies.as_slice())
    }

    /// Place an endpoint in its groups afresh (after it arrived or changed), or take it out of
    /// them (after it left).
    pub(super) fn place(&mut self, id: &str) {
        if let Some(old) = self.groups.of_endpoint.remove(id) {
            old.into_iter().for_each(|g| self.groups.leave(g, id));
        }
        let Some(e) = self.cluster.endpoints.get(id) else { return };
        let keys = [Direction::Ingress, Direction::Egress].map(|dir| self.side_key(e, dir));
        let groups = keys.map(|key| self.groups.join(key, id));
        self.groups.of_endpoint.insert(id.to_string(), groups);
    }

    /// Every endpoint placed afresh: after a policy changed, or was added or removed.
    pub(super) fn regroup(&mut self) {
        self.groups = super::groups::Groups::default();
        let ids: Vec<String> = self.cluster.endpoints.keys().cloned().collect();
        for id in ids {
            self.place(&id);
        }
    }

    /// Place afresh the endpoints a policy looking in `namespaces` may select (it changed, or
    /// was added, in place: no other policy moved).
    pub(super) fn regroup_in(&mut self, namespaces: &[NamespaceMatch]) {
        let mut ids: BTreeSet<String> = BTreeSet::new();
        for m in namespaces {
            match m {
                NamespaceMatch::Exactly(ns) => ids.extend(self.by_namespace.get(ns).into_iter().flatten().cloned()),
                NamespaceMatch::Selector(_) => return self.regroup(),
            }
        }
        for id in ids {
            self.place(&id);
        }
    }

    /// Policy `i` was removed (the policies after it moved down by one): renumber every group's
    /// policies; groups that policy told apart become one.
    pub(super) fn ungroup_policy(&mut self, i: usize) {
        let slots = std::mem::take(&mut self.groups.slots);
        let mut groups = Groups { slots: Vec::with_capacity(slots.len()), ..Groups::default() };
        for (g, slot) in slots.into_iter().enumerate() {
            groups.slots.push(None);
            let Some(Group { mut key, members }) = slot else {
                groups.free.push(g);
                continue;
            };
            let held = key.policies.contains(&i);
            key.policies.retain(|&k| k != i);
            key.policies.iter_mut().filter(|k| **k > i).for_each(|k| *k -= 1);
            // Named ports count only while a policy of the group has named ingress ports.
            if held && !key.policies.iter().any(|&k| has_named_ingress(&self.policies[k])) {
                key.named.clear();
            }
            let into = match groups.by_key.get(&key) {
                Some(&into) => {
                    groups.free.push(g);
                    into
                }
                None => {
                    groups.install(g, key);
                    g
                }
            };
            let dir = side(groups.get(into).key.dir);
            for m in &members {
                if let Some(of) = self.groups.of_endpoint.get_mut(m) {
                    of[dir] = into;
                }
            }
            if let Some(group) = groups.slots[into].as_mut() {
                group.members.extend(members);
            }
        }
        groups.of_endpoint = std::mem::take(&mut self.groups.of_endpoint);
        self.groups = groups;
    }

    fn side_key(&self, e: &Endpoint, dir: Direction) -> SideKey {
        let candidates = self.policies_by_namespace.get(&e.namespace).into_iter().flatten().chain(&self.cluster_wide).copied();
        let mut policies: Vec<usize> =
            candidates.filter(|&i| self.policies[i].rules(dir).is_some() && self.policies[i].selects(&self.cluster, e)).collect();
        policies.sort_by(|a, b| (self.policies[*a].tier, &self.policies[*a].id).cmp(&(self.policies[*b].tier, &self.policies[*b].id)));
        // Only named ingress ports resolve on the endpoint itself.
        let resolves = dir == Direction::Ingress && policies.iter().any(|&i| has_named_ingress(&self.policies[i]));
        SideKey { dir, policies, named: if resolves { e.named_ports.clone() } else { Vec::new() }, families: super::families(e) }
    }

    /// Endpoints policy `i` selects (for either direction it has rules for).
    pub(super) fn subjects(&self, i: usize) -> BTreeSet<String> {
        let groups = self.groups.of_policy.get(i).into_iter().flatten();
        groups.flat_map(|&g| self.groups.get(g).members.iter().cloned()).collect()
    }
}

fn has_named_ingress(p: &crate::model::Policy) -> bool {
    p.ingress.iter().flatten().flat_map(|r| r.ports.iter().flatten()).any(|pr| matches!(pr.port, PortMatch::Named(_)))
}

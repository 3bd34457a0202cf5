//! Which policies select each endpoint, kept between changes: evaluating every candidate
//! policy's selectors for thousands of subjects would otherwise dominate a small change.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap as HashMap;

use crate::model::{Direction, Endpoint, NamespaceMatch, Policy};

use super::Compiler;

/// Per endpoint id, the policies with ingress and with egress rules that select it, in
/// evaluation order (tier, then id).
#[derive(Debug, Default)]
pub(super) struct Selections {
    by_endpoint: HashMap<String, [Vec<usize>; 2]>,
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
        self.selections.by_endpoint.get(&e.id).map_or(&[], |s| s[side(dir)].as_slice())
    }

    /// Compute an endpoint's selections afresh (after it arrived or changed), or forget them.
    pub(super) fn reselect_endpoint(&mut self, id: &str) {
        let Some(e) = self.cluster.endpoints.get(id) else {
            self.selections.by_endpoint.remove(id);
            return;
        };
        let candidates: Vec<usize> =
            self.policies_by_namespace.get(&e.namespace).into_iter().flatten().chain(&self.cluster_wide).copied().collect();
        let lists = [Direction::Ingress, Direction::Egress].map(|dir| {
            let mut order: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&i| self.policies[i].rules(dir).is_some() && self.policies[i].selects(&self.cluster, e))
                .collect();
            order.sort_by(|a, b| self.evaluation_order(*a).cmp(&self.evaluation_order(*b)));
            order
        });
        self.selections.by_endpoint.insert(id.to_string(), lists);
    }

    /// Every endpoint's selections afresh.
    pub(super) fn reselect_all(&mut self) {
        let ids: Vec<String> = self.cluster.endpoints.keys().cloned().collect();
        for id in ids {
            self.reselect_endpoint(&id);
        }
    }

    /// Policy `i` was added or replaced (its earlier version looked in `before`): update its
    /// place in the selections of the endpoints it may select now or did before.
    pub(super) fn reselect_policy(&mut self, i: usize, before: Option<&NamespaceMatch>) {
        let mut ids: BTreeSet<String> = self.candidates(&self.policies[i].subject.namespaces);
        if let Some(b) = before {
            ids.extend(self.candidates(b));
        }
        for id in ids {
            let Some(e) = self.cluster.endpoints.get(&id) else { continue };
            let p = &self.policies[i];
            let wanted = [Direction::Ingress, Direction::Egress].map(|dir| p.rules(dir).is_some() && p.selects(&self.cluster, e));
            let Some(lists) = self.selections.by_endpoint.get_mut(&id) else { continue };
            for (list, want) in lists.iter_mut().zip(wanted) {
                list.retain(|&k| k != i);
                if want {
                    let key = (self.policies[i].tier, &self.policies[i].id);
                    let at = list.partition_point(|&k| (self.policies[k].tier, &self.policies[k].id) < key);
                    list.insert(at, i);
                }
            }
        }
    }

    /// Policy `i` was removed: the policies after it moved down by one.
    pub(super) fn unselect_policy(&mut self, i: usize) {
        for lists in self.selections.by_endpoint.values_mut() {
            for list in lists.iter_mut() {
                list.retain(|&k| k != i);
                list.iter_mut().filter(|k| **k > i).for_each(|k| *k -= 1);
            }
        }
    }

    /// Endpoints policy `i` selects (for either direction it has rules for).
    pub(super) fn subjects(&self, i: usize) -> BTreeSet<String> {
        self.subjects_iter(i).cloned().collect()
    }

    pub(super) fn subjects_iter(&self, i: usize) -> impl Iterator<Item = &String> {
        let ids: Box<dyn Iterator<Item = &String>> = match &self.policies[i].subject.namespaces {
            NamespaceMatch::Exactly(ns) => Box::new(self.by_namespace.get(ns).into_iter().flatten()),
            NamespaceMatch::Selector(_) => Box::new(self.cluster.endpoints.keys()),
        };
        ids.filter(move |id| self.selections.by_endpoint.get(*id).is_some_and(|s| s.iter().any(|l| l.contains(&i))))
    }

    /// The endpoints a subject looking in `namespaces` may select.
    fn candidates(&self, namespaces: &NamespaceMatch) -> BTreeSet<String> {
        match namespaces {
            NamespaceMatch::Exactly(ns) => self.by_namespace.get(ns).cloned().unwrap_or_default(),
            NamespaceMatch::Selector(_) => self.cluster.endpoints.keys().cloned().collect(),
        }
    }

    fn evaluation_order(&self, i: usize) -> (crate::model::Tier, &str) {
        let p: &Policy = &self.policies[i];
        (p.tier, &p.id)
    }
}

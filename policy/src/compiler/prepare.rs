//! Preparing a policy's rules: everything that does not depend on the endpoint a rule applies
//! to (its peers' addresses, its egress named ports expanded over destinations).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::compile::{AddressSet, Clause, Family, ServiceSel, icmp_family, net_range, normalize, service_sel, subtract_ranges, to_u128};
use crate::eval::{Party, namespace_matches, peer_matches};
use crate::model::{Direction, Endpoint, NamespaceMatch, Peer, PortMatch, Rule};

use super::Compiler;

/// What a prepared clause stands for, so that it can be patched when one endpoint's addresses
/// move: the rule's peers (restricted to one family for an ICMP entry), or the destinations
/// whose named port (the rule's ports entry `entry`) resolves to `port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ClauseKind {
    /// `entry`: the ports entry of an ICMP clause; `None` for the clause of all plain entries
    /// (or of a rule without ports), which comes last.
    Peers {
        entry: Option<usize>,
        family: Option<Family>,
    },
    EgressNamed {
        entry: usize,
        port: u16,
    },
}

impl ClauseKind {
    /// Where the clause sits in its rule: clauses are ordered by this.
    pub(super) fn position(self) -> (usize, u16) {
        match self {
            ClauseKind::Peers { entry, .. } => (entry.unwrap_or(usize::MAX), 0),
            ClauseKind::EgressNamed { entry, port } => (entry, port),
        }
    }
}

/// A rule with everything that does not depend on its subject computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PreparedRule {
    /// Clauses valid for any subject, in first-match order.
    pub clauses: Vec<Clause>,
    /// What each clause stands for.
    pub kinds: Vec<ClauseKind>,
    /// Ingress named ports: resolved on the subject, with these addresses.
    pub ingress_named: Vec<(crate::model::PortRule, AddressSet)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct PreparedPolicy {
    pub ingress: Vec<PreparedRule>,
    pub egress: Vec<PreparedRule>,
}

impl PreparedPolicy {
    /// Both directions' rules, each made by `rules`.
    pub fn by_direction(mut rules: impl FnMut(Direction) -> Vec<PreparedRule>) -> PreparedPolicy {
        PreparedPolicy { ingress: rules(Direction::Ingress), egress: rules(Direction::Egress) }
    }

    pub fn clauses_mut(&mut self) -> impl Iterator<Item = &mut Clause> {
        self.ingress.iter_mut().chain(self.egress.iter_mut()).flat_map(|r| r.clauses.iter_mut())
    }

    pub fn rules(&self, dir: Direction) -> &[PreparedRule] {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// A distinct peer of some rule, and the addresses it stands for now.
#[derive(Debug)]
pub(super) struct PeerEntry {
    pub peer: Peer,
    pub addrs: AddressSet,
}

/// The peer ids of each rule of one policy, by direction.
#[derive(Debug, Default)]
pub(super) struct RulePeers {
    pub ingress: Vec<Vec<usize>>,
    pub egress: Vec<Vec<usize>>,
}

impl RulePeers {
    pub fn rules(&self, dir: Direction) -> &[Vec<usize>] {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// Clause address sets by content hash, with the id given to each distinct content, so that
/// clauses with equal addresses share unions within a batch.
#[derive(Debug, Default)]
pub(super) struct ClauseIds {
    by_hash: HashMap<u64, Vec<(u64, AddressSet)>>,
    entries: usize,
    next: u64,
}

impl ClauseIds {
    /// An id no clause has had.
    pub fn fresh(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// The id of this content: the same as every other clause interned with equal addresses.
    pub fn intern(&mut self, addrs: &AddressSet) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = rustc_hash::FxHasher::default();
        addrs.hash(&mut h);
        if let Some((id, _)) = self.by_hash.get(&h.finish()).and_then(|b| b.iter().find(|(_, a)| a == addrs)) {
            return *id;
        }
        let id = self.fresh();
        self.by_hash.entry(h.finish()).or_default().push((id, addrs.clone()));
        self.entries += 1;
        id
    }

    /// Forget contents no live clause has any more, once they outnumber the live ones: the
    /// table would otherwise grow with every change.
    pub fn prune(&mut self, live: &[PreparedPolicy]) {
        let clauses = || live.iter().flat_map(|p| p.ingress.iter().chain(&p.egress)).flat_map(|r| &r.clauses);
        let count = clauses().count();
        if self.entries <= 2 * count + 1024 {
            return;
        }
        let ids: std::collections::HashSet<u64> = clauses().map(|c| c.id).collect();
        self.entries = 0;
        for bucket in self.by_hash.values_mut() {
            bucket.retain(|(id, _)| ids.contains(id));
            self.entries += bucket.len();
        }
        self.by_hash.retain(|_, b| !b.is_empty());
    }
}

impl Compiler {
    /// Register every distinct peer of every rule (by content); addresses of peers already
    /// known are kept, new ones are computed.
    pub(super) fn index_peers(&mut self) {
        let mut known: HashMap<String, AddressSet> =
            std::mem::take(&mut self.peers).into_iter().map(|p| (peer_key(&p.peer), p.addrs)).collect();
        let mut ids: HashMap<String, usize> = HashMap::new();
        let mut peers: Vec<(Peer, Option<AddressSet>)> = Vec::new();
        let mut rule_peers = Vec::with_capacity(self.policies.len());
        for p in &self.policies {
            let mut of_policy = RulePeers::default();
            for dir in [Direction::Ingress, Direction::Egress] {
                let list = match dir {
                    Direction::Ingress => &mut of_policy.ingress,
                    Direction::Egress => &mut of_policy.egress,
                };
                for rule in p.rules(dir).into_iter().flatten() {
                    let of_rule = rule
                        .peers
                        .iter()
                        .map(|peer| {
                            let key = peer_key(peer);
                            *ids.entry(key.clone()).or_insert_with(|| {
                                peers.push((peer.clone(), known.remove(&key)));
                                peers.len() - 1
                            })
                        })
                        .collect();
                    list.push(of_rule);
                }
            }
            rule_peers.push(of_policy);
        }
        self.rule_peers = rule_peers;
        self.peers = peers
            .into_iter()
            .map(|(peer, addrs)| {
                let addrs = addrs.unwrap_or_else(|| self.peer_addresses(&peer));
                PeerEntry { peer, addrs }
            })
            .collect();
        let mut users = vec![std::collections::BTreeSet::new(); self.peers.len()];
        for (i, r) in self.rule_peers.iter().enumerate() {
            r.ingress.iter().chain(&r.egress).flatten().for_each(|&k| _ = users[k].insert(i));
        }
        self.peer_users = users.into_iter().map(|u| u.into_iter().collect()).collect();
        self.egress_named.clear();
        for (i, p) in self.policies.iter().enumerate() {
            for pr in p.egress.iter().flatten().flat_map(|r| r.ports.iter().flatten()) {
                if let PortMatch::Named(name) = &pr.port {
                    let users = self.egress_named.entry(name.clone()).or_default();
                    if users.last() != Some(&i) {
                        users.push(i);
                    }
                }
            }
        }
    }

    /// Prepare policy `i` from its peers' current addresses; clause ids are interned.
    pub(super) fn prepare(&mut self, i: usize) -> PreparedPolicy {
        let mut out = PreparedPolicy::by_direction(|dir| {
            let rules = self.policies[i].rules(dir).into_iter().flatten().zip(self.rule_peers[i].rules(dir));
            rules.map(|(r, ids)| self.prepare_rule(r, ids, dir)).collect()
        });
        for c in out.clauses_mut() {
            c.id = self.clause_ids.intern(&c.addrs);
        }
        out
    }

    fn prepare_rule(&self, rule: &Rule, peer_ids: &[usize], dir: Direction) -> PreparedRule {
        let mut addrs = AddressSet::new();
        for &k in peer_ids {
            for (f, r) in &self.peers[k].addrs {
                addrs.entry(*f).or_default().extend(r.iter().copied());
            }
        }
        normalize(&mut addrs);
        let mut prepared = PreparedRule { clauses: Vec::new(), kinds: Vec::new(), ingress_named: Vec::new() };
        let push = |prepared: &mut PreparedRule, clause: Clause, kind: ClauseKind| {
            prepared.clauses.push(clause);
            prepared.kinds.push(kind);
        };
        let Some(ports) = &rule.ports else {
            let clause = Clause { action: rule.action, addrs, services: vec![ServiceSel::All], id: 0 };
            push(&mut prepared, clause, ClauseKind::Peers { entry: None, family: None });
            return prepared;
        };
        let mut plain = Vec::new();
        for (entry, pr) in ports.iter().enumerate() {
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
                        let clause = Clause { action: rule.action, addrs: set, services: service_sel(pr, Some(port)), id: 0 };
                        push(&mut prepared, clause, ClauseKind::EgressNamed { entry, port });
                    }
                }
                _ if icmp_family(pr).is_some() => {
                    let clause = Clause { action: rule.action, addrs: fam_addrs, services: service_sel(pr, None), id: 0 };
                    push(&mut prepared, clause, ClauseKind::Peers { entry: Some(entry), family: icmp_family(pr) });
                }
                _ => plain.extend(service_sel(pr, None)),
            }
        }
        if !plain.is_empty() {
            let clause = Clause { action: rule.action, addrs, services: plain, id: 0 };
            push(&mut prepared, clause, ClauseKind::Peers { entry: None, family: None });
        }
        prepared
    }

    /// The addresses a peer stands for. Peers that take whole segments become the segments'
    /// blocks (with compression on); others, the addresses of what they select.
    pub(super) fn peer_addresses(&self, peer: &Peer) -> AddressSet {
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

/// A peer's identity: its serialized form.
fn peer_key(peer: &Peer) -> String {
    serde_json::to_string(peer).unwrap_or_default()
}

/// Whether `set` holds `ip`.
pub(super) fn holds(set: &AddressSet, ip: &IpAddr) -> bool {
    let v = to_u128(ip);
    let ranges = set.get(&Family::of(ip)).map(Vec::as_slice).unwrap_or_default();
    let at = ranges.partition_point(|r| r.1 < v);
    ranges.get(at).is_some_and(|r| r.0 <= v)
}

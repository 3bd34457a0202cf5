//! The reference evaluator: would one packet be allowed, and why?
//!
//! A packet from `src` to `dst` is allowed when the egress side of `src` and the ingress side of
//! `dst` both allow it (an external party has no side of its own). Each side is decided tier by
//! tier: admin cluster policies by priority (first matching rule: allow, deny, or pass to the
//! next tier); then namespace policies (if any selects the endpoint for that direction, it is
//! isolated and only the union of their rules allows); then baseline cluster policies by
//! priority; then allowed.
//!
//! This is the semantics the compiler must reproduce; `simulate`/`explain` answer from here.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::model::{Action, Cluster, Direction, Endpoint, NamespaceMatch, Peer, Policy, PortMatch, PortRule, Protocol, Rule, Tier};

/// One side of a packet: a cluster endpoint at one of its addresses, or an external address.
#[derive(Debug, Clone, Copy)]
pub enum Party<'a> {
    Endpoint(&'a Endpoint, IpAddr),
    External(IpAddr),
}

impl Party<'_> {
    pub fn ip(&self) -> IpAddr {
        match self {
            Party::Endpoint(_, ip) | Party::External(ip) => *ip,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Party::Endpoint(e, _) => e.id.clone(),
            Party::External(ip) => ip.to_string(),
        }
    }
}

/// What is probed: a protocol and a port (or ICMP type/code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Probe {
    pub protocol: Protocol,
    /// Destination port for TCP/UDP/SCTP.
    pub port: Option<u16>,
    /// ICMP type and code.
    pub icmp: Option<(u8, u8)>,
}

/// How one side decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "by")]
pub enum Decision {
    /// External parties have no policy side.
    External,
    /// A cluster policy rule matched.
    ClusterRule { policy: String, rule: String, action: Action },
    /// An admin `pass` rule handed the decision on, and no later tier isolates.
    NotIsolated,
    /// Namespace policies isolate the endpoint; this rule allowed.
    AllowedBy { policy: String, rule: String },
    /// Namespace policies isolate the endpoint and none of their rules allowed.
    Isolated { policies: Vec<IsolatingPolicy> },
}

/// A policy that isolates an endpoint, and why each of its rules did not match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IsolatingPolicy {
    pub policy: String,
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SideVerdict {
    pub allowed: bool,
    pub decision: Decision,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub allowed: bool,
    pub egress: SideVerdict,
    pub ingress: SideVerdict,
}

impl Verdict {
    /// One sentence for people.
    pub fn reason(&self, src: &str, dst: &str) -> String {
        let side = |dir: &str, who: &str, v: &SideVerdict| -> String {
            match &v.decision {
                Decision::External => String::new(),
                Decision::ClusterRule { policy, rule, action } => format!("{dir} of {who}: {policy} {rule} says {action:?}"),
                Decision::NotIsolated => format!("{dir} of {who}: not isolated"),
                Decision::AllowedBy { policy, rule } => format!("{dir} of {who}: allowed by {policy} {rule}"),
                Decision::Isolated { policies } => {
                    let names: Vec<&str> = policies.iter().map(|p| p.policy.as_str()).collect();
                    format!("{dir} of {who}: isolated by {} and no rule allows it", names.join(", "))
                }
            }
        };
        let parts: Vec<String> =
            [side("egress", src, &self.egress), side("ingress", dst, &self.ingress)].into_iter().filter(|s| !s.is_empty()).collect();
        if parts.is_empty() { "both ends are external".to_string() } else { parts.join("; ") }
    }
}

/// Decide one packet.
pub fn evaluate(cluster: &Cluster, policies: &[Policy], src: Party<'_>, dst: Party<'_>, probe: Probe) -> Verdict {
    let all: Vec<&Policy> = policies.iter().collect();
    evaluate_with(cluster, &all, &all, src, dst, probe, true)
}

/// Decide one packet given the policies that may select the source and the destination (a
/// superset is fine: selection is checked again). Lets `simulate` index policies once.
/// `detail` adds, for a denial, why each rule of each isolating policy did not match.
pub fn evaluate_with(
    cluster: &Cluster,
    src_policies: &[&Policy],
    dst_policies: &[&Policy],
    src: Party<'_>,
    dst: Party<'_>,
    probe: Probe,
    detail: bool,
) -> Verdict {
    let egress = match src {
        Party::Endpoint(e, _) => side(cluster, src_policies, e, Direction::Egress, dst, dst, probe, detail),
        Party::External(_) => SideVerdict { allowed: true, decision: Decision::External },
    };
    let ingress = match dst {
        Party::Endpoint(e, _) => side(cluster, dst_policies, e, Direction::Ingress, src, dst, probe, detail),
        Party::External(_) => SideVerdict { allowed: true, decision: Decision::External },
    };
    Verdict { allowed: egress.allowed && ingress.allowed, egress, ingress }
}

/// Policies in evaluation order for one tier kind.
fn ordered<'p>(policies: &[&'p Policy], admin: bool) -> Vec<&'p Policy> {
    let mut list: Vec<&Policy> = policies
        .iter()
        .copied()
        .filter(|p| match p.tier {
            Tier::Admin { .. } => admin,
            Tier::Baseline { .. } => !admin,
            Tier::Namespace => false,
        })
        .collect();
    list.sort_by(|a, b| a.tier.cmp(&b.tier).then_with(|| a.id.cmp(&b.id)));
    list
}

impl SideVerdict {
    /// The side's decision in a few words, without naming its endpoint (`simulate` lines name
    /// both ends already): `egress: allowed by NetworkPolicy a/b spec.egress[0]`.
    pub fn compact(&self, dir: &str) -> Option<String> {
        Some(match &self.decision {
            Decision::External => return None,
            Decision::ClusterRule { policy, rule, action } => format!("{dir}: {policy} {rule} says {action:?}"),
            Decision::NotIsolated => format!("{dir}: not isolated"),
            Decision::AllowedBy { policy, rule } => format!("{dir}: allowed by {policy} {rule}"),
            Decision::Isolated { policies } => {
                let names: Vec<&str> = policies.iter().map(|p| p.policy.as_str()).collect();
                format!("{dir}: isolated by {}, no rule allows it", names.join(", "))
            }
        })
    }
}

/// One side of a packet: `peer` is the other party; `dst` the destination (for named ports).
/// `simulate` decides sides alone, once per class of equivalent pairs, and reuses the answer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn side(
    cluster: &Cluster,
    policies: &[&Policy],
    subject: &Endpoint,
    dir: Direction,
    peer: Party<'_>,
    dst: Party<'_>,
    probe: Probe,
    detail: bool,
) -> SideVerdict {
    let selecting = |p: &Policy| p.rules(dir).is_some() && p.selects(cluster, subject);
    'admin: for p in ordered(policies, true).into_iter().filter(|p| selecting(p)) {
        for r in p.rules(dir).into_iter().flatten() {
            if rule_matches(cluster, r, peer, dst, probe) {
                if r.action == Action::Pass {
                    break 'admin;
                }
                return SideVerdict {
                    allowed: r.action == Action::Allow,
                    decision: Decision::ClusterRule { policy: p.id.clone(), rule: r.origin.clone(), action: r.action },
                };
            }
        }
    }
    let isolating: Vec<&Policy> = policies.iter().copied().filter(|p| p.tier == Tier::Namespace && selecting(p)).collect();
    if !isolating.is_empty() {
        for p in &isolating {
            for r in p.rules(dir).into_iter().flatten() {
                if rule_matches(cluster, r, peer, dst, probe) {
                    return SideVerdict { allowed: true, decision: Decision::AllowedBy { policy: p.id.clone(), rule: r.origin.clone() } };
                }
            }
        }
        let policies = isolating
            .iter()
            .map(|p| IsolatingPolicy {
                policy: p.id.clone(),
                // Explanations are for `explain`; `simulate` only names the policies.
                rules: if detail {
                    p.rules(dir).into_iter().flatten().map(|r| format!("{}: {}", r.origin, why_not(cluster, r, peer, dst, probe))).collect()
                } else {
                    Vec::new()
                },
            })
            .collect();
        return SideVerdict { allowed: false, decision: Decision::Isolated { policies } };
    }
    // In the baseline tier a Pass leaves the tier too: to the default, allow.
    for p in ordered(policies, false).into_iter().filter(|p| selecting(p)) {
        for r in p.rules(dir).into_iter().flatten() {
            if rule_matches(cluster, r, peer, dst, probe) {
                return SideVerdict {
                    allowed: r.action != Action::Deny,
                    decision: Decision::ClusterRule { policy: p.id.clone(), rule: r.origin.clone(), action: r.action },
                };
            }
        }
    }
    SideVerdict { allowed: true, decision: Decision::NotIsolated }
}

pub fn rule_matches(cluster: &Cluster, rule: &Rule, peer: Party<'_>, dst: Party<'_>, probe: Probe) -> bool {
    rule.peers.iter().any(|p| peer_matches(cluster, p, peer)) && ports_match(rule.ports.as_deref(), dst, probe)
}

fn why_not(cluster: &Cluster, rule: &Rule, peer: Party<'_>, dst: Party<'_>, probe: Probe) -> String {
    let peer_ok = rule.peers.iter().any(|p| peer_matches(cluster, p, peer));
    let ports_ok = ports_match(rule.ports.as_deref(), dst, probe);
    match (peer_ok, ports_ok) {
        (false, false) => format!("neither {} nor the port is allowed", peer.name()),
        (false, true) => format!("{} is not among its peers", peer.name()),
        (true, false) => "the port is not among its ports".to_string(),
        (true, true) => "matches".to_string(),
    }
}

pub fn peer_matches(cluster: &Cluster, peer: &Peer, party: Party<'_>) -> bool {
    match peer {
        Peer::Any => true,
        Peer::Cidr { cidr, except } => in_block(cidr, except, party.ip()),
        Peer::Host(name) => cluster.hosts.get(name).is_some_and(|ips| ips.contains(&party.ip())),
        Peer::Segment { tenant, segment } => matches!(party, Party::Endpoint(e, _) if e.namespace == *tenant && e.segment == *segment),
        Peer::Endpoints { namespaces, pods } => match party {
            Party::Endpoint(e, _) => namespace_matches(cluster, namespaces, &e.namespace) && pods.matches(&e.labels),
            Party::External(_) => false,
        },
    }
}

pub fn namespace_matches(cluster: &Cluster, m: &NamespaceMatch, namespace: &str) -> bool {
    match m {
        NamespaceMatch::Exactly(ns) => ns == namespace,
        NamespaceMatch::Selector(sel) => sel.matches(&cluster.namespace_labels(namespace)),
    }
}

pub fn in_block(cidr: &IpNet, except: &[IpNet], ip: IpAddr) -> bool {
    cidr.contains(&ip) && !except.iter().any(|e| e.contains(&ip))
}

fn ports_match(ports: Option<&[PortRule]>, dst: Party<'_>, probe: Probe) -> bool {
    let Some(list) = ports else { return true };
    list.iter().any(|r| {
        r.protocol == probe.protocol
            && match &r.port {
                PortMatch::All => true,
                PortMatch::Range(a, b) => probe.port.is_some_and(|p| (*a..=*b).contains(&p)),
                // A named port is the destination's: an external destination has none.
                PortMatch::Named(name) => match dst {
                    Party::Endpoint(e, _) => probe.port.is_some() && e.resolve_port(name, r.protocol) == probe.port,
                    Party::External(_) => false,
                },
                PortMatch::Icmp { icmp_type, code } => {
                    probe.icmp.is_some_and(|(t, c)| t == *icmp_type && code.is_none_or(|code| code == c))
                }
            }
    })
}

//! What policies are about: namespaces (tenants) and endpoints, plus the intermediate form that
//! every policy dialect (Kubernetes NetworkPolicy, native Tessera, Romana) translates into.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::selector::{LabelSelector, Labels};

/// The label every namespace carries automatically.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The pod label naming an endpoint's segment.
pub const SEGMENT_LABEL: &str = "tessera.io/segment";
pub const DEFAULT_SEGMENT: &str = "default";

/// A namespace (Kubernetes) or tenant (Tessera).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    /// Includes `kubernetes.io/metadata.name`.
    pub labels: Labels,
}

impl Namespace {
    pub fn new(name: &str, mut labels: Labels) -> Namespace {
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
        Namespace { name: name.to_string(), labels }
    }
}

/// A transport protocol as policies name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv6,
}

impl Protocol {
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp | Protocol::Sctp)
    }

    /// IANA protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
            Protocol::Icmp => 1,
            Protocol::Icmpv6 => 58,
        }
    }

    pub fn parse(text: &str) -> Option<Protocol> {
        Some(match text.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            "icmp" => Protocol::Icmp,
            "icmpv6" => Protocol::Icmpv6,
            _ => return None,
        })
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
            Protocol::Icmp => "ICMP",
            Protocol::Icmpv6 => "ICMPv6",
        })
    }
}

/// A port an endpoint listens on under a name (a container port).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NamedPort {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

/// A pod, VM or host interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `namespace/name`.
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub segment: String,
    pub ips: Vec<IpAddr>,
    pub named_ports: Vec<NamedPort>,
    /// The node it runs on, when known.
    pub host: Option<String>,
}

impl Endpoint {
    pub fn resolve_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.named_ports.iter().find(|p| p.name == name && p.protocol == protocol).map(|p| p.port)
    }
}

/// Everything policies are evaluated against.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cluster {
    pub namespaces: BTreeMap<String, Namespace>,
    /// By id, so iteration order is stable.
    pub endpoints: BTreeMap<String, Endpoint>,
    /// Hosts (nodes) and their underlay addresses.
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
}

impl Cluster {
    /// The namespace, or a bare one with only its automatic label (namespaces referenced but not
    /// described still exist).
    pub fn namespace_labels(&self, name: &str) -> std::borrow::Cow<'_, Labels> {
        match self.namespaces.get(name) {
            Some(ns) => std::borrow::Cow::Borrowed(&ns.labels),
            None => std::borrow::Cow::Owned(Namespace::new(name, Labels::new()).labels),
        }
    }

    pub fn endpoint_by_ip(&self, ip: IpAddr) -> Option<&Endpoint> {
        self.endpoints.values().find(|e| e.ips.contains(&ip))
    }
}

/// Where a policy sits in evaluation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "tier")]
pub enum Tier {
    /// Cluster admin policies, before namespace policies; lower priority numbers first.
    Admin { priority: u32 },
    /// NetworkPolicy and tenant policies: allow-lists that isolate what they select.
    Namespace,
    /// Cluster defaults, after namespace policies.
    Baseline { priority: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
    /// Skip the rest of the admin tier; namespace policies decide.
    Pass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// Which namespaces an endpoint selector looks in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NamespaceMatch {
    /// Only this namespace (a NetworkPolicy peer with a podSelector only).
    Exactly(String),
    /// Namespaces whose labels match.
    Selector(LabelSelector),
}

/// The other side of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Peer {
    /// Cluster endpoints selected by namespace and pod labels.
    Endpoints { namespaces: NamespaceMatch, pods: LabelSelector },
    /// Every endpoint of one segment of a tenant.
    Segment { tenant: String, segment: String },
    /// Any address inside `cidr` but outside every `except`, cluster endpoints included.
    Cidr { cidr: IpNet, except: Vec<IpNet> },
    /// The underlay addresses of a host (node).
    Host(String),
    /// Every address.
    Any,
}

/// What a rule says about ports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PortMatch {
    /// Every port of the protocol.
    All,
    /// Inclusive range; a single port is `Range(p, p)`.
    Range(u16, u16),
    /// A named container port of the destination endpoint.
    Named(String),
    /// ICMP type and optional code.
    Icmp { icmp_type: u8, code: Option<u8> },
}

/// One protocol/port entry of a rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRule {
    pub protocol: Protocol,
    pub port: PortMatch,
}

/// A rule: action, peers (any of), ports (any of; `None` means every protocol and port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub action: Action,
    pub peers: Vec<Peer>,
    pub ports: Option<Vec<PortRule>>,
    /// Where the rule came from, for explanations (`spec.ingress[0]`).
    pub origin: String,
}

/// Which endpoints a policy applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub namespaces: NamespaceMatch,
    pub pods: LabelSelector,
    /// Native tenant policies may narrow the subject to one segment.
    pub segment: Option<String>,
}

/// A policy in the intermediate form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// `NetworkPolicy ns/name`, `TesseraClusterPolicy name`, ...
    pub id: String,
    pub tier: Tier,
    pub subject: Subject,
    /// `None`: the policy does not affect ingress. `Some(vec![])`: it isolates and allows nothing.
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}

impl Policy {
    pub fn rules(&self, direction: Direction) -> Option<&Vec<Rule>> {
        match direction {
            Direction::Ingress => self.ingress.as_ref(),
            Direction::Egress => self.egress.as_ref(),
        }
    }

    pub fn selects(&self, cluster: &Cluster, e: &Endpoint) -> bool {
        let ns_ok = match &self.subject.namespaces {
            NamespaceMatch::Exactly(ns) => *ns == e.namespace,
            NamespaceMatch::Selector(sel) => sel.matches(&cluster.namespace_labels(&e.namespace)),
        };
        ns_ok && self.subject.pods.matches(&e.labels) && self.subject.segment.as_ref().is_none_or(|s| *s == e.segment)
    }
}

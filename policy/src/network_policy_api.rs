//! The Kubernetes network-policy-api project's cluster policies (`policy.networking.k8s.io`),
//! onto the admin and baseline tiers:
//!
//! - `ClusterNetworkPolicy` (`v1alpha2`, and `v1beta1`, which has the same schema): one kind
//!   with a `tier` (Admin or Baseline), actions Accept, Deny and Pass, per-protocol matching;
//! - the older `AdminNetworkPolicy` (admin tier) and `BaselineAdminNetworkPolicy` (the
//!   singleton `default`, baseline tier, after every ClusterNetworkPolicy of that tier) of
//!   `v1alpha1`.
//!
//! The translation is exact: Accept/Allow and Deny decide; Pass leaves the tier (from the admin
//! tier to NetworkPolicies, from the baseline tier to the default, allow); rules apply first
//! match in the order written, policies by priority (then name, so equal priorities are
//! ordered the same on every node). Peers the engine cannot enforce exactly — `nodes` (Node
//! labels) and `domainNames` (FQDN) — refuse the whole policy, naming the field: half a policy
//! enforced is worse than a refusal someone sees.

use serde::Deserialize;

use crate::error::PolicyError;
use crate::k8s::{Meta, parse_cidr, validate_port_name};
use crate::model::{Action, NamespaceMatch, Peer, Policy, PortMatch, PortRule, Protocol, Rule, Subject, Tier};
use crate::selector::LabelSelector;

/// The API group of these kinds.
pub const GROUP: &str = "policy.networking.k8s.io";

/// The baseline tier's BaselineAdminNetworkPolicy comes after every ClusterNetworkPolicy of
/// that tier (priorities 0 to 1000).
const BASELINE_ADMIN_PRIORITY: u32 = 1001;

/// Which of the kinds a document is (named as the API names them).
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    ClusterNetworkPolicy,
    AdminNetworkPolicy,
    BaselineAdminNetworkPolicy,
}

impl Kind {
    /// The kind named by `kind` and `apiVersion`, or an error naming what is served.
    pub(crate) fn of(kind: &str, api_version: &str) -> Result<Kind, PolicyError> {
        let (k, versions): (Kind, &[&str]) = match kind {
            "ClusterNetworkPolicy" => (Kind::ClusterNetworkPolicy, &["v1alpha2", "v1beta1"]),
            "AdminNetworkPolicy" => (Kind::AdminNetworkPolicy, &["v1alpha1"]),
            "BaselineAdminNetworkPolicy" => (Kind::BaselineAdminNetworkPolicy, &["v1alpha1"]),
            other => return Err(PolicyError::field("kind", format!("`{other}` is not a {GROUP} kind"))),
        };
        if !versions.iter().any(|v| api_version == format!("{GROUP}/{v}")) {
            let want: Vec<String> = versions.iter().map(|v| format!("{GROUP}/{v}")).collect();
            return Err(PolicyError::field("apiVersion", format!("`{api_version}`: {kind} is read as {}", want.join(" or "))));
        }
        Ok(k)
    }

    fn name(self) -> &'static str {
        match self {
            Kind::ClusterNetworkPolicy => "ClusterNetworkPolicy",
            Kind::AdminNetworkPolicy => "AdminNetworkPolicy",
            Kind::BaselineAdminNetworkPolicy => "BaselineAdminNetworkPolicy",
        }
    }

    fn v1alpha1(self) -> bool {
        self != Kind::ClusterNetworkPolicy
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Doc {
    pub metadata: Meta,
    pub spec: Spec,
}

/// The spec of the three kinds: what one kind lacks is refused by [`policy`], naming the field.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Spec {
    tier: Option<String>,
    priority: Option<i64>,
    subject: SubjectDoc,
    #[serde(default)]
    ingress: Vec<RuleDoc>,
    #[serde(default)]
    egress: Vec<RuleDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SubjectDoc {
    namespaces: Option<LabelSelector>,
    pods: Option<NamespacedPod>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NamespacedPod {
    namespace_selector: LabelSelector,
    pod_selector: LabelSelector,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RuleDoc {
    name: Option<String>,
    action: String,
    from: Option<Vec<PeerDoc>>,
    to: Option<Vec<PeerDoc>>,
    /// v1alpha1.
    ports: Option<Vec<PortDoc>>,
    /// ClusterNetworkPolicy.
    protocols: Option<Vec<ProtocolDoc>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PeerDoc {
    namespaces: Option<LabelSelector>,
    pods: Option<NamespacedPod>,
    nodes: Option<serde_json::Value>,
    networks: Option<Vec<String>>,
    domain_names: Option<Vec<String>>,
}

/// v1alpha1: exactly one of the three.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PortDoc {
    port_number: Option<PortNumber>,
    named_port: Option<String>,
    port_range: Option<PortRangeV1alpha1>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortNumber {
    protocol: String,
    port: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortRangeV1alpha1 {
    protocol: Option<String>,
    start: i64,
    end: i64,
}

/// ClusterNetworkPolicy: exactly one of the four.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProtocolDoc {
    tcp: Option<DestinationDoc>,
    udp: Option<DestinationDoc>,
    sctp: Option<DestinationDoc>,
    destination_named_port: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DestinationDoc {
    destination_port: Option<DestinationPort>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DestinationPort {
    number: Option<i64>,
    range: Option<Range>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Range {
    start: i64,
    end: i64,
}

/// The policy a document of `kind` says, or the first field in error.
pub(crate) fn policy(kind: Kind, doc: Doc) -> Result<Policy, PolicyError> {
    let spec = doc.spec;
    let name = doc.metadata.name;
    if doc.metadata.namespace.is_some() {
        return Err(PolicyError::field("metadata.namespace", format!("a {} is cluster-scoped", kind.name())));
    }
    let priority = || -> Result<u32, PolicyError> {
        let p = spec.priority.ok_or_else(|| PolicyError::field("spec.priority", "required: 0 to 1000"))?;
        u32::try_from(p)
            .ok()
            .filter(|p| *p <= 1000)
            .ok_or_else(|| PolicyError::field("spec.priority", format!("must be 0 to 1000, not {p}")))
    };
    let tier = match kind {
        Kind::AdminNetworkPolicy => {
            refuse_field(spec.tier.is_some(), "spec.tier", "is a ClusterNetworkPolicy field")?;
            Tier::Admin { priority: priority()? }
        }
        Kind::BaselineAdminNetworkPolicy => {
            refuse_field(spec.tier.is_some(), "spec.tier", "is a ClusterNetworkPolicy field")?;
            refuse_field(spec.priority.is_some(), "spec.priority", "a BaselineAdminNetworkPolicy has none")?;
            if name != "default" {
                return Err(PolicyError::field("metadata.name", "the one BaselineAdminNetworkPolicy is named `default`"));
            }
            Tier::Baseline { priority: BASELINE_ADMIN_PRIORITY }
        }
        Kind::ClusterNetworkPolicy => match spec.tier.as_deref() {
            Some("Admin") => Tier::Admin { priority: priority()? },
            Some("Baseline") => Tier::Baseline { priority: priority()? },
            Some(other) => return Err(PolicyError::field("spec.tier", format!("`{other}` is not one of Admin, Baseline"))),
            None => return Err(PolicyError::field("spec.tier", "required: Admin or Baseline")),
        },
    };
    let subject = subject(&spec.subject)?;
    let ingress = rules(kind, "spec.ingress", &spec.ingress, true)?;
    let egress = rules(kind, "spec.egress", &spec.egress, false)?;
    Ok(Policy { id: format!("{} {name}", kind.name()), tier, subject, ingress, egress })
}

fn refuse_field(present: bool, field: &str, why: &str) -> Result<(), PolicyError> {
    if present { Err(PolicyError::field(field, why)) } else { Ok(()) }
}

fn subject(s: &SubjectDoc) -> Result<Subject, PolicyError> {
    let (namespaces, pods) = match (&s.namespaces, &s.pods) {
        (Some(ns), None) => {
            ns.validate("spec.subject.namespaces")?;
            (ns.clone(), LabelSelector::default())
        }
        (None, Some(p)) => {
            p.namespace_selector.validate("spec.subject.pods.namespaceSelector")?;
            p.pod_selector.validate("spec.subject.pods.podSelector")?;
            (p.namespace_selector.clone(), p.pod_selector.clone())
        }
        _ => return Err(PolicyError::field("spec.subject", "name exactly one of namespaces, pods")),
    };
    Ok(Subject { namespaces: NamespaceMatch::Selector(namespaces), pods, segment: None })
}

/// A direction's rules; none means the policy leaves that direction alone.
fn rules(kind: Kind, field: &str, list: &[RuleDoc], ingress: bool) -> Result<Option<Vec<Rule>>, PolicyError> {
    if list.is_empty() {
        return Ok(None);
    }
    let limit = if kind.v1alpha1() { 100 } else { 25 };
    if list.len() > limit {
        return Err(PolicyError::field(field, format!("at most {limit} rules, not {}", list.len())));
    }
    list.iter().enumerate().map(|(i, r)| rule(kind, &format!("{field}[{i}]"), r, ingress)).collect::<Result<Vec<_>, _>>().map(Some)
}

fn rule(kind: Kind, field: &str, r: &RuleDoc, ingress: bool) -> Result<Rule, PolicyError> {
    let action = match (kind, r.action.as_str()) {
        (Kind::ClusterNetworkPolicy, "Accept") | (Kind::AdminNetworkPolicy | Kind::BaselineAdminNetworkPolicy, "Allow") => Action::Allow,
        (_, "Deny") => Action::Deny,
        (Kind::ClusterNetworkPolicy | Kind::AdminNetworkPolicy, "Pass") => Action::Pass,
        (_, other) => {
            let allowed = match kind {
                Kind::ClusterNetworkPolicy => "Accept, Deny, Pass",
                Kind::AdminNetworkPolicy => "Allow, Deny, Pass",
                Kind::BaselineAdminNetworkPolicy => "Allow, Deny",
            };
            return Err(PolicyError::field(format!("{field}.action"), format!("`{other}` is not one of {allowed}")));
        }
    };
    if let Some(name) = &r.name
        && name.len() > 100
    {
        return Err(PolicyError::field(format!("{field}.name"), "at most 100 characters"));
    }
    let (peers_key, peers, wrong) = if ingress { ("from", &r.from, &r.to) } else { ("to", &r.to, &r.from) };
    if wrong.is_some() {
        let other = if ingress { "to" } else { "from" };
        return Err(PolicyError::field(format!("{field}.{other}"), format!("this direction's peers go in `{peers_key}`")));
    }
    let peers = match peers.as_deref() {
        None | Some([]) => return Err(PolicyError::field(format!("{field}.{peers_key}"), "required: at least one peer")),
        Some(list) => list,
    };
    let mut out = Vec::new();
    for (j, p) in peers.iter().enumerate() {
        out.extend(peer(&format!("{field}.{peers_key}[{j}]"), p, ingress)?);
    }
    let ports = match (kind.v1alpha1(), &r.ports, &r.protocols) {
        (true, _, Some(_)) => return Err(PolicyError::field(format!("{field}.protocols"), "is a ClusterNetworkPolicy field; use `ports`")),
        (false, Some(_), _) => return Err(PolicyError::field(format!("{field}.ports"), "is a v1alpha1 field; use `protocols`")),
        (true, Some(list), None) => Some(ports_v1alpha1(&format!("{field}.ports"), list)?),
        (false, None, Some(list)) => Some(protocols(&format!("{field}.protocols"), list)?),
        (_, None, None) => None,
    };
    let named = ports.iter().flatten().any(|p| matches!(p.port, PortMatch::Named(_)));
    if named && peers.iter().any(|p| p.networks.is_some()) {
        return Err(PolicyError::field(
            format!("{field}.{peers_key}"),
            "a named port cannot go with `networks` peers: only pods have named ports",
        ));
    }
    let origin = match &r.name {
        Some(name) if !name.is_empty() => format!("{field} ({name})"),
        _ => field.to_string(),
    };
    Ok(Rule { action, peers: out, ports, origin })
}

fn peer(field: &str, p: &PeerDoc, ingress: bool) -> Result<Vec<Peer>, PolicyError> {
    let set = [p.namespaces.is_some(), p.pods.is_some(), p.nodes.is_some(), p.networks.is_some(), p.domain_names.is_some()];
    if set.iter().filter(|s| **s).count() != 1 {
        let kinds = if ingress { "namespaces, pods" } else { "namespaces, pods, networks" };
        return Err(PolicyError::field(field, format!("name exactly one peer: {kinds}")));
    }
    if let Some(ns) = &p.namespaces {
        ns.validate(&format!("{field}.namespaces"))?;
        return Ok(vec![Peer::Endpoints { namespaces: NamespaceMatch::Selector(ns.clone()), pods: LabelSelector::default() }]);
    }
    if let Some(pods) = &p.pods {
        pods.namespace_selector.validate(&format!("{field}.pods.namespaceSelector"))?;
        pods.pod_selector.validate(&format!("{field}.pods.podSelector"))?;
        return Ok(vec![Peer::Endpoints {
            namespaces: NamespaceMatch::Selector(pods.namespace_selector.clone()),
            pods: pods.pod_selector.clone(),
        }]);
    }
    if p.nodes.is_some() {
        return Err(PolicyError::unenforceable(
            format!("{field}.nodes"),
            "Node peers are not enforced by Tessera (it does not select nodes by label); name their addresses with `networks`",
        ));
    }
    if p.domain_names.is_some() {
        return Err(PolicyError::unenforceable(
            format!("{field}.domainNames"),
            "domain-name (FQDN) peers are not enforced by Tessera; name the addresses with `networks`",
        ));
    }
    if ingress {
        return Err(PolicyError::field(format!("{field}.networks"), "an ingress peer is one of namespaces, pods"));
    }
    let networks = p.networks.as_deref().unwrap_or_default();
    if networks.is_empty() || networks.len() > 25 {
        return Err(PolicyError::field(format!("{field}.networks"), format!("1 to 25 CIDRs, not {}", networks.len())));
    }
    networks
        .iter()
        .enumerate()
        .map(|(k, n)| parse_cidr(&format!("{field}.networks[{k}]"), n).map(|cidr| Peer::Cidr { cidr, except: Vec::new() }))
        .collect()
}

/// A named port is the container port of that name, whatever its protocol (a pod's port names
/// are unique): one entry per protocol that has ports.
fn named_port(field: &str, name: &str) -> Result<Vec<PortRule>, PolicyError> {
    validate_port_name(field, name)?;
    Ok([Protocol::Tcp, Protocol::Udp, Protocol::Sctp]
        .into_iter()
        .map(|protocol| PortRule { protocol, port: PortMatch::Named(name.into()) })
        .collect())
}

fn port_protocol(field: &str, text: &str) -> Result<Protocol, PolicyError> {
    match text {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        "SCTP" => Ok(Protocol::Sctp),
        other => Err(PolicyError::field(field, format!("`{other}` is not one of TCP, UDP, SCTP"))),
    }
}

fn port_number(field: &str, n: i64) -> Result<u16, PolicyError> {
    u16::try_from(n).ok().filter(|p| *p >= 1).ok_or_else(|| PolicyError::field(field, format!("must be 1 to 65535, not {n}")))
}

fn ports_v1alpha1(field: &str, list: &[PortDoc]) -> Result<Vec<PortRule>, PolicyError> {
    if list.is_empty() || list.len() > 100 {
        return Err(PolicyError::field(field, format!("1 to 100 entries, not {}", list.len())));
    }
    let mut out = Vec::new();
    for (k, p) in list.iter().enumerate() {
        let f = format!("{field}[{k}]");
        match (&p.port_number, &p.named_port, &p.port_range) {
            (Some(n), None, None) => out.push(PortRule {
                protocol: port_protocol(&format!("{f}.portNumber.protocol"), &n.protocol)?,
                port: {
                    let port = port_number(&format!("{f}.portNumber.port"), n.port)?;
                    PortMatch::Range(port, port)
                },
            }),
            (None, Some(name), None) => out.extend(named_port(&format!("{f}.namedPort"), name)?),
            (None, None, Some(r)) => {
                let protocol = port_protocol(&format!("{f}.portRange.protocol"), r.protocol.as_deref().unwrap_or("TCP"))?;
                let (start, end) =
                    (port_number(&format!("{f}.portRange.start"), r.start)?, port_number(&format!("{f}.portRange.end"), r.end)?);
                if end < start {
                    return Err(PolicyError::field(format!("{f}.portRange.end"), format!("must be >= start ({start})")));
                }
                out.push(PortRule { protocol, port: PortMatch::Range(start, end) });
            }
            _ => return Err(PolicyError::field(f, "name exactly one of portNumber, namedPort, portRange")),
        }
    }
    Ok(out)
}

fn protocols(field: &str, list: &[ProtocolDoc]) -> Result<Vec<PortRule>, PolicyError> {
    if list.is_empty() || list.len() > 25 {
        return Err(PolicyError::field(field, format!("1 to 25 entries, not {}", list.len())));
    }
    let mut out = Vec::new();
    for (k, p) in list.iter().enumerate() {
        let f = format!("{field}[{k}]");
        let (key, protocol, destination) = match (&p.tcp, &p.udp, &p.sctp, &p.destination_named_port) {
            (Some(d), None, None, None) => ("tcp", Protocol::Tcp, d),
            (None, Some(d), None, None) => ("udp", Protocol::Udp, d),
            (None, None, Some(d), None) => ("sctp", Protocol::Sctp, d),
            (None, None, None, Some(name)) => {
                out.extend(named_port(&format!("{f}.destinationNamedPort"), name)?);
                continue;
            }
            _ => return Err(PolicyError::field(f, "name exactly one of tcp, udp, sctp, destinationNamedPort")),
        };
        let at = format!("{f}.{key}.destinationPort");
        let port = match &destination.destination_port {
            None => return Err(PolicyError::field(at, "required: a number or a range")),
            Some(DestinationPort { number: Some(n), range: None }) => {
                let port = port_number(&format!("{at}.number"), *n)?;
                PortMatch::Range(port, port)
            }
            Some(DestinationPort { number: None, range: Some(r) }) => {
                let (start, end) = (port_number(&format!("{at}.range.start"), r.start)?, port_number(&format!("{at}.range.end"), r.end)?);
                if start >= end {
                    return Err(PolicyError::field(format!("{at}.range"), format!("start ({start}) must be less than end ({end})")));
                }
                PortMatch::Range(start, end)
            }
            Some(_) => return Err(PolicyError::field(at, "name exactly one of number, range")),
        };
        out.push(PortRule { protocol, port });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(value: serde_json::Value) -> Result<Policy, PolicyError> {
        let kind = Kind::of(value["kind"].as_str().unwrap_or_default(), value["apiVersion"].as_str().unwrap_or_default())?;
        let doc: Doc = serde_json::from_value(value).map_err(|e| PolicyError::field("document", e.to_string()))?;
        policy(kind, doc)
    }

    fn cnp(tier: &str, spec: serde_json::Value) -> serde_json::Value {
        let mut spec = spec;
        spec["tier"] = json!(tier);
        json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy", "metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn a_cluster_network_policy_maps_tier_actions_peers_and_protocols() {
        let p = read(cnp(
            "Admin",
            json!({"priority": 10, "subject": {"namespaces": {"matchLabels": {"team": "shop"}}},
                "egress": [
                    {"name": "dns", "action": "Accept", "to": [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "dns"}}}}],
                     "protocols": [{"udp": {"destinationPort": {"number": 53}}}, {"tcp": {"destinationPort": {"range": {"start": 8000, "end": 8080}}}}]},
                    {"action": "Pass", "to": [{"networks": ["10.0.0.0/8", "fd00::/8"]}]},
                    {"action": "Deny", "to": [{"namespaces": {}}], "protocols": [{"destinationNamedPort": "metrics"}]},
                ]}),
        ))
        .expect("valid");
        assert_eq!(p.id, "ClusterNetworkPolicy p");
        assert_eq!(p.tier, Tier::Admin { priority: 10 });
        assert!(p.ingress.is_none(), "no ingress rules: ingress left alone");
        let egress = p.egress.expect("egress");
        assert_eq!(egress.iter().map(|r| r.action).collect::<Vec<_>>(), [Action::Allow, Action::Pass, Action::Deny]);
        assert_eq!(egress[0].origin, "spec.egress[0] (dns)");
        assert_eq!(
            egress[0].ports,
            Some(vec![
                PortRule { protocol: Protocol::Udp, port: PortMatch::Range(53, 53) },
                PortRule { protocol: Protocol::Tcp, port: PortMatch::Range(8000, 8080) }
            ])
        );
        assert_eq!(egress[1].peers.len(), 2, "one peer per network");
        assert_eq!(egress[2].ports.as_ref().map(Vec::len), Some(3), "a named port in each protocol with ports");
        let baseline = read(cnp(
            "Baseline",
            json!({"priority": 3, "subject": {"namespaces": {}}, "ingress": [{"action": "Pass", "from": [{"namespaces": {}}]}]}),
        ))
        .expect("valid");
        assert_eq!(baseline.tier, Tier::Baseline { priority: 3 });
    }

    #[test]
    fn admin_and_baseline_admin_network_policies_map_onto_their_tiers() {
        let anp = json!({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy", "metadata": {"name": "a"},
            "spec": {"priority": 5, "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "db"}}}},
                "ingress": [{"action": "Allow", "from": [{"namespaces": {"matchLabels": {"team": "ops"}}}],
                    "ports": [{"portNumber": {"protocol": "TCP", "port": 5432}}, {"portRange": {"start": 9000, "end": 9100}}, {"namedPort": "metrics"}]}]}});
        let p = read(anp).expect("valid");
        assert_eq!(p.tier, Tier::Admin { priority: 5 });
        let ports = p.ingress.expect("ingress")[0].ports.clone().expect("ports");
        assert_eq!(
            ports[..2],
            [
                PortRule { protocol: Protocol::Tcp, port: PortMatch::Range(5432, 5432) },
                PortRule { protocol: Protocol::Tcp, port: PortMatch::Range(9000, 9100) },
            ]
        );
        let banp = json!({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "BaselineAdminNetworkPolicy", "metadata": {"name": "default"},
            "spec": {"subject": {"namespaces": {}}, "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}});
        assert_eq!(read(banp).expect("valid").tier, Tier::Baseline { priority: BASELINE_ADMIN_PRIORITY });
    }

    #[test]
    fn what_cannot_be_enforced_exactly_or_is_malformed_is_refused_naming_the_field() {
        let base = |spec: serde_json::Value| cnp("Admin", spec);
        let cases = [
            (
                base(json!({"priority": 1, "subject": {"namespaces": {}}, "egress": [{"action": "Deny", "to": [{"nodes": {}}]}]})),
                "spec.egress[0].to[0].nodes",
            ),
            (
                base(
                    json!({"priority": 1, "subject": {"namespaces": {}}, "egress": [{"action": "Accept", "to": [{"domainNames": ["example.com"]}]}]}),
                ),
                "spec.egress[0].to[0].domainNames",
            ),
            (base(json!({"priority": 1001, "subject": {"namespaces": {}}})), "spec.priority"),
            (
                base(json!({"priority": 1, "subject": {"namespaces": {}, "pods": {"namespaceSelector": {}, "podSelector": {}}}})),
                "spec.subject",
            ),
            (
                base(json!({"priority": 1, "subject": {"namespaces": {}}, "ingress": [{"action": "Allow", "from": [{"namespaces": {}}]}]})),
                "spec.ingress[0].action",
            ),
            (
                base(json!({"priority": 1, "subject": {"namespaces": {}}, "ingress": [{"action": "Deny", "from": []}]})),
                "spec.ingress[0].from",
            ),
            (
                base(
                    json!({"priority": 1, "subject": {"namespaces": {}}, "ingress": [{"action": "Deny", "from": [{"networks": ["10.0.0.0/8"]}]}]}),
                ),
                "spec.ingress[0].from[0].networks",
            ),
            (
                base(
                    json!({"priority": 1, "subject": {"namespaces": {}}, "egress": [{"action": "Deny", "to": [{"networks": ["10.0.0.0/33"]}]}]}),
                ),
                "spec.egress[0].to[0].networks[0]",
            ),
            (
                base(
                    json!({"priority": 1, "subject": {"namespaces": {}}, "egress": [{"action": "Deny", "to": [{"networks": ["10.0.0.0/8"]}], "protocols": [{"destinationNamedPort": "http"}]}]}),
                ),
                "spec.egress[0].to",
            ),
            (
                base(
                    json!({"priority": 1, "subject": {"namespaces": {}}, "egress": [{"action": "Deny", "to": [{"namespaces": {}}], "protocols": [{"tcp": {"destinationPort": {"range": {"start": 80, "end": 80}}}}]}]}),
                ),
                "spec.egress[0].protocols[0].tcp.destinationPort.range",
            ),
            (
                base(
                    json!({"priority": 1, "subject": {"namespaces": {}}, "egress": [{"action": "Deny", "to": [{"namespaces": {}}], "ports": [{"namedPort": "x"}]}]}),
                ),
                "spec.egress[0].ports",
            ),
            (cnp("Middle", json!({"priority": 1, "subject": {"namespaces": {}}})), "spec.tier"),
            (
                json!({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "BaselineAdminNetworkPolicy", "metadata": {"name": "other"}, "spec": {"subject": {"namespaces": {}}}}),
                "metadata.name",
            ),
            (
                json!({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "BaselineAdminNetworkPolicy", "metadata": {"name": "default"},
                    "spec": {"subject": {"namespaces": {}}, "egress": [{"action": "Pass", "to": [{"namespaces": {}}]}]}}),
                "spec.egress[0].action",
            ),
            (
                json!({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "ClusterNetworkPolicy", "metadata": {"name": "p"}, "spec": {}}),
                "apiVersion",
            ),
        ];
        for (doc, field) in cases {
            let e = read(doc.clone()).expect_err(&doc.to_string());
            assert_eq!(e.field, field, "{e} for {doc}");
        }
    }
}

//! Kubernetes objects: Namespace, Pod and NetworkPolicy (networking.k8s.io/v1), validated like
//! the API server does and translated into the intermediate form with exact semantics.
//!
//! Semantics kept exactly: policyTypes defaulting (a missing or empty list means Ingress always,
//! Egress when `egress` has rules), a missing `podSelector` meaning every pod of the namespace, a
//! missing or empty `from`/`to`/`ports` meaning "all", an empty rule list isolating with nothing
//! allowed, peers combining namespaceSelector and podSelector, ipBlock with except.
//!
//! What the API server accepts, this accepts and defaults the same way (`types.go`,
//! `defaults.go`, `validation.go` of networking/v1 and core/v1); what it refuses is refused with
//! the same field path. Pods that take part in no traffic are skipped, each with its reason:
//! no address yet, a finished phase (`Succeeded`, `Failed`: their address may already be
//! reused), or `hostNetwork` (their address is the node's; NetworkPolicy does not apply).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::error::PolicyError;
use crate::model::{
    Action, DEFAULT_SEGMENT, Endpoint, NamedPort, Namespace, NamespaceMatch, Peer, Policy, PortMatch, PortRule, Protocol, Rule,
    SEGMENT_LABEL, Subject, Tier,
};
use crate::selector::{LabelSelector, Labels};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Meta {
    pub name: String,
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: Labels,
}

#[derive(Debug, Deserialize)]
pub(crate) struct NamespaceDoc {
    pub metadata: Meta,
}

pub(crate) fn namespace(doc: NamespaceDoc) -> Result<Namespace, PolicyError> {
    validate_dns_label("metadata.name", &doc.metadata.name)?;
    LabelSelector { match_labels: doc.metadata.labels.clone(), match_expressions: vec![] }.validate("metadata.labels")?;
    Ok(Namespace::new(&doc.metadata.name, doc.metadata.labels))
}

#[derive(Debug, Deserialize)]
pub(crate) struct PodDoc {
    pub metadata: Meta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodSpec {
    #[serde(default)]
    pub containers: Vec<Container>,
    pub node_name: Option<String>,
    #[serde(default)]
    pub host_network: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Container {
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ContainerPort {
    pub name: Option<String>,
    pub container_port: i64,
    pub protocol: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodStatus {
    pub phase: Option<String>,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(default, rename = "podIPs")]
    pub pod_ips: Vec<PodIp>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PodIp {
    pub ip: String,
}

/// What became of a pod: an endpoint, or skipped with the reason (it takes part in nothing).
#[derive(Debug)]
pub(crate) enum PodOutcome {
    Endpoint(Endpoint),
    Skipped { id: String, reason: &'static str },
}

pub(crate) fn pod(doc: PodDoc) -> Result<PodOutcome, PolicyError> {
    let ns = doc.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
    validate_dns_label("metadata.namespace", &ns)?;
    validate_dns_subdomain("metadata.name", &doc.metadata.name)?;
    LabelSelector { match_labels: doc.metadata.labels.clone(), match_expressions: vec![] }.validate("metadata.labels")?;
    let mut named_ports = Vec::new();
    for (c, container) in doc.spec.containers.iter().enumerate() {
        for (p, port) in container.ports.iter().enumerate() {
            let field = format!("spec.containers[{c}].ports[{p}]");
            let number = u16::try_from(port.container_port)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| PolicyError::field(format!("{field}.containerPort"), "must be between 1 and 65535"))?;
            let protocol = k8s_protocol(&format!("{field}.protocol"), port.protocol.as_deref())?;
            if let Some(name) = &port.name {
                validate_port_name(&format!("{field}.name"), name)?;
                named_ports.push(NamedPort { name: name.clone(), port: number, protocol });
            }
        }
    }
    let mut texts: Vec<&str> = doc.status.pod_ips.iter().map(|p| p.ip.as_str()).collect();
    if let Some(ip) = doc.status.pod_ip.as_deref().filter(|ip| !texts.contains(ip)) {
        texts.insert(0, ip);
    }
    let mut ips = Vec::new();
    for t in texts {
        ips.push(t.parse::<IpAddr>().map_err(|_| PolicyError::field("status.podIP", format!("`{t}` is not an IP address")))?);
    }
    let id = format!("{ns}/{}", doc.metadata.name);
    let skipped = if doc.spec.host_network {
        Some("hostNetwork pod: its address is the node's, and NetworkPolicy does not apply to it")
    } else if matches!(doc.status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        Some("finished pod (phase Succeeded or Failed): its address may belong to another pod now")
    } else if ips.is_empty() {
        Some("no status.podIP yet")
    } else {
        None
    };
    if let Some(reason) = skipped {
        return Ok(PodOutcome::Skipped { id, reason });
    }
    let segment = doc.metadata.labels.get(SEGMENT_LABEL).cloned().unwrap_or_else(|| DEFAULT_SEGMENT.to_string());
    Ok(PodOutcome::Endpoint(Endpoint {
        id,
        namespace: ns,
        name: doc.metadata.name,
        labels: doc.metadata.labels,
        segment,
        ips,
        named_ports,
        host: doc.spec.node_name,
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct NetworkPolicyDoc {
    pub metadata: Meta,
    pub spec: NetworkPolicySpec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NetworkPolicySpec {
    pub pod_selector: Option<LabelSelector>,
    pub policy_types: Option<Vec<String>>,
    pub ingress: Option<Vec<IngressRule>>,
    pub egress: Option<Vec<EgressRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct IngressRule {
    pub from: Option<Vec<PeerDoc>>,
    pub ports: Option<Vec<PortDoc>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct EgressRule {
    pub to: Option<Vec<PeerDoc>>,
    pub ports: Option<Vec<PortDoc>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PeerDoc {
    pub pod_selector: Option<LabelSelector>,
    pub namespace_selector: Option<LabelSelector>,
    pub ip_block: Option<IpBlockDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IpBlockDoc {
    pub cidr: String,
    #[serde(default)]
    pub except: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(schema_with = "crate::schema::int_or_string"))]
pub(crate) enum IntOrString {
    Int(i64),
    String(String),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PortDoc {
    pub protocol: Option<String>,
    pub port: Option<IntOrString>,
    pub end_port: Option<i64>,
}

pub(crate) fn network_policy(doc: NetworkPolicyDoc) -> Result<Policy, PolicyError> {
    let ns = doc.metadata.namespace.clone().unwrap_or_else(|| "default".to_string());
    validate_dns_label("metadata.namespace", &ns)?;
    validate_dns_subdomain("metadata.name", &doc.metadata.name)?;
    let spec = doc.spec;
    // Optional since networking/v1's podSelector became `omitempty`: missing is `{}`, every pod.
    let pod_selector = spec.pod_selector.unwrap_or_default();
    pod_selector.validate("spec.podSelector")?;
    // defaults.go: a missing or empty list becomes Ingress, plus Egress when there are egress rules.
    let (affects_ingress, affects_egress) = match spec.policy_types.as_deref() {
        None | Some([]) => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
        Some(types) => {
            if types.len() > 2 {
                return Err(PolicyError::field("spec.policyTypes", "may not specify more than two policyTypes"));
            }
            for (i, t) in types.iter().enumerate() {
                if t != "Ingress" && t != "Egress" {
                    return Err(PolicyError::field(format!("spec.policyTypes[{i}]"), format!("`{t}` is not one of Ingress, Egress")));
                }
            }
            (types.iter().any(|t| t == "Ingress"), types.iter().any(|t| t == "Egress"))
        }
    };
    let mut ingress = Vec::new();
    for (i, r) in spec.ingress.iter().flatten().enumerate() {
        let field = format!("spec.ingress[{i}]");
        ingress.push(rule(&field, &ns, r.from.as_deref(), "from", r.ports.as_deref())?);
    }
    let mut egress = Vec::new();
    for (i, r) in spec.egress.iter().flatten().enumerate() {
        let field = format!("spec.egress[{i}]");
        egress.push(rule(&field, &ns, r.to.as_deref(), "to", r.ports.as_deref())?);
    }
    Ok(Policy {
        id: format!("NetworkPolicy {ns}/{}", doc.metadata.name),
        tier: Tier::Namespace,
        subject: Subject { namespaces: NamespaceMatch::Exactly(ns), pods: pod_selector, segment: None },
        // Rules of a type the policy does not affect have no effect, exactly as in Kubernetes.
        ingress: affects_ingress.then_some(ingress),
        egress: affects_egress.then_some(egress),
    })
}

fn rule(field: &str, ns: &str, peers: Option<&[PeerDoc]>, peers_name: &str, ports: Option<&[PortDoc]>) -> Result<Rule, PolicyError> {
    let peers = match peers {
        None | Some([]) => vec![Peer::Any],
        Some(list) => list.iter().enumerate().map(|(j, p)| peer(&format!("{field}.{peers_name}[{j}]"), ns, p)).collect::<Result<_, _>>()?,
    };
    let ports = match ports {
        None | Some([]) => None,
        Some(list) => Some(list.iter().enumerate().map(|(j, p)| port(&format!("{field}.ports[{j}]"), p)).collect::<Result<_, _>>()?),
    };
    Ok(Rule { action: Action::Allow, peers, ports, origin: field.to_string() })
}

fn peer(field: &str, ns: &str, p: &PeerDoc) -> Result<Peer, PolicyError> {
    match (&p.pod_selector, &p.namespace_selector, &p.ip_block) {
        (None, None, None) => Err(PolicyError::field(field, "must specify a peer: podSelector, namespaceSelector or ipBlock")),
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => Err(PolicyError::field(field, "may not specify both ipBlock and another peer")),
        (None, None, Some(block)) => ip_block(&format!("{field}.ipBlock"), block),
        (pods, namespaces, None) => {
            if let Some(s) = pods {
                s.validate(&format!("{field}.podSelector"))?;
            }
            if let Some(s) = namespaces {
                s.validate(&format!("{field}.namespaceSelector"))?;
            }
            Ok(Peer::Endpoints {
                namespaces: match namespaces {
                    Some(sel) => NamespaceMatch::Selector(sel.clone()),
                    None => NamespaceMatch::Exactly(ns.to_string()),
                },
                pods: pods.clone().unwrap_or_default(),
            })
        }
    }
}

/// Kubernetes accepts `192.168.1.1/24` and means `192.168.1.0/24`; so does Tessera.
pub(crate) fn parse_cidr(field: &str, text: &str) -> Result<IpNet, PolicyError> {
    text.trim().parse::<IpNet>().map(|n| n.trunc()).map_err(|_| PolicyError::field(field, format!("`{text}` is not a CIDR")))
}

pub(crate) fn ip_block(field: &str, block: &IpBlockDoc) -> Result<Peer, PolicyError> {
    let cidr = parse_cidr(&format!("{field}.cidr"), &block.cidr)?;
    let mut except = Vec::new();
    for (k, e) in block.except.iter().enumerate() {
        let efield = format!("{field}.except[{k}]");
        let net = parse_cidr(&efield, e)?;
        if !cidr.contains(&net) || net == cidr {
            return Err(PolicyError::field(efield, format!("must be a strict subset of `cidr` ({cidr})")));
        }
        except.push(net);
    }
    Ok(Peer::Cidr { cidr, except })
}

fn k8s_protocol(field: &str, text: Option<&str>) -> Result<Protocol, PolicyError> {
    match text.unwrap_or("TCP") {
        "TCP" => Ok(Protocol::Tcp),
        "UDP" => Ok(Protocol::Udp),
        "SCTP" => Ok(Protocol::Sctp),
        other => Err(PolicyError::field(field, format!("`{other}` is not one of TCP, UDP, SCTP"))),
    }
}

fn port(field: &str, p: &PortDoc) -> Result<PortRule, PolicyError> {
    let protocol = k8s_protocol(&format!("{field}.protocol"), p.protocol.as_deref())?;
    let port = match (&p.port, p.end_port) {
        (None, None) => PortMatch::All,
        (None, Some(_)) => return Err(PolicyError::field(format!("{field}.endPort"), "may not be specified when `port` is not specified")),
        (Some(IntOrString::String(name)), end) => {
            if end.is_some() {
                return Err(PolicyError::field(format!("{field}.endPort"), "may not be specified when `port` is non-numeric"));
            }
            validate_port_name(&format!("{field}.port"), name)?;
            PortMatch::Named(name.clone())
        }
        (Some(IntOrString::Int(n)), end) => {
            let start = port_number(&format!("{field}.port"), *n)?;
            let end = match end {
                None => start,
                Some(e) => {
                    let e = port_number(&format!("{field}.endPort"), e)?;
                    if e < start {
                        return Err(PolicyError::field(format!("{field}.endPort"), format!("must be >= port ({start})")));
                    }
                    e
                }
            };
            PortMatch::Range(start, end)
        }
    };
    Ok(PortRule { protocol, port })
}

fn port_number(field: &str, n: i64) -> Result<u16, PolicyError> {
    u16::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| PolicyError::field(field, format!("must be between 1 and 65535, not {n}")))
}

/// An IANA service name, as Kubernetes requires of named ports.
pub(crate) fn validate_port_name(field: &str, name: &str) -> Result<(), PolicyError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(PolicyError::field(field, format!("`{name}` is not a valid port name (1-15 lowercase letters, digits and '-', with a letter)")))
    }
}

/// A DNS-1123 subdomain, as Kubernetes requires of Pod and NetworkPolicy names.
pub(crate) fn validate_dns_subdomain(field: &str, name: &str) -> Result<(), PolicyError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(PolicyError::field(
            field,
            format!("`{name}` is not a valid name (lowercase letters, digits, '-' and '.', at most 253, alphanumeric at both ends)"),
        ))
    }
}

pub(crate) fn validate_dns_label(field: &str, name: &str) -> Result<(), PolicyError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(PolicyError::field(field, format!("`{name}` is not a valid name (lowercase letters, digits and '-', at most 63)")))
    }
}

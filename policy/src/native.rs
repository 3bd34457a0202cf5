//! Native Tessera policies (`tessera.io/v1`):
//!
//! - `TesseraPolicy`: tenant-scoped allow-lists like NetworkPolicy, but explicit: a policy
//!   affects ingress (egress) exactly when it has an `ingress` (`egress`) key; peers by tenant,
//!   segment, selector, CIDR with except, host, or any; protocols tcp, udp, sctp, icmp, icmpv6
//!   (type and code) and any.
//! - `TesseraClusterPolicy`: cluster-scoped, in the `admin` tier (before namespace policies) or the
//!   `baseline` tier (after), ordered by `priority`, with actions allow, deny and pass (which
//!   leaves the tier: from admin to the namespace policies, from baseline to the default, allow).

use serde::Deserialize;

use crate::error::PolicyError;
use crate::k8s::{IntOrString, IpBlockDoc, Meta, ip_block, validate_dns_label, validate_port_name};
use crate::model::{Action, NamespaceMatch, Peer, Policy, PortMatch, PortRule, Protocol, Rule, Subject, Tier};
use crate::selector::LabelSelector;

#[derive(Debug, Deserialize)]
pub(crate) struct TenantPolicyDoc {
    pub metadata: Meta,
    pub spec: TenantPolicySpec,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TenantPolicySpec {
    #[serde(default)]
    pub pod_selector: LabelSelector,
    pub segment: Option<String>,
    pub ingress: Option<Vec<NativeRule>>,
    pub egress: Option<Vec<NativeRule>>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NativeRule {
    /// Cluster policies only.
    pub action: Option<String>,
    pub from: Option<Vec<NativePeer>>,
    pub to: Option<Vec<NativePeer>>,
    pub ports: Option<Vec<NativePort>>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NativePeer {
    pub tenant: Option<String>,
    pub segment: Option<SegmentRef>,
    pub namespace_selector: Option<LabelSelector>,
    pub pod_selector: Option<LabelSelector>,
    pub cidr: Option<String>,
    #[serde(default)]
    pub except: Vec<String>,
    pub host: Option<String>,
    pub any: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(schema_with = "crate::schema::string_or_object"))]
pub(crate) enum SegmentRef {
    Name(String),
    Full { tenant: String, name: String },
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NativePort {
    pub protocol: String,
    pub port: Option<IntOrString>,
    pub end_port: Option<i64>,
    #[serde(rename = "type")]
    pub icmp_type: Option<i64>,
    pub code: Option<i64>,
}

pub(crate) fn tenant_policy(doc: TenantPolicyDoc) -> Result<Policy, PolicyError> {
    let tenant =
        doc.metadata.namespace.clone().ok_or_else(|| PolicyError::field("metadata.namespace", "a TesseraPolicy belongs to a tenant"))?;
    validate_dns_label("metadata.namespace", &tenant)?;
    let spec = doc.spec;
    spec.pod_selector.validate("spec.podSelector")?;
    if let Some(s) = &spec.segment {
        validate_dns_label("spec.segment", s)?;
    }
    let subject = Subject { namespaces: NamespaceMatch::Exactly(tenant.clone()), pods: spec.pod_selector, segment: spec.segment };
    Ok(Policy {
        id: format!("TesseraPolicy {tenant}/{}", doc.metadata.name),
        tier: Tier::Namespace,
        subject,
        ingress: rules("spec.ingress", &tenant, spec.ingress.as_deref(), "from")?,
        egress: rules("spec.egress", &tenant, spec.egress.as_deref(), "to")?,
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct ClusterPolicyDoc {
    pub metadata: Meta,
    pub spec: ClusterPolicySpec,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ClusterPolicySpec {
    pub tier: String,
    pub priority: i64,
    #[serde(default)]
    pub subject: ClusterSubject,
    pub ingress: Option<Vec<NativeRule>>,
    pub egress: Option<Vec<NativeRule>>,
}

#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ClusterSubject {
    #[serde(default)]
    pub namespace_selector: LabelSelector,
    #[serde(default)]
    pub pod_selector: LabelSelector,
}

pub(crate) fn cluster_policy(doc: ClusterPolicyDoc) -> Result<Policy, PolicyError> {
    let spec = doc.spec;
    let priority = u32::try_from(spec.priority)
        .ok()
        .filter(|p| *p <= 1000)
        .ok_or_else(|| PolicyError::field("spec.priority", "must be between 0 and 1000"))?;
    let tier = match spec.tier.as_str() {
        "admin" => Tier::Admin { priority },
        "baseline" => Tier::Baseline { priority },
        other => return Err(PolicyError::field("spec.tier", format!("`{other}` is not one of admin, baseline"))),
    };
    spec.subject.namespace_selector.validate("spec.subject.namespaceSelector")?;
    spec.subject.pod_selector.validate("spec.subject.podSelector")?;
    let subject =
        Subject { namespaces: NamespaceMatch::Selector(spec.subject.namespace_selector), pods: spec.subject.pod_selector, segment: None };
    // Cluster policies have no "own tenant": peers must name their tenants or select namespaces.
    Ok(Policy {
        id: format!("TesseraClusterPolicy {}", doc.metadata.name),
        tier,
        subject,
        ingress: cluster_rules("spec.ingress", spec.ingress.as_deref(), "from")?,
        egress: cluster_rules("spec.egress", spec.egress.as_deref(), "to")?,
    })
}

fn cluster_rules(field: &str, list: Option<&[NativeRule]>, peers_key: &str) -> Result<Option<Vec<Rule>>, PolicyError> {
    let Some(list) = list else { return Ok(None) };
    let mut out = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let rfield = format!("{field}[{i}]");
        let action = match r.action.as_deref() {
            Some("allow") => Action::Allow,
            Some("deny") => Action::Deny,
            Some("pass") => Action::Pass,
            Some(other) => {
                return Err(PolicyError::field(format!("{rfield}.action"), format!("`{other}` is not one of allow, deny, pass")));
            }
            None => return Err(PolicyError::field(format!("{rfield}.action"), "required: allow, deny or pass")),
        };
        out.push(native_rule(&rfield, None, r, peers_key, action)?);
    }
    Ok(Some(out))
}

fn rules(field: &str, tenant: &str, list: Option<&[NativeRule]>, peers_key: &str) -> Result<Option<Vec<Rule>>, PolicyError> {
    let Some(list) = list else { return Ok(None) };
    let mut out = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let rfield = format!("{field}[{i}]");
        if r.action.is_some() {
            return Err(PolicyError::field(format!("{rfield}.action"), "tenant policies only allow; use a TesseraClusterPolicy to deny"));
        }
        out.push(native_rule(&rfield, Some(tenant), r, peers_key, Action::Allow)?);
    }
    Ok(Some(out))
}

fn native_rule(field: &str, tenant: Option<&str>, r: &NativeRule, peers_key: &str, action: Action) -> Result<Rule, PolicyError> {
    let (peers, wrong) = if peers_key == "from" { (&r.from, &r.to) } else { (&r.to, &r.from) };
    if wrong.is_some() {
        let other = if peers_key == "from" { "to" } else { "from" };
        return Err(PolicyError::field(format!("{field}.{other}"), format!("this direction's peers go in `{peers_key}`")));
    }
    let peers = match peers.as_deref() {
        None | Some([]) => vec![Peer::Any],
        Some(list) => {
            list.iter().enumerate().map(|(j, p)| native_peer(&format!("{field}.{peers_key}[{j}]"), tenant, p)).collect::<Result<_, _>>()?
        }
    };
    let ports = match r.ports.as_deref() {
        None | Some([]) => None,
        Some(list) => {
            let mut out = Vec::new();
            for (j, p) in list.iter().enumerate() {
                match native_port(&format!("{field}.ports[{j}]"), p)? {
                    // `any` among other entries makes them moot: the rule covers every protocol.
                    None if list.len() > 1 => {
                        return Err(PolicyError::field(
                            format!("{field}.ports[{j}].protocol"),
                            "`any` cannot be combined with other ports",
                        ));
                    }
                    None => return Ok(Rule { action, peers, ports: None, origin: field.to_string() }),
                    Some(rule) => out.push(rule),
                }
            }
            Some(out)
        }
    };
    Ok(Rule { action, peers, ports, origin: field.to_string() })
}

fn native_peer(field: &str, own_tenant: Option<&str>, p: &NativePeer) -> Result<Peer, PolicyError> {
    let kinds = [
        p.tenant.is_some() && p.segment.is_none(),
        p.segment.is_some(),
        p.namespace_selector.is_some() || p.pod_selector.is_some(),
        p.cidr.is_some(),
        p.host.is_some(),
        p.any.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        return Err(PolicyError::field(field, "name exactly one peer: tenant, segment, namespaceSelector/podSelector, cidr, host or any"));
    }
    if !p.except.is_empty() && p.cidr.is_none() {
        return Err(PolicyError::field(format!("{field}.except"), "goes with `cidr`"));
    }
    if let Some(t) = &p.tenant {
        validate_dns_label(&format!("{field}.tenant"), t)?;
    }
    if let Some(seg) = &p.segment {
        let (tenant, name) = match seg {
            SegmentRef::Name(name) => match (&p.tenant, own_tenant) {
                (Some(t), _) => (t.clone(), name.clone()),
                (None, Some(t)) => (t.to_string(), name.clone()),
                (None, None) => {
                    return Err(PolicyError::field(
                        format!("{field}.segment"),
                        "in a cluster policy, name the tenant: {tenant: T, name: S}",
                    ));
                }
            },
            SegmentRef::Full { tenant, name } => (tenant.clone(), name.clone()),
        };
        validate_dns_label(&format!("{field}.segment"), &name)?;
        return Ok(Peer::Segment { tenant, segment: name });
    }
    if let Some(t) = &p.tenant {
        return Ok(Peer::Endpoints { namespaces: NamespaceMatch::Exactly(t.clone()), pods: LabelSelector::default() });
    }
    if p.namespace_selector.is_some() || p.pod_selector.is_some() {
        if let Some(s) = &p.pod_selector {
            s.validate(&format!("{field}.podSelector"))?;
        }
        let namespaces = match (&p.namespace_selector, own_tenant) {
            (Some(s), _) => {
                s.validate(&format!("{field}.namespaceSelector"))?;
                NamespaceMatch::Selector(s.clone())
            }
            (None, Some(t)) => NamespaceMatch::Exactly(t.to_string()),
            (None, None) => NamespaceMatch::Selector(LabelSelector::default()),
        };
        return Ok(Peer::Endpoints { namespaces, pods: p.pod_selector.clone().unwrap_or_default() });
    }
    if let Some(cidr) = &p.cidr {
        return ip_block(field, &IpBlockDoc { cidr: cidr.clone(), except: p.except.clone() });
    }
    if let Some(h) = &p.host {
        return Ok(Peer::Host(h.clone()));
    }
    match p.any {
        Some(true) => Ok(Peer::Any),
        _ => Err(PolicyError::field(format!("{field}.any"), "only `any: true` means anything")),
    }
}

/// `None` for protocol `any`.
fn native_port(field: &str, p: &NativePort) -> Result<Option<PortRule>, PolicyError> {
    if p.protocol.eq_ignore_ascii_case("any") {
        if p.port.is_some() || p.icmp_type.is_some() {
            return Err(PolicyError::field(format!("{field}.protocol"), "`any` takes no port or type"));
        }
        return Ok(None);
    }
    let protocol = Protocol::parse(&p.protocol).ok_or_else(|| {
        PolicyError::field(format!("{field}.protocol"), format!("`{}` is not one of tcp, udp, sctp, icmp, icmpv6, any", p.protocol))
    })?;
    if protocol.has_ports() {
        if p.icmp_type.is_some() || p.code.is_some() {
            return Err(PolicyError::field(format!("{field}.type"), format!("{protocol} has ports, not ICMP types")));
        }
        let port = match (&p.port, p.end_port) {
            (None, None) => PortMatch::All,
            (None, Some(_)) => {
                return Err(PolicyError::field(format!("{field}.endPort"), "may not be specified when `port` is not specified"));
            }
            (Some(IntOrString::String(name)), None) => {
                validate_port_name(&format!("{field}.port"), name)?;
                PortMatch::Named(name.clone())
            }
            (Some(IntOrString::String(_)), Some(_)) => {
                return Err(PolicyError::field(format!("{field}.endPort"), "may not be specified when `port` is non-numeric"));
            }
            (Some(IntOrString::Int(n)), end) => {
                let start = number(&format!("{field}.port"), *n, 1, 65535)?;
                let end = end.map(|e| number(&format!("{field}.endPort"), e, 1, 65535)).transpose()?.unwrap_or(start);
                if end < start {
                    return Err(PolicyError::field(format!("{field}.endPort"), format!("must be >= port ({start})")));
                }
                PortMatch::Range(start as u16, end as u16)
            }
        };
        return Ok(Some(PortRule { protocol, port }));
    }
    if p.port.is_some() || p.end_port.is_some() {
        return Err(PolicyError::field(format!("{field}.port"), format!("{protocol} has no ports; use `type` and `code`")));
    }
    let port = match (p.icmp_type, p.code) {
        (None, None) => PortMatch::All,
        (None, Some(_)) => return Err(PolicyError::field(format!("{field}.code"), "needs a `type`")),
        (Some(t), code) => PortMatch::Icmp {
            icmp_type: number(&format!("{field}.type"), t, 0, 255)? as u8,
            code: code.map(|c| number(&format!("{field}.code"), c, 0, 255)).transpose()?.map(|c| c as u8),
        },
    };
    Ok(Some(PortRule { protocol, port }))
}

fn number(field: &str, n: i64, min: i64, max: i64) -> Result<u32, PolicyError> {
    if (min..=max).contains(&n) {
        Ok(n as u32)
    } else {
        Err(PolicyError::field(field, format!("must be between {min} and {max}, not {n}")))
    }
}

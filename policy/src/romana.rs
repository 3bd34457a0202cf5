//! Romana v2 policies, accepted unchanged: a policy object (`name`, `direction`, `applied_to`,
//! `ingress` with `peers` and `rules`) or `{"securitypolicies": [...]}`.
//!
//! `applied_to` entries `{tenant, segment}` become tenant policies, one per entry. Peers: `{"peer":
//! "any"}`, `{tenant[, segment]}`, `{cidr}`. Rules: `protocol` (tcp, udp, icmp, any), `ports`,
//! `port_ranges`, `icmp_type`, `icmp_code`. Romana constructs whose meaning Tessera cannot
//! enforce exactly (`peer: local`, `peer: host`, `dest`) are refused.

use serde::Deserialize;

use crate::error::PolicyError;
use crate::k8s::{IpBlockDoc, ip_block};
use crate::model::{Action, NamespaceMatch, Peer, Policy, PortMatch, PortRule, Protocol, Rule, Subject, Tier};
use crate::selector::LabelSelector;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyList {
    securitypolicies: Vec<RomanaPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RomanaPolicy {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<serde_json::Value>,
    direction: Option<String>,
    applied_to: Vec<Target>,
    #[serde(default)]
    ingress: Vec<RuleSet>,
    #[serde(default)]
    egress: Vec<RuleSet>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    tenant: Option<String>,
    segment: Option<String>,
    peer: Option<String>,
    dest: Option<String>,
    cidr: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSet {
    peers: Vec<Target>,
    rules: Vec<RomanaRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RomanaRule {
    protocol: String,
    #[serde(default)]
    ports: Vec<i64>,
    #[serde(default)]
    port_ranges: Vec<[i64; 2]>,
    icmp_type: Option<i64>,
    icmp_code: Option<i64>,
    #[serde(default)]
    #[allow(dead_code)]
    is_stateful: Option<bool>,
}

pub(crate) fn policies(value: serde_json::Value) -> Result<Vec<Policy>, PolicyError> {
    let list: Vec<RomanaPolicy> =
        if value.get("securitypolicies").is_some() { decode::<PolicyList>(value)?.securitypolicies } else { vec![decode(value)?] };
    let mut out = Vec::new();
    for (i, p) in list.into_iter().enumerate() {
        out.extend(policy(&format!("securitypolicies[{i}]"), p)?);
    }
    Ok(out)
}

fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, PolicyError> {
    serde_path_to_error::deserialize(value).map_err(|e| PolicyError::field(e.path().to_string(), e.into_inner().to_string()))
}

fn policy(field: &str, p: RomanaPolicy) -> Result<Vec<Policy>, PolicyError> {
    let direction = p.direction.as_deref().unwrap_or("ingress");
    let rule_sets = match direction {
        "ingress" if p.egress.is_empty() => &p.ingress,
        "egress" if p.ingress.is_empty() => &p.egress,
        "ingress" | "egress" => {
            return Err(PolicyError::field(format!("{field}.direction"), "rules for the other direction are present; split the policy"));
        }
        other => return Err(PolicyError::field(format!("{field}.direction"), format!("`{other}` is not ingress or egress"))),
    };
    let mut rules = Vec::new();
    for (i, set) in rule_sets.iter().enumerate() {
        let sfield = format!("{field}.{direction}[{i}]");
        let peers = set.peers.iter().enumerate().map(|(j, t)| peer(&format!("{sfield}.peers[{j}]"), t)).collect::<Result<Vec<_>, _>>()?;
        let mut ports = Vec::new();
        let mut all = false;
        for (j, r) in set.rules.iter().enumerate() {
            let rfield = format!("{sfield}.rules[{j}]");
            match port_rules(&rfield, r)? {
                None => all = true,
                Some(list) => ports.extend(list),
            }
        }
        rules.push(Rule { action: Action::Allow, peers, ports: if all { None } else { Some(ports) }, origin: sfield });
    }
    let mut out = Vec::new();
    for (k, t) in p.applied_to.iter().enumerate() {
        let tfield = format!("{field}.applied_to[{k}]");
        let (Some(tenant), None, None, None) = (&t.tenant, &t.peer, &t.dest, &t.cidr) else {
            return Err(PolicyError::field(tfield, "Tessera applies Romana policies to {tenant[, segment]} targets only"));
        };
        let suffix = t.segment.as_ref().map(|s| format!("/{s}")).unwrap_or_default();
        let rules = Some(rules.clone());
        out.push(Policy {
            id: format!("RomanaPolicy {}@{tenant}{suffix}", p.name),
            tier: Tier::Namespace,
            subject: Subject {
                namespaces: NamespaceMatch::Exactly(tenant.clone()),
                pods: LabelSelector::default(),
                segment: t.segment.clone(),
            },
            ingress: if direction == "ingress" { rules.clone() } else { None },
            egress: if direction == "egress" { rules } else { None },
        });
    }
    Ok(out)
}

fn peer(field: &str, t: &Target) -> Result<Peer, PolicyError> {
    match (&t.peer, &t.tenant, &t.segment, &t.cidr, &t.dest) {
        (Some(p), None, None, None, None) if p == "any" => Ok(Peer::Any),
        (Some(p), ..) => Err(PolicyError::unenforceable(
            format!("{field}.peer"),
            format!("`{p}` cannot be enforced exactly by Tessera; use tenant/segment or cidr peers"),
        )),
        (None, Some(tenant), Some(segment), None, None) => Ok(Peer::Segment { tenant: tenant.clone(), segment: segment.clone() }),
        (None, Some(tenant), None, None, None) => {
            Ok(Peer::Endpoints { namespaces: NamespaceMatch::Exactly(tenant.clone()), pods: LabelSelector::default() })
        }
        (None, None, None, Some(cidr), None) => ip_block(field, &IpBlockDoc { cidr: cidr.clone(), except: vec![] }),
        _ => Err(PolicyError::field(field, "a peer is {peer: any}, {tenant[, segment]} or {cidr}")),
    }
}

/// `None` for protocol `any`.
fn port_rules(field: &str, r: &RomanaRule) -> Result<Option<Vec<PortRule>>, PolicyError> {
    let protocol = match r.protocol.to_ascii_lowercase().as_str() {
        "any" => return Ok(None),
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "icmp" => Protocol::Icmp,
        other => return Err(PolicyError::field(format!("{field}.protocol"), format!("`{other}` is not one of tcp, udp, icmp, any"))),
    };
    let port = |f: String, n: i64| {
        u16::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| PolicyError::field(f, format!("must be between 1 and 65535, not {n}")))
    };
    if protocol == Protocol::Icmp {
        if !r.ports.is_empty() || !r.port_ranges.is_empty() {
            return Err(PolicyError::field(format!("{field}.ports"), "icmp has no ports"));
        }
        let byte = |f: String, n: i64| u8::try_from(n).map_err(|_| PolicyError::field(f, format!("must be between 0 and 255, not {n}")));
        let m = match (r.icmp_type, r.icmp_code) {
            (None, None) => PortMatch::All,
            (None, Some(_)) => return Err(PolicyError::field(format!("{field}.icmp_code"), "needs icmp_type")),
            (Some(t), c) => PortMatch::Icmp {
                icmp_type: byte(format!("{field}.icmp_type"), t)?,
                code: c.map(|c| byte(format!("{field}.icmp_code"), c)).transpose()?,
            },
        };
        return Ok(Some(vec![PortRule { protocol, port: m }]));
    }
    if r.icmp_type.is_some() || r.icmp_code.is_some() {
        return Err(PolicyError::field(format!("{field}.icmp_type"), format!("{protocol} has no ICMP type")));
    }
    let mut out = Vec::new();
    for (k, p) in r.ports.iter().enumerate() {
        let p = port(format!("{field}.ports[{k}]"), *p)?;
        out.push(PortRule { protocol, port: PortMatch::Range(p, p) });
    }
    for (k, [a, b]) in r.port_ranges.iter().enumerate() {
        let (a, b) = (port(format!("{field}.port_ranges[{k}][0]"), *a)?, port(format!("{field}.port_ranges[{k}][1]"), *b)?);
        if b < a {
            return Err(PolicyError::field(format!("{field}.port_ranges[{k}]"), format!("the range ends ({b}) before it starts ({a})")));
        }
        out.push(PortRule { protocol, port: PortMatch::Range(a, b) });
    }
    if out.is_empty() {
        out.push(PortRule { protocol, port: PortMatch::All });
    }
    Ok(Some(out))
}

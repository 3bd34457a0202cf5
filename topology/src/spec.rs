//! The topology as people write it: networks and trees of prefix groups, before carving.
//!
//! These are the validated, format-independent types; `format` reads them from Tessera's own
//! YAML/JSON and from Romana v2 files, and `layout` carves CIDRs out of them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Labels on hosts, and the `assignment` a group requires of them.
pub type Labels = BTreeMap<String, String>;

/// Default block size for IPv4 networks (16 addresses).
pub const DEFAULT_BLOCK_PREFIX_V4: u8 = 28;
/// Default block size for IPv6 networks (16 addresses).
pub const DEFAULT_BLOCK_PREFIX_V6: u8 = 124;

/// Everything a topology document says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TopologySpec {
    pub networks: Vec<NetworkSpec>,
    pub topologies: Vec<TreeSpec>,
}

/// An address space that blocks are drawn from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSpec {
    pub name: String,
    pub cidr: IpNet,
    /// Prefix length of each block carved from this network.
    pub block_prefix: u8,
    /// Tenants allowed to draw from this network; `None` means every tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants: Option<Vec<String>>,
    /// Ranges never handed out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blackouts: Vec<IpNet>,
}

/// One tree of prefix groups, carved identically out of each of its networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TreeSpec {
    pub networks: Vec<String>,
    /// Minimum number of slots the top-level groups are carved into (room to grow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    pub groups: Vec<GroupSpec>,
}

/// A prefix group: a zone, a rack, or any level in between.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub assignment: Labels,
    /// Explicit CIDRs, at most one per network; other networks carve this group evenly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<IpNet>,
    /// Minimum number of slots the children are carved into (room to grow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupSpec>,
    /// Hosts pinned to this (leaf) group. A leaf with none takes hosts dynamically.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostSpec>,
    /// How this group's hosts speak to the fabric; unset fields inherit the parent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<crate::fabric::BgpSpec>,
}

/// A host as a topology file or the API describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostSpec {
    pub name: String,
    pub ips: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
}

/// A problem with a topology document, anchored at the field it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError { field: field.into(), message: message.into() }
    }
}

/// Check a host's underlay addresses: each usable as a route gateway (not unspecified,
/// broadcast, multicast, loopback or link-local IPv4) and none listed twice. `field` names the list.
pub fn validate_host_ips(field: &str, ips: &[IpAddr]) -> Result<(), SpecError> {
    if ips.is_empty() {
        return Err(SpecError::new(field, "a host needs at least one underlay IP"));
    }
    for (i, ip) in ips.iter().enumerate() {
        let what = match ip {
            _ if ip.is_unspecified() => Some("the unspecified address"),
            _ if ip.is_loopback() => Some("a loopback address"),
            _ if ip.is_multicast() => Some("a multicast address"),
            IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
            IpAddr::V4(v4) if v4.is_link_local() => Some("a link-local address (169.254.0.0/16 is the pods' gateway range)"),
            _ => None,
        };
        if let Some(what) = what {
            return Err(SpecError::new(
                format!("{field}[{i}]"),
                format!("{ip} is {what}; a host's underlay IP must be a unicast address it can be reached at"),
            ));
        }
        if ips[..i].contains(ip) {
            return Err(SpecError::new(format!("{field}[{i}]"), format!("{ip} is listed twice")));
        }
    }
    Ok(())
}

/// Check a DNS-label-like name used in group paths and host names.
pub fn validate_name(field: &str, name: &str) -> Result<(), SpecError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(SpecError::new(
            field,
            format!("`{name}` is not a valid name (letters, digits, '-', '_', '.', starting with a letter or digit, at most 253)"),
        ))
    }
}

/// Check label keys and values the way Kubernetes does: `[prefix/]name`, name and value at most
/// 63 characters of alphanumerics, '-', '_', '.', starting and ending alphanumeric.
pub fn validate_labels(field: &str, labels: &Labels) -> Result<(), SpecError> {
    fn segment_ok(s: &str, allow_empty: bool) -> bool {
        (allow_empty && s.is_empty())
            || (s.len() <= 63
                && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && s.starts_with(|c: char| c.is_ascii_alphanumeric())
                && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
    }
    for (key, value) in labels {
        let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
        let prefix_ok = prefix.is_empty() || (prefix.len() <= 253 && prefix.split('.').all(|p| segment_ok(p, false)));
        if !prefix_ok || !segment_ok(name, false) || key.matches('/').count() > 1 {
            return Err(SpecError::new(
                format!("{field}.{key}"),
                format!("`{key}` is not a valid label key ([prefix/]name, name at most 63 characters)"),
            ));
        }
        if !segment_ok(value, true) {
            return Err(SpecError::new(
                format!("{field}.{key}"),
                format!("`{value}` is not a valid label value (at most 63 characters of letters, digits, '-', '_', '.')"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_kubernetes_syntax() {
        let ok: Labels = [("topology.kubernetes.io/zone", "us-east-1a"), ("rack", ""), ("a_b.c", "X-1")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(validate_labels("labels", &ok).is_ok());
        for (k, v) in [("", "x"), ("-bad", "x"), ("a/b/c", "x"), ("ok", "bad value"), ("ok", "-x")] {
            let labels: Labels = [(k.to_string(), v.to_string())].into_iter().collect();
            let err = validate_labels("labels", &labels).expect_err(k);
            assert_eq!(err.field, format!("labels.{k}"));
        }
    }
}

//! Reading topology documents: Tessera's own format (YAML or JSON) and Romana v2 files, unchanged.
//!
//! Both are parsed into wire structs (so type errors carry the field path), then converted into
//! [`TopologySpec`] with field-named errors. Structural checks (nesting, overlap) live in `layout`.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::cidr::{Family, parse_canonical};
use crate::spec::{
    DEFAULT_BLOCK_PREFIX_V4, DEFAULT_BLOCK_PREFIX_V6, GroupSpec, HostSpec, Labels, NetworkSpec, SpecError, TopologySpec, TreeSpec,
    validate_name,
};

/// Which dialect a document is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Decide from the document: Romana files have `topologies[].map`.
    Auto,
    Tessera,
    Romana,
}

/// Parse a topology document (YAML or JSON text).
pub fn parse_topology(text: &str, format: Format) -> Result<TopologySpec, SpecError> {
    let value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| SpecError::new("document", format!("not valid YAML or JSON: {e}")))?;
    let format = match format {
        Format::Auto if is_romana(&value) => Format::Romana,
        Format::Auto => Format::Tessera,
        other => other,
    };
    match format {
        Format::Romana => from_romana(decode(value)?),
        _ => from_tessera(decode(value)?),
    }
}

fn is_romana(value: &serde_yaml::Value) -> bool {
    value.get("topologies").and_then(|t| t.as_sequence()).is_some_and(|list| list.iter().any(|t| t.get("map").is_some()))
        || value.get("networks").and_then(|n| n.as_sequence()).is_some_and(|list| list.iter().any(|n| n.get("block_mask").is_some()))
}

fn decode<T: DeserializeOwned>(value: serde_yaml::Value) -> Result<T, SpecError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path == "?" { "document".to_string() } else { path };
        SpecError::new(field, e.into_inner().to_string())
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TesseraDoc {
    #[serde(default)]
    networks: Vec<TesseraNetwork>,
    #[serde(default)]
    topologies: Vec<TesseraTree>,
    /// Shorthand: one tree over every network.
    groups: Option<Vec<TesseraGroup>>,
    slots: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TesseraNetwork {
    name: String,
    cidr: String,
    block_prefix: Option<u8>,
    tenants: Option<Vec<String>>,
    #[serde(default)]
    blackouts: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TesseraTree {
    networks: Vec<String>,
    slots: Option<u32>,
    #[serde(default)]
    groups: Vec<TesseraGroup>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TesseraGroup {
    name: String,
    #[serde(default)]
    assignment: Labels,
    cidr: Option<OneOrMany>,
    slots: Option<u32>,
    #[serde(default)]
    groups: Vec<TesseraGroup>,
    #[serde(default)]
    hosts: Vec<TesseraHost>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TesseraHost {
    name: String,
    ip: Option<String>,
    #[serde(default)]
    ips: Vec<String>,
    #[serde(default)]
    labels: Labels,
}

fn from_tessera(doc: TesseraDoc) -> Result<TopologySpec, SpecError> {
    let mut networks = Vec::new();
    for (i, n) in doc.networks.into_iter().enumerate() {
        networks.push(network(&format!("networks[{i}]"), n.name, &n.cidr, n.block_prefix, "blockPrefix", n.tenants, &n.blackouts)?);
    }
    if doc.groups.is_some() && !doc.topologies.is_empty() {
        return Err(SpecError::new("groups", "use either top-level `groups` (one tree over all networks) or `topologies`, not both"));
    }
    let trees = match doc.groups {
        Some(groups) => vec![TesseraTree { networks: networks.iter().map(|n| n.name.clone()).collect(), slots: doc.slots, groups }],
        None => doc.topologies,
    };
    let mut topologies = Vec::new();
    let mut host_names = BTreeSet::new();
    for (i, tree) in trees.into_iter().enumerate() {
        let field = format!("topologies[{i}]");
        let groups = tree
            .groups
            .into_iter()
            .enumerate()
            .map(|(j, g)| tessera_group(&format!("{field}.groups[{j}]"), g, &mut host_names))
            .collect::<Result<Vec<_>, _>>()?;
        topologies.push(TreeSpec { networks: tree.networks, slots: tree.slots, groups });
    }
    finish(TopologySpec { networks, topologies })
}

fn tessera_group(field: &str, g: TesseraGroup, host_names: &mut BTreeSet<String>) -> Result<GroupSpec, SpecError> {
    let cidr_texts = match g.cidr {
        None => Vec::new(),
        Some(OneOrMany::One(c)) => vec![c],
        Some(OneOrMany::Many(list)) => list,
    };
    let cidrs = cidr_texts
        .iter()
        .map(|c| parse_canonical(c).map_err(|m| SpecError::new(format!("{field}.cidr"), m)))
        .collect::<Result<Vec<_>, _>>()?;
    let groups = g
        .groups
        .into_iter()
        .enumerate()
        .map(|(j, child)| tessera_group(&format!("{field}.groups[{j}]"), child, host_names))
        .collect::<Result<Vec<_>, _>>()?;
    let mut hosts = Vec::new();
    for (k, h) in g.hosts.into_iter().enumerate() {
        let hfield = format!("{field}.hosts[{k}]");
        let mut texts: Vec<String> = h.ip.into_iter().collect();
        texts.extend(h.ips);
        hosts.push(host(&hfield, h.name, &texts, h.labels, host_names)?);
    }
    group(field, g.name, g.assignment, cidrs, g.slots, groups, hosts)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RomanaDoc {
    #[serde(default)]
    networks: Vec<RomanaNetwork>,
    #[serde(default)]
    topologies: Vec<RomanaTopology>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RomanaNetwork {
    name: String,
    cidr: String,
    block_mask: Option<u8>,
    tenants: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RomanaTopology {
    networks: Vec<String>,
    #[serde(default)]
    map: Vec<RomanaGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RomanaGroup {
    name: String,
    #[serde(default)]
    assignment: Labels,
    #[serde(default)]
    groups: Vec<RomanaGroup>,
    #[serde(default)]
    hosts: Vec<RomanaHost>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RomanaHost {
    name: String,
    ip: String,
    /// Romana's agent port; Tessera agents find the controller themselves, so it is accepted and unused.
    #[allow(dead_code)]
    agent_port: Option<u16>,
}

fn from_romana(doc: RomanaDoc) -> Result<TopologySpec, SpecError> {
    let mut networks = Vec::new();
    for (i, n) in doc.networks.into_iter().enumerate() {
        networks.push(network(&format!("networks[{i}]"), n.name, &n.cidr, n.block_mask, "block_mask", n.tenants, &[])?);
    }
    let mut host_names = BTreeSet::new();
    let mut topologies = Vec::new();
    for (i, t) in doc.topologies.into_iter().enumerate() {
        let groups = t
            .map
            .into_iter()
            .enumerate()
            .map(|(j, g)| romana_group(&format!("topologies[{i}].map[{j}]"), g, &mut host_names))
            .collect::<Result<Vec<_>, _>>()?;
        topologies.push(TreeSpec { networks: t.networks, slots: None, groups });
    }
    finish(TopologySpec { networks, topologies })
}

fn romana_group(field: &str, g: RomanaGroup, host_names: &mut BTreeSet<String>) -> Result<GroupSpec, SpecError> {
    let groups = g
        .groups
        .into_iter()
        .enumerate()
        .map(|(j, child)| romana_group(&format!("{field}.groups[{j}]"), child, host_names))
        .collect::<Result<Vec<_>, _>>()?;
    let mut hosts = Vec::new();
    for (k, h) in g.hosts.into_iter().enumerate() {
        hosts.push(host(&format!("{field}.hosts[{k}]"), h.name, std::slice::from_ref(&h.ip), Labels::new(), host_names)?);
    }
    group(field, g.name, g.assignment, Vec::new(), None, groups, hosts)
}

fn network(
    field: &str,
    name: String,
    cidr: &str,
    block_prefix: Option<u8>,
    block_field: &str,
    tenants: Option<Vec<String>>,
    blackouts: &[String],
) -> Result<NetworkSpec, SpecError> {
    validate_name(&format!("{field}.name"), &name)?;
    let cidr = parse_canonical(cidr).map_err(|m| SpecError::new(format!("{field}.cidr"), m))?;
    let family = Family::of_net(&cidr);
    let block_prefix = block_prefix.unwrap_or(match family {
        Family::V4 => DEFAULT_BLOCK_PREFIX_V4,
        Family::V6 => DEFAULT_BLOCK_PREFIX_V6,
    });
    // Blocks hold at most 65536 addresses: a block is an allocation unit, not a subnet.
    let smallest = cidr.prefix_len().max(family.width() - 16);
    if block_prefix < smallest || block_prefix > family.width() {
        return Err(SpecError::new(
            format!("{field}.{block_field}"),
            format!("must be between {smallest} and {} for network {cidr}", family.width()),
        ));
    }
    if let Some(list) = &tenants {
        for (k, t) in list.iter().enumerate() {
            validate_name(&format!("{field}.tenants[{k}]"), t)?;
        }
    }
    let mut parsed = Vec::new();
    for (k, b) in blackouts.iter().enumerate() {
        let bfield = format!("{field}.blackouts[{k}]");
        let net = parse_canonical(b).map_err(|m| SpecError::new(&bfield, m))?;
        if !cidr.contains(&net) {
            return Err(SpecError::new(bfield, format!("{net} is outside the network {cidr}")));
        }
        parsed.push(net);
    }
    Ok(NetworkSpec { name, cidr, block_prefix, tenants, blackouts: parsed })
}

fn host(field: &str, name: String, ips: &[String], labels: Labels, names: &mut BTreeSet<String>) -> Result<HostSpec, SpecError> {
    validate_name(&format!("{field}.name"), &name)?;
    crate::spec::validate_labels(&format!("{field}.labels"), &labels)?;
    if !names.insert(name.clone()) {
        return Err(SpecError::new(format!("{field}.name"), format!("host `{name}` is listed twice")));
    }
    if ips.is_empty() {
        return Err(SpecError::new(format!("{field}.ip"), "a host needs at least one underlay IP"));
    }
    let ips = ips
        .iter()
        .map(|t| t.parse::<IpAddr>().map_err(|_| SpecError::new(format!("{field}.ip"), format!("`{t}` is not an IP address"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HostSpec { name, ips, labels })
}

fn group(
    field: &str,
    name: String,
    assignment: Labels,
    cidrs: Vec<ipnet::IpNet>,
    slots: Option<u32>,
    groups: Vec<GroupSpec>,
    hosts: Vec<HostSpec>,
) -> Result<GroupSpec, SpecError> {
    validate_name(&format!("{field}.name"), &name)?;
    crate::spec::validate_labels(&format!("{field}.assignment"), &assignment)?;
    if name.contains('/') {
        return Err(SpecError::new(format!("{field}.name"), "group names cannot contain '/'"));
    }
    if !groups.is_empty() && !hosts.is_empty() {
        return Err(SpecError::new(format!("{field}.hosts"), "a group has either child groups or hosts, not both"));
    }
    let mut seen = BTreeSet::new();
    for (j, g) in groups.iter().enumerate() {
        if !seen.insert(g.name.as_str()) {
            return Err(SpecError::new(format!("{field}.groups[{j}].name"), format!("`{}` is used twice under one parent", g.name)));
        }
    }
    Ok(GroupSpec { name, assignment, cidrs, slots, groups, hosts })
}

/// Document-wide checks: unique network names, trees naming known networks, each network in one tree.
fn finish(spec: TopologySpec) -> Result<TopologySpec, SpecError> {
    let mut names = BTreeSet::new();
    for (i, n) in spec.networks.iter().enumerate() {
        if !names.insert(n.name.as_str()) {
            return Err(SpecError::new(format!("networks[{i}].name"), format!("network `{}` is defined twice", n.name)));
        }
    }
    let mut used = BTreeSet::new();
    let mut top_names = BTreeSet::new();
    for (i, t) in spec.topologies.iter().enumerate() {
        if t.networks.is_empty() {
            return Err(SpecError::new(format!("topologies[{i}].networks"), "a topology must name at least one network"));
        }
        for (k, n) in t.networks.iter().enumerate() {
            let field = format!("topologies[{i}].networks[{k}]");
            if !names.contains(n.as_str()) {
                return Err(SpecError::new(field, format!("unknown network `{n}`")));
            }
            if !used.insert(n.as_str()) {
                return Err(SpecError::new(field, format!("network `{n}` is already used by another topology")));
            }
        }
        for (j, g) in t.groups.iter().enumerate() {
            if !top_names.insert(g.name.as_str()) {
                return Err(SpecError::new(
                    format!("topologies[{i}].groups[{j}].name"),
                    format!("top-level group `{}` is defined twice", g.name),
                ));
            }
        }
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tessera_yaml_shorthand() {
        let spec = parse_topology(
            "networks:\n  - name: pods\n    cidr: 10.0.0.0/16\ngroups:\n  - name: rack-1\n    assignment: {rack: '1'}\n",
            Format::Auto,
        )
        .expect("valid");
        assert_eq!(spec.networks[0].block_prefix, 28);
        assert_eq!(spec.topologies[0].networks, ["pods"]);
        assert_eq!(spec.topologies[0].groups[0].assignment["rack"], "1");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("networks: [{name: a, cidr: 10.0.0.1/16}]", "networks[0].cidr", "did you mean 10.0.0.0/16"),
            ("networks: [{name: a, cidr: 10.0.0.0/16, blockPrefix: 8}]", "networks[0].blockPrefix", "between"),
            ("networks: [{name: a, cidr: 10.0.0.0/16, colour: red}]", "networks[0].colour", "unknown field `colour`"),
            ("networks: [{name: a, cidr: 10.0.0.0/16}]\ntopologies: [{networks: [b]}]", "topologies[0].networks[0]", "unknown network"),
            ("networks: [{name: a, cidr: 10.0.0.0/16, blackouts: [10.1.0.0/24]}]", "networks[0].blackouts[0]", "outside"),
            ("groups: [{name: r, hosts: [{name: h, ip: nope}]}]", "topologies[0].groups[0].hosts[0].ip", "not an IP"),
            ("groups: [{name: r, groups: [{name: x}, {name: x}]}]", "topologies[0].groups[0].groups[1].name", "twice"),
            ("networks: [{name: a, cidr: 10.0.0.0/16, blockPrefix: -1}]", "networks[0].blockPrefix", "invalid value"),
            ("[1, 2", "document", "not valid"),
        ];
        for (doc, field, text) in cases {
            let err = parse_topology(doc, Format::Auto).expect_err(doc);
            assert_eq!(err.field, field, "{doc}: {err}");
            assert!(err.message.contains(text), "{doc}: {err}");
        }
    }

    #[test]
    fn romana_file_is_detected_and_read() {
        let doc = r#"{"networks":[{"name":"n","cidr":"10.111.0.0/16","block_mask":29,"tenants":["t1"]}],
            "topologies":[{"networks":["n"],"map":[{"name":"g","groups":[],"hosts":[{"name":"h1","ip":"192.168.1.1","agent_port":9604}]}]}]}"#;
        let spec = parse_topology(doc, Format::Auto).expect("valid");
        assert_eq!(spec.networks[0].block_prefix, 29);
        assert_eq!(spec.networks[0].tenants.as_deref(), Some(&["t1".to_string()][..]));
        assert_eq!(spec.topologies[0].groups[0].hosts[0].name, "h1");
    }
}

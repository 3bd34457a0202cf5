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
    if text.trim().is_empty() {
        return Err(SpecError::new("document", "is empty; send the whole topology (networks and topologies)"));
    }
    // Bounded parsing (depth, events, aliases): hostile input fails fast.
    let options = serde_saphyr::options! { with_snippet: false, strict_booleans: true };
    let value: serde_json::Value = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| SpecError::new("document", format!("not valid YAML or JSON: {e}")))?;
    if !value.is_object() {
        return Err(SpecError::new("document", "must be a mapping with `networks` and `topologies` (or `groups`)"));
    }
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

fn is_romana(value: &serde_json::Value) -> bool {
    value.get("topologies").and_then(|t| t.as_array()).is_some_and(|list| list.iter().any(|t| t.get("map").is_some()))
        || value.get("networks").and_then(|n| n.as_array()).is_some_and(|list| list.iter().any(|n| n.get("block_mask").is_some()))
}

fn decode<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, SpecError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path == "?" { "document".to_string() } else { path };
        SpecError::new(field, e.into_inner().to_string())
    })
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TesseraDoc {
    #[serde(default)]
    networks: Vec<TesseraNetwork>,
    #[serde(default)]
    topologies: Vec<TesseraTree>,
    /// Shorthand: one tree over every network.
    groups: Option<Vec<TesseraGroup>>,
    slots: Option<u32>,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TesseraNetwork {
    name: String,
    cidr: String,
    block_prefix: Option<u8>,
    tenants: Option<Vec<String>>,
    #[serde(default)]
    blackouts: Vec<String>,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TesseraTree {
    networks: Vec<String>,
    slots: Option<u32>,
    #[serde(default)]
    groups: Vec<TesseraGroup>,
}

#[derive(Deserialize)]
#[serde(untagged)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema), schemars(schema_with = "crate::schema::string_or_list"))]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TesseraGroup {
    name: String,
    #[serde(default)]
    assignment: Labels,
    cidr: Option<OneOrMany>,
    slots: Option<u32>,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(schema_with = "crate::schema::nested_groups"))]
    groups: Vec<TesseraGroup>,
    #[serde(default)]
    hosts: Vec<TesseraHost>,
    bgp: Option<crate::fabric::BgpText>,
}

#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TesseraHost {
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
    let bgp = g.bgp.map(|b| b.check(&format!("{field}.bgp"))).transpose()?;
    Ok(GroupSpec { bgp, ..group(field, g.name, g.assignment, cidrs, g.slots, groups, hosts)? })
}

// Romana's decoder (Go's encoding/json into `TopologyUpdateRequest`) treats every field as
// optional and ignores fields it does not know; so do these structs.
#[derive(Deserialize)]
struct RomanaDoc {
    #[serde(default)]
    networks: Vec<RomanaNetwork>,
    #[serde(default)]
    topologies: Vec<RomanaTopology>,
}

#[derive(Deserialize)]
struct RomanaNetwork {
    name: String,
    cidr: String,
    block_mask: Option<u8>,
    tenants: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RomanaTopology {
    networks: Vec<String>,
    #[serde(default)]
    map: Vec<RomanaGroup>,
}

/// Romana's `GroupOrHost`: a group (assignment, groups) or, when it has an `ip`, a host.
#[derive(Deserialize)]
struct RomanaGroup {
    name: Option<String>,
    ip: Option<String>,
    #[serde(default)]
    assignment: Labels,
    #[serde(default)]
    groups: Vec<RomanaGroup>,
    /// Tessera's own spelling of a leaf's hosts, still read.
    #[serde(default)]
    hosts: Vec<RomanaHost>,
    /// A padding slot that never receives hosts.
    #[serde(default)]
    dummy: bool,
}

#[derive(Deserialize)]
struct RomanaHost {
    name: String,
    ip: String,
}

fn from_romana(doc: RomanaDoc) -> Result<TopologySpec, SpecError> {
    let mut networks = Vec::new();
    for (i, n) in doc.networks.into_iter().enumerate() {
        networks.push(network(&format!("networks[{i}]"), n.name, &n.cidr, n.block_mask, "block_mask", n.tenants, &[])?);
    }
    let mut host_names = BTreeSet::new();
    let mut topologies = Vec::new();
    for (i, t) in doc.topologies.into_iter().enumerate() {
        let (groups, slots) = romana_children(&format!("topologies[{i}].map"), t.map, &mut host_names)?;
        topologies.push(TreeSpec { networks: t.networks, slots, groups });
    }
    finish(TopologySpec { networks, topologies })
}

/// A list of Romana groups: the groups in order (names derived where none is given) and, when
/// trailing `dummy` groups pad it, the number of slots they reserve. Romana carves padding only
/// at the end, so a dummy before a real group is refused.
fn romana_children(
    field: &str,
    list: Vec<RomanaGroup>,
    host_names: &mut BTreeSet<String>,
) -> Result<(Vec<GroupSpec>, Option<u32>), SpecError> {
    let total = list.len();
    let real = list.iter().rposition(|g| !g.dummy).map_or(0, |p| p + 1);
    if let Some(j) = list[..real].iter().position(|g| g.dummy) {
        return Err(SpecError::new(format!("{field}[{j}].dummy"), "a dummy (padding) group may only follow the real groups"));
    }
    let mut used: BTreeSet<String> = list[..real].iter().filter_map(|g| g.name.clone()).collect();
    let mut groups = Vec::new();
    for (j, g) in list.into_iter().take(real).enumerate() {
        let gfield = format!("{field}[{j}]");
        if g.ip.is_some() {
            return Err(SpecError::new(format!("{gfield}.ip"), "a host belongs in a group's `groups` list, next to other hosts"));
        }
        let name = match g.name.clone() {
            Some(n) => n,
            None => derived_name(&g.assignment, j, &mut used),
        };
        groups.push(romana_group(&gfield, name, g, host_names)?);
    }
    let slots = (real < total).then(|| u32::try_from(total).unwrap_or(u32::MAX));
    Ok((groups, slots))
}

/// A readable, stable name for a group Romana's file leaves unnamed: its assignment's values
/// (`zone-A`, `rack-3`), or `group-N` by position, made unique among its siblings.
fn derived_name(assignment: &Labels, index: usize, used: &mut BTreeSet<String>) -> String {
    let from_labels: String = assignment
        .values()
        .map(|v| v.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' }).collect::<String>())
        .collect::<Vec<_>>()
        .join("-");
    let base = if from_labels.trim_matches('-').is_empty() || from_labels.len() > 200 { format!("group-{index}") } else { from_labels };
    let name = if used.contains(&base) { format!("{base}-{index}") } else { base };
    used.insert(name.clone());
    name
}

fn romana_group(field: &str, name: String, g: RomanaGroup, host_names: &mut BTreeSet<String>) -> Result<GroupSpec, SpecError> {
    let mut hosts = Vec::new();
    for (k, h) in g.hosts.into_iter().enumerate() {
        hosts.push(host(&format!("{field}.hosts[{k}]"), h.name, std::slice::from_ref(&h.ip), Labels::new(), host_names)?);
    }
    // Romana: a `groups` list whose first element has an `ip` is the group's hosts.
    let (groups, slots) = if g.groups.first().is_some_and(|e| e.ip.is_some()) {
        for (k, h) in g.groups.into_iter().enumerate() {
            let hfield = format!("{field}.groups[{k}]");
            let (Some(name), Some(ip)) = (h.name, h.ip) else {
                return Err(SpecError::new(hfield, "a host needs both `name` and `ip` (the list's first element is a host)"));
            };
            hosts.push(host(&hfield, name, std::slice::from_ref(&ip), Labels::new(), host_names)?);
        }
        (Vec::new(), None)
    } else {
        romana_children(&format!("{field}.groups"), g.groups, host_names)?
    };
    group(field, name, g.assignment, Vec::new(), slots, groups, hosts)
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
    crate::spec::validate_host_ips(&format!("{field}.ips"), &ips)?;
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
    Ok(GroupSpec { name, assignment, cidrs, slots, groups, hosts, bgp: None })
}

/// Document-wide checks: unique network names, trees naming known networks, each network in one tree.
fn finish(spec: TopologySpec) -> Result<TopologySpec, SpecError> {
    let mut names = BTreeSet::new();
    for (i, n) in spec.networks.iter().enumerate() {
        if !names.insert(n.name.as_str()) {
            return Err(SpecError::new(format!("networks[{i}].name"), format!("network `{}` is defined twice", n.name)));
        }
    }
    let mut addresses: Vec<(IpAddr, &str)> = Vec::new();
    let mut pending: Vec<&GroupSpec> = spec.topologies.iter().flat_map(|t| t.groups.iter()).collect();
    while let Some(g) = pending.pop() {
        pending.extend(g.groups.iter());
        for h in &g.hosts {
            for ip in &h.ips {
                if let Some((_, other)) = addresses.iter().find(|(a, _)| a == ip) {
                    return Err(SpecError::new("hosts", format!("hosts `{other}` and `{}` share the address {ip}", h.name)));
                }
                addresses.push((*ip, &h.name));
            }
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

    /// Romana's documented multi-zone file: groups with `assignment` and `groups`, no `name`.
    const ROMANA_DOCUMENTED: &str = r#"{
        "networks": [{"name": "romana-network", "cidr": "10.111.0.0/16", "block_mask": 29}],
        "topologies": [{"networks": ["romana-network"], "map": [
            {"assignment": {"failure-domain/zone": "zone-A"}, "groups": [
                {"assignment": {"rack": "rack-3"}, "groups": []}, {"assignment": {"rack": "rack-4"}, "groups": []},
                {"assignment": {"rack": "rack-7"}, "groups": []}, {"assignment": {"rack": "rack-9"}, "groups": []}]},
            {"assignment": {"failure-domain/zone": "zone-B"}, "groups": [
                {"assignment": {"rack": "rack-17"}, "groups": []}, {"assignment": {"rack": "rack-22"}, "groups": []}]}
        ]}]}"#;

    #[test]
    fn romana_files_without_names_get_stable_names_and_carve_as_romana_documents() {
        let spec = parse_topology(ROMANA_DOCUMENTED, Format::Auto).expect("Romana accepts it");
        let zones: Vec<&str> = spec.topologies[0].groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(zones, ["zone-A", "zone-B"]);
        let racks: Vec<&str> = spec.topologies[0].groups[0].groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(racks, ["rack-3", "rack-4", "rack-7", "rack-9"]);
        let layout = crate::Layout::build(&spec).expect("carves");
        let cidr = |path: &str| layout.group_by_path(path).map(|g| g.cidrs[&0].to_string()).expect(path);
        assert_eq!(cidr("zone-A"), "10.111.0.0/17");
        assert_eq!(cidr("zone-A/rack-9"), "10.111.96.0/19");
        assert_eq!(cidr("zone-B"), "10.111.128.0/17");
        assert_eq!(cidr("zone-B/rack-22"), "10.111.192.0/18");
        // The same file parsed again names everything the same.
        assert_eq!(parse_topology(ROMANA_DOCUMENTED, Format::Auto).expect("again"), spec);
    }

    #[test]
    fn romana_hosts_unknown_fields_duplicate_names_and_padding() {
        let doc = r#"{"networks": [{"name": "n", "cidr": "10.0.0.0/16", "block_mask": 28, "colour": "ignored"}],
            "topologies": [{"networks": ["n"], "map": [
                {"routing": "prefix-on-host", "groups": [{"name": "h1", "ip": "192.168.0.1", "agent_port": 9604}, {"name": "h2", "ip": "192.168.0.2"}]},
                {"assignment": {"rack": "x"}, "groups": []},
                {"assignment": {"rack": "x"}, "groups": []},
                {"dummy": true, "groups": []}]}]}"#;
        let spec = parse_topology(doc, Format::Romana).expect("Romana accepts it");
        let groups = &spec.topologies[0].groups;
        let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["group-0", "x", "x-2"]);
        assert_eq!(groups[0].hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["h1", "h2"]);
        assert_eq!(spec.topologies[0].slots, Some(4), "the dummy group reserves its slot");
        let misplaced = r#"{"networks": [{"name": "n", "cidr": "10.0.0.0/16"}], "topologies": [{"networks": ["n"], "map": [{"dummy": true}, {"groups": []}]}]}"#;
        let err = parse_topology(misplaced, Format::Romana).expect_err("dummy first");
        assert_eq!(err.field, "topologies[0].map[0].dummy");
    }

    #[test]
    fn host_addresses_must_be_unicast_and_unique() {
        for (ip, what) in [
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("ff02::1", "multicast"),
            ("::1", "loopback"),
        ] {
            let doc = format!("groups: [{{name: r, hosts: [{{name: h, ip: '{ip}'}}]}}]");
            let err = parse_topology(&doc, Format::Auto).expect_err(ip);
            assert_eq!(err.field, "topologies[0].groups[0].hosts[0].ips[0]", "{ip}");
            assert!(err.message.contains(what), "{ip}: {err}");
        }
        let twice = "groups: [{name: r, hosts: [{name: a, ip: 192.0.2.1}, {name: b, ip: 192.0.2.1}]}]";
        let err = parse_topology(twice, Format::Auto).expect_err("shared address");
        assert!(err.message.contains("share the address 192.0.2.1"), "{err}");
        let err = parse_topology("", Format::Auto).expect_err("empty");
        assert!(err.message.contains("empty"), "{err}");
    }
}

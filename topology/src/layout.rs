//! Carving: a validated [`TopologySpec`] becomes a [`Layout`], every prefix group with its CIDR in
//! each network of its tree.
//!
//! Children are carved evenly: `max(next_power_of_two(n), slots)` equal slots, child `i` in slot
//! `i`, the remaining slots kept as padding that never receives hosts. A child with an explicit
//! CIDR keeps it, provided it lies inside its parent and overlaps no sibling.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use serde::Serialize;

use crate::cidr::{Family, Prefix};
use crate::fabric::{BgpSpec, Fabric};
use crate::spec::{GroupSpec, HostSpec, Labels, SpecError, TopologySpec};

pub type GroupId = usize;
pub type NetworkId = usize;

/// A network after validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    pub name: String,
    pub cidr: IpNet,
    pub family: Family,
    pub block_prefix: u8,
    pub tenants: Option<BTreeSet<String>>,
    pub blackouts: Vec<IpNet>,
    /// The tree carved from this network, if any.
    pub tree: Option<usize>,
}

impl Network {
    /// May `tenant` draw addresses from this network?
    pub fn allows(&self, tenant: &str) -> bool {
        self.tenants.as_ref().is_none_or(|t| t.contains(tenant))
    }
}

/// A prefix group with its carved CIDRs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    pub id: GroupId,
    pub name: String,
    /// Names from the top-level group down, joined by '/': `zone-A/rack-3`.
    pub path: String,
    /// Where this group is in the document, for error messages.
    #[serde(skip)]
    pub field: String,
    pub tree: usize,
    pub parent: Option<GroupId>,
    pub children: Vec<GroupId>,
    /// This group's own assignment labels.
    pub assignment: Labels,
    /// Labels a host must carry to be placed here: the assignments of the whole path.
    pub required: Labels,
    /// CIDR per network of the tree.
    pub cidrs: BTreeMap<NetworkId, IpNet>,
    /// Hosts pinned here by the topology document.
    pub static_hosts: Vec<HostSpec>,
    /// Number of carving slots for children (0 for a leaf).
    pub slots: u32,
    /// The `bgp` section with every unset field inherited from the parents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bgp: Option<BgpSpec>,
}

impl Group {
    /// How this group reaches the fabric (`None`: no BGP); `mode` says who speaks.
    pub fn fabric(&self) -> Result<Option<Fabric>, SpecError> {
        match &self.bgp {
            Some(spec) => spec.resolve(&format!("{}.bgp", self.field)),
            None => Ok(None),
        }
    }

    pub fn is_leaf(&self) -> bool {
        self.children.is_empty()
    }

    /// A leaf with no hosts listed takes hosts dynamically, by labels.
    pub fn takes_dynamic_hosts(&self) -> bool {
        self.is_leaf() && self.static_hosts.is_empty()
    }
}

/// One tree of groups over its networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tree {
    pub networks: Vec<NetworkId>,
    pub roots: Vec<GroupId>,
    pub slots: u32,
}

/// The carved topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub networks: Vec<Network>,
    pub trees: Vec<Tree>,
    /// Groups in document order (pre-order): parents before children.
    pub groups: Vec<Group>,
}

/// Networks never overlap, whatever tree they belong to: two tenants' blocks would share
/// addresses and a policy naming one would compile wider than written.
fn check_networks_disjoint(spec: &TopologySpec) -> Result<(), SpecError> {
    for (i, n) in spec.networks.iter().enumerate() {
        if let Some((j, m)) = spec.networks[..i].iter().enumerate().find(|(_, m)| m.cidr.contains(&n.cidr) || n.cidr.contains(&m.cidr)) {
            return Err(SpecError::new(
                format!("networks[{i}].cidr"),
                format!("{} overlaps network `{}` ({}, networks[{j}]); networks must be disjoint", n.cidr, m.name, m.cidr),
            ));
        }
    }
    Ok(())
}

impl Layout {
    pub fn build(spec: &TopologySpec) -> Result<Layout, SpecError> {
        check_networks_disjoint(spec)?;
        let mut networks: Vec<Network> = spec
            .networks
            .iter()
            .map(|n| Network {
                name: n.name.clone(),
                cidr: n.cidr,
                family: Family::of_net(&n.cidr),
                block_prefix: n.block_prefix,
                tenants: n.tenants.as_ref().map(|t| t.iter().cloned().collect()),
                blackouts: n.blackouts.clone(),
                tree: None,
            })
            .collect();
        let mut layout = Layout { networks: Vec::new(), trees: Vec::new(), groups: Vec::new() };
        for (t, tree) in spec.topologies.iter().enumerate() {
            let mut ids = Vec::new();
            for name in &tree.networks {
                // `format` checked that every name exists and is used once.
                if let Some(id) = networks.iter().position(|n| &n.name == name) {
                    networks[id].tree = Some(t);
                    ids.push(id);
                }
            }
            let parent_cidrs: BTreeMap<NetworkId, IpNet> = ids.iter().map(|&id| (id, networks[id].cidr)).collect();
            let field = format!("topologies[{t}]");
            let slots = slot_count(&field, tree.groups.len(), tree.slots)?;
            layout.trees.push(Tree { networks: ids, roots: Vec::new(), slots });
            let roots = layout.carve_children(&networks, t, None, "", &Labels::new(), &parent_cidrs, slots, &tree.groups, &field)?;
            layout.trees[t].roots = roots;
        }
        layout.networks = networks;
        Ok(layout)
    }

    #[allow(clippy::too_many_arguments)]
    fn carve_children(
        &mut self,
        networks: &[Network],
        tree: usize,
        parent: Option<GroupId>,
        parent_path: &str,
        parent_required: &Labels,
        parent_cidrs: &BTreeMap<NetworkId, IpNet>,
        slots: u32,
        specs: &[GroupSpec],
        field: &str,
    ) -> Result<Vec<GroupId>, SpecError> {
        let mut ids = Vec::new();
        let mut carved: Vec<BTreeMap<NetworkId, IpNet>> = vec![BTreeMap::new(); specs.len()];
        for (&net_id, &parent_cidr) in parent_cidrs {
            let network = &networks[net_id];
            let parent_prefix = Prefix::from_net(&parent_cidr);
            let bits = slots.trailing_zeros() as u8;
            let child_len = parent_cidr.prefix_len() + bits;
            for (i, g) in specs.iter().enumerate() {
                let gfield = format!("{field}.groups[{i}]");
                let explicit: Vec<&IpNet> = g.cidrs.iter().filter(|c| network.cidr.contains(*c)).collect();
                let cidr = match explicit.as_slice() {
                    [] => {
                        if child_len > network.block_prefix {
                            return Err(SpecError::new(
                                gfield,
                                format!(
                                    "{parent_cidr} cannot be carved into {slots} slots: each would be a /{child_len}, smaller than network `{}`'s blocks (/{})",
                                    network.name, network.block_prefix
                                ),
                            ));
                        }
                        parent_prefix.subnet(child_len, i as u128).to_net()
                    }
                    [one] => {
                        if !parent_cidr.contains(*one) {
                            return Err(SpecError::new(
                                format!("{gfield}.cidr"),
                                format!("{one} must lie inside its parent's {parent_cidr}"),
                            ));
                        }
                        if one.prefix_len() > network.block_prefix {
                            return Err(SpecError::new(
                                format!("{gfield}.cidr"),
                                format!("{one} is smaller than network `{}`'s blocks (/{})", network.name, network.block_prefix),
                            ));
                        }
                        **one
                    }
                    _ => {
                        return Err(SpecError::new(
                            format!("{gfield}.cidr"),
                            format!("more than one CIDR inside network `{}`", network.name),
                        ));
                    }
                };
                carved[i].insert(net_id, cidr);
            }
            // Siblings must not overlap (explicit CIDRs can collide with carved slots).
            let mut order: Vec<(IpNet, usize)> = carved.iter().enumerate().map(|(i, c)| (c[&net_id], i)).collect();
            order.sort();
            for pair in order.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                if a.0.contains(&b.0) || b.0.contains(&a.0) {
                    let (first, second) = if a.1 < b.1 { (a, b) } else { (b, a) };
                    return Err(SpecError::new(
                        format!("{field}.groups[{}].cidr", second.1),
                        format!("{} overlaps sibling `{}` ({})", second.0, specs[first.1].name, first.0),
                    ));
                }
            }
        }
        for (i, g) in specs.iter().enumerate() {
            for (k, c) in g.cidrs.iter().enumerate() {
                if !parent_cidrs.keys().any(|&n| networks[n].cidr.contains(c)) {
                    return Err(SpecError::new(
                        format!("{field}.groups[{i}].cidr[{k}]"),
                        format!("{c} lies in none of this topology's networks"),
                    ));
                }
            }
            let gfield = format!("{field}.groups[{i}]");
            let id = self.groups.len();
            let path = if parent_path.is_empty() { g.name.clone() } else { format!("{parent_path}/{}", g.name) };
            let mut required = parent_required.clone();
            for (key, value) in &g.assignment {
                if let Some(prev) = required.insert(key.clone(), value.clone()).filter(|p| p != value) {
                    return Err(SpecError::new(
                        format!("{gfield}.assignment.{key}"),
                        format!("`{value}` contradicts `{prev}` required by a parent group: no host could ever match"),
                    ));
                }
            }
            let child_slots = if g.groups.is_empty() { 0 } else { slot_count(&gfield, g.groups.len(), g.slots)? };
            self.groups.push(Group {
                id,
                name: g.name.clone(),
                path: path.clone(),
                field: gfield.clone(),
                tree,
                parent,
                children: Vec::new(),
                assignment: g.assignment.clone(),
                required: required.clone(),
                cidrs: carved[i].clone(),
                static_hosts: g.hosts.clone(),
                slots: child_slots,
                bgp: match (&g.bgp, parent.and_then(|p| self.groups[p].bgp.as_ref())) {
                    (Some(own), Some(inherited)) => Some(own.inherit(inherited)),
                    (own, inherited) => own.clone().or_else(|| inherited.cloned()),
                },
            });
            if g.groups.is_empty() {
                // A leaf's hosts run what it resolves to: refuse what they could not run now.
                self.groups[id].fabric()?;
            }
            if !g.groups.is_empty() {
                let children =
                    self.carve_children(networks, tree, Some(id), &path, &required, &carved[i], child_slots, &g.groups, &gfield)?;
                self.groups[id].children = children;
            }
            ids.push(id);
        }
        Ok(ids)
    }

    pub fn group_by_path(&self, path: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.path == path)
    }

    pub fn network_by_name(&self, name: &str) -> Option<(NetworkId, &Network)> {
        self.networks.iter().enumerate().find(|(_, n)| n.name == name)
    }

    pub fn leaves(&self) -> impl Iterator<Item = &Group> {
        self.groups.iter().filter(|g| g.is_leaf())
    }

    /// The leaf a host is pinned to by the document, if any.
    pub fn static_host(&self, name: &str) -> Option<(&Group, &HostSpec)> {
        self.groups.iter().find_map(|g| g.static_hosts.iter().find(|h| h.name == name).map(|h| (g, h)))
    }

    /// The padding of a group (or of a network's top level when `group` is `None`): parent space
    /// not given to any child, per network.
    pub fn padding(&self, parent_cidr: IpNet, children: &[GroupId], network: NetworkId) -> Vec<IpNet> {
        let taken: Vec<IpNet> = children.iter().filter_map(|&c| self.groups[c].cidrs.get(&network).copied()).collect();
        crate::aggregate::subtract(&[parent_cidr], &taken)
    }
}

fn slot_count(field: &str, children: usize, hint: Option<u32>) -> Result<u32, SpecError> {
    let n = u32::try_from(children.max(1)).map_err(|_| SpecError::new(field, "too many groups"))?;
    let wanted = n.max(hint.unwrap_or(1));
    if wanted > 1 << 16 {
        return Err(SpecError::new(format!("{field}.slots"), "at most 65536 slots"));
    }
    Ok(wanted.next_power_of_two())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Format, parse_topology};

    pub(crate) const ROMANA_MULTI_ZONE: &str = r#"{
      "networks": [{"name": "romana-network", "cidr": "10.111.0.0/16", "block_mask": 29}],
      "topologies": [{
        "networks": ["romana-network"],
        "map": [
          {"name": "zone-A", "assignment": {"failure-domain/zone": "zone-A"}, "groups": [
            {"name": "rack-3", "assignment": {"rack": "rack-3"}, "groups": []},
            {"name": "rack-4", "assignment": {"rack": "rack-4"}, "groups": []},
            {"name": "rack-7", "assignment": {"rack": "rack-7"}, "groups": []},
            {"name": "rack-9", "assignment": {"rack": "rack-9"}, "groups": []}
          ]},
          {"name": "zone-B", "assignment": {"failure-domain/zone": "zone-B"}, "groups": [
            {"name": "rack-17", "assignment": {"rack": "rack-17"}, "groups": []},
            {"name": "rack-22", "assignment": {"rack": "rack-22"}, "groups": []}
          ]}
        ]
      }]
    }"#;

    fn layout(doc: &str) -> Result<Layout, SpecError> {
        Layout::build(&parse_topology(doc, Format::Auto)?)
    }

    fn cidr_of(l: &Layout, path: &str) -> String {
        l.group_by_path(path).expect(path).cidrs[&0].to_string()
    }

    #[test]
    fn romana_multi_zone_example_carves_exactly() {
        let l = layout(ROMANA_MULTI_ZONE).expect("valid");
        let want = [
            ("zone-A", "10.111.0.0/17"),
            ("zone-A/rack-3", "10.111.0.0/19"),
            ("zone-A/rack-4", "10.111.32.0/19"),
            ("zone-A/rack-7", "10.111.64.0/19"),
            ("zone-A/rack-9", "10.111.96.0/19"),
            ("zone-B", "10.111.128.0/17"),
            ("zone-B/rack-17", "10.111.128.0/18"),
            ("zone-B/rack-22", "10.111.192.0/18"),
        ];
        for (path, cidr) in want {
            assert_eq!(cidr_of(&l, path), cidr, "{path}");
        }
        let rack = l.group_by_path("zone-B/rack-22").expect("rack");
        assert_eq!(rack.required["failure-domain/zone"], "zone-B");
        assert_eq!(rack.required["rack"], "rack-22");
    }

    #[test]
    fn three_children_leave_one_padding_slot() {
        let l = layout("networks: [{name: n, cidr: 10.0.0.0/16}]\ngroups: [{name: a}, {name: b}, {name: c}]").expect("valid");
        assert_eq!(cidr_of(&l, "c"), "10.0.128.0/18");
        let pad = l.padding(l.networks[0].cidr, &l.trees[0].roots, 0);
        assert_eq!(pad.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.0.192.0/18"]);
    }

    #[test]
    fn slots_reserve_room_to_grow() {
        let l = layout("networks: [{name: n, cidr: 10.0.0.0/16}]\nslots: 8\ngroups: [{name: a}, {name: b}]").expect("valid");
        assert_eq!(cidr_of(&l, "b"), "10.0.32.0/19");
    }

    #[test]
    fn dual_stack_tree_carves_each_network() {
        let l = layout("networks: [{name: v4, cidr: 10.0.0.0/16}, {name: v6, cidr: 'fd00::/48'}]\ngroups: [{name: a}, {name: b}]")
            .expect("valid");
        let b = l.group_by_path("b").expect("b");
        assert_eq!(b.cidrs[&0].to_string(), "10.0.128.0/17");
        assert_eq!(b.cidrs[&1].to_string(), "fd00:0:0:8000::/49");
    }

    #[test]
    fn structural_errors_name_the_field() {
        let cases = [
            (
                "networks: [{name: n, cidr: 10.0.0.0/16}]\ngroups: [{name: a, cidr: 10.0.0.0/17}, {name: b, cidr: 10.0.0.0/18}]",
                "topologies[0].groups[1].cidr",
                "overlaps sibling `a`",
            ),
            (
                "networks: [{name: n, cidr: 10.0.0.0/16}]\ngroups: [{name: a, cidr: 10.1.0.0/17}]",
                "topologies[0].groups[0].cidr[0]",
                "none of",
            ),
            ("networks: [{name: n, cidr: 10.0.0.0/24}]\nslots: 32\ngroups: [{name: a}]", "topologies[0].groups[0]", "smaller than"),
            (
                "networks: [{name: n, cidr: 10.0.0.0/16}]\ngroups: [{name: a, assignment: {z: '1'}, groups: [{name: b, assignment: {z: '2'}}]}]",
                "topologies[0].groups[0].groups[0].assignment.z",
                "contradicts",
            ),
        ];
        for (doc, field, text) in cases {
            let err = layout(doc).expect_err(doc);
            assert_eq!(err.field, field, "{doc}: {err}");
            assert!(err.message.contains(text), "{doc}: {err}");
        }
    }
}

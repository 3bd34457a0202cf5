//! Host placement: which leaf group a host joins.
//!
//! A host listed in the document is pinned to its group. Any other host goes to the eligible leaf
//! (takes dynamic hosts, and the host carries every label the group's path requires) with the
//! fewest hosts, ties broken by document order. A host that matches no leaf is refused, never
//! placed somewhere arbitrary.

use crate::layout::{Group, GroupId, Layout};
use crate::spec::Labels;

/// Why a host could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("host `{host}` matches no leaf group that takes hosts: {detail}")]
    NoMatch { host: String, detail: String },
}

/// Choose the leaf for `host`; `host_count` tells how many hosts a group has now.
pub fn place_host(layout: &Layout, host: &str, labels: &Labels, host_count: impl Fn(GroupId) -> usize) -> Result<GroupId, PlacementError> {
    if let Some((group, _)) = layout.static_host(host) {
        return Ok(group.id);
    }
    let eligible = layout.leaves().filter(|g| g.takes_dynamic_hosts() && matches(g, labels));
    if let Some(best) = eligible.min_by_key(|g| (host_count(g.id), g.id)) {
        return Ok(best.id);
    }
    let dynamic: Vec<&Group> = layout.leaves().filter(|g| g.takes_dynamic_hosts()).collect();
    let detail = if dynamic.is_empty() {
        "the topology has no leaf group without a fixed host list".to_string()
    } else {
        let reasons: Vec<String> = dynamic
            .iter()
            .take(5)
            .map(|g| {
                let missing: Vec<String> =
                    g.required.iter().filter(|(k, v)| labels.get(*k) != Some(*v)).map(|(k, v)| format!("{k}={v}")).collect();
                format!("{} needs {}", g.path, missing.join(","))
            })
            .collect();
        let more = if dynamic.len() > 5 { format!(" (and {} more groups)", dynamic.len() - 5) } else { String::new() };
        format!("{}{more}", reasons.join("; "))
    };
    Err(PlacementError::NoMatch { host: host.to_string(), detail })
}

fn matches(group: &Group, labels: &Labels) -> bool {
    group.required.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Format, parse_topology};

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn layout() -> Layout {
        let doc = "networks: [{name: n, cidr: 10.0.0.0/16}]\ngroups:\n- {name: za, assignment: {zone: a}, groups: [{name: r1}, {name: r2}]}\n- {name: zb, assignment: {zone: b}, groups: [{name: r3, hosts: [{name: pinned, ip: 192.0.2.1}]}]}";
        Layout::build(&parse_topology(doc, Format::Auto).expect("valid")).expect("valid")
    }

    #[test]
    fn fewest_hosts_wins_then_document_order() {
        let l = layout();
        let r1 = l.group_by_path("za/r1").expect("r1").id;
        let r2 = l.group_by_path("za/r2").expect("r2").id;
        assert_eq!(place_host(&l, "h", &labels(&[("zone", "a")]), |_| 0), Ok(r1));
        assert_eq!(place_host(&l, "h", &labels(&[("zone", "a")]), |g| if g == r1 { 3 } else { 1 }), Ok(r2));
    }

    #[test]
    fn pinned_hosts_ignore_labels_and_unmatched_hosts_are_refused() {
        let l = layout();
        assert_eq!(place_host(&l, "pinned", &Labels::new(), |_| 0), Ok(l.group_by_path("zb/r3").expect("r3").id));
        let err = place_host(&l, "h", &labels(&[("zone", "c")]), |_| 0).expect_err("no match");
        assert!(err.to_string().contains("za/r1 needs zone=a"), "{err}");
        // zb/r3 has a fixed host list, so a zone=b host has nowhere to go.
        assert!(place_host(&l, "h", &labels(&[("zone", "b")]), |_| 0).is_err());
    }
}

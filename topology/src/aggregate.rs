//! Route aggregation: the minimal exact CIDR cover of a set of prefixes, and set difference.
//!
//! "Exact" means the cover holds every address of the input and no other; "minimal" means no
//! shorter list of prefixes does. Both families may be mixed in one input.

use ipnet::IpNet;

use crate::cidr::{Prefix, Range, range_to_prefixes};

/// Aggregate `nets` into the minimal exact cover, sorted (IPv4 first, then by address).
pub fn aggregate(nets: &[IpNet]) -> Vec<IpNet> {
    let prefixes: Vec<Prefix> = nets.iter().map(Prefix::from_net).collect();
    aggregate_prefixes(prefixes).into_iter().map(Prefix::to_net).collect()
}

/// Aggregate on the compact form (the hot path: no allocation per prefix).
pub fn aggregate_prefixes(mut prefixes: Vec<Prefix>) -> Vec<Prefix> {
    prefixes.sort_unstable();
    let mut out: Vec<Prefix> = Vec::with_capacity(prefixes.len());
    for prefix in prefixes {
        // Sorted by start then length: a prefix covered by an earlier one can only be covered by
        // the last kept one, because kept prefixes are disjoint and in address order.
        if out.last().is_some_and(|last| last.contains(prefix)) {
            continue;
        }
        let mut current = prefix;
        // Merge with the previous prefix while the two are halves of one parent; a merge can
        // make the parent the sibling of the prefix before it, hence the loop.
        while let Some(&last) = out.last() {
            if last.is_sibling_of(current) {
                out.pop();
                current = match current.parent() {
                    Some(parent) => parent,
                    None => break,
                };
            } else {
                break;
            }
        }
        out.push(current);
    }
    out
}

/// The addresses of `from` not in any of `remove`, as a minimal sorted prefix list.
pub fn subtract(from: &[IpNet], remove: &[IpNet]) -> Vec<IpNet> {
    let from = aggregate_prefixes(from.iter().map(Prefix::from_net).collect());
    let remove = aggregate_prefixes(remove.iter().map(Prefix::from_net).collect());
    let mut out = Vec::new();
    for base in from {
        let mut cursor = Some(base.addr);
        for hole in remove.iter().filter(|r| base.overlaps(**r)) {
            if hole.contains(base) {
                cursor = None;
                break;
            }
            // `hole` lies inside `base` here, and holes are sorted and disjoint.
            if let Some(start) = cursor {
                if hole.addr > start {
                    out.extend(range_to_prefixes(Range { family: base.family, first: start, last: hole.addr - 1 }));
                }
                cursor = hole.last().checked_add(1).filter(|next| *next <= base.last());
            }
        }
        if let Some(start) = cursor {
            out.extend(range_to_prefixes(Range { family: base.family, first: start, last: base.last() }));
        }
    }
    aggregate_prefixes(out).into_iter().map(Prefix::to_net).collect()
}

/// Total number of addresses in a list of disjoint prefixes (saturating).
pub fn address_count(nets: &[IpNet]) -> u128 {
    nets.iter().map(|n| Prefix::from_net(n).size()).fold(0u128, u128::saturating_add)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::cidr::Family;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().expect("test CIDR")).collect()
    }

    fn strings(list: &[IpNet]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn table() {
        let cases: &[(&[&str], &[&str])] = &[
            (&[], &[]),
            (&["10.0.0.0/25", "10.0.0.128/25"], &["10.0.0.0/24"]),
            (&["10.0.0.0/24", "10.0.0.5/32"], &["10.0.0.0/24"]),
            (&["10.0.1.0/24", "10.0.2.0/24"], &["10.0.1.0/24", "10.0.2.0/24"]),
            (&["10.0.0.0/26", "10.0.0.64/26", "10.0.0.128/25"], &["10.0.0.0/24"]),
            (&["0.0.0.0/1", "128.0.0.0/1"], &["0.0.0.0/0"]),
            (&["::/1", "8000::/1"], &["::/0"]),
            (&["fd00::/64", "10.0.0.0/8", "fd00:0:0:1::/64"], &["10.0.0.0/8", "fd00::/63"]),
        ];
        for (input, want) in cases {
            assert_eq!(strings(&aggregate(&nets(input))), *want, "input {input:?}");
        }
    }

    #[test]
    fn subtract_table() {
        let got = subtract(&nets(&["10.0.0.0/24"]), &nets(&["10.0.0.0/26", "10.0.0.128/26"]));
        assert_eq!(strings(&got), ["10.0.0.64/26", "10.0.0.192/26"]);
        assert!(subtract(&nets(&["10.0.0.0/24"]), &nets(&["10.0.0.0/16"])).is_empty());
        assert_eq!(strings(&subtract(&nets(&["10.0.0.0/24"]), &nets(&["10.1.0.0/16"]))), ["10.0.0.0/24"]);
        let got = subtract(&nets(&["::/0"]), &nets(&["8000::/1"]));
        assert_eq!(strings(&got), ["::/1"]);
    }

    /// Brute-force model over a small universe (10.0.0.0/22): the set of covered addresses.
    fn expand(list: &[IpNet]) -> BTreeSet<u32> {
        let mut out = BTreeSet::new();
        for net in list {
            let p = Prefix::from_net(net);
            for a in p.addr..=p.last() {
                out.insert(a as u32);
            }
        }
        out
    }

    /// The canonical minimal cover of an address set: maximal aligned blocks of its runs.
    fn minimal_cover(set: &BTreeSet<u32>) -> Vec<IpNet> {
        let mut out = Vec::new();
        let mut iter = set.iter().copied().peekable();
        while let Some(first) = iter.next() {
            let mut last = first;
            while iter.peek() == Some(&(last + 1)) {
                last += 1;
                iter.next();
            }
            let range = Range { family: Family::V4, first: first as u128, last: last as u128 };
            out.extend(range_to_prefixes(range).into_iter().map(Prefix::to_net));
        }
        out
    }

    fn small_prefix() -> impl Strategy<Value = IpNet> {
        (0u32..1024, 22u8..=32).prop_map(|(offset, len)| {
            let base = u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0)) + offset;
            IpNet::V4(ipnet::Ipv4Net::new_assert(base.into(), len).trunc())
        })
    }

    proptest! {
        #[test]
        fn aggregate_is_exact_and_minimal(input in prop::collection::vec(small_prefix(), 0..40)) {
            let got = aggregate(&input);
            let want_set = expand(&input);
            prop_assert_eq!(expand(&got), want_set.clone());
            prop_assert_eq!(got, minimal_cover(&want_set));
        }

        #[test]
        fn subtract_is_exact(a in prop::collection::vec(small_prefix(), 0..12), b in prop::collection::vec(small_prefix(), 0..12)) {
            let got = subtract(&a, &b);
            let want: BTreeSet<u32> = expand(&a).difference(&expand(&b)).copied().collect();
            prop_assert_eq!(got, minimal_cover(&want));
        }
    }
}

//! The compiler: per endpoint and direction, the exact decision over (peer address, protocol,
//! port or ICMP type/code), as a default verdict plus the regions that differ from it.
//!
//! It reproduces `eval` exactly (a property test checks it): admin cluster rules first-match by
//! priority (pass hands over), then namespace allow-lists if any isolates the endpoint, else
//! baseline rules, else allow. Peers that select whole segments compile to those segments'
//! block CIDRs (aggregated), so pods coming and going inside existing blocks change nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::model::{Action, PortMatch, PortRule, Protocol};

/// Address family of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn max(self) -> u128 {
        match self {
            Family::V4 => u32::MAX as u128,
            Family::V6 => u128::MAX,
        }
    }

    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    /// The ICMP protocol number of this family.
    pub fn icmp(self) -> u8 {
        match self {
            Family::V4 => 1,
            Family::V6 => 58,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
}

/// Protocol classes the dataplane matches differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// TCP, UDP or SCTP (the protocol number), matched with the destination port.
    Ports(u8),
    /// ICMP (IPv4) or ICMPv6 (IPv6), matched with `type << 8 | code`.
    Icmp,
    /// Every other protocol, matched by number alone.
    Other,
}

pub const PORT_PROTOCOLS: [u8; 3] = [6, 17, 132];

/// Every class, in the order `decide` goes through them.
pub(crate) const ALL_CLASSES: [Class; 5] = [Class::Ports(6), Class::Ports(17), Class::Ports(132), Class::Icmp, Class::Other];

/// A region of traffic: peer addresses × class × service values (port, or ICMP type/code).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Region {
    pub family: Family,
    pub peer_first: u128,
    pub peer_last: u128,
    pub class: Class,
    pub service_first: u16,
    pub service_last: u16,
}

/// One direction of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideRules {
    pub default: Verdict,
    /// Sorted, disjoint regions whose verdict is the opposite of `default`, for the address
    /// families the endpoint has (packets of other families never reach it).
    pub exceptions: Vec<Region>,
}

/// Everything compiled for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRules {
    pub endpoint: String,
    pub host: Option<String>,
    pub ips: Vec<IpAddr>,
    /// Shared by endpoints whose sides are decided alike (the compiler's side groups).
    pub ingress: Arc<SideRules>,
    pub egress: Arc<SideRules>,
}

/// Options of a compilation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Compile peers that select whole segments to the segments' blocks.
    pub compress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { compress: true }
    }
}

/// The service dimension of one clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServiceSel {
    All,
    Range(Class, u16, u16),
}

/// A clause: first-match unit of the decision.
#[derive(Debug, Clone)]
pub(crate) struct Clause {
    pub action: Action,
    /// Peer address ranges per family, sorted and disjoint.
    pub addrs: BTreeMap<Family, Vec<(u128, u128)>>,
    pub services: Vec<ServiceSel>,
    /// Identifies the clause's address sets for memoising unions within one batch: equal ids
    /// mean equal addresses. 0 for clauses built per endpoint (never memoised).
    pub id: u64,
}

impl PartialEq for Clause {
    fn eq(&self, other: &Clause) -> bool {
        self.action == other.action && self.services == other.services && self.addrs == other.addrs
    }
}

impl Eq for Clause {}

/// Unions of allowed addresses by (family, clause ids), shared by the endpoints of one batch.
pub(crate) type UnionMemo = BTreeMap<(Family, Vec<u64>), Vec<AddrRange>>;

/// An inclusive range of addresses of one family.
pub type AddrRange = (u128, u128);

/// Address ranges whose verdict flips, and the service ranges they flip for.
type FlipGroup = (Vec<AddrRange>, Vec<(u16, u16)>);

/// Address ranges of a peer, per family.
pub type AddressSet = BTreeMap<Family, Vec<AddrRange>>;

pub(crate) fn to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(*a) as u128,
        IpAddr::V6(a) => u128::from(*a),
    }
}

pub(crate) fn net_range(net: &IpNet) -> (Family, u128, u128) {
    let (family, bits) = match net {
        IpNet::V4(_) => (Family::V4, 32u32),
        IpNet::V6(_) => (Family::V6, 128u32),
    };
    let first = to_u128(&net.network());
    let host_bits = bits - u32::from(net.prefix_len());
    let last = if host_bits >= 128 { u128::MAX } else { first | ((1u128 << host_bits) - 1) };
    (family, first, last)
}

/// Sort and merge touching ranges.
pub(crate) fn normalize(set: &mut AddressSet) {
    for ranges in set.values_mut() {
        ranges.sort_unstable();
        let mut out: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
        for &(a, b) in ranges.iter() {
            match out.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        *ranges = out;
    }
    set.retain(|_, r| !r.is_empty());
}

pub(crate) fn subtract_ranges(ranges: &[(u128, u128)], holes: &[(u128, u128)]) -> Vec<(u128, u128)> {
    let mut out = Vec::new();
    for &(a, b) in ranges {
        let mut start = a;
        let mut done = false;
        for &(h1, h2) in holes.iter().filter(|(h1, h2)| *h2 >= a && *h1 <= b) {
            if h1 > start {
                out.push((start, h1 - 1));
            }
            match h2.checked_add(1) {
                Some(next) if next <= b => start = start.max(next),
                _ => {
                    done = true;
                    break;
                }
            }
        }
        if !done && start <= b {
            out.push((start, b));
        }
    }
    out
}

pub(crate) fn service_sel(rule: &PortRule, port: Option<u16>) -> Vec<ServiceSel> {
    let n = rule.protocol.number();
    let class = |fam_icmp: bool| if fam_icmp { Class::Icmp } else { Class::Ports(n) };
    let icmp = matches!(rule.protocol, Protocol::Icmp | Protocol::Icmpv6);
    match (&rule.port, port) {
        (PortMatch::All, _) => vec![ServiceSel::Range(class(icmp), 0, u16::MAX)],
        (PortMatch::Range(a, b), _) => vec![ServiceSel::Range(class(icmp), *a, *b)],
        (PortMatch::Named(_), Some(p)) => vec![ServiceSel::Range(class(icmp), p, p)],
        (PortMatch::Named(_), None) => vec![],
        (PortMatch::Icmp { icmp_type, code }, _) => {
            let base = u16::from(*icmp_type) << 8;
            match code {
                Some(c) => vec![ServiceSel::Range(Class::Icmp, base | u16::from(*c), base | u16::from(*c))],
                None => vec![ServiceSel::Range(Class::Icmp, base, base | 0xff)],
            }
        }
    }
}

/// Which ICMP protocol a rule's ICMP entry speaks (it applies to that family only).
pub(crate) fn icmp_family(rule: &PortRule) -> Option<Family> {
    match rule.protocol {
        Protocol::Icmp => Some(Family::V4),
        Protocol::Icmpv6 => Some(Family::V6),
        _ => None,
    }
}

fn covers(sel: &ServiceSel, class: Class, s: u16) -> bool {
    match sel {
        ServiceSel::All => true,
        ServiceSel::Range(c, a, b) => *c == class && (*a..=*b).contains(&s),
    }
}

/// Resolve the tiers into a default and exceptions.
/// `families`: the address families the endpoint has (packets of others never reach it).
pub(crate) fn decide<'a>(
    admin: &[&'a Clause],
    namespace: &[&'a Clause],
    baseline: &[&'a Clause],
    is_isolated: bool,
    families: &[Family],
    unions: &mut UnionMemo,
) -> SideRules {
    let default = if is_isolated { Verdict::Deny } else { Verdict::Allow };
    // A clause equal to an earlier one in the same list can never decide anything (first match,
    // or a union): many policies repeat the same peers.
    let dedup = |list: &[&'a Clause]| -> Vec<&'a Clause> {
        let mut out: Vec<&Clause> = Vec::with_capacity(list.len());
        for c in list {
            if !out.iter().any(|o| o == c) {
                out.push(c);
            }
        }
        out
    };
    let (admin, namespace, baseline) = (dedup(admin), dedup(namespace), dedup(baseline));
    let (admin, namespace, baseline) = (admin.as_slice(), namespace.as_slice(), baseline.as_slice());
    let mut exceptions = Vec::new();
    let relevant: Vec<&Clause> = admin.iter().chain(if is_isolated { namespace } else { baseline }).copied().collect();
    if relevant.is_empty() {
        return SideRules { default, exceptions };
    }
    for &family in families {
        for class in ALL_CLASSES {
            // Elementary service intervals from the clauses' boundaries in this class.
            let mut cuts: BTreeSet<u32> = BTreeSet::from([0, 0x1_0000]);
            if class != Class::Other {
                for c in &relevant {
                    for s in &c.services {
                        if let ServiceSel::Range(k, a, b) = s
                            && *k == class
                        {
                            cuts.insert(u32::from(*a));
                            cuts.insert(u32::from(*b) + 1);
                        }
                    }
                }
            }
            let cuts: Vec<u32> = cuts.into_iter().collect();
            // Cells with the same active clauses have the same address decision: paint once per
            // distinct set of active clauses.
            let lower = if is_isolated { namespace } else { baseline };
            let mut memo: BTreeMap<(Vec<usize>, Vec<usize>), usize> = BTreeMap::new();
            // (flipped address ranges, the service ranges that share them)
            let mut groups: Vec<FlipGroup> = Vec::new();
            for w in cuts.windows(2) {
                let (s0, s1) = (w[0] as u16, (w[1] - 1) as u16);
                let covering = |list: &[&Clause]| -> Vec<usize> {
                    (0..list.len())
                        .filter(|&k| list[k].services.iter().any(|s| covers(s, class, s0)) && list[k].addrs.contains_key(&family))
                        .collect()
                };
                let key = (covering(admin), covering(lower));
                let index = match memo.get(&key) {
                    Some(&i) => i,
                    None => {
                        // `covering` kept only clauses with addresses of this family.
                        let pick = |list: &[&'a Clause], idx: &[usize]| -> Vec<(Action, &'a [(u128, u128)])> {
                            idx.iter().map(|&k| (list[k].action, list[k].addrs.get(&family).map_or(&[][..], Vec::as_slice))).collect()
                        };
                        let (a, l) = (pick(admin, &key.0), pick(lower, &key.1));
                        let ids: Vec<u64> = key.1.iter().map(|&k| lower[k].id).collect();
                        let flips = if a.is_empty() && is_isolated && !ids.contains(&0) {
                            // An allow-list union: the same clauses give the same union for
                            // every endpoint of the batch.
                            let mut sorted = ids;
                            sorted.sort_unstable();
                            sorted.dedup();
                            unions.entry((family, sorted)).or_insert_with(|| paint(family, default, &a, &l, is_isolated)).clone()
                        } else {
                            paint(family, default, &a, &l, is_isolated)
                        };
                        groups.push((flips, Vec::new()));
                        memo.insert(key, groups.len() - 1);
                        groups.len() - 1
                    }
                };
                let g = &mut groups[index];
                if g.0.is_empty() {
                    continue;
                }
                match g.1.last_mut() {
                    Some(last) if u32::from(last.1) + 1 == u32::from(s0) => last.1 = s1,
                    _ => g.1.push((s0, s1)),
                }
            }
            for (ranges, services) in groups {
                for (a, b) in ranges {
                    for &(s0, s1) in &services {
                        exceptions.push(Region { family, peer_first: a, peer_last: b, class, service_first: s0, service_last: s1 });
                    }
                }
            }
        }
    }
    SideRules { default, exceptions: merge_services(exceptions) }
}

/// Merge regions that differ only by adjacent service ranges, then sort.
fn merge_services(mut regions: Vec<Region>) -> Vec<Region> {
    regions.sort_by_key(|r| (r.family, r.class, r.peer_first, r.peer_last, r.service_first));
    let mut out: Vec<Region> = Vec::with_capacity(regions.len());
    for r in regions {
        match out.last_mut() {
            Some(last)
                if (last.family, last.class, last.peer_first, last.peer_last) == (r.family, r.class, r.peer_first, r.peer_last)
                    && u32::from(last.service_last) + 1 == u32::from(r.service_first) =>
            {
                last.service_last = r.service_last;
            }
            _ => out.push(r),
        }
    }
    out.sort();
    out
}

/// Replace `rules`' decision at `points` by `at_points`' (a decision with the same default
/// whose exceptions lie at those points only), leaving what `decide` would give for the whole.
/// Regions are maximal address ranges per service cell with maximal service runs, so only the
/// regions holding or touching a point can differ: those are rebuilt, the others stand.
pub(crate) fn splice_points(rules: &mut SideRules, points: &[IpAddr], at_points: &SideRules) {
    let mut pts: Vec<(Family, u128)> = points.iter().map(|ip| (Family::of(ip), to_u128(ip))).collect();
    pts.sort_unstable();
    pts.dedup();
    let touches =
        |r: &Region| pts.iter().any(|&(f, v)| f == r.family && r.peer_first <= v.saturating_add(1) && r.peer_last >= v.saturating_sub(1));
    // Regions are sorted by family, then first address: none after the last point's neighbour
    // can touch a point.
    let (last_family, last_point) = pts.last().copied().unwrap_or((Family::V4, 0));
    let end = rules.exceptions.partition_point(|r| (r.family, r.peer_first) <= (last_family, last_point.saturating_add(1)));
    let touched: Vec<usize> = (0..end).filter(|&k| touches(&rules.exceptions[k])).collect();
    // Per family and class: the touched regions without the points, and the new decision there.
    type Area<'a> = (Vec<&'a Region>, Vec<&'a Region>);
    let mut areas: BTreeMap<(Family, Class), Area> = BTreeMap::new();
    for r in touched.iter().map(|&k| &rules.exceptions[k]) {
        areas.entry((r.family, r.class)).or_default().0.push(r);
    }
    for r in &at_points.exceptions {
        areas.entry((r.family, r.class)).or_default().1.push(r);
    }
    let mut rebuilt: Vec<Region> = Vec::new();
    for ((family, class), (old, new)) in areas {
        let holes: Vec<AddrRange> = pts.iter().filter(|(f, _)| *f == family).map(|&(_, v)| (v, v)).collect();
        let mut cuts: BTreeSet<u32> = BTreeSet::new();
        for r in old.iter().chain(&new) {
            cuts.insert(u32::from(r.service_first));
            cuts.insert(u32::from(r.service_last) + 1);
        }
        let cuts: Vec<u32> = cuts.into_iter().collect();
        let mut pieces: Vec<Region> = Vec::new();
        for w in cuts.windows(2) {
            let (s0, s1) = (w[0] as u16, (w[1] - 1) as u16);
            let covering = |r: &&&Region| (r.service_first..=r.service_last).contains(&s0);
            let mut flips: AddressSet = AddressSet::new();
            let ranges = flips.entry(family).or_default();
            for r in old.iter().filter(covering) {
                ranges.extend(subtract_ranges(&[(r.peer_first, r.peer_last)], &holes));
            }
            ranges.extend(new.iter().filter(covering).map(|r| (r.peer_first, r.peer_last)));
            normalize(&mut flips);
            for &(a, b) in flips.values().flatten() {
                pieces.push(Region { family, peer_first: a, peer_last: b, class, service_first: s0, service_last: s1 });
            }
        }
        rebuilt.extend(merge_services(pieces));
    }
    rebuilt.sort();
    // Replace the stretch from the first touched or new region to the last one: the regions
    // in it that stand, merged with the rebuilt ones.
    let at = |r: &Region| rules.exceptions.partition_point(|x| x < r);
    let lo = touched.first().copied().into_iter().chain(rebuilt.first().map(at)).min();
    let hi = touched.last().map(|k| k + 1).into_iter().chain(rebuilt.last().map(at)).max();
    let (Some(lo), Some(hi)) = (lo, hi) else { return };
    let mut stretch: Vec<Region> = Vec::with_capacity(hi - lo + rebuilt.len());
    let mut fresh = rebuilt.into_iter().peekable();
    let mut gone = touched.iter().peekable();
    for k in lo..hi {
        if gone.next_if(|&&g| g == k).is_some() {
            continue;
        }
        let r = &rules.exceptions[k];
        while let Some(f) = fresh.next_if(|f| f < r) {
            stretch.push(f);
        }
        stretch.push(r.clone());
    }
    stretch.extend(fresh);
    rules.exceptions.splice(lo..hi, stretch);
}

/// First-match over the address line: returns the ranges whose verdict differs from `default`.
fn paint(
    family: Family,
    default: Verdict,
    admin: &[(Action, &[(u128, u128)])],
    lower: &[(Action, &[(u128, u128)])],
    is_isolated: bool,
) -> Vec<(u128, u128)> {
    let max = family.max();
    if admin.is_empty() && is_isolated {
        // The common case: an allow-list. The flips are the union of the allowed ranges; each
        // list is sorted already, so a k-way merge beats sorting the concatenation.
        let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<(u128, u128, usize, usize)>> =
            lower.iter().enumerate().filter_map(|(k, (_, r))| r.first().map(|&(a, b)| std::cmp::Reverse((a, b, k, 0)))).collect();
        let mut out: Vec<(u128, u128)> = Vec::new();
        while let Some(std::cmp::Reverse((a, b, k, i))) = heap.pop() {
            match out.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
            if let Some(&(na, nb)) = lower[k].1.get(i + 1) {
                heap.push(std::cmp::Reverse((na, nb, k, i + 1)));
            }
        }
        return out;
    }
    let mut starts: Vec<u128> = vec![0];
    for (_, ranges) in admin.iter().chain(lower) {
        for &(a, b) in ranges.iter() {
            starts.push(a);
            if b < max {
                starts.push(b + 1);
            }
        }
    }
    starts.sort_unstable();
    starts.dedup();
    let end_of = |i: usize| if i + 1 < starts.len() { starts[i + 1] - 1 } else { max };
    let paint_ranges = |verdicts: &mut Vec<Verdict>, ranges: &[(u128, u128)], v: &dyn Fn(usize) -> Verdict| {
        for &(a, b) in ranges {
            let mut i = starts.partition_point(|s| *s < a);
            while i < starts.len() && starts[i] <= b {
                verdicts[i] = v(i);
                i += 1;
            }
        }
    };
    // Below the admin tier: namespace allow-lists (isolated) or baseline first-match.
    let mut lower_map = vec![default; starts.len()];
    if is_isolated {
        for (_, ranges) in lower {
            paint_ranges(&mut lower_map, ranges, &|_| Verdict::Allow);
        }
    } else {
        // Baseline first match; a Pass leaves the tier for the default.
        for (action, ranges) in lower.iter().rev() {
            let v = match action {
                Action::Allow => Verdict::Allow,
                Action::Deny => Verdict::Deny,
                Action::Pass => default,
            };
            paint_ranges(&mut lower_map, ranges, &|_| v);
        }
    }
    let mut result = lower_map.clone();
    for (action, ranges) in admin.iter().rev() {
        match action {
            Action::Allow => paint_ranges(&mut result, ranges, &|_| Verdict::Allow),
            Action::Deny => paint_ranges(&mut result, ranges, &|_| Verdict::Deny),
            Action::Pass => paint_ranges(&mut result, ranges, &|i| lower_map[i]),
        }
    }
    let mut out: Vec<(u128, u128)> = Vec::new();
    for (i, v) in result.iter().enumerate() {
        if *v != default {
            let (a, b) = (starts[i], end_of(i));
            match out.last_mut() {
                Some(last) if last.1.checked_add(1) == Some(a) => last.1 = b,
                _ => out.push((a, b)),
            }
        }
    }
    out
}

impl EndpointRules {
    pub(crate) fn side_mut(&mut self, dir: crate::model::Direction) -> &mut Arc<SideRules> {
        match dir {
            crate::model::Direction::Ingress => &mut self.ingress,
            crate::model::Direction::Egress => &mut self.egress,
        }
    }
}

impl SideRules {
    /// The compiled decision for one packet (what the dataplane will do).
    pub fn verdict(&self, peer: IpAddr, protocol: u8, service: u16) -> Verdict {
        let family = Family::of(&peer);
        let class = if PORT_PROTOCOLS.contains(&protocol) {
            Class::Ports(protocol)
        } else if protocol == family.icmp() {
            Class::Icmp
        } else {
            Class::Other
        };
        let service = if class == Class::Other { 0 } else { service };
        let addr = to_u128(&peer);
        let hit = self.exceptions.iter().any(|r| {
            r.family == family
                && r.class == class
                && (r.peer_first..=r.peer_last).contains(&addr)
                && (r.service_first..=r.service_last).contains(&service)
        });
        match (hit, self.default) {
            (false, v) => v,
            (true, Verdict::Allow) => Verdict::Deny,
            (true, Verdict::Deny) => Verdict::Allow,
        }
    }
}

//! What a speaker announces (its Adj-RIB-Out) and the UPDATEs that carry it: every prefix with
//! one set of attributes, IPv4 in the NLRI field and IPv6 in MP_REACH_NLRI (RFC 4760), split so
//! no message exceeds 4,096 octets, and the withdrawals and announcements that take a peer from
//! one announcement to the next.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::attributes::{AsSegment, Origin, PathAttribute};
use crate::message::{Message, Session, Update, encode};
use crate::{AFI_IPV4, AFI_IPV6, SAFI_UNICAST};

/// Largest BGP message (RFC 4271 §4).
const MAX_MESSAGE: usize = 4096;
/// Room kept for what the estimate leaves out (an attribute's extended length, rounding).
const SLACK: usize = 16;

/// Every prefix a speaker announces, with the attributes they share.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Announcement {
    pub prefixes: Vec<IpNet>,
    /// Next hop of IPv4 prefixes (none: IPv4 prefixes are not announced).
    pub next_hop_v4: Option<Ipv4Addr>,
    /// Next hop of IPv6 prefixes (none: IPv6 prefixes are not announced).
    pub next_hop_v6: Option<Ipv6Addr>,
    /// RFC 1997 communities.
    pub communities: Vec<u32>,
    /// RFC 8092 large communities.
    pub large_communities: Vec<(u32, u32, u32)>,
}

/// Who announces: the local AS, and whether the peer is external (eBGP prepends the local AS
/// and sends no LOCAL_PREF; iBGP sends an empty AS_PATH and LOCAL_PREF 100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speaker {
    pub local_as: u32,
    pub ebgp: bool,
    pub session: Session,
}

impl Announcement {
    /// The prefixes that are sent: those of a family with a next hop.
    pub fn sent(&self) -> BTreeSet<IpNet> {
        self.prefixes
            .iter()
            .filter(|p| match p {
                IpNet::V4(_) => self.next_hop_v4.is_some(),
                IpNet::V6(_) => self.next_hop_v6.is_some(),
            })
            .copied()
            .collect()
    }

    fn same_attributes(&self, other: &Announcement) -> bool {
        self.next_hop_v4 == other.next_hop_v4
            && self.next_hop_v6 == other.next_hop_v6
            && self.communities == other.communities
            && self.large_communities == other.large_communities
    }

    fn common_attributes(&self, speaker: &Speaker) -> Vec<PathAttribute> {
        let mut out = vec![
            PathAttribute::Origin(Origin::Igp),
            PathAttribute::AsPath(if speaker.ebgp { vec![AsSegment::Sequence(vec![speaker.local_as])] } else { vec![] }),
        ];
        if !speaker.ebgp {
            out.push(PathAttribute::LocalPref(100));
        }
        if !self.communities.is_empty() {
            out.push(PathAttribute::Communities(self.communities.clone()));
        }
        if !self.large_communities.is_empty() {
            out.push(PathAttribute::LargeCommunities(self.large_communities.clone()));
        }
        out
    }

    /// UPDATEs announcing `prefixes` (a subset of what this announcement sends) with its attributes.
    fn announce(&self, prefixes: &BTreeSet<IpNet>, speaker: &Speaker) -> Vec<Update> {
        let mut out = Vec::new();
        let v4: Vec<Ipv4Net> = prefixes.iter().filter_map(|p| if let IpNet::V4(n) = p { Some(*n) } else { None }).collect();
        if let (false, Some(hop)) = (v4.is_empty(), self.next_hop_v4) {
            let mut attributes = self.common_attributes(speaker);
            attributes.insert(2, PathAttribute::NextHop(hop));
            let room = room(&Update { attributes: attributes.clone(), ..Default::default() }, speaker);
            for nlri in chunks(&v4, room, |n| prefix_octets(n.prefix_len(), speaker.session.add_path_v4)) {
                out.push(Update { attributes: attributes.clone(), nlri, ..Default::default() });
            }
        }
        let v6: Vec<IpNet> = prefixes.iter().filter(|p| matches!(p, IpNet::V6(_))).copied().collect();
        if let (false, Some(hop)) = (v6.is_empty(), self.next_hop_v6) {
            let base = self.common_attributes(speaker);
            let reach =
                |nlri: Vec<IpNet>| PathAttribute::MpReach { afi: AFI_IPV6, safi: SAFI_UNICAST, next_hops: vec![IpAddr::V6(hop)], nlri };
            let mut empty = base.clone();
            empty.push(reach(vec![]));
            let room = room(&Update { attributes: empty, ..Default::default() }, speaker);
            for nlri in chunks(&v6, room, |n| prefix_octets(n.prefix_len(), speaker.session.add_path_v6)) {
                let mut attributes = base.clone();
                attributes.push(reach(nlri));
                out.push(Update { attributes, ..Default::default() });
            }
        }
        out
    }

    /// Everything, as sent when a session comes up, then End-of-RIB for both families (RFC 4724).
    pub fn full(&self, speaker: &Speaker) -> Vec<Update> {
        let mut out = self.announce(&self.sent(), speaker);
        out.extend(end_of_rib());
        out
    }

    /// The prefixes of one family again (a ROUTE-REFRESH, RFC 2918).
    pub fn family(&self, afi: u16, speaker: &Speaker) -> Vec<Update> {
        let wanted: BTreeSet<IpNet> = self.sent().into_iter().filter(|p| matches!(p, IpNet::V6(_)) == (afi == AFI_IPV6)).collect();
        self.announce(&wanted, speaker)
    }

    /// The UPDATEs that take a peer holding `old` to `self`: withdrawals of what is gone, then
    /// what is new (everything, when the shared attributes changed: an UPDATE replaces a route).
    pub fn changes_from(&self, old: &Announcement, speaker: &Speaker) -> Vec<Update> {
        let (before, after) = (old.sent(), self.sent());
        let gone: Vec<IpNet> = before.difference(&after).copied().collect();
        let mut out = withdraw(&gone, speaker);
        let new: BTreeSet<IpNet> = if self.same_attributes(old) { after.difference(&before).copied().collect() } else { after };
        out.extend(self.announce(&new, speaker));
        out
    }
}

/// Several announcements by path identifier: what a route server hears from a controller
/// speaking for many hosts (one path each). An agent announces one path, id 0.
pub type Paths = BTreeMap<u32, Announcement>;

/// What is really sent: for a family the session carries path identifiers for, every path;
/// for the others each prefix once, from its lowest-id path (a later one would replace it).
fn effective(paths: &Paths, speaker: &Speaker) -> Paths {
    let mut taken: BTreeSet<IpNet> = BTreeSet::new();
    let mut out = Paths::new();
    for (id, a) in paths {
        let mut kept = a.clone();
        kept.prefixes.retain(|p| {
            let afi = if matches!(p, IpNet::V4(_)) { AFI_IPV4 } else { AFI_IPV6 };
            speaker.session.add_path(afi) || taken.insert(*p)
        });
        out.insert(*id, kept);
    }
    out
}

fn with_path(mut updates: Vec<Update>, id: u32) -> Vec<Update> {
    updates.iter_mut().for_each(|u| u.path_id = Some(id));
    updates
}

/// Prefixes sent to the peer (counting each path).
pub fn paths_sent(paths: &Paths, speaker: &Speaker) -> usize {
    effective(paths, speaker).values().map(|a| a.sent().len()).sum()
}

/// Every path, as sent when a session comes up, then End-of-RIB for both families.
pub fn paths_full(paths: &Paths, speaker: &Speaker) -> Vec<Update> {
    let mut out: Vec<Update> =
        effective(paths, speaker).iter().flat_map(|(id, a)| with_path(a.announce(&a.sent(), speaker), *id)).collect();
    out.extend(end_of_rib());
    out
}

/// The paths of one family again (a ROUTE-REFRESH).
pub fn paths_family(paths: &Paths, afi: u16, speaker: &Speaker) -> Vec<Update> {
    effective(paths, speaker).iter().flat_map(|(id, a)| with_path(a.family(afi, speaker), *id)).collect()
}

/// The UPDATEs that take a peer holding `old` to `new`: every withdrawal first, then every
/// announcement. Without path identifiers a prefix moving from one path to another is only
/// announced (the announcement replaces it; a withdrawal would remove it).
pub fn paths_changes(old: &Paths, new: &Paths, speaker: &Speaker) -> Vec<Update> {
    let (old, new) = (effective(old, speaker), effective(new, speaker));
    let still: BTreeSet<IpNet> = new.values().flat_map(Announcement::sent).collect();
    let empty = Announcement::default();
    let ids: BTreeSet<u32> = old.keys().chain(new.keys()).copied().collect();
    let (mut withdrawals, mut announcements) = (Vec::new(), Vec::new());
    for id in ids {
        let (before, after) = (old.get(&id).unwrap_or(&empty), new.get(&id).unwrap_or(&empty));
        let (was, is) = (before.sent(), after.sent());
        let gone: Vec<IpNet> = was
            .difference(&is)
            .filter(|p| {
                let afi = if matches!(p, IpNet::V4(_)) { AFI_IPV4 } else { AFI_IPV6 };
                speaker.session.add_path(afi) || !still.contains(p)
            })
            .copied()
            .collect();
        withdrawals.extend(with_path(withdraw(&gone, speaker), id));
        let fresh: BTreeSet<IpNet> = if after.same_attributes(before) { is.difference(&was).copied().collect() } else { is };
        announcements.extend(with_path(after.announce(&fresh, speaker), id));
    }
    withdrawals.extend(announcements);
    withdrawals
}

/// UPDATEs withdrawing `prefixes` (IPv4 in the withdrawn-routes field, IPv6 in MP_UNREACH_NLRI).
pub fn withdraw(prefixes: &[IpNet], speaker: &Speaker) -> Vec<Update> {
    let mut out = Vec::new();
    let v4: Vec<Ipv4Net> = prefixes.iter().filter_map(|p| if let IpNet::V4(n) = p { Some(*n) } else { None }).collect();
    for withdrawn in chunks(&v4, room(&Update::default(), speaker), |n| prefix_octets(n.prefix_len(), speaker.session.add_path_v4)) {
        out.push(Update { withdrawn, ..Default::default() });
    }
    let v6: Vec<IpNet> = prefixes.iter().filter(|p| matches!(p, IpNet::V6(_))).copied().collect();
    let unreach = |withdrawn: Vec<IpNet>| PathAttribute::MpUnreach { afi: AFI_IPV6, safi: SAFI_UNICAST, withdrawn };
    let room6 = room(&Update { attributes: vec![unreach(vec![])], ..Default::default() }, speaker);
    for withdrawn in chunks(&v6, room6, |n| prefix_octets(n.prefix_len(), speaker.session.add_path_v6)) {
        out.push(Update { attributes: vec![unreach(withdrawn)], ..Default::default() });
    }
    out
}

/// End-of-RIB markers (RFC 4724 §2): an empty UPDATE for IPv4, an empty MP_UNREACH for IPv6.
pub fn end_of_rib() -> [Update; 2] {
    [
        Update::default(),
        Update {
            attributes: vec![PathAttribute::MpUnreach { afi: AFI_IPV6, safi: SAFI_UNICAST, withdrawn: vec![] }],
            ..Default::default()
        },
    ]
}

/// Octets of one prefix in NLRI encoding: its path identifier where the session carries them,
/// the length, then the significant octets.
fn prefix_octets(len: u8, add_path: bool) -> usize {
    usize::from(add_path) * 4 + 1 + usize::from(len).div_ceil(8)
}

/// Octets left for prefixes in a message that already carries `skeleton`.
fn room(skeleton: &Update, speaker: &Speaker) -> usize {
    MAX_MESSAGE - SLACK - encode(&Message::Update(skeleton.clone()), &speaker.session).len()
}

/// `items` in runs whose encoded size fits in `room`.
fn chunks<T: Copy>(items: &[T], room: usize, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut used = room; // forces a first chunk
    for item in items {
        let s = size(item);
        if used + s > room {
            out.push(Vec::new());
            used = 0;
        }
        used += s;
        if let Some(last) = out.last_mut() {
            last.push(*item);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode;

    fn speaker() -> Speaker {
        Speaker { local_as: 64512, ebgp: true, session: Session { four_octet_as: true, ..Session::default() } }
    }

    fn nets(texts: &[&str]) -> Vec<IpNet> {
        texts.iter().map(|t| t.parse().expect("net")).collect()
    }

    /// Prefixes announced and withdrawn by `updates`, decoded from their bytes.
    fn on_the_wire(updates: &[Update]) -> (BTreeSet<IpNet>, BTreeSet<IpNet>) {
        let (mut announced, mut withdrawn) = (BTreeSet::new(), BTreeSet::new());
        for u in updates {
            let bytes = encode(&Message::Update(u.clone()), &speaker().session);
            assert!(bytes.len() <= MAX_MESSAGE, "{} octets", bytes.len());
            let Ok(Some((Message::Update(back), used))) = decode(&bytes, &speaker().session) else { panic!("decodes") };
            assert_eq!(used, bytes.len());
            announced.extend(back.nlri.iter().map(|n| IpNet::V4(*n)));
            withdrawn.extend(back.withdrawn.iter().map(|n| IpNet::V4(*n)));
            for a in &back.attributes {
                match a {
                    PathAttribute::MpReach { nlri, .. } => announced.extend(nlri),
                    PathAttribute::MpUnreach { withdrawn: w, .. } => withdrawn.extend(w),
                    _ => {}
                }
            }
        }
        (announced, withdrawn)
    }

    #[test]
    fn ten_thousand_prefixes_fit_in_messages_of_at_most_4096_octets() {
        let mut prefixes: Vec<IpNet> =
            (0..10_000u32).map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).expect("net"))).collect();
        prefixes.extend(
            (0..3_000u128).map(|i| IpNet::V6(ipnet::Ipv6Net::new(Ipv6Addr::from((0xfd00_u128 << 112) + (i << 64)), 64).expect("net"))),
        );
        let a = Announcement {
            prefixes: prefixes.clone(),
            next_hop_v4: Some("10.200.1.11".parse().expect("ip")),
            next_hop_v6: Some("fd00:200:1::11".parse().expect("ip")),
            communities: vec![1, 2, 3],
            large_communities: vec![(64512, 1, 2)],
        };
        let updates = a.full(&speaker());
        let (announced, withdrawn) = on_the_wire(&updates);
        assert_eq!(announced, prefixes.iter().copied().collect());
        assert!(withdrawn.is_empty());
        // Full messages: 10,000 /24s of 4 octets each need at least 10 messages, and few more.
        assert!(updates.len() < 25, "{} messages", updates.len());
    }

    #[test]
    fn a_change_withdraws_what_is_gone_and_announces_what_is_new() {
        let old = Announcement {
            prefixes: nets(&["10.96.0.0/17", "192.0.2.1/32", "fd00:96::/56"]),
            next_hop_v4: Some("10.200.1.11".parse().expect("ip")),
            next_hop_v6: Some("fd00:200:1::11".parse().expect("ip")),
            ..Default::default()
        };
        let new = Announcement { prefixes: nets(&["10.96.0.0/17", "192.0.2.2/32"]), ..old.clone() };
        let (announced, withdrawn) = on_the_wire(&new.changes_from(&old, &speaker()));
        assert_eq!(announced, nets(&["192.0.2.2/32"]).into_iter().collect());
        assert_eq!(withdrawn, nets(&["192.0.2.1/32", "fd00:96::/56"]).into_iter().collect());

        // New communities: every remaining prefix is announced again with them.
        let tagged = Announcement { communities: vec![7], ..new.clone() };
        let (announced, withdrawn) = on_the_wire(&tagged.changes_from(&new, &speaker()));
        assert_eq!(announced, nets(&["10.96.0.0/17", "192.0.2.2/32"]).into_iter().collect());
        assert!(withdrawn.is_empty());

        // No next hop of a family: its prefixes are not sent at all.
        let v4_only = Announcement { next_hop_v6: None, ..old.clone() };
        assert_eq!(v4_only.sent(), nets(&["10.96.0.0/17", "192.0.2.1/32"]).into_iter().collect());
    }

    #[test]
    fn a_prefix_moving_between_paths_is_announced_not_withdrawn_without_add_path() {
        let path = |hop: &str, prefixes: &[&str]| Announcement {
            prefixes: nets(prefixes),
            next_hop_v4: Some(hop.parse().expect("ip")),
            ..Default::default()
        };
        let old: Paths = [(1, path("10.200.1.11", &["10.96.0.0/17"])), (2, path("10.200.1.12", &["10.96.0.0/17"]))].into();
        let new: Paths = [(2, path("10.200.1.12", &["10.96.0.0/17"]))].into();
        // Without ADD-PATH only path 1 was sent; path 2 takes over with one announcement.
        let plain = paths_changes(&old, &new, &speaker());
        assert_eq!(plain.len(), 1, "{plain:?}");
        assert_eq!(on_the_wire(&plain), (nets(&["10.96.0.0/17"]).into_iter().collect(), BTreeSet::new()));
        assert!(plain[0].attributes.contains(&PathAttribute::NextHop("10.200.1.12".parse().expect("ip"))));
        assert_eq!(paths_sent(&old, &speaker()), 1);
        // With ADD-PATH both were sent; path 1 alone is withdrawn, path 2 is untouched.
        let add_path = Speaker { session: Session { add_path_v4: true, ..speaker().session }, ..speaker() };
        let changes = paths_changes(&old, &new, &add_path);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!((changes[0].withdrawn.clone(), changes[0].path_id), (vec!["10.96.0.0/17".parse().expect("net")], Some(1)));
        assert_eq!(paths_sent(&old, &add_path), 2);
        // Full tables: two paths with ADD-PATH, one without, then End-of-RIB.
        assert_eq!(paths_full(&old, &add_path).iter().filter(|u| !u.nlri.is_empty()).count(), 2);
        assert_eq!(paths_full(&old, &speaker()).iter().filter(|u| !u.nlri.is_empty()).count(), 1);
    }
}

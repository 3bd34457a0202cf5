//! Watching the kernel for changes: nf_tables transactions (the `NFNLGRP_NFTABLES` group) and
//! routes and policy rules (the rtnetlink route and rule groups). Each watcher reads on a thread
//! of its own, in the network namespace of the thread that started it, and parses messages only
//! as far as needed to tell who changed what: a commit's tables and the process that made it, a
//! route's table and protocol. Deciding what is drift is the caller's business.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, setsockopt, socket, sockopt};

/// One nf_tables transaction, as the kernel announced it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NftCommit {
    /// The ruleset generation it made.
    pub generation: u32,
    /// The process (thread) that committed it, as the initial pid namespace numbers it.
    pub pid: u32,
    /// The netlink port of the socket that sent it: a process's own pid as its pid namespace
    /// numbers it (the kernel binds a socket there first), or the port a socket was bound to.
    pub port: u32,
    pub process: String,
    /// The tables it touched: (family, name), the family as nftables names it (`inet`, `ip`…).
    pub tables: BTreeSet<(String, String)>,
}

/// What a watcher saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftEvent {
    Commit(NftCommit),
    /// The kernel dropped messages (the socket's buffer overflowed): anything may have changed.
    Overrun,
}

/// A route or policy rule added or deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteEvent {
    pub rule: bool,
    pub deleted: bool,
    pub table: u32,
    /// The route protocol (0 for rules).
    pub protocol: u8,
}

/// What a route watcher saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteWatch {
    Change(RouteEvent),
    Overrun,
}

const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFTA_GEN_ID: u16 = 1;
const NFTA_GEN_PROC_PID: u16 = 2;
const NFTA_GEN_PROC_NAME: u16 = 3;
/// The table name of every object message (table, chain, rule, set, elements, object, flowtable).
const NFTA_TABLE: u16 = 1;

const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV4_RULE: u32 = 8;
const RTNLGRP_IPV6_ROUTE: u32 = 11;
const RTNLGRP_IPV6_RULE: u32 = 19;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;
const RTA_TABLE: u16 = 15;

/// A netlink socket of `protocol` in the groups `groups` (a bitmask of 1 << (group - 1)).
fn subscribe(protocol: SockProtocol, groups: u32) -> std::io::Result<OwnedFd> {
    let fd = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, protocol)?;
    // Large transactions (100k set elements) arrive as a burst: a deep buffer (as root, past
    // rmem_max) keeps them from overrunning it.
    if setsockopt(&fd, sockopt::RcvBufForce, &(32 << 20)).is_err() {
        setsockopt(&fd, sockopt::RcvBuf, &(32 << 20))?;
    }
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
    Ok(fd)
}

/// Read messages until `handle` says stop; ENOBUFS is reported as an overrun.
fn read_loop(fd: OwnedFd, mut handle: impl FnMut(Option<Message<'_>>) -> bool) {
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = match recv(fd.as_raw_fd(), &mut buffer, nix::sys::socket::MsgFlags::empty()) {
            Ok(n) => n,
            Err(Errno::ENOBUFS) => {
                if !handle(None) {
                    return;
                }
                continue;
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        };
        for message in messages(&buffer[..n]) {
            if !handle(Some(message)) {
                return;
            }
        }
    }
}

/// A netlink message: its type, the port of its sender, its payload after the 16-octet header.
type Message<'a> = (u16, u32, &'a [u8]);

/// The netlink messages of a datagram (type, sender port, payload).
fn messages(data: &[u8]) -> Vec<Message<'_>> {
    framed(data).into_iter().map(|m| (m.kind, m.port, m.payload)).collect()
}

/// One message of a datagram, as framed by its header.
pub(crate) struct Framed<'a> {
    pub kind: u16,
    pub seq: u32,
    /// The sender's port.
    pub port: u32,
    /// What follows the 16-octet header.
    pub payload: &'a [u8],
}

/// Split a datagram into its messages (a truncated one ends the list).
pub(crate) fn framed(mut data: &[u8]) -> Vec<Framed<'_>> {
    let word = |d: &[u8], at: usize| u32::from_ne_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]);
    let mut out = Vec::new();
    while data.len() >= 16 {
        let len = word(data, 0) as usize;
        if len < 16 || len > data.len() {
            break;
        }
        out.push(Framed {
            kind: u16::from_ne_bytes([data[4], data[5]]),
            seq: word(data, 8),
            port: word(data, 12),
            payload: &data[16..len],
        });
        data = &data[align(len).min(data.len())..];
    }
    out
}

pub(crate) const fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// The attributes of a payload, from `offset`: (type without its flag bits, value).
fn attributes(payload: &[u8], offset: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut data = payload.get(offset..).unwrap_or_default();
    while data.len() >= 4 {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        if len < 4 || len > data.len() {
            break;
        }
        out.push((u16::from_ne_bytes([data[2], data[3]]) & 0x3fff, &data[4..len]));
        data = &data[align(len).min(data.len())..];
    }
    out
}

fn c_string(value: &[u8]) -> String {
    String::from_utf8_lossy(value.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
}

fn family_name(family: u8) -> &'static str {
    match family {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "?",
    }
}

/// Parse nf_tables messages into commits: objects' tables gathered until their NEWGEN.
#[derive(Debug, Default)]
pub struct NftParser {
    pending: BTreeSet<(String, String)>,
}

impl NftParser {
    /// One message (its type, its sender's port, its payload); a finished commit when it is the
    /// generation message.
    pub fn feed(&mut self, kind: u16, port: u32, payload: &[u8]) -> Option<NftCommit> {
        if kind >> 8 != NFNL_SUBSYS_NFTABLES || payload.len() < 4 {
            return None;
        }
        let attrs = attributes(payload, 4);
        if kind & 0xff == NFT_MSG_NEWGEN {
            let be = |t: u16| attrs.iter().find(|(a, _)| *a == t).and_then(|(_, v)| Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?)));
            return Some(NftCommit {
                generation: be(NFTA_GEN_ID).unwrap_or(0),
                pid: be(NFTA_GEN_PROC_PID).unwrap_or(0),
                port,
                process: attrs.iter().find(|(a, _)| *a == NFTA_GEN_PROC_NAME).map(|(_, v)| c_string(v)).unwrap_or_default(),
                tables: std::mem::take(&mut self.pending),
            });
        }
        if let Some((_, name)) = attrs.iter().find(|(a, _)| *a == NFTA_TABLE) {
            self.pending.insert((family_name(payload[0]).to_string(), c_string(name)));
        }
        None
    }
}

/// Watch nf_tables commits; `sink` gets each, and stops the watcher by returning false. The
/// thread ends then, or when the socket fails.
pub fn watch_nftables(mut sink: impl FnMut(NftEvent) -> bool + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    let fd = subscribe(SockProtocol::NetlinkNetFilter, 1 << (NFNLGRP_NFTABLES - 1))?;
    std::thread::Builder::new().name("nft-watch".into()).spawn(move || {
        let mut parser = NftParser::default();
        read_loop(fd, |message| match message {
            None => {
                parser = NftParser::default();
                sink(NftEvent::Overrun)
            }
            Some((kind, port, payload)) => parser.feed(kind, port, payload).is_none_or(|commit| sink(NftEvent::Commit(commit))),
        });
    })
}

/// A route or rule message as an event.
pub fn route_event(kind: u16, payload: &[u8]) -> Option<RouteEvent> {
    let (rule, deleted) = match kind {
        RTM_NEWROUTE => (false, false),
        RTM_DELROUTE => (false, true),
        RTM_NEWRULE => (true, false),
        RTM_DELRULE => (true, true),
        _ => return None,
    };
    // rtmsg and fib_rule_hdr alike: the table at octet 4, then (routes) the protocol; 12 octets.
    if payload.len() < 12 {
        return None;
    }
    let table = attributes(payload, 12)
        .iter()
        .find(|(a, _)| *a == RTA_TABLE)
        .and_then(|(_, v)| Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?)))
        .unwrap_or(u32::from(payload[4]));
    Some(RouteEvent { rule, deleted, table, protocol: if rule { 0 } else { payload[5] } })
}

/// Watch routes and policy rules of both families; `sink` as for [`watch_nftables`].
pub fn watch_routes(mut sink: impl FnMut(RouteWatch) -> bool + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    let groups = [RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV4_RULE, RTNLGRP_IPV6_ROUTE, RTNLGRP_IPV6_RULE].iter().fold(0, |m, g| m | 1 << (g - 1));
    let fd = subscribe(SockProtocol::NetlinkRoute, groups)?;
    std::thread::Builder::new().name("route-watch".into()).spawn(move || {
        read_loop(fd, |message| match message {
            None => sink(RouteWatch::Overrun),
            Some((kind, _, payload)) => route_event(kind, payload).is_none_or(|e| sink(RouteWatch::Change(e))),
        });
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(align(out.len()), 0);
        out
    }

    #[test]
    fn a_commit_gathers_the_tables_of_its_objects_until_its_generation() {
        let mut parser = NftParser::default();
        let object = |family: u8, table: &str| [vec![family, 0, 0, 0], attr(NFTA_TABLE, format!("{table}\0").as_bytes())].concat();
        let newsetelem = NFNL_SUBSYS_NFTABLES << 8 | 12;
        assert_eq!(parser.feed(newsetelem, 77, &object(1, "tessera")), None);
        assert_eq!(parser.feed(NFNL_SUBSYS_NFTABLES << 8 | 6, 77, &object(2, "nat")), None);
        let generation = [
            vec![0, 0, 0, 0],
            attr(NFTA_GEN_ID, &42u32.to_be_bytes()),
            attr(NFTA_GEN_PROC_PID, &1234u32.to_be_bytes()),
            attr(NFTA_GEN_PROC_NAME, b"nft\0"),
        ]
        .concat();
        let commit = parser.feed(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN, 77, &generation).expect("a commit");
        assert_eq!((commit.generation, commit.pid, commit.port, commit.process.as_str()), (42, 1234, 77, "nft"));
        assert_eq!(commit.tables, BTreeSet::from([("inet".into(), "tessera".into()), ("ip".into(), "nat".into())]));
        // The next commit starts empty; other subsystems are not ours.
        assert_eq!(parser.feed(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWGEN, 77, &generation).map(|c| c.tables.len()), Some(0));
        assert_eq!(parser.feed(1 << 8 | 12, 77, &object(1, "tessera")), None);
    }

    #[test]
    fn a_route_event_carries_its_table_and_protocol() {
        let mut rtmsg = vec![2, 24, 0, 0, 100, 77, 0, 1, 0, 0, 0, 0];
        assert_eq!(route_event(RTM_DELROUTE, &rtmsg), Some(RouteEvent { rule: false, deleted: true, table: 100, protocol: 77 }));
        rtmsg[4] = 252; // RT_TABLE_COMPAT: the real id is in RTA_TABLE
        rtmsg.extend(attr(RTA_TABLE, &1000u32.to_ne_bytes()));
        assert_eq!(route_event(RTM_NEWROUTE, &rtmsg).map(|e| e.table), Some(1000));
        assert_eq!(route_event(16, &rtmsg), None);
    }
}

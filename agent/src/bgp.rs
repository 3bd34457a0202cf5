//! The BGP speaker's IO: one tokio task per peer drives `tessera_bgp::Peer` — it owns the TCP
//! connection and the timers, feeds the state machine events, carries out its actions, and
//! announces this node's prefixes once the session is up. Everything BGP decides is in the pure
//! crate; this module only moves bytes and keeps time.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use tessera_bgp::{
    AFI_IPV6, Action, AsSegment, Event, Origin, PathAttribute, Peer, PeerConfig, SAFI_UNICAST, State, Timer, Update, decode, encode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// What this node announces to the peer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Announcement {
    pub prefixes: Vec<IpNet>,
    /// Next hop of IPv4 prefixes (this node's underlay address).
    pub next_hop_v4: Option<Ipv4Addr>,
    /// Next hop of IPv6 prefixes.
    pub next_hop_v6: Option<std::net::Ipv6Addr>,
    /// RFC 1997 communities attached to every prefix.
    pub communities: Vec<u32>,
}

/// How the session stands, for status and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    pub state: State,
    /// Why it last went down (or failed to come up).
    pub last_error: Option<String>,
    pub prefixes_sent: usize,
}

/// Opens a TCP connection to the peer (a closure, so the caller chooses where it is made from:
/// a network namespace in tests).
pub type Connector = Arc<dyn Fn() -> std::io::Result<std::net::TcpStream> + Send + Sync>;

/// The UPDATEs that announce `a` (IPv4 in NLRI, IPv6 in MP_REACH_NLRI), from AS `local_as`.
pub fn updates(a: &Announcement, local_as: u32, ebgp: bool) -> Vec<Update> {
    let mut base = vec![
        PathAttribute::Origin(Origin::Igp),
        PathAttribute::AsPath(if ebgp { vec![AsSegment::Sequence(vec![local_as])] } else { vec![] }),
    ];
    if !ebgp {
        base.push(PathAttribute::LocalPref(100));
    }
    if !a.communities.is_empty() {
        base.push(PathAttribute::Communities(a.communities.clone()));
    }
    let mut out = Vec::new();
    let v4: Vec<Ipv4Net> = a.prefixes.iter().filter_map(|p| if let IpNet::V4(n) = p { Some(*n) } else { None }).collect();
    if let (false, Some(hop)) = (v4.is_empty(), a.next_hop_v4) {
        let mut attributes = base.clone();
        attributes.insert(2, PathAttribute::NextHop(hop));
        out.push(Update { withdrawn: vec![], attributes, nlri: v4 });
    }
    let v6: Vec<IpNet> = a.prefixes.iter().filter(|p| matches!(p, IpNet::V6(_))).copied().collect();
    if let (false, Some(hop)) = (v6.is_empty(), a.next_hop_v6) {
        let mut attributes = base;
        attributes.push(PathAttribute::MpReach { afi: AFI_IPV6, safi: SAFI_UNICAST, next_hops: vec![IpAddr::V6(hop)], nlri: v6 });
        out.push(Update { withdrawn: vec![], attributes, nlri: vec![] });
    }
    out
}

/// Drive one peer until `stop` turns true; reports through `status`. Reconnects after a failure.
pub async fn run(
    config: PeerConfig,
    connect: Connector,
    announcement: Announcement,
    status: watch::Sender<SessionStatus>,
    mut stop: watch::Receiver<bool>,
) {
    let ebgp = config.local_as != config.peer_as;
    let local_as = config.local_as;
    let mut peer = Peer::new(config);
    let mut stream: Option<TcpStream> = None;
    let mut timers: BTreeMap<u8, (Timer, Instant)> = BTreeMap::new();
    let mut buffer: Vec<u8> = Vec::new();
    let mut queue: Vec<Event> = vec![Event::Start];
    loop {
        while let Some(event) = (!queue.is_empty()).then(|| queue.remove(0)) {
            for action in peer.handle(event) {
                match action {
                    Action::Connect => {
                        let connect = connect.clone();
                        let made = tokio::task::spawn_blocking(move || connect()).await.map_err(std::io::Error::other).and_then(|r| r);
                        match made.and_then(|s| {
                            s.set_nonblocking(true)?;
                            TcpStream::from_std(s)
                        }) {
                            Ok(s) => {
                                stream = Some(s);
                                buffer.clear();
                                queue.push(Event::Connected);
                            }
                            Err(e) => {
                                status.send_modify(|st| st.last_error = Some(format!("connect: {e}")));
                                queue.push(Event::ConnectionFailed);
                            }
                        }
                    }
                    Action::Send(message) => {
                        let bytes = encode(&message, &peer.session());
                        let written = match stream.as_mut() {
                            Some(s) => s.write_all(&bytes).await,
                            None => Err(std::io::Error::other("not connected")),
                        };
                        if written.is_err() {
                            queue.push(Event::ConnectionFailed);
                        }
                    }
                    Action::StartTimer(timer, after) => {
                        timers.insert(timer as u8, (timer, Instant::now() + after));
                    }
                    Action::StopTimer(timer) => {
                        timers.remove(&(timer as u8));
                    }
                    Action::Close => stream = None,
                    Action::RefreshRequested { afi, .. } => {
                        // Announce that family's prefixes again (RFC 2918).
                        for update in updates(&announcement, local_as, ebgp) {
                            let v6 = update.nlri.is_empty();
                            if let (true, Some(s)) = ((afi == AFI_IPV6) == v6, stream.as_mut()) {
                                let _ = s.write_all(&encode(&tessera_bgp::Message::Update(update), &peer.session())).await;
                            }
                        }
                    }
                    Action::Up { .. } => {
                        let mut sent = 0;
                        for update in updates(&announcement, local_as, ebgp) {
                            sent += update.nlri.len()
                                + update
                                    .attributes
                                    .iter()
                                    .map(|a| if let PathAttribute::MpReach { nlri, .. } = a { nlri.len() } else { 0 })
                                    .sum::<usize>();
                            for a in peer.announce(update) {
                                if let Action::Send(m) = a {
                                    let bytes = encode(&m, &peer.session());
                                    if let Some(s) = stream.as_mut() {
                                        let _ = s.write_all(&bytes).await;
                                    }
                                }
                            }
                        }
                        // End-of-RIB per family (RFC 4724): the peer may now drop what it kept
                        // stale across a graceful restart and we did not announce again.
                        for eor in [
                            Update::default(),
                            Update {
                                attributes: vec![PathAttribute::MpUnreach { afi: AFI_IPV6, safi: SAFI_UNICAST, withdrawn: vec![] }],
                                ..Default::default()
                            },
                        ] {
                            if let Some(s) = stream.as_mut() {
                                let _ = s.write_all(&encode(&tessera_bgp::Message::Update(eor), &peer.session())).await;
                            }
                        }
                        status.send_modify(|st| st.prefixes_sent = sent);
                    }
                    Action::Down { reason } => status.send_modify(|st| st.last_error = Some(reason)),
                    Action::Routes(_) => {}
                }
            }
            status.send_modify(|st| st.state = peer.state);
        }
        if peer.state == State::Idle {
            // Back off, then try again (RFC 4271's IdleHoldTime).
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => queue.push(Event::Start),
                _ = stop.changed() => return,
            }
            continue;
        }
        let next = timers.values().map(|(_, at)| *at).min();
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let mut chunk = [0u8; 4096];
        let read = async {
            match stream.as_mut() {
                Some(s) => s.read(&mut chunk).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sleep => {
                let now = Instant::now();
                let due: Vec<Timer> = timers.values().filter(|(_, at)| *at <= now).map(|(t, _)| *t).collect();
                for t in due {
                    timers.remove(&(t as u8));
                    queue.push(Event::Expired(t));
                }
            }
            got = read => match got {
                Ok(0) | Err(_) => queue.push(Event::ConnectionFailed),
                Ok(n) => {
                    buffer.extend_from_slice(&chunk[..n]);
                    loop {
                        match decode(&buffer, &peer.session()) {
                            Ok(Some((message, used))) => {
                                buffer.drain(..used);
                                queue.push(Event::Received(message));
                            }
                            Ok(None) => break,
                            Err(e) => {
                                buffer.clear();
                                queue.push(Event::Malformed(e));
                                break;
                            }
                        }
                    }
                }
            },
            _ = stop.changed() => {
                for action in peer.handle(Event::Stop) {
                    if let (Action::Send(m), Some(s)) = (action, stream.as_mut()) {
                        let _ = s.write_all(&encode(&m, &peer.session())).await;
                    }
                }
                status.send_modify(|st| st.state = peer.state);
                return;
            }
        }
    }
}

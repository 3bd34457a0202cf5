//! The BGP speaker's IO: one tokio task per peer drives `tessera_bgp::Peer` — it owns the TCP
//! connection and the timers, feeds the state machine events, carries out its actions, and
//! announces its paths once the session is up (an agent: one path, its node's prefixes; the
//! controller: one path per healthy host, with ADD-PATH). Everything BGP decides is in the
//! pure crate; this crate only moves bytes and keeps time. `tcp` opens the connections.

pub mod tcp;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use tessera_bgp::{
    Action, Event, Message, PathAttribute, Peer, PeerConfig, Speaker, State, Timer, Update, decode, encode, paths_changes, paths_family,
    paths_full, paths_sent,
};
pub use tessera_bgp::{Announcement, Paths};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// How the session stands, for status and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    pub state: State,
    /// Why it last went down (or failed to come up).
    pub last_error: Option<String>,
    /// Prefixes the peer holds from us.
    pub prefixes_sent: usize,
    /// Prefixes the peer announced to us.
    pub prefixes_received: usize,
    pub established_since: Option<SystemTime>,
    /// Times the session went down after being established.
    pub flaps: u64,
}

impl SessionStatus {
    pub fn new() -> SessionStatus {
        SessionStatus { state: State::Idle, last_error: None, prefixes_sent: 0, prefixes_received: 0, established_since: None, flaps: 0 }
    }

    /// Unix seconds since the session is established.
    pub fn established_unix(&self) -> Option<i64> {
        self.established_since.map(|t| t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0))
    }
}

impl Default for SessionStatus {
    fn default() -> Self {
        SessionStatus::new()
    }
}

/// Gives a TCP connection with the peer: dialled for an active session ([`tcp::dialer`]),
/// accepted for a passive one ([`tcp::Acceptor`]). A closure, so the caller chooses where it is
/// made (a network namespace in tests).
pub type Connector = Arc<dyn Fn() -> std::io::Result<std::net::TcpStream> + Send + Sync>;

/// A stream from the connector (dialled or accepted), made asynchronous.
async fn open(connect: &Connector) -> std::io::Result<TcpStream> {
    let connect = connect.clone();
    let made = tokio::task::spawn_blocking(move || connect()).await.map_err(std::io::Error::other).and_then(|r| r)?;
    made.set_nonblocking(true)?;
    TcpStream::from_std(made)
}

/// The prefixes an UPDATE announces and withdraws (both families).
fn prefixes_of(update: &Update) -> (Vec<IpNet>, Vec<IpNet>) {
    let mut announced: Vec<IpNet> = update.nlri.iter().map(|n| IpNet::V4(*n)).collect();
    let mut withdrawn: Vec<IpNet> = update.withdrawn.iter().map(|n| IpNet::V4(*n)).collect();
    for a in &update.attributes {
        match a {
            PathAttribute::MpReach { nlri, .. } => announced.extend(nlri),
            PathAttribute::MpUnreach { withdrawn: w, .. } => withdrawn.extend(w),
            _ => {}
        }
    }
    (announced, withdrawn)
}

/// The session's socket; writes that fail are reported as a failed connection.
struct Link {
    stream: Option<TcpStream>,
}

impl Link {
    async fn send(&mut self, messages: impl IntoIterator<Item = Message>, session: &tessera_bgp::Session) -> bool {
        let Some(s) = self.stream.as_mut() else { return false };
        let mut bytes = Vec::new();
        for m in messages {
            bytes.extend(encode(&m, session));
        }
        s.write_all(&bytes).await.is_ok()
    }
}

/// Drive one peer until `stop` turns true (then it says Cease, and the peer drops our routes;
/// a process that just exits sends nothing, so a graceful-restart peer keeps them). Announces
/// the paths `announcements` holds, following their changes (several paths per prefix with
/// ADD-PATH where the peer takes them, else each prefix's lowest-id path); reports through
/// `status`; reconnects.
pub async fn run(
    config: PeerConfig,
    connect: Connector,
    mut announcements: watch::Receiver<Paths>,
    status: watch::Sender<SessionStatus>,
    mut stop: watch::Receiver<bool>,
) {
    let speaker = |session| Speaker { local_as: config.local_as, ebgp: config.local_as != config.peer_as, session };
    let mut peer = Peer::new(config.clone());
    let mut link = Link { stream: None };
    let mut timers: BTreeMap<u8, (Timer, Instant)> = BTreeMap::new();
    let mut buffer: Vec<u8> = Vec::new();
    let mut queue: Vec<Event> = vec![Event::Start];
    // What the peer holds from us, and what it sent us, while established.
    let mut advertised: Option<Paths> = None;
    let mut received: BTreeSet<IpNet> = BTreeSet::new();
    loop {
        while let Some(event) = (!queue.is_empty()).then(|| queue.remove(0)) {
            for action in peer.handle(event) {
                // Our messages carry path identifiers where negotiated; the peer's never do.
                let session = peer.tx_session();
                match action {
                    Action::Connect => match open(&connect).await {
                        Ok(s) => {
                            link.stream = Some(s);
                            buffer.clear();
                            queue.push(Event::Connected);
                        }
                        Err(e) => {
                            status.send_modify(|st| st.last_error = Some(format!("connect: {e}")));
                            queue.push(Event::ConnectionFailed);
                        }
                    },
                    Action::Send(message) => {
                        if !link.send([message], &session).await {
                            queue.push(Event::ConnectionFailed);
                        }
                    }
                    Action::StartTimer(timer, after) => {
                        timers.insert(timer as u8, (timer, Instant::now() + after));
                    }
                    Action::StopTimer(timer) => {
                        timers.remove(&(timer as u8));
                    }
                    Action::Close => link.stream = None,
                    Action::RefreshRequested { afi, .. } => {
                        let current = advertised.clone().unwrap_or_default();
                        link.send(paths_family(&current, afi, &speaker(session)).into_iter().map(Message::Update), &session).await;
                    }
                    Action::Up { .. } => {
                        let current = announcements.borrow_and_update().clone();
                        let sent = paths_sent(&current, &speaker(session));
                        if !link.send(paths_full(&current, &speaker(session)).into_iter().map(Message::Update), &session).await {
                            queue.push(Event::ConnectionFailed);
                        }
                        advertised = Some(current);
                        status.send_modify(|st| {
                            st.prefixes_sent = sent;
                            st.established_since = Some(SystemTime::now());
                            st.last_error = None;
                        });
                    }
                    Action::Down { reason } => {
                        let was_up = advertised.take().is_some();
                        received.clear();
                        status.send_modify(|st| {
                            st.last_error = Some(reason);
                            st.flaps += u64::from(was_up);
                            st.prefixes_sent = 0;
                            st.prefixes_received = 0;
                            st.established_since = None;
                        });
                    }
                    Action::Routes(update) => {
                        let (announced, withdrawn) = prefixes_of(&update);
                        withdrawn.iter().for_each(|p| {
                            received.remove(p);
                        });
                        received.extend(announced);
                        status.send_modify(|st| st.prefixes_received = received.len());
                    }
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
        // A passive session waits for its peer to connect (the connector accepts, a while at a time).
        let waiting = config.passive && peer.state == State::Active && link.stream.is_none();
        let accepted = async { if waiting { open(&connect).await } else { std::future::pending().await } };
        let mut chunk = [0u8; 16384];
        let read = async {
            match link.stream.as_mut() {
                Some(s) => s.read(&mut chunk).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            got = accepted => {
                if let Ok(s) = got {
                    link.stream = Some(s);
                    buffer.clear();
                    queue.push(Event::Connected);
                }
            }
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
            changed = announcements.changed(), if advertised.is_some() => {
                if changed.is_err() {
                    // The owner went away without a stop: treat as a process exit.
                    return;
                }
                let current = announcements.borrow_and_update().clone();
                if let Some(old) = advertised.as_ref().filter(|old| **old != current) {
                    let session = peer.tx_session();
                    let updates = paths_changes(old, &current, &speaker(session));
                    if !link.send(updates.into_iter().map(Message::Update), &session).await {
                        queue.push(Event::ConnectionFailed);
                    }
                    status.send_modify(|st| st.prefixes_sent = paths_sent(&current, &speaker(session)));
                    advertised = Some(current);
                }
            }
            _ = stop.changed() => {
                let session = peer.tx_session();
                for action in peer.handle(Event::Stop) {
                    if let Action::Send(m) = action {
                        link.send([m], &session).await;
                    }
                }
                status.send_modify(|st| st.state = peer.state);
                return;
            }
        }
    }
}

//! One BGP session's state machine (RFC 4271 §8), sans IO: events in (the connection came up or
//! failed, a message or a decode error arrived, a timer fired, start or stop), actions out
//! (connect, send, start or stop a timer, close, the session came up or went down, routes
//! arrived). The driver owns the socket and the clock; nothing here blocks or reads time.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::error_code::*;
use crate::message::{Capability, DecodeError, Message, Notification, Open, Session, Update};

/// What this side of the session is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub local_as: u32,
    pub peer_as: u32,
    pub router_id: Ipv4Addr,
    /// Proposed hold time (seconds; 0 disables keepalives and the hold timer, else at least 3).
    pub hold_time: u16,
    /// Wait for the peer to connect instead of connecting.
    pub passive: bool,
    /// (AFI, SAFI) families announced as multiprotocol capabilities.
    pub families: Vec<(u16, u8)>,
    /// Graceful restart time to advertise (RFC 4724), if any.
    pub graceful_restart: Option<u16>,
    /// Delay between connection attempts.
    pub connect_retry: Duration,
    /// Offer to send several paths per prefix (ADD-PATH, RFC 7911) for `families`; used where
    /// the peer can receive them.
    pub add_path_send: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl State {
    /// The state's name as reports show it.
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Connect => "connect",
            State::Active => "active",
            State::OpenSent => "openSent",
            State::OpenConfirm => "openConfirm",
            State::Established => "established",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start,
    Stop,
    Connected,
    ConnectionFailed,
    Received(Message),
    Malformed(DecodeError),
    Expired(Timer),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Connect,
    Send(Message),
    StartTimer(Timer, Duration),
    StopTimer(Timer),
    Close,
    /// The session is established with the peer's OPEN, under what the two negotiated.
    Up {
        peer: Open,
        session: Session,
        hold_time: u16,
    },
    Down {
        reason: String,
    },
    Routes(Update),
    /// The peer asked for our routes of one family again (RFC 2918): announce them anew.
    RefreshRequested {
        afi: u16,
        safi: u8,
    },
}

/// The hold time a new connection waits for the peer's OPEN (RFC 4271 suggests 4 minutes).
const OPEN_HOLD: Duration = Duration::from_secs(240);

/// One peer's session.
#[derive(Debug, Clone)]
pub struct Peer {
    pub config: PeerConfig,
    pub state: State,
    session: Session,
    /// How our messages are written: `session`, plus path identifiers where negotiated.
    tx: Session,
    hold_time: u16,
    /// The peer's OPEN, between OpenConfirm and Established.
    peer_open: Option<Open>,
}

impl Peer {
    pub fn new(config: PeerConfig) -> Peer {
        Peer { config, state: State::Idle, session: Session::default(), tx: Session::default(), hold_time: 0, peer_open: None }
    }

    /// How the peer's messages read (4-octet AS paths once both sides said so).
    pub fn session(&self) -> Session {
        self.session
    }

    /// How ours are written: the same, with path identifiers for the families where we send
    /// several paths and the peer receives them.
    pub fn tx_session(&self) -> Session {
        self.tx
    }

    fn open(&self) -> Open {
        let mut capabilities: Vec<Capability> =
            self.config.families.iter().map(|(afi, safi)| Capability::Multiprotocol { afi: *afi, safi: *safi }).collect();
        capabilities.push(Capability::RouteRefresh);
        capabilities.push(Capability::FourOctetAs(self.config.local_as));
        if self.config.add_path_send {
            capabilities.push(Capability::AddPath(self.config.families.iter().map(|(afi, safi)| (*afi, *safi, 2)).collect()));
        }
        if let Some(time) = self.config.graceful_restart {
            let families = self.config.families.iter().map(|(afi, safi)| (*afi, *safi, true)).collect();
            capabilities.push(Capability::GracefulRestart { flags: 0, time, families });
        }
        Open {
            asn: self.config.local_as,
            hold_time: self.config.hold_time,
            bgp_id: self.config.router_id,
            capabilities,
            parameters: vec![],
        }
    }

    /// Tear the session down with a NOTIFICATION (when connected), back to Idle.
    fn fail(&mut self, notification: Option<Notification>, reason: String) -> Vec<Action> {
        let mut out = Vec::new();
        if let Some(n) = notification {
            out.push(Action::Send(Message::Notification(n)));
        }
        out.extend([Action::StopTimer(Timer::Hold), Action::StopTimer(Timer::Keepalive), Action::Close]);
        out.push(Action::Down { reason });
        self.state = State::Idle;
        out
    }

    fn notification(code: u8, subcode: u8) -> Option<Notification> {
        Some(Notification { code, subcode, data: Vec::new() })
    }

    /// An UPDATE to send; nothing unless the session is established.
    pub fn announce(&mut self, update: Update) -> Vec<Action> {
        if self.state == State::Established { vec![Action::Send(Message::Update(update))] } else { Vec::new() }
    }

    pub fn handle(&mut self, event: Event) -> Vec<Action> {
        use State::*;
        match (self.state, event) {
            (Idle, Event::Start) if self.config.passive => {
                self.state = Active;
                Vec::new()
            }
            (Idle, Event::Start) => {
                self.state = Connect;
                vec![Action::Connect, Action::StartTimer(Timer::ConnectRetry, self.config.connect_retry)]
            }
            (Idle, _) => Vec::new(),
            (Connect | Active, Event::Connected) => {
                self.state = OpenSent;
                vec![
                    Action::StopTimer(Timer::ConnectRetry),
                    Action::Send(Message::Open(self.open())),
                    Action::StartTimer(Timer::Hold, OPEN_HOLD),
                ]
            }
            (Connect, Event::ConnectionFailed) => {
                self.state = Active;
                vec![Action::StartTimer(Timer::ConnectRetry, self.config.connect_retry)]
            }
            (Connect | Active, Event::Expired(Timer::ConnectRetry)) if !self.config.passive => {
                self.state = Connect;
                vec![Action::Connect, Action::StartTimer(Timer::ConnectRetry, self.config.connect_retry)]
            }
            (Connect | Active, Event::Stop) => {
                self.state = Idle;
                vec![Action::StopTimer(Timer::ConnectRetry), Action::Close]
            }
            (Connect | Active, _) => Vec::new(),
            (_, Event::Stop) => self.fail(Self::notification(CEASE, 2), "administratively stopped".into()),
            (_, Event::ConnectionFailed) => self.fail(None, "the connection failed".into()),
            (_, Event::Expired(Timer::Hold)) => self.fail(Self::notification(HOLD_TIMER_EXPIRED, 0), "hold timer expired".into()),
            (_, Event::Malformed(e)) => {
                let reason = e.to_string();
                self.fail(Some(e.notification), reason)
            }
            (_, Event::Received(Message::Notification(n))) => {
                let reason = format!("the peer sent NOTIFICATION {}/{}", n.code, n.subcode);
                self.fail(None, reason)
            }
            (OpenSent, Event::Received(Message::Open(open))) => self.opened(open),
            (OpenConfirm, Event::Received(Message::Keepalive)) => {
                self.state = Established;
                let mut out = self.restart_hold();
                if let Some(peer) = self.peer_open.take() {
                    out.push(Action::Up { peer, session: self.session, hold_time: self.hold_time });
                }
                out
            }
            (OpenConfirm | Established, Event::Expired(Timer::Keepalive)) => {
                let mut out = vec![Action::Send(Message::Keepalive)];
                if self.hold_time > 0 {
                    out.push(Action::StartTimer(Timer::Keepalive, keepalive_interval(self.hold_time)));
                }
                out
            }
            (Established, Event::Received(Message::Keepalive)) => self.restart_hold(),
            (Established, Event::Received(Message::RouteRefresh(r))) => {
                let mut out = self.restart_hold();
                out.push(Action::RefreshRequested { afi: r.afi, safi: r.safi });
                out
            }
            (Established, Event::Received(Message::Update(update))) => {
                let mut out = self.restart_hold();
                out.push(Action::Routes(update));
                out
            }
            // Anything else is out of order: an FSM error, with RFC 6608's subcode for the state.
            (state, _) => {
                let subcode = match state {
                    OpenSent => 1,
                    OpenConfirm => 2,
                    _ => 3,
                };
                self.fail(Self::notification(FSM, subcode), format!("unexpected message in {state:?}"))
            }
        }
    }

    fn restart_hold(&self) -> Vec<Action> {
        if self.hold_time == 0 { Vec::new() } else { vec![Action::StartTimer(Timer::Hold, Duration::from_secs(u64::from(self.hold_time)))] }
    }

    /// The peer's OPEN: check its AS and hold time, negotiate, answer with a KEEPALIVE.
    fn opened(&mut self, open: Open) -> Vec<Action> {
        if open.asn != self.config.peer_as {
            let reason = format!("the peer is AS {}, not AS {}", open.asn, self.config.peer_as);
            return self.fail(Self::notification(OPEN_MESSAGE, BAD_PEER_AS), reason);
        }
        if open.bgp_id == self.config.router_id && self.config.local_as == self.config.peer_as {
            return self.fail(Self::notification(OPEN_MESSAGE, BAD_BGP_IDENTIFIER), "the peer has our router id".into());
        }
        self.hold_time = self.config.hold_time.min(open.hold_time);
        self.session = Session { four_octet_as: open.four_octet_as().is_some(), ..Session::default() };
        let receives = |afi: u16| {
            self.config.add_path_send
                && open.capabilities.iter().any(|c| {
                    matches!(c, Capability::AddPath(families) if families.iter().any(|(a, safi, mode)| *a == afi && *safi == crate::SAFI_UNICAST && mode & 1 != 0))
                })
        };
        self.tx = Session { add_path_v4: receives(crate::AFI_IPV4), add_path_v6: receives(crate::AFI_IPV6), ..self.session };
        self.state = State::OpenConfirm;
        let mut out = vec![Action::Send(Message::Keepalive)];
        if self.hold_time > 0 {
            out.push(Action::StartTimer(Timer::Hold, Duration::from_secs(u64::from(self.hold_time))));
            out.push(Action::StartTimer(Timer::Keepalive, keepalive_interval(self.hold_time)));
        } else {
            out.push(Action::StopTimer(Timer::Hold));
        }
        self.peer_open = Some(open);
        out
    }
}

/// A third of the hold time, as RFC 4271 suggests.
fn keepalive_interval(hold: u16) -> Duration {
    Duration::from_secs(u64::from((hold / 3).max(1)))
}

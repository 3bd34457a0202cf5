//! The session state machine, event by event (RFC 4271 §8): what it sends, which timers it sets,
//! when it comes up and why it goes down.

use std::net::Ipv4Addr;
use std::time::Duration;

use tessera_bgp::*;

fn config(passive: bool) -> PeerConfig {
    PeerConfig {
        local_as: 65001,
        peer_as: 65000,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        hold_time: 90,
        passive,
        families: vec![(AFI_IPV4, SAFI_UNICAST), (AFI_IPV6, SAFI_UNICAST)],
        graceful_restart: Some(120),
        connect_retry: Duration::from_secs(5),
        add_path_send: false,
    }
}

fn peer_open(asn: u32, hold: u16) -> Message {
    Message::Open(Open {
        asn,
        hold_time: hold,
        bgp_id: Ipv4Addr::new(10, 0, 0, 254),
        capabilities: vec![Capability::FourOctetAs(asn)],
        parameters: vec![],
    })
}

fn sent(actions: &[Action]) -> Vec<&Message> {
    actions.iter().filter_map(|a| if let Action::Send(m) = a { Some(m) } else { None }).collect()
}

fn notification(actions: &[Action]) -> Option<(u8, u8)> {
    sent(actions).into_iter().find_map(|m| if let Message::Notification(n) = m { Some((n.code, n.subcode)) } else { None })
}

/// An active peer brought to Established; the actions of each step.
fn established(hold: u16) -> (Peer, Vec<Vec<Action>>) {
    let mut p = Peer::new(config(false));
    let steps = vec![
        p.handle(Event::Start),
        p.handle(Event::Connected),
        p.handle(Event::Received(peer_open(65000, hold))),
        p.handle(Event::Received(Message::Keepalive)),
    ];
    (p, steps)
}

#[test]
fn an_active_session_comes_up_with_negotiated_timers() {
    let (p, steps) = established(30);
    assert_eq!(steps[0], vec![Action::Connect, Action::StartTimer(Timer::ConnectRetry, Duration::from_secs(5))]);
    // OPEN: our AS, hold time, router id, both families, route refresh, 4-octet AS, graceful restart.
    let Some(Message::Open(open)) = sent(&steps[1]).first().copied() else { panic!("no OPEN: {:?}", steps[1]) };
    assert_eq!((open.asn, open.hold_time, open.bgp_id), (65001, 90, Ipv4Addr::new(10, 0, 0, 1)));
    assert!(open.capabilities.contains(&Capability::Multiprotocol { afi: AFI_IPV6, safi: SAFI_UNICAST }));
    assert!(open.capabilities.contains(&Capability::FourOctetAs(65001)));
    assert!(open.capabilities.iter().any(|c| matches!(c, Capability::GracefulRestart { time: 120, .. })));
    // The peer's 30 s wins over our 90 s: hold 30, keepalives every 10.
    assert_eq!(sent(&steps[2]), vec![&Message::Keepalive]);
    assert!(steps[2].contains(&Action::StartTimer(Timer::Hold, Duration::from_secs(30))));
    assert!(steps[2].contains(&Action::StartTimer(Timer::Keepalive, Duration::from_secs(10))));
    assert_eq!(p.state, State::Established);
    assert!(steps[3].iter().any(|a| matches!(a, Action::Up { hold_time: 30, session, .. } if session.four_octet_as)));
}

#[test]
fn a_passive_session_waits_for_the_peer() {
    let mut p = Peer::new(config(true));
    assert!(p.handle(Event::Start).is_empty());
    assert_eq!(p.state, State::Active);
    assert!(p.handle(Event::Expired(Timer::ConnectRetry)).is_empty(), "a passive peer never connects");
    let actions = p.handle(Event::Connected);
    assert!(matches!(sent(&actions)[..], [Message::Open(_)]));
    assert_eq!(p.state, State::OpenSent);
}

#[test]
fn connection_failures_retry_on_the_timer() {
    let mut p = Peer::new(config(false));
    p.handle(Event::Start);
    assert_eq!(p.handle(Event::ConnectionFailed), vec![Action::StartTimer(Timer::ConnectRetry, Duration::from_secs(5))]);
    assert_eq!(p.state, State::Active);
    assert_eq!(p.handle(Event::Expired(Timer::ConnectRetry))[0], Action::Connect);
    assert_eq!(p.state, State::Connect);
}

#[test]
fn a_wrong_peer_as_is_refused_with_bad_peer_as() {
    let mut p = Peer::new(config(false));
    p.handle(Event::Start);
    p.handle(Event::Connected);
    let actions = p.handle(Event::Received(peer_open(65099, 90)));
    assert_eq!(notification(&actions), Some((error_code::OPEN_MESSAGE, error_code::BAD_PEER_AS)));
    assert!(actions.contains(&Action::Close));
    assert_eq!(p.state, State::Idle);
}

#[test]
fn keepalives_hold_timer_and_routes() {
    let (mut p, _) = established(90);
    let tick = p.handle(Event::Expired(Timer::Keepalive));
    assert_eq!(tick, vec![Action::Send(Message::Keepalive), Action::StartTimer(Timer::Keepalive, Duration::from_secs(30))]);
    let update = Update { nlri: vec!["10.9.0.0/16".parse().expect("net")], ..Default::default() };
    let actions = p.handle(Event::Received(Message::Update(update.clone())));
    assert_eq!(actions, vec![Action::StartTimer(Timer::Hold, Duration::from_secs(90)), Action::Routes(update.clone())]);
    assert_eq!(p.announce(update.clone()), vec![Action::Send(Message::Update(update))]);
    // The peer falls silent: hold timer expiry is NOTIFICATION 4, and the session is down.
    let actions = p.handle(Event::Expired(Timer::Hold));
    assert_eq!(notification(&actions), Some((error_code::HOLD_TIMER_EXPIRED, 0)));
    assert!(actions.iter().any(|a| matches!(a, Action::Down { .. })));
    assert_eq!(p.state, State::Idle);
    assert!(p.announce(Update::default()).is_empty(), "nothing is sent on a closed session");
}

#[test]
fn out_of_order_messages_are_fsm_errors_with_the_state_subcode() {
    let mut p = Peer::new(config(false));
    p.handle(Event::Start);
    p.handle(Event::Connected);
    let actions = p.handle(Event::Received(Message::Update(Update::default())));
    assert_eq!(notification(&actions), Some((error_code::FSM, 1)), "UPDATE in OpenSent");
    let (mut q, _) = established(90);
    let actions = q.handle(Event::Received(peer_open(65000, 90)));
    assert_eq!(notification(&actions), Some((error_code::FSM, 3)), "OPEN in Established");
}

#[test]
fn malformed_input_notifications_and_stops() {
    let (mut p, _) = established(90);
    let err = decode(&[0u8; 19], &Session::default()).expect_err("bad marker");
    let actions = p.handle(Event::Malformed(err));
    assert_eq!(notification(&actions), Some((error_code::MESSAGE_HEADER, error_code::CONNECTION_NOT_SYNCHRONIZED)));
    let (mut q, _) = established(90);
    let actions = q.handle(Event::Received(Message::Notification(Notification { code: 6, subcode: 4, data: vec![] })));
    assert_eq!(notification(&actions), None, "a NOTIFICATION is not answered with one");
    assert!(actions.iter().any(|a| matches!(a, Action::Down { reason } if reason.contains("6/4"))));
    let (mut r, _) = established(90);
    assert_eq!(notification(&r.handle(Event::Stop)), Some((error_code::CEASE, 2)), "administrative shutdown");
    assert_eq!(r.state, State::Idle);
}

#[test]
fn hold_time_zero_means_no_keepalives() {
    let mut p = Peer::new(config(false));
    p.handle(Event::Start);
    p.handle(Event::Connected);
    let actions = p.handle(Event::Received(peer_open(65000, 0)));
    assert!(!actions.iter().any(|a| matches!(a, Action::StartTimer(Timer::Keepalive | Timer::Hold, _))), "{actions:?}");
}

#[test]
fn a_route_refresh_asks_for_the_family_again() {
    let (mut p, _) = established(90);
    let actions = p.handle(Event::Received(Message::RouteRefresh(RouteRefresh { afi: AFI_IPV6, safi: SAFI_UNICAST })));
    assert!(actions.contains(&Action::RefreshRequested { afi: AFI_IPV6, safi: SAFI_UNICAST }), "{actions:?}");
}

/// ADD-PATH (RFC 7911): offered for sending; our messages carry path identifiers for exactly the
/// families the peer can receive them for, and the peer's messages never do.
#[test]
fn add_path_is_used_where_the_peer_receives() {
    let mut peer = Peer::new(PeerConfig { add_path_send: true, ..config(false) });
    let sent = peer.handle(Event::Start).into_iter().chain(peer.handle(Event::Connected)).find_map(|a| match a {
        Action::Send(Message::Open(open)) => Some(open),
        _ => None,
    });
    let open = sent.expect("our OPEN");
    assert!(open.capabilities.contains(&Capability::AddPath(vec![(AFI_IPV4, SAFI_UNICAST, 2), (AFI_IPV6, SAFI_UNICAST, 2)])), "{open:?}");
    let Message::Open(mut theirs) = peer_open(65000, 90) else { panic!("an OPEN") };
    theirs.capabilities.push(Capability::AddPath(vec![(AFI_IPV4, SAFI_UNICAST, 1), (AFI_IPV6, SAFI_UNICAST, 2)]));
    peer.handle(Event::Received(Message::Open(theirs)));
    let (tx, rx) = (peer.tx_session(), peer.session());
    assert!(tx.add_path_v4 && !tx.add_path_v6, "{tx:?}");
    assert!(!rx.add_path_v4 && !rx.add_path_v6, "{rx:?}");
}

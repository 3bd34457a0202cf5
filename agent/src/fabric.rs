//! The node's part in the fabric, following the enforced state: one BGP speaker task per peer
//! of its group (started, restarted on a change of its settings, stopped with a Cease when the
//! peer leaves the configuration), every session announcing the same prefixes; the VIPs it
//! holds as addresses on `lo`; and the report to the controller every few seconds (liveness,
//! which VIP failover counts on, and the sessions' states).
//!
//! The agent exiting sends nothing: with graceful restart the routers keep its routes until
//! it is back (an upgrade or a crash); a drain or a removal from the topology withdraws them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tessera_agent_api::{AgentReport, FabricReport, SessionReport, Speaker, SpeakerPeer};
use tessera_bgp::{AFI_IPV4, AFI_IPV6, Announcement, Paths, PeerConfig, SAFI_UNICAST};
use tessera_netlink::Netlink;
use tokio::sync::watch;

use crate::bgp::SessionStatus;
use crate::client::Controller;
use crate::metrics::Metrics;

/// What the enforced state asks of the fabric.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub speaker: Option<Speaker>,
    pub vips: Vec<IpAddr>,
}

/// A full report is sent at least this often even when nothing changed (a replica that missed
/// one, a restarted controller).
const FULL_REPORT: Duration = Duration::from_secs(30);

/// One running session.
#[derive(Debug)]
struct Session {
    config: PeerConfig,
    peer: SpeakerPeer,
    status: watch::Receiver<SessionStatus>,
    stop: watch::Sender<bool>,
}

/// The session settings of one peer: what, when changed, needs a new session.
fn peer_config(speaker: &Speaker, peer: &SpeakerPeer) -> PeerConfig {
    PeerConfig {
        local_as: speaker.local_as,
        peer_as: peer.asn,
        router_id: speaker.router_id,
        hold_time: speaker.hold_time,
        passive: peer.passive,
        families: vec![(AFI_IPV4, SAFI_UNICAST), (AFI_IPV6, SAFI_UNICAST)],
        graceful_restart: (speaker.graceful_restart > 0).then_some(speaker.graceful_restart),
        connect_retry: Duration::from_secs(5),
        add_path_send: false,
    }
}

/// A node announces one path (id 0): its prefixes with itself as next hop.
fn announcement(speaker: &Speaker) -> Paths {
    Paths::from([(
        0,
        Announcement {
            prefixes: speaker.prefixes.clone(),
            next_hop_v4: speaker.next_hop_v4,
            next_hop_v6: speaker.next_hop_v6,
            communities: speaker.communities.clone(),
            large_communities: speaker.large_communities.iter().map(|c| (c[0], c[1], c[2])).collect(),
        },
    )])
}

/// The speaker sessions and VIP addresses of this node.
#[derive(Debug)]
pub struct Fabric {
    netlink: Netlink,
    metrics: Arc<Metrics>,
    sessions: BTreeMap<IpAddr, Session>,
    announce: watch::Sender<Paths>,
    /// VIP addresses this agent put on `lo`.
    vips: BTreeSet<IpAddr>,
    transports: tessera_bgp_speaker::tcp::Transports,
}

impl Fabric {
    pub fn new(netlink: Netlink, metrics: Arc<Metrics>) -> Fabric {
        Fabric {
            netlink,
            metrics,
            sessions: BTreeMap::new(),
            announce: watch::channel(Paths::new()).0,
            vips: BTreeSet::new(),
            transports: Default::default(),
        }
    }

    /// Follow `desired` until the agent exits; report to `controller` every `every`.
    pub async fn run(mut self, mut desired: watch::Receiver<Desired>, controller: Controller, every: Duration) {
        let mut tick = tokio::time::interval(every);
        let mut last_sent: Option<FabricReport> = None;
        let mut last_full = tokio::time::Instant::now();
        loop {
            tokio::select! {
                changed = desired.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let want = desired.borrow_and_update().clone();
                    self.apply(&want).await;
                }
                _ = tick.tick() => {
                    let now = self.report();
                    self.observe(&now);
                    let full = last_sent.as_ref() != Some(&now) || last_full.elapsed() >= FULL_REPORT;
                    let report = AgentReport { fabric: full.then(|| now.clone()) };
                    match controller.report(&report).await {
                        Ok(()) if full => {
                            last_sent = Some(now);
                            last_full = tokio::time::Instant::now();
                        }
                        Ok(()) => {}
                        Err(e) => {
                            // Whoever answers next gets everything.
                            last_sent = None;
                            tracing::debug!(error = %e, "report not delivered");
                        }
                    }
                }
            }
        }
    }

    async fn apply(&mut self, want: &Desired) {
        self.sync_vips(&want.vips).await;
        let Some(speaker) = &want.speaker else {
            for (address, session) in std::mem::take(&mut self.sessions) {
                tracing::info!(peer = %address, "BGP peer no longer configured; closing its session");
                session.stop.send_replace(true);
            }
            return;
        };
        self.announce.send_replace(announcement(speaker));
        let wanted: BTreeMap<IpAddr, (&SpeakerPeer, PeerConfig)> =
            speaker.peers.iter().map(|p| (p.address, (p, peer_config(speaker, p)))).collect();
        self.sessions.retain(|address, session| {
            let keep = wanted.get(address).is_some_and(|(p, c)| **p == session.peer && *c == session.config);
            if !keep {
                tracing::info!(peer = %address, "BGP peer removed or changed; closing its session");
                session.stop.send_replace(true);
            }
            keep
        });
        for (address, (peer, config)) in wanted {
            if self.sessions.contains_key(&address) {
                continue;
            }
            tracing::info!(peer = %address, peer_as = peer.asn, local_as = config.local_as, "starting a BGP session");
            let (status_tx, status) = watch::channel(SessionStatus::new());
            let (stop, stopped) = watch::channel(false);
            let ttl = tessera_bgp_speaker::tcp::session_ttl(peer.multihop, config.local_as != config.peer_as);
            let connect = match self.transports.connector(peer.address, peer.port, peer.passive, ttl, peer.password_file.clone()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(peer = %address, error = %e, "cannot set up the BGP session's transport");
                    continue;
                }
            };
            tokio::spawn(crate::bgp::run(config.clone(), connect, self.announce.subscribe(), status_tx, stopped));
            self.sessions.insert(address, Session { config, peer: peer.clone(), status, stop });
        }
    }

    /// Put the held VIPs on `lo` (a /32 or /128: the node answers for them) and take off
    /// those it no longer holds.
    async fn sync_vips(&mut self, want: &[IpAddr]) {
        let want: BTreeSet<IpAddr> = want.iter().copied().collect();
        let lo = match self.netlink.require_index("lo").await {
            Ok(i) => i,
            Err(e) => return tracing::error!(error = %e, "no loopback interface for VIPs"),
        };
        for gone in self.vips.difference(&want) {
            match self.netlink.delete_address(lo, *gone).await {
                Ok(()) => tracing::info!(vip = %gone, "VIP released"),
                Err(e) => tracing::error!(vip = %gone, error = %e, "could not release the VIP"),
            }
        }
        for new in want.difference(&self.vips) {
            let prefix = if new.is_ipv4() { 32 } else { 128 };
            match self.netlink.add_address(lo, *new, prefix).await {
                Ok(()) => tracing::info!(vip = %new, "VIP taken"),
                Err(e) => tracing::error!(vip = %new, error = %e, "could not take the VIP"),
            }
        }
        self.vips = want;
    }

    fn report(&self) -> FabricReport {
        let sessions: Vec<SessionReport> = self
            .sessions
            .iter()
            .map(|(address, s)| {
                let st = s.status.borrow();
                SessionReport {
                    peer: *address,
                    asn: s.peer.asn,
                    state: st.state.name().to_string(),
                    established_since: st.established_unix(),
                    prefixes_sent: st.prefixes_sent,
                    prefixes_received: st.prefixes_received,
                    last_error: st.last_error.clone(),
                    flaps: st.flaps,
                }
            })
            .collect();
        let up = sessions.iter().any(|s| s.state == "established");
        let announced: Vec<IpNet> = if up { self.announce.borrow().values().flat_map(Announcement::sent).collect() } else { Vec::new() };
        FabricReport { sessions, announced, vips: self.vips.iter().copied().collect() }
    }

    fn observe(&self, report: &FabricReport) {
        for s in &report.sessions {
            self.metrics.bgp_session(&s.peer.to_string(), s.state == "established", s.prefixes_sent, s.prefixes_received, s.flaps);
        }
        self.metrics.vips.set(report.vips.len() as i64);
    }
}

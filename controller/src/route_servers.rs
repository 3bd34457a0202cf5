//! BGP controller mode: for groups whose `bgp.mode` is `controller`, the replica holding the
//! writer lease peers with the group's routers (route servers) and announces the group's
//! prefixes once per healthy host of the group — that host as next hop, under its own path
//! identifier (ADD-PATH, RFC 7911), so the fabric spreads the group's traffic over its hosts.
//! A router that takes one path only hears each prefix once, through one healthy host.
//!
//! Healthy as `crate::health` says (as for VIPs). A
//! replica that loses the lease closes its sessions without a word: the next holder announces
//! the same paths, and routers with graceful restart keep them meanwhile.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_bgp::{AFI_IPV4, AFI_IPV6, Announcement, Paths, PeerConfig, SAFI_UNICAST};
use tessera_bgp_speaker::SessionStatus;
use tessera_bgp_speaker::tcp::Transports;
use tessera_topology::fabric::{BgpMode, BgpPeerSpec, Fabric};
use tokio::sync::watch;

use crate::api::AppState;
use crate::health::Health;
use crate::store::{HostRecord, StoreError, TopologyRecord};

/// One route server's session, as shown by `GET /v1/bgp/controller`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerSession {
    pub peer: IpAddr,
    #[serde(rename = "as")]
    pub asn: u32,
    pub local_as: u32,
    pub state: String,
    pub established_since: Option<i64>,
    /// Paths the route server holds from us (prefix × host).
    pub prefixes_sent: usize,
    pub last_error: Option<String>,
    pub flaps: u64,
    /// The hosts announced as next hops, by group.
    pub paths: BTreeMap<String, Vec<String>>,
}

/// One running session as the API reads it: its settings and its live status.
#[derive(Debug, Clone)]
pub struct Live {
    asn: u32,
    local_as: u32,
    hosts: BTreeMap<String, Vec<String>>,
    status: watch::Receiver<SessionStatus>,
}

/// What this replica runs, for the API (empty unless it holds the lease).
pub type Status = Arc<Mutex<BTreeMap<IpAddr, Live>>>;

/// The sessions as they stand right now.
pub fn sessions(status: &Status) -> Vec<ServerSession> {
    let live = status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    live.into_iter()
        .map(|(peer, l)| {
            let st = l.status.borrow();
            ServerSession {
                peer,
                asn: l.asn,
                local_as: l.local_as,
                state: st.state.name().to_string(),
                established_since: st.established_unix(),
                prefixes_sent: st.prefixes_sent,
                last_error: st.last_error.clone(),
                flaps: st.flaps,
                paths: l.hosts.clone(),
            }
        })
        .collect()
}

/// A route server's session settings and the paths it hears.
#[derive(Debug, Clone, PartialEq)]
struct Desired {
    config: PeerConfig,
    peer: BgpPeerSpec,
    paths: Paths,
    /// Group path → hosts announced.
    hosts: BTreeMap<String, Vec<String>>,
}

/// A stable path identifier per host (its name hashed), distinct within one route server.
fn path_id(host: &str, taken: &BTreeMap<u32, Announcement>) -> u32 {
    let mut id = host.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193)).max(1);
    while taken.contains_key(&id) {
        id = id.wrapping_add(1).max(1);
    }
    id
}

/// Every route server's session and paths, from the topology, the hosts and who is healthy.
/// Pure.
fn desired(
    topology: &TopologyRecord,
    hosts: &[HostRecord],
    healthy: &dyn Fn(&HostRecord) -> bool,
    router_id: Ipv4Addr,
) -> BTreeMap<IpAddr, Desired> {
    let mut out: BTreeMap<IpAddr, Desired> = BTreeMap::new();
    for group in topology.layout.groups.iter().filter(|g| g.is_leaf()) {
        let Some(fabric) = group.fabric().ok().flatten().filter(|f| f.mode == BgpMode::Controller) else { continue };
        let mut members: Vec<&HostRecord> = hosts.iter().filter(|h| h.group == group.path && healthy(h)).collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        for peer in &fabric.peers {
            let entry = out.entry(peer.address).or_insert_with(|| Desired {
                config: config(&fabric, peer, router_id),
                peer: peer.clone(),
                paths: Paths::new(),
                hosts: BTreeMap::new(),
            });
            for host in &members {
                let id = path_id(&host.name, &entry.paths);
                entry.paths.insert(id, announcement(&fabric, group.cidrs.values().copied().collect(), host));
                entry.hosts.entry(group.path.clone()).or_default().push(host.name.clone());
            }
        }
    }
    out
}

fn config(fabric: &Fabric, peer: &BgpPeerSpec, router_id: Ipv4Addr) -> PeerConfig {
    PeerConfig {
        local_as: fabric.local_as,
        peer_as: peer.asn,
        router_id,
        hold_time: fabric.hold_time,
        passive: peer.passive,
        families: vec![(AFI_IPV4, SAFI_UNICAST), (AFI_IPV6, SAFI_UNICAST)],
        graceful_restart: (fabric.graceful_restart > 0).then_some(fabric.graceful_restart),
        connect_retry: Duration::from_secs(5),
        add_path_send: true,
    }
}

fn announcement(fabric: &Fabric, prefixes: Vec<ipnet::IpNet>, host: &HostRecord) -> Announcement {
    Announcement {
        prefixes,
        next_hop_v4: host.ips.iter().find_map(|ip| if let IpAddr::V4(v4) = ip { Some(*v4) } else { None }),
        next_hop_v6: host.ips.iter().find_map(|ip| if let IpAddr::V6(v6) = ip { Some(*v6) } else { None }),
        communities: fabric.communities.clone(),
        large_communities: fabric.large_communities.iter().map(|c| (c[0], c[1], c[2])).collect(),
    }
}

/// A running session.
#[derive(Debug)]
struct Running {
    config: PeerConfig,
    peer: BgpPeerSpec,
    paths: watch::Sender<Paths>,
    status: watch::Receiver<SessionStatus>,
    task: tokio::task::JoinHandle<()>,
    hosts: BTreeMap<String, Vec<String>>,
}

/// Every second: while this replica holds the lease, keep one session per route server with
/// the paths of the moment; when it does not, run none.
pub async fn run(state: AppState, router_id: Option<Ipv4Addr>, failover: Duration, status: Status, mut closing: watch::Receiver<bool>) {
    let mut running: BTreeMap<IpAddr, Running> = BTreeMap::new();
    let mut transports = Transports::default();
    let mut warned = false;
    loop {
        let want = match (state.writer.fence(), router_id) {
            (None, _) => Ok(BTreeMap::new()),
            (Some(_), id) => read(&state, id, failover, &mut warned).await,
        };
        match want {
            Ok(want) => reconcile(&mut running, want, &mut transports),
            Err(e) => tracing::warn!(error = %e, "reading the state for BGP controller mode failed; keeping the sessions as they are"),
        }
        report(&running, &status);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = closing.changed() => {
                running.values().for_each(|r| r.task.abort());
                return;
            }
        }
    }
}

async fn read(
    state: &AppState,
    router_id: Option<Ipv4Addr>,
    failover: Duration,
    warned: &mut bool,
) -> Result<BTreeMap<IpAddr, Desired>, StoreError> {
    let topology = state.store.topology().await?;
    let speaks = topology.layout.groups.iter().any(|g| g.fabric().ok().flatten().is_some_and(|f| f.mode == BgpMode::Controller));
    let Some(router_id) = router_id.filter(|_| speaks) else {
        if speaks && !*warned {
            *warned = true;
            tracing::error!("groups use BGP controller mode but this controller has no --bgp-router-id: it announces nothing");
        }
        return Ok(BTreeMap::new());
    };
    let hosts = state.store.hosts().await?;
    let health = Health::read(&state.dist, failover).await?;
    Ok(desired(&topology, &hosts, &|h| health.healthy(h), router_id))
}

fn reconcile(running: &mut BTreeMap<IpAddr, Running>, want: BTreeMap<IpAddr, Desired>, transports: &mut Transports) {
    running.retain(|address, r| {
        let keep = want.get(address).is_some_and(|d| d.config == r.config && d.peer == r.peer);
        if !keep {
            tracing::info!(peer = %address, "route server no longer ours or changed: closing its session");
            r.task.abort();
        }
        keep
    });
    for (address, d) in want {
        if let Some(r) = running.get_mut(&address) {
            r.paths.send_if_modified(|p| std::mem::replace(p, d.paths.clone()) != d.paths);
            r.hosts = d.hosts;
            continue;
        }
        tracing::info!(peer = %address, peer_as = d.peer.asn, local_as = d.config.local_as, "starting a BGP session with a route server");
        let (paths, announced) = watch::channel(d.paths);
        let (status_tx, status) = watch::channel(SessionStatus::new());
        // Stopped by aborting the task (no Cease): see the module's comment.
        let (_stop, stopped) = watch::channel(false);
        let ttl = tessera_bgp_speaker::tcp::session_ttl(d.peer.multihop, d.config.local_as != d.config.peer_as);
        let connect = match transports.connector(d.peer.address, d.peer.port, d.peer.passive, ttl, d.peer.password_file.clone()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(peer = %address, error = %e, "cannot set up the route server session's transport");
                continue;
            }
        };
        let config = d.config.clone();
        let task = tokio::spawn(async move {
            let _keep = _stop;
            tessera_bgp_speaker::run(config, connect, announced, status_tx, stopped).await
        });
        running.insert(address, Running { config: d.config, peer: d.peer, paths, status, task, hosts: d.hosts });
    }
}

fn report(running: &BTreeMap<IpAddr, Running>, status: &Status) {
    let live = running
        .iter()
        .map(|(address, r)| {
            let live = Live { asn: r.config.peer_as, local_as: r.config.local_as, hosts: r.hosts.clone(), status: r.status.clone() };
            (*address, live)
        })
        .collect();
    *status.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = live;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, group: &str, ip: &str) -> HostRecord {
        HostRecord { ips: vec![ip.parse().expect("ip")], ..HostRecord::bare(name, group, false) }
    }

    #[test]
    fn each_healthy_host_of_a_controller_mode_group_is_one_path_to_its_route_servers() {
        let doc = "networks: [{name: pods, cidr: 10.96.0.0/16}]
groups:
  - name: rack-1
    bgp: {mode: controller, localAs: 65010, peers: [{address: 10.250.0.1, as: 65020}]}
  - name: rack-2
    bgp: {mode: controller, localAs: 65010, peers: [{address: 10.250.0.1, as: 65020}]}
  - name: rack-3
    bgp: {localAs: 64512, peers: [{address: 10.200.3.1, as: 65003}]}
";
        let spec = tessera_topology::parse_topology(doc, tessera_topology::Format::Tessera).expect("topology");
        let layout = tessera_topology::Layout::build(&spec).expect("layout");
        let topology = TopologyRecord { revision: 1, spec, layout: Arc::new(layout) };
        let hosts = [
            host("a", "rack-1", "10.200.1.11"),
            host("b", "rack-1", "10.200.1.12"),
            host("c", "rack-2", "10.200.2.11"),
            host("d", "rack-3", "10.200.3.11"),
        ];
        let router_id = "10.255.0.1".parse().expect("id");
        let all = desired(&topology, &hosts, &|_| true, router_id);
        assert_eq!(all.keys().collect::<Vec<_>>(), vec![&"10.250.0.1".parse::<IpAddr>().expect("ip")], "agent-mode groups are not ours");
        let d = &all[&"10.250.0.1".parse::<IpAddr>().expect("ip")];
        assert!(d.config.add_path_send && d.config.local_as == 65010 && d.config.peer_as == 65020);
        assert_eq!(d.paths.len(), 3, "{:?}", d.paths);
        let hops: Vec<(String, Option<Ipv4Addr>)> = d.paths.values().map(|a| (a.prefixes[0].to_string(), a.next_hop_v4)).collect();
        assert!(hops.contains(&("10.96.0.0/18".into(), Some("10.200.1.11".parse().expect("ip")))), "{hops:?}");
        assert!(hops.contains(&("10.96.0.0/18".into(), Some("10.200.1.12".parse().expect("ip")))), "{hops:?}");
        assert!(hops.contains(&("10.96.64.0/18".into(), Some("10.200.2.11".parse().expect("ip")))), "{hops:?}");
        // Path identifiers follow the host, not its position: b keeps its id when a goes.
        let id_of =
            |d: &Desired, hop: &str| d.paths.iter().find(|(_, a)| a.next_hop_v4 == Some(hop.parse().expect("ip"))).map(|(id, _)| *id);
        let without_a = desired(&topology, &hosts, &|h| h.name != "a", router_id);
        let d2 = &without_a[&"10.250.0.1".parse::<IpAddr>().expect("ip")];
        assert_eq!(d2.paths.len(), 2);
        assert_eq!(id_of(d, "10.200.1.12"), id_of(d2, "10.200.1.12"));
        assert_eq!(d2.hosts["rack-1"], vec!["b".to_string()]);
    }
}

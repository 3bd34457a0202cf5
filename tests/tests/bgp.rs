//! Tessera's BGP speaker against BIRD 2 (`bird2`), FRR (`frr`'s bgpd) and GoBGP (`gobgpd`) from
//! Debian, each in a network namespace this test creates. Against each: the session comes up and
//! the peer learns the announced prefixes (IPv4 and IPv6) with Tessera's next hop, AS path and
//! communities, as its own CLI reports, and withdraws them on a clean stop; a wrong AS is refused
//! with NOTIFICATION 2/2 (Bad Peer AS); a silent peer is dropped when the hold timer expires;
//! graceful restart keeps the routes through a speaker crash (and without it they go); the
//! messages each daemon sends re-encode byte for byte. Against BIRD: a changing announcement,
//! large communities, iBGP, TCP-MD5, and a passive session.

use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_agent::bgp::{Announcement, Connector, Paths, SessionStatus, run};
use tessera_bgp::{AFI_IPV4, AFI_IPV6, PeerConfig, SAFI_UNICAST, State};
use tessera_tests::netns::{require_root, run as sh};

/// Two namespaces on a veth pair: the speaker's (10.77.0.1, fd00:77::1) and BIRD's (.2, ::2).
struct Pair {
    speaker: String,
    bird_ns: String,
    dir: tempfile::TempDir,
    bird: Option<Child>,
}

impl Pair {
    fn new() -> Pair {
        let prefix = format!("tb{:05x}", rand::random::<u32>() & 0xfffff);
        let (speaker, bird_ns) = (format!("{prefix}-s"), format!("{prefix}-b"));
        for ns in [&speaker, &bird_ns] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"]);
        }
        let pair = Pair { speaker, bird_ns, dir: tempfile::tempdir().expect("dir"), bird: None };
        sh(&["ip", "-n", &pair.speaker, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &pair.bird_ns]);
        for (ns, last) in [(&pair.speaker, 1), (&pair.bird_ns, 2)] {
            sh(&["ip", "-n", ns, "addr", "add", &format!("10.77.0.{last}/24"), "dev", "eth0"]);
            sh(&["ip", "-n", ns, "addr", "add", &format!("fd00:77::{last}/64"), "dev", "eth0", "nodad"]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        pair
    }

    fn start_bird(&mut self, peer_as: u32) {
        self.start_bird_with(peer_as, "");
    }

    /// BIRD passive, as AS 65000, expecting `peer_as`, with `extra` protocol options.
    fn start_bird_with(&mut self, peer_as: u32, extra: &str) {
        self.start_bird_config(format!(
            "router id 10.77.0.2;\nprotocol device {{}}\nprotocol bgp tessera {{\n  local 10.77.0.2 as 65000;\n  neighbor 10.77.0.1 as {peer_as};\n  passive on;\n  hold time 9;\n{extra}  ipv4 {{ import all; export none; }};\n  ipv6 {{ import all; export none; }};\n}}\n"
        ));
    }

    fn start_bird_config(&mut self, config: String) {
        let conf = self.dir.path().join("bird.conf");
        std::fs::write(&conf, config).expect("bird.conf");
        let (socket, pid) = (self.socket(), self.dir.path().join("bird.pid"));
        let args: Vec<&std::ffi::OsStr> =
            vec!["bird".as_ref(), "-f".as_ref(), "-c".as_ref(), conf.as_ref(), "-s".as_ref(), socket.as_ref(), "-P".as_ref(), pid.as_ref()];
        self.spawn_daemon("bird", &args, &socket);
    }

    /// Start a peer daemon in the peer namespace (stderr to `NAME.log`) and wait for `ready`.
    fn spawn_daemon(&mut self, name: &str, args: &[&std::ffi::OsStr], ready: &std::path::Path) {
        let log_path = self.dir.path().join(format!("{name}.log"));
        let log = File::create(&log_path).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.bird_ns])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        self.bird = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "{name} did not start: {}", std::fs::read_to_string(&log_path).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("bird.ctl")
    }

    /// GoBGP instead of BIRD, configured alike (passive, AS 65000, hold time 9).
    fn start_gobgp(&mut self, peer_as: u32) {
        self.start_gobgp_with(peer_as, "");
    }

    /// The same with `extra` neighbor sections (TOML).
    fn start_gobgp_with(&mut self, peer_as: u32, extra: &str) {
        let config = format!(
            "[global.config]\n  as = 65000\n  router-id = \"10.77.0.2\"\n  local-address-list = [\"10.77.0.2\"]\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"10.77.0.1\"\n    peer-as = {peer_as}\n  [neighbors.transport.config]\n    passive-mode = true\n  [neighbors.timers.config]\n    hold-time = 9\n  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv6-unicast\"\n{extra}"
        );
        let conf = self.dir.path().join("gobgp.toml");
        std::fs::write(&conf, config).expect("gobgp.toml");
        let (socket, api) = (self.socket(), format!("unix://{}", self.socket().display()));
        let args: Vec<&std::ffi::OsStr> = vec![
            "gobgpd".as_ref(),
            "-t".as_ref(),
            "toml".as_ref(),
            "-f".as_ref(),
            conf.as_ref(),
            "--api-hosts".as_ref(),
            api.as_ref(),
            "--pprof-disable".as_ref(),
        ];
        self.spawn_daemon("gobgp", &args, &socket);
    }

    /// FRR's bgpd (without zebra) instead of BIRD, configured alike.
    fn start_frr(&mut self, peer_as: u32) {
        self.start_frr_with(peer_as, "", "", "");
    }

    /// The same with extra lines: in `router bgp`, in its IPv4 and IPv6 address families, and after it.
    fn start_frr_with(&mut self, peer_as: u32, global: &str, v4: &str, after: &str) {
        let config = format!(
            "frr defaults traditional\nhostname tor\nrouter bgp 65000\n bgp router-id 10.77.0.2\n no bgp ebgp-requires-policy\n{global} neighbor 10.77.0.1 remote-as {peer_as}\n neighbor 10.77.0.1 passive\n neighbor 10.77.0.1 timers 3 9\n address-family ipv4 unicast\n{v4} exit-address-family\n address-family ipv6 unicast\n  neighbor 10.77.0.1 activate\n{} exit-address-family\n{after}",
            v4.replace("198.51.100.0/24", "2001:db8:1::/48")
        );
        let conf = self.dir.path().join("bgpd.conf");
        std::fs::write(&conf, config).expect("bgpd.conf");
        let vty = self.dir.path().join("vty");
        std::fs::create_dir_all(&vty).expect("vty dir");
        // bgpd drops to the `frr` user (and its `frrvty` group): it must reach its files.
        File::create(self.dir.path().join("frr.log")).expect("log");
        sh(&["chown", "-R", "frr:frr", self.dir.path().to_str().expect("path")]);
        let pid = self.dir.path().join("bgpd.pid");
        let args: Vec<&std::ffi::OsStr> = vec![
            "/usr/lib/frr/bgpd".as_ref(),
            "-f".as_ref(),
            conf.as_ref(),
            "-i".as_ref(),
            pid.as_ref(),
            "-Z".as_ref(),
            "-u".as_ref(),
            "frr".as_ref(),
            "-g".as_ref(),
            "frr".as_ref(),
            "-l".as_ref(),
            "10.77.0.2".as_ref(),
            "--vty_socket".as_ref(),
            vty.as_ref(),
        ];
        self.spawn_daemon("frr", &args, &vty.join("bgpd.vty"));
    }

    /// FRR's view of one prefix, as `vtysh` prints it in JSON.
    fn frr_route(&self, family: &str, prefix: &str) -> String {
        let out = Command::new("vtysh")
            .arg("--vty_socket")
            .arg(self.dir.path().join("vty"))
            .args(["-c", &format!("show bgp {family} unicast {prefix} json")])
            .output()
            .expect("vtysh");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    /// GoBGP's RIB of one family, in its own words.
    fn gobgp_rib(&self, family: &str) -> String {
        let target = format!("unix://{}", self.socket().display());
        let out = Command::new("gobgp").args(["--target", &target, "global", "rib", "-a", family]).output().expect("gobgp");
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }

    /// `birdc show route all` in BIRD's own words.
    fn routes(&self) -> String {
        let out = Command::new("birdc").arg("-s").arg(self.socket()).args(["show", "route", "all"]).output().expect("birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A connector that opens TCP connections from inside the speaker's namespace.
    fn connector(&self) -> Connector {
        self.connector_with_key(None)
    }

    /// The same, signing the session with TCP-MD5 `key` as the agent does.
    fn connector_with_key(&self, key: Option<Vec<u8>>) -> Connector {
        let path = format!("/var/run/netns/{}", self.speaker);
        Arc::new(move || {
            let (path, key) = (path.clone(), key.clone());
            std::thread::spawn(move || {
                let file = File::open(&path)?;
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::other)?;
                tessera_agent::bgp::tcp::connect("10.77.0.2:179".parse().expect("addr"), None, key.as_deref(), Duration::from_secs(3))
            })
            .join()
            .map_err(|_| std::io::Error::other("connector thread panicked"))?
        })
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        if let Some(mut b) = self.bird.take() {
            let _ = b.kill();
            let _ = b.wait();
        }
        for ns in [&self.speaker, &self.bird_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The three peers every session behaviour is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Daemon {
    Bird,
    Frr,
    Gobgp,
}

const DAEMONS: [Daemon; 3] = [Daemon::Bird, Daemon::Frr, Daemon::Gobgp];

impl Pair {
    /// Start `daemon` expecting AS `peer_as`, as a graceful-restart helper when `graceful`.
    fn start(&mut self, daemon: Daemon, peer_as: u32, graceful: bool) {
        match (daemon, graceful) {
            (Daemon::Bird, g) => self.start_bird_with(peer_as, if g { "  graceful restart on;\n" } else { "" }),
            (Daemon::Frr, g) => self.start_frr_with(peer_as, if g { " bgp graceful-restart\n" } else { "" }, "", ""),
            (Daemon::Gobgp, g) => self.start_gobgp_with(
                peer_as,
                if g { "  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 120\n" } else { "" },
            ),
        }
    }

    /// Whether `daemon` holds 10.96.0.0/17 from the speaker, as its own CLI says.
    fn has_route(&self, daemon: Daemon) -> bool {
        match daemon {
            Daemon::Bird => self.routes().contains("10.96.0.0/17"),
            Daemon::Frr => self.frr_route("ipv4", "10.96.0.0/17").contains("\"10.77.0.1\""),
            Daemon::Gobgp => self.gobgp_rib("ipv4").contains("10.96.0.0/17"),
        }
    }

    /// The daemon's process (for SIGSTOP).
    fn daemon_pid(&self, daemon: Daemon) -> i32 {
        let file = match daemon {
            Daemon::Bird => Some("bird.pid"),
            Daemon::Frr => Some("bgpd.pid"),
            Daemon::Gobgp => None,
        };
        let child = self.bird.as_ref().expect("daemon").id() as i32;
        file.and_then(|f| std::fs::read_to_string(self.dir.path().join(f)).ok()).and_then(|p| p.trim().parse().ok()).unwrap_or(child)
    }
}

fn config(local_as: u32) -> PeerConfig {
    PeerConfig {
        local_as,
        peer_as: 65000,
        router_id: "10.77.0.1".parse().expect("id"),
        hold_time: 9,
        passive: false,
        families: vec![(AFI_IPV4, SAFI_UNICAST), (AFI_IPV6, SAFI_UNICAST)],
        graceful_restart: None,
        connect_retry: Duration::from_secs(1),
        add_path_send: false,
    }
}

fn announcement() -> Announcement {
    Announcement {
        prefixes: vec!["10.96.0.0/17".parse().expect("net"), "fd00:96::/56".parse().expect("net")],
        next_hop_v4: Some("10.77.0.1".parse().expect("ip")),
        next_hop_v6: Some("fd00:77::1".parse().expect("ip")),
        communities: vec![(65001 << 16) | 42],
        large_communities: vec![(65001, 7, 9)],
    }
}

/// One path as the watch the speaker follows (keep the sender: dropping it ends the speaker).
fn announcing(a: Announcement) -> (tokio::sync::watch::Sender<Paths>, tokio::sync::watch::Receiver<Paths>) {
    tokio::sync::watch::channel(Paths::from([(0, a)]))
}

fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bird_learns_the_announced_prefixes_with_next_hop_path_and_community() {
    require_root();
    let mut pair = Pair::new();
    pair.start_bird(65001);
    let speaker = Speaker::up(&pair, config(65001));
    assert_eq!(speaker.status.borrow().prefixes_sent, 2);
    let log = pair.dir.path().join("bird.log");
    let routes = until(
        "BIRD lacks the prefixes",
        Duration::from_secs(10),
        &log,
        || pair.routes(),
        |r| r.contains("10.96.0.0/17") && r.contains("fd00:96::/56"),
    );
    assert!(routes.contains("BGP.next_hop: 10.77.0.1"), "{routes}");
    assert!(routes.contains("BGP.next_hop: fd00:77::1"), "{routes}");
    assert!(routes.contains("BGP.as_path: 65001"), "{routes}");
    assert!(routes.contains("BGP.community: (65001,42)"), "{routes}");
    assert!(routes.contains("BGP.large_community: (65001, 7, 9)"), "{routes}");
    assert!(routes.contains("BGP.origin: IGP"), "{routes}");
    // A change of the announcement while up: a VIP's /32 comes, the IPv6 prefix goes.
    let mut changed = announcement();
    changed.prefixes = vec!["10.96.0.0/17".parse().expect("net"), "192.0.2.7/32".parse().expect("net")];
    speaker.announce.send_replace(Paths::from([(0, changed)]));
    until(
        "BIRD follows the change",
        Duration::from_secs(10),
        &log,
        || pair.routes(),
        |r| r.contains("192.0.2.7/32") && !r.contains("fd00:96::/56") && r.contains("10.96.0.0/17"),
    );
    // A clean stop sends Cease: BIRD withdraws what it learned.
    speaker.stop.send_replace(true);
    until("BIRD withdraws the prefixes", Duration::from_secs(10), &log, || pair.routes(), |r| !r.contains("10.96.0.0/17"));
}

/// A wrong AS in our OPEN: each daemon answers NOTIFICATION 2/2 (Bad Peer AS), which the
/// speaker reports, and the session never comes up.
#[test]
fn a_wrong_as_is_refused_with_bad_peer_as() {
    require_root();
    for daemon in DAEMONS {
        let mut pair = Pair::new();
        pair.start(daemon, 65001, false);
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let (status_tx, status) = status_channel();
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let (_announced, announcements) = announcing(announcement());
        // The daemon expects AS 65001; this speaker says 65099.
        runtime.spawn(run(config(65099), pair.connector(), announcements, status_tx, stop));
        wait_for(&format!("{daemon:?}'s NOTIFICATION is reported"), Duration::from_secs(20), || {
            status.borrow().last_error.as_deref().is_some_and(|e| e.contains("NOTIFICATION 2/2"))
        });
        assert_ne!(status.borrow().state, State::Established, "{daemon:?}");
    }
}

fn status_channel() -> (tokio::sync::watch::Sender<SessionStatus>, tokio::sync::watch::Receiver<SessionStatus>) {
    tokio::sync::watch::channel(SessionStatus::new())
}

/// A speaker task of the test's own runtime, with its status and a clean-stop switch.
struct Speaker {
    /// Keeps the speaker's task running.
    _runtime: tokio::runtime::Runtime,
    status: tokio::sync::watch::Receiver<SessionStatus>,
    stop: tokio::sync::watch::Sender<bool>,
    announce: tokio::sync::watch::Sender<Paths>,
}

impl Speaker {
    /// Start a speaker with `config` towards the pair's daemon and wait until it is up.
    fn up(pair: &Pair, config: PeerConfig) -> Speaker {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let (status_tx, status) = status_channel();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (announce, announcements) = announcing(announcement());
        runtime.spawn(run(config, pair.connector(), announcements, status_tx, stopped));
        wait_for("the session comes up", Duration::from_secs(30), || status.borrow().state == State::Established);
        Speaker { _runtime: runtime, status, stop, announce }
    }
}

/// Read with `read` until `done` holds (or panic after `limit` with the last reading and `log`).
fn until<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    log: &std::path::Path,
    mut read: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let value = read();
        if done(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: {value:?}\n{}", std::fs::read_to_string(log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each daemon stops answering (SIGSTOP): after the negotiated 9 s hold time the speaker gives
/// up with "hold timer expired".
#[test]
fn a_silent_peer_is_dropped_when_the_hold_timer_expires() {
    require_root();
    for daemon in DAEMONS {
        let mut pair = Pair::new();
        pair.start(daemon, 65001, false);
        let speaker = Speaker::up(&pair, config(65001));
        let pid = nix::unistd::Pid::from_raw(pair.daemon_pid(daemon));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("stop the daemon");
        let started = Instant::now();
        wait_for(&format!("the hold timer expires with {daemon:?}"), Duration::from_secs(20), || {
            speaker.status.borrow().last_error.as_deref() == Some("hold timer expired")
        });
        let took = started.elapsed();
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("continue the daemon");
        assert!(took >= Duration::from_secs(5), "{daemon:?}: expired after {took:?}, before the hold time could have run out");
    }
}

/// The speaker dies without a word (its task aborted: the connection just closes, as on a
/// SIGKILL) and comes back. With graceful restart each daemon keeps the routes meanwhile;
/// without it, it drops them at once — the control that shows the check can fail.
#[test]
fn graceful_restart_keeps_the_routes_through_a_speaker_crash() {
    require_root();
    for daemon in DAEMONS {
        for graceful in [false, true] {
            let mut pair = Pair::new();
            pair.start(daemon, 65001, graceful);
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            let mut cfg = config(65001);
            cfg.graceful_restart = graceful.then_some(30);
            let (status_tx, status) = status_channel();
            let (_stop_tx, stop) = tokio::sync::watch::channel(false);
            let (_announced, announcements) = announcing(announcement());
            let task = runtime.spawn(run(cfg.clone(), pair.connector(), announcements.clone(), status_tx, stop.clone()));
            wait_for("the session comes up", Duration::from_secs(20), || status.borrow().state == State::Established);
            wait_for(&format!("{daemon:?} has the prefix"), Duration::from_secs(10), || pair.has_route(daemon));
            task.abort();
            std::thread::sleep(Duration::from_millis(1500));
            let kept = pair.has_route(daemon);
            assert_eq!(kept, graceful, "{daemon:?} with graceful restart {graceful} kept the route: {kept}");
            if graceful {
                let (status_tx, status) = status_channel();
                runtime.spawn(run(cfg, pair.connector(), announcements, status_tx, stop));
                wait_for("the session comes back", Duration::from_secs(20), || status.borrow().state == State::Established);
                wait_for(&format!("{daemon:?} has the route after the restart"), Duration::from_secs(10), || pair.has_route(daemon));
            }
        }
    }
}

#[test]
fn gobgp_learns_the_announced_prefixes_with_next_hop_path_and_community() {
    require_root();
    let mut pair = Pair::new();
    pair.start_gobgp(65001);
    let speaker = Speaker::up(&pair, config(65001));
    let log = pair.dir.path().join("gobgp.log");
    let (v4, v6) = until(
        "GoBGP lacks the prefixes",
        Duration::from_secs(10),
        &log,
        || (pair.gobgp_rib("ipv4"), pair.gobgp_rib("ipv6")),
        |(v4, v6)| v4.contains("10.96.0.0/17") && v6.contains("fd00:96::/56"),
    );
    let line = v4.lines().find(|l| l.contains("10.96.0.0/17")).expect("v4 route");
    assert!(line.contains("10.77.0.1") && line.contains("65001") && line.contains("65001:42"), "{v4}");
    let line6 = v6.lines().find(|l| l.contains("fd00:96::/56")).expect("v6 route");
    assert!(line6.contains("fd00:77::1") && line6.contains("65001"), "{v6}");
    speaker.stop.send_replace(true);
    until("GoBGP withdraws the prefixes", Duration::from_secs(10), &log, || pair.gobgp_rib("ipv4"), |v4| !v4.contains("10.96.0.0/17"));
}

#[test]
fn frr_learns_the_announced_prefixes_with_next_hop_path_and_community() {
    require_root();
    let mut pair = Pair::new();
    pair.start_frr(65001);
    let speaker = Speaker::up(&pair, config(65001));
    let log = pair.dir.path().join("frr.log");
    let (v4, _) = until(
        "FRR lacks the prefixes",
        Duration::from_secs(10),
        &log,
        || (pair.frr_route("ipv4", "10.96.0.0/17"), pair.frr_route("ipv6", "fd00:96::/56")),
        |(v4, v6)| v4.contains("\"10.77.0.1\"") && v6.contains("fd00:77::1"),
    );
    assert!(v4.contains("\"string\":\"65001\"") && v4.contains("65001:42"), "{v4}");
    speaker.stop.send_replace(true);
    until(
        "FRR withdraws the prefixes",
        Duration::from_secs(10),
        &log,
        || pair.frr_route("ipv4", "10.96.0.0/17"),
        |v4| !v4.contains("\"10.77.0.1\""),
    );
}

/// What a daemon sends, captured raw: the session is opened by hand (our OPEN, then KEEPALIVE),
/// a ROUTE-REFRESH asks for the IPv4 routes again, and a message of an unknown type draws a
/// NOTIFICATION. Every message is decoded and encoded again: the bytes must be the daemon's.
fn capture(pair: &Pair) -> Vec<Vec<u8>> {
    use std::io::{Read, Write};
    use tessera_bgp::{Capability, Message, Open, RouteRefresh, Session, encode};
    let mut stream = (pair.connector())().expect("connect");
    stream.set_read_timeout(Some(Duration::from_millis(1500))).expect("timeout");
    let session = Session { four_octet_as: true, ..Session::default() };
    let open = Open {
        asn: 65001,
        hold_time: 30,
        bgp_id: "10.77.0.1".parse().expect("id"),
        capabilities: vec![
            Capability::Multiprotocol { afi: AFI_IPV4, safi: SAFI_UNICAST },
            Capability::Multiprotocol { afi: AFI_IPV6, safi: SAFI_UNICAST },
            Capability::RouteRefresh,
            Capability::FourOctetAs(65001),
            // Graceful restart: peers then close their initial table with End-of-RIB.
            Capability::GracefulRestart {
                flags: 0,
                time: 120,
                families: vec![(AFI_IPV4, SAFI_UNICAST, false), (AFI_IPV6, SAFI_UNICAST, false)],
            },
        ],
        parameters: vec![],
    };
    stream.write_all(&encode(&Message::Open(open), &session)).expect("open");
    stream.write_all(&encode(&Message::Keepalive, &session)).expect("keepalive");
    let mut raw = Vec::new();
    let read_for = |stream: &mut std::net::TcpStream, raw: &mut Vec<u8>, quiet: Duration| {
        let mut chunk = [0u8; 65536];
        let mut last = Instant::now();
        while last.elapsed() < quiet {
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    raw.extend_from_slice(&chunk[..n]);
                    last = Instant::now();
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
                Err(_) => break,
            }
        }
    };
    read_for(&mut stream, &mut raw, Duration::from_secs(4));
    stream.write_all(&encode(&Message::RouteRefresh(RouteRefresh { afi: AFI_IPV4, safi: SAFI_UNICAST }), &session)).expect("refresh");
    read_for(&mut stream, &mut raw, Duration::from_secs(2));
    // A message of an unknown type (9): NOTIFICATION 1/3, Bad Message Type.
    let mut broken = encode(&Message::Keepalive, &session);
    broken[18] = 9;
    stream.write_all(&broken).expect("broken");
    read_for(&mut stream, &mut raw, Duration::from_secs(2));
    let mut messages = Vec::new();
    let mut at = 0;
    while at + 19 <= raw.len() {
        let len = usize::from(u16::from_be_bytes([raw[at + 16], raw[at + 17]]));
        if len < 19 || at + len > raw.len() {
            break;
        }
        messages.push(raw[at..at + len].to_vec());
        at += len;
    }
    messages
}

/// Decode each captured message and encode it again; the kinds seen, by name.
fn round_trip(daemon: &str, messages: &[Vec<u8>]) -> std::collections::BTreeSet<&'static str> {
    use tessera_bgp::{Message, Session, decode, encode};
    let session = Session { four_octet_as: true, ..Session::default() };
    let mut kinds = std::collections::BTreeSet::new();
    for (i, bytes) in messages.iter().enumerate() {
        let (message, used) = decode(bytes, &session).unwrap_or_else(|e| panic!("{daemon} message {i}: {e}: {bytes:02x?}")).expect("whole");
        assert_eq!(used, bytes.len(), "{daemon} message {i}");
        let again = encode(&message, &session);
        assert!(
            again == *bytes,
            "{daemon} message {i} ({message:?}) does not encode back to its bytes:\n daemon {bytes:02x?}\n  again {again:02x?}"
        );
        kinds.insert(match message {
            Message::Open(_) => "open",
            Message::Update(u) if u.nlri.is_empty() && u.attributes.is_empty() && u.withdrawn.is_empty() => "end-of-rib",
            Message::Update(_) => "update",
            Message::Notification(_) => "notification",
            Message::Keepalive => "keepalive",
            Message::RouteRefresh(_) => "route-refresh",
        });
    }
    if let Ok(dir) = std::env::var("TESSERA_CAPTURE_DIR") {
        let hex: Vec<String> = messages.iter().map(|m| m.iter().map(|b| format!("{b:02x}")).collect()).collect();
        std::fs::write(format!("{dir}/{daemon}.hex"), hex.join("\n") + "\n").expect("capture file");
    }
    kinds
}

#[test]
fn messages_captured_from_bird_frr_and_gobgp_round_trip_byte_for_byte() {
    require_root();
    let full = ["end-of-rib", "keepalive", "notification", "open", "update"];
    // BIRD: static routes with communities, large communities and MED, both families.
    let mut pair = Pair::new();
    pair.start_bird_config(
        "router id 10.77.0.2;\nprotocol device {}\n\
         protocol static s4 { ipv4; route 198.51.100.0/24 blackhole { bgp_community.add((65000,7)); bgp_large_community.add((65000,1,2)); bgp_med = 5; }; route 203.0.113.0/25 blackhole; }\n\
         protocol static s6 { ipv6; route 2001:db8:1::/48 blackhole { bgp_community.add((65000,8)); }; }\n\
         protocol bgp tessera {\n  local 10.77.0.2 as 65000;\n  neighbor 10.77.0.1 as 65001;\n  passive on;\n  hold time 9;\n  graceful restart on;\n  ipv4 { import all; export all; };\n  ipv6 { import all; export all; };\n}\n"
            .to_string(),
    );
    let kinds = round_trip("bird", &capture(&pair));
    assert!(full.iter().all(|k| kinds.contains(k)), "BIRD sent {kinds:?}");
    drop(pair);

    // GoBGP: routes added through its API, with communities and a large community.
    let mut pair = Pair::new();
    pair.start_gobgp(65001);
    let target = format!("unix://{}", pair.socket().display());
    for (family, prefix, extra) in [
        ("ipv4", "198.51.100.0/24", vec!["community", "65000:7", "large-community", "65000:1:2", "med", "5"]),
        ("ipv6", "2001:db8:1::/48", vec![]),
    ] {
        let out = Command::new("gobgp")
            .args(["--target", &target, "global", "rib", "add", "-a", family, prefix])
            .args(&extra)
            .output()
            .expect("gobgp");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // GoBGP advertises no graceful restart (so no End-of-RIB) and closes on a bad message
    // type without a NOTIFICATION.
    let kinds = round_trip("gobgp", &capture(&pair));
    assert!(["keepalive", "open", "update"].iter().all(|k| kinds.contains(k)), "GoBGP sent {kinds:?}");
    drop(pair);

    // FRR: networks without a RIB (no zebra), tagged by a route map.
    let mut pair = Pair::new();
    pair.start_frr_with(
        65001,
        " no bgp network import-check\n",
        "  network 198.51.100.0/24 route-map tag\n",
        "route-map tag permit 10\n set community 65000:7\n set large-community 65000:1:2\n set metric 5\n",
    );
    let kinds = round_trip("frr", &capture(&pair));
    assert!(full.iter().all(|k| kinds.contains(k)), "FRR sent {kinds:?}");
}

/// TCP-MD5 (RFC 2385): BIRD with a password accepts the speaker that signs with the same key,
/// and never sees a session from one that does not sign or signs with another key.
#[test]
fn tcp_md5_signed_sessions_come_up_and_unsigned_ones_do_not() {
    require_root();
    let mut pair = Pair::new();
    pair.start_bird_with(65001, "  password \"s3cret-key\";\n");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for (key, comes_up) in [(None, false), (Some(b"wrong-key".to_vec()), false), (Some(b"s3cret-key".to_vec()), true)] {
        let (status_tx, status) = status_channel();
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let (_announced, announcements) = announcing(announcement());
        runtime.spawn(run(config(65001), pair.connector_with_key(key.clone()), announcements, status_tx, stop));
        let deadline = Instant::now() + Duration::from_secs(if comes_up { 20 } else { 6 });
        while Instant::now() < deadline && status.borrow().state != State::Established {
            std::thread::sleep(Duration::from_millis(50));
        }
        let up = status.borrow().state == State::Established;
        assert_eq!(up, comes_up, "key {key:?}: established {up}; {:?}", status.borrow());
        if comes_up {
            let log = pair.dir.path().join("bird.log");
            until(
                "BIRD learns the prefixes over the signed session",
                Duration::from_secs(10),
                &log,
                || pair.routes(),
                |r| r.contains("10.96.0.0/17"),
            );
        }
        stop_tx.send_replace(true);
    }
}

/// iBGP: the same AS on both sides: no AS prepended, LOCAL_PREF 100 sent, as BIRD reports.
#[test]
fn bird_learns_ibgp_routes_with_local_pref_and_an_empty_as_path() {
    require_root();
    let mut pair = Pair::new();
    // BIRD takes iBGP peers for multihop by default; this one is adjacent (`direct`).
    pair.start_bird_config(
        "router id 10.77.0.2;\nprotocol device {}\nprotocol bgp tessera {\n  local 10.77.0.2 as 65000;\n  neighbor 10.77.0.1 as 65000;\n  direct;\n  passive on;\n  hold time 9;\n  ipv4 { import all; export none; };\n  ipv6 { import all; export none; };\n}\n"
            .to_string(),
    );
    let speaker = Speaker::up(&pair, PeerConfig { local_as: 65000, ..config(65000) });
    let log = pair.dir.path().join("bird.log");
    let routes = until(
        "BIRD lacks the iBGP prefixes",
        Duration::from_secs(10),
        &log,
        || pair.routes(),
        |r| r.contains("10.96.0.0/17") && r.contains("fd00:96::/56"),
    );
    assert!(routes.contains("BGP.local_pref: 100"), "{routes}");
    assert!(routes.contains("BGP.as_path: \n") || routes.lines().any(|l| l.trim() == "BGP.as_path:"), "{routes}");
    assert!(routes.contains("BGP.next_hop: 10.77.0.1"), "{routes}");
    drop(speaker);
}

/// A passive session: BIRD connects (to port 179 in the speaker's namespace), the speaker
/// accepts it as this peer's, and BIRD learns the prefixes.
#[test]
fn a_passive_speaker_accepts_birds_connection() {
    require_root();
    let mut pair = Pair::new();
    pair.start_bird_config(
        "router id 10.77.0.2;\nprotocol device {}\nprotocol bgp tessera {\n  local 10.77.0.2 as 65000;\n  neighbor 10.77.0.1 as 65001;\n  connect delay time 1;\n  connect retry time 1;\n  hold time 9;\n  ipv4 { import all; export none; };\n  ipv6 { import all; export none; };\n}\n"
            .to_string(),
    );
    let path = format!("/var/run/netns/{}", pair.speaker);
    let (transports, connect) = std::thread::spawn(move || {
        let file = File::open(&path).expect("netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let mut transports = tessera_agent::bgp::tcp::Transports::default();
        let connect = transports.connector("10.77.0.2".parse().expect("ip"), 179, true, None, None).expect("listen on 179");
        (transports, connect)
    })
    .join()
    .expect("thread");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (status_tx, status) = status_channel();
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let (_announced, announcements) = announcing(announcement());
    runtime.spawn(run(PeerConfig { passive: true, ..config(65001) }, connect, announcements, status_tx, stop));
    wait_for("BIRD's connection is accepted and the session comes up", Duration::from_secs(20), || {
        status.borrow().state == State::Established
    });
    let log = pair.dir.path().join("bird.log");
    until("BIRD learns the prefixes", Duration::from_secs(10), &log, || pair.routes(), |r| r.contains("10.96.0.0/17"));
    drop(transports);
}

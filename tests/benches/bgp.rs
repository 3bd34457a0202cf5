//! BGP as users run it: release binaries in the virtual datacenter on a BIRD fabric (root).
//!
//! 1. One speaker announcing 10,000 prefixes to BIRD: a host holding 10,000 VIPs (each a /32
//!    on `lo` and an announcement) beside its rack's prefix. The agent is started and timed
//!    until its ToR has all 10,001 routes; its peak memory. Yardstick from the same run: BIRD
//!    announcing 10,000 static routes to BIRD (speaker start until the receiver has them all).
//! 2. Failover, with tuned timers (hold 3 s, no graceful restart, VIP failover 3 s, reports
//!    every second) and with the defaults (hold 90 s, graceful restart 120 s, VIP failover
//!    10 s, reports every 3 s): a host dies (link down, then its agent killed); the time until
//!    its ToR's ECMP group for the rack drops it, and until its VIP answers again from the
//!    other rack, for a client in each rack.
//!
//! `cargo build --release --bins && cargo bench -p tessera-tests --bench bgp`
//! (`TESSERA_BENCH_PREFIXES` changes the 10,000; `TESSERA_BENCH_QUICK=1` skips the defaults).

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tessera_tests::netns::{finish, require_root, run};
use tessera_tests::process_memory;
use tessera_tests::vdc::{Datacenter, Timers};

const WHOAMI: u16 = 7000;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The `N networks` of `birdc show route count`.
fn networks(count: &str) -> usize {
    let words: Vec<&str> = count.split_whitespace().collect();
    words.windows(2).find(|w| w[1] == "networks").and_then(|w| w[0].parse().ok()).unwrap_or(0)
}

/// The i-th /24 (or /32) of 100.64.0.0/10: outside every Tessera network here.
fn shared(i: usize, shift: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x6440_0000u32 + ((i as u32) << shift))
}

fn poll(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// The receiving BIRD's view: when its session `protocol` came up, and when it held `all`
/// networks, both counted from now.
fn session_then_routes(socket: &std::path::Path, protocol: &str, all: usize) -> (Duration, Duration) {
    let birdc = |args: &[&str]| {
        let out = Command::new("birdc").arg("-s").arg(socket).args(args).output().expect("birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let started = Instant::now();
    poll("the session comes up", Duration::from_secs(120), || {
        birdc(&["show", "protocols", protocol]).lines().any(|l| l.starts_with(protocol) && l.contains("Established"))
    });
    let up = started.elapsed();
    poll("every route arrives", Duration::from_secs(300), || networks(&birdc(&["show", "route", "count"])) >= all);
    (up, started.elapsed())
}

/// BIRD to BIRD: the reference figures for `prefixes` routes over one session: from the
/// speaker's start until the session is up and until the receiver has every route; its peak.
fn bird_to_bird(prefixes: usize) -> (Duration, Duration, f64) {
    let tag = format!("bb{:05x}", rand::random::<u32>() & 0xfffff);
    let (a, b) = (format!("{tag}-a"), format!("{tag}-b"));
    let dir = tempfile::tempdir().expect("dir");
    struct Cleanup(Vec<String>, Vec<Child>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for c in &mut self.1 {
                let _ = c.kill();
                let _ = c.wait();
            }
            for ns in &self.0 {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
    }
    let mut cleanup = Cleanup(vec![a.clone(), b.clone()], Vec::new());
    for ns in [&a, &b] {
        run(&["ip", "netns", "add", ns]);
        run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
    run(&["ip", "-n", &a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b]);
    run(&["ip", "-n", &a, "addr", "add", "10.78.0.1/24", "dev", "eth0"]);
    run(&["ip", "-n", &b, "addr", "add", "10.78.0.2/24", "dev", "eth0"]);
    run(&["ip", "-n", &a, "link", "set", "eth0", "up"]);
    run(&["ip", "-n", &b, "link", "set", "eth0", "up"]);
    let start = |ns: &str, conf: String| -> (Child, std::path::PathBuf) {
        let path = dir.path().join(format!("{ns}.conf"));
        std::fs::write(&path, conf).expect("conf");
        let socket = dir.path().join(format!("{ns}.ctl"));
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "bird", "-f", "-c"])
            .arg(&path)
            .arg("-s")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bird");
        (child, socket)
    };
    let receiver = "router id 10.78.0.2;\nprotocol device {}\nprotocol bgp speaker {\n  local 10.78.0.2 as 65001;\n  neighbor 10.78.0.1 as 64512;\n  passive on;\n  ipv4 { import all; export none; };\n}\n";
    let (child, receiver_socket) = start(&b, receiver.to_string());
    cleanup.1.push(child);
    poll("the receiving BIRD starts", Duration::from_secs(10), || receiver_socket.exists());
    let mut speaker = String::from("router id 10.78.0.1;\nprotocol device {}\nprotocol static announced {\n  ipv4;\n");
    for i in 0..prefixes {
        speaker.push_str(&format!("  route {}/24 blackhole;\n", shared(i, 8)));
    }
    speaker.push_str("}\nprotocol bgp receiver {\n  local 10.78.0.1 as 64512;\n  neighbor 10.78.0.2 as 65001;\n  connect delay time 1;\n  ipv4 { import none; export all; };\n}\n");
    let (child, _) = start(&a, speaker);
    let pid = child.id();
    cleanup.1.push(child);
    let (up, all) = session_then_routes(&receiver_socket, "speaker", prefixes);
    (up, all, process_memory(pid).1)
}

/// A topology of `racks` racks peering with their ToRs with these timers.
fn topology(hold: u16, graceful_restart: u16) -> String {
    let mut t = String::from("networks:\n  - name: pods\n    cidr: 10.96.0.0/16\ngroups:\n");
    for r in 1..=2 {
        t.push_str(&format!(
            "  - name: rack-{r}\n    assignment: {{rack: r{r}}}\n    bgp: {{localAs: 64512, holdTime: {hold}, gracefulRestart: {graceful_restart}, peers: [{{address: 10.200.{r}.1, as: {}}}]}}\n",
            65000 + r
        ));
    }
    t
}

fn tor_networks(dc: &Datacenter, rack: usize) -> usize {
    networks(&dc.birdc(&dc.tors[rack], "show route count"))
}

fn announce_many(prefixes: usize) {
    let (bird_up, bird_all, bird_peak) = bird_to_bird(prefixes);
    let mut dc = Datacenter::with_bgp_fabric(1, 1, &topology(90, 0), Timers::FAST);
    poll("the rack prefix reaches the ToR", Duration::from_secs(30), || tor_networks(&dc, 0) >= 1);
    let created = Instant::now();
    for i in 0..prefixes {
        dc.api("POST", "/v1/vips", Some(json!({"address": shared(i, 0).to_string(), "hosts": ["r1h1"]})));
    }
    let defined = created.elapsed();
    let all = prefixes + 1;
    let live = poll("the running agent announces every VIP", Duration::from_secs(300), || tor_networks(&dc, 0) >= all);
    // Now from a cold agent: killed (no graceful restart: its routes go at once), started again.
    dc.kill_agent(0);
    poll("the ToR drops the dead agent's routes", Duration::from_secs(30), || tor_networks(&dc, 0) == 0);
    let socket = dc.dir.path().join(format!("{}.bird.ctl", dc.tors[0]));
    let started = Instant::now();
    dc.start_agent(0);
    let spawned = started.elapsed();
    let (up, cold) = session_then_routes(&socket, "r1h1", all);
    let (up, cold) = (up + spawned, cold + spawned);
    let peak = dc.agent_pid(0).map(|p| process_memory(p).1).unwrap_or(0.0);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("{prefixes} prefixes over one session (time from the speaker's start: session up, every route at the receiver):");
    println!(
        "  yardstick BIRD -> BIRD: up {:.0} ms (BIRD waits its 1 s connect delay), all {:.0} ms: {:.0} ms after the session; speaker peak {bird_peak:.1} MB",
        ms(bird_up),
        ms(bird_all),
        ms(bird_all - bird_up)
    );
    println!(
        "  tessera-agent -> BIRD:  up {:.0} ms, all {:.0} ms: {:.0} ms after the session ({all} routes: {prefixes} VIPs on lo + the rack); agent peak {peak:.1} MB",
        ms(up),
        ms(cold),
        ms(cold - up)
    );
    println!(
        "  defining {prefixes} VIPs through the API: {:.1} s; announced {:.2} s after the last definition",
        defined.as_secs_f64(),
        live.as_secs_f64()
    );
}

/// `from` (a pod) reaches address `to`.
fn reaches(dc: &Datacenter, from: &str, to: &str) -> bool {
    let pod = dc.pods.iter().find(|p| p.name == from).expect("pod");
    finish(dc.probe(&pod.ns, &json!([{"id": "x", "proto": "whoami", "dst": to, "port": WHOAMI}]), 0.5))["x"] == json!(pod.ip)
}

fn failover(label: &str, hold: u16, graceful_restart: u16, timers: Timers) {
    const VIP: &str = "192.0.2.10";
    let mut dc = Datacenter::with_bgp_fabric(2, 2, &topology(hold, graceful_restart), timers);
    dc.api("POST", "/v1/tenants", Some(json!({"name": "shop"})));
    dc.add_pod("rack1-client", 1, "shop", "default", &[]);
    dc.add_pod("rack2-client", 3, "shop", "default", &[]);
    for i in [0, 2] {
        let ns = dc.hosts[i].ns.clone();
        dc.serve(&ns, &[], &[WHOAMI], &[]);
    }
    dc.api("POST", "/v1/vips", Some(json!({"address": VIP, "hosts": ["r1h1", "r2h1"]})));
    let tor1 = dc.tors[0].clone();
    let ecmp_of = |dc: &Datacenter| dc.kernel_route(&tor1, "10.96.0.0/17").matches("nexthop").count();
    poll("the fabric converges with the VIP on r1h1", Duration::from_secs(60), || {
        ecmp_of(&dc) == 2 && reaches(&dc, "rack1-client", VIP) && reaches(&dc, "rack2-client", VIP)
    });
    let died = Instant::now();
    dc.kill_host(0);
    let (mut ecmp, mut near, mut far) = (None, None, None);
    while ecmp.is_none() || near.is_none() || far.is_none() {
        assert!(died.elapsed() < Duration::from_secs(600), "{label}: ECMP {ecmp:?}, VIP rack 1 {near:?}, rack 2 {far:?}");
        if ecmp.is_none() && ecmp_of(&dc) < 2 {
            ecmp = Some(died.elapsed());
        }
        if near.is_none() && reaches(&dc, "rack1-client", VIP) {
            near = Some(died.elapsed());
        }
        if far.is_none() && reaches(&dc, "rack2-client", VIP) {
            far = Some(died.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64()).unwrap_or(f64::NAN);
    println!(
        "failover, {label}: ToR drops the dead host from ECMP after {:.1} s; its VIP answers again after {:.1} s (client in the dead host's rack) and {:.1} s (other rack)",
        secs(ecmp),
        secs(near),
        secs(far)
    );
}

fn main() {
    require_root();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    announce_many(env_or("TESSERA_BENCH_PREFIXES", 10_000));
    failover("tuned (hold 3 s, no graceful restart, VIP failover 3 s, reports 1 s)", 3, 0, Timers::FAST);
    if std::env::var("TESSERA_BENCH_QUICK").is_err() {
        failover("defaults (hold 90 s, graceful restart 120 s, VIP failover 10 s, reports 3 s)", 90, 120, Timers::DEFAULT);
    }
}

//! What the table costs traffic through a node (needs root and iperf3; runs in network
//! namespaces it creates and removes): a client pod and a server pod on one node, the node
//! forwarding between them, with no table, with Tessera's table for those two pods alone
//! (~10 elements), and with the table of a node of 110 more endpoints (~100,000 elements).
//!
//! Prints, for each: established TCP throughput (iperf3), new connections per second (a
//! connect/close loop: every connection's first packet goes through the lookups), and the
//! rate of small UDP packets with the conntrack shortcut removed (every packet looked up);
//! then the ratios the dataplane is held to.
//! `cargo bench -p tessera-agent --bench dataplane`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tessera_agent::nft::Nft;
use tessera_agent_api::Ruleset;
use tessera_policy::compile::{Class, EndpointRules, Family, Region, SideRules, Verdict};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 70, 1, 2);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 70, 2, 2);
const LOOP_PORT: u16 = 9000;
const IPERF_PORT: u16 = 5201;
const SECONDS: u64 = 4;
const ROUNDS: usize = 3;
const FILLERS: u32 = 110;
const PEERS: u32 = 910;

fn sh(args: &[&str]) {
    let status = Command::new(args[0]).args(&args[1..]).status().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(status.success(), "{args:?}");
}

fn exact(peer: u32, proto: u8, port: u16) -> Region {
    Region {
        family: Family::V4,
        peer_first: peer.into(),
        peer_last: peer.into(),
        class: Class::Ports(proto),
        service_first: port,
        service_last: port,
    }
}

fn rules(id: &str, ip: Ipv4Addr, ingress: SideRules) -> EndpointRules {
    EndpointRules {
        endpoint: id.into(),
        host: Some("node".into()),
        ips: vec![IpAddr::V4(ip)],
        ingress: ingress.into(),
        egress: SideRules { default: Verdict::Allow, exceptions: Vec::new() }.into(),
    }
}

/// The node's table: the server admits the client on the bench's ports (and, with `fillers`,
/// 910 other peers like every other endpoint); the client is unrestricted; `fillers` more
/// endpoints of 910 peers each fill the node to about 100,000 elements.
fn table(fillers: u32) -> Ruleset {
    let client = u32::from(CLIENT);
    let mut server = vec![exact(client, 6, IPERF_PORT), exact(client, 17, IPERF_PORT), exact(client, 6, LOOP_PORT)];
    let peers = |base: u32| (0..PEERS).map(move |p| exact(base + p * 2, 6, 5432));
    if fillers > 0 {
        server.extend(peers(0x0b00_0000));
    }
    server.sort();
    let mut endpoints = vec![
        rules("client", CLIENT, SideRules { default: Verdict::Allow, exceptions: Vec::new() }),
        rules("server", SERVER, SideRules { default: Verdict::Deny, exceptions: server }),
    ];
    for i in 0..fillers {
        let exceptions = peers(0x0c00_0000 + i * 4096).collect();
        endpoints.push(rules(&format!("e{i}"), Ipv4Addr::from(0x0a46_0300 + i), SideRules { default: Verdict::Deny, exceptions }));
    }
    let refs: Vec<&EndpointRules> = endpoints.iter().collect();
    let r = tessera_policy::nft::render(&refs);
    Ruleset::new(r.skeleton, r.sets, r.rules)
}

/// The same table without the conntrack shortcut: every packet goes through the lookups.
fn without_shortcut(r: &Ruleset) -> Ruleset {
    let skeleton = r.skeleton.replace("\t\tct state established,related accept\n", "");
    assert_ne!(skeleton, r.skeleton, "the shortcut rule is where the bench expects it");
    Ruleset::new(skeleton, r.sets.clone(), r.rules - 1)
}

/// Run `f` on a thread inside network namespace `ns`.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(path).expect("netns");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

struct Lab {
    client: String,
    node: String,
    server: String,
    servers: Vec<Child>,
    stop: Arc<AtomicBool>,
}

impl Lab {
    fn new() -> Lab {
        let suffix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos() & 0xfffff).unwrap_or(1);
        let [client, node, server] = ["c", "n", "s"].map(|r| format!("tsrdp{r}{suffix:05x}"));
        let lab = Lab { client, node, server, servers: Vec::new(), stop: Arc::default() };
        for ns in [&lab.client, &lab.node, &lab.server] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        for (pod, side, pod_ip, node_ip) in [(&lab.client, "1", CLIENT, "10.70.1.1"), (&lab.server, "2", SERVER, "10.70.2.1")] {
            let (outer, inner) = (format!("n{side}"), format!("p{side}"));
            sh(&["ip", "-n", &lab.node, "link", "add", &outer, "type", "veth", "peer", "name", &inner, "netns", pod]);
            sh(&["ip", "-n", &lab.node, "addr", "add", &format!("{node_ip}/24"), "dev", &outer]);
            sh(&["ip", "-n", &lab.node, "link", "set", &outer, "up"]);
            sh(&["ip", "-n", pod, "addr", "add", &format!("{pod_ip}/24"), "dev", &inner]);
            sh(&["ip", "-n", pod, "link", "set", &inner, "up"]);
            sh(&["ip", "-n", pod, "route", "add", "default", "via", node_ip]);
        }
        sh(&["ip", "netns", "exec", &lab.node, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        for setting in ["net.ipv4.ip_local_port_range=1024 65000", "net.ipv4.tcp_tw_reuse=1"] {
            sh(&["ip", "netns", "exec", &lab.client, "sysctl", "-qw", setting]);
        }
        lab
    }

    /// iperf3's server and the connect/close loop's listener, in the server pod.
    fn serve(&mut self) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.server, "iperf3", "-s", "-p", &IPERF_PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 (apt install iperf3; scripts/test-all.sh does)");
        self.servers.push(child);
        let stop = self.stop.clone();
        in_ns(&self.server, move || {
            let listener = TcpListener::bind(("0.0.0.0", LOOP_PORT)).expect("listen");
            // Blocking accepts; the lab's end unblocks the last one by deleting the namespace.
            while !stop.load(Ordering::Relaxed) {
                if let Ok((stream, _)) = listener.accept() {
                    drop(stream);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(500));
    }

    fn iperf(&self, extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["netns", "exec", &self.client, "iperf3", "-J", "-c", "10.70.2.2", "-p", "5201", "-t"];
        let secs = SECONDS.to_string();
        args.push(&secs);
        args.extend_from_slice(extra);
        let out = Command::new("ip").args(&args).output().expect("iperf3 client");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("iperf3: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// Established TCP throughput, in Gbit/s.
    fn tcp(&self) -> f64 {
        self.iperf(&[])["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9
    }

    /// Small UDP packets received per second.
    fn udp_pps(&self) -> f64 {
        let report = self.iperf(&["-u", "-l", "64", "-b", "0"]);
        let sum = &report["end"]["sum"];
        let received = sum["packets"].as_f64().unwrap_or(0.0) - sum["lost_packets"].as_f64().unwrap_or(0.0);
        received / sum["seconds"].as_f64().unwrap_or(SECONDS as f64)
    }

    /// Connections opened and closed per second from the client pod.
    fn connections(&self) -> f64 {
        let count = Arc::new(AtomicU64::new(0));
        let counted = count.clone();
        let took = in_ns(&self.client, move || {
            let started = Instant::now();
            let to = SocketAddr::from((SERVER, LOOP_PORT));
            while started.elapsed() < Duration::from_secs(SECONDS) {
                // The server closes first (its side keeps the TIME_WAIT), the client on EOF.
                if let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
                    let _ = std::io::Read::read(&mut s, &mut [0u8; 1]);
                    drop(s);
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            }
            started.elapsed()
        })
        .join()
        .expect("loop");
        count.load(Ordering::Relaxed) as f64 / took.as_secs_f64()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.client, &self.node, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        // The listener's thread is parked in accept() in a namespace now gone: the process
        // ends without it.
    }
}

fn main() {
    let root = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false);
    if !root || Command::new("iperf3").arg("--version").output().is_err() {
        eprintln!("dataplane bench: needs root and iperf3; skipped");
        return;
    }
    let mut lab = Lab::new();
    lab.serve();
    // nft runs in the node's namespace: this thread enters it.
    let file = std::fs::File::open(format!("/var/run/netns/{}", lab.node)).expect("netns");
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter the node");
    let nft = Nft::new("nft");
    let (small, large) = (table(0), table(FILLERS));
    println!(
        "a node forwarding between two of its pods; tables of {} and {} elements; {SECONDS} s per figure",
        small.element_count(),
        large.element_count()
    );
    // Rounds interleave the three tables (the machine's noise falls on each alike); medians.
    let mut figures: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); 3];
    for round in 0..ROUNDS {
        for (i, (label, ruleset)) in
            [("no table", None), ("small table", Some(&small)), ("large table", Some(&large))].into_iter().enumerate()
        {
            match ruleset {
                Some(r) => nft.replace(r).expect("table"),
                None => {
                    let _ = Command::new("nft").args(["delete", "table", "inet", "tessera"]).stderr(Stdio::null()).status();
                }
            }
            let (tcp, conns) = (lab.tcp(), lab.connections());
            if let Some(r) = ruleset {
                nft.replace(&without_shortcut(r)).expect("table without the shortcut");
            }
            let pps = lab.udp_pps();
            println!(
                "  round {round} {label:<12} established TCP {tcp:6.2} Gbit/s | new connections {conns:8.0}/s | 64-byte UDP, every packet looked up {pps:9.0}/s"
            );
            figures[i].push((tcp, conns, pps));
        }
    }
    let median = |runs: &[(f64, f64, f64)], pick: fn(&(f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(pick).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let figures: Vec<(f64, f64, f64)> =
        figures.iter().map(|runs| (median(runs, |f| f.0), median(runs, |f| f.1), median(runs, |f| f.2))).collect();
    println!("medians of {ROUNDS} rounds:");
    for (label, f) in ["no table", "small table", "large table"].iter().zip(&figures) {
        println!(
            "  {label:<12} established TCP {:6.2} Gbit/s | new connections {:8.0}/s | 64-byte UDP, every packet looked up {:9.0}/s",
            f.0, f.1, f.2
        );
    }
    let [none, small, large] = [figures[0], figures[1], figures[2]];
    println!("ratios (goals in brackets):");
    println!("  new connections/s, large table ÷ small table: {:.2} [≥ 0.90]", large.1 / small.1);
    println!("  packets/s without the conntrack shortcut, large ÷ small: {:.2} [≥ 0.60]", large.2 / small.2);
    println!(
        "  established TCP, large table ÷ no table: {:.2} [≥ 0.90]; small table ÷ no table: {:.2}",
        large.0 / none.0,
        small.0 / none.0
    );
    println!("  new connections/s, large table ÷ no table: {:.2}", large.1 / none.1);
}

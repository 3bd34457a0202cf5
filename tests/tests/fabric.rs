//! The virtual datacenter on a BGP fabric (root; see `tessera_tests::vdc`, `Underlay::Bgp`):
//! a BIRD ToR per rack and a BIRD spine learn every route from the agents' speakers — the test
//! gives none. Pods reach each other across racks; each ToR spreads its rack's prefix over the
//! rack's hosts (ECMP); a dead host leaves the ECMP group and traffic to its rack keeps
//! flowing; a VIP moves to a surviving host and answers again; a drained or removed host
//! withdraws its routes.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tessera_tests::netns::{finish, require_root};
use tessera_tests::vdc::{Datacenter, Timers};

const WHOAMI: u16 = 7000;
const VIP: &str = "192.0.2.10";

/// Two racks, each peering with its ToR; short timers so failures show in seconds. Graceful
/// restart is off: a dead host's routes go when the hold timer runs out, not 120 s later.
const TOPOLOGY: &str = "networks:
  - name: pods
    cidr: 10.96.0.0/16
groups:
  - name: rack-1
    assignment: {rack: r1}
    bgp: {localAs: 64512, holdTime: 3, gracefulRestart: 0, peers: [{address: 10.200.1.1, as: 65001}]}
  - name: rack-2
    assignment: {rack: r2}
    bgp: {localAs: 64512, holdTime: 3, gracefulRestart: 0, peers: [{address: 10.200.2.1, as: 65002}]}
";

const RACK1: &str = "10.96.0.0/17";
const RACK2: &str = "10.96.128.0/17";

/// Wait until `check` holds; panics after `limit` with `context()`. Returns the time it took.
fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool, context: impl Fn() -> String) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}\n{}", context());
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

/// The next hops of the kernel's route to `destination` in `ns` (ECMP: several).
fn next_hops(dc: &Datacenter, ns: &str, destination: &str) -> Vec<String> {
    let route = dc.kernel_route(ns, destination);
    let words: Vec<&str> = route.split_whitespace().collect();
    let mut hops: Vec<String> = words.windows(2).filter(|w| w[0] == "via").map(|w| w[1].to_string()).collect();
    hops.sort();
    hops
}

/// `from` asks `to` (an address) who it is; the answer must be `from`'s own address (no NAT).
fn reaches(dc: &Datacenter, from: &str, to: &str) -> bool {
    let pod = dc.pods.iter().find(|p| p.name == from).expect("pod");
    let seen = finish(dc.probe(&pod.ns, &json!([{"id": "x", "proto": "whoami", "dst": to, "port": WHOAMI}]), 1.0));
    seen["x"] == json!(pod.ip)
}

fn bgp_node<'a>(status: &'a Value, node: &str) -> &'a Value {
    status.as_array().and_then(|a| a.iter().find(|n| n["node"] == node)).expect("node in /v1/bgp")
}

#[test]
fn a_bgp_fabric_learns_every_route_from_the_agents() {
    require_root();
    let mut dc = Datacenter::with_bgp_fabric(2, 2, TOPOLOGY, Timers::FAST);
    let (tor1, tor2, spine) = (dc.tors[0].clone(), dc.tors[1].clone(), dc.router.clone());
    let context = |dc: &Datacenter| {
        format!(
            "ToR1:\n{}\nToR2:\n{}\nspine:\n{}\nagent r1h1:\n{}",
            dc.birdc(&dc.tors[0], "show protocols"),
            dc.birdc(&dc.tors[1], "show route"),
            dc.birdc(&dc.router, "show route"),
            dc.agent_log(0)
        )
    };
    dc.api("POST", "/v1/tenants", Some(json!({"name": "shop"})));
    dc.add_pod("a", 0, "shop", "default", &[]);
    dc.add_pod("b", 1, "shop", "default", &[]);
    dc.add_pod("c", 2, "shop", "default", &[]);
    dc.add_pod("d", 3, "shop", "default", &[]);
    let namespaces: Vec<String> = dc.pods.iter().map(|p| p.ns.clone()).chain([dc.hosts[0].ns.clone(), dc.hosts[2].ns.clone()]).collect();
    for ns in namespaces {
        dc.serve(&ns, &[], &[WHOAMI], &[]);
    }

    // Each ToR spreads its rack's prefix over both hosts; the other rack's comes from the spine.
    let up = wait_until(
        "the ToRs learn both racks",
        Duration::from_secs(30),
        || {
            next_hops(&dc, &tor1, RACK1) == ["10.200.1.11", "10.200.1.12"]
                && next_hops(&dc, &tor2, RACK2) == ["10.200.2.11", "10.200.2.12"]
                && next_hops(&dc, &tor1, RACK2) == ["10.201.1.1"]
                && next_hops(&dc, &spine, RACK1) == ["10.201.1.2"]
                // The spine passes rack 1's prefix on to ToR2 a moment after it learns it.
                && next_hops(&dc, &tor2, RACK1).len() == 1
        },
        || context(&dc),
    );
    eprintln!("fabric converged {up:?} after the agents started");
    let aspath = dc.birdc(&tor2, &format!("show route {RACK1} all"));
    assert!(aspath.contains(&format!("BGP.as_path: {} 65001 64512", tessera_tests::vdc::SPINE_AS)), "{aspath}");

    // Every pod reaches every other, across racks, with no route given by the test.
    let pods: Vec<(String, String)> = dc.pods.iter().map(|p| (p.name.clone(), p.ip.clone())).collect();
    for (from, _) in &pods {
        for (to, ip) in pods.iter().filter(|(to, _)| to != from) {
            assert!(reaches(&dc, from, ip), "{from} cannot reach {to} ({ip})\n{}", context(&dc));
        }
    }

    // The controller sees every session established and every node announcing what it should.
    wait_until(
        "GET /v1/bgp shows every session established and in sync",
        Duration::from_secs(15),
        || {
            let status = dc.api("GET", "/v1/bgp", None);
            dc.hosts.iter().all(|h| {
                let n = bgp_node(&status, &h.name);
                n["inSync"] == true && n["sessions"][0]["state"] == "established"
            })
        },
        || dc.api("GET", "/v1/bgp", None).to_string(),
    );

    // A VIP either r1h1 or r2h1 may hold: r1h1 takes it (fewest VIPs, then name), answers for
    // it and announces it; the whole fabric learns the /32.
    let vip = dc.api("POST", "/v1/vips", Some(json!({"address": VIP, "hosts": ["r1h1", "r2h1"]})));
    assert_eq!(vip["holder"], Value::Null, "{vip}");
    wait_until(
        "the VIP is held by r1h1 and reachable",
        Duration::from_secs(15),
        || dc.api("GET", &format!("/v1/vips/{VIP}"), None)["holder"] == "r1h1" && reaches(&dc, "d", VIP),
        || context(&dc),
    );
    assert_eq!(next_hops(&dc, &tor1, &format!("{VIP}/32")), ["10.200.1.11"]);

    // r1h1 dies. Its ToR drops it from the ECMP group when the hold timer runs out; traffic to
    // the rack's other pod keeps flowing; the VIP moves to r2h1 and answers again.
    let died = Instant::now();
    dc.kill_host(0);
    let mut ecmp = None;
    let mut vip_back = None;
    while ecmp.is_none() || vip_back.is_none() {
        assert!(died.elapsed() < Duration::from_secs(30), "after r1h1 died: ECMP {ecmp:?}, VIP {vip_back:?}\n{}", context(&dc));
        if ecmp.is_none() && next_hops(&dc, &tor1, RACK1) == ["10.200.1.12"] {
            ecmp = Some(died.elapsed());
        }
        if vip_back.is_none() && reaches(&dc, "d", VIP) {
            vip_back = Some(died.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("r1h1 died: ToR1's ECMP group shrank after {ecmp:?}, the VIP answered from r2h1 after {vip_back:?}");
    assert_eq!(dc.api("GET", &format!("/v1/vips/{VIP}"), None)["holder"], "r2h1");
    assert!(reaches(&dc, "c", &pods[1].1) && reaches(&dc, "d", &pods[1].1), "pod b on r1h2 is unreachable\n{}", context(&dc));

    // Draining r2h2 withdraws its announcement; pod d on it stays reachable through r2h1.
    dc.api("POST", "/v1/hosts/r2h2/drain", None);
    wait_until("r2h2 withdraws", Duration::from_secs(10), || next_hops(&dc, &tor2, RACK2) == ["10.200.2.11"], || context(&dc));
    assert!(reaches(&dc, "b", &pods[3].1), "pod d on a drained host is unreachable\n{}", context(&dc));
    dc.api("DELETE", "/v1/hosts/r2h2/drain", None);
    wait_until(
        "r2h2 announces again",
        Duration::from_secs(10),
        || next_hops(&dc, &tor2, RACK2) == ["10.200.2.11", "10.200.2.12"],
        || context(&dc),
    );

    // Removing r2h2 from the inventory: its agent, refused by the controller, withdraws.
    dc.api("DELETE", "/v1/hosts/r2h2", None);
    wait_until(
        "a removed host withdraws",
        Duration::from_secs(15),
        || next_hops(&dc, &tor2, RACK2) == ["10.200.2.11"],
        || format!("{}\nagent r2h2:\n{}", context(&dc), dc.agent_log(3)),
    );
}

/// An agent restart (SIGKILL, then started again) with graceful restart on: its ToR keeps the
/// dead agent's routes meanwhile (the rack stays spread over both hosts) and takes them fresh
/// from the new agent. The other rack, with graceful restart off, is the control: its ToR drops
/// the killed agent's routes at once.
#[test]
fn graceful_restart_keeps_an_agents_routes_through_its_restart() {
    require_root();
    let topology = TOPOLOGY.replacen("gracefulRestart: 0", "gracefulRestart: 60", 1);
    let mut dc = Datacenter::with_bgp_fabric(2, 2, &topology, Timers::FAST);
    let (tor1, tor2) = (dc.tors[0].clone(), dc.tors[1].clone());
    let context =
        |dc: &Datacenter| format!("ToR1:\n{}\nToR2:\n{}", dc.birdc(&dc.tors[0], "show route all"), dc.birdc(&dc.tors[1], "show protocols"));
    wait_until(
        "both racks spread over their hosts",
        Duration::from_secs(30),
        || next_hops(&dc, &tor1, RACK1).len() == 2 && next_hops(&dc, &tor2, RACK2).len() == 2,
        || context(&dc),
    );
    dc.kill_agent(0);
    dc.kill_agent(2);
    wait_until(
        "rack 2 (no graceful restart) drops its killed agent",
        Duration::from_secs(5),
        || next_hops(&dc, &tor2, RACK2).len() == 1,
        || context(&dc),
    );
    let stale = dc.birdc(&tor1, "show protocols all r1h1");
    assert!(stale.contains("Neighbor graceful restart active"), "BIRD is not holding r1h1's routes for its restart:\n{stale}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(next_hops(&dc, &tor1, RACK1), ["10.200.1.11", "10.200.1.12"], "rack 1 lost its restarting host\n{}", context(&dc));
    dc.start_agent(0);
    dc.start_agent(2);
    wait_until(
        "the restarted agents' sessions are up and their routes fresh",
        Duration::from_secs(30),
        || {
            let r1h1 = dc.birdc(&tor1, "show protocols all r1h1");
            r1h1.contains("Established")
                && !r1h1.contains("graceful restart active")
                && next_hops(&dc, &tor1, RACK1).len() == 2
                && next_hops(&dc, &tor2, RACK2).len() == 2
        },
        || context(&dc),
    );
}

/// BGP controller mode: the controller holding the writer lease feeds a BIRD route server in
/// the router with one path per healthy host of each rack (ADD-PATH); the router installs each
/// rack as an ECMP route over its hosts, and pods reach each other across racks with no route
/// given by the test. A host that dies is no longer announced once its agent has been silent
/// for the failover time; traffic to its rack's other pod keeps flowing.
#[test]
fn controller_mode_spreads_each_rack_over_its_healthy_hosts() {
    require_root();
    let topology = format!(
        "networks:\n  - name: pods\n    cidr: 10.96.0.0/16\ngroups:\n  - name: zone\n    bgp: {{mode: controller, localAs: {}, holdTime: 9, peers: [{{address: 127.0.0.1, port: {{ROUTE_SERVER_PORT}}, as: {}, multihop: 2}}]}}\n    groups:\n      - name: rack-1\n        assignment: {{rack: r1}}\n      - name: rack-2\n        assignment: {{rack: r2}}\n",
        tessera_tests::vdc::CONTROLLER_AS,
        tessera_tests::vdc::ROUTE_SERVER_AS
    );
    let mut dc = Datacenter::with_route_server(2, 2, &topology, Timers::FAST);
    let router = dc.router.clone();
    let context = |dc: &Datacenter| {
        format!(
            "route server:\n{}\n{}\nGET /v1/bgp/controller: {}",
            dc.birdc(&dc.router, "show protocols all controller"),
            dc.birdc(&dc.router, "show route all"),
            dc.api("GET", "/v1/bgp/controller", None)
        )
    };
    let (rack1, rack2) = ("10.96.0.0/17", "10.96.128.0/17");
    let up = wait_until(
        "the router spreads both racks over their hosts",
        Duration::from_secs(30),
        || {
            next_hops(&dc, &router, rack1) == ["10.200.1.11", "10.200.1.12"]
                && next_hops(&dc, &router, rack2) == ["10.200.2.11", "10.200.2.12"]
        },
        || context(&dc),
    );
    eprintln!("controller mode: the router had both racks as ECMP routes {up:?} after start");
    let status = dc.api("GET", "/v1/bgp/controller", None);
    assert_eq!(status["holdsLease"], true, "{status}");
    assert_eq!(status["sessions"][0]["state"], "established", "{status}");
    assert_eq!(status["sessions"][0]["paths"]["zone/rack-1"], json!(["r1h1", "r1h2"]), "{status}");

    dc.api("POST", "/v1/tenants", Some(json!({"name": "shop"})));
    dc.add_pod("a", 0, "shop", "default", &[]);
    dc.add_pod("b", 1, "shop", "default", &[]);
    dc.add_pod("c", 2, "shop", "default", &[]);
    for ns in dc.pods.iter().map(|p| p.ns.clone()).collect::<Vec<_>>() {
        dc.serve(&ns, &[], &[WHOAMI], &[]);
    }
    let ips: Vec<String> = dc.pods.iter().map(|p| p.ip.clone()).collect();
    for (from, to) in [("a", &ips[2]), ("c", &ips[0]), ("c", &ips[1]), ("b", &ips[2])] {
        assert!(reaches(&dc, from, to), "{from} cannot reach {to}\n{}", context(&dc));
    }

    let died = Instant::now();
    dc.kill_host(0);
    let gone = wait_until(
        "the dead host's path is withdrawn",
        Duration::from_secs(20),
        || next_hops(&dc, &router, rack1) == ["10.200.1.12"],
        || context(&dc),
    );
    eprintln!("controller mode: r1h1 died; the router dropped it from rack 1's ECMP route after {gone:?}");
    assert!(died.elapsed() >= Duration::from_secs(2), "withdrawn before the failover time could have run out");
    assert!(reaches(&dc, "c", &ips[1]), "pod b on r1h2 is unreachable\n{}", context(&dc));
}

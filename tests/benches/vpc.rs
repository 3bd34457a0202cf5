//! VPC route tables at 5,000 hosts, as users run them: the release controller with its default
//! timings (a pass every 30 s and a second after a change, failover after 10 s of silence, 5
//! mutating calls a second) keeping a route table of moto's EC2 server, through the proxy of
//! `tessera_tests::aws` (no faults here: it counts and times the calls).
//!
//! The topology: 3 zones × 8 racks in 10.96.0.0/12; 5,000 hosts spread over them, each with a
//! real moto instance in its zone's subnet; three hosts per rack report as agents do (every
//! second), the others are registered and silent. Figures:
//! 1. routes written (goal ≤ 24) and the plan's over-coverage (goal 0);
//! 2. EC2 calls of the first sync, and its time from the first reports to the last route —
//!    beside the yardstick of the same run: boto3 making as many CreateRoute calls at 5/s;
//! 3. EC2 calls for 100 hosts added to existing racks (goal 0);
//! 4. time from a gateway's silence to its rack's route moved (ReplaceRoute answered), beside
//!    the configured failover time.
//!
//! `cargo build --release --bins && cargo bench -p tessera-tests --bench vpc`
//! (`TESSERA_BENCH_HOSTS` changes the 5,000).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tessera_tests::aws::{Ec2Proxy, Fate, Faults, Moto};
use tessera_tests::{Controller, free_port};

const ZONES: usize = 3;
const RACKS: usize = 8;
const REPORTERS: usize = 3;
const FAILOVER: Duration = Duration::from_secs(10);

fn wait(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where host `i` goes: its zone (and subnet, as `ec2.py setup` spreads instances) and rack.
fn placement(i: usize) -> (usize, usize) {
    (i % ZONES, (i / ZONES) % RACKS)
}

fn main() {
    let hosts: usize = std::env::var("TESSERA_BENCH_HOSTS").ok().and_then(|v| v.parse().ok()).unwrap_or(5000);
    let moto = Moto::start();
    let started = Instant::now();
    let setup = moto.ec2(&["setup", &(hosts + 100).to_string()]);
    let list = |key: &str| -> Vec<String> { setup[key].as_array().expect(key).iter().map(|v| v.as_str().expect("id").into()).collect() };
    let (instances, ips, table) = (list("instances"), list("ips"), setup["table"].as_str().expect("table").to_string());
    println!("moto: {} instances in 3 subnets/zones made in {:.1?}", hosts + 100, started.elapsed());
    let proxy = Ec2Proxy::start(&moto.endpoint, Faults::default());

    let dir = tempfile::tempdir().expect("dir");
    let topology = dir.path().join("topology.yaml");
    std::fs::write(&topology, tessera_tests::zones_and_racks().replace("10.0.0.0/8", "10.96.0.0/12")).expect("topology");
    let token = format!("bench-{}", rand::random::<u64>());
    let env = [
        ("TESSERA_NO_DEMO", "true"),
        ("TESSERA_TOPOLOGY", topology.to_str().expect("path")),
        ("TESSERA_AWS_REGION", "us-east-1"),
        ("TESSERA_AWS_ENDPOINT_URL", proxy.endpoint.as_str()),
        ("TESSERA_AWS_ROUTE_TABLES", table.as_str()),
        ("TESSERA_AWS_SDK_RETRIES", "false"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ];
    let c = Controller::start_with(free_port(), &tessera_tests::sqlite_url(), &token, &env);
    let client = reqwest::blocking::Client::new();
    let add = |i: usize, name: &str| {
        let (zone, rack) = placement(i);
        let host = json!({"name": name, "ips": [ips[i]], "labels": {"zone": format!("z{zone}"), "rack": format!("r{rack}")}, "cloudTarget": instances[i]});
        let answer = client.post(format!("{}/v1/hosts", c.url)).bearer_auth(&token).json(&host).send().expect("host");
        assert_eq!(answer.status(), 201, "{}", answer.text().unwrap_or_default());
    };
    // Registered by 16 clients at once, as an installer would (the controller rebuilds its
    // compiled cluster once per batch of host changes, not once per host).
    let registering = Instant::now();
    std::thread::scope(|s| {
        for t in 0..16 {
            let add = &add;
            s.spawn(move || (t..hosts).step_by(16).for_each(|i| add(i, &format!("h{i:05}"))));
        }
    });
    println!("{hosts} hosts registered in {:.1?} (no agent reporting yet: no gateway, no route)", registering.elapsed());
    assert_eq!(proxy.log().len(), 0);

    // The first REPORTERS hosts of each rack (by name) report every second.
    let mut reporters: BTreeMap<(usize, usize), Vec<(String, String)>> = BTreeMap::new();
    for i in 0..hosts {
        let slot = reporters.entry(placement(i)).or_default();
        if slot.len() < REPORTERS {
            let name = format!("h{i:05}");
            let t: Value = client
                .post(format!("{}/v1/tokens", c.url))
                .bearer_auth(&token)
                .json(&json!({"name": name, "role": "node", "node": name}))
                .send()
                .and_then(|r| r.json())
                .expect("token");
            slot.push((name, t["token"].as_str().expect("token").to_string()));
        }
    }
    let silent = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (url, quiet) = (c.url.clone(), silent.clone());
    let agents: Vec<(String, String)> = reporters.values().flatten().cloned().collect();
    let reports_from = proxy.now();
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::new();
        loop {
            for (name, token) in &agents {
                if *quiet.lock().expect("silent") != *name {
                    let _ = client.post(format!("{url}/v1/nodes/{name}/report")).bearer_auth(token).json(&json!({})).send();
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });

    // 1–2. The first sync.
    let rack_count = ZONES * RACKS;
    wait("the first sync", Duration::from_secs(120), || proxy.log().iter().filter(|l| l.fate == Fate::Answered(200)).count() >= rack_count);
    std::thread::sleep(Duration::from_secs(3));
    let first = proxy.log();
    let converged = first.iter().map(|l| l.at).max().unwrap_or_default().saturating_sub(reports_from);
    let routes = moto.ec2(&["routes", &table]);
    let pods: ipnet::IpNet = "10.96.0.0/12".parse().expect("pods");
    let ours: Vec<String> = routes
        .as_object()
        .expect("routes")
        .keys()
        .filter(|d| d.parse::<ipnet::IpNet>().is_ok_and(|d| pods.contains(&d)))
        .cloned()
        .collect();
    let plan = c.get("/v1/routes?budget=47");
    let over: usize = plan["overCoverage"].as_array().map_or(0, Vec::len);
    let racks: Vec<String> =
        plan["fabricRoutes"].as_array().expect("plan").iter().filter_map(|r| r["dst"].as_str().map(String::from)).collect();
    let yardstick = moto.ec2(&["paced-creates", setup["vpc"].as_str().expect("vpc"), &instances[0], &first.len().to_string(), "5"]);
    println!(
        "first sync: {} routes written (goal ≤ 24), over-coverage {over} (goal 0), {} EC2 calls, converged {:.2?} after the first reports; \
         yardstick: boto3 making {} CreateRoute calls at 5/s took {:.2} s",
        ours.len(),
        first.len(),
        converged,
        first.len(),
        yardstick["seconds"].as_f64().unwrap_or(0.0),
    );
    assert!(ours.len() <= 24 && over == 0, "{routes}");
    assert_eq!(ours.len(), racks.len(), "the table holds the plan: {routes}\nplan: {racks:?}");

    // 3. 100 hosts added inside existing racks: no call.
    let before = proxy.log().len();
    let adding = Instant::now();
    for i in hosts..hosts + 100 {
        add(i, &format!("h{i:05}"));
    }
    std::thread::sleep(Duration::from_secs(5));
    let calls = proxy.log().len() - before;
    println!("100 hosts added to existing racks in {:.1?}: {calls} EC2 calls in the passes that followed (goal 0)", adding.elapsed());

    // 4. A gateway falls silent: its rack's route moves.
    let (gateway, gateway_ip) = {
        let (name, _) = &reporters[&(0, 0)][0];
        let i: usize = name[1..].parse().expect("index");
        (name.clone(), instances[i].clone())
    };
    let destination =
        routes.as_object().expect("routes").iter().find(|(_, t)| **t == gateway_ip).map(|(d, _)| d.clone()).expect("its route");
    let before = proxy.log().len();
    *silent.lock().expect("silent") = gateway.clone();
    let silenced = proxy.now();
    wait("the failover", Duration::from_secs(60), || {
        proxy.log()[before..].iter().any(|l| l.action == "ReplaceRoute" && l.destination == destination && l.fate == Fate::Answered(200))
    });
    let moved = proxy.log()[before..].iter().find(|l| l.action == "ReplaceRoute").map(|l| l.at).unwrap_or_default();
    println!(
        "failover: {gateway}'s route {destination} moved {:.2?} after it fell silent (configured failover time {FAILOVER:?}; \
         {} calls)",
        moved.saturating_sub(silenced),
        proxy.log().len() - before,
    );
    println!("controller memory: {:?} MiB (RSS, peak)", tessera_tests::process_memory(c.pid()));
}

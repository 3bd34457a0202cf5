//! VPC route tables through the real `aws-sdk-ec2`, against moto's EC2 server (from PyPI, in
//! `.venv`, started here on loopback), with a fault proxy between the two where a test needs
//! EC2's throttling, 500s and dropped connections (`tessera_tests::aws`).
//!
//! Each test sets up, through boto3, a VPC with three subnets in three zones, instances spread
//! over them and a route table holding foreign routes (an internet gateway, a VPC peering).
//! Agents' liveness is their reports (`POST /v1/nodes/N/report`), sent here as each agent does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tessera_tests::aws::{Ec2Proxy, Fate, Faults, Moto, busiest};
use tessera_tests::{Controller, free_port};

fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool, context: impl Fn() -> String) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}\n{}", context());
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

/// moto with the VPC `ec2.py setup` made.
struct Vpc {
    moto: Moto,
    table: String,
    instances: Vec<String>,
    ips: Vec<String>,
    setup: Value,
}

impl Vpc {
    fn new(instances: usize) -> Vpc {
        let moto = Moto::start();
        let setup = moto.ec2(&["setup", &instances.to_string()]);
        let list = |key: &str| setup[key].as_array().expect(key).iter().map(|i| i.as_str().expect("id").to_string()).collect();
        Vpc { table: setup["table"].as_str().expect("table").to_string(), instances: list("instances"), ips: list("ips"), moto, setup }
    }

    fn routes(&self) -> Value {
        self.moto.ec2(&["routes", &self.table])
    }
}

/// A topology of `racks` racks (rack-1 … in 10.96.0.0/16) in a temp file, and the controller
/// environment that manages the VPC's table through `endpoint` at `rate` calls a second.
fn racks_and_aws(dir: &tempfile::TempDir, racks: usize, endpoint: &str, table: &str) -> Vec<(String, String)> {
    let topology = dir.path().join("topology.yaml");
    let mut doc = String::from("networks: [{name: pods, cidr: 10.96.0.0/16}]\ngroups:\n");
    for r in 1..=racks {
        doc.push_str(&format!("  - name: rack-{r}\n    assignment: {{rack: r{r}}}\n"));
    }
    std::fs::write(&topology, doc).expect("topology");
    [
        ("TESSERA_NO_DEMO", "true"),
        ("TESSERA_TOPOLOGY", topology.to_str().expect("path")),
        ("TESSERA_AWS_REGION", "us-east-1"),
        ("TESSERA_AWS_ENDPOINT_URL", endpoint),
        ("TESSERA_AWS_ROUTE_TABLES", table),
        ("TESSERA_AWS_RECONCILE_SECONDS", "1"),
        ("TESSERA_AWS_SDK_RETRIES", "false"),
        ("TESSERA_VIP_FAILOVER_SECONDS", "3"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn env(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The hosts' agents, as far as the controller can tell: each reports every half second
/// (liveness) unless silenced.
struct Agents {
    url: String,
    admin: String,
    hosts: Arc<Mutex<Vec<(String, String)>>>,
    silent: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
}

impl Agents {
    fn start(c: &Controller) -> Agents {
        let agents =
            Agents { url: c.url.clone(), admin: c.token.clone(), hosts: Arc::default(), silent: Arc::default(), stop: Arc::default() };
        let (url, hosts, silent, stop) = (agents.url.clone(), agents.hosts.clone(), agents.silent.clone(), agents.stop.clone());
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let now: Vec<(String, String)> = hosts.lock().expect("hosts").clone();
                for (name, token) in now {
                    if !silent.lock().expect("silent").contains(&name) {
                        let _ = client.post(format!("{url}/v1/nodes/{name}/report")).bearer_auth(&token).json(&json!({})).send();
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        agents
    }

    /// Register a host (its address, rack and EC2 target) and start its reports.
    fn add(&self, name: &str, ip: &str, rack: &str, target: &str) {
        let client = reqwest::blocking::Client::new();
        let host = json!({"name": name, "ips": [ip], "labels": {"rack": rack}, "cloudTarget": target});
        let answer = client.post(format!("{}/v1/hosts", self.url)).bearer_auth(&self.admin).json(&host).send().expect("host");
        assert_eq!(answer.status(), 201, "{}", answer.text().unwrap_or_default());
        let token: Value = client
            .post(format!("{}/v1/tokens", self.url))
            .bearer_auth(&self.admin)
            .json(&json!({"name": name, "role": "node", "node": name}))
            .send()
            .and_then(|r| r.json())
            .expect("token");
        self.hosts.lock().expect("hosts").push((name.to_string(), token["token"].as_str().expect("token").to_string()));
    }

    fn silence(&self, name: &str) {
        self.silent.lock().expect("silent").insert(name.to_string());
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn metric(c: &Controller, name: &str) -> f64 {
    let metrics = reqwest::blocking::get(format!("{}/metrics", c.url)).and_then(|r| r.text()).unwrap_or_default();
    metrics.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0)
}

/// The routes of `table` that lie in Tessera's network (10.96.0.0/16).
fn ours(routes: &Value) -> BTreeMap<String, String> {
    let object = routes.as_object().expect("routes");
    object.iter().filter(|(d, _)| d.starts_with("10.96.")).map(|(d, t)| (d.clone(), t.as_str().unwrap_or("?").to_string())).collect()
}

#[test]
fn a_vpc_route_table_gets_each_rack_through_a_healthy_gateway_and_keeps_its_foreign_routes() {
    let vpc = Vpc::new(3);
    let (table, instances) = (&vpc.table, &vpc.instances);
    let dir = tempfile::tempdir().expect("dir");
    let mut vars = racks_and_aws(&dir, 2, &vpc.moto.endpoint, table);
    vars.push(("TESSERA_AWS_DISABLE_SOURCE_DEST_CHECK".into(), "true".into()));
    let c = Controller::start(&env(&vars));
    let agents = Agents::start(&c);
    for (i, (name, rack)) in [("h1", "r1"), ("h2", "r1"), ("h3", "r2")].into_iter().enumerate() {
        agents.add(name, &vpc.ips[i], rack, &instances[i]);
    }
    let context = || format!("table: {}\nGET /v1/routes/cloud: {}", vpc.routes(), c.get("/v1/routes/cloud"));

    let took = wait_until(
        "each rack routed through its first healthy host",
        Duration::from_secs(30),
        || {
            let r = vpc.routes();
            r["10.96.0.0/17"] == instances[0] && r["10.96.128.0/17"] == instances[2]
        },
        context,
    );
    eprintln!("VPC routes in place {took:?} after the hosts reported");
    let r = vpc.routes();
    assert_eq!(r["0.0.0.0/0"], vpc.setup["igw"], "the foreign default route changed: {r}");
    assert_eq!(r["10.50.0.0/16"], vpc.setup["pcx"], "the peering route changed: {r}");
    assert_eq!(r["172.31.0.0/16"], "local", "the local route changed: {r}");
    assert_eq!(r.as_object().map(|o| o.len()), Some(5), "{r}");
    // The gateways forward traffic that is not theirs: their source/destination check is off.
    for gateway in [&instances[0], &instances[2]] {
        assert_eq!(vpc.moto.ec2(&["source-dest-check", gateway]), false, "{gateway}");
    }
    assert_eq!(vpc.moto.ec2(&["source-dest-check", &instances[1]]), true);

    // h1 falls silent: rack 1's route moves to h2 within the failover time and a pass.
    agents.silence("h1");
    let moved = wait_until("the route moves to h2", Duration::from_secs(20), || vpc.routes()["10.96.0.0/17"] == instances[1], context);
    eprintln!("gateway failover: rack 1's route moved to h2 {moved:?} after h1 fell silent");
    assert_eq!(vpc.moto.ec2(&["source-dest-check", &instances[1]]), false, "the new gateway forwards too");

    // Out of band: rack 2's route deleted, rack 1's retargeted. Both come back, counted.
    vpc.moto.ec2(&["delete", table, "10.96.128.0/17"]);
    vpc.moto.ec2(&["retarget", table, "10.96.0.0/17", &instances[2]]);
    wait_until(
        "drift is repaired",
        Duration::from_secs(20),
        || {
            let r = vpc.routes();
            r["10.96.128.0/17"] == instances[2] && r["10.96.0.0/17"] == instances[1]
        },
        context,
    );
    let status = c.get("/v1/routes/cloud");
    let t = &status["tables"][0];
    assert!(t["driftRepairs"].as_u64().unwrap_or(0) >= 1, "{status}");
    assert_eq!((t["id"].as_str(), t["lastError"].clone()), (Some(table.as_str()), Value::Null), "{status}");
    assert_eq!(t["actual"]["0.0.0.0/0"], format!("gateway {}", vpc.setup["igw"].as_str().unwrap_or_default()), "{status}");
    assert_eq!(t["actual"]["10.50.0.0/16"], format!("peering {}", vpc.setup["pcx"].as_str().unwrap_or_default()), "{status}");

    // The web UI's routes view: the table desired against actual, the repairs counted.
    let (status, html) = c.page("/ui/routes");
    assert_eq!(status, 200, "{html}");
    // As a reader sees it (the templates escape `/` and `'`).
    let html = html.replace("&#x2f;", "/").replace("&#x27;", "'");
    assert!(html.contains(&format!("VPC route table <code>{table}</code>")), "{html}");
    for dst in ["10.96.0.0/17", "10.96.128.0/17"] {
        let row = html.split("<tr").find(|row| row.contains(&format!("<code>{dst}</code>"))).unwrap_or_default().to_string();
        assert!(row.contains("in place") && row.contains("class=\"ok\""), "{dst}: {row}");
    }
    let foreign = html.split("<tr").find(|row| row.contains("<code>0.0.0.0/0</code>")).unwrap_or_default();
    assert!(foreign.contains("not Tessera") && !foreign.contains("class=\"bad\""), "{foreign}");
    assert!(!html.contains("0 drift repairs"), "the repairs are counted: {html}");

    // Metrics count the failover and the repairs; the CLI shows the table.
    assert!(metric(&c, "tessera_cloud_failovers_total") >= 1.0);
    assert!(metric(&c, "tessera_cloud_drift_repairs_total") >= 2.0);
    assert!(metric(&c, "tessera_cloud_calls_total") >= 5.0);
    let out = std::process::Command::new(tessera_tests::binary("tessera"))
        .args(["routes", "cloud"])
        .env("TESSERA_SERVER", &c.url)
        .env("TESSERA_TOKEN", &c.token)
        .output()
        .expect("tessera");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(table) && text.contains("10.96.0.0/17") && text.contains(&instances[1]), "{text}");
}

/// EC2 calls are what a change costs: a host that joins a group that already has its route costs
/// none; the first host of a new rack costs exactly one CreateRoute (counted at the proxy).
#[test]
fn a_host_inside_a_group_costs_no_call_and_a_new_rack_one_create() {
    let vpc = Vpc::new(6);
    let proxy = Ec2Proxy::start(&vpc.moto.endpoint, Faults::default());
    let dir = tempfile::tempdir().expect("dir");
    let c = Controller::start(&env(&racks_and_aws(&dir, 3, &proxy.endpoint, &vpc.table)));
    let agents = Agents::start(&c);
    agents.add("h1", &vpc.ips[0], "r1", &vpc.instances[0]);
    agents.add("h2", &vpc.ips[1], "r2", &vpc.instances[1]);
    let context = || format!("table: {}\nGET /v1/routes/cloud: {}", vpc.routes(), c.get("/v1/routes/cloud"));
    wait_until("two racks routed", Duration::from_secs(30), || ours(&vpc.routes()).len() == 2, context);
    let settled = proxy.log().len();
    assert_eq!(settled, 2, "{:?}", proxy.log());

    // Two hosts join the racks that have routes; several passes go by: no call at all.
    agents.add("h0", &vpc.ips[2], "r1", &vpc.instances[2]);
    agents.add("h4", &vpc.ips[3], "r2", &vpc.instances[3]);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(proxy.log().len(), settled, "calls for hosts inside existing groups: {:?}", &proxy.log()[settled..]);

    // The first host of rack 3: one CreateRoute, nothing else.
    agents.add("h5", &vpc.ips[4], "r3", &vpc.instances[4]);
    wait_until("rack 3 routed", Duration::from_secs(20), || ours(&vpc.routes()).len() == 3, context);
    std::thread::sleep(Duration::from_secs(3));
    let new: Vec<(String, String)> = proxy.log()[settled..].iter().map(|l| (l.action.clone(), l.destination.clone())).collect();
    assert_eq!(new, vec![("CreateRoute".to_string(), "10.96.128.0/18".to_string())], "{:?}", proxy.log());
    assert_eq!(ours(&vpc.routes())["10.96.128.0/18"], vpc.instances[4]);
}

/// A table's budget is its limit less the routes Tessera does not own: with the limit at 5 and
/// three foreign routes (local, internet gateway, peering), three populated racks of four must
/// fit in two routes — their network's /16, which over-covers the empty rack, reported — the
/// foreign ones untouched; a limit the foreign routes already fill leaves Tessera nothing.
#[test]
fn the_budget_counts_the_foreign_routes() {
    let vpc = Vpc::new(4);
    let dir = tempfile::tempdir().expect("dir");
    let mut vars = racks_and_aws(&dir, 4, &vpc.moto.endpoint, &vpc.table);
    vars.push(("TESSERA_AWS_ROUTE_LIMIT".into(), "5".into()));
    let c = Controller::start(&env(&vars));
    let agents = Agents::start(&c);
    for r in 0..3 {
        agents.add(&format!("h{r}"), &vpc.ips[r], &format!("r{}", r + 1), &vpc.instances[r]);
    }
    let context = || format!("table: {}\nGET /v1/routes/cloud: {}", vpc.routes(), c.get("/v1/routes/cloud"));
    wait_until(
        "the racks summarized within the two routes the budget leaves",
        Duration::from_secs(30),
        || {
            let t = &c.get("/v1/routes/cloud")["tables"][0];
            t["budget"] == 2 && t["desired"].as_object().is_some_and(|d| d.len() == ours(&vpc.routes()).len() && !d.is_empty())
        },
        context,
    );
    let r = vpc.routes();
    assert_eq!(r.as_object().map(|o| o.len()), Some(3 + ours(&r).len()), "{r}");
    assert_eq!((r["0.0.0.0/0"].clone(), r["10.50.0.0/16"].clone()), (vpc.setup["igw"].clone(), vpc.setup["pcx"].clone()), "{r}");
    let mine = ours(&r);
    assert!(mine.len() <= 2, "{mine:?}");
    let covered: Vec<ipnet::Ipv4Net> = mine.keys().map(|d| d.parse().expect("cidr")).collect();
    for rack in ["10.96.0.0/18", "10.96.64.0/18", "10.96.128.0/18"] {
        let rack: ipnet::Ipv4Net = rack.parse().expect("rack");
        assert!(covered.iter().any(|c| c.contains(&rack)), "{rack} not reachable: {mine:?}");
    }
    let status = c.get("/v1/routes/cloud");
    let over = status["tables"][0]["overCoverage"].as_array().cloned().unwrap_or_default();
    assert!(over.iter().any(|o| o.as_str().is_some_and(|o| o.contains("10.96.192.0/18") && o.contains("rack-4"))), "{status}");
    drop(c);

    // The same table under a limit of 3: the foreign routes fill it, Tessera's go.
    let dir = tempfile::tempdir().expect("dir");
    let mut vars = racks_and_aws(&dir, 4, &vpc.moto.endpoint, &vpc.table);
    vars.push(("TESSERA_AWS_ROUTE_LIMIT".into(), "3".into()));
    let c = Controller::start(&env(&vars));
    let agents = Agents::start(&c);
    for r in 0..4 {
        agents.add(&format!("h{r}"), &vpc.ips[r], &format!("r{}", r + 1), &vpc.instances[r]);
    }
    wait_until(
        "a full table gets no route of Tessera's",
        Duration::from_secs(20),
        || c.get("/v1/routes/cloud")["tables"][0]["budget"] == 0,
        || c.get("/v1/routes/cloud").to_string(),
    );
    std::thread::sleep(Duration::from_secs(2));
    // The routes the first controller wrote are foreign to this one (another store): untouched.
    assert_eq!(ours(&vpc.routes()), mine);
}

/// Between the SDK and EC2, a proxy throttles a quarter of the mutating calls, answers a tenth
/// with an HTML 500 and drops a tenth before and a tenth after carrying them out. The table still
/// converges exactly — the first sync and four gateway failovers — every call within the rate
/// limit as the proxy measured it, and no route created or moved twice.
#[test]
fn throttling_and_faults_neither_lose_nor_double_a_route_and_the_rate_holds() {
    const RACKS: usize = 8;
    let vpc = Vpc::new(2 * RACKS);
    let faults = Faults { throttle: 0.25, server_error: 0.1, drop_before: 0.1, drop_after: 0.1 };
    let proxy = Ec2Proxy::start(&vpc.moto.endpoint, faults);
    let dir = tempfile::tempdir().expect("dir");
    let mut vars = racks_and_aws(&dir, RACKS, &proxy.endpoint, &vpc.table);
    vars.push(("TESSERA_AWS_CALL_RATE".into(), "5".into()));
    let c = Controller::start(&env(&vars));
    let agents = Agents::start(&c);
    for r in 0..RACKS {
        for h in 0..2 {
            let i = 2 * r + h;
            agents.add(&format!("h{r}-{h}"), &vpc.ips[i], &format!("r{}", r + 1), &vpc.instances[i]);
        }
    }
    // Rack r (10.96.0.0/16 in eighths) → its first host, h{r}-0.
    let expected = |first: &dyn Fn(usize) -> usize| -> BTreeMap<String, String> {
        (0..RACKS).map(|r| (format!("10.96.{}.0/19", 32 * r), vpc.instances[2 * r + first(r)].clone())).collect()
    };
    let context = || format!("table: {}\nGET /v1/routes/cloud: {}\nproxy: {:?}", vpc.routes(), c.get("/v1/routes/cloud"), proxy.log());
    let took = wait_until("the first sync converges", Duration::from_secs(90), || ours(&vpc.routes()) == expected(&|_| 0), context);
    eprintln!("first sync of {RACKS} routes under faults: {took:?}");

    // Half the racks lose their gateway: each route moves to the rack's other host.
    for r in 0..RACKS / 2 {
        agents.silence(&format!("h{r}-0"));
    }
    let after = expected(&|r| usize::from(r < RACKS / 2));
    let took = wait_until("the failovers converge", Duration::from_secs(90), || ours(&vpc.routes()) == after, context);
    eprintln!("{} gateway failovers under faults: {took:?}", RACKS / 2);
    // Settled: no more calls, and the controller agrees the table is as it wants it.
    wait_until(
        "the controller settles",
        Duration::from_secs(30),
        || {
            let t = &c.get("/v1/routes/cloud")["tables"][0];
            t["lastError"].is_null() && t["used"] == RACKS
        },
        context,
    );
    proxy.set_faults(Faults::default());
    let before = proxy.log().len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(proxy.log().len(), before, "calls after convergence: {:?}", &proxy.log()[before..]);

    let log = proxy.log();
    let count = |fate: fn(&Fate) -> bool| log.iter().filter(|l| fate(&l.fate)).count();
    eprintln!(
        "{} mutating calls: {} throttled, {} HTML 500, {} dropped before, {} dropped after; busiest second {} calls (limit 5)",
        log.len(),
        count(|f| *f == Fate::Throttled),
        count(|f| *f == Fate::ServerError),
        count(|f| *f == Fate::DroppedBefore),
        count(|f| matches!(f, Fate::DroppedAfter(_))),
        busiest(&log, Duration::from_secs(1)),
    );
    assert!(count(|f| *f == Fate::Throttled) > 0 && count(|f| matches!(f, Fate::DroppedAfter(_))) > 0, "faults were met: {log:?}");
    // The rate: calls are spaced 1/5 s apart; a window's edge may catch one more.
    assert!(busiest(&log, Duration::from_secs(1)) <= 6, "{log:?}");
    // Nothing blind: no call EC2 refused (a create repeated onto its own route would be).
    assert!(!log.iter().any(|l| matches!(l.fate, Fate::Answered(s) if s != 200)), "{log:?}");
    // Each route created once, each moved route replaced once, nothing deleted.
    let applied = |action: &str| {
        let mut per: BTreeMap<String, usize> = BTreeMap::new();
        for l in log.iter().filter(|l| l.action == action && l.fate.applied()) {
            *per.entry(l.destination.clone()).or_default() += 1;
        }
        per
    };
    assert_eq!(applied("CreateRoute"), expected(&|_| 0).keys().map(|d| (d.clone(), 1)).collect(), "{log:?}");
    let moved: BTreeMap<String, usize> = (0..RACKS / 2).map(|r| (format!("10.96.{}.0/19", 32 * r), 1)).collect();
    assert_eq!(applied("ReplaceRoute"), moved, "{log:?}");
    assert_eq!(applied("DeleteRoute"), BTreeMap::new(), "{log:?}");
}

/// Two controllers on one PostgreSQL: only the writer-lease holder calls EC2. It is killed in
/// the middle of its first sync (calls paced at 2/s); the other takes the lease and finishes:
/// every route in place once, none lost, none made twice.
#[test]
fn two_controllers_on_postgresql_only_the_holder_writes_and_the_survivor_finishes() {
    const RACKS: usize = 8;
    let vpc = Vpc::new(RACKS);
    let proxy = Ec2Proxy::start(&vpc.moto.endpoint, Faults::default());
    let dir = tempfile::tempdir().expect("dir");
    let mut vars = racks_and_aws(&dir, RACKS, &proxy.endpoint, &vpc.table);
    vars.extend(
        [("TESSERA_AWS_CALL_RATE", "2"), ("TESSERA_LEASE_RENEW_MS", "300"), ("TESSERA_LEASE_TTL_MS", "3000")]
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let db = tokio::runtime::Runtime::new().expect("runtime").block_on(tessera_tests::pg::fresh_database());
    let token = format!("vpc-admin-{}", rand::random::<u64>());
    let replica = |id: &str| {
        let mut vars = vars.clone();
        vars.push(("TESSERA_REPLICA_ID".into(), id.into()));
        Controller::start_with(free_port(), &db, &token, &env(&vars))
    };
    let a = replica("a");
    let b = replica("b");
    let holder_is = |c: &Controller| c.get("/v1/leader")["thisReplicaHoldsIt"] == true;
    wait_until("one replica holds the lease", Duration::from_secs(10), || holder_is(&a) || holder_is(&b), String::new);
    let (mut holder, other) = if holder_is(&a) { (a, b) } else { (b, a) };
    let agents = Agents::start(&other);
    for r in 0..RACKS {
        agents.add(&format!("h{r}"), &vpc.ips[r], &format!("r{}", r + 1), &vpc.instances[r]);
    }
    let context = || format!("table: {}\nproxy: {:?}", vpc.routes(), proxy.log());
    wait_until("the holder is half-way", Duration::from_secs(30), || ours(&vpc.routes()).len() >= 3, context);
    holder.kill();
    let killed_at = proxy.log().len();
    let expected: BTreeMap<String, String> = (0..RACKS).map(|r| (format!("10.96.{}.0/19", 32 * r), vpc.instances[r].clone())).collect();
    let took = wait_until("the survivor finishes", Duration::from_secs(60), || ours(&vpc.routes()) == expected, context);
    eprintln!("holder killed after {killed_at} calls; the survivor finished the table {took:?} later");
    std::thread::sleep(Duration::from_secs(3));
    let log = proxy.log();
    let creates: BTreeMap<String, usize> = log.iter().filter(|l| l.action == "CreateRoute").fold(BTreeMap::new(), |mut m, l| {
        *m.entry(l.destination.clone()).or_default() += 1;
        m
    });
    assert_eq!(creates, expected.keys().map(|d| (d.clone(), 1)).collect(), "{log:?}");
    assert!(log.iter().all(|l| l.fate == Fate::Answered(200)), "{log:?}");
    assert_eq!(other.get("/v1/routes/cloud")["tables"][0]["used"], RACKS, "{}", other.get("/v1/routes/cloud"));
}

/// Bad configuration: a flag that cannot be right is refused at start, naming the flag; a route
/// table EC2 does not know, credentials EC2 refuses or none at all, and a topology network inside
/// the VPC's own addresses are reported (`GET /v1/routes/cloud`), and the controller keeps serving.
#[test]
fn bad_aws_configuration_is_named_and_the_controller_keeps_serving() {
    for (args, flag) in [
        (vec!["--aws-region", "us-east-1", "--aws-route-tables", "table-1"], "--aws-route-tables"),
        (vec!["--aws-region", "us-east-1"], "--aws-route-tables"),
        (vec!["--aws-region", "us east", "--aws-route-tables", "rtb-12345678"], "--aws-region"),
        (vec!["--aws-region", "us-east-1", "--aws-route-table-tag", "managed"], "--aws-route-table-tag"),
        (vec!["--aws-region", "us-east-1", "--aws-route-tables", "rtb-12345678", "--aws-call-rate", "0"], "--aws-call-rate"),
    ] {
        tessera_tests::assert_refused_at_start(&args, flag);
    }
    let reported = |c: &Controller, what: &str, wanted: &dyn Fn(&str) -> bool| {
        wait_until(
            what,
            Duration::from_secs(20),
            || {
                let s = c.get("/v1/routes/cloud");
                [&s["lastError"], &s["tables"][0]["lastError"]].iter().any(|e| e.as_str().is_some_and(wanted))
            },
            || c.get("/v1/routes/cloud").to_string(),
        );
        assert!(c.get("/v1/hosts").is_array(), "the controller stopped serving");
    };
    let vpc = Vpc::new(1);
    let dir = tempfile::tempdir().expect("dir");
    let base = racks_and_aws(&dir, 2, &vpc.moto.endpoint, &vpc.table);
    let with = |changes: &[(&str, &str)]| {
        let mut vars: Vec<(String, String)> = base.iter().filter(|(k, _)| !changes.iter().any(|(c, _)| c == k)).cloned().collect();
        vars.extend(changes.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), v.to_string())));
        Controller::start(&env(&vars))
    };

    let c = with(&[("TESSERA_AWS_ROUTE_TABLES", "rtb-0123456789abcdef0")]);
    reported(&c, "the unknown table", &|e| e.contains("InvalidRouteTableID.NotFound"));

    // No credentials anywhere in the chain.
    let c = with(&[
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ("AWS_CONFIG_FILE", "/nonexistent"),
    ]);
    reported(&c, "missing credentials", &|e| e.to_lowercase().contains("credentials"));

    // A network overlapping the VPC (172.31.0.0/16): named, and no route written.
    let topology = dir.path().join("inside.yaml");
    std::fs::write(&topology, "networks: [{name: pods, cidr: 172.31.128.0/17}]\ngroups:\n  - name: rack-1\n    assignment: {rack: r1}\n")
        .expect("topology");
    let c = with(&[("TESSERA_TOPOLOGY", topology.to_str().expect("path"))]);
    let agents = Agents::start(&c);
    agents.add("h1", &vpc.ips[0], "r1", &vpc.instances[0]);
    reported(&c, "the overlap", &|e| e.contains("networks[pods].cidr 172.31.128.0/17 overlaps") && e.contains("172.31.0.0/16"));
    assert_eq!(vpc.routes().as_object().map(|o| o.len()), Some(3), "{}", vpc.routes());
    drop(agents);

    // Credentials EC2 refuses: moto checking signatures against its IAM (which knows no key).
    let strict = Moto::start_with(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let c = with(&[("TESSERA_AWS_ENDPOINT_URL", &strict.endpoint), ("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")]);
    reported(&c, "refused credentials", &|e| e.contains("credentials") && e.contains("refused"));
}

/// `--aws-host-subnet-tables`: the tables EC2 routes the hosts' subnets with — each subnet's own
/// table, else its VPC's main table — are managed without naming them.
#[test]
fn the_tables_of_the_hosts_subnets_are_found() {
    let vpc = Vpc::new(3);
    let dir = tempfile::tempdir().expect("dir");
    let vars: Vec<(String, String)> = racks_and_aws(&dir, 2, &vpc.moto.endpoint, &vpc.table)
        .into_iter()
        .filter(|(k, _)| k != "TESSERA_AWS_ROUTE_TABLES")
        .chain([("TESSERA_AWS_HOST_SUBNET_TABLES".to_string(), "true".to_string())])
        .collect();
    let c = Controller::start(&env(&vars));
    let agents = Agents::start(&c);
    agents.add("h1", &vpc.ips[0], "r1", &vpc.instances[0]);
    agents.add("h2", &vpc.ips[1], "r2", &vpc.instances[1]);
    let context = || format!("table: {}\nGET /v1/routes/cloud: {}", vpc.routes(), c.get("/v1/routes/cloud"));
    wait_until("the subnets' table is found and kept", Duration::from_secs(30), || ours(&vpc.routes()).len() == 2, context);
    let status = c.get("/v1/routes/cloud");
    let ids: Vec<&str> = status["tables"].as_array().expect("tables").iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, vec![vpc.table.as_str()], "only the table the subnets use: {status}");
}

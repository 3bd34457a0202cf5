//! VPC route tables through the real `aws-sdk-ec2`, against moto's EC2 server (from PyPI, in
//! `.venv`, started here on loopback). The test sets up a VPC with a foreign internet-gateway
//! route and three instances through boto3; a controller keeps the table: each rack's CIDR
//! routed to a healthy gateway host's instance, the foreign routes untouched; a gateway that
//! falls silent is replaced by one ReplaceRoute to another host of its group; a route deleted
//! or retargeted out of band comes back, counted.
//!
//! Agents' liveness is their reports (`POST /v1/nodes/N/report`), sent here as each agent does.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tessera_tests::{Controller, free_port};

const VENV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin");
const EC2_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/aws/ec2.py");

struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Moto {
        let port = free_port();
        let server = format!("{VENV}/moto_server");
        assert!(
            std::path::Path::new(&server).exists(),
            "moto_server not found at {server}: run `bash .ci/run` once (it installs moto[server])"
        );
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, endpoint }
    }

    /// The test's own hands on EC2 (boto3): see `tests/aws/ec2.py`.
    fn ec2(&self, args: &[&str]) -> Value {
        let out = Command::new(format!("{VENV}/python")).arg(EC2_PY).arg(&self.endpoint).args(args).output().expect("ec2.py");
        assert!(out.status.success(), "ec2.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("ec2.py json")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool, context: impl Fn() -> String) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}\n{}", context());
        std::thread::sleep(Duration::from_millis(100));
    }
    started.elapsed()
}

#[test]
fn a_vpc_route_table_gets_each_rack_through_a_healthy_gateway_and_keeps_its_foreign_routes() {
    let moto = Moto::start();
    let setup = moto.ec2(&["setup"]);
    let table = setup["table"].as_str().expect("table").to_string();
    let instances: Vec<String> =
        setup["instances"].as_array().expect("instances").iter().map(|i| i.as_str().expect("id").to_string()).collect();
    let dir = tempfile::tempdir().expect("dir");
    let topology = dir.path().join("topology.yaml");
    std::fs::write(
        &topology,
        "networks: [{name: pods, cidr: 10.96.0.0/16}]\ngroups:\n  - name: rack-1\n    assignment: {rack: r1}\n  - name: rack-2\n    assignment: {rack: r2}\n",
    )
    .expect("topology");
    let c = Controller::start(&[
        ("TESSERA_NO_DEMO", "true"),
        ("TESSERA_TOPOLOGY", topology.to_str().expect("path")),
        ("TESSERA_AWS_REGION", "us-east-1"),
        ("TESSERA_AWS_ENDPOINT_URL", &moto.endpoint),
        ("TESSERA_AWS_ROUTE_TABLES", &table),
        ("TESSERA_AWS_RECONCILE_SECONDS", "1"),
        ("TESSERA_AWS_SDK_RETRIES", "false"),
        ("TESSERA_VIP_FAILOVER_SECONDS", "3"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]);
    let mut tokens = Vec::new();
    for (i, (name, rack)) in [("h1", "r1"), ("h2", "r1"), ("h3", "r2")].into_iter().enumerate() {
        let (status, body) = c.send(
            "POST",
            "/v1/hosts",
            json!({"name": name, "ips": [format!("172.31.1.{}", 11 + i)], "labels": {"rack": rack}, "cloudTarget": instances[i]}),
        );
        assert_eq!(status, 201, "{body}");
        let (_, token) = c.send("POST", "/v1/tokens", json!({"name": name, "role": "node", "node": name}));
        tokens.push((name.to_string(), token["token"].as_str().expect("token").to_string()));
    }
    // The agents report (liveness) every half second, but h1's stops when `silent` says so.
    let silent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = c.url.clone();
    let quiet = silent.clone();
    std::thread::spawn(move || {
        let client = reqwest::blocking::Client::new();
        loop {
            for (name, token) in &tokens {
                if name == "h1" && quiet.load(std::sync::atomic::Ordering::Relaxed) {
                    continue;
                }
                let _ = client.post(format!("{url}/v1/nodes/{name}/report")).bearer_auth(token).json(&json!({})).send();
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let routes = || moto.ec2(&["routes", &table]);
    let context = || format!("table: {}\nGET /v1/routes/cloud: {}", routes(), c.get("/v1/routes/cloud"));

    let took = wait_until(
        "each rack routed through its first healthy host",
        Duration::from_secs(30),
        || {
            let r = routes();
            r["10.96.0.0/17"] == instances[0] && r["10.96.128.0/17"] == instances[2]
        },
        context,
    );
    eprintln!("VPC routes in place {took:?} after the hosts reported");
    let r = routes();
    assert_eq!(r["0.0.0.0/0"], setup["igw"], "the foreign default route changed: {r}");
    assert_eq!(r["172.31.0.0/16"], "local", "the local route changed: {r}");
    assert_eq!(r.as_object().map(|o| o.len()), Some(4), "{r}");

    // h1 falls silent: rack 1's route moves to h2 within the failover time and a pass.
    silent.store(true, std::sync::atomic::Ordering::Relaxed);
    let moved = wait_until("the route moves to h2", Duration::from_secs(20), || routes()["10.96.0.0/17"] == instances[1], context);
    eprintln!("gateway failover: rack 1's route moved to h2 {moved:?} after h1 fell silent");

    // Out of band: rack 2's route deleted, rack 1's retargeted. Both come back, counted.
    moto.ec2(&["delete", &table, "10.96.128.0/17"]);
    moto.ec2(&["retarget", &table, "10.96.0.0/17", &instances[2]]);
    wait_until(
        "drift is repaired",
        Duration::from_secs(20),
        || {
            let r = routes();
            r["10.96.128.0/17"] == instances[2] && r["10.96.0.0/17"] == instances[1]
        },
        context,
    );
    let status = c.get("/v1/routes/cloud");
    let t = &status["tables"][0];
    assert!(t["driftRepairs"].as_u64().unwrap_or(0) >= 1, "{status}");
    assert_eq!((t["id"].as_str(), t["lastError"].clone()), (Some(table.as_str()), Value::Null), "{status}");
    assert_eq!(t["actual"]["0.0.0.0/0"], format!("gateway {}", setup["igw"].as_str().unwrap_or_default()), "{status}");

    // Metrics count the failover and the repairs; the CLI shows the table.
    let metrics = reqwest::blocking::get(format!("{}/metrics", c.url)).and_then(|r| r.text()).expect("metrics");
    let counter = |name: &str| {
        metrics.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    assert!(counter("tessera_cloud_failovers_total") >= 1.0, "{metrics}");
    assert!(counter("tessera_cloud_drift_repairs_total") >= 2.0, "{metrics}");
    assert!(counter("tessera_cloud_calls_total") >= 5.0, "{metrics}");
    let out = Command::new(tessera_tests::binary("tessera"))
        .args(["routes", "--cloud"])
        .env("TESSERA_SERVER", &c.url)
        .env("TESSERA_TOKEN", &c.token)
        .output()
        .expect("tessera");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&table) && text.contains("10.96.0.0/17") && text.contains(&instances[1]), "{text}");
}

/// Bad configuration: a flag that cannot be right is refused at start, naming the flag; a route
/// table EC2 does not know is reported (`GET /v1/routes/cloud`), and the controller keeps serving.
#[test]
fn bad_aws_configuration_is_named_and_the_controller_keeps_serving() {
    for (args, flag) in [
        (vec!["--aws-region", "us-east-1", "--aws-route-tables", "table-1"], "--aws-route-tables"),
        (vec!["--aws-region", "us-east-1"], "--aws-route-tables"),
        (vec!["--aws-region", "us east", "--aws-route-tables", "rtb-12345678"], "--aws-region"),
        (vec!["--aws-region", "us-east-1", "--aws-route-table-tag", "managed"], "--aws-route-table-tag"),
        (vec!["--aws-region", "us-east-1", "--aws-route-tables", "rtb-12345678", "--aws-call-rate", "0"], "--aws-call-rate"),
    ] {
        let out = Command::new(tessera_tests::binary("tessera-controller"))
            .args(["--listen", "127.0.0.1:0", "--database-url", &tessera_tests::sqlite_url(), "--no-demo"])
            .args(&args)
            .output()
            .expect("run the controller");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(flag), "{args:?}: {stderr}");
    }
    let moto = Moto::start();
    let c = Controller::start(&[
        ("TESSERA_NO_DEMO", "true"),
        ("TESSERA_AWS_REGION", "us-east-1"),
        ("TESSERA_AWS_ENDPOINT_URL", &moto.endpoint),
        ("TESSERA_AWS_ROUTE_TABLES", "rtb-0123456789abcdef0"),
        ("TESSERA_AWS_RECONCILE_SECONDS", "1"),
        ("TESSERA_AWS_SDK_RETRIES", "false"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]);
    wait_until(
        "the unknown table is reported",
        Duration::from_secs(20),
        || c.get("/v1/routes/cloud")["lastError"].as_str().is_some_and(|e| e.contains("InvalidRouteTableID.NotFound")),
        || c.get("/v1/routes/cloud").to_string(),
    );
    assert!(c.get("/v1/hosts").is_array(), "the controller stopped serving");
}

//! The `tessera` CLI against a real controller process: tables, JSON, and one-line errors with
//! exit code 1.

use std::process::Output;

use serde_json::Value;
use tessera_tests::{Controller, binary};

fn tessera(c: &Controller, args: &[&str]) -> Output {
    std::process::Command::new(binary("tessera"))
        .args(args)
        .env("TESSERA_SERVER", &c.url)
        .env("TESSERA_TOKEN", &c.token)
        .output()
        .expect("run tessera")
}

fn ok(c: &Controller, args: &[&str]) -> String {
    let out = tessera(c, args);
    assert!(out.status.success(), "tessera {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

fn fails(c: &Controller, args: &[&str]) -> String {
    let out = tessera(c, args);
    assert_eq!(out.status.code(), Some(1), "tessera {args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
    assert!(out.stdout.is_empty(), "no partial output on failure");
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn topology_hosts_endpoints_and_routes_through_the_cli() {
    let c = Controller::start(&[("TESSERA_NO_DEMO", "true")]);
    let romana = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/romana-multi-zone.json");
    let dry = ok(&c, &["topology", "apply", "-f", romana, "--dry-run"]);
    assert!(dry.starts_with("dry run: nothing changed"), "{dry}");
    assert!(dry.contains("group zone-A/rack-9 in romana-network: - -> 10.111.96.0/19"), "{dry}");
    ok(&c, &["topology", "apply", "-f", romana]);
    let show = ok(&c, &["topology", "show"]);
    assert!(show.contains("zone-B/rack-22  romana-network=10.111.192.0/18"), "{show}");

    let added = ok(&c, &["hosts", "add", "h1", "--ip", "192.0.2.1", "--label", "failure-domain/zone=zone-B", "--label", "rack=rack-22"]);
    assert!(added.contains("zone-B/rack-22"), "{added}");
    let err = fails(&c, &["hosts", "add", "h2", "--ip", "192.0.2.2", "--label", "rack=rack-99"]);
    assert!(err.starts_with("tessera: labels: host `h2` matches no leaf group"), "{err}");
    ok(&c, &["hosts", "add", "h3", "--ip", "192.0.2.3", "--label", "failure-domain/zone=zone-A", "--label", "rack=rack-3"]);
    ok(&c, &["tenants", "add", "red"]);
    ok(&c, &["segments", "add", "red", "web"]);
    let ep = ok(&c, &["-o", "json", "endpoints", "add", "red/web-1", "--tenant", "red", "--segment", "web", "--host", "h1"]);
    let ep: Value = serde_json::from_str(&ep).expect("json");
    assert_eq!(ep["ips"][0], "10.111.192.0");
    let seg = ok(&c, &["segments", "show", "red", "web"]);
    assert!(seg.contains("10.111.192.0/29"), "{seg}");
    let routes = ok(&c, &["routes", "--budget", "1"]);
    assert!(routes.contains("10.111.0.0/16"), "{routes}");
    assert!(routes.contains("over-covered ranges"), "{routes}");
    let blocks: Value = serde_json::from_str(&ok(&c, &["blocks", "list", "-o", "json"])).expect("json");
    assert_eq!(blocks.as_array().map(Vec::len), Some(1));
    ok(&c, &["endpoints", "remove", "red/web-1"]);
    ok(&c, &["endpoints", "remove", "red/web-1"]);
    let list = ok(&c, &["endpoints", "list"]);
    assert_eq!(list.trim(), "ID  TENANT  SEGMENT  HOST  IPS  LABELS");
}

#[test]
fn errors_are_one_line_with_exit_code_one() {
    let c = Controller::start(&[]);
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "networks: [{name: n, cidr: 10.0.0.1/8}]\n").expect("write");
    let err = fails(&c, &["topology", "apply", "-f", bad.to_str().expect("path")]);
    assert!(err.contains("bad.yaml: networks[0].cidr: `10.0.0.1/8` has host bits set; did you mean 10.0.0.0/8?"), "{err}");
    let err = fails(&c, &["hosts", "show", "nope"]);
    assert!(err.contains("host `nope` not found [HTTP 404]"), "{err}");
    let err = fails(&c, &["--token", "wrong", "hosts", "list"]);
    assert!(err.contains("unknown token [HTTP 401]"), "{err}");
    let err = fails(&c, &["--server", "http://127.0.0.1:1", "hosts", "list"]);
    assert!(err.contains("cannot reach the controller at http://127.0.0.1:1"), "{err}");
    let err = fails(&c, &["hosts", "add", "h", "--ip", "192.0.2.1", "--label", "nolabel"]);
    assert!(err.contains("--label `nolabel`: expected key=value"), "{err}");
    // Usage errors too: one line, exit code 1.
    let err = fails(&c, &["hosts", "add"]);
    assert!(err.starts_with("tessera: ") && err.contains("--help"), "{err}");
    let err = fails(&c, &["hosts", "--colour"]);
    assert!(err.contains("--colour"), "{err}");
    // An empty token is no token, said plainly.
    let out = std::process::Command::new(binary("tessera"))
        .args(["hosts", "list"])
        .env("TESSERA_SERVER", &c.url)
        .env("TESSERA_TOKEN", "")
        .output()
        .expect("run tessera");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no API token: set TESSERA_TOKEN"), "{}", String::from_utf8_lossy(&out.stderr));
    // `..` would be resolved away by any URL client and reach another resource: refused plainly.
    let err = fails(&c, &["endpoints", "show", "shop/.."]);
    assert!(err.contains("'.' and '..' cannot be addressed"), "{err}");
    let err = fails(&c, &["endpoints", "add", "a/../b", "--tenant", "t", "--host", "h"]);
    assert!(err.contains("id: must be") && err.contains("[HTTP 422]"), "{err}");
    // The demo topology is there on a fresh controller.
    let show = ok(&c, &["topology", "show"]);
    assert!(show.contains("zone-a/rack-1"), "{show}");

    // A busy port is found before a store is created or a token printed.
    let db_dir = tempfile::tempdir().expect("tmp");
    let db = db_dir.path().join("busy.db");
    let port = c.url.rsplit(':').next().expect("port");
    let out = std::process::Command::new(binary("tessera-controller"))
        .env("TESSERA_LISTEN", format!("127.0.0.1:{port}"))
        .env("TESSERA_DATABASE_URL", format!("sqlite://{}", db.display()))
        .env_remove("TESSERA_ADMIN_TOKEN")
        .output()
        .expect("run controller");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "printed a token: {}", String::from_utf8_lossy(&out.stdout));
    assert!(!db.exists(), "created a store");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("listening on 127.0.0.1"), "{stderr}");
    // Logs written to a pipe carry no terminal colour codes.
    assert!(!stderr.contains('\x1b'), "ANSI escapes in redirected logs: {stderr:?}");
}

/// `TESSERA_NO_DEMO` takes the usual spellings of a boolean.
#[test]
fn no_demo_takes_one_zero_yes_no_on_off() {
    for (value, demo) in [("1", false), ("yes", false), ("on", false), ("0", true), ("off", true)] {
        let c = Controller::start(&[("TESSERA_NO_DEMO", value)]);
        let show = ok(&c, &["-o", "json", "topology", "show"]);
        let t: Value = serde_json::from_str(&show).expect("json");
        assert_eq!(t["revision"] != 0, demo, "TESSERA_NO_DEMO={value}: {show}");
    }
}

/// A first start without a configured token prints a new admin token once; it works, and a
/// restart on the same store prints nothing new.
#[test]
fn first_start_prints_an_admin_token_once() {
    use std::io::{BufRead, BufReader};
    let db = tessera_tests::sqlite_url();
    let start = || {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
        let child = std::process::Command::new(binary("tessera-controller"))
            .env("TESSERA_LISTEN", format!("127.0.0.1:{port}"))
            .env("TESSERA_DATABASE_URL", &db)
            .env("TESSERA_LOG", "warn")
            .env_remove("TESSERA_ADMIN_TOKEN")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start controller");
        (child, format!("http://127.0.0.1:{port}"))
    };
    let wait_ready = |url: &str| {
        for _ in 0..300 {
            if reqwest::blocking::get(format!("{url}/readyz")).is_ok_and(|r| r.status().is_success()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("controller at {url} not ready");
    };
    let (mut child, url) = start();
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read token line");
    let token = line.trim().strip_prefix("Admin token (shown once, keep it): ").expect("token line").to_string();
    wait_ready(&url);
    let answer = reqwest::blocking::Client::new().get(format!("{url}/v1/tokens")).bearer_auth(&token).send().expect("request");
    assert_eq!(answer.status(), 200);
    child.kill().expect("kill");
    child.wait().expect("wait");

    let (mut child, url) = start();
    wait_ready(&url);
    child.kill().expect("kill");
    child.wait().expect("wait");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut rest).expect("read");
    assert!(rest.is_empty(), "a second start printed: {rest}");
}

/// `tessera policy simulate/explain` work offline: JSON as documented, errors name file, object
/// and field with exit code 1 and no partial output.
#[test]
fn policy_simulate_and_explain_offline() {
    let dir = tempfile::tempdir().expect("tmp");
    let pods = dir.path().join("pods.yaml");
    std::fs::write(
        &pods,
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: a, namespace: x, labels: {app: a}}, status: {podIP: 10.9.0.1}}\n- {apiVersion: v1, kind: Pod, metadata: {name: b, namespace: x}, spec: {containers: [{ports: [{name: web, containerPort: 8080}]}]}, status: {podIP: 10.9.0.2}}\n- {apiVersion: v1, kind: Pod, metadata: {name: pending, namespace: x}}\n",
    )
    .expect("write");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: b, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {app: a}}}], ports: [{port: web}]}]}\n").expect("write");
    let run = |args: &[&str]| {
        std::process::Command::new(binary("tessera")).args(args).env_remove("TESSERA_SERVER").output().expect("run tessera")
    };
    let (p, q) = (pods.to_str().expect("path"), policy.to_str().expect("path"));
    let out =
        run(&["policy", "simulate", "-f", p, "-f", q, "--port", "tcp/8080", "--port", "udp/53", "--external", "192.0.2.1", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let verdicts = v["verdicts"].as_array().expect("verdicts");
    assert_eq!(verdicts.len(), 12, "a, b and the external: 6 pairs, 2 probes; the pod without an IP is skipped");
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(note.contains("1 pod(s) left out") && note.contains("x/pending: no status.podIP yet"), "{note}");
    let one = verdicts.iter().find(|x| x["from"] == "x/a" && x["to"] == "x/b" && x["port"] == 8080).expect("verdict");
    assert_eq!(one["allowed"], true);
    assert_eq!(one["protocol"], "TCP");
    assert!(one["reason"].as_str().expect("reason").contains("NetworkPolicy x/b"));

    let out = run(&["policy", "explain", "-f", p, "-f", q, "--from", "192.0.2.1", "--to", "x/b", "--port", "tcp/8080"]);
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert!(text.starts_with("DENIED 192.0.2.1 -> x/b tcp/8080"), "{text}");
    assert!(text.contains("NetworkPolicy x/b spec.ingress[0]: 192.0.2.1 is not among its peers"), "{text}");

    std::fs::write(&policy, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: b, namespace: x}\nspec: {podSelector: {}, ingress: [{ports: [{port: 90, endPort: 80}]}]}\n").expect("write");
    let out = run(&["policy", "simulate", "-f", p, "-f", q]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "no partial output");
    let err = String::from_utf8(out.stderr).expect("utf-8");
    assert!(err.contains("policy.yaml document 1: NetworkPolicy x/b: spec.ingress[0].ports[0].endPort: must be >= port (90)"), "{err}");
}

#[test]
fn policies_nodes_and_node_tokens_through_the_cli() {
    let c = Controller::start(&[]);
    ok(&c, &["hosts", "add", "n1", "--ip", "192.0.2.9"]);
    ok(&c, &["tenants", "add", "shop"]);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("deny.yaml");
    std::fs::write(
        &file,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-all, namespace: shop}\nspec: {podSelector: {}}\n",
    )
    .expect("write");
    let applied = ok(&c, &["policies", "apply", "-f", file.to_str().expect("path")]);
    assert!(applied.contains("NetworkPolicy shop/deny-all"), "{applied}");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x, namespace: shop}\nspec: {podSelector: {}, policyTypes: [Up]}\n")
        .expect("write");
    let err = fails(&c, &["policies", "apply", "-f", bad.to_str().expect("path")]);
    assert!(err.contains("policyTypes"), "{err}");
    let nodes = ok(&c, &["nodes"]);
    assert!(nodes.lines().next().is_some_and(|h| h.contains("DESIRED") && h.contains("LAG")), "{nodes}");
    assert!(nodes.contains("n1") && nodes.contains("never"), "LAST SEEN for people, not epoch seconds: {nodes}");
    let token: Value =
        serde_json::from_str(&ok(&c, &["-o", "json", "tokens", "create", "--name", "agent", "--role", "node", "--node", "n1"]))
            .expect("json");
    assert_eq!(token["node"], "n1");
    ok(&c, &["endpoints", "add", "shop/web-1", "--tenant", "shop", "--host", "n1", "--label", "app=web"]);
    let relabelled: Value =
        serde_json::from_str(&ok(&c, &["-o", "json", "endpoints", "label", "shop/web-1", "--label", "app=api"])).expect("json");
    assert_eq!(relabelled["labels"], serde_json::json!({"app": "api"}));
    ok(&c, &["policies", "remove", "NetworkPolicy shop/deny-all"]);
    assert!(!ok(&c, &["policies", "list"]).contains("deny-all"));
}

/// The README's policy examples run as written, on the files it points to.
#[test]
fn readme_policy_examples_run_on_the_shipped_files() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples");
    let run = |args: &[&str]| std::process::Command::new(binary("tessera")).current_dir(dir).args(args).output().expect("run tessera");
    let files = ["-f", "cluster.yaml", "-f", "policies.yaml"];
    let out =
        run(&[&["policy", "simulate"], &files[..], &["--port", "tcp/80", "--port", "udp/53", "--external", "192.0.2.10", "-o", "json"]]
            .concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["verdicts"].as_array().map(Vec::len), Some(4 * 3 * 2), "3 running pods and one external");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ops/batch-job: finished pod"));
    let out = run(&[&["policy", "explain"], &files[..], &["--from", "shop/web", "--to", "shop/db", "--port", "tcp/5432"]].concat());
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("ALLOWED shop/web -> shop/db tcp/5432"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run(&[&["policy", "render"], &files[..], &["--node", "node-1"]].concat());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("table inet tessera"), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Logs written to a pipe or a file carry no terminal colour codes.
#[test]
fn redirected_logs_have_no_colour_codes() {
    use std::io::{BufRead, BufReader};
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let mut child = std::process::Command::new(binary("tessera-controller"))
        .env("TESSERA_LISTEN", format!("127.0.0.1:{port}"))
        .env("TESSERA_DATABASE_URL", tessera_tests::sqlite_url())
        .env("TESSERA_ADMIN_TOKEN", "colour-test-admin-token")
        .env("TESSERA_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start controller");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("log line");
        let done = line.contains("serving the API");
        seen.push(line);
        if done {
            break;
        }
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
    assert!(seen.iter().any(|l| l.contains("serving the API")), "{seen:?}");
    assert!(seen.iter().all(|l| !l.contains('\x1b')), "ANSI escapes in redirected logs: {seen:?}");
}

#[test]
fn a_bad_replica_id_is_refused_naming_the_flag() {
    let out = std::process::Command::new(binary("tessera-controller"))
        .env("TESSERA_LISTEN", format!("127.0.0.1:{}", tessera_tests::free_port()))
        .env("TESSERA_DATABASE_URL", tessera_tests::sqlite_url())
        .env("TESSERA_ADMIN_TOKEN", "replica-id-test-token-0001")
        .env("TESSERA_REPLICA_ID", "bad id!")
        .output()
        .expect("run controller");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--replica-id"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_bgp_router_id_that_cannot_be_one_is_refused_naming_the_flag() {
    for id in ["0.0.0.0", "224.0.0.5", "255.255.255.255", "10.0.0"] {
        let out = std::process::Command::new(binary("tessera-controller"))
            .env("TESSERA_LISTEN", format!("127.0.0.1:{}", tessera_tests::free_port()))
            .env("TESSERA_DATABASE_URL", tessera_tests::sqlite_url())
            .env("TESSERA_ADMIN_TOKEN", "router-id-test-token-0001")
            .env("TESSERA_BGP_ROUTER_ID", id)
            .output()
            .expect("run controller");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("bgp-router-id"), "{id}: {stderr}");
    }
}

#[test]
fn bgp_vips_and_drain_through_the_cli() {
    let dir = tempfile::tempdir().expect("dir");
    let topology = dir.path().join("topology.yaml");
    std::fs::write(
        &topology,
        "networks: [{name: pods, cidr: 10.40.0.0/16}]\ngroups:\n  - name: rack-1\n    bgp: {localAs: 64512, peers: [{address: 192.0.2.254, as: 65001}]}\n",
    )
    .expect("topology");
    let c = Controller::start(&[("TESSERA_NO_DEMO", "true"), ("TESSERA_TOPOLOGY", topology.to_str().expect("path"))]);
    ok(&c, &["hosts", "add", "h1", "--ip", "192.0.2.1"]);
    let bgp = ok(&c, &["bgp"]);
    let row = bgp.lines().find(|l| l.starts_with("h1")).unwrap_or_default();
    assert!(row.contains("64512") && row.contains("10.40.0.0/16") && row.contains("NO"), "{bgp}");

    let vip = ok(&c, &["vips", "add", "198.51.100.9", "--host", "h1"]);
    assert!(vip.contains("198.51.100.9") && vip.contains("h1"), "{vip}");
    let err = fails(&c, &["vips", "add", "10.40.0.9", "--host", "h1"]);
    assert!(err.starts_with("tessera: address: 10.40.0.9 lies in network `pods`"), "{err}");
    assert!(ok(&c, &["vips", "list"]).contains("198.51.100.9"));

    assert!(ok(&c, &["hosts", "drain", "h1"]).contains("drained"));
    let json: Value = serde_json::from_str(&ok(&c, &["-o", "json", "bgp"])).expect("json");
    assert_eq!((json[0]["drained"].clone(), json[0]["desired"].clone()), (Value::Bool(true), serde_json::json!([])), "{json}");
    ok(&c, &["hosts", "undrain", "h1"]);
    ok(&c, &["vips", "remove", "198.51.100.9"]);
    assert_eq!(ok(&c, &["vips", "list"]).trim(), "ADDRESS  HOLDER  HOSTS  GROUP");
}

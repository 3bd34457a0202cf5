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
    assert_eq!(list.trim(), "ID  TENANT  SEGMENT  HOST  IPS");
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
    // The demo topology is there on a fresh controller.
    let show = ok(&c, &["topology", "show"]);
    assert!(show.contains("zone-a/rack-1"), "{show}");
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

//! The web UI at scale, as users run it: the release controller on its embedded default
//! (SQLite) holding 5,000 hosts, 100,000 endpoints in 50 tenants and 200 NetworkPolicies.
//!
//! Prints, for each view: the server's answer time (median and max of 5) and HTML size, beside
//! the REST API's answer for the same data (the yardstick: what the page costs above reading
//! it); then, in Debian's chromium, the topology view's page load (load event), its
//! time-to-interactive (DOMContentLoaded: the deferred script has run and the page takes
//! input) and its size, and the same for the endpoints and nodes views.
//!
//! `cargo build --release --bins && cargo bench -p tessera-tests --bench ui`
//! (`TESSERA_BENCH_HOSTS` and `TESSERA_BENCH_ENDPOINTS` shrink it).

use std::time::{Duration, Instant};

use tessera_tests::browser::Browser;
use tessera_tests::scale::{TENANTS, filled};
use tessera_tests::{Controller, free_port, percentile};

const TOKEN: &str = "bench-admin-token-000000001";
const RUNS: usize = 5;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `path` fetched `RUNS` times as a logged-in browser would (session cookie, or the bearer
/// token for the API): median and max seconds, and the body's size.
fn timed(c: &Controller, path: &str) -> (f64, f64, usize) {
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120)).build().expect("client");
    let mut times = Vec::new();
    let mut size = 0;
    for _ in 0..RUNS {
        let request = client.get(format!("{}{path}", c.url));
        let request = if path.starts_with("/v1/") {
            request.bearer_auth(TOKEN)
        } else {
            request.header("cookie", format!("tessera_session={TOKEN}"))
        };
        let started = Instant::now();
        let answer = request.send().expect("request");
        assert!(answer.status().is_success(), "{path}: {}", answer.status());
        size = answer.bytes().expect("body").len();
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    (percentile(&times, 0.5), times[RUNS - 1], size)
}

fn kib(bytes: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// The browser's navigation timing of `url`, `RUNS` times: medians of (response end, DOM
/// content loaded, load event) in seconds from the navigation's start, and the HTML's size.
fn navigation(b: &Browser, url: &str) -> (f64, f64, f64, usize) {
    let (mut response, mut interactive, mut load, mut size) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for _ in 0..RUNS {
        b.goto(url);
        let t = b.execute("const n = performance.getEntriesByType('navigation')[0]; return n.toJSON();");
        let ms = |k: &str| t[k].as_f64().unwrap_or(f64::NAN) / 1000.0;
        response.push(ms("responseEnd"));
        interactive.push(ms("domContentLoadedEventEnd"));
        load.push(ms("loadEventEnd"));
        size = t["decodedBodySize"].as_u64().unwrap_or(0) as usize;
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        percentile(&v, 0.5)
    };
    (median(response), median(interactive), median(load), size)
}

fn main() {
    let hosts = env_or("TESSERA_BENCH_HOSTS", 5000);
    let endpoints = env_or("TESSERA_BENCH_ENDPOINTS", 100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let db = tessera_tests::sqlite_url();
    let rate = runtime.block_on(filled(&db, hosts, endpoints, TOKEN));
    println!(
        "web UI at scale: {hosts} hosts, {endpoints} endpoints in {TENANTS} tenants (store filled at {rate:.0} allocations/s), SQLite"
    );
    let started = Instant::now();
    let c = Controller::start_with(free_port(), &db, TOKEN, &[("TESSERA_NO_DEMO", "true")]);
    println!("  controller serving {:.1} s after start", started.elapsed().as_secs_f64());

    // 4 NetworkPolicies a tenant: 200.
    let mut documents = String::new();
    for t in 0..TENANTS {
        for (name, from, port) in [("db", "api", 5432), ("api", "web", 8080), ("cache", "api", 6379), ("web", "lb", 443)] {
            documents.push_str(&format!(
                "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: t{t}}}\nspec:\n  podSelector: {{matchLabels: {{app: {name}}}}}\n  ingress: [{{from: [{{podSelector: {{matchLabels: {{app: {from}}}}}}}], ports: [{{port: {port}}}]}}]\n"
            ));
        }
    }
    let answer = reqwest::blocking::Client::new()
        .post(format!("{}/v1/policies", c.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/yaml")
        .body(documents)
        .timeout(Duration::from_secs(300))
        .send()
        .expect("policies");
    assert!(answer.status().is_success(), "policies: {}", answer.text().unwrap_or_default());

    let (db_pod, web_pod) = ("t7/pod-207", "t7/pod-7");
    let ip = c.get(&format!("/v1/endpoints/{db_pod}"))["ips"][0].as_str().expect("an address").to_string();
    println!("  server answer, median / max of {RUNS}, and size (yardstick: the REST API's answer for the same data):");
    let pages: [(&str, String, Option<&str>); 10] = [
        ("topology", "/ui/topology".into(), Some("/v1/topology")),
        ("nodes, page 1 of 50", "/ui/nodes".into(), Some("/v1/nodes")),
        ("endpoints, page 1", "/ui/endpoints".into(), None),
        ("endpoints of t7 labelled app=db", "/ui/endpoints?tenant=t7&labels=app%3Ddb".into(), Some("/v1/endpoints?tenant=t7")),
        ("endpoints, a page deep in the list", "/ui/endpoints?after=t42%2Fpod-50000".into(), None),
        ("policies, page 1", "/ui/policies".into(), Some("/v1/policies")),
        ("tenants, page 1", "/ui/tenants".into(), Some("/v1/tenants")),
        ("tenant t7 with its matrix", "/ui/tenants/t7".into(), None),
        (
            "explain a blocked pair",
            format!("/ui/explain?from={}&to={}&port=tcp%2F22", web_pod.replace('/', "%2F"), db_pod.replace('/', "%2F")),
            None,
        ),
        ("search: who owns an address", format!("/ui/search?q={ip}"), None),
    ];
    for (name, path, yardstick) in &pages {
        let (median, max, size) = timed(&c, path);
        let beside = match yardstick {
            Some(api) => {
                let (m, _, s) = timed(&c, api);
                format!("   [GET {api}: {:.0} ms, {}]", m * 1000.0, kib(s))
            }
            None => String::new(),
        };
        println!("    {name:<38} {:>6.0} ms / {:>6.0} ms  {:>10}{beside}", median * 1000.0, max * 1000.0, kib(size));
    }

    // In the browser: page load and time to interactive, from the navigation's start.
    let b = Browser::start();
    b.goto(&format!("{}/ui/login", c.url));
    b.type_into("#token", TOKEN);
    b.click("form button[type=submit]");
    b.wait_for("logged in", |b| b.url().ends_with("/ui/topology"));
    println!("  in chromium (headless), median of {RUNS} loads: HTML received / interactive (DOMContentLoaded) / load event, HTML size");
    for (name, path) in [("topology", "/ui/topology"), ("endpoints", "/ui/endpoints"), ("nodes", "/ui/nodes"), ("policies", "/ui/policies")]
    {
        let (response, interactive, load, size) = navigation(&b, &format!("{}{path}", c.url));
        println!(
            "    {name:<12} {:>6.0} ms / {:>6.0} ms / {:>6.0} ms  {}",
            response * 1000.0,
            interactive * 1000.0,
            load * 1000.0,
            kib(size)
        );
    }
    let (rss, peak) = tessera_tests::process_memory(c.pid());
    println!("  controller: {rss:.0} MB resident, {peak:.0} MB peak");
}

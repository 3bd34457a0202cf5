//! The control plane at scale, as users run it: three release controller replicas on one
//! PostgreSQL store holding 5,000 hosts and 50,000 endpoints, with 2,000 node watch streams
//! spread over the replicas (this process holds them).
//!
//! Prints: each replica's cold start (until it serves watches) and memory; a policy change
//! POSTed to one replica until every affected stream (on any replica) has the new state
//! (p50/p99/max); pod churn under a segment policy (how many other streams got an update: the
//! goal is none); and write throughput through the operations layer on SQLite and PostgreSQL
//! beside the raw store write of the same allocations (the feed's and the distribution's cost).
//!
//! `cargo build --release --bins && cargo bench -p tessera-tests --bench control_plane`
//! (`TESSERA_BENCH_ENDPOINTS` and `TESSERA_BENCH_HOSTS` shrink it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tessera_controller::api::AppState;
use tessera_controller::store::Store;
use tessera_tests::scale::{TENANTS, endpoint, filled, populate};
use tessera_tests::{Controller, free_port, percentile};

const TOKEN: &str = "bench-admin-token-000000001";
const WATCHES: usize = 2000;
const CHANGES: usize = 20;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Every state line each watch received: (node, generation, when).
type Seen = Arc<Mutex<Vec<(String, u64, Instant)>>>;

async fn watch(url: String, node: String, seen: Seen, connected: Arc<tokio::sync::Semaphore>) {
    let client = reqwest::Client::builder().build().expect("client");
    let Ok(mut resp) = client.get(format!("{url}/v1/nodes/{node}/state?watch=true")).bearer_auth(TOKEN).send().await else { return };
    let mut buffer = Vec::new();
    let mut first = true;
    while let Ok(Some(chunk)) = resp.chunk().await {
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let Ok(state) = serde_json::from_slice::<Value>(&line) else { continue };
            if first {
                first = false;
                connected.add_permits(1);
            }
            let generation = state["generation"].as_u64().unwrap_or(0);
            seen.lock().expect("lock").push((node.clone(), generation, Instant::now()));
        }
    }
}

fn post_policy(url: &str, yaml: &str) {
    let answer = reqwest::blocking::Client::new()
        .post(format!("{url}/v1/policies"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/yaml")
        .body(yaml.to_string())
        .timeout(Duration::from_secs(60))
        .send()
        .expect("post policy");
    assert!(answer.status().is_success(), "policy: {}", answer.text().unwrap_or_default());
}

/// The newest generation each stream has seen.
fn latest(seen: &Seen) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (node, generation, _) in seen.lock().expect("lock").iter() {
        let g = out.entry(node.clone()).or_insert(0);
        *g = (*g).max(*generation);
    }
    out
}

fn main() {
    let hosts = env_or("TESSERA_BENCH_HOSTS", 5000);
    let endpoints = env_or("TESSERA_BENCH_ENDPOINTS", 50_000);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let db = runtime.block_on(tessera_tests::pg::fresh_database());
    let rate = runtime.block_on(filled(&db, hosts, endpoints, TOKEN));
    println!(
        "control plane at scale: {hosts} hosts, {endpoints} endpoints ({rate:.0} allocations/s while filling the store), 3 replicas, {WATCHES} watch streams"
    );

    // Three replicas, each started cold on the filled store.
    let mut replicas = Vec::new();
    for r in 0..3 {
        let started = Instant::now();
        let env = [("TESSERA_REPLICA_ID", format!("r{r}")), ("TESSERA_LOG", "warn".into())];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let c = Controller::start_with(free_port(), &db, TOKEN, &env);
        let took = started.elapsed();
        let (rss, peak) = tessera_tests::process_memory(c.pid());
        println!(
            "  replica r{r}: serving {:.2} s after start (cold, goal < 10 s); {rss:.0} MB resident, {peak:.0} MB peak",
            took.as_secs_f64()
        );
        replicas.push(c);
    }
    let urls: Vec<String> = replicas.iter().map(|c| c.url.clone()).collect();

    // 2,000 watch streams on as many nodes, spread over the replicas.
    let seen: Seen = Arc::default();
    let connected = Arc::new(tokio::sync::Semaphore::new(0));
    for w in 0..WATCHES.min(hosts) {
        runtime.spawn(watch(urls[w % 3].clone(), format!("host-{w}"), seen.clone(), connected.clone()));
    }
    let all = WATCHES.min(hosts) as u32;
    runtime.block_on(async {
        let wait = connected.acquire_many(all);
        tokio::time::timeout(Duration::from_secs(120), wait).await.expect("watches connected").expect("semaphore").forget();
    });

    // Policy changes through replica r0; every stream whose node changed must see it.
    let mut latencies = Vec::new();
    let mut affected_total = 0;
    for i in 0..CHANGES {
        let tenant = i % TENANTS;
        let yaml = format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: bench, namespace: t{tenant}}}\nspec:\n  podSelector: {{matchLabels: {{app: db}}}}\n  ingress:\n  - from: [{{podSelector: {{matchLabels: {{app: api}}}}}}]\n    ports: [{{port: {}}}]\n",
            5000 + i
        );
        let before = latest(&seen);
        let started = Instant::now();
        post_policy(&urls[0], &yaml);
        // Which nodes changed: the store's word, from any replica.
        let nodes: Value = reqwest::blocking::Client::new()
            .get(format!("{}/v1/nodes", urls[1]))
            .bearer_auth(TOKEN)
            .send()
            .expect("nodes")
            .json()
            .expect("json");
        let desired: BTreeMap<String, u64> = nodes
            .as_array()
            .expect("nodes")
            .iter()
            .map(|n| (n["node"].as_str().unwrap_or_default().to_string(), n["desiredGeneration"].as_u64().unwrap_or(0)))
            .collect();
        let affected: Vec<(String, u64)> =
            before.iter().filter_map(|(node, g)| desired.get(node).filter(|d| *d > g).map(|d| (node.clone(), *d))).collect();
        affected_total += affected.len();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = latest(&seen);
            if affected.iter().all(|(node, want)| now.get(node).is_some_and(|g| g >= want)) {
                break;
            }
            assert!(Instant::now() < deadline, "change {i}: not every affected stream got its state");
            std::thread::sleep(Duration::from_millis(5));
        }
        let log = seen.lock().expect("lock");
        for (node, want) in &affected {
            if let Some((_, _, at)) = log.iter().find(|(n, g, at)| n == node && g >= want && *at >= started) {
                latencies.push(at.duration_since(started).as_secs_f64() * 1e3);
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "  policy change (POST to r0) until every affected stream has it, on any replica: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} stream updates over {CHANGES} changes; goal p99 < 1 s)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(0.0),
        affected_total
    );

    // Pod churn inside existing blocks of a segment that segment policies name.
    let segment_policy = "apiVersion: tessera.io/v1\nkind: TesseraPolicy\nmetadata: {name: back-from-front, namespace: t0}\nspec:\n  segment: back\n  ingress:\n  - from: [{segment: front}]\n    ports: [{protocol: tcp, port: 5432}]\n";
    post_policy(&urls[0], segment_policy);
    std::thread::sleep(Duration::from_secs(2));
    let before = latest(&seen);
    let churn_host = "host-0";
    for round in 0..20 {
        let id = format!("t0/churn-{round}");
        let body = json!({"id": id, "tenant": "t0", "segment": "front", "host": churn_host, "labels": {"app": "web"}});
        let client = reqwest::blocking::Client::new();
        let created = client.post(format!("{}/v1/endpoints", urls[round % 3])).bearer_auth(TOKEN).json(&body).send().expect("allocate");
        assert!(created.status().is_success());
        let gone = client
            .delete(format!("{}/v1/endpoints/{}", urls[(round + 1) % 3], id.replace('/', "%2F")))
            .bearer_auth(TOKEN)
            .send()
            .expect("release");
        assert!(gone.status().is_success());
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = latest(&seen);
    let others: u64 = after.iter().filter(|(n, _)| n.as_str() != churn_host).map(|(n, g)| g - before.get(n).copied().unwrap_or(*g)).sum();
    let own = after.get(churn_host).copied().unwrap_or(0) - before.get(churn_host).copied().unwrap_or(0);
    println!(
        "  pod churn (20 ADD/DEL in segment t0/front on {churn_host}, through all replicas): {others} updates on the other {} streams (goal 0), {own} on {churn_host}",
        after.len() - 1
    );
    for (r, c) in replicas.iter().enumerate() {
        let (rss, peak) = tessera_tests::process_memory(c.pid());
        println!("  replica r{r}: {rss:.0} MB resident, {peak:.0} MB peak, after the run");
    }
    drop(replicas);

    // Write throughput: the raw store write (with its change record) beside the operations layer
    // (write, feed, this replica's distributor applying it) on each backend.
    let n = env_or("TESSERA_BENCH_WRITES", 2000);
    runtime.block_on(async {
        for (backend, url) in [("sqlite", tessera_tests::sqlite_url()), ("postgres", tessera_tests::pg::fresh_database().await)] {
            let store = Store::connect(&url).await.expect("store");
            let raw = populate(&store, 50, n).await;
            let state = AppState::new(store.clone()).await.expect("app state");
            let started = Instant::now();
            let mut tasks = Vec::new();
            for c in 0..8 {
                let ops = state.ops.clone();
                tasks.push(tokio::spawn(async move {
                    for i in (c..n).step_by(8) {
                        let mut e = endpoint(i, 50);
                        e.id = format!("{}-ops", e.id);
                        ops.allocate(e).await.expect("allocate");
                    }
                }));
            }
            for t in tasks {
                t.await.expect("client");
            }
            let through_ops = n as f64 / started.elapsed().as_secs_f64();
            println!("  writes on {backend} (8 clients, {n} endpoints): store {raw:.0}/s; operations layer (+ feed, distribution, wait until applied) {through_ops:.0}/s");
        }
    });
}

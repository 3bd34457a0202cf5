//! Several controller replicas on one PostgreSQL store (real processes, a real server): any
//! replica takes writes and serves any node the same state under the same generation; the writer
//! lease moves to a survivor when its holder dies; nothing a client was told was written is lost,
//! and no address is handed out twice; generations continue across restarts.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tessera_tests::{Controller, free_port};

const TOKEN: &str = "replicas-admin-token-0001";
/// Fast lease timings, so failover is quick in tests.
const LEASE: [(&str, &str); 3] = [("TESSERA_LEASE_RENEW_MS", "300"), ("TESSERA_LEASE_TTL_MS", "3000"), ("TESSERA_LOG", "warn")];

fn database() -> String {
    tokio::runtime::Runtime::new().expect("runtime").block_on(tessera_tests::pg::fresh_database())
}

fn replica(db: &str, name: &str) -> Controller {
    let mut env: Vec<(&str, &str)> = LEASE.to_vec();
    env.push(("TESSERA_REPLICA_ID", name));
    Controller::start_with(free_port(), db, TOKEN, &env)
}

/// Poll `check` until it holds or `limit` passes; how long it took.
fn within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

fn state(c: &Controller, node: &str) -> (Value, Value) {
    let s = c.get(&format!("/v1/nodes/{node}/state"));
    (s["generation"].clone(), s["digest"].clone())
}

#[test]
fn every_replica_serves_the_same_state_under_the_same_generation() {
    let db = database();
    let a = replica(&db, "a");
    let b = replica(&db, "b");
    let c = replica(&db, "c");
    assert_eq!(a.send("POST", "/v1/hosts", json!({"name": "h1", "ips": ["192.0.2.1"]})).0, 201);
    assert_eq!(a.send("POST", "/v1/tenants", json!({"name": "shop", "labels": {"team": "shop"}})).0, 201);
    for i in 0..5 {
        let (status, body) =
            a.send("POST", "/v1/endpoints", json!({"id": format!("shop/p{i}"), "tenant": "shop", "host": "h1", "labels": {"app": "web"}}));
        assert_eq!(status, 201, "{body}");
    }
    let policy = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: shop}\nspec: {podSelector: {matchLabels: {app: web}}, ingress: [{from: [{podSelector: {}}]}]}\n";
    let answer = reqwest::blocking::Client::new()
        .post(format!("{}/v1/policies", a.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/yaml")
        .body(policy)
        .send()
        .expect("policy");
    assert_eq!(answer.status(), 200);
    let on_a = state(&a, "h1");
    assert!(on_a.0.as_u64().is_some_and(|g| g >= 1), "{on_a:?}");
    for other in [&b, &c] {
        let took = within(Duration::from_secs(10), "a replica follows the feed", || state(other, "h1") == on_a);
        println!("replica caught up in {took:?}");
    }
    // Exactly one replica holds the writer lease, and all agree which.
    let leaders: Vec<Value> = [&a, &b, &c].iter().map(|r| r.get("/v1/leader")).collect();
    let holder = leaders[0]["holder"].clone();
    assert!(leaders.iter().all(|l| l["holder"] == holder), "{leaders:?}");
    within(Duration::from_secs(5), "one replica holds the lease", || {
        [&a, &b, &c].iter().filter(|r| r.get("/v1/leader")["thisReplicaHoldsIt"] == true).count() == 1
    });
    let controllers = b.get("/v1/controllers");
    let ids: BTreeSet<&str> = controllers.as_array().expect("list").iter().filter_map(|x| x["id"].as_str()).collect();
    assert_eq!(ids, BTreeSet::from(["a", "b", "c"]));
    // An ack through one replica is the status on every other.
    let (generation, digest) = state(&b, "h1");
    assert_eq!(b.send("POST", "/v1/nodes/h1/ack", json!({"generation": generation, "digest": digest})).0, 204);
    within(Duration::from_secs(5), "the ack reaches the store", || {
        c.get("/v1/nodes").as_array().is_some_and(|l| l.iter().any(|n| n["node"] == "h1" && n["appliedGeneration"] == generation))
    });
}

#[test]
fn the_lease_moves_when_its_holder_dies_and_no_acknowledged_write_is_lost() {
    let db = database();
    let mut replicas = [replica(&db, "a"), replica(&db, "b"), replica(&db, "c")];
    for (i, ip) in ["192.0.2.1", "192.0.2.2"].iter().enumerate() {
        assert_eq!(replicas[0].send("POST", "/v1/hosts", json!({"name": format!("h{i}"), "ips": [ip]})).0, 201);
    }
    assert_eq!(replicas[0].send("POST", "/v1/tenants", json!({"name": "shop"})).0, 201);
    within(Duration::from_secs(5), "a lease holder", || replicas[0].get("/v1/leader")["holder"].is_string());
    let holder = replicas[0].get("/v1/leader")["holder"].as_str().expect("holder").to_string();
    let victim = ["a", "b", "c"].iter().position(|n| *n == holder).expect("known holder");

    // Four clients write through all replicas while the holder is killed.
    let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
    let acknowledged = std::sync::Mutex::new(Vec::<(String, Vec<String>)>::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for client in 0..4 {
            let (urls, acknowledged, stop) = (&urls, &acknowledged, &stop);
            s.spawn(move || {
                let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = format!("shop/c{client}-{n}");
                    let url = &urls[(client + n) % urls.len()];
                    let body = json!({"id": id, "tenant": "shop", "host": format!("h{}", n % 2)});
                    let answer = http.post(format!("{url}/v1/endpoints")).bearer_auth(TOKEN).json(&body).send();
                    if let Some(r) = answer.ok().filter(|r| r.status().is_success()) {
                        let v: Value = r.json().expect("json");
                        let ips = v["ips"].as_array().expect("ips").iter().map(|x| x.as_str().expect("ip").to_string()).collect();
                        acknowledged.lock().expect("lock").push((id, ips));
                    }
                    n += 1;
                }
            });
        }
        std::thread::sleep(Duration::from_millis(1500));
        replicas[victim].kill();
        let killed = Instant::now();
        let survivor = &replicas[(victim + 1) % 3];
        let took = within(Duration::from_secs(15), "a survivor takes the lease", || {
            let l = survivor.get("/v1/leader");
            l["holder"].as_str().is_some_and(|h| h != holder) && l["expiresInMs"].as_i64().is_some_and(|e| e > 0)
        });
        println!("writer lease taken over {:?} after the holder was killed (TTL 3 s)", killed.elapsed().min(took));
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let survivor = &replicas[(victim + 1) % 3];
    let acknowledged = acknowledged.into_inner().expect("lock");
    assert!(acknowledged.len() > 20, "only {} writes went through", acknowledged.len());
    let stored = survivor.get("/v1/endpoints");
    let stored: std::collections::BTreeMap<String, Value> =
        stored.as_array().expect("endpoints").iter().map(|e| (e["id"].as_str().expect("id").to_string(), e["ips"].clone())).collect();
    let mut addresses = BTreeSet::new();
    for (id, ips) in &acknowledged {
        assert!(stored.contains_key(id), "{id} was acknowledged but is not stored");
        assert_eq!(stored[id], json!(ips), "{id}");
    }
    for ips in stored.values() {
        for ip in ips.as_array().expect("ips") {
            assert!(addresses.insert(ip.as_str().expect("ip").to_string()), "{ip} handed out twice");
        }
    }
    println!("{} acknowledged writes, all stored; {} addresses, all distinct", acknowledged.len(), addresses.len());
}

#[test]
fn generations_continue_when_every_replica_restarts() {
    let db = database();
    let ports = [free_port(), free_port()];
    let start = |i: usize| {
        let mut env: Vec<(&str, &str)> = LEASE.to_vec();
        let name = ["a", "b"][i];
        env.push(("TESSERA_REPLICA_ID", name));
        Controller::start_with(ports[i], &db, TOKEN, &env)
    };
    let (mut a, mut b) = (start(0), start(1));
    assert_eq!(a.send("POST", "/v1/hosts", json!({"name": "h1", "ips": ["192.0.2.1"]})).0, 201);
    assert_eq!(a.send("POST", "/v1/tenants", json!({"name": "shop"})).0, 201);
    assert_eq!(b.send("POST", "/v1/endpoints", json!({"id": "shop/p", "tenant": "shop", "host": "h1"})).0, 201);
    let before = state(&b, "h1");
    a.stop();
    b.kill();
    let (a, b) = (start(0), start(1));
    assert_eq!(state(&a, "h1"), before, "same state, same generation after a restart");
    assert_eq!(state(&b, "h1"), before);
    assert_eq!(a.send("POST", "/v1/endpoints", json!({"id": "shop/q", "tenant": "shop", "host": "h1"})).0, 201);
    let after = state(&a, "h1");
    assert!(after.0.as_u64() > before.0.as_u64(), "{before:?} -> {after:?}");
    within(Duration::from_secs(10), "b follows", || state(&b, "h1") == after);
}

#[test]
fn replicas_ride_out_a_postgresql_restart() {
    let server = tessera_tests::pg::OwnServer::start();
    let db = tokio::runtime::Runtime::new().expect("runtime").block_on(server.database("restart"));
    let a = replica(&db, "a");
    let b = replica(&db, "b");
    assert_eq!(a.send("POST", "/v1/hosts", json!({"name": "h1", "ips": ["192.0.2.1"]})).0, 201);
    assert_eq!(a.send("POST", "/v1/tenants", json!({"name": "shop"})).0, 201);
    let ready = |c: &Controller| {
        reqwest::blocking::Client::new()
            .get(format!("{}/readyz", c.url))
            .timeout(Duration::from_secs(5))
            .send()
            .is_ok_and(|r| r.status().is_success())
    };
    assert!(ready(&a) && ready(&b));
    server.down();
    within(Duration::from_secs(10), "readyz false while the store is down", || !ready(&a) && !ready(&b));
    server.up();
    let took = within(Duration::from_secs(30), "readyz true once the store is back", || ready(&a) && ready(&b));
    println!("replicas ready {took:?} after PostgreSQL came back");
    let (status, body) = b.send("POST", "/v1/endpoints", json!({"id": "shop/p", "tenant": "shop", "host": "h1"}));
    assert_eq!(status, 201, "{body}");
    within(Duration::from_secs(10), "the other replica follows again", || {
        state(&a, "h1") == state(&b, "h1") && a.get("/v1/nodes/h1/state")["endpoints"].as_array().is_some_and(|e| e.len() == 1)
    });
}

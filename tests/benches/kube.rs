//! The operator at scale, as users run it: the release controller (with its operator) watching
//! the real kube-apiserver, driving the virtual datacenter (2 racks × 2 hosts, an agent each;
//! root). Figures:
//! 1. 200 Namespaces, 5,000 Pods (their endpoints made through the API as `tessera-cni` makes
//!    them, then the Pods with those addresses, as kubelets report them) and 1,000
//!    NetworkPolicies created against the apiserver: the time the apiserver took to take them
//!    (the yardstick), then until the store holds every policy and every endpoint has its pod's
//!    labels (every node's state compiled: writes answer once compiled), and until every agent
//!    has applied its state;
//! 2. one NetworkPolicy changed with the API, until every agent has applied the change:
//!    p50/p99 over `TESSERA_BENCH_CHANGES` (10) changes, each printed as it lands;
//! 3. the controller's memory (the operator runs in it, beside the compiled state).
//!
//! `cargo build --release --bins && cargo bench -p tessera-tests --bench kube`
//! (`TESSERA_BENCH_PODS` changes the 5,000; namespaces and policies scale with it).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tessera_tests::kube::Cluster;
use tessera_tests::vdc::Datacenter;

const HOSTS: usize = 4;
const THREADS: usize = 8;

fn wait(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// Run `work` over `items` on a few threads.
fn parallel<T: Sync>(items: &[T], work: impl Fn(&T) + Sync) {
    let chunk = items.len().div_ceil(THREADS).max(1);
    std::thread::scope(|s| {
        for part in items.chunks(chunk) {
            let work = &work;
            s.spawn(move || part.iter().for_each(work));
        }
    });
}

fn main() {
    tessera_tests::netns::require_root();
    let pods: usize = std::env::var("TESSERA_BENCH_PODS").ok().and_then(|v| v.parse().ok()).unwrap_or(5000);
    let namespaces = (pods / 25).max(1);
    let policies = namespaces * 5;
    let k = Cluster::start();
    let kubeconfig = k.kubeconfig();
    let dc = Datacenter::with_controller_env(2, HOSTS / 2, &[("TESSERA_KUBECONFIG", kubeconfig.to_str().expect("path"))]);
    let pid = dc.controller_pid(0).expect("controller");
    let (rss_idle, _) = tessera_tests::process_memory(pid);
    let create = |path: &str, object: &Value| {
        let (status, body) = k.request("POST", path, Some(object)).expect("create");
        assert_eq!(status, 201, "{path}: {body}");
    };

    // Namespaces → tenants.
    let started = Instant::now();
    let names: Vec<String> = (0..namespaces).map(|n| format!("team-{n}")).collect();
    // A quarter of them in tier t0, which every policy lets in.
    parallel(&names, |name| {
        let tier = if name.ends_with(['0', '4']) { "t0" } else { "t1" };
        create("/api/v1/namespaces", &json!({"metadata": {"name": name, "labels": {"team": name, "tier": tier}}}))
    });
    let tenants = wait("the tenants", Duration::from_secs(300), || {
        dc.api("GET", "/v1/tenants", None).as_array().map_or(0, |t| t.iter().filter(|t| t["origin"] == "kubernetes").count()) >= namespaces
    });
    println!("{namespaces} Namespaces created in {:.1?}; tenants {:.1?} after the last", started.elapsed() - tenants, tenants);

    // Endpoints as tessera-cni makes them (a pod's address exists before the apiserver has it).
    let pod_names: Vec<(usize, String, String, usize)> = (0..pods)
        .map(|i| {
            let ns = i % namespaces;
            // A namespace's 25 pods over two hosts, namespaces round the four: 1,250 pods a host.
            (i, names[ns].clone(), format!("p{i}"), (ns + i / namespaces % 2) % HOSTS)
        })
        .collect();
    let ips = std::sync::Mutex::new(vec![String::new(); pods]);
    let started = Instant::now();
    parallel(&pod_names, |(i, ns, name, host)| {
        let body = json!({"id": format!("cni/{ns}-{name}/eth0"), "tenant": ns, "host": dc.hosts[*host].name, "labels": {}});
        let (status, answer) = dc.try_api("POST", "/v1/endpoints", Some(body));
        assert_eq!(status, 201, "{answer}");
        ips.lock().expect("ips")[*i] = answer["ips"][0].as_str().expect("ip").to_string();
    });
    let ips = ips.into_inner().expect("ips");
    println!("{pods} endpoints allocated through the API (the CNI path) in {:.1?}", started.elapsed());

    // The Pods and the NetworkPolicies against the apiserver.
    let started = Instant::now();
    parallel(&pod_names, |(i, ns, name, host)| {
        let app = format!("app-{}", i / namespaces % 5);
        let pod = json!({"metadata": {"name": name, "labels": {"app": app}},
            "spec": {"nodeName": dc.hosts[*host].name, "containers": [{"name": "c", "image": "c", "ports": [{"name": "http", "containerPort": 8080}]}]}});
        create(&format!("/api/v1/namespaces/{ns}/pods"), &pod);
        let running = json!({"status": {"phase": "Running", "podIP": ips[*i], "podIPs": [{"ip": ips[*i]}]}});
        assert_eq!(k.merge_patch(&format!("/api/v1/namespaces/{ns}/pods/{name}/status"), &running).0, 200);
    });
    let policy = |ns: &str, p: usize, port: u16| {
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": format!("np-{p}"), "namespace": ns},
            "spec": {"podSelector": {"matchLabels": {"app": format!("app-{p}")}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": format!("app-{}", (p + 1) % 5)}}},
                                      {"namespaceSelector": {"matchLabels": {"tier": "t0"}}}],
                             "ports": [{"port": "http"}, {"port": port}]}]}})
    };
    let policy_keys: Vec<(String, usize)> = names.iter().flat_map(|ns| (0..5).map(move |p| (ns.clone(), p))).collect();
    parallel(&policy_keys, |(ns, p)| create(&format!("/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"), &policy(ns, *p, 9000)));
    let created = started.elapsed();
    println!("apiserver took {pods} Pods (create + status) and {policies} NetworkPolicies in {created:.1?} (the yardstick)");
    let labelled = |dc: &Datacenter| {
        dc.api("GET", "/v1/endpoints", None).as_array().map_or(0, |e| e.iter().filter(|e| e["labels"]["app"].is_string()).count())
    };
    let stored = |dc: &Datacenter| {
        dc.api("GET", "/v1/policies", None).as_array().map_or(0, |p| p.iter().filter(|p| p["origin"] == "kubernetes").count())
    };
    let compiled = wait("every object in the store", Duration::from_secs(600), || stored(&dc) >= policies && labelled(&dc) >= pods);
    println!(
        "store holds all {policies} policies and {pods} labelled endpoints {:.1?} after the last object was created ({:.1?} from the first)",
        compiled,
        created + compiled
    );
    let applied = dc.wait_converged(Duration::from_secs(600));
    println!("every agent applied its state {:.1?} later ({:.1?} from the first object)", applied, created + compiled + applied);
    let (rss_loaded, _) = tessera_tests::process_memory(pid);
    for n in dc.api("GET", "/v1/nodes", None).as_array().into_iter().flatten() {
        println!("  node {}: generation {}", n["node"], n["desiredGeneration"]);
    }

    // One NetworkPolicy changed, until every agent has applied it.
    let rounds: usize = std::env::var("TESSERA_BENCH_CHANGES").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let mut took = Vec::new();
    for round in 0..rounds {
        let ns = &names[round % namespaces];
        let generations = |dc: &Datacenter| -> Vec<(Value, Value)> {
            dc.api("GET", "/v1/nodes", None)
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| (n["desiredGeneration"].clone(), n["appliedGeneration"].clone()))
                .collect()
        };
        let before: Vec<Value> = generations(&dc).into_iter().map(|(d, _)| d).collect();
        let started = Instant::now();
        let patch = json!({"spec": {"ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 9100 + round as u16}]}]}});
        let (status, body) = k.merge_patch(&format!("/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/np-0"), &patch);
        assert_eq!(status, 200, "{body}");
        // Where the time goes: into the store (the operator), then to every node (compile,
        // distribution, the agents' nftables).
        let id = format!("/v1/policies/NetworkPolicy%20{ns}%2Fnp-0");
        let port = 9100 + round as u64;
        let stored = wait("the change stored", Duration::from_secs(300), || {
            dc.api("GET", &id, None)["document"]["spec"]["ingress"][0]["ports"][0]["port"] == port
        });
        wait("the change applied everywhere", Duration::from_secs(300), || {
            let now = generations(&dc);
            now.iter().zip(&before).any(|((d, _), b)| d != b) && now.iter().all(|(d, a)| d == a)
        });
        took.push(started.elapsed().as_secs_f64() * 1000.0);
        println!(
            "  change {round}: stored after {:.0} ms, every agent applied it after {:.0} ms",
            stored.as_secs_f64() * 1000.0,
            took[round]
        );
    }
    took.sort_by(f64::total_cmp);
    println!(
        "one NetworkPolicy changed → every agent applied: p50 {:.0} ms, p99 {:.0} ms ({rounds} changes)",
        tessera_tests::percentile(&took, 0.5),
        tessera_tests::percentile(&took, 0.99)
    );
    println!("controller (with the operator) RSS: {rss_idle:.0} MiB idle, {rss_loaded:.0} MiB with the cluster loaded");
}

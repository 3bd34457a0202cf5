//! Propagation of policy changes (needs root): 20 hosts with real agents in the virtual
//! datacenter plus 200 lightweight watch clients; each change is a policy POSTed through the
//! REST API, timed until every agent has acked it. Then pod churn inside a segment that
//! segment-based policies name: how many other nodes' states change (the goal is none).
//! `cargo bench -p tessera-tests --bench propagation`.

use std::io::BufRead;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tessera_tests::vdc::Datacenter;
use tessera_tests::{is_root, percentile};

const CHANGES: usize = 60;
const WATCHERS: usize = 200;

fn generations(dc: &Datacenter) -> Vec<(String, u64, Option<u64>)> {
    let nodes = dc.api("GET", "/v1/nodes", None);
    nodes
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap_or_default().to_string(),
                n["desiredGeneration"].as_u64().unwrap_or(0),
                n["appliedGeneration"].as_u64(),
            )
        })
        .collect()
}

fn policy(port: usize) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: bench, namespace: shop}}\nspec:\n  podSelector: {{}}\n  policyTypes: [Ingress]\n  ingress:\n  - ports: [{{port: {port}}}]\n"
    )
}

fn main() {
    if !is_root() {
        eprintln!("propagation bench: needs root (network namespaces); skipped");
        return;
    }
    let mut dc = Datacenter::new(2, 10);
    dc.api("POST", "/v1/tenants", Some(json!({"name": "shop"})));
    for s in ["web", "db"] {
        dc.api("POST", "/v1/tenants/shop/segments", Some(json!({"name": s})));
    }
    for h in 0..dc.hosts.len() {
        let segment = if h % 2 == 0 { "web" } else { "db" };
        dc.add_pod(&format!("p{h}"), h, "shop", segment, &[("app", segment)]);
    }
    dc.wait_converged(Duration::from_secs(30));

    // 200 watch clients on the real nodes' states, reading every update.
    let received = Arc::new(AtomicUsize::new(0));
    for w in 0..WATCHERS {
        let url = format!("{}/v1/nodes/{}/state?watch=true", dc.url(), dc.hosts[w % dc.hosts.len()].name);
        let (token, received) = (dc.token.clone(), received.clone());
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder().timeout(None).build().expect("client");
            let Ok(resp) = client.get(url).bearer_auth(token).send() else { return };
            for line in std::io::BufReader::new(resp).lines() {
                match line {
                    Ok(l) if !l.trim().is_empty() => {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < WATCHERS {
        assert!(Instant::now() < deadline, "watch clients did not all connect");
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut took = Vec::new();
    for i in 0..CHANGES {
        let started = Instant::now();
        dc.put_policies(&policy(1000 + i));
        loop {
            let g = generations(&dc);
            if g.iter().all(|(_, desired, applied)| *applied == Some(*desired)) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "change {i} did not converge: {g:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
        took.push(started.elapsed().as_secs_f64() * 1e3);
    }
    took.sort_by(f64::total_cmp);
    println!(
        "policy change -> acked by all {} agents ({} more watch clients): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {CHANGES} changes; watch clients received {} states",
        dc.hosts.len(),
        WATCHERS,
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        took[took.len() - 1],
        received.load(Ordering::Relaxed)
    );

    // Segment-based policy, then pods coming and going inside an existing block of `web`.
    let segment_policy = "apiVersion: tessera.io/v1\nkind: TesseraPolicy\nmetadata: {name: db-from-web, namespace: shop}\nspec:\n  segment: db\n  ingress:\n  - from: [{segment: web}]\n    ports: [{protocol: tcp, port: 5432}]\n";
    dc.put_policies(segment_policy);
    dc.wait_converged(Duration::from_secs(30));
    let before: Vec<(String, u64, Option<u64>)> = generations(&dc);
    let churn_host = 0;
    let mut made = 0;
    for round in 0..10 {
        let pod = dc.add_pod(&format!("churn{round}"), churn_host, "shop", "web", &[("app", "web")]);
        made += 1;
        let list = dc.conflist(churn_host);
        dc.runtime(churn_host).del(&list, &pod.attachment, Some(&pod.result)).expect("DEL");
        made += 1;
    }
    dc.wait_converged(Duration::from_secs(30));
    let after = generations(&dc);
    let churn_node = &dc.hosts[churn_host].name;
    let others_changed: u64 =
        before.iter().zip(&after).filter(|((name, _, _), _)| name != churn_node).map(|((_, b, _), (_, a, _))| a - b).sum();
    let own: u64 = before.iter().zip(&after).filter(|((name, _, _), _)| name == churn_node).map(|((_, b, _), (_, a, _))| a - b).sum();
    println!(
        "pod churn in segment shop/web ({made} ADD/DEL on {churn_node}) under a segment-based policy: {others_changed} state updates on the other {} nodes, {own} on {churn_node}",
        dc.hosts.len() - 1
    );
}

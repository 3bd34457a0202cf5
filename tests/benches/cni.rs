//! CNI ADD and DEL latency of `tessera-cni` (through its agent and controller, until the pod's
//! rules are enforced) side by side with the reference `ptp` + `host-local` pair, in the same
//! virtual host. Needs root. `cargo bench -p tessera-tests --bench cni`.

use serde_json::json;
use tessera_tests::cni::{Attachment, Runtime};
use tessera_tests::netns::run;
use tessera_tests::vdc::Datacenter;
use tessera_tests::{is_root, percentile};

const ROUNDS: usize = 200;

fn measure(dc: &mut Datacenter, rt: &Runtime, list: &serde_json::Value, label: &str) {
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        let slug: String = label.chars().filter(char::is_ascii_alphanumeric).collect();
        let ns = format!("{}-{slug}{i}", dc.prefix);
        run(&["ip", "netns", "add", &ns]);
        dc.own_namespace(&ns);
        let a = Attachment {
            container_id: format!("{slug}-{i}"),
            netns: format!("/var/run/netns/{ns}"),
            ifname: "eth0".into(),
            args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=p".into(),
        };
        let (result, took) = rt.add(list, &a).unwrap_or_else(|c| panic!("{label} ADD: {} {}", c.output, c.stderr));
        adds.push(took.as_secs_f64() * 1e3);
        let took = rt.del(list, &a, Some(&result)).unwrap_or_else(|c| panic!("{label} DEL: {} {}", c.output, c.stderr));
        dels.push(took.as_secs_f64() * 1e3);
        dc.remove_namespace(&ns);
    }
    adds.sort_by(f64::total_cmp);
    dels.sort_by(f64::total_cmp);
    println!(
        "{label:>22}: ADD p50 {:6.1} ms p99 {:6.1} ms | DEL p50 {:6.1} ms p99 {:6.1} ms ({ROUNDS} pods)",
        percentile(&adds, 0.5),
        percentile(&adds, 0.99),
        percentile(&dels, 0.5),
        percentile(&dels, 0.99)
    );
}

fn main() {
    if !is_root() {
        eprintln!("cni bench: needs root (network namespaces); skipped");
        return;
    }
    let mut dc = Datacenter::new(1, 1);
    dc.api("POST", "/v1/tenants", Some(json!({"name": "shop"})));
    dc.wait_converged(std::time::Duration::from_secs(20));
    let rt = dc.runtime(0);
    let tessera = dc.conflist(0);
    measure(&mut dc, &rt, &tessera, "tessera-cni");
    // The agent's side of it: each state it applied, as its log says.
    let mut applies: Vec<f64> = dc
        .agent_log(0)
        .lines()
        .filter(|l| l.contains(" applied"))
        .filter_map(|l| l.split(" ms=").nth(1).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()))
        .collect();
    applies.sort_by(f64::total_cmp);
    if !applies.is_empty() {
        println!(
            "{:>22}: p50 {:6.1} ms p99 {:6.1} ms ({} states)",
            "agent applies",
            percentile(&applies, 0.5),
            percentile(&applies, 0.99),
            applies.len()
        );
    }
    let data = dc.dir.path().join("host-local");
    let reference = json!({
        "cniVersion": "1.0.0",
        "name": "reference",
        "plugins": [{"type": "ptp", "ipMasq": false, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.250.0.0/16"}]], "dataDir": data}}],
    });
    measure(&mut dc, &rt, &reference, "ptp + host-local");

    // Where tessera-cni's time goes: the allocation round trip alone (the API answers once the
    // new endpoint is compiled into every node's state), as the agent makes it.
    let host = dc.hosts[0].name.clone();
    let mut allocations = Vec::new();
    for i in 0..ROUNDS {
        let id = format!("shop/alloc-{i}");
        let started = std::time::Instant::now();
        dc.api("POST", "/v1/endpoints", Some(json!({"id": id, "tenant": "shop", "host": host, "labels": {}})));
        allocations.push(started.elapsed().as_secs_f64() * 1e3);
        dc.api("DELETE", &format!("/v1/endpoints/{id}"), None);
    }
    allocations.sort_by(f64::total_cmp);
    println!(
        "{:>22}: p50 {:6.1} ms p99 {:6.1} ms (of tessera-cni's ADD)",
        "allocation round trip",
        percentile(&allocations, 0.5),
        percentile(&allocations, 0.99)
    );
}

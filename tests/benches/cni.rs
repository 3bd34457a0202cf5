//! CNI ADD and DEL latency of `tessera-cni` (through its agent and controller, until the pod's
//! rules are enforced) side by side with the reference `ptp` + `host-local` pair, in the same
//! virtual host. Needs root. `cargo bench -p tessera-tests --bench cni`.

use serde_json::json;
use tessera_tests::cni::{Attachment, Runtime};
use tessera_tests::netns::run;
use tessera_tests::vdc::Datacenter;
use tessera_tests::{is_root, percentile};

const ROUNDS: usize = 200;

/// One pod's ADD then DEL with `list`, in a namespace of its own: the two latencies in ms.
fn pod(dc: &mut Datacenter, rt: &Runtime, list: &serde_json::Value, label: &str, i: usize) -> (f64, f64) {
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
    let (result, add) = rt.add(list, &a).unwrap_or_else(|c| panic!("{label} ADD: {} {}", c.output, c.stderr));
    let del = rt.del(list, &a, Some(&result)).unwrap_or_else(|c| panic!("{label} DEL: {} {}", c.output, c.stderr));
    dc.remove_namespace(&ns);
    // The next pod starts on a quiet node: the agent has applied the state without this one,
    // and the kernel has let go of the namespace.
    dc.wait_converged(std::time::Duration::from_secs(20));
    std::thread::sleep(std::time::Duration::from_millis(50));
    (add.as_secs_f64() * 1e3, del.as_secs_f64() * 1e3)
}

/// The ADD and DEL percentiles of `times`; the ADD's p50 and p99.
fn print(label: &str, mut times: Vec<(f64, f64)>) -> (f64, f64) {
    let mut adds: Vec<f64> = times.iter().map(|t| t.0).collect();
    times.sort_by(|a, b| a.1.total_cmp(&b.1));
    let dels: Vec<f64> = times.iter().map(|t| t.1).collect();
    adds.sort_by(f64::total_cmp);
    println!(
        "{label:>22}: ADD p50 {:6.1} ms p99 {:6.1} ms | DEL p50 {:6.1} ms p99 {:6.1} ms ({ROUNDS} pods)",
        percentile(&adds, 0.5),
        percentile(&adds, 0.99),
        percentile(&dels, 0.5),
        percentile(&dels, 0.99)
    );
    (percentile(&adds, 0.5), percentile(&adds, 0.99))
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
    let data = dc.dir.path().join("host-local");
    let reference = json!({
        "cniVersion": "1.0.0",
        "name": "reference",
        "plugins": [{"type": "ptp", "ipMasq": false, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.250.0.0/16"}]], "dataDir": data}}],
    });
    // Pods alternate between the two, each on a quiet node (the machine's noise falls on both
    // alike, and neither pays for the other's teardown).
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        ours.push(pod(&mut dc, &rt, &tessera, "tessera-cni", i));
        theirs.push(pod(&mut dc, &rt, &reference, "ptp + host-local", i));
    }
    let mine = print("tessera-cni", ours);
    let reference = print("ptp + host-local", theirs);
    println!("{:>22}: {:.2}× at p50, {:.2}× at p99 (goal ≤ 1.5×)", "ADD ratio", mine.0 / reference.0, mine.1 / reference.1);
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

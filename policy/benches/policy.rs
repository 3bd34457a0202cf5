//! `cargo bench -p tessera-policy`: full compile of 10,000 pods in 50 namespaces with 2,000
//! NetworkPolicies, incremental recompute after one pod's labels change, `simulate` on 2,000
//! pods / 500 policies / 4 ports, and the ruleset of a node with 110 pods (size, and `nft -f`
//! load time when run as root with nft installed). Prints its figures.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use ipnet::IpNet;
use tessera_policy::Inputs;
use tessera_policy::compile::Options;
use tessera_policy::compiler::Compiler;
use tessera_policy::model::Policy;
use tessera_policy::nft::{render, render_sets};
use tessera_policy::simulate::{parse_probe, simulate};
use tessera_policy::testgen::{APPS, Shape, cluster_yaml, segment_blocks};

fn load(shape: Shape, seed: u64) -> (Inputs, BTreeMap<String, Vec<IpNet>>) {
    let text = cluster_yaml(seed, shape);
    let started = Instant::now();
    let mut inputs = Inputs::default();
    inputs.add_text("generated", &text).expect("valid input");
    println!(
        "  parsed {} pods and {} policies ({} KiB of YAML) in {:.2} s",
        inputs.cluster.endpoints.len(),
        inputs.policies.len(),
        text.len() / 1024,
        started.elapsed().as_secs_f64()
    );
    let blocks = segment_blocks(&shape).into_iter().map(|(k, v)| (k, vec![v.parse().expect("block")])).collect();
    (inputs, blocks)
}

/// Whether to run a section: `cargo bench -p tessera-policy -- NAME` runs only the sections
/// whose name contains NAME (`label`, `whole`, `simulate`); no name runs all of them.
fn wanted(section: &str) -> bool {
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    filters.is_empty() || filters.iter().any(|f| section.contains(f.as_str()))
}

fn main() {
    if wanted("label-selector peers") {
        label_selector_peers();
    }
    if wanted("whole-segment peers") {
        whole_segment_peers();
    }
    if wanted("simulate") {
        simulate_bench();
    }
}

fn label_selector_peers() {
    println!("full compile: 10000 pods, 50 namespaces, 2000 NetworkPolicies, label-selector peers");
    let (mut compiler, policies) =
        compiled(Shape { namespaces: 50, pods: 10_000, policies: 2_000, cluster_policies: false, whole_segment_peers: false });
    report("one pod's labels change", relabel(&mut compiler));
    report("a pod added or removed inside its segment's block", churn(&mut compiler));
    report("a policy's ingress rules replaced", replace_policies(&mut compiler, &policies));
    report("a policy removed", remove_policies(&mut compiler, &policies));
    report("a namespace's labels change", relabel_namespaces(&mut compiler));

    // The ruleset of a node with 110 pods.
    let node_rules: Vec<_> = compiler.rules().values().take(110).collect();
    let started = Instant::now();
    let ruleset = render(&node_rules);
    let whole_ms = started.elapsed().as_secs_f64() * 1000.0;
    let started = Instant::now();
    let sets = render_sets(&node_rules);
    println!(
        "ruleset for a node with 110 pods: {} set/map elements, {} rules, {} KiB of nft text, rendered in {whole_ms:.1} ms \
         (the skeleton and sets an agent gets alone: {:.1} ms)",
        ruleset.set_elements,
        ruleset.rules,
        ruleset.text.len() / 1024,
        started.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(sets.sets, ruleset.sets);
    nft_load(&ruleset.text);
}

/// The same size where peers take whole namespaces: what segment compression is for.
fn whole_segment_peers() {
    println!("full compile: 10000 pods, 50 namespaces, 2000 NetworkPolicies, namespace-wide peers");
    let (mut whole, _) =
        compiled(Shape { namespaces: 50, pods: 10_000, policies: 2_000, cluster_policies: false, whole_segment_peers: true });
    report("one pod's labels change", relabel(&mut whole));
    report("a pod added or removed inside its segment's block", churn(&mut whole));
}

fn simulate_bench() {
    println!("simulate: 2000 pods, 500 policies, 4 ports");
    let shape = Shape { namespaces: 20, pods: 2_000, policies: 500, cluster_policies: false, whole_segment_peers: false };
    let (inputs, _) = load(shape, 11);
    let probes: Vec<_> = ["tcp/80", "tcp/5432", "udp/53", "sctp/9000"].iter().map(|p| parse_probe(p).expect("probe")).collect();
    let started = Instant::now();
    let verdicts = simulate(&inputs, &[], &probes).expect("simulate");
    let allowed = verdicts.iter().filter(|v| v.allowed).count();
    println!("  {} verdicts ({allowed} allowed) in {:.2} s", verdicts.len(), started.elapsed().as_secs_f64());
}

fn compiled(shape: Shape) -> (Compiler, Vec<Policy>) {
    let (inputs, blocks) = load(shape, 7);
    let started = Instant::now();
    let compiler = Compiler::new(inputs.cluster, blocks, inputs.policies.clone(), Options::default());
    println!("  compiled in {:.3} s", started.elapsed().as_secs_f64());
    (compiler, inputs.policies)
}

/// Timings in ms, node updates, and updates of nodes other than the changed pod's own.
struct Changes {
    times: Vec<f64>,
    nodes: usize,
    other_nodes: usize,
}

fn timed(compiler: &mut Compiler, out: &mut Changes, own: Option<String>, change: impl FnOnce(&mut Compiler) -> BTreeSet<String>) {
    let started = Instant::now();
    let nodes = change(compiler);
    out.times.push(started.elapsed().as_secs_f64() * 1000.0);
    out.nodes += nodes.len();
    out.other_nodes += nodes.iter().filter(|h| Some(*h) != own.as_ref()).count();
}

/// Change the `app` label of 100 pods spread over the cluster, one at a time.
fn relabel(compiler: &mut Compiler) -> Changes {
    let ids: Vec<String> = compiler.cluster().endpoints.keys().step_by(97).take(100).cloned().collect();
    let mut out = Changes { times: Vec::new(), nodes: 0, other_nodes: 0 };
    for (k, id) in ids.iter().enumerate() {
        let mut e = compiler.cluster().endpoints[id].clone();
        e.labels.insert("app".into(), APPS[(k + 1) % APPS.len()].into());
        timed(compiler, &mut out, e.host.clone(), |c| c.upsert_endpoint(e));
    }
    out
}

/// Give 20 policies another policy's ingress rules, one at a time.
fn replace_policies(compiler: &mut Compiler, policies: &[Policy]) -> Changes {
    let mut out = Changes { times: Vec::new(), nodes: 0, other_nodes: 0 };
    for k in 0..20 {
        let (p, other) = (&policies[k * 97 % policies.len()], &policies[(k * 31 + 5) % policies.len()]);
        let replaced = Policy { ingress: other.ingress.clone(), ..p.clone() };
        timed(compiler, &mut out, None, |c| c.upsert_policy(replaced));
    }
    out
}

/// Move 10 namespaces to another team, one at a time.
fn relabel_namespaces(compiler: &mut Compiler) -> Changes {
    let mut out = Changes { times: Vec::new(), nodes: 0, other_nodes: 0 };
    for k in 0..10 {
        let labels = [("team".to_string(), format!("t{}", (k * 7 + 3) % 50))].into_iter().collect();
        let ns = tessera_policy::model::Namespace::new(&format!("ns{}", k * 5), labels);
        timed(compiler, &mut out, None, |c| c.upsert_namespace(ns));
    }
    out
}

/// Remove 20 policies, one at a time.
fn remove_policies(compiler: &mut Compiler, policies: &[Policy]) -> Changes {
    let mut out = Changes { times: Vec::new(), nodes: 0, other_nodes: 0 };
    for k in 0..20 {
        let id = policies[(k * 89 + 3) % policies.len()].id.clone();
        timed(compiler, &mut out, None, |c| c.remove_policy(&id));
    }
    out
}

/// Add a pod inside an existing segment block, then remove it, 25 times.
fn churn(compiler: &mut Compiler) -> Changes {
    let mut out = Changes { times: Vec::new(), nodes: 0, other_nodes: 0 };
    for k in 0..25usize {
        let ns = k % 50;
        let id = format!("ns{ns}/churn-{k}");
        let e = tessera_policy::model::Endpoint {
            id: id.clone(),
            namespace: format!("ns{ns}"),
            name: format!("churn-{k}"),
            labels: [("app".to_string(), APPS[k % APPS.len()].to_string()), ("tessera.io/segment".to_string(), "front".to_string())]
                .into_iter()
                .collect(),
            segment: "front".into(),
            ips: vec![format!("10.{}.1.{}", 60 + ns, 250 + k % 4).parse().expect("ip")],
            named_ports: vec![],
            host: Some(format!("node{}", k % 4)),
        };
        if compiler.cluster().endpoint_by_ip(e.ips[0]).is_some() {
            continue;
        }
        let own = e.host.clone();
        timed(compiler, &mut out, own.clone(), |c| c.upsert_endpoint(e));
        timed(compiler, &mut out, own, |c| c.remove_endpoint(&id));
    }
    out
}

fn report(what: &str, mut c: Changes) {
    c.times.sort_by(f64::total_cmp);
    let at = |q: usize| c.times[(c.times.len() * q / 100).min(c.times.len() - 1)];
    println!(
        "  incremental, {what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} changes ({} node updates, {} of other nodes)",
        at(50),
        at(99),
        at(100),
        c.times.len(),
        c.nodes,
        c.other_nodes
    );
}

/// Load the ruleset into a throwaway network namespace with `nft -f` and time it.
fn nft_load(text: &str) {
    let ns = format!("tsr-bench-{}", std::process::id());
    if Command::new("ip").args(["netns", "add", &ns]).status().map(|s| !s.success()).unwrap_or(true) {
        println!("  nft load: skipped (needs root and iproute2)");
        return;
    }
    let started = Instant::now();
    let child = Command::new("ip").args(["netns", "exec", &ns, "nft", "-f", "-"]).stdin(Stdio::piped()).spawn();
    let ok = child.and_then(|mut c| {
        c.stdin.take().expect("stdin").write_all(text.as_bytes())?;
        c.wait()
    });
    match ok {
        Ok(status) if status.success() => println!("  nft -f load time: {:.1} ms", started.elapsed().as_secs_f64() * 1000.0),
        other => println!("  nft load failed: {other:?}"),
    }
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
}

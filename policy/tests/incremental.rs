//! The incremental compiler: after any sequence of changes it holds exactly what a full compile
//! gives, reports exactly the nodes whose rulesets changed, and pod churn inside existing
//! segment blocks changes no other node.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use tessera_policy::Inputs;
use tessera_policy::compile::Options;
use tessera_policy::compiler::Compiler;
use tessera_policy::compiler::compile;
use tessera_policy::model::{Endpoint, Namespace, Policy};
use tessera_policy::nft::render;
use tessera_policy::testgen::{APPS, Rng, SEGMENTS, Shape, cluster_yaml, pod_ip, segment_blocks};

fn blocks(shape: &Shape) -> BTreeMap<String, Vec<IpNet>> {
    segment_blocks(shape).into_iter().map(|(k, v)| (k, vec![v.parse().expect("block")])).collect()
}

fn rendered(rules: &BTreeMap<String, tessera_policy::compile::EndpointRules>) -> BTreeMap<String, String> {
    let mut hosts: BTreeMap<String, Vec<&tessera_policy::compile::EndpointRules>> = BTreeMap::new();
    for r in rules.values() {
        hosts.entry(r.host.clone().unwrap_or_default()).or_default().push(r);
    }
    hosts.into_iter().map(|(h, list)| (h, render(&list).text)).collect()
}

#[test]
fn incremental_changes_match_full_compiles_and_report_exactly_the_changed_nodes() {
    for seed in 0..36u64 {
        // Small segments: label selectors often take a segment whole, so compression switches on
        // and off as pods are relabelled.
        let shape = Shape { namespaces: 3, pods: 14, policies: 8, cluster_policies: seed % 2 == 0, whole_segment_peers: seed % 3 == 2 };
        changes_match_full_compiles(seed, shape);
    }
}

#[test]
fn relabels_in_large_segments_match_full_compiles() {
    for seed in 100..112u64 {
        // Segments of ~10 pods: a relabel rarely takes or leaves a segment whole, so most
        // changes are patched at the pod's addresses and spliced into the other pods' rules.
        let shape = Shape { namespaces: 2, pods: 60, policies: 14, cluster_policies: seed % 2 == 0, whole_segment_peers: false };
        changes_match_full_compiles(seed, shape);
    }
}

/// Random changes, each followed by a full compile to compare with (the seed and step are
/// named on failure).
fn changes_match_full_compiles(seed: u64, shape: Shape) {
    {
        let mut inputs = Inputs::default();
        inputs.add_text("generated", &cluster_yaml(seed, shape)).expect("valid");
        let mut blocks = blocks(&shape);
        let mut compiler = Compiler::new(inputs.cluster.clone(), blocks.clone(), inputs.policies.clone(), Options::default());
        let mut rng = Rng::new(seed + 1000);
        let mut next_index = 200;
        let (mut policies, mut removed) = (inputs.policies.clone(), Vec::new());
        for step in 0..25 {
            let before = rendered(compiler.rules());
            let ids: Vec<String> = compiler.cluster().endpoints.keys().cloned().collect();
            let reported = match rng.below(8) {
                0 | 1 => {
                    // Relabel a pod; sometimes its named ports change too (egress named-port
                    // rules then take it at another port, or no longer).
                    let mut e: Endpoint = compiler.cluster().endpoints[rng.pick(&ids)].clone();
                    e.labels.insert("app".into(), rng.pick(&APPS).to_string());
                    if rng.chance(40) {
                        // Ports few other pods use: the pod is then often the only destination.
                        let port = *rng.pick(&[80, 8080, 8081, 9090]);
                        for np in e.named_ports.iter_mut().filter(|np| np.name == "http") {
                            np.port = port;
                        }
                        if rng.chance(50) {
                            e.named_ports.retain(|np| np.name != "pg");
                        }
                    }
                    compiler.upsert_endpoint(e)
                }
                2 => {
                    // A new pod in an existing segment block.
                    let n = rng.below(3) as usize;
                    let s = rng.below(3) as usize;
                    next_index += 1;
                    let ip = pod_ip(n, s, next_index % 250).parse().expect("ip");
                    if compiler.cluster().endpoint_by_ip(ip).is_some() {
                        continue;
                    }
                    let id = format!("ns{n}/new{next_index}");
                    let labels =
                        [("app".to_string(), rng.pick(&APPS).to_string()), ("tessera.io/segment".to_string(), SEGMENTS[s].to_string())]
                            .into_iter()
                            .collect();
                    compiler.upsert_endpoint(Endpoint {
                        id: id.clone(),
                        namespace: format!("ns{n}"),
                        name: format!("new{next_index}"),
                        labels,
                        segment: SEGMENTS[s].to_string(),
                        ips: vec![ip],
                        named_ports: vec![],
                        host: Some(format!("node{}", rng.below(4))),
                    })
                }
                3 => compiler.remove_endpoint(rng.pick(ids.as_slice()).as_str()),
                7 => {
                    // A namespace joins another team, or loses its labels.
                    let ns = format!("ns{}", rng.below(shape.namespaces as u64));
                    if rng.chance(25) {
                        compiler.remove_namespace(&ns)
                    } else {
                        let labels = [("team".to_string(), format!("t{}", rng.below(shape.namespaces as u64)))].into_iter().collect();
                        compiler.upsert_namespace(Namespace::new(&ns, labels))
                    }
                }
                6 => {
                    // A segment gets a second block, gives one back, or has none any more.
                    let (segment, first) = rng.pick(&segment_blocks(&shape)).clone();
                    let first: IpNet = first.parse().expect("block");
                    let std::net::IpAddr::V4(net) = first.network() else { continue };
                    let [a, b, ..] = net.octets();
                    let second: IpNet = format!("{a}.{b}.{}.0/24", 100 + rng.below(3)).parse().expect("block");
                    let now = match rng.below(3) {
                        0 => vec![first, second],
                        1 => vec![first],
                        _ => Vec::new(),
                    };
                    if now.is_empty() {
                        blocks.remove(&segment);
                    } else {
                        blocks.insert(segment.clone(), now.clone());
                    }
                    compiler.set_segment_blocks(&segment, now)
                }
                4 => {
                    if policies.is_empty() {
                        continue;
                    }
                    let gone = policies.swap_remove(rng.below(policies.len() as u64) as usize);
                    let reported = compiler.remove_policy(&gone.id);
                    removed.push(gone);
                    reported
                }
                _ => {
                    // A removed policy comes back, or a policy takes another's subject and rules
                    // (possibly in another namespace) under its own id.
                    let fresh = if !removed.is_empty() && rng.chance(50) {
                        removed.swap_remove(rng.below(removed.len() as u64) as usize)
                    } else if !policies.is_empty() {
                        let id = rng.pick(&policies).id.clone();
                        Policy { id, ..rng.pick(&inputs.policies).clone() }
                    } else {
                        continue;
                    };
                    policies.retain(|p| p.id != fresh.id);
                    policies.push(fresh.clone());
                    compiler.upsert_policy(fresh)
                }
            };
            let full = compile(compiler.cluster(), &blocks, &policies, Options::default());
            let differing: Vec<&String> =
                full.keys().chain(compiler.rules().keys()).filter(|id| full.get(*id) != compiler.rules().get(*id)).collect();
            assert!(differing.is_empty(), "seed {seed} step {step}: incremental differs from a full compile for {differing:?}");
            let after = rendered(compiler.rules());
            let changed: BTreeSet<String> =
                before.keys().chain(after.keys()).filter(|h| before.get(*h) != after.get(*h)).cloned().collect();
            assert_eq!(reported, changed, "seed {seed} step {step}: reported nodes differ from the nodes whose rulesets changed");
        }
    }
}

#[test]
fn pod_churn_inside_segment_blocks_changes_no_other_node() {
    let yaml = r#"
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: ns0, labels: {app: web, tessera.io/segment: front}}
spec: {nodeName: node0}
status: {podIP: 10.60.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: ns1, labels: {app: db}}
spec: {nodeName: node1}
status: {podIP: 10.61.0.2}
---
apiVersion: tessera.io/v1
kind: TesseraPolicy
metadata: {name: db, namespace: ns1}
spec:
  ingress: [{from: [{segment: {tenant: ns0, name: front}}], ports: [{protocol: tcp, port: 5432}]}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-ns0, namespace: ns1}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ns0}}}]}]
"#;
    let mut inputs = Inputs::default();
    inputs.add_text("churn", yaml).expect("valid");
    let shape = Shape { namespaces: 2, pods: 0, policies: 0, cluster_policies: false, whole_segment_peers: false };
    let mut compiler = Compiler::new(inputs.cluster, blocks(&shape), inputs.policies, Options::default());
    let db_rules = compiler.rules()["ns1/db-1"].clone();
    let mut updates_elsewhere = 0;
    for i in 3..40u8 {
        let e = Endpoint {
            id: format!("ns0/web-{i}"),
            namespace: "ns0".into(),
            name: format!("web-{i}"),
            labels: [("app".to_string(), "web".to_string()), ("tessera.io/segment".to_string(), "front".to_string())].into_iter().collect(),
            segment: "front".into(),
            ips: vec![format!("10.60.1.{i}").parse().expect("ip")],
            named_ports: vec![],
            host: Some("node0".into()),
        };
        let changed = compiler.upsert_endpoint(e);
        updates_elsewhere += changed.iter().filter(|h| *h != "node0").count();
        if i % 3 == 0 {
            let changed = compiler.remove_endpoint(&format!("ns0/web-{}", i - 1));
            updates_elsewhere += changed.iter().filter(|h| *h != "node0").count();
        }
    }
    assert_eq!(updates_elsewhere, 0, "pods coming and going inside ns0/front's block touched other nodes");
    assert_eq!(compiler.rules()["ns1/db-1"], db_rules, "db's rules did not change");
}

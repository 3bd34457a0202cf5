//! Proof with real packets: endpoints as network namespaces behind a node namespace, the
//! compiled ruleset loaded with `nft`, TCP, UDP, SCTP and ICMP probes for every ordered pair;
//! what the kernel lets through must equal `simulate`'s verdicts. Random clusters (seeded; the
//! seed is printed on failure) plus hand-written cases. Needs root (CI runs as root).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::json;
use tessera_policy::Inputs;
use tessera_policy::compile::Options;
use tessera_policy::compiler::compile;
use tessera_policy::eval::Probe;
use tessera_policy::model::Protocol;
use tessera_policy::simulate::simulate;
use tessera_policy::testgen::{Shape, cluster_yaml};
use tessera_tests::netns::{Lab, finish, require_root};

const EXTERNALS: [&str; 2] = ["192.0.2.7", "198.51.100.1"];
const TCP_PORTS: [u16; 3] = [80, 5432, 8080];

fn probes() -> Vec<Probe> {
    vec![
        Probe { protocol: Protocol::Tcp, port: Some(80), icmp: None },
        Probe { protocol: Protocol::Tcp, port: Some(5432), icmp: None },
        Probe { protocol: Protocol::Udp, port: Some(53), icmp: None },
        Probe { protocol: Protocol::Sctp, port: Some(9000), icmp: None },
        Probe { protocol: Protocol::Icmp, port: None, icmp: Some((8, 0)) },
    ]
}

/// Build the lab for `inputs`, probe every pair, and compare with `simulate`.
fn check(label: &str, yaml: &str) {
    let mut inputs = Inputs::default();
    inputs.add_text(label, yaml).unwrap_or_else(|e| panic!("{label}: {e}"));
    let externals: Vec<IpAddr> = EXTERNALS.iter().map(|s| s.parse().expect("ip")).collect();
    let expected = simulate(&inputs, &externals, &probes()).expect("simulate");

    let mut lab = Lab::new();
    // Party name -> (namespace, IPv4 address).
    let mut parties: BTreeMap<String, (String, String)> = BTreeMap::new();
    for e in inputs.cluster.endpoints.values() {
        let ip = e.ips.iter().find(|ip| ip.is_ipv4()).expect("IPv4 pod").to_string();
        parties.insert(e.id.clone(), (lab.add_endpoint(&ip), ip));
    }
    for x in EXTERNALS {
        parties.insert(x.to_string(), (lab.add_endpoint(x), x.to_string()));
    }
    let compiled = compile(&inputs.cluster, &BTreeMap::new(), &inputs.policies, Options::default());
    let local: Vec<_> = compiled.values().collect();
    let ruleset = tessera_policy::nft::render(&local);
    lab.nft(&ruleset.text);
    let mut logs = BTreeMap::new();
    for (name, (ns, _)) in &parties {
        logs.insert(name.clone(), lab.serve(ns, &TCP_PORTS, &[53]));
    }

    // One prober per source, all at once; job ids index `expected`.
    let mut running = Vec::new();
    for (from, (ns, _)) in &parties {
        let jobs: Vec<serde_json::Value> = expected
            .iter()
            .enumerate()
            .filter(|(_, v)| v.from == *from)
            .map(|(i, v)| {
                let (proto, port) = match (v.protocol.as_str(), v.port, v.icmp_type) {
                    ("ICMP", _, Some(t)) => ("icmp", u16::from(t)),
                    (p, Some(port), _) => (
                        if p == "TCP" {
                            "tcp"
                        } else if p == "UDP" {
                            "udp"
                        } else {
                            "sctp"
                        },
                        port,
                    ),
                    _ => unreachable!("probes have a port or an ICMP type"),
                };
                json!({"id": i.to_string(), "proto": proto, "dst": parties[&v.to].1, "port": port, "sport": 20000 + i})
            })
            .collect();
        running.push(lab.probe(ns, &json!(jobs), 1.5));
    }
    let mut observed: BTreeMap<usize, bool> = BTreeMap::new();
    for child in running {
        for (id, ok) in finish(child) {
            if let Some(ok) = ok.as_bool() {
                observed.insert(id.parse().expect("id"), ok);
            }
        }
    }
    // SCTP: allowed when the INIT reached the destination (logged by its source port).
    std::thread::sleep(std::time::Duration::from_millis(300));
    for (i, v) in expected.iter().enumerate().filter(|(_, v)| v.protocol == "SCTP") {
        let log = std::fs::read_to_string(&logs[&v.to]).unwrap_or_default();
        let src = &parties[&v.from].1;
        let arrived = log.lines().any(|l| {
            l.split_whitespace().collect::<Vec<_>>() == [src.as_str(), &(20000 + i).to_string(), &v.port.unwrap_or(0).to_string()]
        });
        observed.insert(i, arrived);
    }
    let mut wrong = Vec::new();
    for (i, v) in expected.iter().enumerate() {
        let got = observed.get(&i).copied();
        if got != Some(v.allowed) {
            let probe = format!("{}/{}", v.protocol, v.port.map(u32::from).or(v.icmp_type.map(u32::from)).unwrap_or(0));
            wrong.push(format!("  {} -> {} {probe}: simulate says {}, the kernel {:?} ({})", v.from, v.to, v.allowed, got, v.reason));
        }
    }
    assert!(
        wrong.is_empty(),
        "{label}: {} of {} probes disagree:\n{}\nruleset:\n{}\ninput:\n{yaml}",
        wrong.len(),
        expected.len(),
        wrong.join("\n"),
        ruleset.text
    );
}

#[test]
fn random_clusters_enforce_exactly_what_simulate_predicts() {
    require_root();
    let seeds: Vec<u64> = match std::env::var("TESSERA_PACKET_SEEDS") {
        Ok(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => (1..=8).collect(),
    };
    for seed in seeds {
        let shape = Shape { namespaces: 3, pods: 6, policies: 5, cluster_policies: true, whole_segment_peers: false };
        check(&format!("seed {seed}"), &cluster_yaml(seed, shape));
    }
}

const HAND_PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops, labels: {team: ops}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{ports: [{name: http, containerPort: 80}, {name: dns, containerPort: 53, protocol: UDP}]}]}
status: {podIP: 10.70.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {containers: [{ports: [{name: pg, containerPort: 5432}]}]}
status: {podIP: 10.70.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: mon, namespace: ops, labels: {app: mon}}
status: {podIP: 10.70.1.1}
"#;

#[test]
fn hand_written_cases_for_each_feature() {
    require_root();
    let cases = [
        (
            "named ports, endPort, SCTP and an ipBlock with except",
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: pg}, {protocol: SCTP, port: 8990, endPort: 9010}]
  - from: [{ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.0/29]}}, {ipBlock: {cidr: 198.51.100.0/24}}]
    ports: [{protocol: UDP, port: 53}]
"#,
        ),
        (
            "egress isolation with a namespace selector, and the reply traffic of allowed flows",
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: out, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to: [{namespaceSelector: {matchLabels: {team: ops}}}]
  - to: [{ipBlock: {cidr: 192.0.2.7/32}}]
    ports: [{protocol: TCP, port: 80}]
"#,
        ),
        (
            "admin deny over a namespace allow, pass, baseline deny, ICMP by type",
            r#"
apiVersion: tessera.io/v1
kind: TesseraClusterPolicy
metadata: {name: admin}
spec:
  tier: admin
  priority: 1
  subject: {namespaceSelector: {matchLabels: {team: shop}}}
  ingress:
  - {action: pass, from: [{namespaceSelector: {matchLabels: {team: ops}}}], ports: [{protocol: tcp, port: 5432}]}
  - {action: deny, from: [{namespaceSelector: {matchLabels: {team: ops}}}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{ports: [{port: 5432}]}]
---
apiVersion: tessera.io/v1
kind: TesseraPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{any: true}], ports: [{protocol: icmp, type: 8}, {protocol: tcp, port: 80}]}]
---
apiVersion: tessera.io/v1
kind: TesseraClusterPolicy
metadata: {name: baseline}
spec:
  tier: baseline
  priority: 1
  ingress: [{action: deny, from: [{cidr: 198.51.100.0/24}]}]
"#,
        ),
    ];
    for (label, policies) in cases {
        check(label, &format!("{HAND_PODS}---\n{policies}"));
    }
}

/// The JSON rendering loads with `nft -j -f` into exactly the table the text rendering gives.
#[test]
fn json_and_text_renderings_load_identically() {
    require_root();
    for seed in [3u64, 4, 5] {
        let mut inputs = Inputs::default();
        let yaml = cluster_yaml(seed, Shape { namespaces: 3, pods: 8, policies: 6, cluster_policies: true, whole_segment_peers: false });
        inputs.add_text("generated", &yaml).expect("valid");
        let compiled = compile(&inputs.cluster, &BTreeMap::new(), &inputs.policies, Options::default());
        let ruleset = tessera_policy::nft::render(&compiled.values().collect::<Vec<_>>());
        let text_lab = Lab::new();
        text_lab.nft(&ruleset.text);
        let json_lab = Lab::new();
        tessera_tests::netns::run_with_input(&["ip", "netns", "exec", &json_lab.node, "nft", "-j", "-f", "-"], &ruleset.json.to_string());
        let list = |lab: &Lab| tessera_tests::netns::run(&["ip", "netns", "exec", &lab.node, "nft", "list", "table", "inet", "tessera"]);
        assert_eq!(list(&text_lab), list(&json_lab), "seed {seed}");
    }
}

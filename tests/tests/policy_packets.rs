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

/// A change of elements alone goes to nf_tables over netlink (the agent's own encoding, not
/// nft's): the kernel must then hold exactly the table nft builds from the changed state —
/// every element of every kind of set (peers of a service, port ranges, ICMP, other protocols,
/// both families) and every verdict of the dispatch maps, added and deleted.
#[test]
fn element_changes_sent_over_netlink_leave_the_table_nft_builds() {
    use tessera_agent::nft::{Applied, Nft};
    use tessera_agent_api::Ruleset;
    require_root();
    let mut cases: Vec<(String, Ruleset)> = Vec::new();
    for seed in [6u64, 7] {
        let mut inputs = Inputs::default();
        let yaml = cluster_yaml(seed, Shape { namespaces: 3, pods: 8, policies: 6, cluster_policies: true, whole_segment_peers: false });
        inputs.add_text("generated", &yaml).expect("valid");
        let compiled = compile(&inputs.cluster, &BTreeMap::new(), &inputs.policies, Options::default());
        let r = tessera_policy::nft::render_sets(&compiled.values().collect::<Vec<_>>());
        cases.push((format!("seed {seed}"), Ruleset::new(r.skeleton, r.sets, r.rules)));
    }
    let r = tessera_policy::nft::render_sets(&every_kind_of_set().iter().collect::<Vec<_>>());
    cases.push(("every kind of set".into(), Ruleset::new(r.skeleton, r.sets, r.rules)));

    // Run `work` with nft and netlink in `ns` (a thread that joined it; nft runs inherit it).
    let inside = |ns: &str, work: Box<dyn FnOnce(Nft) + Send>| {
        let file = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("netns");
        std::thread::spawn(move || {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter netns");
            work(Nft::new("nft"));
        })
        .join()
        .expect("the work in the namespace");
    };
    for (label, before) in cases {
        let after = changed(&before);
        let changes: usize = before.sets.keys().map(|name| differences(&before.sets[name], &after.sets[name])).sum();
        let (delta_lab, reference) = (Lab::new(), Lab::new());
        let (b, a) = (before.clone(), after.clone());
        inside(
            &delta_lab.node,
            Box::new(move |nft| {
                nft.replace(&b).expect("the first state");
                assert_eq!(nft.apply(Some(&b), &a).expect("the delta"), Applied::Elements(changes), "sent as one netlink batch");
                nft.verify_delta().expect("the changed sets hold what was sent");
            }),
        );
        inside(&reference.node, Box::new(move |nft| nft.replace(&after).expect("the changed state, by nft")));
        assert_eq!(listing(&delta_lab.node), listing(&reference.node), "{label}");
    }
}

/// How many elements differ between two lists.
fn differences(a: &[String], b: &[String]) -> usize {
    a.iter().filter(|e| !b.contains(e)).count() + b.iter().filter(|e| !a.contains(e)).count()
}

/// The table as nft lists it in JSON, handles left out and each set's elements sorted (a hash
/// set lists in its hash's order).
fn listing(ns: &str) -> serde_json::Value {
    let text = tessera_tests::netns::run(&["ip", "netns", "exec", ns, "nft", "-j", "list", "table", "inet", "tessera"]);
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("nft JSON");
    fn normalize(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("handle");
                if let Some(serde_json::Value::Array(elements)) = map.get_mut("elem") {
                    elements.sort_by_key(|e| e.to_string());
                }
                map.values_mut().for_each(normalize);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(normalize),
            _ => {}
        }
    }
    normalize(&mut json);
    json
}

/// `before` with each set's first element taken out and another put in — a new peer in a
/// plain address set, a part of the element taken out in an interval set (elements there may not
/// overlap) — and each dispatch map's first verdict turned around: elements change,
/// declarations do not.
fn changed(before: &tessera_agent_api::Ruleset) -> tessera_agent_api::Ruleset {
    let mut sets = before.sets.clone();
    for (name, elements) in &mut sets {
        let v6 = name.ends_with('6') || name.get(2..3) == Some("6");
        let peer = if v6 { "fd00:99::7" } else { "10.99.0.7" };
        if name.contains("_dispatch") {
            if let Some((key, verdict)) = elements.first().cloned().as_deref().and_then(|e| e.split_once(" : ")) {
                elements[0] = format!("{key} : {}", if verdict == "drop" { "accept" } else { "drop" });
            }
            elements.push(format!("{peer} : drop"));
            continue;
        }
        if name.ends_with("_services") {
            // Each element goes to a chain of its own: changed with the chain (declarations).
            continue;
        }
        let first = if elements.is_empty() { None } else { Some(elements.remove(0)) };
        match name.rsplit('_').next() {
            Some("ports" | "icmp" | "proto") => {
                let part =
                    first.as_deref().map(|e| e.split(" . ").map(|f| f.split('-').next().unwrap_or(f)).collect::<Vec<_>>().join(" . "));
                elements.extend(part.filter(|p| Some(p) != first.as_ref()));
            }
            _ => elements.push(peer.to_string()),
        }
    }
    tessera_agent_api::Ruleset::new(before.skeleton.clone(), sets, before.rules)
}

/// Endpoints whose rules fill every kind of set of both families: exact ports, port ranges
/// and CIDR peers, ICMP, other protocols, and a denying side without exceptions.
fn every_kind_of_set() -> Vec<tessera_policy::compile::EndpointRules> {
    use tessera_policy::compile::{Class, EndpointRules, Family, Region, SideRules, Verdict};
    let region = |family, first: u128, last: u128, class, service: (u16, u16)| Region {
        family,
        peer_first: first,
        peer_last: last,
        class,
        service_first: service.0,
        service_last: service.1,
    };
    let v4 = |s: &str| u128::from(u32::from(s.parse::<std::net::Ipv4Addr>().expect("v4")));
    let v6 = |s: &str| u128::from(s.parse::<std::net::Ipv6Addr>().expect("v6"));
    let exceptions = |family: Family, one: u128, net: (u128, u128)| {
        let icmp = if family == Family::V4 { (8 << 8, 8 << 8 | 255) } else { (128 << 8, 129 << 8 | 255) };
        vec![
            region(family, one, one, Class::Ports(6), (5432, 5432)),
            region(family, one + 2, one + 2, Class::Ports(132), (9000, 9000)),
            region(family, net.0, net.1, Class::Ports(17), (53, 53)),
            region(family, one, one, Class::Ports(6), (8000, 8099)),
            region(family, net.0, net.1, Class::Icmp, icmp),
            region(family, one, one, Class::Other, (0, 255)),
        ]
    };
    let ips = |a: &str, b: &str| vec![a.parse().expect("ip"), b.parse().expect("ip")];
    let mut ingress = exceptions(Family::V4, v4("10.1.0.5"), (v4("10.2.0.0"), v4("10.2.255.255")));
    ingress.extend(exceptions(Family::V6, v6("fd00:1::5"), (v6("fd00:2::"), v6("fd00:2::ffff"))));
    vec![
        EndpointRules {
            endpoint: "a".into(),
            host: Some("n".into()),
            ips: ips("10.0.0.1", "fd00::1"),
            ingress: SideRules { default: Verdict::Deny, exceptions: ingress.clone() }.into(),
            egress: SideRules { default: Verdict::Allow, exceptions: ingress }.into(),
        },
        EndpointRules {
            endpoint: "b".into(),
            host: Some("n".into()),
            ips: ips("10.0.0.2", "fd00::2"),
            ingress: SideRules { default: Verdict::Deny, exceptions: Vec::new() }.into(),
            egress: SideRules { default: Verdict::Allow, exceptions: Vec::new() }.into(),
        },
    ]
}

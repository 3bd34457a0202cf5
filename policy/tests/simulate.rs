//! `simulate` shares side decisions between pairs alike; every verdict it gives must be the
//! reference evaluator's, pair by pair, on random clusters (named ports, cluster tiers, ipBlocks,
//! externals, mixed families).

use std::net::IpAddr;

use tessera_policy::Inputs;
use tessera_policy::eval::evaluate;
use tessera_policy::simulate::{parse_probe, simulate};
use tessera_policy::testgen::{Shape, cluster_yaml};

#[test]
fn every_verdict_is_the_reference_evaluators() {
    let probes: Vec<_> = ["tcp/80", "tcp/443", "tcp/5432", "tcp/8080", "udp/53", "sctp/9000", "icmp/8"]
        .iter()
        .map(|p| parse_probe(p).expect("probe"))
        .collect();
    for seed in 0..12u64 {
        let shape = Shape { namespaces: 4, pods: 30, policies: 14, cluster_policies: seed % 2 == 0, whole_segment_peers: seed % 3 == 0 };
        let mut inputs = Inputs::default();
        inputs.add_text("generated", &cluster_yaml(seed, shape)).expect("valid");
        // An IPv6-only pod: its pairs with IPv4-only parties share no family.
        inputs
            .add_text(
                "v6",
                "apiVersion: v1\nkind: Pod\nmetadata: {name: six, namespace: ns0, labels: {app: web}}\nstatus: {podIP: 'fd00::6'}\n",
            )
            .expect("v6 pod");
        let externals: Vec<IpAddr> = ["192.0.2.7", "10.61.0.200", "2001:db8::1"].iter().map(|s| s.parse().expect("ip")).collect();
        let verdicts = simulate(&inputs, &externals, &probes).expect("simulate");
        let parties = inputs.cluster.endpoints.len() + externals.len();
        assert_eq!(verdicts.len(), parties * (parties - 1) * probes.len(), "seed {seed}");
        let ips = |name: &str| -> Vec<IpAddr> {
            inputs.cluster.endpoints.get(name).map(|e| e.ips.clone()).unwrap_or_else(|| vec![name.parse().expect("external")])
        };
        for v in &verdicts {
            let probe = probes
                .iter()
                .find(|p| p.protocol.to_string() == v.protocol && p.port == v.port && p.icmp.map(|(t, _)| t) == v.icmp_type)
                .expect("probe");
            let (a, b) = (ips(&v.from), ips(&v.to));
            let common = [true, false]
                .into_iter()
                .find_map(|v4| Some((*a.iter().find(|ip| ip.is_ipv4() == v4)?, *b.iter().find(|ip| ip.is_ipv4() == v4)?)));
            let Some((x, y)) = common else {
                assert!(!v.allowed && v.reason.contains("no address family in common"), "seed {seed}: {v:?}");
                continue;
            };
            let party = |name: &str, ip| match inputs.cluster.endpoints.get(name) {
                Some(e) => tessera_policy::eval::Party::Endpoint(e, ip),
                None => tessera_policy::eval::Party::External(ip),
            };
            let want = evaluate(&inputs.cluster, &inputs.policies, party(&v.from, x), party(&v.to, y), *probe);
            assert_eq!(v.allowed, want.allowed, "seed {seed}: {v:?} vs {want:?}");
            // The reason names the sides that decided the verdict: the denying ones, or the rules that allowed it.
            use tessera_policy::eval::Decision;
            let sides = [(&want.egress, "egress"), (&want.ingress, "ingress")];
            let said: Vec<String> = sides
                .iter()
                .filter(|(s, _)| s.allowed == want.allowed && !matches!(s.decision, Decision::NotIsolated))
                .filter_map(|(s, dir)| s.compact(dir))
                .collect();
            let expected = match (said.is_empty(), sides.iter().all(|(s, _)| s.decision == Decision::External)) {
                (_, true) => "both ends are external".to_string(),
                (true, false) => "no policy isolates either end".to_string(),
                (false, false) => said.join("; "),
            };
            assert_eq!(v.reason, expected, "seed {seed}: {v:?}");
        }
    }
}

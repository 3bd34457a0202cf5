//! The compiler against the reference evaluator, and compressed against uncompressed, over
//! random clusters and policies (seeded; the seed is printed on failure).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use proptest::prelude::*;
use tessera_policy::Inputs;
use tessera_policy::compile::{Options, Verdict};
use tessera_policy::compiler::compile;
use tessera_policy::eval::{Party, Probe, evaluate};
use tessera_policy::model::Protocol;
use tessera_policy::testgen::{Shape, cluster_yaml, segment_blocks};

fn probes() -> Vec<Probe> {
    let mut out = Vec::new();
    for protocol in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
        for port in [53, 80, 443, 700, 5432, 8080, 9999] {
            out.push(Probe { protocol, port: Some(port), icmp: None });
        }
    }
    out.push(Probe { protocol: Protocol::Icmp, port: None, icmp: Some((8, 0)) });
    out
}

fn service(p: &Probe) -> u16 {
    p.port.unwrap_or_else(|| p.icmp.map(|(t, c)| (u16::from(t) << 8) | u16::from(c)).unwrap_or(0))
}

fn check(seed: u64, shape: Shape) -> Result<(), String> {
    let text = cluster_yaml(seed, shape);
    let mut inputs = Inputs::default();
    inputs.add_text("generated", &text).map_err(|e| format!("seed {seed}: generated input rejected: {e}\n{text}"))?;
    let blocks: BTreeMap<String, Vec<IpNet>> =
        segment_blocks(&shape).into_iter().map(|(k, v)| (k, vec![v.parse().expect("block")])).collect();
    let compressed = compile(&inputs.cluster, &blocks, &inputs.policies, Options { compress: true });
    let exact = compile(&inputs.cluster, &blocks, &inputs.policies, Options { compress: false });
    let externals: Vec<IpAddr> = ["192.0.2.7", "10.60.200.9", "198.51.100.1"].iter().map(|s| s.parse().expect("ip")).collect();
    let endpoints: Vec<_> = inputs.cluster.endpoints.values().collect();
    for e in &endpoints {
        let ip = e.ips[0];
        let mut peers: Vec<Party<'_>> = endpoints.iter().filter(|o| o.id != e.id).map(|o| Party::Endpoint(o, o.ips[0])).collect();
        peers.extend(externals.iter().map(|x| Party::External(*x)));
        for peer in peers {
            for probe in probes() {
                let number = probe.protocol.number();
                // Ingress of e from peer, and egress of e to peer.
                let ingress = evaluate(&inputs.cluster, &inputs.policies, peer, Party::Endpoint(e, ip), probe).ingress.allowed;
                let egress = evaluate(&inputs.cluster, &inputs.policies, Party::Endpoint(e, ip), peer, probe).egress.allowed;
                for (dir, want, c, x) in [
                    ("ingress", ingress, &compressed[&e.id].ingress, &exact[&e.id].ingress),
                    ("egress", egress, &compressed[&e.id].egress, &exact[&e.id].egress),
                ] {
                    let want = if want { Verdict::Allow } else { Verdict::Deny };
                    let got_c = c.verdict(peer.ip(), number, service(&probe));
                    let got_x = x.verdict(peer.ip(), number, service(&probe));
                    if got_c != want || got_x != want {
                        return Err(format!(
                            "seed {seed}: {dir} of {} with {} {probe:?}: evaluator {want:?}, compiled {got_c:?} (uncompressed {got_x:?})\n{text}",
                            e.id,
                            peer.name()
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn compiled_equals_evaluator_and_compression_is_exact(seed in any::<u64>()) {
        let shape = Shape { namespaces: 3, pods: 9, policies: 5, cluster_policies: true, whole_segment_peers: false };
        if let Err(e) = check(seed, shape) {
            return Err(TestCaseError::fail(e));
        }
    }
}

#[test]
fn fixed_seeds_with_many_policies() {
    for seed in 0..20 {
        check(seed, Shape { namespaces: 3, pods: 12, policies: 12, cluster_policies: seed % 2 == 0, whole_segment_peers: false })
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

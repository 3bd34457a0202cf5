//! Tessera's aggregation against the reference tool `aggregate6` (PyPI) on random inputs: the
//! outputs must be identical, line for line.

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_topology::aggregate;

fn aggregate6() -> PathBuf {
    if let Ok(path) = std::env::var("TESSERA_AGGREGATE6") {
        return path.into();
    }
    let venv = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/aggregate6"));
    assert!(
        venv.exists(),
        "aggregate6 not found at {}: run `bash .ci/run` once, or `python3 -m venv .venv && .venv/bin/pip install aggregate6`",
        venv.display()
    );
    venv
}

fn reference(input: &[IpNet]) -> Vec<String> {
    let mut child = Command::new(aggregate6()).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("run aggregate6");
    let text: String = input.iter().map(|n| format!("{n}\n")).collect();
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("aggregate6 output");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("utf-8").lines().map(String::from).collect()
}

/// Prefixes clustered in a few regions, so that merges and containment actually happen.
fn random_prefixes(rng: &mut StdRng, count: usize) -> Vec<IpNet> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        if rng.gen_bool(0.8) {
            let base = 0x0a00_0000u32 | (rng.gen_range(0..4u32) << 16);
            let len = rng.gen_range(18..=32u8);
            let addr = base | rng.gen_range(0..(1u32 << 16));
            out.push(IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from(addr), len).trunc()));
        } else {
            let base = 0xfd00_0000_0000_0000_0000_0000_0000_0000u128;
            let len = rng.gen_range(112..=128u8);
            let addr = base | u128::from(rng.gen_range(0..(1u32 << 18)));
            out.push(IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::from(addr), len).trunc()));
        }
    }
    out
}

#[test]
fn identical_to_aggregate6_on_random_inputs() {
    for seed in 0..25u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let size = [10, 100, 1000, 5000][seed as usize % 4];
        let input = random_prefixes(&mut rng, size);
        let ours: Vec<String> = aggregate(&input).iter().map(ToString::to_string).collect();
        assert_eq!(ours, reference(&input), "seed {seed}, {size} prefixes");
    }
}

#[test]
fn identical_on_edge_cases() {
    let cases: &[&[&str]] = &[
        &["0.0.0.0/1", "128.0.0.0/1"],
        &["::/1", "8000::/1", "10.0.0.0/32"],
        &["10.0.0.1/32"],
        &["10.0.0.0/8", "10.255.255.255/32", "11.0.0.0/8"],
        &["255.255.255.255/32", "255.255.255.254/32"],
    ];
    for case in cases {
        let input: Vec<IpNet> = case.iter().map(|s| s.parse().expect("cidr")).collect();
        let ours: Vec<String> = aggregate(&input).iter().map(ToString::to_string).collect();
        assert_eq!(ours, reference(&input), "{case:?}");
    }
}

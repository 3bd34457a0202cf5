//! `cargo bench -p tessera-topology`: aggregation of 1,000,000 random IPv4 prefixes (and the same
//! input through `aggregate6`, output compared), and the route plan of 5,000 hosts in
//! 3 zones × 8 racks. Prints its figures; timing lives here, never in unit tests.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use ipnet::{IpNet, Ipv4Net};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_topology::plan::{BlockInfo, HostInfo};
use tessera_topology::{Format, Layout, aggregate, parse_topology, plan_routes};

fn main() {
    aggregation();
    route_plan();
}

fn aggregation() {
    let mut rng = StdRng::seed_from_u64(42);
    let input: Vec<IpNet> = (0..1_000_000)
        .map(|_| {
            // Half spread over the whole space, half packed into 10.0.0.0/12 so that merges and
            // containment are common but the result stays large.
            let (addr, len) = if rng.gen_bool(0.5) {
                (rng.r#gen::<u32>(), rng.gen_range(20..=32u8))
            } else {
                (0x0a00_0000u32 | rng.gen_range(0..(1u32 << 20)), rng.gen_range(26..=32u8))
            };
            IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from(addr), len).trunc())
        })
        .collect();
    let mut best = f64::MAX;
    let mut ours = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        ours = aggregate(&input);
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!("aggregate: 1000000 IPv4 prefixes -> {} prefixes in {:.3} s (best of 5)", ours.len(), best);

    let tool = std::env::var("TESSERA_AGGREGATE6")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/aggregate6")));
    if !tool.exists() {
        println!("aggregate6: not installed at {} (run .ci/run once); comparison skipped", tool.display());
        return;
    }
    let text: String = input.iter().map(|n| format!("{n}\n")).collect();
    let started = Instant::now();
    let mut child = Command::new(&tool).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("run aggregate6");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().expect("aggregate6");
    let _ = writer.join();
    let theirs_time = started.elapsed().as_secs_f64();
    let theirs: Vec<&str> = std::str::from_utf8(&out.stdout).expect("utf-8").lines().collect();
    let ours_text: Vec<String> = ours.iter().map(ToString::to_string).collect();
    let identical = theirs.len() == ours_text.len() && theirs.iter().zip(&ours_text).all(|(a, b)| *a == b);
    println!("aggregate6: same input in {theirs_time:.3} s; identical output: {identical}; tessera is {:.0}x faster", theirs_time / best);
    assert!(identical, "outputs differ");
}

fn route_plan() {
    let mut doc = String::from("networks: [{name: pods, cidr: 10.0.0.0/8}]\ngroups:\n");
    for z in 0..3 {
        doc.push_str(&format!("  - name: zone-{z}\n    assignment: {{zone: z{z}}}\n    groups:\n"));
        for r in 0..8 {
            doc.push_str(&format!("      - {{name: rack-{r}, assignment: {{rack: r{r}}}}}\n"));
        }
    }
    let layout = Layout::build(&parse_topology(&doc, Format::Auto).expect("parses")).expect("carves");
    let leaves: Vec<usize> = layout.leaves().map(|g| g.id).collect();
    let mut hosts = Vec::new();
    let mut blocks = Vec::new();
    for i in 0..5000u32 {
        let group = leaves[i as usize % leaves.len()];
        let name = format!("host-{i}");
        hosts.push(HostInfo { name: name.clone(), group, ips: vec![IpAddr::V4(Ipv4Addr::from(0xc0a8_0000 | i))] });
        // 100,000 endpoints: 20 per host, two /28 blocks each, carved in order inside the rack.
        let rack = layout.groups[group].cidrs[&0];
        let index = u32::try_from(hosts.iter().filter(|h| h.group == group).count() - 1).expect("small");
        for b in 0..2u32 {
            let base = match rack.addr() {
                IpAddr::V4(a) => u32::from(a) + (index * 2 + b) * 16,
                IpAddr::V6(_) => unreachable!("IPv4 network"),
            };
            blocks.push(BlockInfo { cidr: IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from(base), 28)), host: name.clone() });
        }
    }
    let mut best = f64::MAX;
    let mut plan = None;
    for _ in 0..5 {
        let started = Instant::now();
        plan = Some(plan_routes(&layout, &hosts, &blocks, Some(50)).expect("fits"));
        best = best.min(started.elapsed().as_secs_f64());
    }
    let plan = plan.expect("planned");
    let host_routes: usize = plan.host_routes.values().map(Vec::len).sum();
    println!(
        "route plan: 5000 hosts, 3 zones x 8 racks, {} blocks: {} VPC routes (budget 50), {} over-covered ranges, {} host routes, {:.1} ms (best of 5)",
        blocks.len(),
        plan.fabric_routes.len(),
        plan.over_coverage.len(),
        host_routes,
        best * 1000.0
    );
    let tight = plan_routes(&layout, &hosts, &blocks, Some(10)).expect("fits");
    println!("route plan with budget 10: {} routes, {} over-covered ranges", tight.fabric_routes.len(), tight.over_coverage.len());
}

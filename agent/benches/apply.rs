//! Agent apply time (needs root; runs in a network namespace it creates and removes):
//! a node with 110 endpoints and about 100,000 allowed elements, applied whole, then
//! one-element deltas; and what watching nf_tables commits for drift costs (the agent's own
//! CPU while the kernel announces a full apply, and at rest).
//! `cargo bench -p tessera-agent --bench apply`.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Instant;

use tessera_agent::nft::{Applied, Census, Nft};
use tessera_agent_api::Ruleset;
use tessera_policy::compile::{Class, EndpointRules, Family, Region, SideRules, Verdict};

const ENDPOINTS: u32 = 110;
const PEERS_PER_ENDPOINT: u32 = 910;

fn endpoint(i: u32, extra: u32) -> EndpointRules {
    let ip = IpAddr::V4(Ipv4Addr::from(0x0a40_0000 + i));
    // Each endpoint admits TCP/5432 from its own 910 single peers (addresses spread out, so
    // nothing merges): about 100,000 interval elements over the node.
    let exceptions = (0..PEERS_PER_ENDPOINT + extra)
        .map(|p| {
            let peer = u128::from(0x0b00_0000 + i * 4096 + p * 2);
            Region {
                family: Family::V4,
                peer_first: peer,
                peer_last: peer,
                class: Class::Ports(6),
                service_first: 5432,
                service_last: 5432,
            }
        })
        .collect();
    EndpointRules {
        endpoint: format!("e{i}"),
        host: Some("bench".into()),
        ips: vec![ip],
        ingress: SideRules { default: Verdict::Deny, exceptions }.into(),
        egress: SideRules { default: Verdict::Allow, exceptions: Vec::new() }.into(),
    }
}

fn ruleset(extra_on_first: u32) -> Ruleset {
    let endpoints: Vec<EndpointRules> = (0..ENDPOINTS).map(|i| endpoint(i, if i == 0 { extra_on_first } else { 0 })).collect();
    let refs: Vec<&EndpointRules> = endpoints.iter().collect();
    let r = tessera_policy::nft::render(&refs);
    Ruleset::new(r.skeleton, r.sets, r.rules)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let root = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false);
    if !root {
        eprintln!("apply bench: needs root (network namespaces); skipped");
        return;
    }
    let ns = format!("tsrbench{:05x}", rand_suffix());
    assert!(Command::new("ip").args(["netns", "add", &ns]).status().expect("ip").success());
    let result = std::panic::catch_unwind(|| run(&ns));
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos() & 0xfffff).unwrap_or(1)
}

fn run(ns: &str) {
    // Every nft this process starts from now on runs inside the namespace.
    let file = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("netns");
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter netns");
    let nft = Nft::new("nft");
    let base = ruleset(0);
    println!("node: {ENDPOINTS} endpoints, {} set/map elements, {} rules", base.element_count(), base.rules);

    // Yardsticks from the same run: a raw load of as many plain `ipv4_addr` elements in one
    // transaction (the cheapest layout nft and the kernel know), and raw one-element adds.
    let raw = |script: &str| {
        let mut child = Command::new("nft").args(["-f", "-"]).stdin(std::process::Stdio::piped()).spawn().expect("nft");
        std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), script.as_bytes()).expect("write");
        assert!(child.wait().expect("nft").success(), "raw nft load");
    };
    let plain: Vec<String> = (0..base.element_count() as u32).map(|i| Ipv4Addr::from(0x0c00_0000 + i * 2).to_string()).collect();
    let mut raw_load =
        String::from("table inet rawbench {}\ndelete table inet rawbench\ntable inet rawbench {\n\tset s {\n\t\ttype ipv4_addr\n\t}\n}\n");
    for chunk in plain.chunks(2000) {
        raw_load.push_str(&format!("add element inet rawbench s {{ {} }}\n", chunk.join(", ")));
    }
    let mut raw_full = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        raw(&raw_load);
        raw_full.push(started.elapsed().as_secs_f64() * 1e3);
    }
    raw_full.sort_by(f64::total_cmp);
    let mut raw_adds = Vec::new();
    for k in 0..21u32 {
        let started = Instant::now();
        raw(&format!("add element inet rawbench s {{ {} }}\n", Ipv4Addr::from(0x0d00_0000 + k)));
        raw_adds.push(started.elapsed().as_secs_f64() * 1e3);
    }
    raw_adds.sort_by(f64::total_cmp);
    let started = Instant::now();
    let listed = Command::new("nft").args(["-j", "list", "table", "inet", "rawbench"]).output().expect("nft list");
    assert!(listed.status.success());
    let raw_list = started.elapsed().as_secs_f64() * 1e3;
    raw("delete table inet rawbench\n");
    println!(
        "raw nft, same run: {} plain ipv4_addr elements loaded in one transaction: median {:.0} ms; one-element add: p50 {:.1} ms, p99 {:.1} ms; listing that table: {raw_list:.0} ms",
        plain.len(),
        raw_full[1],
        percentile(&raw_adds, 0.5),
        percentile(&raw_adds, 0.99)
    );

    let mut full = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        nft.replace(&base).expect("full apply");
        full.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let census = nft.census().expect("census").expect("table");
    assert_eq!(census, Census::of(&base), "the kernel holds what was applied");
    full.sort_by(f64::total_cmp);
    println!(
        "full apply (one transaction): median {:.0} ms over {} runs ({:.2}× the raw load; goal ≤ 1.5×)",
        full[full.len() / 2],
        full.len(),
        full[full.len() / 2] / raw_full[1]
    );

    // The raw tool on Tessera's own table: one-element adds into one of its sets (then taken
    // out again), what nft costs for this table's size of declarations.
    let mut raw_own = Vec::new();
    let own_set = base.sets.keys().find(|name| name.ends_with("_peers")).expect("a service's peer set").clone();
    for k in 0..21u32 {
        let element = Ipv4Addr::from(0x0e00_0000 + k).to_string();
        let started = Instant::now();
        raw(&format!("add element inet tessera {own_set} {{ {element} }}\n"));
        raw_own.push(started.elapsed().as_secs_f64() * 1e3);
        raw(&format!("delete element inet tessera {own_set} {{ {element} }}\n"));
    }
    raw_own.sort_by(f64::total_cmp);
    println!(
        "raw nft one-element add into a set of Tessera's table: p50 {:.1} ms, p99 {:.1} ms",
        percentile(&raw_own, 0.5),
        percentile(&raw_own, 0.99)
    );

    let (mut deltas, mut checks) = (Vec::new(), Vec::new());
    let mut current = base.clone();
    for k in 1..=21 {
        let next = ruleset(k);
        let started = Instant::now();
        let applied = nft.apply(Some(&current), &next).expect("delta");
        deltas.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(applied, Applied::Elements(1));
        let started = Instant::now();
        nft.verify_delta().expect("the kernel holds the delta");
        checks.push(started.elapsed().as_secs_f64() * 1e3);
        current = next;
    }
    deltas.sort_by(f64::total_cmp);
    println!(
        "one-element delta: p50 {:.1} ms, p99 {:.1} ms over {} deltas ({:.2}× the raw add into the plain set, {:.2}× the raw add into Tessera's table, at p50; goal ≤ 2×)",
        percentile(&deltas, 0.5),
        percentile(&deltas, 0.99),
        deltas.len(),
        percentile(&deltas, 0.5) / percentile(&raw_adds, 0.5),
        percentile(&deltas, 0.5) / percentile(&raw_own, 0.5)
    );
    checks.sort_by(f64::total_cmp);
    println!("  each then checked against the kernel once acknowledged (the changed set listed): p50 {:.1} ms", percentile(&checks, 0.5));
    // A new endpoint arriving with rules of its own: its chain, its set, its dispatch element,
    // declared and filled in one delta transaction (no full replacement).
    let mut arrivals = Vec::new();
    for k in 0..11u32 {
        let mut endpoints: Vec<EndpointRules> = (0..ENDPOINTS).map(|i| endpoint(i, if i == 0 { 21 } else { 0 })).collect();
        endpoints.push(endpoint(ENDPOINTS + k, 0));
        let refs: Vec<&EndpointRules> = endpoints.iter().collect();
        let r = tessera_policy::nft::render(&refs);
        let next = Ruleset::new(r.skeleton, r.sets, r.rules);
        let started = Instant::now();
        let applied = nft.apply(Some(&current), &next).expect("arrival");
        arrivals.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(matches!(applied, Applied::Delta(_)), "{applied:?}");
        nft.verify_delta().expect("the kernel holds the arrival");
        nft.apply(Some(&next), &current).expect("departure");
    }
    arrivals.sort_by(f64::total_cmp);
    println!(
        "an endpoint arriving with {PEERS_PER_ENDPOINT} rules of its own (declarations and elements in one delta): p50 {:.1} ms, p99 {:.1} ms",
        percentile(&arrivals, 0.5),
        percentile(&arrivals, 0.99)
    );
    let started = Instant::now();
    let census = nft.census().expect("census").expect("table");
    let listing = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!(census, Census::of(&current));
    // At rest the agent lists the table once every LISTING_EVERY resyncs (nf_tables commits are
    // watched meanwhile); the nft listing is CPU-bound, so its time is its CPU.
    let every = tessera_agent::enforcer::LISTING_EVERY as f64 * tessera_agent::enforcer::RESYNC_SECONDS;
    println!(
        "verification listing of the whole table: {listing:.0} ms (raw listing of the plain set: {raw_list:.0} ms); once every {every:.0} s at rest: {:.2}% of a core (goal < 1%)",
        listing / 10.0 / every
    );

    // Drift by events: the watcher's CPU (this process's; nft runs in children) while the
    // kernel announces full applies of the whole table, then at rest.
    let commits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let overruns = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (c, o) = (commits.clone(), overruns.clone());
    tessera_netlink::monitor::watch_nftables(move |event| {
        match event {
            tessera_netlink::monitor::NftEvent::Commit(_) => c.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            tessera_netlink::monitor::NftEvent::Overrun => o.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        true
    })
    .expect("watch nf_tables");
    let cpu = || {
        let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).expect("getrusage");
        let ms = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1e3 + t.tv_usec() as f64 / 1e3;
        ms(usage.user_time()) + ms(usage.system_time())
    };
    let before = cpu();
    for _ in 0..3 {
        nft.replace(&current).expect("full apply");
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    println!(
        "watching nf_tables: {:.0} ms of the agent's CPU over 3 full applies of {} elements ({} commits seen, {} overruns; an overrun costs one census)",
        cpu() - before,
        current.element_count(),
        commits.load(std::sync::atomic::Ordering::Relaxed),
        overruns.load(std::sync::atomic::Ordering::Relaxed),
    );
    let before = cpu();
    std::thread::sleep(std::time::Duration::from_secs(10));
    println!("watching nf_tables at rest: {:.1} ms of CPU in 10 s", cpu() - before);
}

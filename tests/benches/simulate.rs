//! `tessera policy simulate` as users run it: the release binary, end to end, output to a file.
//! 2,000 pods in 50 namespaces, 500 NetworkPolicies, 4 probes and 5 externals (about 16 million
//! verdicts). Prints time per million verdicts and the process's peak memory, beside two
//! yardsticks from the same run: the reference evaluator deciding pairs one by one (in process,
//! on a sample), and copying the output file (the raw cost of its bytes).
//!
//! `cargo build --release --bins && cargo bench -p tessera-tests --bench simulate`

use std::net::IpAddr;
use std::time::Instant;

use tessera_policy::Inputs;
use tessera_policy::eval::{Party, evaluate};
use tessera_policy::simulate::parse_probe;
use tessera_policy::testgen::{Shape, cluster_yaml};
use tessera_tests::binary;

const PORTS: [&str; 4] = ["tcp/80", "tcp/5432", "udp/53", "sctp/9000"];
const EXTERNALS: [&str; 5] = ["192.0.2.1", "192.0.2.2", "198.51.100.7", "203.0.113.9", "10.200.0.1"];

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let shape = Shape { namespaces: 50, pods: 2_000, policies: 500, cluster_policies: false, whole_segment_peers: false };
    let text = cluster_yaml(11, shape);
    let input = dir.path().join("cluster.yaml");
    std::fs::write(&input, &text).expect("write input");
    let output = dir.path().join("verdicts.json");

    let mut args: Vec<String> =
        vec!["policy".into(), "simulate".into(), "-f".into(), input.display().to_string(), "-o".into(), "json".into()];
    for p in PORTS {
        args.extend(["--port".to_string(), p.to_string()]);
    }
    for x in EXTERNALS {
        args.extend(["--external".to_string(), x.to_string()]);
    }
    let started = Instant::now();
    let status = std::process::Command::new(binary("tessera"))
        .args(&args)
        .stdout(std::fs::File::create(&output).expect("output file"))
        .status()
        .expect("run tessera");
    let seconds = started.elapsed().as_secs_f64();
    assert!(status.success(), "tessera policy simulate failed");
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).expect("rusage");
    let peak_mb = usage.max_rss() as f64 / 1024.0;
    let bytes = std::fs::metadata(&output).expect("output").len();
    // One verdict per line between the opening and closing lines.
    let verdicts = std::io::BufRead::lines(std::io::BufReader::new(std::fs::File::open(&output).expect("open"))).count() as f64 - 2.0;
    println!("simulate (binary, -o json to a file): 2,000 pods / 50 namespaces / 500 NetworkPolicies, 4 probes, 5 externals");
    println!(
        "  {:.0} verdicts, {:.1} MB of JSON in {seconds:.2} s: {:.3} s per million verdicts; peak memory {peak_mb:.0} MB",
        verdicts,
        bytes as f64 / 1e6,
        seconds / (verdicts / 1e6)
    );

    // Yardstick 1: the bytes alone, copied.
    let started = Instant::now();
    std::fs::copy(&output, dir.path().join("copy.json")).expect("copy");
    println!("  yardstick: copying the output file takes {:.2} s", started.elapsed().as_secs_f64());

    // Yardstick 2: the reference evaluator, pair by pair, on the first 300 parties.
    let mut inputs = Inputs::default();
    inputs.add_text("cluster", &text).expect("valid");
    let probes: Vec<_> = PORTS.iter().map(|p| parse_probe(p).expect("probe")).collect();
    let sample: Vec<_> = inputs.cluster.endpoints.values().take(300).collect();
    let started = Instant::now();
    let mut n = 0u64;
    for a in &sample {
        for b in &sample {
            if a.id == b.id {
                continue;
            }
            let (x, y): (IpAddr, IpAddr) = (a.ips[0], b.ips[0]);
            for p in &probes {
                std::hint::black_box(evaluate(&inputs.cluster, &inputs.policies, Party::Endpoint(a, x), Party::Endpoint(b, y), *p));
                n += 1;
            }
        }
    }
    let per_million = started.elapsed().as_secs_f64() / (n as f64 / 1e6);
    println!("  yardstick: the reference evaluator pair by pair (no output): {per_million:.2} s per million verdicts ({n} sampled)");
}

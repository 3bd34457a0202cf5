//! Architecture invariant: `topology`, `policy`, `bgp` and `cloud` (its planners) stay pure. Their full dependency closure
//! (normal dependencies, any depth) must hold no runtime, IO or network crate.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

const FORBIDDEN: &[&str] = &[
    "tokio",
    "async-std",
    "mio",
    "sqlx",
    "sqlx-core",
    "axum",
    "hyper",
    "reqwest",
    "tower",
    "kube",
    "kube-client",
    "k8s-openapi",
    "aws-sdk-ec2",
    "aws-config",
    "aws-smithy-runtime",
    "netlink-sys",
    "netlink-packet-route",
    "rtnetlink",
    "nftables",
    "libc",
    "nix",
    "socket2",
    "rustls",
    "openssl",
];

fn closure(package: &str, metadata: &Value) -> BTreeSet<String> {
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().expect("id"), p["name"].as_str().expect("name")))
        .collect();
    let nodes: BTreeMap<&str, Vec<&str>> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            let deps = n["deps"]
                .as_array()
                .expect("deps")
                .iter()
                // Only normal dependencies: dev- and build-dependencies do not ship.
                .filter(|d| d["dep_kinds"].as_array().expect("kinds").iter().any(|k| k["kind"].is_null()))
                .map(|d| d["pkg"].as_str().expect("pkg"))
                .collect();
            (n["id"].as_str().expect("id"), deps)
        })
        .collect();
    let root = names.iter().find(|(_, name)| **name == package).map(|(id, _)| *id).expect("package in metadata");
    let mut seen = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        for dep in nodes.get(id).into_iter().flatten() {
            if seen.insert(names[dep].to_string()) {
                stack.push(dep);
            }
        }
    }
    seen
}

#[test]
fn topology_and_policy_have_no_io_dependencies() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("metadata json");
    let pure = ["tessera-topology", "tessera-policy", "tessera-bgp", "tessera-cloud"];
    for package in pure {
        let deps = closure(package, &metadata);
        let bad: Vec<&&str> = FORBIDDEN.iter().filter(|f| deps.contains(**f)).collect();
        assert!(bad.is_empty(), "{package} must stay pure but depends on {bad:?}");
        let impure: Vec<&String> = deps.iter().filter(|d| d.starts_with("tessera-") && !pure.contains(&d.as_str())).collect();
        assert!(impure.is_empty(), "{package} may depend only on pure Tessera crates, not {impure:?}");
    }
    // The check itself can fail: the controller does pull in the forbidden crates.
    assert!(closure("tessera-controller", &metadata).contains("sqlx"));
}

/// IO and clocks the pure crates' sources must not touch, even through the standard library.
/// (`std::net` types such as `IpAddr` are data; its sockets are not.)
const FORBIDDEN_CALLS: &[&str] = &[
    "std::fs",
    "std::process",
    "std::env",
    "std::io::stdin",
    "std::io::stdout",
    "std::io::stderr",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "UnixStream",
    "SystemTime::now",
    "Instant::now",
    "std::thread::spawn",
    "std::thread::sleep",
];

/// Every Rust source of `dir` (library code only: benches and integration tests may time
/// themselves), with `#[cfg(test)]` modules left in: unit tests must stay pure too.
fn sources(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out
}

fn io_uses(root: &str) -> Vec<String> {
    let mut found = Vec::new();
    for file in sources(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(root).join("src")) {
        let text = std::fs::read_to_string(&file).expect("source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for bad in FORBIDDEN_CALLS {
                if code.contains(bad) {
                    found.push(format!("{}:{}: {bad}", file.display(), n + 1));
                }
            }
        }
    }
    found
}

#[test]
fn topology_and_policy_sources_do_no_io_and_read_no_clock() {
    for root in ["topology", "policy", "bgp", "cloud"] {
        let found = io_uses(root);
        assert!(found.is_empty(), "{root} must stay pure:\n{}", found.join("\n"));
    }
    // The check itself can fail: the agent's sources do IO.
    assert!(!io_uses("agent").is_empty());
}

/// Constants every binary must agree on, defined twice only where a crate may depend on no other.
#[test]
fn shared_constants_agree() {
    assert_eq!(tessera_agent_api::DEFAULT_SEGMENT, tessera_policy::model::DEFAULT_SEGMENT);
    assert_eq!(tessera_agent_api::NFT_TABLE, tessera_policy::nft::TABLE);
    assert_eq!(tessera_controller::store::DEFAULT_SEGMENT, tessera_policy::model::DEFAULT_SEGMENT);
}

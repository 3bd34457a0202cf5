//! Architecture invariant: `topology` and `policy` stay pure. Their full dependency closure
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
    for package in ["tessera-topology", "tessera-policy"] {
        let deps = closure(package, &metadata);
        let bad: Vec<&&str> = FORBIDDEN.iter().filter(|f| deps.contains(**f)).collect();
        assert!(bad.is_empty(), "{package} must stay pure but depends on {bad:?}");
        assert!(!deps.iter().any(|d| d.starts_with("tessera-")), "{package} must not depend on other Tessera crates: {deps:?}");
    }
    // The check itself can fail: the controller does pull in the forbidden crates.
    assert!(closure("tessera-controller", &metadata).contains("sqlx"));
}

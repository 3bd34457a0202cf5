//! End to end in a virtual datacenter of network namespaces (root; see `tessera_tests::vdc`):
//! two racks of two hosts, a router that knows one prefix per rack, a controller, an agent per
//! host, pods made by `tessera-cni` in two tenants and three segments. Real packets throughout.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tessera_policy::Inputs;
use tessera_policy::eval::Probe;
use tessera_policy::model::Protocol;
use tessera_policy::simulate::simulate;
use tessera_tests::netns::{finish, require_root, run};
use tessera_tests::vdc::Datacenter;

const TENANTS: [(&str, &[(&str, &str)]); 2] = [("shop", &[("team", "shop")]), ("bank", &[("team", "bank")])];
const PORTS: [u16; 2] = [80, 5432];
const WHOAMI: u16 = 7000;
const ECHO: u16 = 7100;

fn build() -> Datacenter {
    let mut dc = Datacenter::new(2, 2);
    for (t, labels) in TENANTS {
        let labels: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        dc.api("POST", "/v1/tenants", Some(json!({"name": t, "labels": labels})));
    }
    dc.api("POST", "/v1/tenants/shop/segments", Some(json!({"name": "web"})));
    dc.api("POST", "/v1/tenants/shop/segments", Some(json!({"name": "db"})));
    // Pods across all four hosts: shop/web, shop/db, bank/default.
    dc.add_pod("web1", 0, "shop", "web", &[("app", "web")]);
    dc.add_pod("db1", 1, "shop", "db", &[("app", "db")]);
    dc.add_pod("web2", 2, "shop", "web", &[("app", "web")]);
    dc.add_pod("api1", 3, "bank", "default", &[("app", "api")]);
    dc.add_pod("db2", 3, "shop", "db", &[("app", "db")]);
    dc.add_pod("api2", 0, "bank", "default", &[("app", "api")]);
    let namespaces: Vec<String> = dc.pods.iter().map(|p| p.ns.clone()).chain(dc.hosts.iter().map(|h| h.ns.clone())).collect();
    for ns in namespaces {
        dc.serve(&ns, &PORTS, &[WHOAMI], &[ECHO]);
    }
    dc
}

/// Every pod asks every other pod and every host who it is: the answer must be its own address.
fn assert_flat_network(dc: &Datacenter) {
    let mut running = Vec::new();
    for p in &dc.pods {
        let targets: Vec<String> = dc.pods.iter().filter(|q| q.name != p.name).map(|q| q.ip.clone()).chain(dc.hosts.iter().map(|h| h.ip.clone())).collect();
        let jobs: Vec<Value> = targets.iter().map(|t| json!({"id": t, "proto": "whoami", "dst": t, "port": WHOAMI})).collect();
        running.push((p.clone(), dc.probe(&p.ns, &json!(jobs), 2.0)));
    }
    let mut failures = Vec::new();
    for (p, child) in running {
        for (target, seen) in finish(child) {
            if seen != json!(p.ip) {
                failures.push(format!("{} ({}) -> {target}: receiver saw {seen}", p.name, p.ip));
            }
        }
    }
    assert!(failures.is_empty(), "the flat, NAT-free network is broken:\n{}", failures.join("\n"));
}

#[test]
fn virtual_datacenter() {
    require_root();
    let dc = build();
    dc.wait_converged(Duration::from_secs(20));

    // Aggregated routes only: the router knows one prefix per rack.
    let fabric = dc.install_fabric_routes();
    assert_eq!(fabric.len(), 2, "one fabric route per rack: {fabric:?}");
    let router_routes = run(&["ip", "-n", &dc.router, "route", "show"]);
    let pod_routes: Vec<&str> = router_routes.lines().filter(|l| l.starts_with("10.96.")).collect();
    assert_eq!(pod_routes.len(), 2, "router routes: {router_routes}");
    assert_flat_network(&dc);
}

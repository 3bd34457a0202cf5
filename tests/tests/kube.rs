//! The Kubernetes control plane the operator's tests stand on: the real kube-apiserver and etcd
//! of the pinned release (`tests/kube/build.sh`), started here. Objects go in and come back as
//! the API defines them — the ground the operator's watches will read.

use serde_json::json;
use tessera_tests::kube::Cluster;

#[test]
fn a_real_apiserver_stores_namespaces_and_nodes_without_a_kubelet() {
    let k = Cluster::start();
    let (status, version) = k.request("GET", "/version", None).expect("version");
    assert_eq!((status, version["gitVersion"].as_str()), (200, Some("v1.34.4")), "{version}");
    let (status, body) = k
        .request("POST", "/api/v1/namespaces", Some(&json!({"metadata": {"name": "shop", "labels": {"team": "shop"}}})))
        .expect("namespace");
    assert_eq!(status, 201, "{body}");
    let node = json!({
        "metadata": {"name": "node-1", "labels": {"topology.kubernetes.io/zone": "z1", "tessera.io/rack": "r1"}},
        "spec": {"providerID": "aws:///us-east-1a/i-0123456789abcdef0"},
    });
    let (status, body) = k.request("POST", "/api/v1/nodes", Some(&node)).expect("node");
    assert_eq!(status, 201, "{body}");
    let (_, nodes) = k.request("GET", "/api/v1/nodes", None).expect("nodes");
    assert_eq!(nodes["items"][0]["spec"]["providerID"], "aws:///us-east-1a/i-0123456789abcdef0", "{nodes}");
    let (_, namespaces) = k.request("GET", "/api/v1/namespaces?labelSelector=team%3Dshop", None).expect("namespaces");
    assert_eq!(namespaces["items"].as_array().map(Vec::len), Some(1), "{namespaces}");
    // Nobody else gets in: a wrong token is refused.
    let answer = k.client().get(format!("{}/api/v1/nodes", k.url)).bearer_auth("wrong").send().expect("request");
    assert_eq!(answer.status().as_u16(), 401);
    assert!(std::fs::read_to_string(k.kubeconfig()).expect("kubeconfig").contains(&k.url));
}

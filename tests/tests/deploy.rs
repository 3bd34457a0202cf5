//! `deploy/kubernetes` as a cluster would take it: each kustomization rendered by kustomize and
//! every object sent to the real kube-apiserver as a server-side dry run with strict field
//! validation (a misspelt field, a wrong type or an invalid value is refused there); and the
//! agent's init step, which installs the CNI plugin and never replaces another CNI's
//! configuration unless told to.

use std::process::Command;

use serde_json::{Value, json};
use tessera_tests::kube::{Cluster, bin_dir};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes");

/// The collection path of an object's kind.
fn collection(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or_default();
    let namespace = object["metadata"]["namespace"].as_str().unwrap_or("tessera-system");
    let (group, plural, namespaced) = match kind {
        "Namespace" => ("/api/v1", "namespaces", false),
        "ServiceAccount" => ("/api/v1", "serviceaccounts", true),
        "Service" => ("/api/v1", "services", true),
        "PersistentVolumeClaim" => ("/api/v1", "persistentvolumeclaims", true),
        "ClusterRole" => ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", false),
        "ClusterRoleBinding" => ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", false),
        "Deployment" => ("/apis/apps/v1", "deployments", true),
        "DaemonSet" => ("/apis/apps/v1", "daemonsets", true),
        "PodDisruptionBudget" => ("/apis/policy/v1", "poddisruptionbudgets", true),
        "CustomResourceDefinition" => ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", false),
        other => panic!("no path known for kind {other}"),
    };
    if namespaced { format!("{group}/namespaces/{namespace}/{plural}") } else { format!("{group}/{plural}") }
}

fn render(kustomization: &str) -> Vec<Value> {
    let out = Command::new(bin_dir().join("kustomize")).args(["build", &format!("{DEPLOY}/{kustomization}")]).output().expect("kustomize");
    assert!(out.status.success(), "kustomize build {kustomization}: {}", String::from_utf8_lossy(&out.stderr));
    tessera_policy::input::read_documents(&String::from_utf8_lossy(&out.stdout)).expect("rendered YAML")
}

#[test]
fn the_manifests_are_accepted_by_a_real_apiserver() {
    let k = Cluster::start();
    for kustomization in ["sqlite", "postgresql"] {
        let objects = render(kustomization);
        let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        for kind in ["Namespace", "ClusterRole", "Deployment", "DaemonSet", "Service", "PodDisruptionBudget"] {
            assert!(kinds.contains(&kind), "{kustomization} lacks a {kind}: {kinds:?}");
        }
        for object in &objects {
            let name = format!("{kustomization}: {} {}", object["kind"], object["metadata"]["name"]);
            // The namespace is made for real, so the namespaced dry runs have one to go in.
            let dry = if object["kind"] == "Namespace" { "" } else { "dryRun=All&" };
            let path = format!("{}?{dry}fieldValidation=Strict", collection(object));
            let (status, body) = k.request("POST", &path, Some(object)).expect("request");
            assert!(status == 201 || (status == 409 && object["kind"] == "Namespace"), "{name} refused ({status}): {body}");
        }
    }
    // What the agent's pods get: the projected token for audience tessera, the node's name.
    let agent = render("sqlite").into_iter().find(|o| o["kind"] == "DaemonSet").expect("the agent");
    let spec = &agent["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    let projected = spec["volumes"].as_array().expect("volumes").iter().find(|v| v["name"] == "token").expect("token volume");
    assert_eq!(projected["projected"]["sources"][0]["serviceAccountToken"]["audience"], "tessera");
    let caps = &spec["containers"][0]["securityContext"]["capabilities"];
    assert_eq!((caps["drop"].clone(), caps["add"].clone()), (json!(["ALL"]), json!(["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"])));
}

/// The controller's operator with exactly deploy/'s RBAC (the ServiceAccount's identity, the
/// ClusterRole and its binding, and Tessera's CRDs applied for real): it maps Namespaces and the
/// policy kinds, says refusals as Events and in each policy object's status (`Accepted`, the
/// field named); it cannot read Secrets, change Nodes or delete Namespaces.
#[test]
fn the_operator_works_with_the_deployed_rbac_and_nothing_more() {
    let k = Cluster::start();
    k.install_crds(&tessera_tests::kube::network_policy_api_crds());
    for object in render("sqlite") {
        let kinds = ["CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"];
        if kinds.contains(&object["kind"].as_str().unwrap_or_default()) {
            let (status, body) = k.request("POST", &collection(&object), Some(&object)).expect("apply");
            assert_eq!(status, 201, "{}: {body}", object["metadata"]["name"]);
        }
    }
    let dir = tempfile::tempdir().expect("dir");
    let topology = dir.path().join("topology.yaml");
    std::fs::write(&topology, "networks: [{name: pods, cidr: 10.96.0.0/16}]\ngroups: [{name: rack-1, assignment: {rack: r1}}]\n")
        .expect("topology");
    let kubeconfig = k.kubeconfig_as("controller.kubeconfig", &k.controller_token);
    let env = [
        ("TESSERA_NO_DEMO", "true"),
        ("TESSERA_TOPOLOGY", topology.to_str().expect("path")),
        ("TESSERA_KUBECONFIG", kubeconfig.to_str().expect("path")),
    ];
    let c = tessera_tests::Controller::start(&env);
    assert_eq!(k.request("POST", "/api/v1/namespaces", Some(&json!({"metadata": {"name": "shop"}}))).expect("ns").0, 201);
    let cnp = json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy", "metadata": {"name": "to-example"},
        "spec": {"tier": "Admin", "priority": 7, "subject": {"namespaces": {}}, "egress": [{"action": "Accept", "to": [{"domainNames": ["example.com"]}]}]},
    });
    assert_eq!(k.request("POST", "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies", Some(&cnp)).expect("cnp").0, 201);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let event = || {
        let (_, events) =
            k.request("GET", "/apis/events.k8s.io/v1/events?fieldSelector=regarding.name%3Dto-example", None).expect("events");
        events["items"].as_array().is_some_and(|e| e.iter().any(|e| e["reason"] == "Refused"))
    };
    while !(c.get("/v1/tenants/shop")["origin"] == "kubernetes" && event()) {
        assert!(std::time::Instant::now() < deadline, "the operator did not map the cluster with deploy/'s RBAC: {}", c.get("/v1/tenants"));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Tessera's own kinds: one the engine refuses says why in its status, naming the field; one
    // it takes is stored and says so.
    let tessera = "/apis/tessera.io/v1/namespaces/shop/tesserapolicies";
    let bad = json!({"apiVersion": "tessera.io/v1", "kind": "TesseraPolicy", "metadata": {"name": "db"},
        "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"cidr": "10.0.0.0/8", "tenant": "ops"}]}]}});
    let (status, body) = k.request("POST", tessera, Some(&bad)).expect("create");
    assert_eq!(status, 201, "{body}");
    let cluster = "/apis/tessera.io/v1/tesseraclusterpolicies";
    let good = json!({"apiVersion": "tessera.io/v1", "kind": "TesseraClusterPolicy", "metadata": {"name": "baseline"},
        "spec": {"tier": "baseline", "priority": 1, "ingress": [{"action": "deny", "from": [{"any": true}]}]}});
    let (status, body) = k.request("POST", cluster, Some(&good)).expect("create");
    assert_eq!(status, 201, "{body}");
    // The apiserver's own schema refuses a wrong type before Tessera sees it.
    let mistyped = json!({"apiVersion": "tessera.io/v1", "kind": "TesseraClusterPolicy", "metadata": {"name": "x"},
        "spec": {"tier": "admin", "priority": "high"}});
    let (status, body) = k.request("POST", cluster, Some(&mistyped)).expect("create");
    assert!(status == 422 && body.to_string().contains("spec.priority"), "{status} {body}");
    let accepted = |path: &str| {
        let (_, object) = k.request("GET", path, None).expect("get");
        object["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Accepted").cloned())
    };
    let conditions = [
        (format!("{tessera}/db"), "False", "spec.ingress[0].from[0]"),
        (format!("{cluster}/baseline"), "True", "enforced"),
        ("/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies/to-example".to_string(), "False", "domainNames"),
    ];
    for (path, want, says) in &conditions {
        while !accepted(path).is_some_and(|c| c["status"] == *want && c["message"].as_str().is_some_and(|m| m.contains(says))) {
            assert!(std::time::Instant::now() < deadline, "{path}: Accepted should be {want} saying {says}: {:?}", accepted(path));
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    let nodes = || k.request("GET", &format!("{cluster}/baseline"), None).expect("get").1["status"]["nodes"].clone();
    while nodes() != json!({"applied": 0, "total": 0}) {
        assert!(std::time::Instant::now() < deadline, "realization in the status (no node yet): {}", nodes());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let stored = c.get("/v1/policies");
    let kinds: Vec<&str> = stored.as_array().into_iter().flatten().filter_map(|p| p["document"]["kind"].as_str()).collect();
    assert_eq!(kinds, ["TesseraClusterPolicy"], "only what the engine took is stored: {stored}");
    // And nothing more.
    for (method, path) in [
        ("GET", "/api/v1/namespaces/kube-system/secrets"),
        ("GET", "/api/v1/secrets"),
        ("DELETE", "/api/v1/namespaces/shop"),
        ("DELETE", "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies/to-example"),
        ("POST", "/api/v1/namespaces/shop/pods"),
    ] {
        let body = json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "x", "image": "x"}]}});
        let (status, answer) = k.request_as(&k.controller_token, method, path, Some(&body)).expect("request");
        assert_eq!(status, 403, "{method} {path} should be forbidden: {answer}");
    }
    let (status, answer) = k.request_as(&k.controller_token, "PATCH", "/api/v1/nodes/x", Some(&json!({}))).expect("request");
    assert_eq!(status, 403, "patching a Node should be forbidden: {answer}");
}

#[test]
fn the_cni_install_step_never_replaces_another_cni_unless_told() {
    let dir = tempfile::tempdir().expect("dir");
    let (host, source) = (dir.path().join("host"), dir.path().join("source"));
    for d in [host.join("opt/cni/bin"), host.join("etc/cni/net.d"), source.clone()] {
        std::fs::create_dir_all(d).expect("dir");
    }
    for plugin in ["tessera-cni", "portmap"] {
        std::fs::write(source.join(plugin), format!("#!/bin/sh\n# {plugin}\n")).expect("plugin");
    }
    let install = |overwrite: &str| {
        Command::new(format!("{DEPLOY}/install-cni.sh"))
            .env("HOST_ROOT", &host)
            .env("TESSERA_CNI_SOURCE", &source)
            .env("TESSERA_CONFLIST", format!("{DEPLOY}/10-tessera.conflist"))
            .env("TESSERA_CNI_OVERWRITE", overwrite)
            .output()
            .expect("install-cni.sh")
    };
    // A clean node: installed.
    assert!(install("false").status.success());
    let conflist: Value =
        serde_json::from_str(&std::fs::read_to_string(host.join("etc/cni/net.d/10-tessera.conflist")).expect("conflist")).expect("json");
    assert_eq!(conflist["plugins"][0]["type"], "tessera-cni");
    assert!(host.join("opt/cni/bin/tessera-cni").exists() && host.join("opt/cni/bin/portmap").exists());
    // Run again (a restart): still fine.
    assert!(install("false").status.success());
    // Another CNI's configuration: refused, and left as it was.
    let other = host.join("etc/cni/net.d/05-other.conflist");
    std::fs::write(&other, "{}").expect("other");
    let out = install("false");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("TESSERA_CNI_OVERWRITE"), "{out:?}");
    assert!(other.exists());
    // Told to: moved aside, not deleted.
    assert!(install("true").status.success());
    assert!(!other.exists() && host.join("etc/cni/net.d/05-other.conflist.replaced-by-tessera").exists());
}

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

/// A controller running the operator against a cluster (topology: racks `r1`, `r2` as groups
/// rack-1, rack-2 in 10.96.0.0/16), with what it needs to start again where it was.
struct Operated {
    _dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    port: u16,
    db: String,
    token: String,
}

impl Operated {
    /// On a fresh SQLite store, with `extra` environment.
    fn new(k: &Cluster, extra: &[(&str, &str)]) -> Operated {
        Operated::on(k, tessera_tests::sqlite_url(), extra)
    }

    /// On the store at `db`.
    fn on(k: &Cluster, db: String, extra: &[(&str, &str)]) -> Operated {
        let dir = tempfile::tempdir().expect("dir");
        let topology = dir.path().join("topology.yaml");
        std::fs::write(
            &topology,
            "networks: [{name: pods, cidr: 10.96.0.0/16}]\ngroups: [{name: rack-1, assignment: {rack: r1}}, {name: rack-2, assignment: {rack: r2}}]\n",
        )
        .expect("topology");
        let mut env: Vec<(String, String)> = vec![
            ("TESSERA_NO_DEMO".into(), "true".into()),
            ("TESSERA_TOPOLOGY".into(), topology.display().to_string()),
            ("TESSERA_KUBECONFIG".into(), k.kubeconfig().display().to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let token = format!("kube-admin-{}", rand::random::<u64>());
        Operated { _dir: dir, env, port: tessera_tests::free_port(), db, token }
    }

    fn start(&self) -> tessera_tests::Controller {
        self.start_on(self.port, &[])
    }

    /// Another replica on the same store: its own port and `extra` environment.
    fn start_on(&self, port: u16, extra: &[(&str, &str)]) -> tessera_tests::Controller {
        let mut env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.extend_from_slice(extra);
        tessera_tests::Controller::start_with(port, &self.db, &self.token, &env)
    }
}

/// The Warning Event of `reason` on the object named `name`, if there is one.
fn warning(k: &Cluster, name: &str, reason: &str) -> Option<serde_json::Value> {
    let (_, events) =
        k.request("GET", &format!("/apis/events.k8s.io/v1/events?fieldSelector=regarding.name%3D{name}"), None).expect("events");
    events["items"].as_array().into_iter().flatten().find(|e| e["reason"] == reason && e["type"] == "Warning").cloned()
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool, context: impl Fn() -> String) {
    let started = std::time::Instant::now();
    while !check() {
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{what}: not within 20 s\n{}", context());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The operator in the controller: Namespaces become tenants, Nodes hosts (InternalIP,
/// labels → rack, AWS providerID → instance) and NetworkPolicies policies; their changes and
/// deletions follow; what
/// Kubernetes manages is read-only through REST, and what the API made is never touched; a
/// restart catches up with what changed while the controller was down.
#[test]
fn nodes_and_namespaces_become_hosts_and_tenants() {
    let k = Cluster::start();
    let operated = Operated::new(&k, &[("TESSERA_ENDPOINT_GRACE_SECONDS", "3")]);
    let mut c = operated.start();
    let context = || format!("hosts: {}\ntenants: {}", c.get("/v1/hosts"), c.get("/v1/tenants"));

    let (status, body) =
        k.request("POST", "/api/v1/namespaces", Some(&json!({"metadata": {"name": "shop", "labels": {"team": "shop"}}}))).expect("ns");
    assert_eq!(status, 201, "{body}");
    wait_for("the tenant", || c.get("/v1/tenants/shop")["labels"]["team"] == "shop", context);
    assert_eq!(c.get("/v1/tenants/shop")["origin"], "kubernetes");

    // A Node: placed once it has an InternalIP (no kubelet here: the test sets its status).
    let node =
        json!({"metadata": {"name": "node-1", "labels": {"rack": "r1"}}, "spec": {"providerID": "aws:///us-east-1a/i-0123456789abcdef0"}});
    assert_eq!(k.request("POST", "/api/v1/nodes", Some(&node)).expect("node").0, 201);
    let address =
        json!({"status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.11"}, {"type": "Hostname", "address": "node-1"}]}});
    assert_eq!(k.merge_patch("/api/v1/nodes/node-1/status", &address).0, 200);
    wait_for("the host", || c.get("/v1/hosts/node-1")["group"] == "rack-1", context);
    let host = c.get("/v1/hosts/node-1");
    assert_eq!(
        (host["ips"].clone(), host["cloudTarget"].clone(), host["origin"].clone()),
        (json!(["192.0.2.11"]), json!("i-0123456789abcdef0"), json!("kubernetes")),
        "{host}"
    );

    // Relabelled: the host moves to rack 2.
    assert_eq!(k.merge_patch("/api/v1/nodes/node-1", &json!({"metadata": {"labels": {"rack": "r2"}}})).0, 200);
    wait_for("the host moves", || c.get("/v1/hosts/node-1")["group"] == "rack-2", context);

    // Read-only through REST, naming where to change it.
    let (status, body) = c.send("PUT", "/v1/hosts/node-1", json!({"ips": ["192.0.2.99"], "labels": {}}));
    assert!(status == 409 && body.to_string().contains("Node `node-1`"), "{status} {body}");
    let (status, body) = c.send("DELETE", "/v1/tenants/shop", json!(null));
    assert!(status == 409 && body.to_string().contains("Namespace `shop`"), "{status} {body}");

    // A host made through the API keeps its own, whatever Kubernetes has of that name.
    assert_eq!(c.send("POST", "/v1/hosts", json!({"name": "vm-1", "ips": ["192.0.2.50"], "labels": {"rack": "r1"}})).0, 201);
    let vm = json!({"metadata": {"name": "vm-1", "labels": {"rack": "r2"}}});
    assert_eq!(k.request("POST", "/api/v1/nodes", Some(&vm)).expect("node").0, 201);
    assert_eq!(
        k.merge_patch("/api/v1/nodes/vm-1/status", &json!({"status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.51"}]}})).0,
        200
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert_eq!(c.get("/v1/hosts/vm-1")["group"], "rack-1");
    assert_eq!(c.get("/v1/hosts/vm-1")["origin"], "api");
    wait_for("a Warning Event says the Node was left alone", || warning(&k, "vm-1", "Skipped").is_some(), String::new);

    // A Node in a rack the topology lacks: refused, said on the Node as a Warning Event.
    let stray = json!({"metadata": {"name": "node-9", "labels": {"rack": "r9"}}});
    assert_eq!(k.request("POST", "/api/v1/nodes", Some(&stray)).expect("node").0, 201);
    assert_eq!(
        k.merge_patch("/api/v1/nodes/node-9/status", &json!({"status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.19"}]}}))
            .0,
        200
    );
    let refused = || warning(&k, "node-9", "Refused");
    wait_for(
        "an Event on the refused Node",
        || refused().is_some(),
        || k.request("GET", "/apis/events.k8s.io/v1/events", None).map(|r| r.1.to_string()).unwrap_or_default(),
    );
    let note = refused().map(|e| e["note"].to_string()).unwrap_or_default();
    assert!(note.contains("labels"), "the Event names the field: {note}");
    assert_eq!(k.request("DELETE", "/api/v1/nodes/node-9", None).expect("delete").0, 200);

    // A NetworkPolicy applied in the cluster is stored (origin kubernetes), follows its changes,
    // is read-only through REST, and goes with it.
    let policy = json!({
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"podSelector": {}}]}]},
    });
    let (status, body) = k.request("POST", "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies", Some(&policy)).expect("np");
    assert_eq!(status, 201, "{body}");
    let ours = |c: &tessera_tests::Controller| {
        c.get("/v1/policies").as_array().into_iter().flatten().find(|p| p["origin"] == "kubernetes").cloned().unwrap_or_default()
    };
    wait_for(
        "the policy",
        || ours(&c)["document"]["spec"]["podSelector"]["matchLabels"]["app"] == "web",
        || c.get("/v1/policies").to_string(),
    );
    let id = ours(&c)["id"].as_str().expect("id").to_string();
    let (status, body) = c.send("DELETE", &format!("/v1/policies/{id}"), json!(null));
    assert!(status == 409 && body.to_string().contains("NetworkPolicy"), "{status} {body}");
    let egress = json!({"spec": {"policyTypes": ["Ingress", "Egress"]}});
    assert_eq!(k.merge_patch("/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/web", &egress).0, 200);
    wait_for(
        "the policy changes",
        || ours(&c)["document"]["spec"]["policyTypes"] == json!(["Ingress", "Egress"]),
        || c.get("/v1/policies").to_string(),
    );
    assert_eq!(k.request("DELETE", "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/web", None).expect("delete").0, 200);
    wait_for("the policy goes", || ours(&c).is_null(), || c.get("/v1/policies").to_string());

    // A pod's endpoint (allocated as the CNI plugin does) takes the pod's labels, matched by
    // its address, and follows them.
    let (status, endpoint) =
        c.send("POST", "/v1/endpoints", json!({"id": "cni/sandbox-1/eth0", "tenant": "shop", "host": "node-1", "labels": {}}));
    assert_eq!(status, 201, "{endpoint}");
    let ip = endpoint["ips"][0].as_str().expect("ip").to_string();
    let pod = json!({"metadata": {"name": "web-1", "labels": {"app": "web"}}, "spec": {"nodeName": "node-1", "containers": [
        {"name": "web", "image": "web", "ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 9000}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]},
    ]}});
    assert_eq!(k.request("POST", "/api/v1/namespaces/shop/pods", Some(&pod)).expect("pod").0, 201);
    let running = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}});
    assert_eq!(k.merge_patch("/api/v1/namespaces/shop/pods/web-1/status", &running).0, 200);
    let labels = || c.get("/v1/endpoints/cni/sandbox-1/eth0")["labels"].clone();
    wait_for("the endpoint takes the pod's labels", || labels() == json!({"app": "web"}), || c.get("/v1/endpoints").to_string());
    // And its named ports, which NetworkPolicy ports given by name resolve to.
    assert_eq!(c.get("/v1/endpoints/cni/sandbox-1/eth0")["namedPorts"], json!({"http": "8080/TCP", "dns": "53/UDP"}));
    let by_name = json!({
        "metadata": {"name": "web-http", "namespace": "shop"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"ports": [{"port": "http"}]}]},
    });
    assert_eq!(k.request("POST", "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies", Some(&by_name)).expect("np").0, 201);
    // The pod's address jumps to its side group's chain, whose set admits TCP 8080 from anywhere.
    let opened = || {
        let sets = c.get("/v1/nodes/node-1/state")["ruleset"]["sets"].clone();
        let jump = format!("{ip} : jump ");
        let group = sets["in_dispatch4"].as_array().into_iter().flatten().find_map(|e| e.as_str()?.strip_prefix(&jump).map(String::from));
        group.is_some_and(|g| sets[format!("{g}_ports")].to_string().contains("0.0.0.0-255.255.255.255 . 6 . 8080"))
    };
    wait_for("the named port resolves to 8080 on the pod's node", opened, || {
        c.get("/v1/nodes/node-1/state")["ruleset"]["sets"].to_string()
    });
    assert_eq!(k.request("DELETE", "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/web-http", None).expect("delete").0, 200);
    assert_eq!(
        k.merge_patch("/api/v1/namespaces/shop/pods/web-1", &json!({"metadata": {"labels": {"app": "web", "tier": "front"}}})).0,
        200
    );
    wait_for("the endpoint follows", || labels() == json!({"app": "web", "tier": "front"}), || c.get("/v1/endpoints").to_string());
    // The pod goes: its endpoint is released once the grace time (3 s here) has passed.
    assert_eq!(k.request("DELETE", "/api/v1/namespaces/shop/pods/web-1?gracePeriodSeconds=0", None).expect("delete").0, 200);
    wait_for(
        "the endpoint of a gone pod is released",
        || c.get("/v1/endpoints/cni/sandbox-1/eth0")["error"]["code"] == "not_found",
        || c.get("/v1/endpoints").to_string(),
    );

    // A Node deleted: its host goes.
    assert_eq!(k.request("DELETE", "/api/v1/nodes/node-1", None).expect("delete").0, 200);
    wait_for("the host goes", || c.get("/v1/hosts").as_array().is_some_and(|h| h.iter().all(|h| h["name"] != "node-1")), context);

    // While the controller is down a Namespace goes (finalized as the namespace controller
    // would) and another comes: the restart catches up.
    c.stop();
    assert_eq!(k.request("DELETE", "/api/v1/namespaces/shop", None).expect("delete").0, 200);
    let finalize = json!({"metadata": {"name": "shop"}, "spec": {"finalizers": []}});
    assert_eq!(k.request("PUT", "/api/v1/namespaces/shop/finalize", Some(&finalize)).expect("finalize").0, 200);
    assert_eq!(k.request("POST", "/api/v1/namespaces", Some(&json!({"metadata": {"name": "bank"}}))).expect("ns").0, 201);
    let c = operated.start();
    let context = || format!("tenants: {}", c.get("/v1/tenants"));
    wait_for(
        "the restart catches up",
        || {
            let names: Vec<String> =
                c.get("/v1/tenants").as_array().into_iter().flatten().filter_map(|t| t["name"].as_str().map(String::from)).collect();
            names.contains(&"bank".to_string()) && !names.contains(&"shop".to_string())
        },
        context,
    );
}

/// Agents authenticate as their node with no shared secret: a pod-bound ServiceAccount token of
/// the agents' ServiceAccount, for audience `tessera`, reads its own node's state and no other;
/// a token for another audience or of another ServiceAccount is refused.
#[test]
fn an_agent_token_speaks_for_its_node_only() {
    let k = Cluster::start();
    let operated = Operated::new(&k, &[]);
    let c = operated.start();
    let ok = |(status, body): (u16, serde_json::Value)| {
        assert!((200..300).contains(&status), "{status} {body}");
        body
    };
    ok(k.request("POST", "/api/v1/namespaces", Some(&json!({"metadata": {"name": "tessera-system"}}))).expect("ns"));
    for sa in ["tessera-agent", "someone-else"] {
        ok(k.request("POST", "/api/v1/namespaces/tessera-system/serviceaccounts", Some(&json!({"metadata": {"name": sa}}))).expect("sa"));
    }
    for node in ["node-1", "node-2"] {
        ok(k.request("POST", "/api/v1/nodes", Some(&json!({"metadata": {"name": node, "labels": {"rack": "r1"}}}))).expect("node"));
        let ip = if node == "node-1" { "192.0.2.11" } else { "192.0.2.12" };
        ok(k.merge_patch(
            &format!("/api/v1/nodes/{node}/status"),
            &json!({"status": {"addresses": [{"type": "InternalIP", "address": ip}]}}),
        ));
    }
    // The agent's pod on node-1 (no kubelet: it stays Pending, which is enough to bind a token).
    let token = |sa: &str, audience: &str| {
        let pod_name = format!("agent-{sa}");
        let pod = json!({"metadata": {"name": pod_name}, "spec": {"nodeName": "node-1", "serviceAccountName": sa, "containers": [{"name": "agent", "image": "tessera"}]}});
        let (status, body) = k.request("POST", "/api/v1/namespaces/tessera-system/pods", Some(&pod)).expect("pod");
        let uid = if status == 201 {
            body["metadata"]["uid"].as_str().expect("uid").to_string()
        } else {
            k.request("GET", &format!("/api/v1/namespaces/tessera-system/pods/{pod_name}"), None).expect("pod").1["metadata"]["uid"]
                .as_str()
                .expect("uid")
                .to_string()
        };
        let request = json!({"spec": {"audiences": [audience], "expirationSeconds": 3600, "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": uid}}});
        let body =
            ok(k.request("POST", &format!("/api/v1/namespaces/tessera-system/serviceaccounts/{sa}/token"), Some(&request)).expect("token"));
        body["status"]["token"].as_str().expect("token").to_string()
    };
    let agent = token("tessera-agent", "tessera");
    let state = |node: &str, bearer: &str| {
        let answer =
            reqwest::blocking::Client::new().get(format!("{}/v1/nodes/{node}/state", c.url)).bearer_auth(bearer).send().expect("state");
        answer.status().as_u16()
    };
    wait_for("the agent's node is known and its token accepted", || state("node-1", &agent) == 200, || c.get("/v1/hosts").to_string());
    assert_eq!(state("node-2", &agent), 403, "a node's token reads only its own node");
    assert_eq!(state("node-1", &token("tessera-agent", "another-audience")), 401);
    assert_eq!(state("node-1", &token("someone-else", "tessera")), 401);
    assert_eq!(state("node-1", "not.a.token"), 401);
}

/// Kubernetes flags that cannot be right are refused at start, naming the flag.
#[test]
fn bad_kubernetes_flags_are_named() {
    let dir = tempfile::tempdir().expect("dir");
    let garbage = dir.path().join("kubeconfig");
    std::fs::write(&garbage, "not: [a kubeconfig").expect("file");
    let (missing, garbage) = (dir.path().join("missing").display().to_string(), garbage.display().to_string());
    for (args, flag) in [
        (vec!["--kubeconfig", missing.as_str()], "--kubeconfig"),
        (vec!["--kubeconfig", garbage.as_str()], "--kubeconfig"),
        (vec!["--kubeconfig", garbage.as_str(), "--agent-service-account", "tessera-agent"], "--agent-service-account"),
        (vec!["--kubernetes", "--token-audience", ""], "--token-audience"),
        (vec!["--agent-service-account", "a/b/c"], "--agent-service-account"),
        (vec!["--token-audience", " "], "--token-audience"),
    ] {
        tessera_tests::assert_refused_at_start(&args, flag);
    }
}

/// The network-policy-api's cluster policies: the operator does not wait for their CRDs (a
/// cluster without them works as before); once installed, ClusterNetworkPolicies,
/// AdminNetworkPolicies and the BaselineAdminNetworkPolicy are stored (origin kubernetes,
/// read-only through REST) and follow their changes; one the engine cannot enforce exactly gets
/// a Warning Event naming the field and is not stored; removing a CRD removes its policies.
#[test]
fn cluster_policies_of_the_network_policy_api() {
    let k = Cluster::start();
    let operated = Operated::new(&k, &[]);
    let c = operated.start();
    let policies = || c.get("/v1/policies");
    let stored = |key: &str| {
        let named = |p: &&serde_json::Value| {
            format!("{} {}", p["document"]["kind"].as_str().unwrap_or(""), p["document"]["metadata"]["name"].as_str().unwrap_or("")) == key
        };
        policies().as_array().into_iter().flatten().find(named).cloned()
    };

    // No CRD installed: the operator still maps what there is.
    assert_eq!(k.request("POST", "/api/v1/namespaces", Some(&json!({"metadata": {"name": "shop"}}))).expect("ns").0, 201);
    wait_for("the tenant without the CRDs", || c.get("/v1/tenants/shop")["origin"] == "kubernetes", || c.get("/v1/tenants").to_string());

    let crds = k.install_crds(&tessera_tests::kube::network_policy_api_crds());
    assert_eq!(crds.len(), 3, "{crds:?}");
    let cnp = json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy", "metadata": {"name": "ops-ssh"},
        "spec": {"tier": "Admin", "priority": 5, "subject": {"namespaces": {"matchLabels": {"team": "shop"}}},
            "ingress": [{"name": "ssh", "action": "Accept", "from": [{"namespaces": {"matchLabels": {"team": "ops"}}}],
                "protocols": [{"tcp": {"destinationPort": {"number": 22}}}]}]},
    });
    let anp = json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy", "metadata": {"name": "db-guard"},
        "spec": {"priority": 10, "subject": {"namespaces": {}}, "ingress": [{"action": "Deny", "from": [{"namespaces": {"matchLabels": {"team": "ops"}}}]}]},
    });
    let banp = json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "BaselineAdminNetworkPolicy", "metadata": {"name": "default"},
        "spec": {"subject": {"namespaces": {}}, "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]},
    });
    for (path, object) in [
        ("/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies", &cnp),
        ("/apis/policy.networking.k8s.io/v1alpha1/adminnetworkpolicies", &anp),
        ("/apis/policy.networking.k8s.io/v1alpha1/baselineadminnetworkpolicies", &banp),
    ] {
        let (status, body) = k.request("POST", path, Some(object)).expect("create");
        assert_eq!(status, 201, "{body}");
    }
    for key in ["ClusterNetworkPolicy ops-ssh", "AdminNetworkPolicy db-guard", "BaselineAdminNetworkPolicy default"] {
        wait_for(&format!("{key} stored"), || stored(key).is_some_and(|p| p["origin"] == "kubernetes"), || policies().to_string());
    }
    assert_eq!(stored("ClusterNetworkPolicy ops-ssh").expect("stored")["document"]["spec"], cnp["spec"]);

    // Read-only through REST, naming where to change it.
    let id = stored("AdminNetworkPolicy db-guard").expect("stored")["id"].as_str().expect("id").to_string();
    let (status, body) = c.send("DELETE", &format!("/v1/policies/{id}"), json!(null));
    assert!(status == 409 && body.to_string().contains("AdminNetworkPolicy"), "{status} {body}");

    // A change follows.
    let path = "/apis/policy.networking.k8s.io/v1alpha1/adminnetworkpolicies/db-guard";
    assert_eq!(k.merge_patch(path, &json!({"spec": {"priority": 20}})).0, 200);
    wait_for(
        "the ANP's change",
        || stored("AdminNetworkPolicy db-guard").is_some_and(|p| p["document"]["spec"]["priority"] == 20),
        || policies().to_string(),
    );

    // Valid for the API server, not enforceable exactly: refused, said on the object.
    let fqdn = json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy", "metadata": {"name": "to-example"},
        "spec": {"tier": "Admin", "priority": 7, "subject": {"namespaces": {}},
            "egress": [{"action": "Accept", "to": [{"domainNames": ["example.com"]}]}]},
    });
    let (status, body) = k.request("POST", "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies", Some(&fqdn)).expect("create");
    assert_eq!(status, 201, "{body}");
    let refused = || warning(&k, "to-example", "Refused");
    wait_for("a Warning Event on the refused policy", || refused().is_some(), String::new);
    let note = refused().map(|e| e["note"].to_string()).unwrap_or_default();
    assert!(note.contains("spec.egress[0].to[0].domainNames"), "the Event names the field: {note}");
    assert!(stored("ClusterNetworkPolicy to-example").is_none(), "nothing of it is stored");

    // Deleted in the cluster: gone from the store.
    let (status, _) = k.request("DELETE", "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies/ops-ssh", None).expect("delete");
    assert_eq!(status, 200);
    wait_for("the CNP goes", || stored("ClusterNetworkPolicy ops-ssh").is_none(), || policies().to_string());

    // A CRD removed takes its objects, and their policies, with it; the other kinds stay.
    let crd = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/adminnetworkpolicies.policy.networking.k8s.io";
    assert_eq!(k.request("DELETE", crd, None).expect("delete CRD").0, 200);
    wait_for("the ANP goes with its CRD", || stored("AdminNetworkPolicy db-guard").is_none(), || policies().to_string());
    assert!(stored("BaselineAdminNetworkPolicy default").is_some());
}

/// etcd's JSON gateway takes keys in base64.
fn base64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char } else { '=' });
        }
    }
    out
}

/// Watch faults leave nothing stale: the apiserver restarted; a change no watch ever saw (a
/// Namespace removed in etcd behind the apiserver's back, then etcd compacted, so the resumed
/// watches get 410 Gone and the operator lists again); the controller SIGKILLed while the
/// cluster changes.
#[test]
fn watch_faults_leave_nothing_stale() {
    let mut k = Cluster::start();
    let operated = Operated::new(&k, &[]);
    let mut c = operated.start();
    // The test's own (the apiserver makes default and kube-* itself).
    let tenants = |c: &tessera_tests::Controller| -> Vec<String> {
        let mut names: Vec<String> = c
            .get("/v1/tenants")
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str().map(String::from))
            .filter(|n| n.len() == 1)
            .collect();
        names.sort();
        names
    };
    let namespace = |k: &Cluster, name: &str| {
        let (status, body) = k.request("POST", "/api/v1/namespaces", Some(&json!({"metadata": {"name": name}}))).expect("ns");
        assert_eq!(status, 201, "{body}");
    };
    let want = |c: &tessera_tests::Controller, names: &[&str], what: &str| {
        wait_for(what, || tenants(c) == names, || format!("tenants: {:?}", tenants(c)));
    };
    namespace(&k, "a");
    namespace(&k, "b");
    want(&c, &["a", "b"], "the first tenants");

    // The apiserver restarted: the watches resume.
    k.stop_apiserver();
    k.start_apiserver();
    namespace(&k, "c");
    want(&c, &["a", "b", "c"], "a Namespace made after the apiserver's restart");

    // Behind every watch's back, then history compacted away: only a fresh list can tell.
    k.stop_apiserver();
    let deleted = k.etcd("/v3/kv/deleterange", &json!({"key": base64("/registry/namespaces/b")}));
    assert_eq!(deleted["deleted"], "1", "{deleted}");
    let revision = deleted["header"]["revision"].clone();
    k.etcd("/v3/kv/compaction", &json!({"revision": revision, "physical": true}));
    k.start_apiserver();
    want(&c, &["a", "c"], "a Namespace gone without a watch event (410 Gone, relist)");

    // The controller killed while Namespaces come and go: the restart catches up.
    c.kill();
    namespace(&k, "d");
    assert_eq!(k.request("DELETE", "/api/v1/namespaces/a", None).expect("delete").0, 200);
    let finalize = json!({"metadata": {"name": "a"}, "spec": {"finalizers": []}});
    assert_eq!(k.request("PUT", "/api/v1/namespaces/a/finalize", Some(&finalize)).expect("finalize").0, 200);
    let c = operated.start();
    want(&c, &["c", "d"], "the restart after SIGKILL catches up");
}

/// Two controllers on PostgreSQL, each running the operator; only the writer-lease holder
/// writes. The holder killed while the cluster changes: the survivor takes the lease, lists
/// everything again and leaves nothing stale.
#[test]
fn the_operator_moves_with_the_writer_lease() {
    let k = Cluster::start();
    let db = tokio::runtime::Runtime::new().expect("runtime").block_on(tessera_tests::pg::fresh_database());
    let lease = [("TESSERA_LEASE_RENEW_MS", "300"), ("TESSERA_LEASE_TTL_MS", "3000")];
    let operated = Operated::on(&k, db, &lease);
    let replica = |id: &str| operated.start_on(tessera_tests::free_port(), &[("TESSERA_REPLICA_ID", id)]);
    let mut replicas = [replica("one"), replica("two")];
    let has = |c: &tessera_tests::Controller, name: &str| c.get(&format!("/v1/tenants/{name}"))["origin"] == "kubernetes";
    assert_eq!(k.request("POST", "/api/v1/namespaces", Some(&json!({"metadata": {"name": "a"}}))).expect("ns").0, 201);
    wait_for("the tenant", || has(&replicas[0], "a"), String::new);
    let holder = replicas.iter().position(|r| r.get("/v1/leader")["thisReplicaHoldsIt"] == true).expect("a lease holder");
    replicas[holder].kill();
    let survivor = &replicas[1 - holder];
    assert_eq!(k.request("POST", "/api/v1/namespaces", Some(&json!({"metadata": {"name": "b"}}))).expect("ns").0, 201);
    assert_eq!(k.request("DELETE", "/api/v1/namespaces/a", None).expect("delete").0, 200);
    let finalize = json!({"metadata": {"name": "a"}, "spec": {"finalizers": []}});
    assert_eq!(k.request("PUT", "/api/v1/namespaces/a/finalize", Some(&finalize)).expect("finalize").0, 200);
    let started = std::time::Instant::now();
    wait_for(
        "the survivor takes over",
        || has(survivor, "b") && survivor.get("/v1/tenants/a")["error"]["code"] == "not_found",
        || survivor.get("/v1/tenants").to_string(),
    );
    println!("the survivor caught up {:.1} s after the holder was killed", started.elapsed().as_secs_f64());
    assert_eq!(survivor.get("/v1/leader")["thisReplicaHoldsIt"], true);
}

/// Tessera's CRDs as deploy/ has them.
fn tessera_crds() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/crds")
}

/// The topology as a TesseraTopology: the one named `default` becomes the store's topology (its
/// status names the revision); a document the parser refuses, or a change that would move
/// allocated addresses, leaves the topology as it was and says why in the status; another name
/// is ignored, and said so.
#[test]
fn the_topology_from_a_custom_resource() {
    let k = Cluster::start();
    k.install_crds(&tessera_crds());
    let operated = Operated::new(&k, &[]);
    let c = operated.start();
    let path = "/apis/tessera.io/v1/tesseratopologies";
    let object = |name: &str, spec: serde_json::Value| json!({"apiVersion": "tessera.io/v1", "kind": "TesseraTopology", "metadata": {"name": name}, "spec": spec});
    let two_racks = json!({"networks": [{"name": "pods", "cidr": "10.96.0.0/16"}],
        "groups": [{"name": "rack-1", "assignment": {"rack": "r1"}}, {"name": "rack-2", "assignment": {"rack": "r2"}, "groups": [{"name": "rack-2a", "assignment": {"row": "a"}}]}]});
    let (status, body) = k.request("POST", path, Some(&object("default", two_racks))).expect("create");
    assert_eq!(status, 201, "{body}");
    let accepted = |name: &str| {
        let (_, o) = k.request("GET", &format!("{path}/{name}"), None).expect("get");
        (
            o["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Accepted").cloned()),
            o["status"]["revision"].clone(),
        )
    };
    let groups = || c.get("/v1/topology").to_string();
    wait_for("the topology from the object", || groups().contains("rack-2a"), groups);
    wait_for("its status", || accepted("default").0.is_some_and(|c| c["status"] == "True"), || format!("{:?}", accepted("default")));
    let revision = accepted("default").1;
    assert!(revision.as_i64().is_some_and(|r| r >= 2), "the store's revision: {revision}");

    // Refused by the parser: the field is named, the topology stays.
    let bad = json!({"spec": {"networks": [{"name": "pods", "cidr": "10.96.0.0/33"}]}});
    assert_eq!(k.merge_patch(&format!("{path}/default"), &bad).0, 200);
    let refused = || accepted("default").0.filter(|c| c["status"] == "False");
    wait_for("the refusal in the status", || refused().is_some(), || format!("{:?}", accepted("default")));
    let message = refused().map(|c| c["message"].to_string()).unwrap_or_default();
    assert!(message.contains("networks[0].cidr"), "names the field: {message}");
    assert!(groups().contains("rack-2a"), "the topology stayed");

    // Another name: ignored, and said so.
    let (status, body) = k.request("POST", path, Some(&object("other", json!({"networks": []})))).expect("create");
    assert_eq!(status, 201, "{body}");
    wait_for(
        "the other object is ignored",
        || accepted("other").0.is_some_and(|c| c["reason"] == "Ignored"),
        || format!("{:?}", accepted("other")),
    );
}

//! The REST API driven in-process with `oneshot`, on both store backends: authentication and
//! tenant scoping, error shapes, ETag/If-Match, topology dry runs, and that rejected requests
//! store nothing.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use tessera_controller::api::{AppState, app};
use tessera_tests::api::{ADMIN, Api, TOPOLOGY, assert_error, seeded};
use tessera_tests::stores;
use tower::ServiceExt;

#[tokio::test]
async fn authentication_and_roles() {
    for (backend, store) in stores().await {
        let api = seeded(store).await;
        assert_error(&api.call(Method::GET, "/v1/hosts", None, None, &[]).await, StatusCode::UNAUTHORIZED, "unauthorized", None);
        assert_error(&api.call(Method::GET, "/v1/hosts", Some("wrong"), None, &[]).await, StatusCode::UNAUTHORIZED, "unauthorized", None);

        let read = api.token("read", None).await;
        assert_eq!(api.call(Method::GET, "/v1/hosts", Some(&read), None, &[]).await.status, StatusCode::OK, "{backend}");
        let r = api.call(Method::POST, "/v1/tenants", Some(&read), Some(json!({"name": "x"}).to_string()), &[]).await;
        assert_error(&r, StatusCode::FORBIDDEN, "forbidden", None);

        // Tokens are stored hashed: the secret appears nowhere in the listing.
        let list = api.admin(Method::GET, "/v1/tokens", None).await;
        assert!(!list.body.to_string().contains(&read), "{backend}");
        let r = api.admin(Method::POST, "/v1/tokens", Some(json!({"name": "x", "role": "tenant"}))).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("tenant"));
        let r = api.admin(Method::POST, "/v1/tokens", Some(json!({"name": "x", "role": "root"}))).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("role"));
    }
}

#[tokio::test]
async fn tenant_tokens_see_and_change_only_their_tenant() {
    for (backend, store) in stores().await {
        let api = seeded(store).await;
        let red = api.token("tenant", Some("red")).await;
        let ep = |id: &str, tenant: &str| Some(json!({"id": id, "tenant": tenant, "host": "h1"}).to_string());

        let r = api.call(Method::POST, "/v1/endpoints", Some(&red), ep("red/a", "red"), &[]).await;
        assert_eq!(r.status, StatusCode::CREATED, "{backend}: {}", r.body);
        let r = api.call(Method::POST, "/v1/endpoints", Some(&red), ep("blue/a", "blue"), &[]).await;
        assert_error(&r, StatusCode::FORBIDDEN, "forbidden", None);
        assert_eq!(
            api.admin(Method::POST, "/v1/endpoints", Some(json!({"id": "blue/b", "tenant": "blue", "host": "h2"}))).await.status,
            StatusCode::CREATED
        );

        // Reads: own tenant yes, other tenant no, infrastructure no.
        assert_eq!(api.call(Method::GET, "/v1/tenants/red", Some(&red), None, &[]).await.status, StatusCode::OK);
        assert_error(&api.call(Method::GET, "/v1/tenants/blue", Some(&red), None, &[]).await, StatusCode::FORBIDDEN, "forbidden", None);
        assert_error(
            &api.call(Method::GET, "/v1/tenants/blue/segments", Some(&red), None, &[]).await,
            StatusCode::FORBIDDEN,
            "forbidden",
            None,
        );
        assert_error(&api.call(Method::GET, "/v1/hosts", Some(&red), None, &[]).await, StatusCode::FORBIDDEN, "forbidden", None);
        assert_error(&api.call(Method::GET, "/v1/topology", Some(&red), None, &[]).await, StatusCode::FORBIDDEN, "forbidden", None);
        assert_error(
            &api.call(Method::GET, "/v1/endpoints?tenant=blue", Some(&red), None, &[]).await,
            StatusCode::FORBIDDEN,
            "forbidden",
            None,
        );
        let tenants = api.call(Method::GET, "/v1/tenants", Some(&red), None, &[]).await;
        assert_eq!(tenants.body.as_array().map(Vec::len), Some(1), "{backend}: {}", tenants.body);
        let eps = api.call(Method::GET, "/v1/endpoints", Some(&red), None, &[]).await;
        assert_eq!(eps.body.as_array().map(|a| a.iter().map(|e| e["id"].clone()).collect::<Vec<_>>()), Some(vec![json!("red/a")]));
        let blocks = api.call(Method::GET, "/v1/blocks", Some(&red), None, &[]).await;
        assert!(blocks.body.as_array().expect("blocks").iter().all(|b| b["tenant"] == "red"), "{backend}");
        // Another tenant's endpoint is invisible and cannot be deleted.
        assert_error(
            &api.call(Method::GET, "/v1/endpoints/blue%2Fb", Some(&red), None, &[]).await,
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        );
        assert_error(
            &api.call(Method::DELETE, "/v1/endpoints/blue%2Fb", Some(&red), None, &[]).await,
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        );
        assert_eq!(api.store.endpoints(Some("blue"), None).await.expect("endpoints").len(), 1, "{backend}");
        // Its own: deleted, and deleting again is harmless.
        assert_eq!(api.call(Method::DELETE, "/v1/endpoints/red%2Fa", Some(&red), None, &[]).await.status, StatusCode::NO_CONTENT);
        assert_eq!(api.call(Method::DELETE, "/v1/endpoints/red%2Fa", Some(&red), None, &[]).await.status, StatusCode::NO_CONTENT);
    }
}

#[tokio::test]
async fn bad_input_gets_field_named_errors_and_stores_nothing() {
    for (backend, store) in stores().await {
        let api = seeded(store).await;
        let cases: Vec<(Method, &str, String, StatusCode, &str, &str)> = vec![
            (Method::POST, "/v1/hosts", "{not json".into(), StatusCode::BAD_REQUEST, "bad_request", "body"),
            (
                Method::POST,
                "/v1/hosts",
                json!({"name": "h9", "ips": ["192.0.2.9", 7]}).to_string(),
                StatusCode::BAD_REQUEST,
                "bad_request",
                "ips[1]",
            ),
            (
                Method::POST,
                "/v1/hosts",
                json!({"name": "h9", "ips": ["nope"]}).to_string(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "ips[0]",
            ),
            (
                Method::POST,
                "/v1/hosts",
                json!({"name": "h9", "ips": ["192.0.2.9"], "colour": 1}).to_string(),
                StatusCode::BAD_REQUEST,
                "bad_request",
                "colour",
            ),
            (
                Method::POST,
                "/v1/hosts",
                json!({"name": "-x", "ips": ["192.0.2.9"]}).to_string(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "name",
            ),
            (Method::POST, "/v1/hosts", json!({"name": "h1", "ips": ["192.0.2.9"]}).to_string(), StatusCode::CONFLICT, "conflict", ""),
            (
                Method::POST,
                "/v1/tenants",
                json!({"name": "t", "labels": {"k": "bad value"}}).to_string(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "labels.k",
            ),
            (
                Method::POST,
                "/v1/endpoints",
                json!({"id": "e", "tenant": "nope", "host": "h1"}).to_string(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "tenant",
            ),
            (
                Method::POST,
                "/v1/endpoints",
                json!({"id": "e", "tenant": "red", "host": "h1", "segment": "x"}).to_string(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "segment",
            ),
            (
                Method::PUT,
                "/v1/topology",
                "networks: [{name: n, cidr: 10.0.0.1/16}]".into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "networks[0].cidr",
            ),
            (Method::PUT, "/v1/topology?format=xml", TOPOLOGY.into(), StatusCode::BAD_REQUEST, "bad_request", "query.format"),
            (Method::PUT, "/v1/topology?dryRun=maybe", TOPOLOGY.into(), StatusCode::BAD_REQUEST, "bad_request", "query.dryRun"),
            (Method::GET, "/v1/routes?budget=-1", String::new(), StatusCode::BAD_REQUEST, "bad_request", "query.budget"),
            (Method::GET, "/v1/routes?budget=0", String::new(), StatusCode::UNPROCESSABLE_ENTITY, "invalid", "query.budget"),
            (Method::GET, "/v1/hosts/nope", String::new(), StatusCode::NOT_FOUND, "not_found", ""),
            (Method::GET, "/v2/anything", String::new(), StatusCode::NOT_FOUND, "not_found", ""),
        ];
        let before = (
            api.store.hosts().await.expect("hosts"),
            api.store.tenants().await.expect("tenants"),
            api.store.topology().await.expect("t").revision,
        );
        for (method, path, body, status, code, field) in cases {
            let r = api.call(method.clone(), path, Some(ADMIN), Some(body.clone()), &[]).await;
            assert_error(&r, status, code, (!field.is_empty()).then_some(field));
            assert!(r.status.as_u16() < 500, "{backend}: {method} {path} {body}");
        }
        // A route budget the hosts cannot fit (needs at least one route) was reported, not a 500.
        let after = (
            api.store.hosts().await.expect("hosts"),
            api.store.tenants().await.expect("tenants"),
            api.store.topology().await.expect("t").revision,
        );
        assert_eq!(before, after, "{backend}: rejected requests changed nothing");
        assert!(api.store.endpoints(None, None).await.expect("endpoints").is_empty());
    }
}

#[tokio::test]
async fn etags_and_stale_writes() {
    for (backend, store) in stores().await {
        let api = seeded(store).await;
        let t = api.admin(Method::GET, "/v1/topology", None).await;
        let etag = t.etag.expect("etag");
        assert_eq!(etag, "\"1\"", "{backend}");
        let grown = TOPOLOGY.replace("{name: rack-2}", "{name: rack-2}, {name: rack-3}");
        // A stale If-Match is refused with 409 and nothing changes.
        let r = api.call(Method::PUT, "/v1/topology", Some(ADMIN), Some(grown.clone()), &[("if-match", "\"0\"")]).await;
        assert_error(&r, StatusCode::CONFLICT, "stale_revision", Some("If-Match"));
        let r = api.call(Method::PUT, "/v1/topology", Some(ADMIN), Some(grown.clone()), &[("if-match", "garbage")]).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", Some("If-Match"));
        let r = api.call(Method::PUT, "/v1/topology", Some(ADMIN), Some(grown.clone()), &[("if-match", &etag)]).await;
        assert_eq!(r.status, StatusCode::OK, "{backend}: {}", r.body);
        assert_eq!(r.etag.as_deref(), Some("\"2\""));

        assert_eq!(api.admin(Method::POST, "/v1/tenants/red/segments", Some(json!({"name": "web"}))).await.status, StatusCode::CREATED);
        let seg = api.admin(Method::GET, "/v1/tenants/red/segments/web", None).await;
        let r = api.call(Method::DELETE, "/v1/tenants/red/segments/web", Some(ADMIN), None, &[("if-match", "\"7\"")]).await;
        assert_error(&r, StatusCode::CONFLICT, "stale_revision", Some("If-Match"));
        let r = api
            .call(Method::DELETE, "/v1/tenants/red/segments/web", Some(ADMIN), None, &[("if-match", seg.etag.as_deref().expect("etag"))])
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{backend}");
    }
}

#[tokio::test]
async fn topology_dry_run_refusal_and_romana_files() {
    for (backend, store) in stores().await {
        let api = seeded(store).await;
        let r = api.admin(Method::POST, "/v1/endpoints", Some(json!({"id": "e1", "tenant": "red", "host": "h2"}))).await;
        assert_eq!(r.body["ips"][0], "10.40.128.0", "{backend}: {}", r.body);
        // A third rack re-carves rack-2 (10.40.128.0/17 → 10.40.64.0/18): the dry run shows the
        // refusal, the real PUT answers 409 with the plan and changes nothing.
        let grown = TOPOLOGY.replace("{name: rack-2}", "{name: rack-2}, {name: rack-3}");
        let r = api.call(Method::PUT, "/v1/topology?dryRun=true", Some(ADMIN), Some(grown.clone()), &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body["applied"], false);
        assert!(!r.body["plan"]["refusals"].as_array().expect("refusals").is_empty(), "{backend}: {}", r.body);
        let r = api.call(Method::PUT, "/v1/topology", Some(ADMIN), Some(grown), &[]).await;
        assert_error(&r, StatusCode::CONFLICT, "refused", None);
        assert!(r.body["plan"]["refusals"][0]["message"].as_str().expect("message").contains("would move"));
        assert_eq!(api.store.topology().await.expect("t").revision, 1, "{backend}");

        // Romana's documented multi-zone file, unchanged, on a fresh store.
        let romana = include_str!("../../deploy/examples/romana-multi-zone.json");
        let fresh = Api::new(tessera_tests::sqlite_store().await).await;
        let r = fresh.call(Method::PUT, "/v1/topology", Some(ADMIN), Some(romana.into()), &[("content-type", "application/json")]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let t = fresh.admin(Method::GET, "/v1/topology", None).await;
        let groups = t.body["groups"].as_array().expect("groups");
        let cidr = |path: &str| groups.iter().find(|g| g["path"] == path).map(|g| g["cidrs"]["romana-network"].clone());
        assert_eq!(cidr("zone-A/rack-9"), Some(json!("10.111.96.0/19")));
        assert_eq!(cidr("zone-B/rack-22"), Some(json!("10.111.192.0/18")));
    }
}

#[tokio::test]
async fn tenants_and_segments_show_aggregated_blocks_and_routes_plan() {
    for (backend, store) in stores().await {
        let api = seeded(store).await;
        for i in 0..20 {
            let host = if i % 2 == 0 { "h1" } else { "h2" };
            let r = api.admin(Method::POST, "/v1/endpoints", Some(json!({"id": format!("e{i}"), "tenant": "red", "host": host}))).await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        }
        let r = api.admin(Method::GET, "/v1/tenants/red/segments/default", None).await;
        assert_eq!(r.body["blocks"], json!(["10.40.0.0/28", "10.40.128.0/28"]), "{backend}: {}", r.body);
        assert_eq!(r.body["cidrs"], json!(["10.40.0.0/28", "10.40.128.0/28"]));
        let r = api.admin(Method::GET, "/v1/routes?budget=50", None).await;
        let dsts: Vec<Value> = r.body["fabricRoutes"].as_array().expect("routes").iter().map(|x| x["dst"].clone()).collect();
        assert_eq!(dsts, vec![json!("10.40.0.0/17"), json!("10.40.128.0/17")], "{backend}");
        let r = api.admin(Method::GET, "/v1/routes?budget=1", None).await;
        assert_eq!(r.body["fabricRoutes"][0]["dst"], "10.40.0.0/16");
        let t = api.admin(Method::GET, "/v1/topology", None).await;
        let rack1 = t.body["groups"].as_array().expect("groups").iter().find(|g| g["path"] == "rack-1").cloned().expect("rack-1");
        assert_eq!(rack1["usedAddresses"], 10);
        assert_eq!(rack1["hosts"], 1);
    }
}

#[tokio::test]
async fn openapi_health_and_metrics() {
    let (_, store) = stores().await.remove(0);
    let api = seeded(store).await;
    let doc = api.call(Method::GET, "/v1/openapi.json", None, None, &[]).await;
    assert_eq!(doc.status, StatusCode::OK);
    for path in ["/v1/topology", "/v1/hosts/{name}", "/v1/endpoints", "/v1/routes", "/v1/tenants/{tenant}/segments/{segment}"] {
        assert!(doc.body["paths"][path].is_object(), "OpenAPI lacks {path}");
    }
    assert!(doc.body["components"]["schemas"]["EndpointView"].is_object());
    assert_eq!(api.call(Method::GET, "/healthz", None, None, &[]).await.status, StatusCode::OK);
    assert_eq!(api.call(Method::GET, "/readyz", None, None, &[]).await.status, StatusCode::OK);
    let m = api.call(Method::GET, "/metrics", None, None, &[]).await;
    let text = m.body.as_str().expect("metrics text");
    assert!(text.contains("tessera_http_requests_total{method=\"POST\",route=\"/v1/hosts\",status=\"201\"} 2"), "{text}");
}

#[tokio::test]
async fn updates_are_conditional_and_labels_move_only_empty_hosts() {
    for (backend, store) in stores().await {
        let api = Api::new(store).await;
        let doc =
            "networks: [{name: pods, cidr: 10.50.0.0/16}]\ngroups: [{name: a, assignment: {zone: a}}, {name: b, assignment: {zone: b}}]\n";
        assert_eq!(api.call(Method::PUT, "/v1/topology", Some(ADMIN), Some(doc.into()), &[]).await.status, StatusCode::OK);
        let r = api.admin(Method::POST, "/v1/hosts", Some(json!({"name": "h1", "ips": ["192.0.2.1"], "labels": {"zone": "a"}}))).await;
        assert_eq!(r.body["group"], "a", "{backend}");
        let etag = r.etag.expect("etag");

        // Stale revision: 409, nothing changed.
        let body = json!({"ips": ["192.0.2.7"], "labels": {"zone": "b"}}).to_string();
        let r = api.call(Method::PUT, "/v1/hosts/h1", Some(ADMIN), Some(body.clone()), &[("if-match", "\"9\"")]).await;
        assert_error(&r, StatusCode::CONFLICT, "stale_revision", Some("If-Match"));
        assert_eq!(api.store.host("h1").await.expect("host").ips[0].to_string(), "192.0.2.1");
        // Current revision: the empty host moves to the group its labels now fit.
        let r = api.call(Method::PUT, "/v1/hosts/h1", Some(ADMIN), Some(body), &[("if-match", &etag)]).await;
        assert_eq!(r.status, StatusCode::OK, "{backend}: {}", r.body);
        assert_eq!(r.body["group"], "b");
        assert_eq!(r.etag.as_deref(), Some("\"2\""));

        // A host holding blocks cannot be relabelled out of its group.
        api.admin(Method::POST, "/v1/tenants", Some(json!({"name": "red"}))).await;
        api.admin(Method::POST, "/v1/endpoints", Some(json!({"id": "e", "tenant": "red", "host": "h1"}))).await;
        let r = api.admin(Method::PUT, "/v1/hosts/h1", Some(json!({"ips": ["192.0.2.7"], "labels": {"zone": "a"}}))).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("labels"));
        let r = api.admin(Method::PUT, "/v1/hosts/h1", Some(json!({"ips": ["192.0.2.7"], "labels": {"zone": "b", "extra": "x"}}))).await;
        assert_eq!(r.status, StatusCode::OK, "{backend}: labels that still fit are fine: {}", r.body);
        let r = api.admin(Method::PUT, "/v1/hosts/h1", Some(json!({"ips": []}))).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("ips"));

        let r = api.admin(Method::PUT, "/v1/tenants/red", Some(json!({"labels": {"team": "shop"}}))).await;
        assert_eq!(r.body["labels"]["team"], "shop", "{backend}");
        let r =
            api.call(Method::PUT, "/v1/tenants/red", Some(ADMIN), Some(json!({"labels": {}}).to_string()), &[("if-match", "\"1\"")]).await;
        assert_error(&r, StatusCode::CONFLICT, "stale_revision", Some("If-Match"));
        let r = api.admin(Method::PUT, "/v1/tenants/red/segments/default", Some(json!({"labels": {"tier": "web"}}))).await;
        assert_eq!(r.body["labels"]["tier"], "web");
        let r = api.admin(Method::PUT, "/v1/tenants/red/segments/nope", Some(json!({"labels": {}}))).await;
        assert_error(&r, StatusCode::NOT_FOUND, "not_found", None);
    }
}

#[tokio::test]
async fn policy_simulate_and_explain_over_http() {
    let (_, store) = stores().await.remove(0);
    let api = Api::new(store).await;
    let docs = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {app: a}}\nstatus: {podIP: 10.9.0.1}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: x}\nstatus: {podIP: 10.9.0.2}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: b, namespace: x}\nspec: {podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {app: a}}}], ports: [{port: 80}]}]}\n";
    let r = api
        .admin(
            Method::POST,
            "/v1/policy/simulate",
            Some(json!({"documents": docs, "ports": ["tcp/80", "tcp/81"], "externals": ["192.0.2.1"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let verdicts = r.body["verdicts"].as_array().expect("verdicts");
    assert_eq!(verdicts.len(), 12, "3 parties, 6 ordered pairs, 2 probes");
    let find = |from: &str, to: &str, port: u16| {
        verdicts.iter().find(|v| v["from"] == from && v["to"] == to && v["port"] == port).expect("verdict")["allowed"].clone()
    };
    assert_eq!(find("x/a", "x/b", 80), json!(true));
    assert_eq!(find("x/a", "x/b", 81), json!(false));
    assert_eq!(find("192.0.2.1", "x/a", 80), json!(false), "x/a is isolated too (podSelector {{}})");
    let r = api
        .admin(Method::POST, "/v1/policy/explain", Some(json!({"documents": docs, "from": "192.0.2.1", "to": "x/b", "port": "tcp/80"})))
        .await;
    assert_eq!(r.body["allowed"], false, "{}", r.body);
    assert_eq!(r.body["ingress"]["decision"]["by"], "isolated");
    let bad = docs.replace("port: 80", "port: 80, endPort: 8");
    let r = api.admin(Method::POST, "/v1/policy/simulate", Some(json!({"documents": bad}))).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("documents"));
    assert!(
        r.body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("NetworkPolicy x/b: spec.ingress[0].ports[0].endPort: must be >= port (80)"),
        "{}",
        r.body
    );
    let r = api.admin(Method::POST, "/v1/policy/simulate", Some(json!({"documents": docs, "ports": ["tcp/99999"]}))).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("ports[0]"));
    let r = api.admin(Method::POST, "/v1/policy/explain", Some(json!({"documents": docs, "from": "nope", "to": "x/b"}))).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("from"));
    assert_error(
        &api.call(Method::POST, "/v1/policy/simulate", None, Some("{}".into()), &[]).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        None,
    );
}

async fn node_token(api: &Api, node: &str) -> String {
    let r = api.admin(Method::POST, "/v1/tokens", Some(json!({"name": format!("agent {node}"), "role": "node", "node": node}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["token"].as_str().expect("token").to_string()
}

#[tokio::test]
async fn node_tokens_reach_only_their_own_node() {
    for (backend, store) in stores().await {
        let api = seeded(store).await;
        let h1 = node_token(&api, "h1").await;
        let r = api.call(Method::GET, "/v1/nodes/h1/state", Some(&h1), None, &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{backend}: {}", r.body);
        assert_eq!(r.body["node"], "h1");
        assert!(r.body["ruleset"]["skeleton"].as_str().is_some_and(|s| s.contains("table inet tessera")), "{}", r.body);
        for path in ["/v1/nodes/h2/state", "/v1/hosts", "/v1/endpoints", "/v1/policies", "/v1/nodes", "/v1/tokens"] {
            let r = api.call(Method::GET, path, Some(&h1), None, &[]).await;
            assert_error(&r, StatusCode::FORBIDDEN, "forbidden", None);
        }
        // The agent registers endpoints on its own node only.
        let mine = json!({"id": "cni/a/eth0", "tenant": "red", "host": "h1"}).to_string();
        assert_eq!(api.call(Method::POST, "/v1/endpoints", Some(&h1), Some(mine), &[]).await.status, StatusCode::CREATED);
        let theirs = json!({"id": "cni/b/eth0", "tenant": "red", "host": "h2"}).to_string();
        assert_error(
            &api.call(Method::POST, "/v1/endpoints", Some(&h1), Some(theirs), &[]).await,
            StatusCode::FORBIDDEN,
            "forbidden",
            None,
        );
        assert_eq!(api.call(Method::DELETE, "/v1/endpoints/cni/a/eth0", Some(&h1), None, &[]).await.status, StatusCode::NO_CONTENT);

        // Acks: never for a generation not yet published; the status shows what was applied.
        let state = api.call(Method::GET, "/v1/nodes/h1/state", Some(&h1), None, &[]).await.body;
        let generation = state["generation"].as_u64().expect("generation");
        let ack = |g: u64, error: Option<&str>| json!({"generation": g, "digest": state["digest"], "error": error}).to_string();
        let r = api.call(Method::POST, "/v1/nodes/h1/ack", Some(&h1), Some(ack(generation + 5, None)), &[]).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("generation"));
        let r = api.call(Method::POST, "/v1/nodes/h2/ack", Some(&h1), Some(ack(1, None)), &[]).await;
        assert_error(&r, StatusCode::FORBIDDEN, "forbidden", None);
        let r = api.call(Method::POST, "/v1/nodes/h1/ack", Some(&h1), Some(ack(generation, Some("nft: boom"))), &[]).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        let nodes = api.admin(Method::GET, "/v1/nodes", None).await.body;
        let h1_status = nodes.as_array().expect("list").iter().find(|n| n["node"] == "h1").expect("h1").clone();
        assert_eq!(h1_status["lastError"], "nft: boom", "{nodes}");
        assert_eq!(h1_status["lag"], generation, "nothing applied yet: {nodes}");
        api.call(Method::POST, "/v1/nodes/h1/ack", Some(&h1), Some(ack(generation, None)), &[]).await;
        let nodes = api.admin(Method::GET, "/v1/nodes", None).await.body;
        let h1_status = nodes.as_array().expect("list").iter().find(|n| n["node"] == "h1").expect("h1").clone();
        assert_eq!((h1_status["appliedGeneration"].as_u64(), h1_status["lag"].as_u64()), (Some(generation), Some(0)), "{nodes}");
        assert!(h1_status["lastError"].is_null());
        let r = api.admin(Method::POST, "/v1/tokens", Some(json!({"name": "x", "role": "node", "node": "nope"}))).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("node"));

        // Resuming a watch at the current generation counts as applied for the node's agent
        // only: an operator's watch says nothing about what h2 enforces.
        let h2 = node_token(&api, "h2").await;
        let g2 = api.admin(Method::GET, "/v1/nodes/h2/state", None).await.body["generation"].as_u64().expect("generation");
        let applied_h2 =
            |nodes: Value| nodes.as_array().expect("list").iter().find(|n| n["node"] == "h2").expect("h2")["appliedGeneration"].clone();
        for (token, expected) in [(ADMIN, Value::Null), (h2.as_str(), json!(g2))] {
            let watch = Request::builder()
                .uri(format!("/v1/nodes/h2/state?watch=true&since={g2}"))
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .expect("request");
            let response = api.router.clone().oneshot(watch).await.expect("response");
            assert_eq!(response.status(), StatusCode::OK);
            drop(response);
            assert_eq!(applied_h2(api.admin(Method::GET, "/v1/nodes", None).await.body), expected, "{backend}");
        }
    }
}

const STORED_POLICIES: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: red}
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: tessera.io/v1
kind: TesseraClusterPolicy
metadata: {name: admin-dns}
spec:
  tier: admin
  priority: 10
  subject: {namespaceSelector: {}}
  egress:
  - action: allow
    to: [{any: true}]
    ports: [{protocol: udp, port: 53}]
";

#[tokio::test]
async fn stored_policies_are_validated_compiled_and_distributed() {
    for (backend, store) in stores().await {
        let api = seeded(store.clone()).await;
        let ep = json!({"id": "web-1", "tenant": "red", "host": "h1", "labels": {"app": "web"}});
        assert_eq!(api.admin(Method::POST, "/v1/endpoints", Some(ep)).await.status, StatusCode::CREATED);
        let before = api.admin(Method::GET, "/v1/nodes/h1/state", None).await.body;
        let h2_before = api.admin(Method::GET, "/v1/nodes/h2/state", None).await.body;

        let yaml = [("content-type", "application/yaml")];
        let r = api.call(Method::POST, "/v1/policies", Some(ADMIN), Some(STORED_POLICIES.into()), &yaml).await;
        assert_eq!(r.status, StatusCode::OK, "{backend}: {}", r.body);
        assert_eq!(r.body.as_array().map(Vec::len), Some(2));
        let after = api.admin(Method::GET, "/v1/nodes/h1/state", None).await.body;
        assert_eq!(after["generation"].as_u64(), before["generation"].as_u64().map(|g| g + 1), "h1 holds a selected endpoint");
        assert_ne!(after["ruleset"], before["ruleset"]);
        let h2_after = api.admin(Method::GET, "/v1/nodes/h2/state", None).await.body;
        assert_eq!(h2_after["generation"], h2_before["generation"], "h2 has no endpoint: its state did not change");
        // No agent has applied anything yet: enforced on no node, of every node.
        let nodes = api.admin(Method::GET, "/v1/nodes", None).await.body.as_array().map(Vec::len).unwrap_or_default();
        assert!(nodes >= 2, "{backend}");
        for p in api.admin(Method::GET, "/v1/policies", None).await.body.as_array().expect("policies") {
            assert_eq!(p["nodes"], json!({"applied": 0, "total": nodes}), "{backend}: {p}");
        }

        // Invalid documents name the field and store nothing.
        let bad = STORED_POLICIES.replace("policyTypes: [Ingress]", "policyTypes: [Sideways]");
        let r = api.call(Method::POST, "/v1/policies", Some(ADMIN), Some(bad), &yaml).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("spec.policyTypes[0]"));
        assert!(r.body["error"]["message"].as_str().is_some_and(|m| m.starts_with("document 1: NetworkPolicy red/deny-all")), "{}", r.body);
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: red}\n";
        assert_error(
            &api.call(Method::POST, "/v1/policies", Some(ADMIN), Some(pod.into()), &yaml).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            Some("kind"),
        );
        let unnamespaced = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {podSelector: {}}\n";
        let r = api.call(Method::POST, "/v1/policies", Some(ADMIN), Some(unnamespaced.into()), &yaml).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("metadata.namespace"));
        assert_eq!(api.admin(Method::GET, "/v1/policies", None).await.body.as_array().map(Vec::len), Some(2));

        // Tenant tokens: their own namespace only, never cluster-scoped policies.
        let blue = api.token("tenant", Some("blue")).await;
        let r = api.call(Method::POST, "/v1/policies", Some(&blue), Some(STORED_POLICIES.into()), &yaml).await;
        assert_error(&r, StatusCode::FORBIDDEN, "forbidden", None);
        assert_eq!(api.call(Method::GET, "/v1/policies", Some(&blue), None, &[]).await.body.as_array().map(Vec::len), Some(0));
        let r = api.call(Method::GET, "/v1/policies/NetworkPolicy/red/deny-all", Some(&blue), None, &[]).await;
        assert_error(&r, StatusCode::NOT_FOUND, "not_found", None);

        // Deleting distributes too; generations survive a controller restart.
        let r = api.admin(Method::DELETE, "/v1/policies/NetworkPolicy/red/deny-all", None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        let deleted = api.admin(Method::GET, "/v1/nodes/h1/state", None).await.body;
        assert!(deleted["generation"].as_u64() > after["generation"].as_u64());
        let restarted = Api { router: app(AppState::new(store.clone()).await.expect("restart")), store: store.clone() };
        let again = restarted.admin(Method::GET, "/v1/nodes/h1/state", None).await.body;
        assert_eq!(again["generation"], deleted["generation"], "{backend}: generation after restart");
        assert_eq!(again["digest"], deleted["digest"]);
    }
}

#[tokio::test]
async fn relabelling_an_endpoint_recompiles_its_node() {
    for (backend, store) in stores().await {
        let api = seeded(store).await;
        let ep = json!({"id": "red/web-1", "tenant": "red", "host": "h1", "labels": {"app": "web"}});
        assert_eq!(api.admin(Method::POST, "/v1/endpoints", Some(ep)).await.status, StatusCode::CREATED);
        let only_web = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: red}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Ingress]\n";
        let r = api.call(Method::POST, "/v1/policies", Some(ADMIN), Some(only_web.into()), &[("content-type", "application/yaml")]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let before = api.admin(Method::GET, "/v1/nodes/h1/state", None).await.body;

        let r = api
            .call(
                Method::PUT,
                "/v1/endpoints/red/web-1",
                Some(ADMIN),
                Some(json!({"labels": {"app": "api"}}).to_string()),
                &[("if-match", "\"9\"")],
            )
            .await;
        assert_error(&r, StatusCode::CONFLICT, "stale_revision", Some("If-Match"));
        let r = api.admin(Method::PUT, "/v1/endpoints/red/web-1", Some(json!({"labels": {"app": "-bad-"}}))).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", None);
        let blue = api.token("tenant", Some("blue")).await;
        let r = api.call(Method::PUT, "/v1/endpoints/red/web-1", Some(&blue), Some(json!({"labels": {}}).to_string()), &[]).await;
        assert_error(&r, StatusCode::NOT_FOUND, "not_found", None);

        let r = api.admin(Method::PUT, "/v1/endpoints/red/web-1", Some(json!({"labels": {"app": "api"}}))).await;
        assert_eq!(r.status, StatusCode::OK, "{backend}: {}", r.body);
        assert_eq!(r.body["labels"]["app"], "api");
        let after = api.admin(Method::GET, "/v1/nodes/h1/state", None).await.body;
        assert_eq!(
            after["generation"].as_u64(),
            before["generation"].as_u64().map(|g| g + 1),
            "{backend}: no longer selected, so no longer isolated"
        );
        assert_ne!(after["ruleset"]["sets"], before["ruleset"]["sets"]);
    }
}

#[tokio::test]
async fn relabelling_a_tenant_recompiles_the_nodes_whose_policies_look_at_its_labels() {
    for (backend, store) in stores().await {
        let api = seeded(store.clone()).await;
        let web = api.admin(Method::POST, "/v1/endpoints", Some(json!({"id": "red/web-1", "tenant": "red", "host": "h1"}))).await;
        assert_eq!(web.status, StatusCode::CREATED, "{}", web.body);
        let web_ip = web.body["ips"][0].as_str().expect("an address").to_string();
        let db = json!({"id": "blue/db-1", "tenant": "blue", "host": "h2", "labels": {"app": "db"}});
        assert_eq!(api.admin(Method::POST, "/v1/endpoints", Some(db)).await.status, StatusCode::CREATED);
        let from_shop = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db, namespace: blue}\nspec:\n  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {team: shop}}}]}]\n";
        let r = api.call(Method::POST, "/v1/policies", Some(ADMIN), Some(from_shop.into()), &[("content-type", "application/yaml")]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let state = |node: &'static str| {
            let api = &api;
            async move { api.admin(Method::GET, &format!("/v1/nodes/{node}/state"), None).await.body }
        };
        let admits_web = |s: &Value| s["ruleset"]["sets"].to_string().contains(&web_ip);
        let (h1, h2) = (state("h1").await, state("h2").await);
        assert!(!admits_web(&h2), "{backend}: red is not labelled team=shop yet");

        let r = api.admin(Method::PUT, "/v1/tenants/red", Some(json!({"labels": {"team": "shop"}}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let (h1_shop, h2_shop) = (state("h1").await, state("h2").await);
        assert!(admits_web(&h2_shop), "{backend}: db admits red's pod once red is team=shop: {h2_shop}");
        assert_eq!(h2_shop["generation"].as_u64(), h2["generation"].as_u64().map(|g| g + 1));
        assert_eq!(h1_shop["generation"], h1["generation"], "{backend}: nothing on h1 looks at red's labels");
        // What a controller compiling everything from the store gives: the same state.
        let restarted = Api { router: app(AppState::new(store.clone()).await.expect("restart")), store: store.clone() };
        let full = restarted.admin(Method::GET, "/v1/nodes/h2/state", None).await.body;
        assert_eq!(full["digest"], h2_shop["digest"], "{backend}: incremental and full compiles agree");

        let r = api.admin(Method::PUT, "/v1/tenants/red", Some(json!({"labels": {}}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let h2_again = state("h2").await;
        assert!(!admits_web(&h2_again), "{backend}: the label is gone, so is red's pod from db's allow-list");
        assert_eq!(h2_again["digest"], h2["digest"]);
    }
}

/// A host's EC2 target (where VPC routes point when it is its group's gateway): an instance or
/// a network interface id, checked with the field named; replaced or cleared by a PUT.
#[tokio::test]
async fn hosts_take_an_ec2_instance_or_interface_as_their_cloud_target() {
    for (backend, store) in stores().await {
        let api = seeded(store).await;
        let r = api
            .admin(Method::POST, "/v1/hosts", Some(json!({"name": "h3", "ips": ["192.0.2.3"], "cloudTarget": "i-0123456789abcdef0"})))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{backend}: {}", r.body);
        assert_eq!(r.body["cloudTarget"], "i-0123456789abcdef0");
        for bad in ["igw-12345678", "i-123", "ENI-12345678"] {
            let r = api.admin(Method::POST, "/v1/hosts", Some(json!({"name": "h4", "ips": ["192.0.2.4"], "cloudTarget": bad}))).await;
            assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("cloudTarget"));
        }
        assert_eq!(api.admin(Method::GET, "/v1/hosts/h4", None).await.status, StatusCode::NOT_FOUND, "a refused host was stored");
        let r = api.admin(Method::PUT, "/v1/hosts/h3", Some(json!({"ips": ["192.0.2.3"], "cloudTarget": "eni-12345678"}))).await;
        assert_eq!(r.body["cloudTarget"], "eni-12345678", "{}", r.body);
        let r = api.admin(Method::PUT, "/v1/hosts/h3", Some(json!({"ips": ["192.0.2.3"], "cloudTarget": "nat-12345678"}))).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("cloudTarget"));
        assert_eq!(
            api.admin(Method::GET, "/v1/hosts/h3", None).await.body["cloudTarget"],
            "eni-12345678",
            "a refused update changed the host"
        );
        let r = api.admin(Method::PUT, "/v1/hosts/h3", Some(json!({"ips": ["192.0.2.3"]}))).await;
        assert_eq!(r.body.get("cloudTarget"), None, "{}", r.body);
    }
}

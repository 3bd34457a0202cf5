//! Regression tests of the hardening review (issue 9), on both store backends: valid input
//! accepted, hostile input refused before it costs anything, nothing leaked across tenants,
//! tokens that die with their owner, and HTTP as the RFCs and the OpenAPI document say.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tessera_controller::store::Store;
use tessera_tests::api::{ADMIN, Api, assert_error, seeded};
use tessera_tests::stores;
use tower::ServiceExt;

const YAML: (&str, &str) = ("content-type", "application/yaml");

#[tokio::test]
async fn overlapping_networks_are_refused_and_a_stored_overlap_stops_the_start() {
    for (backend, url) in [("sqlite", tessera_tests::sqlite_url()), ("postgres", tessera_tests::pg::fresh_database().await)] {
        let store = Store::connect(&url).await.expect("store");
        let api = Api::new(store.clone()).await;
        for doc in [
            "networks: [{name: a, cidr: 10.0.0.0/16}, {name: b, cidr: 10.0.128.0/17}]\ntopologies: [{networks: [a], groups: [{name: r}]}, {networks: [b], groups: [{name: s}]}]\n",
            "networks: [{name: a, cidr: 'fd00::/48'}, {name: b, cidr: 'fd00::/64'}]\ngroups: [{name: r}]\n",
        ] {
            let r = api.call(Method::PUT, "/v1/topology", Some(ADMIN), Some(doc.into()), &[YAML]).await;
            assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("networks[1].cidr"));
            assert!(r.body.to_string().contains("overlaps network `a`"), "{backend}: {}", r.body);
        }
        // Different families never overlap.
        let ok = "networks: [{name: a, cidr: 10.0.0.0/16}, {name: b, cidr: 'fd00::/48'}]\ngroups: [{name: r}]\n";
        let r = api.call(Method::PUT, "/v1/topology", Some(ADMIN), Some(ok.into()), &[YAML]).await;
        assert_eq!(r.status, StatusCode::OK, "{backend}: {}", r.body);

        // A store written before the check: the controller refuses to start on it, naming the field.
        let bad = json!({"networks": [
            {"name": "a", "cidr": "10.0.0.0/16", "blockPrefix": 28},
            {"name": "b", "cidr": "10.0.0.0/24", "blockPrefix": 28}],
            "topologies": [{"networks": ["a", "b"], "groups": [{"name": "r"}]}]});
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await.expect("raw pool");
        sqlx::query("UPDATE topology SET spec = $1, revision = revision + 1").bind(bad.to_string()).execute(&pool).await.expect("overlap");
        let reopened = Store::connect(&url).await.expect("store");
        let err = tessera_controller::api::AppState::new(reopened).await.expect_err("overlap in the store");
        assert!(err.to_string().contains("networks[1].cidr"), "{backend}: {err}");
    }
}

#[tokio::test]
async fn addresses_hosts_and_default_segments_are_checked() {
    for (backend, store) in stores().await {
        let api = seeded(store).await;
        // The network's own address is never handed out: the first endpoint gets .1.
        let r = api.admin(Method::POST, "/v1/endpoints", Some(json!({"id": "red/a", "tenant": "red", "host": "h1"}))).await;
        assert_eq!(r.body["ips"], json!(["10.40.0.1"]), "{backend}: {}", r.body);

        for (ip, what) in [
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.5", "multicast"),
            ("127.0.0.1", "loopback"),
        ] {
            let r = api.admin(Method::POST, "/v1/hosts", Some(json!({"name": "h9", "ips": [ip]}))).await;
            assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("ips[0]"));
            assert!(r.body.to_string().contains(what), "{backend} {ip}: {}", r.body);
        }
        let r = api.admin(Method::POST, "/v1/hosts", Some(json!({"name": "h9", "ips": ["192.0.2.1"]}))).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("ips[0]"));
        assert!(r.body.to_string().contains("host `h1`"), "{}", r.body);
        let r = api.admin(Method::PUT, "/v1/hosts/h2", Some(json!({"ips": ["192.0.2.1"]}))).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("ips[0]"));
        assert_eq!(api.admin(Method::GET, "/v1/hosts/h2", None).await.body["ips"], json!(["192.0.2.2"]), "nothing stored");

        let r = api.admin(Method::DELETE, "/v1/tenants/blue/segments/default", None).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("segment"));
        assert_eq!(api.admin(Method::GET, "/v1/tenants/blue/segments/default", None).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn tokens_die_with_their_owner_and_the_last_admin_stays() {
    for (backend, store) in stores().await {
        let api = seeded(store).await;
        let tenant = api.token("tenant", Some("blue")).await;
        assert_eq!(api.call(Method::GET, "/v1/tenants/blue", Some(&tenant), None, &[]).await.status, StatusCode::OK);
        assert_eq!(api.admin(Method::DELETE, "/v1/tenants/blue", None).await.status, StatusCode::NO_CONTENT);
        assert_eq!(api.admin(Method::POST, "/v1/tenants", Some(json!({"name": "blue"}))).await.status, StatusCode::CREATED);
        let r = api.call(Method::GET, "/v1/tenants/blue", Some(&tenant), None, &[]).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized", None);

        let r = api.admin(Method::POST, "/v1/tokens", Some(json!({"name": "agent", "role": "node", "node": "h2"}))).await;
        let node = r.body["token"].as_str().expect("node token").to_string();
        assert_eq!(api.admin(Method::DELETE, "/v1/hosts/h2", None).await.status, StatusCode::NO_CONTENT);
        assert_eq!(
            api.admin(Method::POST, "/v1/hosts", Some(json!({"name": "h2", "ips": ["192.0.2.2"]}))).await.status,
            StatusCode::CREATED
        );
        let r = api.call(Method::GET, "/v1/nodes/h2/state", Some(&node), None, &[]).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized", None);

        // The bootstrap token is the only admin: it cannot be deleted; once another exists, it can.
        let list = api.admin(Method::GET, "/v1/tokens", None).await;
        let admin_id = list.body.as_array().expect("tokens").iter().find(|t| t["role"] == "admin").expect("admin")["id"].clone();
        let path = format!("/v1/tokens/{}", admin_id.as_str().expect("id"));
        assert_error(&api.admin(Method::DELETE, &path, None).await, StatusCode::CONFLICT, "conflict", None);
        assert_eq!(api.admin(Method::GET, "/v1/hosts", None).await.status, StatusCode::OK, "{backend}: still an admin");
        api.token("admin", None).await;
        assert_eq!(api.admin(Method::DELETE, &path, None).await.status, StatusCode::NO_CONTENT, "{backend}");
    }
}

#[tokio::test]
async fn a_conflict_tells_where_an_endpoint_lives_only_to_who_may_read_it() {
    for (backend, store) in stores().await {
        let api = seeded(store).await;
        let r = api.admin(Method::POST, "/v1/endpoints", Some(json!({"id": "b/ep2", "tenant": "red", "host": "h2"}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let blue = api.token("tenant", Some("blue")).await;
        let body = json!({"id": "b/ep2", "tenant": "blue", "host": "h1"}).to_string();
        let r = api.call(Method::POST, "/v1/endpoints", Some(&blue), Some(body.clone()), &[]).await;
        assert_error(&r, StatusCode::CONFLICT, "conflict", Some("id"));
        let text = r.body.to_string();
        assert!(!text.contains("h2") && !text.contains("red"), "{backend}: leaks {text}");
        let r = api.call(Method::POST, "/v1/endpoints", Some(ADMIN), Some(body), &[]).await;
        assert!(r.body.to_string().contains("host `h2` in red/default"), "{backend}: {}", r.body);
    }
}

#[tokio::test]
async fn bodies_are_checked_before_they_are_read_or_stored() {
    for (backend, store) in stores().await {
        let api = seeded(store).await;
        let before = api.admin(Method::GET, "/v1/topology", None).await;
        for (body, headers, status, code, field) in [
            (None, vec![YAML], StatusCode::BAD_REQUEST, "bad_request", "body"),
            (Some("  \n"), vec![YAML], StatusCode::BAD_REQUEST, "bad_request", "body"),
            (
                Some("networks: []"),
                vec![("content-type", "application/x-www-form-urlencoded")],
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Type",
            ),
        ] {
            let r = api.call(Method::PUT, "/v1/topology", Some(ADMIN), body.map(String::from), &headers).await;
            assert_error(&r, status, code, Some(field));
        }
        let after = api.admin(Method::GET, "/v1/topology", None).await;
        assert_eq!(before.body, after.body, "{backend}: the topology is untouched");

        // Too large: 413 with a JSON body, on every route that reads one.
        let big = "x".repeat(3 * 1024 * 1024);
        for (method, path) in [(Method::POST, "/v1/policies"), (Method::PUT, "/v1/topology"), (Method::POST, "/v1/hosts")] {
            let r = api.call(method, path, Some(ADMIN), Some(big.clone()), &[]).await;
            assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "too_large", Some("body"));
        }
    }
}

/// 200 KB of nesting: serde_yaml took tens of seconds on such bodies, holding the runtime.
fn hostile_yaml() -> String {
    format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))
}

#[tokio::test]
async fn hostile_yaml_is_refused_fast_and_unprivileged_tokens_never_get_it_parsed() {
    let (_, store) = stores().await.remove(0);
    let api = seeded(store).await;
    let read = api.token("read", None).await;
    let node = api.admin(Method::POST, "/v1/tokens", Some(json!({"name": "n", "role": "node", "node": "h1"}))).await.body["token"]
        .as_str()
        .expect("token")
        .to_string();
    let started = Instant::now();
    for token in [&read, &node] {
        let r = api.call(Method::POST, "/v1/policies", Some(token), Some(hostile_yaml()), &[YAML]).await;
        assert_error(&r, StatusCode::FORBIDDEN, "forbidden", None);
    }
    let sim = json!({"documents": hostile_yaml()}).to_string();
    let r = api.call(Method::POST, "/v1/policy/simulate", Some(&node), Some(sim.clone()), &[]).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden", None);
    // Admins' hostile bodies are parsed, with bounds: a clear error, not a stall.
    let r = api.call(Method::POST, "/v1/policies", Some(ADMIN), Some(hostile_yaml()), &[YAML]).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", Some("body"));
    assert!(r.body.to_string().contains("recursion limit"), "{}", r.body);
    let r = api.call(Method::POST, "/v1/policy/simulate", Some(&read), Some(sim), &[]).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some("documents"));
    // Generous on a shared machine: serde_yaml needed 20 s and more for one such body.
    assert!(started.elapsed() < Duration::from_secs(10), "hostile bodies took {:?}", started.elapsed());
}

#[tokio::test]
async fn http_conformance() {
    let (_, store) = stores().await.remove(0);
    let api = seeded(store).await;
    // 405 is JSON and says what is allowed.
    let r = api.admin(Method::PATCH, "/v1/hosts", None).await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None);
    // The Bearer scheme is case-insensitive; a 401 tells how to authenticate.
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let req = Request::get("/v1/hosts").header("authorization", format!("{scheme} {ADMIN}")).body(Body::empty()).expect("req");
        assert_eq!(api.router.clone().oneshot(req).await.expect("resp").status(), StatusCode::OK, "{scheme}");
    }
    let req = Request::get("/v1/hosts").body(Body::empty()).expect("req");
    let resp = api.router.clone().oneshot(req).await.expect("resp");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer realm=\"tessera\""));
    // `If-Match: *` is an unconditional write.
    let r =
        api.call(Method::PUT, "/v1/tenants/red", Some(ADMIN), Some(json!({"labels": {"a": "b"}}).to_string()), &[("if-match", "*")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // A repeated query parameter names itself.
    let r = api.admin(Method::GET, "/v1/endpoints?tenant=red&tenant=blue", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request", Some("query.tenant"));
    // JSON routes want JSON.
    let r = api.call(Method::POST, "/v1/tenants", Some(ADMIN), Some("name: x".into()), &[YAML]).await;
    assert_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", Some("Content-Type"));
    // Acks name the state they applied: a wrong digest or an unknown field is refused.
    let state = api.admin(Method::GET, "/v1/nodes/h1/state", None).await.body;
    let generation = state["generation"].clone();
    let ack = |body: Value| api.call(Method::POST, "/v1/nodes/h1/ack", Some(ADMIN), Some(body.to_string()), &[]);
    assert_error(
        &ack(json!({"generation": generation, "digest": "nope"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
        Some("digest"),
    );
    assert_error(
        &ack(json!({"generation": generation, "digest": state["digest"], "colour": 1})).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
        None,
    );
    assert_eq!(ack(json!({"generation": generation, "digest": state["digest"]})).await.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn simulate_over_http_streams_every_pair_and_is_bounded() {
    let (_, store) = stores().await.remove(0);
    let api = seeded(store).await;
    let mut docs = String::new();
    for i in 0..3 {
        docs.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: shop}}\nstatus: {{podIP: 10.0.0.{}}}\n",
            i + 1
        ));
    }
    docs.push_str("---\napiVersion: v1\nkind: Pod\nmetadata: {name: six, namespace: shop}\nstatus: {podIP: 'fd00::6'}\n");
    let body = json!({"documents": docs, "ports": ["tcp/80", "udp/53"], "externals": ["192.0.2.1", "192.0.2.2"]}).to_string();
    let r = api.call(Method::POST, "/v1/policy/simulate", Some(ADMIN), Some(body), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let verdicts = r.body["verdicts"].as_array().expect("verdicts");
    assert_eq!(verdicts.len(), 6 * 5 * 2, "every ordered pair of 6 parties, per probe");
    let ext = verdicts.iter().find(|v| v["from"] == "192.0.2.1" && v["to"] == "192.0.2.2").expect("two externals");
    assert_eq!(ext["allowed"], true);
    let mixed = verdicts.iter().find(|v| v["from"] == "shop/p0" && v["to"] == "shop/six").expect("no common family");
    assert_eq!(mixed["allowed"], false);
    assert!(mixed["reason"].as_str().expect("reason").contains("no address family in common"), "{mixed}");

    // Over the limit: refused before any work, with the way out.
    let many: String = (0..1500)
        .map(|i| {
            format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: shop}}\nstatus: {{podIP: 10.1.{}.{}}}\n",
                i / 250,
                i % 250 + 1
            )
        })
        .collect();
    let body = json!({"documents": many}).to_string();
    let req = Request::post("/v1/policy/simulate").header("authorization", format!("Bearer {ADMIN}")).body(Body::from(body)).expect("req");
    let resp = api.router.clone().oneshot(req).await.expect("resp");
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    assert!(String::from_utf8_lossy(&bytes).contains("tessera policy simulate"), "{}", String::from_utf8_lossy(&bytes));
}

//! The fabric through the REST API, in-process on both store backends: a topology's `bgp`
//! section reaches each node's state (and bad sections are refused with the field named,
//! storing nothing), VIP definitions are checked, agents report their sessions, `GET /v1/bgp`
//! compares desired with announced, and a drained host announces nothing.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_tests::api::{ADMIN, Api, assert_error};
use tessera_tests::stores;

const TOPOLOGY: &str = "networks: [{name: pods, cidr: 10.40.0.0/16}]
groups:
  - name: rack-1
    bgp: {localAs: 64512, communities: ['64512:7'], peers: [{address: 192.0.2.254, as: 65001}]}
  - name: rack-2
";

async fn put_topology(api: &Api, text: &str) -> tessera_tests::api::Reply {
    api.call(Method::PUT, "/v1/topology", Some(ADMIN), Some(text.into()), &[("content-type", "application/yaml")]).await
}

async fn node_token(api: &Api, node: &str) -> String {
    let r = api.admin(Method::POST, "/v1/tokens", Some(json!({"name": node, "role": "node", "node": node}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    r.body["token"].as_str().expect("token").to_string()
}

async fn speaker(api: &Api, node: &str) -> Value {
    api.admin(Method::GET, &format!("/v1/nodes/{node}/state"), None).await.body["bgp"].clone()
}

#[tokio::test]
async fn topology_bgp_reaches_node_states_and_bad_sections_store_nothing() {
    for (backend, store) in stores().await {
        let api = Api::new(store).await;
        assert_eq!(put_topology(&api, TOPOLOGY).await.status, StatusCode::OK, "{backend}");
        let revision = api.admin(Method::GET, "/v1/topology", None).await.body["revision"].clone();
        for (name, ip) in [("h1", "192.0.2.1"), ("h2", "192.0.2.2")] {
            assert_eq!(api.admin(Method::POST, "/v1/hosts", Some(json!({"name": name, "ips": [ip]}))).await.status, StatusCode::CREATED);
        }
        let s = speaker(&api, "h1").await;
        assert_eq!(s["localAs"], 64512, "{backend}: {s}");
        assert_eq!(s["prefixes"], json!(["10.40.0.0/17"]), "{s}");
        assert_eq!(s["nextHopV4"], "192.0.2.1", "{s}");
        assert_eq!(s["routerId"], "192.0.2.1", "{s}");
        assert_eq!(s["communities"], json!([(64512u32 << 16) | 7]), "{s}");
        assert_eq!(s["peers"], json!([{"address": "192.0.2.254", "as": 65001, "port": 179}]), "{s}");
        assert_eq!((s["holdTime"].clone(), s["gracefulRestart"].clone()), (json!(90), json!(120)), "{s}");
        assert_eq!(speaker(&api, "h2").await, Value::Null, "rack-2 has no bgp section");

        let cases = [
            (TOPOLOGY.replace("localAs: 64512, ", ""), "topologies[0].groups[0].bgp.localAs"),
            (TOPOLOGY.replace("as: 65001", "as: 0"), "topologies[0].groups[0].bgp.peers[0].as"),
            (TOPOLOGY.replace("'64512:7'", "'64512:70000'"), "topologies[0].groups[0].bgp.communities[0]"),
            (TOPOLOGY.replace("localAs: 64512,", "localAs: 64512, mode: speaker,"), "topologies[0].groups[0].bgp.mode"),
            (TOPOLOGY.replace("localAs: 64512,", "localAs: 64512, holdTime: 1,"), "topologies[0].groups[0].bgp.holdTime"),
            (TOPOLOGY.replace("localAs: 64512,", "localAs: 64512, color: blue,"), "groups[0].bgp.color"),
        ];
        for (text, field) in cases {
            let r = put_topology(&api, &text).await;
            assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", None);
            let got = r.body["error"]["field"].as_str().unwrap_or_default().to_string();
            assert!(got.starts_with(field), "{backend}: expected {field}, got {}", r.body);
        }
        assert_eq!(api.admin(Method::GET, "/v1/topology", None).await.body["revision"], revision, "a refused topology changed the store");
        assert_eq!(speaker(&api, "h1").await["localAs"], 64512);
    }
}

#[tokio::test]
async fn vips_are_checked_and_a_drained_host_announces_nothing() {
    for (backend, store) in stores().await {
        let api = Api::new(store).await;
        assert_eq!(put_topology(&api, TOPOLOGY).await.status, StatusCode::OK);
        for (name, ip) in [("h1", "192.0.2.1"), ("h2", "192.0.2.2")] {
            assert_eq!(api.admin(Method::POST, "/v1/hosts", Some(json!({"name": name, "ips": [ip]}))).await.status, StatusCode::CREATED);
        }
        let bad = [
            (json!({"address": "10.40.9.9", "hosts": ["h1"]}), "address"),
            (json!({"address": "vip-1", "hosts": ["h1"]}), "address"),
            (json!({"address": "224.0.0.5", "hosts": ["h1"]}), "address"),
            (json!({"address": "fe80::1", "hosts": ["h1"]}), "address"),
            (json!({"address": "198.51.100.7"}), "hosts"),
            (json!({"address": "198.51.100.7", "hosts": ["h1"], "group": "rack-1"}), "group"),
            (json!({"address": "198.51.100.7", "group": "rack-9"}), "group"),
            (json!({"address": "198.51.100.7", "hosts": ["h1", "h1"]}), "hosts[1]"),
            (json!({"address": "198.51.100.7", "hosts": ["not a name"]}), "hosts[0]"),
        ];
        for (body, field) in bad {
            let r = api.admin(Method::POST, "/v1/vips", Some(body.clone())).await;
            assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid", Some(field));
        }
        let r = api.admin(Method::POST, "/v1/vips", Some(json!({"address": "198.51.100.7", "group": "rack-1"}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{backend}: {}", r.body);
        assert_eq!(r.body["holder"], Value::Null);
        assert_eq!(
            api.admin(Method::POST, "/v1/vips", Some(json!({"address": "198.51.100.7", "hosts": ["h2"]}))).await.status,
            StatusCode::CONFLICT
        );
        let v6 = api.admin(Method::POST, "/v1/vips", Some(json!({"address": "2001:db8::7", "hosts": ["h1"]}))).await;
        assert_eq!(v6.status, StatusCode::CREATED, "{}", v6.body);
        assert_eq!(api.admin(Method::GET, "/v1/vips", None).await.body.as_array().map(Vec::len), Some(2), "refused VIPs were stored");
        assert_eq!(api.admin(Method::DELETE, "/v1/vips/2001:db8::7", None).await.status, StatusCode::NO_CONTENT);
        assert_eq!(api.admin(Method::GET, "/v1/vips/2001:db8::7", None).await.status, StatusCode::NOT_FOUND);

        // Drain: the speaker stays configured (sessions up) but announces nothing.
        let read = api.token("read", None).await;
        let r = api.call(Method::POST, "/v1/hosts/h1/drain", Some(&read), None, &[]).await;
        assert_error(&r, StatusCode::FORBIDDEN, "forbidden", None);
        assert_eq!(api.admin(Method::POST, "/v1/hosts/h1/drain", None).await.status, StatusCode::NO_CONTENT);
        assert_eq!(api.admin(Method::GET, "/v1/hosts/h1", None).await.body["drained"], true);
        assert_eq!(speaker(&api, "h1").await["prefixes"], json!([]), "{backend}");
        assert_eq!(api.admin(Method::DELETE, "/v1/hosts/h1/drain", None).await.status, StatusCode::NO_CONTENT);
        assert_eq!(speaker(&api, "h1").await["prefixes"], json!(["10.40.0.0/17"]));
        assert_eq!(api.admin(Method::POST, "/v1/hosts/h9/drain", None).await.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn agents_report_their_sessions_and_get_v1_bgp_compares_them_with_the_plan() {
    for (backend, store) in stores().await {
        let api = Api::new(store).await;
        assert_eq!(put_topology(&api, TOPOLOGY).await.status, StatusCode::OK);
        for (name, ip) in [("h1", "192.0.2.1"), ("h2", "192.0.2.2")] {
            assert_eq!(api.admin(Method::POST, "/v1/hosts", Some(json!({"name": name, "ips": [ip]}))).await.status, StatusCode::CREATED);
        }
        let (h1, h2) = (node_token(&api, "h1").await, node_token(&api, "h2").await);
        let session = json!({"peer": "192.0.2.254", "as": 65001, "state": "established", "establishedSince": 1_700_000_000,
            "prefixesSent": 1, "prefixesReceived": 3, "flaps": 0});
        let report = json!({"fabric": {"sessions": [session], "announced": ["10.40.0.0/17"], "vips": []}}).to_string();
        let post = |token: &str, node: &str, body: String| {
            let path = format!("/v1/nodes/{node}/report");
            let token = token.to_string();
            let api = &api;
            async move { api.call(Method::POST, &path, Some(&token), Some(body), &[("content-type", "application/json")]).await }
        };
        assert_eq!(post(&h1, "h1", report.clone()).await.status, StatusCode::NO_CONTENT, "{backend}");
        assert_error(&post(&h2, "h1", report.clone()).await, StatusCode::FORBIDDEN, "forbidden", None);
        let r = post(&h1, "h1", json!({"fabric": {"sessions": [], "announced": ["not a prefix"], "vips": []}}).to_string()).await;
        assert!(r.status == StatusCode::UNPROCESSABLE_ENTITY || r.status == StatusCode::BAD_REQUEST, "{}", r.body);
        // A liveness-only report leaves the stored sessions as they are.
        assert_eq!(post(&h1, "h1", "{}".into()).await.status, StatusCode::NO_CONTENT);

        let status = api.admin(Method::GET, "/v1/bgp", None).await.body;
        let n1 = status.as_array().and_then(|a| a.iter().find(|n| n["node"] == "h1")).expect("h1");
        assert_eq!(n1["desired"], json!(["10.40.0.0/17"]), "{backend}: {status}");
        assert_eq!((n1["inSync"].clone(), n1["localAs"].clone()), (json!(true), json!(64512)), "{status}");
        assert_eq!(n1["sessions"][0]["state"], "established", "{status}");
        assert!(n1["lastSeen"].as_i64().is_some(), "{status}");
        let n2 = status.as_array().and_then(|a| a.iter().find(|n| n["node"] == "h2")).expect("h2");
        assert_eq!((n2["localAs"].clone(), n2["desired"].clone(), n2["inSync"].clone()), (Value::Null, json!([]), json!(true)), "{status}");

        // Drained: desired is empty while the agent still announces: out of sync until it follows.
        assert_eq!(api.admin(Method::POST, "/v1/hosts/h1/drain", None).await.status, StatusCode::NO_CONTENT);
        let status = api.admin(Method::GET, "/v1/bgp", None).await.body;
        let n1 = status.as_array().and_then(|a| a.iter().find(|n| n["node"] == "h1")).expect("h1");
        assert_eq!((n1["drained"].clone(), n1["inSync"].clone()), (json!(true), json!(false)), "{status}");
    }
}

//! The REST API driven in-process with `oneshot`: a router over a real store, an admin token,
//! and helpers that read replies as JSON.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tessera_controller::api::{AppState, app};
use tessera_controller::store::{Role, Store};
use tower::ServiceExt;

pub const ADMIN: &str = "admin-token-for-tests-0001";

#[derive(Debug)]
pub struct Api {
    pub router: Router,
    pub store: Store,
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub etag: Option<String>,
    pub body: Value,
}

impl Api {
    pub async fn new(store: Store) -> Api {
        store.create_token("admin", Role::Admin, None, Some(ADMIN)).await.expect("admin token");
        let router = app(AppState::new(store.clone()).await.expect("app state"));
        Api { router, store }
    }

    pub async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<String>, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body.map(Body::from).unwrap_or_else(Body::empty)).expect("request");
        let resp = self.router.clone().oneshot(req).await.expect("response");
        let status = resp.status();
        let etag = resp.headers().get("etag").map(|v| v.to_str().expect("etag").to_string());
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Reply { status, headers, etag, body }
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call(method, path, Some(ADMIN), body.map(|b| b.to_string()), &[]).await
    }

    pub async fn token(&self, role: &str, tenant: Option<&str>) -> String {
        let r = self.admin(Method::POST, "/v1/tokens", Some(json!({"name": role, "role": role, "tenant": tenant}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["token"].as_str().expect("token").to_string()
    }
}

pub fn assert_error(r: &Reply, status: StatusCode, code: &str, field: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.body["error"]["code"], code, "{}", r.body);
    assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", r.body);
    if let Some(f) = field {
        assert_eq!(r.body["error"]["field"], f, "{}", r.body);
    }
}

pub const TOPOLOGY: &str = "networks: [{name: pods, cidr: 10.40.0.0/16}]\ngroups: [{name: rack-1}, {name: rack-2}]\n";

/// Two racks, hosts h1 and h2, tenants red and blue.
pub async fn seeded(store: Store) -> Api {
    let api = Api::new(store).await;
    let r = api.call(Method::PUT, "/v1/topology", Some(ADMIN), Some(TOPOLOGY.into()), &[("content-type", "application/yaml")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    for (name, ip) in [("h1", "192.0.2.1"), ("h2", "192.0.2.2")] {
        let r = api.admin(Method::POST, "/v1/hosts", Some(json!({"name": name, "ips": [ip]}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    for t in ["red", "blue"] {
        assert_eq!(api.admin(Method::POST, "/v1/tenants", Some(json!({"name": t}))).await.status, StatusCode::CREATED);
    }
    api
}

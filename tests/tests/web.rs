//! The web UI in-process: HTML in, assertions on what each page says and on who may see and
//! change what (admin, read-only and tenant tokens get exactly what the API gives them).

use axum::http::{Method, StatusCode};
use serde_json::json;
use tessera_tests::api::{ADMIN, Api, Reply, seeded};

async fn api() -> Api {
    seeded(tessera_tests::sqlite_store().await).await
}

/// A page as the browser of someone logged in with `token` asks for it.
async fn page(api: &Api, token: &str, path: &str) -> Reply {
    api.call(Method::GET, path, None, None, &[("cookie", &format!("tessera_session={token}"))]).await
}

/// The page as a reader sees its text: entities decoded.
fn html(r: &Reply) -> String {
    let raw = r.body.as_str().unwrap_or_default();
    raw.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A form post from this site.
async fn post(api: &Api, token: &str, path: &str, form: &str) -> Reply {
    let cookie = format!("tessera_session={token}");
    let headers = [
        ("cookie", cookie.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
        ("origin", "http://ui.test"),
        ("host", "ui.test"),
    ];
    api.call(Method::POST, path, None, Some(form.to_string()), &headers).await
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b' ' => "+".into(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn logging_in_takes_a_token_and_a_wrong_one_is_refused() {
    let api = api().await;
    let r = api.call(Method::GET, "/ui/topology", None, None, &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "no session: to the login form");
    let r = api.call(Method::GET, "/", None, None, &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let login = api.call(Method::GET, "/ui/login", None, None, &[]).await;
    assert!(html(&login).contains(r#"<label for="token">Token</label>"#), "{}", html(&login));
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let wrong = api.call(Method::POST, "/ui/login", None, Some("token=nope".into()), &form).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(html(&wrong).contains("Unknown token"));
    let right = api.call(Method::POST, "/ui/login", None, Some(format!("token={ADMIN}")), &form).await;
    assert_eq!(right.status, StatusCode::SEE_OTHER);
    let cookie = right.headers.get("set-cookie").and_then(|c| c.to_str().ok()).unwrap_or_default().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && !cookie.contains("Secure"), "{cookie}");
    let tls = [("content-type", "application/x-www-form-urlencoded"), ("origin", "https://ui.test"), ("host", "ui.test")];
    let over_tls = api.call(Method::POST, "/ui/login", None, Some(format!("token={ADMIN}")), &tls).await;
    assert!(
        over_tls.headers.get("set-cookie").and_then(|c| c.to_str().ok()).is_some_and(|c| c.contains("; Secure")),
        "over HTTPS the cookie is Secure"
    );
    // A form from another site is refused.
    let cross = [("content-type", "application/x-www-form-urlencoded"), ("origin", "https://evil.test"), ("host", "ui.test")];
    assert_eq!(api.call(Method::POST, "/ui/login", None, Some(format!("token={ADMIN}")), &cross).await.status, StatusCode::FORBIDDEN);
    // A node's token is for its agent.
    let node = api.admin(Method::POST, "/v1/tokens", Some(json!({"name": "n", "role": "node", "node": "h1"}))).await;
    let node = node.body["token"].as_str().expect("token").to_string();
    assert_eq!(page(&api, &node, "/ui/policies").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_topology_is_drawn_from_the_data_with_the_routes_that_stand_for_it() {
    let api = api().await;
    let r = page(&api, ADMIN, "/ui/topology").await;
    assert_eq!(r.status, StatusCode::OK);
    let text = html(&r);
    assert!(text.contains("<svg class=\"tree\"") && text.contains(">rack-1</text>") && text.contains(">rack-2</text>"), "{text}");
    // Two hosts, one per rack: each rack's CIDR is announced.
    assert!(text.contains("↗ 10.40."), "the fabric route of a rack is on its box: {text}");
    let csp = r.headers.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
}

#[tokio::test]
async fn each_token_sees_and_changes_what_the_api_lets_it() {
    let api = api().await;
    let reader = api.token("read", None).await;
    let tenant = api.token("tenant", Some("red")).await;
    // Read-only: sees everything, changes nothing.
    assert_eq!(page(&api, &reader, "/ui/topology").await.status, StatusCode::OK);
    let policies = page(&api, &reader, "/ui/policies").await;
    assert!(!html(&policies).contains("<textarea"), "no form for a read-only token");
    let policy = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: red}\nspec: {podSelector: {}}\n";
    let r = post(&api, &reader, "/ui/policies", &format!("document={}", form_encode(policy))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(api.admin(Method::GET, "/v1/policies", None).await.body, json!([]));
    // A tenant: no infrastructure, its own policies only.
    assert_eq!(page(&api, &tenant, "/ui/topology").await.status, StatusCode::FORBIDDEN);
    assert_eq!(page(&api, &tenant, "/ui/nodes").await.status, StatusCode::FORBIDDEN);
    let nav = html(&page(&api, &tenant, "/ui/policies").await);
    assert!(!nav.contains(">Topology</a>") && nav.contains(">Policies</a>"), "the tenant's menu has no topology: {nav}");
    let r = post(&api, &tenant, "/ui/policies", &format!("document={}", form_encode(policy))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", html(&r));
    let blue = policy.replace("namespace: red", "namespace: blue");
    let r = post(&api, &tenant, "/ui/policies", &format!("document={}", form_encode(&blue))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "another tenant's policy");
    let admin_view = html(&page(&api, ADMIN, "/ui/policies").await);
    assert!(admin_view.contains("NetworkPolicy red/deny"), "{admin_view}");
}

#[tokio::test]
async fn a_policy_with_an_error_comes_back_with_the_field_and_nothing_stored() {
    let api = api().await;
    let bad = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: red}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: 99999}]}]\n";
    let r = post(&api, ADMIN, "/ui/policies", &format!("document={}", form_encode(bad))).await;
    assert_eq!(r.status, StatusCode::OK, "the form comes back");
    let text = html(&r);
    assert!(
        text.contains(r#"aria-invalid="true""#) && text.contains("<strong>spec.ingress[0].ports[0].port</strong>"),
        "the field is named: {text}"
    );
    assert!(text.contains("port: 99999"), "the text comes back as typed");
    assert!(text.contains("Nothing was stored"));
    assert_eq!(api.admin(Method::GET, "/v1/policies", None).await.body, json!([]));
    let fixed = bad.replace("99999", "8080");
    let r = post(&api, ADMIN, "/ui/policies", &format!("document={}", form_encode(&fixed))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(html(&r).contains("Stored: NetworkPolicy red/web"), "{}", html(&r));
    // Its page: the document, editable by this token; a Kubernetes-made one would not be.
    let detail = page(&api, ADMIN, "/ui/policies/NetworkPolicy%20red%2Fweb").await;
    assert_eq!(detail.status, StatusCode::OK);
    assert!(html(&detail).contains("\"port\": 8080") && html(&detail).contains("<textarea"), "{}", html(&detail));
    assert_eq!(page(&api, ADMIN, "/ui/policies/NetworkPolicy%20red%2Fnope").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn explain_names_the_deciding_policy_and_rule_with_a_permalink() {
    let api = api().await;
    for (id, host, app) in [("red/web", "h1", "web"), ("red/db", "h2", "db")] {
        let r =
            api.admin(Method::POST, "/v1/endpoints", Some(json!({"id": id, "tenant": "red", "host": host, "labels": {"app": app}}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    let policy = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db, namespace: red}\nspec:\n  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]\n";
    assert_eq!(post(&api, ADMIN, "/ui/policies", &format!("document={}", form_encode(policy))).await.status, StatusCode::OK);
    let blocked = page(&api, ADMIN, "/ui/explain?from=red%2Fweb&to=red%2Fdb&port=tcp%2F22").await;
    let text = html(&blocked);
    assert!(text.contains(">Denied<") && text.contains("isolated by NetworkPolicy red/db"), "{text}");
    assert!(text.contains("h1") && text.contains("h2"), "the nodes that enforce it: {text}");
    assert!(text.contains("Permalink"));
    let allowed = page(&api, ADMIN, "/ui/explain?from=red%2Fweb&to=red%2Fdb&port=tcp%2F5432").await;
    assert!(html(&allowed).contains("allowed by NetworkPolicy red/db spec.ingress[0]"), "{}", html(&allowed));
    let wrong = page(&api, ADMIN, "/ui/explain?from=red%2Fweb&to=red%2Fdb&port=tcp%2Fx").await;
    assert!(html(&wrong).contains("class=\"error\""), "{}", html(&wrong));
    // Each node with what it enforces.
    let nodes = html(&page(&api, ADMIN, "/ui/nodes").await);
    assert!(nodes.contains("<th scope=\"col\">Set elements</th>") && nodes.contains("<td>h1</td>"), "{nodes}");
    // Who owns an address?
    let ip = api.admin(Method::GET, "/v1/endpoints/red/db", None).await.body["ips"][0].as_str().expect("ip").to_string();
    let found = page(&api, ADMIN, &format!("/ui/search?q={ip}")).await;
    let text = html(&found);
    assert!(text.contains("red/db") && text.contains("segment red/default") && text.contains("rack-2"), "{text}");
}

#[tokio::test]
async fn assets_are_embedded_and_pages_forbid_framing_and_foreign_scripts() {
    let api = api().await;
    let css = api.call(Method::GET, "/ui/static/tessera.css", None, None, &[]).await;
    assert!(css.status == StatusCode::OK && html(&css).contains("prefers-color-scheme: dark"));
    let js = api.call(Method::GET, "/ui/static/tessera.js", None, None, &[]).await;
    assert!(js.status == StatusCode::OK && html(&js).contains("EventSource"));
    assert_eq!(api.call(Method::GET, "/ui/static/nope.js", None, None, &[]).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tenants_and_segments_with_a_reachability_matrix_that_explains_itself() {
    let api = api().await;
    let r = post(&api, ADMIN, "/ui/tenants", "name=shop&labels=team%3Dshop%2C+env%3Dprod").await;
    assert!(html(&r).contains("Tenant shop created"), "{}", html(&r));
    assert_eq!(api.admin(Method::GET, "/v1/tenants/shop", None).await.body["labels"], json!({"team": "shop", "env": "prod"}));
    let r = post(&api, ADMIN, "/ui/tenants", "name=bad+name%2F1").await;
    assert!(html(&r).contains("class=\"error\"") && html(&r).contains("Nothing was changed"), "{}", html(&r));
    for segment in ["front", "back"] {
        let r = post(&api, ADMIN, "/ui/tenants/shop/segments", &format!("name={segment}")).await;
        assert!(html(&r).contains(&format!("Segment shop/{segment} created")), "{}", html(&r));
    }
    for (id, segment) in [("shop/f1", "front"), ("shop/b1", "back")] {
        let body = json!({"id": id, "tenant": "shop", "segment": segment, "host": "h1", "labels": {}});
        assert_eq!(api.admin(Method::POST, "/v1/endpoints", Some(body)).await.status, StatusCode::CREATED);
    }
    let policy = "apiVersion: tessera.io/v1\nkind: TesseraPolicy\nmetadata: {name: back, namespace: shop}\nspec:\n  segment: back\n  ingress: [{from: [{segment: back}]}]\n";
    assert_eq!(post(&api, ADMIN, "/ui/policies", &format!("document={}", form_encode(policy))).await.status, StatusCode::OK);
    let listing = html(&page(&api, ADMIN, "/ui/tenants").await);
    assert!(listing.contains("<caption>Who may reach whom on tcp/80"), "{listing}");
    // front → back is denied (back takes only back), and the cell links to why.
    assert!(listing.contains("/ui/explain?from=shop%2Ff1&to=shop%2Fb1&port=tcp%2F80\">denied"), "{listing}");
    assert!(listing.contains("/ui/explain?from=shop%2Fb1&to=shop%2Ff1&port=tcp%2F80\">allowed"), "{listing}");
    // A tenant token sees its own tenant only, and may add segments but not tenants.
    let red = api.token("tenant", Some("red")).await;
    let mine = html(&page(&api, &red, "/ui/tenants").await);
    assert!(mine.contains("id=\"tenant-red\"") && !mine.contains("id=\"tenant-shop\"") && !mine.contains("New tenant"), "{mine}");
    assert_eq!(post(&api, &red, "/ui/tenants", "name=mine").await.status, StatusCode::FORBIDDEN);
    assert_eq!(post(&api, &red, "/ui/tenants/shop/segments", "name=x").await.status, StatusCode::FORBIDDEN);
    // Deleting: admin only.
    assert_eq!(post(&api, &red, "/ui/tenants/red/delete", "").await.status, StatusCode::FORBIDDEN);
    assert_eq!(post(&api, ADMIN, "/ui/tenants/blue/delete", "").await.status, StatusCode::SEE_OTHER);
    assert_eq!(api.admin(Method::GET, "/v1/tenants/blue", None).await.status, StatusCode::NOT_FOUND);
}

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
    // A segment and a CIDR stand for their first endpoint; a CIDR without one for its first address.
    let by_segment = html(&page(&api, ADMIN, "/ui/explain?from=red%2Fweb&to=red%2Fdefault&port=tcp%2F5432").await);
    assert!(
        by_segment.contains("segment red/default is represented by its first endpoint, red/db") && by_segment.contains(">Allowed<"),
        "{by_segment}"
    );
    let db_ip = api.admin(Method::GET, "/v1/endpoints/red/db", None).await.body["ips"][0].as_str().expect("ip").to_string();
    let by_cidr = html(&page(&api, ADMIN, &format!("/ui/explain?from=red%2Fweb&to={db_ip}%2F32&port=tcp%2F22")).await);
    assert!(by_cidr.contains("represented by its first endpoint, red/db") && by_cidr.contains(">Denied<"), "{by_cidr}");
    let outside = html(&page(&api, ADMIN, "/ui/explain?from=198.51.100.0%2F24&to=red%2Fdb&port=tcp%2F5432").await);
    assert!(
        outside.contains("198.51.100.0/24 holds no endpoint: represented by 198.51.100.1") && outside.contains(">Denied<"),
        "{outside}"
    );
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
    assert!(
        listing.contains("href=\"/ui/tenants/shop\"") && !listing.contains("<caption>"),
        "the matrix is on the tenant's page: {listing}"
    );
    let listing = html(&page(&api, ADMIN, "/ui/tenants/shop").await);
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

/// The rows of the endpoints table on a page, by id.
fn endpoint_ids(text: &str) -> Vec<String> {
    text.split("<tr><td>").skip(1).filter_map(|row| row.split("</td>").next()).map(String::from).collect()
}

#[tokio::test]
async fn endpoints_are_filtered_in_the_database_and_shown_a_page_at_a_time() {
    let api = api().await;
    for i in 0..120 {
        let (app, host) = if i % 2 == 0 { ("web", "h1") } else { ("db", "h2") };
        let body = json!({"id": format!("red/e{i:03}"), "tenant": "red", "host": host, "labels": {"app": app}});
        assert_eq!(api.admin(Method::POST, "/v1/endpoints", Some(body)).await.status, StatusCode::CREATED);
    }
    for i in 0..5 {
        let body = json!({"id": format!("blue/b{i}"), "tenant": "blue", "host": "h1", "labels": {"app": "web"}});
        assert_eq!(api.admin(Method::POST, "/v1/endpoints", Some(body)).await.status, StatusCode::CREATED);
    }
    // All of them: 125, 50 to a page, in id order, continued by id.
    let first = html(&page(&api, ADMIN, "/ui/endpoints").await);
    assert!(first.contains("125 matching"), "{first}");
    let ids = endpoint_ids(&first);
    assert_eq!((ids.len(), ids[0].as_str(), ids[49].as_str()), (50, "blue/b0", "red/e044"), "{ids:?}");
    let next = first.split("href=\"").find_map(|h| h.split_once("\" rel=\"next\"")).map(|(href, _)| href.replace("&amp;", "&"));
    let next = next.expect("a next page");
    let second = html(&page(&api, ADMIN, &next).await);
    assert_eq!(endpoint_ids(&second).first().map(String::as_str), Some("red/e045"), "{second}");
    assert!(second.contains(">First page<"));
    let last = html(&page(&api, ADMIN, "/ui/endpoints?after=red%2Fe094").await);
    assert_eq!(endpoint_ids(&last).len(), 25);
    assert!(!last.contains("rel=\"next\""), "the last page has no next");

    // Filters: labels, host, part of the id, an address; wildcards are literal.
    assert!(html(&page(&api, ADMIN, "/ui/endpoints?labels=app%3Ddb").await).contains("60 matching"));
    assert!(html(&page(&api, ADMIN, "/ui/endpoints?labels=app%3Dweb&host=h1&tenant=red").await).contains("60 matching"));
    assert!(html(&page(&api, ADMIN, "/ui/endpoints?labels=app%3Dweb%2C+tier%3Dx").await).contains("0 matching"));
    let part = html(&page(&api, ADMIN, "/ui/endpoints?q=e01").await);
    assert!(part.contains("10 matching") && endpoint_ids(&part).iter().all(|id| id.contains("e01")), "{part}");
    assert!(html(&page(&api, ADMIN, "/ui/endpoints?q=%25").await).contains("0 matching"), "% is not a wildcard");
    assert!(html(&page(&api, ADMIN, "/ui/endpoints?q=e_1").await).contains("0 matching"), "_ is not a wildcard");
    let ip = api.admin(Method::GET, "/v1/endpoints/red/e007", None).await.body["ips"][0].as_str().expect("ip").to_string();
    let by_address = html(&page(&api, ADMIN, &format!("/ui/endpoints?q={ip}")).await);
    assert_eq!(endpoint_ids(&by_address), vec!["red/e007"], "{by_address}");
    assert!(by_address.contains("/ui/explain?from=red%2Fe007"), "each endpoint explains itself: {by_address}");
    let bad = html(&page(&api, ADMIN, "/ui/endpoints?labels=app").await);
    assert!(bad.contains("<strong>labels</strong>") && bad.contains("aria-invalid"), "{bad}");

    // A tenant's token lists its own tenant, and is refused another.
    let blue = api.token("tenant", Some("blue")).await;
    let own = html(&page(&api, &blue, "/ui/endpoints").await);
    assert!(own.contains("5 matching") && endpoint_ids(&own).iter().all(|id| id.starts_with("blue/")), "{own}");
    assert!(!own.contains("Explain…"), "explanations read every tenant: not for a tenant token");
    assert_eq!(page(&api, &blue, "/ui/endpoints?tenant=red").await.status, StatusCode::FORBIDDEN);
}

/// The topology's edit form: its revision (what a dry run is made against).
fn revision_in(text: &str) -> String {
    text.split("name=\"revision\" value=\"").nth(1).and_then(|r| r.split('"').next()).expect("revision").to_string()
}

#[tokio::test]
async fn a_topology_change_is_tried_first_and_applied_as_previewed() {
    let api = api().await;
    let body = json!({"id": "red/a", "tenant": "red", "host": "h1", "labels": {}});
    assert_eq!(api.admin(Method::POST, "/v1/endpoints", Some(body)).await.status, StatusCode::CREATED);
    let before = api.admin(Method::GET, "/v1/topology", None).await.body;
    let shown = html(&page(&api, ADMIN, "/ui/topology").await);
    assert!(shown.contains(">Dry run<") && shown.contains("Change the topology"), "{shown}");
    let revision = revision_in(&shown);

    // A third rack: a dry run shows what changes, stores nothing, and offers to apply it.
    let grown = "networks: [{name: pods, cidr: 10.40.0.0/16}]\ngroups: [{name: rack-1}, {name: rack-2}, {name: rack-3}]\n";
    let form = format!("action=dry-run&revision={revision}&document={}", form_encode(grown));
    let dry = html(&post(&api, ADMIN, "/ui/topology", &form).await);
    assert!(dry.contains("Dry run of the change") && dry.contains("<caption>CIDRs that change</caption>"), "{dry}");
    assert!(dry.contains("<td>rack-3</td>") && dry.contains(">Apply this change<"), "{dry}");
    assert_eq!(api.admin(Method::GET, "/v1/topology", None).await.body, before, "a dry run stores nothing");
    // Applied as previewed: against the revision it was made on.
    let apply = format!("action=apply&revision={revision}&document={}", form_encode(grown));
    let done = html(&post(&api, ADMIN, "/ui/topology", &apply).await);
    assert!(done.contains("Topology changed") && done.contains(">rack-3</text>"), "{done}");
    let now = api.admin(Method::GET, "/v1/topology", None).await.body;
    assert_ne!(now["revision"], before["revision"]);
    // The same form again is against an older revision: refused, named, nothing changed.
    let stale = html(&post(&api, ADMIN, "/ui/topology", &apply).await);
    assert!(stale.contains("<strong>If-Match</strong>") && stale.contains("Nothing was changed"), "{stale}");

    // A change that would move red/a's address: refused in the dry run, with why.
    let shrunk = "networks: [{name: pods, cidr: 10.41.0.0/16}]\ngroups: [{name: rack-1}, {name: rack-2}]\n";
    let form = format!("action=dry-run&revision={}&document={}", now["revision"], form_encode(shrunk));
    let refused = html(&post(&api, ADMIN, "/ui/topology", &form).await);
    assert!(refused.contains("it would move allocated addresses") && !refused.contains(">Apply this change<"), "{refused}");
    // A malformed document: the field, and the text as typed.
    let form = format!("action=dry-run&document={}", form_encode("networks: [{name: pods, cidr: 10.40.0.0/33}]\n"));
    let bad = html(&post(&api, ADMIN, "/ui/topology", &form).await);
    assert!(bad.contains("id=\"document-error\"") && bad.contains("networks[0].cidr") && bad.contains("10.40.0.0/33"), "{bad}");
    assert_eq!(api.admin(Method::GET, "/v1/topology", None).await.body["revision"], now["revision"]);
    // Only admins change the topology.
    let reader = api.token("read", None).await;
    assert!(!html(&page(&api, &reader, "/ui/topology").await).contains(">Dry run<"));
    assert_eq!(post(&api, &reader, "/ui/topology", "action=dry-run&document=x").await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn tenants_and_segments_are_relabelled_by_whoever_may_write_them() {
    let api = api().await;
    let r = html(&post(&api, ADMIN, "/ui/tenants/red/labels", "labels=team%3Dshop%2C+env%3Dprod&revision=").await);
    assert!(r.contains("Tenant red relabelled"), "{r}");
    assert_eq!(api.admin(Method::GET, "/v1/tenants/red", None).await.body["labels"], json!({"team": "shop", "env": "prod"}));
    let bad = html(&post(&api, ADMIN, "/ui/tenants/red/labels", "labels=team").await);
    assert!(bad.contains("<strong>labels</strong>") && bad.contains("Nothing was changed"), "{bad}");
    let bad = html(&post(&api, ADMIN, "/ui/tenants/red/labels", "labels=-x%3Dy").await);
    assert!(bad.contains("Nothing was changed"), "a label key the API refuses: {bad}");
    assert_eq!(api.admin(Method::GET, "/v1/tenants/red", None).await.body["labels"], json!({"team": "shop", "env": "prod"}));
    // A stale form (the revision it showed is gone) is refused.
    let stale = html(&post(&api, ADMIN, "/ui/tenants/red/labels", "labels=a%3Db&revision=1").await);
    assert!(stale.contains("<strong>If-Match</strong>"), "{stale}");

    // A tenant's token relabels its segments, not its tenant.
    let red = api.token("tenant", Some("red")).await;
    let r = html(&post(&api, &red, "/ui/tenants/red/segments/default/labels", "labels=tier%3Dweb").await);
    assert!(r.contains("Segment red/default relabelled") && r.contains("tier=web"), "{r}");
    assert_eq!(api.admin(Method::GET, "/v1/tenants/red/segments/default", None).await.body["labels"], json!({"tier": "web"}));
    assert_eq!(post(&api, &red, "/ui/tenants/red/labels", "labels=a%3Db").await.status, StatusCode::FORBIDDEN);
    assert_eq!(post(&api, &red, "/ui/tenants/blue/segments/default/labels", "labels=a%3Db").await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_routes_view_shows_each_speaker_desired_against_announced() {
    let api = api().await;
    let bgp = "networks: [{name: pods, cidr: 10.40.0.0/16}]\ngroups:\n  - name: rack-1\n    bgp: {localAs: 65001, peers: [{address: 192.0.2.254, as: 65000}]}\n  - name: rack-2\n";
    let r = api.call(Method::PUT, "/v1/topology", Some(ADMIN), Some(bgp.into()), &[("content-type", "application/yaml")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let text = html(&page(&api, ADMIN, "/ui/routes").await);
    // h1 (rack 1) speaks BGP; no agent has reported: what it should announce, and that it does not.
    let row = text.split("<tr").find(|r| r.contains("<td>h1")).unwrap_or_default().to_string();
    assert!(row.contains("65001") && row.contains("<code>10.40.") && row.contains("differs") && row.contains("none reported"), "{text}");
    assert!(!text.contains("<td>h2"), "rack 2 speaks no BGP: {text}");
    assert!(text.contains("1 not announcing what they should"), "{text}");
    let tenant = api.token("tenant", Some("red")).await;
    assert_eq!(page(&api, &tenant, "/ui/routes").await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn long_listings_come_a_page_at_a_time_with_filters() {
    let api = api().await;
    for i in 0..45 {
        assert_eq!(api.admin(Method::POST, "/v1/tenants", Some(json!({"name": format!("t{i:02}")}))).await.status, StatusCode::CREATED);
    }
    let mut documents = String::new();
    for i in 0..120 {
        documents.push_str(&format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{i:03}, namespace: red}}\nspec: {{podSelector: {{}}}}\n"
        ));
    }
    let r = api.call(Method::POST, "/v1/policies", Some(ADMIN), Some(documents), &[("content-type", "application/yaml")]).await;
    assert!(r.status.is_success(), "{}", r.body);
    for i in 3..130 {
        let r = api.admin(Method::POST, "/v1/hosts", Some(json!({"name": format!("n{i:03}"), "ips": [format!("192.0.2.{i}")]}))).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    // Tenants: 47 (red, blue and 45 more), 20 to a page.
    let first = html(&page(&api, ADMIN, "/ui/tenants").await);
    assert!(first.contains("Page 1 of 3") && first.matches("<section aria-labelledby=\"tenant-").count() == 20, "{first}");
    let last = html(&page(&api, ADMIN, "/ui/tenants?page=3").await);
    assert!(last.contains("Page 3 of 3") && last.contains("rel=\"prev\"") && !last.contains("rel=\"next\""), "{last}");
    let some = html(&page(&api, ADMIN, "/ui/tenants?q=t1").await);
    assert!(some.contains("10 matching") && !some.contains("Page 1"), "{some}");
    // Policies: 120, 50 to a page, the realization asked for the page only.
    let first = html(&page(&api, ADMIN, "/ui/policies").await);
    assert!(first.contains("Page 1 of 3") && first.matches("<tr><td><a href=\"/ui/policies/").count() == 50, "{first}");
    assert!(first.contains("NetworkPolicy red/p000") && !first.contains("NetworkPolicy red/p050"), "in id order");
    let third = html(&page(&api, ADMIN, "/ui/policies?page=3").await);
    assert_eq!(third.matches("<tr><td><a href=\"/ui/policies/").count(), 20);
    assert!(html(&page(&api, ADMIN, "/ui/policies?q=p11").await).contains("10 matching"));
    // Nodes: 129, 100 to a page; none has an agent, so all are "never seen".
    let nodes = html(&page(&api, ADMIN, "/ui/nodes").await);
    assert!(nodes.contains("129 ·") && nodes.contains("129 never seen") && nodes.contains("Page 1 of 2"), "{nodes}");
    assert_eq!(nodes.matches("<tr><td>").count(), 100);
    let some = html(&page(&api, ADMIN, "/ui/nodes?q=n12&problems=on").await);
    assert_eq!(some.matches("<tr><td>").count(), 10, "{some}");
}

#[tokio::test]
async fn malformed_paging_and_revision_fields_are_refused_naming_them() {
    let api = api().await;
    for path in ["/ui/nodes?page=x", "/ui/policies?page=-1", "/ui/tenants?page=two"] {
        let r = page(&api, ADMIN, path).await;
        assert!(r.status.is_client_error() && html(&r).contains("page"), "{path}: {} {}", r.status, html(&r));
    }
    let r = post(&api, ADMIN, "/ui/tenants/red/labels", "labels=a%3Db&revision=x").await;
    assert!(r.status.is_client_error() && html(&r).contains("revision"), "{} {}", r.status, html(&r));
    let r = post(&api, ADMIN, "/ui/topology", "action=apply&revision=1.5&document=x").await;
    assert!(r.status.is_client_error() && html(&r).contains("revision"), "{} {}", r.status, html(&r));
    assert!(
        api.admin(Method::GET, "/v1/tenants/red", None).await.body["labels"].as_object().is_some_and(|l| l.is_empty()),
        "nothing stored"
    );
}

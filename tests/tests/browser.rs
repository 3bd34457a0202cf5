//! The web UI in Debian's chromium (headless, through chromedriver): log in, see the topology
//! tree, make a policy with an error and see it at the field, fix it, explain a blocked pair and
//! see the deciding rule, watch a change made through the API appear without a reload, and find
//! a read-only token without an editor. Every page: no console error, and no serious or
//! critical axe-core violation. Screenshots of each view go to `target/ui-screenshots/`.

use std::path::PathBuf;

use serde_json::json;
use tessera_tests::Controller;
use tessera_tests::browser::{Browser, axe_path};

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ui-screenshots")
}

/// The checks every page gets: its screenshot, a clean console, no serious accessibility fault.
fn check_page(b: &Browser, axe: &str, name: &str) {
    b.screenshot(&shots().join(format!("{name}.png")));
    let errors = b.console_errors();
    assert!(errors.is_empty(), "{name}: console errors: {errors:#?}");
    let violations = b.accessibility_violations(axe);
    assert!(violations.is_empty(), "{name}: accessibility violations:\n{}", violations.join("\n"));
}

#[test]
fn a_person_uses_the_web_ui() {
    let axe = std::fs::read_to_string(axe_path())
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/test-all.sh installs axe-core)", axe_path().display()));
    let dir = tempfile::tempdir().expect("dir");
    let topology = dir.path().join("topology.yaml");
    std::fs::write(
        &topology,
        "networks: [{name: pods, cidr: 10.40.0.0/16}]\ngroups:\n  - name: zone-a\n    groups: [{name: rack-1, assignment: {rack: r1}}, {name: rack-2, assignment: {rack: r2}}]\n",
    )
    .expect("topology");
    let c = Controller::start(&[("TESSERA_NO_DEMO", "true"), ("TESSERA_TOPOLOGY", topology.to_str().expect("path"))]);
    for (name, ip, rack) in [("h1", "192.0.2.1", "r1"), ("h2", "192.0.2.2", "r2")] {
        assert_eq!(c.send("POST", "/v1/hosts", json!({"name": name, "ips": [ip], "labels": {"rack": rack}})).0, 201);
    }
    assert_eq!(c.send("POST", "/v1/tenants", json!({"name": "red"})).0, 201);
    for (id, host, app) in [("red/web", "h1", "web"), ("red/db", "h2", "db")] {
        assert_eq!(c.send("POST", "/v1/endpoints", json!({"id": id, "tenant": "red", "host": host, "labels": {"app": app}})).0, 201);
    }
    let reader = c.send("POST", "/v1/tokens", json!({"name": "viewer", "role": "read"})).1["token"].as_str().expect("token").to_string();

    let b = Browser::start();
    let log_in = |token: &str| {
        b.goto(&format!("{}/ui/login", c.url));
        b.type_into("#token", token);
        b.click("form button[type=submit]");
        b.wait_for("the topology after logging in", |b| b.url().ends_with("/ui/topology"));
    };
    b.goto(&format!("{}/ui/login", c.url));
    check_page(&b, &axe, "login");
    log_in(&c.token);
    // The tree, drawn from the data: both racks, and the route of each.
    assert!(b.has("svg.tree g.group.routed"), "the routed racks are marked");
    let tree = b.text(".scroll");
    assert!(tree.contains("rack-1") && tree.contains("rack-2") && tree.contains("zone-a"), "{tree}");
    check_page(&b, &axe, "topology");

    // A topology change: a dry run says what it would do. A third rack would move h2's
    // addresses: refused, with why; a second network moves nothing: applied as previewed.
    b.click("details summary");
    let racks = "groups:\n  - name: zone-a\n    groups: [{name: rack-1, assignment: {rack: r1}}, {name: rack-2, assignment: {rack: r2}}]\n";
    let three = racks.replace("}}]", "}}, {name: rack-3, assignment: {rack: r3}}]");
    b.type_into("#document", &format!("networks: [{{name: pods, cidr: 10.40.0.0/16}}]\n{three}"));
    b.click("button[value=dry-run]");
    b.wait_for("the dry run", |b| b.has("#change"));
    let refused = b.text("#change");
    assert!(!b.has("button[value=apply]") && refused.contains("would move") && refused.contains("h2"), "{refused}");
    b.type_into("#document", &format!("networks: [{{name: pods, cidr: 10.40.0.0/16}}, {{name: more, cidr: 10.41.0.0/16}}]\n{racks}"));
    b.click("button[value=dry-run]");
    b.wait_for("the second dry run", |b| b.has("button[value=apply]"));
    assert!(b.text("#change").contains("10.41.0.0/17"), "{}", b.text("#change"));
    check_page(&b, &axe, "topology-dry-run");
    b.click("button[value=apply]");
    b.wait_for("the change applied", |b| b.has("#change p.ok"));
    assert!(b.text(".scroll").contains("10.41."), "the tree has the new network's CIDRs");

    // A policy with a deliberate error: the field is named, nothing is stored; then fixed.
    b.goto(&format!("{}/ui/policies", c.url));
    let bad = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db, namespace: red}\nspec:\n  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 70000}]}]\n";
    b.type_into("#document", bad);
    b.click("form.card button[type=submit]");
    b.wait_for("the error at the field", |b| b.has("#document-error"));
    assert!(b.text("#document-error").contains("spec.ingress[0].ports[0].port"), "{}", b.text("#document-error"));
    assert_eq!(c.get("/v1/policies"), json!([]), "nothing stored");
    check_page(&b, &axe, "policies-error");
    b.type_into("#document", &bad.replace("70000", "5432"));
    b.click("form.card button[type=submit]");
    b.wait_for("stored", |b| b.has("p.ok"));
    assert!(b.text("p.ok").contains("NetworkPolicy red/db"));
    check_page(&b, &axe, "policies");

    // Why is this blocked?
    b.goto(&format!("{}/ui/explain?from=red%2Fweb&to=red%2Fdb&port=tcp%2F22", c.url));
    assert!(b.has(".verdict.denied"));
    let why = b.text(".verdict");
    assert!(why.contains("isolated by NetworkPolicy red/db") && why.contains("h2"), "{why}");
    check_page(&b, &axe, "explain");

    // Live: a change through the API appears on the open page without a reload.
    b.goto(&format!("{}/ui/policies", c.url));
    b.execute("window.tesseraMarker = 1; return true;");
    let web = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: red}\nspec: {podSelector: {matchLabels: {app: web}}}\n";
    let answer = reqwest::blocking::Client::new()
        .post(format!("{}/v1/policies", c.url))
        .bearer_auth(&c.token)
        .header("content-type", "application/yaml")
        .body(web)
        .send()
        .expect("policy");
    assert!(answer.status().is_success());
    b.wait_for("the new policy on the open page", |b| b.text("main").contains("NetworkPolicy red/web"));
    assert_eq!(b.execute("return window.tesseraMarker === 1;"), json!(true), "updated in place, not reloaded");

    // A tenant and a segment made with the forms; the tenant's own page has its matrix.
    b.goto(&format!("{}/ui/tenants", c.url));
    b.type_into("#tenant-name", "blue");
    b.type_into("#tenant-labels", "team=blue");
    // Read in one script: the page may be replaced between finding an element and reading it.
    let said = |b: &Browser| {
        b.execute("const ok = document.querySelector('p.ok'); return ok ? ok.textContent : '';").as_str().unwrap_or_default().to_string()
    };
    b.click("form.card.narrow button[type=submit]");
    b.wait_for("the tenant made", |b| said(b).contains("Tenant blue created"));
    b.type_into("#segment-blue", "front");
    b.click("form[action='/ui/tenants/blue/segments'] button");
    b.wait_for("the segment made", |b| said(b).contains("Segment blue/front created"));
    check_page(&b, &axe, "tenant");
    b.goto(&format!("{}/ui/tenants", c.url));
    assert!(b.text("main").contains("red") && b.text("main").contains("blue"));
    check_page(&b, &axe, "tenants");
    b.goto(&format!("{}/ui/nodes", c.url));
    check_page(&b, &axe, "nodes");
    b.goto(&format!("{}/ui/endpoints?tenant=red", c.url));
    assert!(b.text("main").contains("red/web") && b.text("main").contains("2 matching"), "{}", b.text("main"));
    check_page(&b, &axe, "endpoints");
    b.goto(&format!("{}/ui/routes", c.url));
    check_page(&b, &axe, "routes");
    b.goto(&format!("{}/ui/search?q=10.40.0.1", c.url));
    check_page(&b, &axe, "search");

    // A read-only token sees, and cannot edit.
    b.click("form.session button");
    b.wait_for("logged out", |b| b.url().ends_with("/ui/login"));
    log_in(&reader);
    b.goto(&format!("{}/ui/policies", c.url));
    assert!(b.text("main").contains("NetworkPolicy red/db"));
    assert!(!b.has("#document"), "no editor for a read-only token");
    eprintln!("screenshots in {}", shots().display());
}

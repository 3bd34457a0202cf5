//! The UI's views: each reads what the API would answer, through the same functions, and renders
//! it; each refuses what the viewer's token may not see.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::{Value, context};
use serde::Deserialize;
use tessera_policy::model::Tier;

use super::{FromThisSite, Viewer, refused};
use crate::api::AppState;
use crate::api::policies::{PolicyView, readable, realized, store_policies};
use crate::store::{BlockFilter, EndpointQuery, Origin, Principal};

/// Data for a template.
pub(super) fn data<T: serde::Serialize>(value: &T) -> Value {
    Value::from(minijinja::value::Serde(value))
}

/// A store or engine failure, as a page.
pub(super) fn failed(viewer: &Viewer, e: impl std::fmt::Display) -> Response {
    super::failure(&format!("{} ({})", e, viewer.label()))
}

/// Policies on one page.
const POLICIES_PAGE: usize = 50;

#[derive(Deserialize, Default)]
pub struct PoliciesQuery {
    #[serde(default)]
    q: String,
    page: Option<usize>,
}

/// One page of the policies the viewer may read (in tier order, then by id), grouped by tier,
/// with how many nodes enforce each; and the pager.
async fn policy_list(viewer: &Viewer, state: &AppState, q: &PoliciesQuery) -> Result<(Vec<Value>, Value), Response> {
    let records = state.store.policies().await.map_err(|e| failed(viewer, e))?;
    let part = q.q.trim();
    let mut listed: Vec<((u8, u32), _)> = records
        .into_iter()
        .filter(|p| readable(&viewer.0, p) && p.id.contains(part))
        .map(|p| {
            let rank = match tier_of(&p.document) {
                Some(Tier::Admin { priority }) => (0, priority),
                Some(Tier::Baseline { priority }) => (2, priority),
                _ => (1, 0),
            };
            (rank, p)
        })
        .collect();
    listed.sort_by(|(a, p), (b, r)| a.cmp(b).then_with(|| p.id.cmp(&r.id)));
    let href = format!("/ui/policies?q={}&", encode(part));
    let (page, pager) = super::paginate(listed, q.page, POLICIES_PAGE, &href);
    let (ranks, records): (Vec<(u8, u32)>, Vec<_>) = page.into_iter().unzip();
    // Realization is asked for this page's policies only.
    let views = realized(state, records).await.map_err(|e| failed(viewer, e.message))?;
    let mut tiers: BTreeMap<(u8, u32), (String, &'static str, Vec<PolicyView>)> = BTreeMap::new();
    for (rank, view) in ranks.into_iter().zip(views) {
        let (label, class) = match rank {
            (0, priority) => (format!("Admin tier, priority {priority}"), "admin"),
            (2, priority) => (format!("Baseline tier, priority {priority}"), "baseline"),
            _ => ("Namespace tier (NetworkPolicy, TesseraPolicy, Romana)".to_string(), "namespace"),
        };
        tiers.entry(rank).or_insert_with(|| (label, class, Vec::new())).2.push(view);
    }
    let tiers = tiers
        .into_iter()
        .map(|((_, priority), (label, class, policies))| {
            context! { key => format!("{class}-{priority}"), label, policies => data(&policies) }
        })
        .collect();
    Ok((tiers, pager))
}

/// The tier of a stored document's (first) policy.
fn tier_of(document: &serde_json::Value) -> Option<Tier> {
    let mut inputs = tessera_policy::Inputs::default();
    inputs.add_document("stored", document.clone()).ok()?;
    inputs.policies.first().map(|p| p.tier)
}

fn can_write(viewer: &Viewer) -> bool {
    !matches!(viewer.0.0, Principal::ReadOnly | Principal::Node(_))
}

pub async fn policies(viewer: Viewer, State(state): State<AppState>, Query(q): Query<PoliciesQuery>) -> Response {
    let (tiers, pager) = match policy_list(&viewer, &state, &q).await {
        Ok(t) => t,
        Err(page) => return page,
    };
    let values = context! { tiers, pager, q => q.q.trim(), can_write => can_write(&viewer), live => true };
    viewer.page("policies.html", "/ui/policies", "Policies", values)
}

#[derive(Deserialize)]
pub struct PolicyForm {
    document: String,
}

/// Store the form's documents (all or none, as `POST /v1/policies`); on error the form comes
/// back with the text as typed and the field at fault.
pub async fn apply_policies(
    viewer: Viewer,
    State(state): State<AppState>,
    _: FromThisSite,
    axum::Form(form): axum::Form<PolicyForm>,
) -> Response {
    if !can_write(&viewer) {
        return refused(&viewer, StatusCode::FORBIDDEN, "This token reads policies; it does not write them.");
    }
    let outcome = store_policies(&state, &viewer.0, form.document.clone().into_bytes()).await;
    let (tiers, pager) = match policy_list(&viewer, &state, &PoliciesQuery::default()).await {
        Ok(t) => t,
        Err(page) => return page,
    };
    // A refused form comes back as a page like any other (200), the error marked at the field:
    // what failed is the document, not the request.
    let values = match outcome {
        Ok(stored) => {
            let applied: Vec<String> = stored.into_iter().map(|p| p.id).collect();
            context! { tiers, pager, can_write => true, applied }
        }
        Err(e) if e.status == StatusCode::FORBIDDEN => return refused(&viewer, e.status, &e.message),
        Err(e) => {
            let error = context! { field => e.field.clone().unwrap_or_else(|| "document".into()), message => e.message };
            context! { tiers, pager, can_write => true, error, document => form.document }
        }
    };
    viewer.page("policies.html", "/ui/policies", "Policies", values)
}

pub async fn policy(viewer: Viewer, State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let record = match state.store.policy(&id).await {
        Ok(r) if readable(&viewer.0, &r) => r,
        Ok(_) | Err(crate::store::StoreError::NotFound { .. }) => {
            return refused(&viewer, StatusCode::NOT_FOUND, &format!("No policy `{id}` this token may read."));
        }
        Err(e) => return failed(&viewer, e),
    };
    let can_edit = record.origin == Origin::Api
        && match &record.tenant {
            Some(t) => viewer.0.require_tenant_write(t).is_ok(),
            None => viewer.0.require_admin().is_ok(),
        };
    let view = match realized(&state, vec![record]).await {
        Ok(mut v) => v.remove(0),
        Err(e) => return failed(&viewer, e.message),
    };
    let yaml = serde_json::to_string_pretty(&view.document).unwrap_or_default();
    let values = context! { policy => data(&view), yaml, can_edit };
    viewer.page("policy.html", "/ui/policies", &view.id, values)
}

#[derive(Deserialize)]
pub struct ExplainQuery {
    from: Option<String>,
    to: Option<String>,
    port: Option<String>,
}

/// "Why is this blocked?" over the live state: both sides' decisions, the tier, policy and rule
/// that made each, and the nodes that enforce them; the URL is the permalink.
pub async fn explain(viewer: Viewer, State(state): State<AppState>, Query(q): Query<ExplainQuery>) -> Response {
    // Explanations read every tenant's policies and endpoints.
    if let Err(e) = viewer.0.require_infra_read() {
        return refused(&viewer, StatusCode::FORBIDDEN, &e.message);
    }
    let (Some(from), Some(to)) = (q.from.clone().filter(|f| !f.is_empty()), q.to.clone().filter(|t| !t.is_empty())) else {
        return viewer.page("explain.html", "/ui/explain", "Explain", context! { port => q.port });
    };
    let port = q.port.clone().unwrap_or_else(|| "tcp/80".into());
    let form = context! { from => from.clone(), to => to.clone(), port => port.clone() };
    let probe = match tessera_policy::simulate::parse_probe(&port) {
        Ok(p) => p,
        Err(e) => {
            let error = context! { field => "port", message => e.message };
            return viewer.page("explain.html", "/ui/explain", "Explain", context! { error, ..form });
        }
    };
    // Asked of the policies exactly as compiled and distributed.
    let answered = state
        .dist
        .ask(|cluster, policies| {
            let (source, source_note) = stand_in(cluster, &from);
            let (target, target_note) = stand_in(cluster, &to);
            let verdict = tessera_policy::simulate::explain_in(cluster, policies, &source, &target, probe)
                .map_err(|e| (e.field.trim_start_matches("--").to_string(), e.message))?;
            let notes: Vec<String> = [source_note, target_note].into_iter().flatten().collect();
            let (from, to) = (source, target);
            let host_of = |name: &str| {
                let ip: Option<IpAddr> = name.parse().ok();
                cluster.endpoints.get(name).or_else(|| ip.and_then(|ip| cluster.endpoint_by_ip(ip))).and_then(|e| e.host.clone())
            };
            let nodes: std::collections::BTreeSet<String> = [host_of(&from), host_of(&to)].into_iter().flatten().collect();
            Ok((verdict, nodes, notes))
        })
        .await;
    let values = match answered {
        None => return failed(&viewer, "the policies are not compiled yet"),
        Some(Ok((verdict, nodes, notes))) => {
            let side = |v: &tessera_policy::eval::SideVerdict, dir: &str, who: &str| {
                v.compact(dir).unwrap_or_else(|| format!("{dir}: {who} is outside the cluster: no Tessera node decides"))
            };
            let permalink = format!("/ui/explain?from={}&to={}&port={}", encode(&from), encode(&to), encode(&port));
            context! {
                verdict => context! { allowed => verdict.allowed },
                egress => side(&verdict.egress, "egress", &from),
                ingress => side(&verdict.ingress, "ingress", &to),
                nodes => nodes.into_iter().collect::<Vec<_>>(),
                notes,
                permalink,
                ..form
            }
        }
        Some(Err((field, message))) => context! { error => context! { field, message }, ..form },
    };
    viewer.page("explain.html", "/ui/explain", "Explain", values)
}

/// What an explanation asks about for `text`: an endpoint (by id) or an address as given; a
/// segment (`tenant/segment`) by its first endpoint; a CIDR by its first endpoint inside it, or
/// its first address when none is. The note says who stands in.
fn stand_in(cluster: &tessera_policy::model::Cluster, text: &str) -> (String, Option<String>) {
    if cluster.endpoints.contains_key(text) || text.parse::<IpAddr>().is_ok() {
        return (text.to_string(), None);
    }
    if let Ok(net) = text.parse::<ipnet::IpNet>() {
        return match cluster.endpoints.values().find(|e| e.ips.iter().any(|ip| net.contains(ip))) {
            Some(e) => (e.id.clone(), Some(format!("{text} is represented by its first endpoint, {}", e.id))),
            None => {
                let first = net.hosts().next().unwrap_or(net.addr());
                (first.to_string(), Some(format!("{text} holds no endpoint: represented by {first}")))
            }
        };
    }
    if let Some((tenant, segment)) = text.split_once('/')
        && let Some(e) = cluster.endpoints.values().find(|e| e.namespace == tenant && e.segment == segment)
    {
        return (e.id.clone(), Some(format!("segment {text} is represented by its first endpoint, {}", e.id)));
    }
    (text.to_string(), None)
}

/// Percent-encoding for a query value.
pub(super) fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Nodes on one page.
const NODES_PAGE: usize = 100;

#[derive(Deserialize, Default)]
pub struct NodesQuery {
    #[serde(default)]
    q: String,
    /// Only nodes behind, failing or never seen.
    #[serde(default)]
    problems: Option<String>,
    page: Option<usize>,
}

pub async fn nodes(viewer: Viewer, State(state): State<AppState>, Query(q): Query<NodesQuery>) -> Response {
    if let Err(e) = viewer.0.require_infra_read() {
        return refused(&viewer, StatusCode::FORBIDDEN, &e.message);
    }
    let nodes = match state.dist.status().await {
        Ok(nodes) => nodes,
        Err(e) => return failed(&viewer, e),
    };
    let trouble = |n: &tessera_agent_api::NodeStatus| n.lag > 0 || n.last_error.is_some() || n.last_seen.is_none();
    let summary = context! {
        total => nodes.len(),
        behind => nodes.iter().filter(|n| n.lag > 0).count(),
        failing => nodes.iter().filter(|n| n.last_error.is_some()).count(),
        unseen => nodes.iter().filter(|n| n.last_seen.is_none()).count(),
    };
    let part = q.q.trim().to_string();
    let problems = q.problems.is_some();
    let matching: Vec<_> = nodes.into_iter().filter(|n| n.node.contains(part.as_str()) && (!problems || trouble(n))).collect();
    let href = format!("/ui/nodes?q={}{}&", encode(&part), if problems { "&problems=on" } else { "" });
    let (page, pager) = super::paginate(matching, q.page, NODES_PAGE, &href);
    // What each node enforces, from the state this replica serves it.
    let rows: Vec<Value> = page
        .iter()
        .map(|n| {
            let current = state.dist.node(&n.node).map(|c| c.current());
            let (endpoints, rules, elements, routes) =
                current.map(|s| (s.endpoints.len(), s.ruleset.rules, s.ruleset.element_count(), s.routes.len())).unwrap_or_default();
            context! { endpoints, rules, elements, routes, ..data(n) }
        })
        .collect();
    let values = context! { nodes => rows, summary, pager, q => part, problems, live => true };
    viewer.page("nodes.html", "/ui/nodes", "Nodes", values)
}

#[derive(Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
}

/// "Who owns 10.2.3.4?": the endpoint, block, segment, group and network of an address; or
/// the tenant, host or group of a name.
pub async fn search(viewer: Viewer, State(state): State<AppState>, Query(q): Query<SearchQuery>) -> Response {
    let query = q.q.unwrap_or_default().trim().to_string();
    let mut found: Vec<Value> = Vec::new();
    let mut add = |kind: &str, what: String| found.push(context! { kind, what });
    let scope = viewer.0.tenant_scope().map(String::from);
    let visible = |tenant: &str| scope.as_deref().is_none_or(|t| t == tenant);
    let lookup = async {
        if let Ok(ip) = query.parse::<IpAddr>() {
            let holder = EndpointQuery { address: Some(ip), tenant: scope.clone(), limit: 10, ..Default::default() };
            // The query keeps to the token's tenant.
            for e in state.store.endpoint_page(&holder).await?.endpoints {
                add("Endpoint", format!("{} (tenant {}, segment {}, on host {})", e.id, e.tenant, e.segment, e.host));
            }
            for b in state.store.blocks(BlockFilter::default()).await? {
                let tenant = b.tenant.clone().unwrap_or_default();
                if b.cidr.contains(&ip) && (viewer.infra() || visible(&tenant)) {
                    let owner = match (&b.tenant, &b.segment) {
                        (Some(t), Some(s)) => format!("segment {t}/{s}"),
                        _ => "no segment".into(),
                    };
                    let host = b.host.as_deref().unwrap_or("none");
                    add("Block", format!("{} of host {host} in group {} ({owner}; {} used)", b.cidr, b.group, b.used));
                }
            }
            if viewer.infra() {
                let topology = state.store.topology().await?;
                for g in &topology.layout.groups {
                    for cidr in g.cidrs.values().filter(|c| c.contains(&ip)) {
                        add("Group", format!("{} ({cidr})", g.path));
                    }
                }
                for n in topology.layout.networks.iter().filter(|n| n.cidr.contains(&ip)) {
                    add("Network", format!("{} ({})", n.name, n.cidr));
                }
                for h in state.store.hosts().await? {
                    if h.ips.contains(&ip) {
                        add("Host", format!("{} (group {})", h.name, h.group));
                    }
                }
            }
        } else if !query.is_empty() {
            for t in state.store.tenants().await?.into_iter().filter(|t| t.name == query && visible(&t.name)) {
                add("Tenant", format!("{} (origin {})", t.name, t.origin.as_str()));
            }
            if viewer.infra() {
                for h in state.store.hosts().await?.into_iter().filter(|h| h.name == query) {
                    add("Host", format!("{} (group {}, {:?})", h.name, h.group, h.ips));
                }
                let topology = state.store.topology().await?;
                for g in topology.layout.groups.iter().filter(|g| g.name == query || g.path == query) {
                    let cidrs: Vec<String> = g.cidrs.values().map(ToString::to_string).collect();
                    add("Group", format!("{} ({})", g.path, cidrs.join(", ")));
                }
            }
        }
        Ok::<_, crate::store::StoreError>(())
    };
    if let Err(e) = lookup.await {
        return failed(&viewer, e);
    }
    viewer.page("search.html", "", "Search", context! { query, found })
}

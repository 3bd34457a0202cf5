//! Tenants and segments: each with its aggregated CIDRs, a segment × segment reachability matrix
//! (every cell links to its explanation), and the forms the token may use.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::{Value, context};
use serde::Deserialize;
use tessera_policy::model::{Cluster, Policy};

use super::pages::{data, encode};
use super::{FromThisSite, Viewer, refused};
use crate::api::AppState;
use crate::api::inventory::{segment_view, tenant_view};
use crate::store::Origin;

/// What the matrix probes.
const PROBE: &str = "tcp/80";
/// Larger tenants get no matrix (each cell is an evaluation).
const MATRIX_LIMIT: usize = 12;

/// Tenants on one page of the listing.
const TENANTS_PAGE: usize = 20;

#[derive(Deserialize, Default)]
pub struct TenantsQuery {
    #[serde(default)]
    q: String,
    page: Option<usize>,
}

/// Which tenants a page shows: one page of the listing, or one tenant with its matrix.
enum Shown<'a> {
    Listing(&'a TenantsQuery),
    One(&'a str),
}

pub async fn tenants(viewer: Viewer, State(state): State<AppState>, Query(q): Query<TenantsQuery>) -> Response {
    render(&viewer, &state, Shown::Listing(&q), context! {}).await
}

/// One tenant: its segments, labels, forms, and the reachability matrix between its segments.
pub async fn tenant(viewer: Viewer, State(state): State<AppState>, Path(tenant): Path<String>) -> Response {
    render(&viewer, &state, Shown::One(&tenant), context! {}).await
}

async fn render(viewer: &Viewer, state: &AppState, shown: Shown<'_>, extra: Value) -> Response {
    let listed = async {
        let all: Vec<String> = state.store.tenants().await.map_err(|e| e.to_string())?.into_iter().map(|t| t.name).collect();
        let (names, pager, single) = match &shown {
            Shown::One(name) => {
                if !all.iter().any(|t| t == name) || !viewer.0.can_read_tenant(name) {
                    return Ok(None);
                }
                (vec![name.to_string()], Value::from(()), true)
            }
            Shown::Listing(q) => {
                let part = q.q.trim();
                let readable: Vec<String> = all.into_iter().filter(|t| viewer.0.can_read_tenant(t) && t.contains(part)).collect();
                let (names, pager) = super::paginate(readable, q.page, TENANTS_PAGE, &format!("/ui/tenants?q={}&", encode(part)));
                (names, pager, false)
            }
        };
        let mut out = Vec::new();
        for name in names {
            let view = tenant_view(state, &name).await.map_err(|e| e.message)?;
            let mut segments = Vec::new();
            for s in &view.segments {
                segments.push(segment_view(state, &name, s).await.map_err(|e| e.message)?);
            }
            // The matrix evaluates the compiled policies: only on a tenant's own page.
            let matrix = match single {
                true => state.dist.ask(|cluster, policies| matrix(cluster, policies, &name, &view.segments)).await.flatten(),
                false => None,
            };
            out.push(context! {
                name => view.name.clone(),
                origin => view.origin.as_str(),
                labels => data(&view.labels),
                cidrs => data(&view.cidrs),
                segment_views => data(&segments),
                matrix,
                can_write => viewer.0.require_tenant_write(&name).is_ok(),
                can_delete => viewer.0.require_admin().is_ok() && view.origin == Origin::Api,
                // A Namespace's labels are Kubernetes' to change.
                can_relabel => viewer.0.require_admin().is_ok() && view.origin == Origin::Api,
                label_text => labels_text(&view.labels),
                revision => view.revision,
            });
        }
        Ok::<_, String>(Some((out, pager, single)))
    };
    match listed.await {
        Ok(Some((tenants, pager, single))) => {
            let q = match shown {
                Shown::Listing(q) => q.q.trim().to_string(),
                Shown::One(_) => String::new(),
            };
            let values = context! {
                tenants, pager, single, q, probe => PROBE, matrix_limit => MATRIX_LIMIT, can_create => viewer.0.require_admin().is_ok() && !single,
                // A form's outcome stays as it is: a live refresh would fetch the listing over it.
                live => extra.len() == Some(0), ..extra
            };
            viewer.page("tenants.html", "/ui/tenants", "Tenants", values)
        }
        Ok(None) => refused(viewer, StatusCode::NOT_FOUND, "No such tenant this token may read."),
        Err(e) => super::failure(&e),
    }
}

/// Rows of from-segment, cells of to-segment: the verdict between an endpoint of each (the first
/// by id), linked to its explanation; none when a segment has no endpoint or there are too many.
fn matrix(cluster: &Cluster, policies: &[Policy], tenant: &str, segments: &[String]) -> Option<Value> {
    if segments.len() > MATRIX_LIMIT {
        return None;
    }
    let mut first: BTreeMap<&str, &str> = BTreeMap::new();
    for e in cluster.endpoints.values().filter(|e| e.namespace == tenant && !e.ips.is_empty()) {
        first.entry(e.segment.as_str()).or_insert(e.id.as_str());
    }
    let with: Vec<&String> = segments.iter().filter(|s| first.contains_key(s.as_str())).collect();
    if with.len() < 2 {
        return None;
    }
    let probe = tessera_policy::simulate::parse_probe(PROBE).ok()?;
    let rows: Vec<Value> = with
        .iter()
        .map(|from| {
            let cells: Vec<Value> = with
                .iter()
                .map(|to| {
                    let (a, b) = (first[from.as_str()], first[to.as_str()]);
                    let allowed = tessera_policy::simulate::explain_in(cluster, policies, a, b, probe).map(|v| v.allowed).unwrap_or(false);
                    let href = format!("/ui/explain?from={}&to={}&port={}", encode(a), encode(b), encode(PROBE));
                    context! { allowed, href }
                })
                .collect();
            context! { segment => from.as_str(), cells }
        })
        .collect();
    Some(context! { segments => data(&with), rows })
}

#[derive(Deserialize)]
pub struct NewTenant {
    name: String,
    #[serde(default)]
    labels: String,
}

/// `team=shop, env=prod` → labels; the first malformed pair is the error.
pub(super) fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| format!("`{pair}` is not key=value"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

/// Labels as the form shows them: `key=value, key=value`.
fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

#[derive(Deserialize)]
pub struct NewLabels {
    #[serde(default)]
    labels: String,
    /// The revision the form showed: a relabel applies only over that one.
    #[serde(default, deserialize_with = "super::optional_number")]
    revision: Option<i64>,
}

/// Replace a tenant's labels (API-made tenants; a Namespace's are Kubernetes').
pub async fn relabel_tenant(
    viewer: Viewer,
    State(state): State<AppState>,
    _: FromThisSite,
    Path(tenant): Path<String>,
    axum::Form(form): axum::Form<NewLabels>,
) -> Response {
    let result = async {
        viewer.0.require_admin()?;
        let labels = parse_labels(&form.labels).map_err(|m| crate::api::ApiError::invalid("labels", m))?;
        crate::api::inventory::managed_here(state.store.tenant(&tenant).await?.origin, "tenant", &tenant, "Namespace")?;
        state.ops.update_tenant(&tenant, labels, form.revision).await?;
        Ok(format!("Tenant {tenant} relabelled."))
    };
    outcome(&viewer, &state, Some(&tenant), result.await).await
}

/// Replace a segment's labels.
pub async fn relabel_segment(
    viewer: Viewer,
    State(state): State<AppState>,
    _: FromThisSite,
    Path((tenant, segment)): Path<(String, String)>,
    axum::Form(form): axum::Form<NewLabels>,
) -> Response {
    let result = async {
        viewer.0.require_tenant_write(&tenant)?;
        let labels = parse_labels(&form.labels).map_err(|m| crate::api::ApiError::invalid("labels", m))?;
        state.ops.update_segment(&tenant, &segment, labels, form.revision).await?;
        Ok(format!("Segment {tenant}/{segment} relabelled."))
    };
    outcome(&viewer, &state, Some(&tenant), result.await).await
}

/// The page again with a form's outcome: the API's error at its field, or what was done.
/// `tenant` is the tenant the form was about (its page comes back), or none (the listing).
async fn outcome(viewer: &Viewer, state: &AppState, tenant: Option<&str>, result: Result<String, crate::api::ApiError>) -> Response {
    let listing = TenantsQuery::default();
    let shown = || match tenant {
        Some(t) => Shown::One(t),
        None => Shown::Listing(&listing),
    };
    match result {
        Ok(done) => render(viewer, state, shown(), context! { done }).await,
        Err(e) if e.status == StatusCode::FORBIDDEN => refused(viewer, e.status, &e.message),
        Err(e) => {
            let error = context! { field => e.field.unwrap_or_else(|| "form".into()), message => e.message };
            render(viewer, state, shown(), context! { error }).await
        }
    }
}

pub async fn create_tenant(
    viewer: Viewer,
    State(state): State<AppState>,
    _: FromThisSite,
    axum::Form(form): axum::Form<NewTenant>,
) -> Response {
    let result = async {
        viewer.0.require_admin()?;
        let labels = parse_labels(&form.labels).map_err(|m| crate::api::ApiError::invalid("labels", m))?;
        let tenant = state.ops.create_tenant(form.name.trim(), labels).await?;
        Ok(format!("Tenant {} created, with its default segment.", tenant.name))
    };
    let result = result.await;
    let created = result.is_ok().then(|| form.name.trim().to_string());
    outcome(&viewer, &state, created.as_deref(), result).await
}

#[derive(Deserialize)]
pub struct NewSegment {
    name: String,
}

pub async fn create_segment(
    viewer: Viewer,
    State(state): State<AppState>,
    _: FromThisSite,
    Path(tenant): Path<String>,
    axum::Form(form): axum::Form<NewSegment>,
) -> Response {
    let result = async {
        viewer.0.require_tenant_write(&tenant)?;
        let segment = state.ops.create_segment(&tenant, form.name.trim(), BTreeMap::new()).await?;
        Ok(format!("Segment {}/{} created.", segment.tenant, segment.name))
    };
    outcome(&viewer, &state, Some(&tenant), result.await).await
}

pub async fn delete_tenant(viewer: Viewer, State(state): State<AppState>, _: FromThisSite, Path(tenant): Path<String>) -> Response {
    let result = async {
        viewer.0.require_admin()?;
        if state.store.tenant(&tenant).await?.origin == Origin::Kubernetes {
            return Err(crate::api::ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("tenant `{tenant}` is the Namespace `{tenant}`: delete it with the Kubernetes API"),
            ));
        }
        state.ops.delete_tenant(&tenant, None).await?;
        Ok(format!("Tenant {tenant} deleted."))
    };
    match result.await {
        Ok(_) => Redirect::to("/ui/tenants").into_response(),
        Err(e) => outcome(&viewer, &state, Some(&tenant), Err(e)).await,
    }
}

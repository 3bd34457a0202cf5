//! The topology: the prefix-group tree drawn from the data, networks and their use, the routes
//! each scope announces under the budget; and a change to it, tried first (a dry run shows
//! what would move) and then applied exactly as previewed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::{Value, context};
use serde::Deserialize;
use tessera_topology::format::Format;

use super::pages::{data, failed};
use super::{FromThisSite, Viewer, refused, tree};
use crate::api::AppState;
use crate::store::BlockFilter;

pub async fn topology(viewer: Viewer, State(state): State<AppState>) -> Response {
    render(&viewer, &state, None).await
}

/// The page, with `change` (a dry run's plan or an applied change) when a form asked for one.
async fn render(viewer: &Viewer, state: &AppState, change: Option<Value>) -> Response {
    if let Err(e) = viewer.0.require_infra_read() {
        return refused(viewer, StatusCode::FORBIDDEN, &e.message);
    }
    let (topology, hosts, blocks) = match async {
        Ok::<_, crate::store::StoreError>((
            state.store.topology().await?,
            state.store.hosts().await?,
            state.store.blocks(BlockFilter::default()).await?,
        ))
    }
    .await
    {
        Ok(t) => t,
        Err(e) => return failed(viewer, e),
    };
    // One read of the store serves the tree, the tables and the route plan.
    let view = match crate::api::topology::view_of(&topology, &hosts, &blocks) {
        Ok(v) => v,
        Err(e) => return failed(viewer, e.message),
    };
    let plan = crate::routes::fabric_plan(&topology, &hosts, None).unwrap_or_default();
    let boxes: Vec<tree::Box> = view
        .groups
        .iter()
        .map(|g| tree::Box {
            path: g.path.clone(),
            name: g.name.clone(),
            cidrs: g.cidrs.values().cloned().collect(),
            hosts: g.hosts,
            utilization: g.utilization,
            route: plan.fabric_routes.iter().filter(|r| r.scope == g.path).map(|r| r.dst.to_string()).reduce(|a, b| format!("{a} {b}")),
        })
        .collect();
    let vpc = state.vpc_routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let vpc_tables: Vec<Value> =
        vpc.tables.values().map(|t| context! { id => t.id.clone(), budget => t.budget, desired => data(&t.desired) }).collect();
    let values = context! {
        revision => view.revision,
        tree => tree::svg(&boxes),
        networks => data(&view.networks),
        routes => data(&plan.fabric_routes),
        over_coverage => data(&plan.over_coverage),
        budget => plan.budget,
        vpc_tables,
        can_change => viewer.0.require_admin().is_ok(),
        document => serde_json::to_string_pretty(&topology.spec).unwrap_or_default(),
        live => change.is_none(),
        change,
    };
    viewer.page("topology.html", "/ui/topology", "Topology", values)
}

#[derive(Deserialize)]
pub struct ChangeForm {
    document: String,
    /// `dry-run` or `apply`.
    action: String,
    /// The revision the dry run was made against: an apply changes only that one.
    #[serde(default, deserialize_with = "super::optional_number")]
    revision: Option<i64>,
}

/// A topology change from the form: a dry run shows its plan (CIDRs that change, hosts that
/// move, what is refused) and offers to apply it; applying checks it is still against the
/// revision previewed. Nothing is stored on a dry run, a refusal or an error.
pub async fn change(viewer: Viewer, State(state): State<AppState>, _: FromThisSite, axum::Form(form): axum::Form<ChangeForm>) -> Response {
    if let Err(e) = viewer.0.require_admin() {
        return refused(&viewer, StatusCode::FORBIDDEN, &e.message);
    }
    let dry_run = form.action != "apply";
    let if_match = if dry_run { None } else { form.revision };
    let outcome = state.ops.apply_topology(form.document.clone(), Format::Auto, if_match, dry_run).await;
    let change = match outcome {
        Ok((plan, revision)) => context! {
            dry_run,
            applied => revision.is_some(),
            allowed => plan.is_allowed(),
            nothing => plan.cidr_changes.is_empty() && plan.host_moves.is_empty() && plan.released_blocks_dropped.is_empty(),
            plan => data(&plan),
            against => form.revision,
            document => form.document,
        },
        Err(e) => {
            let e = crate::api::ApiError::from(e);
            context! { error => context! { field => e.field.unwrap_or_else(|| "document".into()), message => e.message }, document => form.document }
        }
    };
    render(&viewer, &state, Some(change)).await
}

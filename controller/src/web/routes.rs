//! Routes: what each target should hold beside what it holds — every VPC route table (the
//! writer-lease holder's last pass), every host's BGP speaker (its agent's report) and this
//! replica's route-server sessions — with drift repairs and the budget.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::{Value, context};

use super::pages::data;
use super::{Viewer, refused};
use crate::api::AppState;
use crate::vpc_routes::TableStatus;

/// One destination of a VPC table: wanted, held, and what that makes it.
fn table_rows(t: &TableStatus) -> Vec<Value> {
    let collisions: BTreeSet<&str> = t.collisions.iter().map(String::as_str).collect();
    let destinations: BTreeSet<&String> = t.desired.keys().chain(t.actual.keys()).collect();
    destinations
        .into_iter()
        .map(|dst| {
            let (desired, actual) = (t.desired.get(dst), t.actual.get(dst));
            let (state, class) = match (desired, actual) {
                (Some(d), Some(a)) if d == a => ("in place", "ok"),
                (Some(_), _) if collisions.iter().any(|c| c.starts_with(&format!("{dst} "))) => ("held by a foreign route", "bad"),
                (Some(_), Some(_)) => ("other target: to replace", "bad"),
                (Some(_), None) => ("missing: to create", "bad"),
                (None, Some(_)) => ("not Tessera's here", "other"),
                (None, None) => ("", "other"),
            };
            context! { dst, desired, actual, state, class }
        })
        .collect()
}

pub async fn routes(viewer: Viewer, State(state): State<AppState>) -> Response {
    if let Err(e) = viewer.0.require_infra_read() {
        return refused(&viewer, StatusCode::FORBIDDEN, &e.message);
    }
    let cloud = state.vpc_routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let tables: Vec<Value> = cloud
        .tables
        .values()
        .map(|t| {
            let in_place = t.desired.iter().filter(|(d, target)| t.actual.get(*d) == Some(target)).count();
            context! { rows => table_rows(t), in_place, ..data(t) }
        })
        .collect();
    let bgp = match crate::api::fabric::bgp_nodes(&state).await {
        Ok(nodes) => nodes,
        Err(e) => return super::failure(&e.message),
    };
    let speakers: Vec<_> = bgp.into_iter().filter(|n| n.local_as.is_some() || !n.sessions.is_empty()).collect();
    let out_of_sync = speakers.iter().filter(|n| !n.in_sync && !n.drained).count();
    let servers = crate::route_servers::sessions(&state.route_servers);
    let lease = state.store.lease(crate::writer::WRITER_LEASE).await.ok().and_then(|(lease, _)| lease.map(|l| l.holder));
    let values = context! {
        tables,
        cloud_error => cloud.last_error,
        speakers => data(&speakers),
        out_of_sync,
        servers => data(&servers),
        holds_lease => state.writer.is_leader(),
        holder => lease,
        live => true,
    };
    viewer.page("routes.html", "/ui/routes", "Routes", values)
}

//! Topology, networks and route plan handlers.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tessera_topology::{Format, Prefix, RoutePlan};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{DOCUMENT_TYPES, IfMatch, QueryParams, etag, read_body};
use super::views::{GroupView, NetworkView, RoutesQuery, TopologyChangeView, TopologyQuery, TopologyView};
use crate::store::{BlockFilter, BlockRecord, HostRecord, TopologyRecord};

/// The topology with computed CIDRs and utilization.
#[utoipa::path(get, path = "/v1/topology", responses((status = 200, body = TopologyView), (status = 401, body = ErrorBody)))]
pub async fn get_topology(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    caller.require_infra_read()?;
    let view = topology_view(&state).await?;
    Ok((etag(view.revision), Json(view)).into_response())
}

async fn topology_view(state: &AppState) -> ApiResult<TopologyView> {
    let topology = state.store.topology().await?;
    let hosts = state.store.hosts().await?;
    let blocks = state.store.blocks(BlockFilter::default()).await?;
    view_of(&topology, &hosts, &blocks)
}

/// The topology with each group's and network's hosts and use, from what the store holds.
pub(crate) fn view_of(topology: &TopologyRecord, hosts: &[HostRecord], blocks: &[BlockRecord]) -> ApiResult<TopologyView> {
    let layout = &topology.layout;
    let mut host_count: BTreeMap<&str, usize> = BTreeMap::new();
    for h in hosts {
        *host_count.entry(h.group.as_str()).or_default() += 1;
    }
    let mut groups = Vec::new();
    for g in &layout.groups {
        // A group's figures include its descendants.
        let inside = |path: &str| path == g.path || path.starts_with(&format!("{}/", g.path));
        let mine: Vec<_> = blocks.iter().filter(|b| inside(&b.group)).collect();
        let used: i64 = mine.iter().map(|b| b.used).sum();
        let size: u128 = g.cidrs.values().map(|c| Prefix::from_net(c).size()).sum();
        groups.push(GroupView {
            path: g.path.clone(),
            name: g.name.clone(),
            leaf: g.is_leaf(),
            assignment: g.assignment.clone(),
            cidrs: g.cidrs.iter().map(|(n, c)| (layout.networks[*n].name.clone(), c.to_string())).collect(),
            hosts: host_count.iter().filter(|(p, _)| inside(p)).map(|(_, n)| n).sum(),
            blocks: mine.len(),
            used_addresses: used,
            utilization: ratio(used, size),
        });
    }
    let networks = layout
        .networks
        .iter()
        .map(|n| {
            let mine: Vec<_> = blocks.iter().filter(|b| b.network == n.name).collect();
            let used = mine.iter().map(|b| b.used).sum();
            NetworkView {
                name: n.name.clone(),
                cidr: n.cidr.to_string(),
                block_prefix: n.block_prefix,
                tenants: n.tenants.as_ref().map(|t| t.iter().cloned().collect()),
                blackouts: n.blackouts.iter().map(ToString::to_string).collect(),
                blocks: mine.len(),
                used_addresses: used,
                utilization: ratio(used, Prefix::from_net(&n.cidr).size()),
            }
        })
        .collect();
    let spec = serde_json::to_value(&topology.spec).map_err(|e| ApiError::from(crate::store::StoreError::Corrupt(e.to_string())))?;
    Ok(TopologyView { revision: topology.revision, spec, networks, groups })
}

fn ratio(used: i64, size: u128) -> f64 {
    if size == 0 { 0.0 } else { used as f64 / size as f64 }
}

/// Replace the topology (Tessera YAML/JSON or Romana v2 JSON). `?dryRun=true` returns the plan
/// only. A change that would move an allocated address is refused with 409 and the plan.
#[utoipa::path(
    put,
    path = "/v1/topology",
    params(("dryRun" = Option<bool>, Query), ("format" = Option<String>, Query), ("If-Match" = Option<String>, Header)),
    request_body(content = String, description = "topology document (YAML or JSON)", content_type = "application/yaml"),
    responses(
        (status = 200, body = TopologyChangeView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)
    )
)]
pub async fn put_topology(
    State(state): State<AppState>,
    caller: Caller,
    IfMatch(if_match): IfMatch,
    QueryParams(query): QueryParams<TopologyQuery>,
    request: Request,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let format = match query.format.as_deref() {
        None | Some("auto") => Format::Auto,
        Some("tessera") => Format::Tessera,
        Some("romana") => Format::Romana,
        Some(other) => {
            return Err(ApiError::bad_request("query.format", format!("`{other}` is not one of tessera, romana, auto")));
        }
    };
    let body = read_body(request, DOCUMENT_TYPES).await?;
    let text = String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad_request("body", "the document is not UTF-8"))?;
    let (plan, revision) = state.ops.apply_topology(text, format, if_match, query.dry_run).await?;
    let plan_json = serde_json::to_value(&plan).map_err(|e| ApiError::from(crate::store::StoreError::Corrupt(e.to_string())))?;
    if !query.dry_run && revision.is_none() {
        let reasons: Vec<String> = plan.refusals.iter().map(|r| format!("{}: {}", r.subject, r.message)).collect();
        let body = serde_json::json!({
            "error": {"code": "refused", "message": format!("the change would move allocated addresses: {}", reasons.join("; "))},
            "plan": plan_json,
        });
        return Ok((StatusCode::CONFLICT, Json(body)).into_response());
    }
    let current = match revision {
        Some(r) => r,
        None => state.store.topology().await?.revision,
    };
    let view = TopologyChangeView { applied: revision.is_some(), dry_run: query.dry_run, revision: current, plan: plan_json };
    Ok((etag(current), Json(view)).into_response())
}

/// Networks with their utilization (defined through the topology document).
#[utoipa::path(get, path = "/v1/networks", responses((status = 200, body = [NetworkView])))]
pub async fn list_networks(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<NetworkView>>> {
    caller.require_infra_read()?;
    Ok(Json(topology_view(&state).await?.networks))
}

/// The route plan: host routes, fabric/VPC routes within `budget`, and any over-coverage.
#[utoipa::path(get, path = "/v1/routes", params(("budget" = Option<usize>, Query)), responses((status = 200, body = Object), (status = 422, body = ErrorBody)))]
pub async fn get_routes(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(query): QueryParams<RoutesQuery>,
) -> ApiResult<Json<RoutePlan>> {
    caller.require_infra_read()?;
    let (topology, hosts, blocks) =
        (state.store.topology().await?, state.store.hosts().await?, state.store.blocks(BlockFilter::default()).await?);
    let plan =
        crate::routes::plan(&topology, &hosts, &blocks, query.budget).map_err(|e| ApiError::invalid("query.budget", e.to_string()))?;
    Ok(Json(plan))
}

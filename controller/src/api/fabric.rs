//! The fabric: virtual IPs, draining hosts, and every node's BGP sessions as its agent reports
//! them beside what it should announce.

use std::net::IpAddr;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{IfMatch, JsonBody, etag};
use super::views::{BgpNodeView, NewVipBody, VipView};
use crate::store::VipRecord;

fn vip_view(v: VipRecord) -> VipView {
    VipView { address: v.address.to_string(), hosts: v.hosts, group: v.group, holder: v.holder, revision: v.revision }
}

#[utoipa::path(get, path = "/v1/vips", responses((status = 200, body = [VipView])))]
pub async fn list_vips(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<VipView>>> {
    caller.require_infra_read()?;
    Ok(Json(state.store.vips().await?.into_iter().map(vip_view).collect()))
}

/// Define a virtual IP: one healthy host of `hosts` (or under `group`) holds it and announces
/// it; when that host falls silent, another takes it over.
#[utoipa::path(post, path = "/v1/vips", request_body = NewVipBody, responses((status = 201, body = VipView), (status = 422, body = ErrorBody)))]
pub async fn create_vip(State(state): State<AppState>, caller: Caller, JsonBody(body): JsonBody<NewVipBody>) -> ApiResult<Response> {
    caller.require_admin()?;
    let vip = state.ops.create_vip(&body.address, body.hosts, body.group).await?;
    Ok((StatusCode::CREATED, etag(vip.revision), Json(vip_view(vip))).into_response())
}

#[utoipa::path(get, path = "/v1/vips/{address}", responses((status = 200, body = VipView), (status = 404, body = ErrorBody)))]
pub async fn get_vip(State(state): State<AppState>, caller: Caller, Path(address): Path<String>) -> ApiResult<Response> {
    caller.require_infra_read()?;
    let parsed: IpAddr = address.parse().map_err(|_| ApiError::not_found(format!("vip `{address}` not found")))?;
    let vip = state.store.vip(&parsed).await?;
    Ok((etag(vip.revision), Json(vip_view(vip))).into_response())
}

#[utoipa::path(delete, path = "/v1/vips/{address}", responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_vip(
    State(state): State<AppState>,
    caller: Caller,
    IfMatch(if_match): IfMatch,
    Path(address): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    state.ops.delete_vip(&address, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Drain a host: it withdraws every announcement and gives up its VIPs; its pods stay.
#[utoipa::path(post, path = "/v1/hosts/{name}/drain", responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn drain_host(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    state.ops.set_drained(&name, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Bring a drained host back: it announces again and may hold VIPs.
#[utoipa::path(delete, path = "/v1/hosts/{name}/drain", responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn undrain_host(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    state.ops.set_drained(&name, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every host's BGP speaker: desired prefixes (from the topology, its blocks and VIPs) against
/// what its agent reports announcing, and each session's state.
#[utoipa::path(get, path = "/v1/bgp", responses((status = 200, body = [BgpNodeView])))]
pub async fn bgp(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<BgpNodeView>>> {
    caller.require_infra_read()?;
    Ok(Json(bgp_nodes(&state).await?))
}

/// Each host's speaker: what it should announce beside what its agent reports.
pub async fn bgp_nodes(state: &AppState) -> ApiResult<Vec<BgpNodeView>> {
    let hosts = state.store.hosts().await?;
    let mut records = state.dist.records().await?;
    let mut out = Vec::new();
    for host in hosts {
        let desired = state.dist.node(&host.name).map(|c| c.current());
        let speaker = desired.as_ref().and_then(|s| s.bgp.clone());
        let report = records.remove(&host.name).map(|r| r.report).unwrap_or_default();
        let fabric = report.fabric.unwrap_or_default();
        let mut desired_prefixes: Vec<String> = speaker.iter().flat_map(|s| s.prefixes.iter().map(ToString::to_string)).collect();
        desired_prefixes.sort();
        let mut announced: Vec<String> = fabric.announced.iter().map(ToString::to_string).collect();
        announced.sort();
        out.push(BgpNodeView {
            node: host.name,
            group: host.group,
            drained: host.drained,
            last_seen: report.last_seen,
            local_as: speaker.as_ref().map(|s| s.local_as),
            in_sync: desired_prefixes == announced,
            desired: desired_prefixes,
            announced,
            vips: desired.map(|s| s.vips.iter().map(ToString::to_string).collect()).unwrap_or_default(),
            sessions: fabric.sessions.into_iter().map(|s| serde_json::to_value(s).unwrap_or_default()).collect(),
        });
    }
    Ok(out)
}

/// Controller mode: this replica's sessions with route servers and the hosts each announces as
/// next hops. Only the writer-lease holder speaks (`GET /v1/leader` says which).
#[utoipa::path(get, path = "/v1/bgp/controller", responses((status = 200, body = Object)))]
pub async fn bgp_controller(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<serde_json::Value>> {
    caller.require_infra_read()?;
    let sessions = crate::route_servers::sessions(&state.route_servers);
    Ok(Json(serde_json::json!({
        "replica": state.writer.replica,
        "holdsLease": state.writer.is_leader(),
        "sessions": sessions,
    })))
}

/// VPC route tables as this replica's last passes left them (the writer-lease holder keeps
/// them): per table desired and actual routes, budget used, collisions, drift repairs, calls,
/// throttles, last error.
#[utoipa::path(get, path = "/v1/routes/cloud", responses((status = 200, body = Object)))]
pub async fn cloud_routes(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<serde_json::Value>> {
    caller.require_infra_read()?;
    let status = state.vpc_routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let tables: Vec<crate::vpc_routes::TableStatus> = status.tables.into_values().collect();
    Ok(Json(serde_json::json!({
        "replica": state.writer.replica,
        "holdsLease": state.writer.is_leader(),
        "tables": tables,
        "lastError": status.last_error,
    })))
}

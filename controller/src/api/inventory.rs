//! Hosts, tenants and segments handlers.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tessera_topology::aggregate;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiResult, ErrorBody};
use super::extract::{IfMatch, JsonBody, etag};
use super::views::{HostView, NewHostBody, NewSegmentBody, NewTenantBody, SegmentView, TenantView, UpdateHostBody, UpdateLabelsBody};
use crate::store::{BlockFilter, HostRecord, Origin, StoreError};

/// Objects Kubernetes manages are changed there, not here (the operator would undo it).
pub(crate) fn managed_here(origin: Origin, kind: &str, name: &str, object: &str) -> ApiResult<()> {
    match origin {
        Origin::Api => Ok(()),
        Origin::Kubernetes => {
            Err(StoreError::Conflict(format!("{kind} `{name}` is managed by Kubernetes: change the {object} `{name}` instead")).into())
        }
    }
}

async fn host_view(state: &AppState, h: HostRecord) -> ApiResult<HostView> {
    let blocks = state.store.blocks(BlockFilter { host: Some(&h.name), ..Default::default() }).await?;
    Ok(HostView {
        name: h.name,
        group: h.group,
        ips: h.ips.iter().map(ToString::to_string).collect(),
        labels: h.labels,
        pinned: h.pinned,
        drained: h.drained,
        cloud_target: h.cloud_target,
        revision: h.revision,
        origin: h.origin,
        blocks: blocks.iter().map(|b| b.cidr.to_string()).collect(),
        cidrs: aggregate(&blocks.iter().map(|b| b.cidr).collect::<Vec<_>>()).iter().map(ToString::to_string).collect(),
    })
}

#[utoipa::path(get, path = "/v1/hosts", responses((status = 200, body = [HostView])))]
pub async fn list_hosts(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<HostView>>> {
    caller.require_infra_read()?;
    let mut out = Vec::new();
    for h in state.store.hosts().await? {
        out.push(host_view(&state, h).await?);
    }
    Ok(Json(out))
}

/// Register a host; it is placed in the eligible leaf group with the fewest hosts.
#[utoipa::path(post, path = "/v1/hosts", request_body = NewHostBody, responses((status = 201, body = HostView), (status = 422, body = ErrorBody)))]
pub async fn create_host(State(state): State<AppState>, caller: Caller, JsonBody(body): JsonBody<NewHostBody>) -> ApiResult<Response> {
    caller.require_admin()?;
    let host = state.ops.create_host(body.name, &body.ips, body.labels, body.cloud_target).await?;
    let revision = host.revision;
    Ok((StatusCode::CREATED, etag(revision), Json(host_view(&state, host).await?)).into_response())
}

/// Change a host's IPs and labels (`If-Match` makes it conditional on the revision).
#[utoipa::path(put, path = "/v1/hosts/{name}", request_body = UpdateHostBody, responses((status = 200, body = HostView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_host(
    State(state): State<AppState>,
    caller: Caller,
    IfMatch(if_match): IfMatch,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<UpdateHostBody>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    managed_here(state.store.host(&name).await?.origin, "host", &name, "Node")?;
    let host = state.ops.update_host(&name, &body.ips, body.labels, body.cloud_target, if_match).await?;
    Ok((etag(host.revision), Json(host_view(&state, host).await?)).into_response())
}

#[utoipa::path(get, path = "/v1/hosts/{name}", responses((status = 200, body = HostView), (status = 404, body = ErrorBody)))]
pub async fn get_host(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require_infra_read()?;
    let host = state.store.host(&name).await?;
    Ok((etag(host.revision), Json(host_view(&state, host).await?)).into_response())
}

/// Remove a host: its endpoints are released and its blocks return to its group.
#[utoipa::path(delete, path = "/v1/hosts/{name}", responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_host(
    State(state): State<AppState>,
    caller: Caller,
    IfMatch(if_match): IfMatch,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    managed_here(state.store.host(&name).await?.origin, "host", &name, "Node")?;
    state.ops.delete_host(&name, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn tenant_view(state: &AppState, name: &str) -> ApiResult<TenantView> {
    let tenant = state.store.tenant(name).await?;
    let segments = state.store.segments(name).await?;
    let blocks = state.store.blocks(BlockFilter { tenant: Some(name), ..Default::default() }).await?;
    let cidrs: Vec<_> = blocks.iter().map(|b| b.cidr).collect();
    Ok(TenantView {
        name: tenant.name,
        labels: tenant.labels,
        revision: tenant.revision,
        origin: tenant.origin,
        segments: segments.into_iter().map(|s| s.name).collect(),
        blocks: cidrs.iter().map(ToString::to_string).collect(),
        cidrs: aggregate(&cidrs).iter().map(ToString::to_string).collect(),
    })
}

#[utoipa::path(get, path = "/v1/tenants", responses((status = 200, body = [TenantView])))]
pub async fn list_tenants(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<TenantView>>> {
    let mut out = Vec::new();
    for t in state.store.tenants().await? {
        if caller.can_read_tenant(&t.name) {
            out.push(tenant_view(&state, &t.name).await?);
        }
    }
    Ok(Json(out))
}

/// Create a tenant (with its `default` segment).
#[utoipa::path(post, path = "/v1/tenants", request_body = NewTenantBody, responses((status = 201, body = TenantView), (status = 409, body = ErrorBody)))]
pub async fn create_tenant(State(state): State<AppState>, caller: Caller, JsonBody(body): JsonBody<NewTenantBody>) -> ApiResult<Response> {
    caller.require_admin()?;
    let tenant = state.ops.create_tenant(&body.name, body.labels).await?;
    Ok((StatusCode::CREATED, etag(tenant.revision), Json(tenant_view(&state, &tenant.name).await?)).into_response())
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}", responses((status = 200, body = TenantView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_tenant(State(state): State<AppState>, caller: Caller, Path(tenant): Path<String>) -> ApiResult<Response> {
    caller.require_tenant_read(&tenant)?;
    let view = tenant_view(&state, &tenant).await?;
    Ok((etag(view.revision), Json(view)).into_response())
}

/// Replace a tenant's labels.
#[utoipa::path(put, path = "/v1/tenants/{tenant}", request_body = UpdateLabelsBody, responses((status = 200, body = TenantView), (status = 409, body = ErrorBody)))]
pub async fn update_tenant(
    State(state): State<AppState>,
    caller: Caller,
    IfMatch(if_match): IfMatch,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<UpdateLabelsBody>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    managed_here(state.store.tenant(&tenant).await?.origin, "tenant", &tenant, "Namespace")?;
    let record = state.ops.update_tenant(&tenant, body.labels, if_match).await?;
    Ok((etag(record.revision), Json(tenant_view(&state, &tenant).await?)).into_response())
}

/// Delete a tenant without endpoints.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}", responses((status = 204), (status = 409, body = ErrorBody)))]
pub async fn delete_tenant(
    State(state): State<AppState>,
    caller: Caller,
    IfMatch(if_match): IfMatch,
    Path(tenant): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    managed_here(state.store.tenant(&tenant).await?.origin, "tenant", &tenant, "Namespace")?;
    state.ops.delete_tenant(&tenant, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn segment_view(state: &AppState, tenant: &str, name: &str) -> ApiResult<SegmentView> {
    let segment = state.store.segment(tenant, name).await?;
    let blocks = state.store.blocks(BlockFilter { tenant: Some(tenant), segment: Some(name), ..Default::default() }).await?;
    let cidrs: Vec<_> = blocks.iter().map(|b| b.cidr).collect();
    Ok(SegmentView {
        tenant: segment.tenant,
        name: segment.name,
        labels: segment.labels,
        revision: segment.revision,
        blocks: cidrs.iter().map(ToString::to_string).collect(),
        cidrs: aggregate(&cidrs).iter().map(ToString::to_string).collect(),
    })
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/segments", responses((status = 200, body = [SegmentView])))]
pub async fn list_segments(State(state): State<AppState>, caller: Caller, Path(tenant): Path<String>) -> ApiResult<Json<Vec<SegmentView>>> {
    caller.require_tenant_read(&tenant)?;
    let mut out = Vec::new();
    for s in state.store.segments(&tenant).await? {
        out.push(segment_view(&state, &tenant, &s.name).await?);
    }
    Ok(Json(out))
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/segments", request_body = NewSegmentBody, responses((status = 201, body = SegmentView), (status = 409, body = ErrorBody)))]
pub async fn create_segment(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    JsonBody(body): JsonBody<NewSegmentBody>,
) -> ApiResult<Response> {
    caller.require_tenant_write(&tenant)?;
    let segment = state.ops.create_segment(&tenant, &body.name, body.labels).await?;
    Ok((StatusCode::CREATED, etag(segment.revision), Json(segment_view(&state, &tenant, &segment.name).await?)).into_response())
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/segments/{segment}", responses((status = 200, body = SegmentView), (status = 404, body = ErrorBody)))]
pub async fn get_segment(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, segment)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_tenant_read(&tenant)?;
    let view = segment_view(&state, &tenant, &segment).await?;
    Ok((etag(view.revision), Json(view)).into_response())
}

/// Replace a segment's labels.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/segments/{segment}", request_body = UpdateLabelsBody, responses((status = 200, body = SegmentView), (status = 409, body = ErrorBody)))]
pub async fn update_segment(
    State(state): State<AppState>,
    caller: Caller,
    IfMatch(if_match): IfMatch,
    Path((tenant, segment)): Path<(String, String)>,
    JsonBody(body): JsonBody<UpdateLabelsBody>,
) -> ApiResult<Response> {
    caller.require_tenant_write(&tenant)?;
    let record = state.ops.update_segment(&tenant, &segment, body.labels, if_match).await?;
    Ok((etag(record.revision), Json(segment_view(&state, &tenant, &segment).await?)).into_response())
}

#[utoipa::path(delete, path = "/v1/tenants/{tenant}/segments/{segment}", responses((status = 204), (status = 409, body = ErrorBody)))]
pub async fn delete_segment(
    State(state): State<AppState>,
    caller: Caller,
    IfMatch(if_match): IfMatch,
    Path((tenant, segment)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_tenant_write(&tenant)?;
    state.ops.delete_segment(&tenant, &segment, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}

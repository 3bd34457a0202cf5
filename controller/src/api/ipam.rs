//! Endpoints (create = allocate, delete = release) and blocks handlers.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{IfMatch, JsonBody, QueryParams, etag};
use super::views::{BlockView, BlocksQuery, EndpointLabelsBody, EndpointView, EndpointsQuery, NewEndpointBody};
use crate::store::{BlockFilter, NewEndpoint};

/// Blocks, filtered; a tenant token sees only its tenant's blocks.
#[utoipa::path(get, path = "/v1/blocks", params(("host" = Option<String>, Query), ("tenant" = Option<String>, Query), ("segment" = Option<String>, Query)), responses((status = 200, body = [BlockView])))]
pub async fn list_blocks(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<BlocksQuery>,
) -> ApiResult<Json<Vec<BlockView>>> {
    let tenant = caller.tenant_filter(q.tenant.as_deref())?;
    let filter = BlockFilter { host: q.host.as_deref(), tenant: tenant.as_deref(), segment: q.segment.as_deref() };
    Ok(Json(state.store.blocks(filter).await?.into_iter().map(BlockView::from).collect()))
}

#[utoipa::path(get, path = "/v1/endpoints", params(("tenant" = Option<String>, Query), ("host" = Option<String>, Query)), responses((status = 200, body = [EndpointView])))]
pub async fn list_endpoints(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(q): QueryParams<EndpointsQuery>,
) -> ApiResult<Json<Vec<EndpointView>>> {
    let tenant = caller.tenant_filter(q.tenant.as_deref())?;
    let list = state.store.endpoints(tenant.as_deref(), q.host.as_deref()).await?;
    Ok(Json(list.into_iter().map(EndpointView::from).collect()))
}

/// Register an endpoint and allocate its addresses (one per address family of the host's group).
/// Sending the same id again returns the existing endpoint with 200.
#[utoipa::path(post, path = "/v1/endpoints", request_body = NewEndpointBody, responses((status = 201, body = EndpointView), (status = 200, body = EndpointView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<NewEndpointBody>,
) -> ApiResult<Response> {
    if !caller.is_node(&body.host) {
        caller.require_tenant_write(&body.tenant)?;
    }
    let id = body.id.clone();
    let new = NewEndpoint { id: body.id, tenant: body.tenant, segment: body.segment, host: body.host, labels: body.labels };
    let (endpoint, created) = match state.ops.allocate(new).await {
        Err(crate::store::StoreError::Conflict(message)) => return Err(endpoint_conflict(&state, &caller, &id, message).await),
        other => other?,
    };
    state.metrics.allocations.inc();
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, etag(endpoint.revision), Json(EndpointView::from(endpoint))).into_response())
}

/// A 409 for an id already taken; where the endpoint lives is told only to callers that may read it.
async fn endpoint_conflict(state: &AppState, caller: &Caller, id: &str, message: String) -> ApiError {
    let conflict = |m: String| ApiError::new(StatusCode::CONFLICT, "conflict", m).with_field("id");
    match state.store.endpoint(id).await {
        Ok(e) if caller.can_read_tenant(&e.tenant) || caller.is_node(&e.host) => {
            conflict(format!("{message} on host `{}` in {}/{}", e.host, e.tenant, e.segment))
        }
        _ => conflict(message),
    }
}

#[utoipa::path(get, path = "/v1/endpoints/{id}", responses((status = 200, body = EndpointView), (status = 404, body = ErrorBody)))]
pub async fn get_endpoint(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let endpoint = state.store.endpoint(&id).await?;
    // Another tenant's endpoint is reported as absent: ids must not leak across tenants.
    if !caller.can_read_tenant(&endpoint.tenant) && !caller.is_node(&endpoint.host) {
        return Err(ApiError::not_found(format!("endpoint `{id}` not found")));
    }
    Ok((etag(endpoint.revision), Json(EndpointView::from(endpoint))).into_response())
}

/// Replace an endpoint's labels; policies that select by label follow at once.
#[utoipa::path(put, path = "/v1/endpoints/{id}", request_body = EndpointLabelsBody, responses((status = 200, body = EndpointView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_endpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
    JsonBody(body): JsonBody<EndpointLabelsBody>,
) -> ApiResult<Response> {
    let endpoint = state.store.endpoint(&id).await?;
    if !caller.is_node(&endpoint.host) {
        if !caller.can_read_tenant(&endpoint.tenant) {
            return Err(ApiError::not_found(format!("endpoint `{id}` not found")));
        }
        caller.require_tenant_write(&endpoint.tenant)?;
    }
    let updated = state.ops.relabel_endpoint(&id, body.labels, if_match).await?;
    Ok((etag(updated.revision), Json(EndpointView::from(updated))).into_response())
}

/// Release an endpoint's addresses. Deleting an id that does not exist is harmless (204).
#[utoipa::path(delete, path = "/v1/endpoints/{id}", responses((status = 204), (status = 403, body = ErrorBody)))]
pub async fn delete_endpoint(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    match state.store.endpoint(&id).await {
        Ok(endpoint) if caller.is_node(&endpoint.host) => {}
        Ok(endpoint) if !caller.can_read_tenant(&endpoint.tenant) => {
            return Err(ApiError::not_found(format!("endpoint `{id}` not found")));
        }
        Ok(endpoint) => caller.require_tenant_write(&endpoint.tenant)?,
        Err(crate::store::StoreError::NotFound { .. }) => return Ok(StatusCode::NO_CONTENT),
        Err(e) => return Err(e.into()),
    }
    if state.ops.release(&id).await?.is_some() {
        state.metrics.releases.inc();
    }
    Ok(StatusCode::NO_CONTENT)
}

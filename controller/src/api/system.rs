//! Health, readiness, metrics, the OpenAPI document, tokens, and the request observer.

use std::time::Instant;

use axum::Json;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::JsonBody;
use super::views::{NewTokenBody, TokenView};
use super::{ApiDoc, AppState};
use crate::metrics::{RequestLabels, RouteLabels};
use crate::store::{Role, TokenRecord};

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the database answers, promptly.
pub async fn readyz(State(state): State<AppState>) -> ApiResult<&'static str> {
    match tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => Ok("ready\n"),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the database does not answer")),
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let m = &state.metrics;
    m.lease_held.set(i64::from(state.writer.is_leader()));
    m.feed_position.set(state.dist.position());
    m.feed_resyncs.set(i64::try_from(state.dist.stats.resyncs.load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(i64::MAX));
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode()).into_response()
}

pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such API path; see /v1/openapi.json")
}

/// Count and time every request by its route template.
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let mut response = next.run(request).await;
    if response.status() == axum::http::StatusCode::METHOD_NOT_ALLOWED {
        // The router answers 405 with an empty body; every error here is JSON.
        let allow = response.headers().get(axum::http::header::ALLOW).cloned();
        let listed = allow.as_ref().and_then(|a| a.to_str().ok()).unwrap_or("see /v1/openapi.json").to_string();
        let message = format!("method {method} is not allowed on this path (allowed: {listed})");
        response = ApiError::new(axum::http::StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message).into_response();
        if let Some(allow) = allow {
            response.headers_mut().insert(axum::http::header::ALLOW, allow);
        }
    }
    let labels = RequestLabels { method, route: route.clone(), status: response.status().as_u16() };
    state.metrics.requests.get_or_create(&labels).inc();
    state.metrics.latency.get_or_create(&RouteLabels { route }).observe(started.elapsed().as_secs_f64());
    response
}

fn token_view(t: TokenRecord, secret: Option<String>) -> TokenView {
    TokenView {
        id: t.id,
        name: t.name,
        role: t.role.as_str().into(),
        tenant: t.tenant,
        node: t.node,
        created_at: t.created_at,
        token: secret,
    }
}

#[utoipa::path(get, path = "/v1/tokens", responses((status = 200, body = [TokenView]), (status = 403, body = ErrorBody)))]
pub async fn list_tokens(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<TokenView>>> {
    caller.require_admin()?;
    Ok(Json(state.store.tokens().await?.into_iter().map(|t| token_view(t, None)).collect()))
}

/// Create a token; the answer is the only time its secret is shown.
#[utoipa::path(post, path = "/v1/tokens", request_body = NewTokenBody, responses((status = 201, body = TokenView), (status = 422, body = ErrorBody)))]
pub async fn create_token(State(state): State<AppState>, caller: Caller, JsonBody(body): JsonBody<NewTokenBody>) -> ApiResult<Response> {
    caller.require_admin()?;
    let role = match body.role.as_str() {
        "admin" => Role::Admin,
        "read" => Role::Read,
        "tenant" => Role::Tenant,
        "node" => Role::Node,
        other => {
            return Err(ApiError::invalid("role", format!("`{other}` is not one of admin, read, tenant, node")));
        }
    };
    let scope = match role {
        Role::Node => body.node.as_deref(),
        _ if body.node.is_some() => return Err(ApiError::invalid("node", "only node tokens name a node")),
        _ => body.tenant.as_deref(),
    };
    if role == Role::Node && body.tenant.is_some() {
        return Err(ApiError::invalid("tenant", "a node token names a node, not a tenant"));
    }
    let created = state.ops.create_token(&body.name, role, scope).await?;
    Ok((StatusCode::CREATED, Json(token_view(created.record, Some(created.token)))).into_response())
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_token(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    state.ops.delete_token(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who holds the writer lease, as the store says, and whether it is this replica.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaderView {
    /// The holding replica; absent when no replica ever held it.
    pub holder: Option<String>,
    /// The fencing token (grows at every change of holder).
    pub token: Option<i64>,
    /// Milliseconds until the lease lapses unless renewed (negative: lapsed).
    pub expires_in_ms: Option<i64>,
    /// The replica that answered.
    pub replica: String,
    pub this_replica_holds_it: bool,
}

#[utoipa::path(get, path = "/v1/leader", responses((status = 200, body = LeaderView)))]
pub async fn leader(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<LeaderView>> {
    caller.require_infra_read()?;
    let (lease, now) = state.store.lease(crate::writer::WRITER_LEASE).await?;
    Ok(Json(LeaderView {
        holder: lease.as_ref().map(|l| l.holder.clone()),
        token: lease.as_ref().map(|l| l.token),
        expires_in_ms: lease.as_ref().map(|l| l.expires_ms - now),
        replica: state.writer.replica.clone(),
        this_replica_holds_it: state.writer.is_leader(),
    }))
}

/// A controller replica and its last heartbeat.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControllerView {
    pub id: String,
    pub address: String,
    pub started_at: i64,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: i64,
    /// Holds the writer lease (and it has not lapsed).
    pub leader: bool,
}

#[utoipa::path(get, path = "/v1/controllers", responses((status = 200, body = [ControllerView])))]
pub async fn controllers(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<ControllerView>>> {
    caller.require_infra_read()?;
    let (lease, now) = state.store.lease(crate::writer::WRITER_LEASE).await?;
    let leader = lease.filter(|l| l.expires_ms >= now).map(|l| l.holder);
    let list = state.store.replicas().await?;
    Ok(Json(
        list.into_iter()
            .map(|r| ControllerView {
                leader: leader.as_deref() == Some(r.id.as_str()),
                heartbeat_age_ms: now - r.heartbeat_ms,
                id: r.id,
                address: r.address,
                started_at: r.started_at,
            })
            .collect(),
    ))
}

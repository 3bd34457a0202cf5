//! Node state distribution: each agent watches its own node's state (NDJSON stream, resumable
//! by generation) and acks what it applied; operators read every node's status.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tessera_agent_api::{Ack, AgentReport, NodeState, NodeStatus};
use utoipa::IntoParams;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{JsonBody, QueryParams};
use crate::distribute::{NodeChannel, WatchGuard};

use tessera_agent_api::HEARTBEAT;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StateQuery {
    /// Keep the connection open and send every new state, one JSON document per line.
    #[serde(default)]
    pub watch: bool,
    /// The generation the agent already has: it is not sent again.
    pub since: Option<u64>,
}

/// Every node's distribution status: desired and applied generation, lag, last error, last seen.
#[utoipa::path(get, path = "/v1/nodes", responses((status = 200, body = [Object]), (status = 403, body = ErrorBody)))]
pub async fn list_nodes(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<NodeStatus>>> {
    caller.require_infra_read()?;
    Ok(Json(state.dist.status().await?))
}

fn channel(state: &AppState, node: &str) -> ApiResult<Arc<NodeChannel>> {
    state.dist.node(node).ok_or_else(|| ApiError::not_found(format!("node `{node}` is not a host of the topology")))
}

/// One node's state; with `watch=true`, a stream of its states (NDJSON) that starts with the
/// current one unless it is generation `since`.
#[utoipa::path(get, path = "/v1/nodes/{node}/state", params(StateQuery), responses((status = 200, body = Object), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn node_state(
    State(state): State<AppState>,
    caller: Caller,
    Path(node): Path<String>,
    QueryParams(q): QueryParams<StateQuery>,
) -> ApiResult<Response> {
    caller.require_node_read(&node)?;
    let channel = channel(&state, &node)?;
    if caller.is_node(&node) {
        channel.seen();
    }
    if !q.watch {
        return Ok(Json(channel.current()).into_response());
    }
    // The node's agent resuming at the current generation is enforcing it (agents resume only
    // from what they applied), which a restarted controller could not otherwise know. Other
    // watchers (operators, dashboards) say nothing about what the node enforces.
    let current = channel.current();
    if caller.is_node(&node) && q.since == Some(current.generation) {
        let resumed = tessera_agent_api::Ack { generation: current.generation, digest: current.digest.clone(), error: None, apply_ms: 0.0 };
        let _ = state.dist.ack(&node, &resumed);
    }
    let watch = Watch {
        rx: channel.subscribe(),
        gone: channel.gone(),
        _guard: channel.watching(),
        sent: q.since,
        started: false,
        closing: state.dist.closing(),
    };
    let stream = futures_util::stream::unfold(watch, |mut w| async move {
        let line = w.next().await?;
        Some((Ok::<Bytes, Infallible>(line), w))
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-store")], Body::from_stream(stream)).into_response())
}

struct Watch {
    rx: tokio::sync::watch::Receiver<Arc<NodeState>>,
    gone: tokio::sync::watch::Receiver<bool>,
    _guard: WatchGuard,
    /// The newest generation the client has: only newer ones are sent. A client moving from
    /// another replica never sees its generation go back, even if this replica is behind.
    sent: Option<u64>,
    started: bool,
    closing: tokio::sync::watch::Receiver<bool>,
}

impl Watch {
    fn newer(&mut self, state: &NodeState) -> bool {
        let newer = self.sent.is_none_or(|g| state.generation > g);
        if newer {
            self.sent = Some(state.generation);
        }
        newer
    }

    /// The next line to send: a state, or a heartbeat. `None` ends the stream.
    async fn next(&mut self) -> Option<Bytes> {
        if !self.started {
            self.started = true;
            let current = self.rx.borrow_and_update().clone();
            if self.newer(&current) {
                return Some(line(&current));
            }
        }
        loop {
            if *self.closing.borrow() || *self.gone.borrow() {
                return None;
            }
            let changed = tokio::select! {
                changed = tokio::time::timeout(HEARTBEAT, self.rx.changed()) => changed,
                _ = self.closing.changed() => return None,
                // The node was removed from the topology.
                _ = self.gone.changed() => return None,
            };
            return match changed {
                Ok(Ok(())) => {
                    let current = self.rx.borrow_and_update().clone();
                    if !self.newer(&current) {
                        continue;
                    }
                    Some(line(&current))
                }
                Ok(Err(_)) => None,
                // A heartbeat written is not the agent seen: a dead host's socket takes writes
                // for minutes. Only what the agent sends (watches, acks, reports) counts.
                Err(_) => Some(Bytes::from_static(b"\n")),
            };
        }
    }
}

fn line(state: &NodeState) -> Bytes {
    let mut out = serde_json::to_vec(state).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

/// An agent's periodic report: liveness (VIP failover counts on it) and its BGP sessions.
#[utoipa::path(post, path = "/v1/nodes/{node}/report", request_body = Object, responses((status = 204), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn report(
    State(state): State<AppState>,
    caller: Caller,
    Path(node): Path<String>,
    JsonBody(report): JsonBody<AgentReport>,
) -> ApiResult<StatusCode> {
    if !caller.is_node(&node) {
        caller.require_admin()?;
    }
    channel(&state, &node)?;
    state.dist.report(&node, report).map_err(|(field, m)| ApiError::invalid(field, m))?;
    Ok(StatusCode::NO_CONTENT)
}

/// An agent reports the generation it applied, or why it could not.
#[utoipa::path(post, path = "/v1/nodes/{node}/ack", request_body = Object, responses((status = 204), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn ack(
    State(state): State<AppState>,
    caller: Caller,
    Path(node): Path<String>,
    JsonBody(ack): JsonBody<Ack>,
) -> ApiResult<StatusCode> {
    if !caller.is_node(&node) {
        caller.require_admin()?;
    }
    channel(&state, &node)?;
    state.dist.ack(&node, &ack).map_err(|(field, m)| ApiError::invalid(field, m))?;
    if let Some(error) = &ack.error {
        tracing::warn!(%node, generation = ack.generation, %error, "agent could not apply its state");
    }
    Ok(StatusCode::NO_CONTENT)
}

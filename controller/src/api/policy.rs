//! Policy simulation and explanation over HTTP: the same evaluator as `tessera policy
//! simulate/explain`, on documents sent in the request (nothing stored is read or changed).
//!
//! Parsing and simulation run off the async workers. A simulation's answer is streamed as it is
//! computed (memory stays flat whatever the number of verdicts) and bounded: a request that
//! would produce more than [`SIMULATE_LIMIT`] verdicts is refused before any work.

use std::net::IpAddr;
use std::ops::ControlFlow;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tessera_policy::Inputs;
use tessera_policy::eval::{Probe, Verdict};
use tessera_policy::simulate::{PairVerdict, check_externals, explain, parse_probe, simulate_each, verdict_count};
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::JsonBody;
use crate::store::StoreError;

/// The most verdicts one `POST /v1/policy/simulate` answers (about 300 MB of JSON); larger runs
/// belong to `tessera policy simulate`, which streams to a file.
pub const SIMULATE_LIMIT: u64 = 2_000_000;

/// Bytes of JSON gathered before a chunk goes out.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimulateBody {
    /// YAML or JSON documents: Namespaces, Pods, Nodes, NetworkPolicies, Tessera and Romana policies.
    pub documents: String,
    /// Probes such as `tcp/80`, `udp/53`, `sctp/9000`, `icmp/8` (default `tcp/80`).
    #[serde(default)]
    pub ports: Vec<String>,
    /// Cluster-external endpoints by IP.
    #[serde(default)]
    #[schema(value_type = Vec<String>, format = "ip")]
    pub externals: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SimulateAnswer {
    #[schema(value_type = Vec<Object>)]
    pub verdicts: Vec<PairVerdict>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExplainBody {
    pub documents: String,
    /// `NAMESPACE/POD` or an IP address.
    pub from: String,
    pub to: String,
    #[serde(default = "default_port")]
    pub port: String,
}

fn default_port() -> String {
    "tcp/80".to_string()
}

fn inputs(documents: &str) -> ApiResult<Inputs> {
    let mut inputs = Inputs::default();
    // The message names the document, the object and its field: "document 2: NetworkPolicy a/b: spec...".
    inputs
        .add_text("documents", documents)
        .map_err(|e| ApiError::invalid("documents", e.to_string().trim_start_matches("documents ").to_string()))?;
    Ok(inputs)
}

fn internal(e: tokio::task::JoinError) -> ApiError {
    ApiError::from(StoreError::Corrupt(e.to_string()))
}

/// A simulation request, read and checked.
struct Simulation {
    inputs: Inputs,
    externals: Vec<IpAddr>,
    probes: Vec<Probe>,
}

fn prepare(body: SimulateBody) -> ApiResult<Simulation> {
    let inputs = inputs(&body.documents)?;
    let texts = if body.ports.is_empty() { vec![default_port()] } else { body.ports };
    let mut probes = Vec::new();
    for (i, p) in texts.iter().enumerate() {
        probes.push(parse_probe(p).map_err(|e| ApiError::invalid(format!("ports[{i}]"), e.message))?);
    }
    let mut externals = Vec::new();
    for (i, x) in body.externals.iter().enumerate() {
        externals
            .push(x.parse::<IpAddr>().map_err(|_| ApiError::invalid(format!("externals[{i}]"), format!("`{x}` is not an IP address")))?);
    }
    check_externals(&inputs, &externals).map_err(|e| ApiError::invalid("externals", e.message))?;
    let count = verdict_count(&inputs, &externals, &probes);
    if count > SIMULATE_LIMIT {
        return Err(ApiError::invalid(
            "documents",
            format!(
                "this simulation has {count} verdicts, over the API's limit of {SIMULATE_LIMIT}; use fewer pods or ports, or run `tessera policy simulate` (it streams any size to a file)"
            ),
        ));
    }
    Ok(Simulation { inputs, externals, probes })
}

/// Verdicts for every ordered pair of pods (and externals) and probe, streamed as one JSON
/// document `{"verdicts": [...]}`.
#[utoipa::path(post, path = "/v1/policy/simulate", request_body = SimulateBody, responses(
    (status = 200, body = SimulateAnswer), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
    (status = 403, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)
))]
pub async fn simulate_handler(caller: Caller, request: Request) -> ApiResult<Response> {
    caller.require_policy_reader()?;
    let JsonBody(body) = JsonBody::<SimulateBody>::from_request(request, &()).await?;
    let sim = tokio::task::spawn_blocking(move || prepare(body)).await.map_err(internal)??;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut buf = Vec::with_capacity(CHUNK + 1024);
        buf.extend_from_slice(b"{\"verdicts\":[");
        let mut first = true;
        let run = simulate_each(&sim.inputs, &sim.externals, &sim.probes, |v| {
            if !std::mem::take(&mut first) {
                buf.push(b',');
            }
            v.write_json(&mut buf);
            if buf.len() >= CHUNK {
                let chunk = Bytes::from(std::mem::replace(&mut buf, Vec::with_capacity(CHUNK + 1024)));
                // The client went away: stop computing.
                if tx.blocking_send(Ok(chunk)).is_err() {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        });
        if let Err(e) = run {
            tracing::error!(error = %e, "simulation failed after its checks");
            return;
        }
        buf.extend_from_slice(b"]}");
        let _ = tx.blocking_send(Ok(Bytes::from(buf)));
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) });
    Ok(([(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response())
}

/// The verdict for one pair and the rules that decided it.
#[utoipa::path(post, path = "/v1/policy/explain", request_body = ExplainBody, responses(
    (status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
    (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)
))]
pub async fn explain_handler(caller: Caller, request: Request) -> ApiResult<Json<Verdict>> {
    caller.require_policy_reader()?;
    let JsonBody(body) = JsonBody::<ExplainBody>::from_request(request, &()).await?;
    let verdict = tokio::task::spawn_blocking(move || {
        let inputs = inputs(&body.documents)?;
        let probe = parse_probe(&body.port).map_err(|e| ApiError::invalid("port", e.message))?;
        explain(&inputs, &body.from, &body.to, probe)
            .map_err(|e| ApiError::invalid(e.field.trim_start_matches("--").to_string(), e.message))
    })
    .await
    .map_err(internal)??;
    Ok(Json(verdict))
}

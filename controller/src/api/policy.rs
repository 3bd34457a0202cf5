//! Policy simulation and explanation over HTTP: the same evaluator as `tessera policy
//! simulate/explain`, on documents sent in the request (nothing stored is read or changed).

use std::net::IpAddr;

use axum::Json;
use serde::{Deserialize, Serialize};
use tessera_policy::Inputs;
use tessera_policy::eval::Verdict;
use tessera_policy::simulate::{PairVerdict, explain, parse_probe, simulate};
use utoipa::ToSchema;

use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::JsonBody;

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

/// Verdicts for every ordered pair of pods (and externals) and probe.
#[utoipa::path(post, path = "/v1/policy/simulate", request_body = SimulateBody, responses((status = 200, body = SimulateAnswer), (status = 422, body = ErrorBody)))]
pub async fn simulate_handler(_caller: Caller, JsonBody(body): JsonBody<SimulateBody>) -> ApiResult<Json<SimulateAnswer>> {
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
    // Simulation is CPU work: keep it off the async workers.
    let verdicts = tokio::task::spawn_blocking(move || simulate(&inputs, &externals, &probes))
        .await
        .map_err(|e| ApiError::from(crate::store::StoreError::Corrupt(e.to_string())))?
        .map_err(|e| ApiError::invalid(e.field.trim_start_matches("--").to_string(), e.message))?;
    Ok(Json(SimulateAnswer { verdicts }))
}

/// The verdict for one pair and the rules that decided it.
#[utoipa::path(post, path = "/v1/policy/explain", request_body = ExplainBody, responses((status = 200, body = Object), (status = 422, body = ErrorBody)))]
pub async fn explain_handler(_caller: Caller, JsonBody(body): JsonBody<ExplainBody>) -> ApiResult<Json<Verdict>> {
    let inputs = inputs(&body.documents)?;
    let probe = parse_probe(&body.port).map_err(|e| ApiError::invalid("port", e.message))?;
    let verdict = explain(&inputs, &body.from, &body.to, probe)
        .map_err(|e| ApiError::invalid(e.field.trim_start_matches("--").to_string(), e.message))?;
    Ok(Json(verdict))
}

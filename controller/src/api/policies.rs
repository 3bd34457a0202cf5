//! Stored policies: NetworkPolicy, TesseraPolicy, TesseraClusterPolicy, the network-policy-api's
//! cluster policies and Romana documents, validated by the policy engine before anything is
//! stored, then compiled and distributed; each shown with how many nodes enforce it.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{DOCUMENT_TYPES, IfMatch, read_body};
use crate::distribute::Realization;
use crate::store::{NewPolicy, Origin, PolicyRecord, Principal, StoreError};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    /// The engine's id, for example `NetworkPolicy web/allow-frontend`.
    pub id: String,
    pub tenant: Option<String>,
    pub revision: i64,
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
    /// Who made it: `api`, or `kubernetes` (a NetworkPolicy; read-only here).
    pub origin: Origin,
    /// How many nodes enforce its latest revision, of how many (absent in a write's answer:
    /// no node has it yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Realization>,
}

impl From<PolicyRecord> for PolicyView {
    fn from(r: PolicyRecord) -> PolicyView {
        PolicyView { id: r.id, tenant: r.tenant, revision: r.revision, document: r.document, origin: r.origin, nodes: None }
    }
}

/// The views of `records`, each with its realization.
pub(crate) async fn realized(state: &AppState, records: Vec<PolicyRecord>) -> ApiResult<Vec<PolicyView>> {
    let realization = state.dist.policies_enforced(records.iter().map(|r| &r.id)).await?;
    Ok(records
        .into_iter()
        .map(|r| {
            let nodes = realization.get(&r.id).copied();
            PolicyView { nodes, ..PolicyView::from(r) }
        })
        .collect())
}

/// Policies the caller may read.
#[utoipa::path(get, path = "/v1/policies", responses((status = 200, body = [PolicyView])))]
pub async fn list_policies(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<PolicyView>>> {
    caller.tenant_filter(None)?;
    let list: Vec<PolicyRecord> = state.store.policies().await?.into_iter().filter(|p| readable(&caller, p)).collect();
    Ok(Json(realized(&state, list).await?))
}

pub(crate) fn readable(caller: &Caller, p: &PolicyRecord) -> bool {
    match &p.tenant {
        Some(t) => caller.can_read_tenant(t),
        None => caller.tenant_scope().is_none(),
    }
}

/// `NetworkPolicy/web/deny-all` in a URL stands for the id `NetworkPolicy web/deny-all`.
fn id_from_path(path: &str) -> String {
    if path.contains(' ') { path.to_string() } else { path.replacen('/', " ", 1) }
}

#[utoipa::path(get, path = "/v1/policies/{id}", responses((status = 200, body = PolicyView), (status = 404, body = ErrorBody)))]
pub async fn get_policy(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<PolicyView>> {
    let id = id_from_path(&id);
    caller.tenant_filter(None)?;
    let p = state.store.policy(&id).await?;
    if !readable(&caller, &p) {
        return Err(ApiError::not_found(format!("policy `{id}` not found")));
    }
    let mut views = realized(&state, vec![p]).await?;
    Ok(Json(views.remove(0)))
}

/// Create or replace policies: YAML or JSON text, several documents (`---`) and/or `kind: List`.
/// All are validated first; on any error nothing is stored.
#[utoipa::path(post, path = "/v1/policies", request_body(content = String, content_type = "application/yaml"), responses((status = 200, body = [PolicyView]), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn put_policies(State(state): State<AppState>, caller: Caller, request: Request) -> ApiResult<Json<Vec<PolicyView>>> {
    // Only admins and tenants write policies: nobody else gets a body read.
    if matches!(caller.0, Principal::ReadOnly | Principal::Node(_)) {
        return Err(ApiError::forbidden("only admin and tenant tokens write policies"));
    }
    let body = read_body(request, DOCUMENT_TYPES).await?;
    Ok(Json(store_policies(&state, &caller, body.to_vec()).await?))
}

/// Validate every policy of `body` (YAML or JSON documents) and store them all, or none: the
/// API's and the web UI's one way to write policies.
pub(crate) async fn store_policies(state: &AppState, caller: &Caller, body: Vec<u8>) -> ApiResult<Vec<PolicyView>> {
    if matches!(caller.0, Principal::ReadOnly | Principal::Node(_)) {
        return Err(ApiError::forbidden("only admin and tenant tokens write policies"));
    }
    // Parsing is CPU work whatever its bounds: off the async workers.
    let parsed = tokio::task::spawn_blocking(move || parse_policies(&body))
        .await
        .map_err(|e| ApiError::from(crate::store::StoreError::Corrupt(e.to_string())))??;
    let mut staged: Vec<NewPolicy> = Vec::new();
    for (origin, policy) in parsed {
        match &policy.tenant {
            Some(t) => caller.require_tenant_write(t)?,
            None => {
                caller.require_admin().map_err(|_| ApiError::forbidden(format!("{origin}: cluster-scoped policies need an admin token")))?
            }
        }
        if staged.iter().any(|p| p.id == policy.id) {
            return Err(ApiError::invalid("body", format!("{origin}: {} is defined twice", policy.id)));
        }
        staged.push(policy);
    }
    let stored = state.ops.put_policies(staged).await?;
    Ok(stored.into_iter().map(PolicyView::from).collect())
}

#[utoipa::path(delete, path = "/v1/policies/{id}", responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<StatusCode> {
    let id = id_from_path(&id);
    caller.tenant_filter(None)?;
    let p = state.store.policy(&id).await?;
    if !readable(&caller, &p) {
        return Err(ApiError::not_found(format!("policy `{id}` not found")));
    }
    match &p.tenant {
        Some(t) => caller.require_tenant_write(t)?,
        None => caller.require_admin()?,
    }
    if p.origin == Origin::Kubernetes {
        return Err(ApiError::from(StoreError::Conflict(format!(
            "policy `{id}` is managed by Kubernetes: delete the NetworkPolicy instead"
        ))));
    }
    state.ops.delete_policy(&id, if_match).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every policy document of a body, validated, with the origin errors name it by. The text is
/// parsed once; each document is read into the engine once, and what it defines travels on.
fn parse_policies(body: &[u8]) -> ApiResult<Vec<(String, NewPolicy)>> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("body", "not UTF-8 text"))?;
    let mut inputs = tessera_policy::Inputs::default();
    let mut out = Vec::new();
    for (i, doc) in documents(text)?.into_iter().enumerate() {
        let origin = format!("document {}", i + 1);
        let tenant = tenant_of(&doc, &origin)?;
        let before = inputs.policies.len();
        // The field is the engine's path in the document; the message says which document.
        inputs.add_document(&origin, doc.clone()).map_err(|e| ApiError::invalid(e.field.clone(), e.to_string()))?;
        let Some(first) = inputs.policies.get(before) else {
            return Err(ApiError::invalid("body", format!("{origin}: defines no policy")));
        };
        out.push((origin, NewPolicy { id: first.id.clone(), tenant, document: doc, origin: Origin::Api }));
    }
    Ok(out)
}

/// One document (a Kubernetes object, say) read into the engine alone: the policy to store, or
/// why the engine refuses it.
pub(crate) fn read_policy(doc: serde_json::Value, origin: &str, made_by: Origin) -> Result<NewPolicy, String> {
    let tenant = tenant_of(&doc, origin).map_err(|e| match e.field {
        Some(field) => format!("{field}: {}", e.message),
        None => e.message,
    })?;
    let mut inputs = tessera_policy::Inputs::default();
    inputs.add_document(origin, doc.clone()).map_err(|e| e.to_string())?;
    let id = inputs.policies.first().map(|p| p.id.clone()).ok_or_else(|| format!("{origin}: defines no policy"))?;
    Ok(NewPolicy { id, tenant, document: doc, origin: made_by })
}

/// The documents of a body, `kind: List` items included, as JSON values.
fn documents(text: &str) -> ApiResult<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for json in tessera_policy::input::read_documents(text).map_err(|e| ApiError::bad_request("body", e.message))? {
        if json.get("kind").and_then(|k| k.as_str()) == Some("List") {
            out.extend(json.get("items").and_then(|i| i.as_array()).cloned().unwrap_or_default());
        } else {
            out.push(json);
        }
    }
    Ok(out)
}

/// The tenant a document belongs to (`None`: cluster-scoped). Only policy kinds are accepted.
fn tenant_of(doc: &serde_json::Value, origin: &str) -> ApiResult<Option<String>> {
    let kind = doc.get("kind").and_then(|k| k.as_str());
    match kind {
        Some("NetworkPolicy" | "TesseraPolicy") => {
            let ns = doc.pointer("/metadata/namespace").and_then(|n| n.as_str());
            ns.map(|n| Some(n.to_string())).ok_or_else(|| {
                ApiError::invalid("metadata.namespace", format!("{origin}: a stored {} must name its namespace", kind.unwrap_or_default()))
            })
        }
        Some("TesseraClusterPolicy" | "ClusterNetworkPolicy" | "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy") | None => Ok(None),
        Some(other) => Err(ApiError::invalid(
            "kind",
            format!(
                "{origin}: `{other}` is not a policy (NetworkPolicy, TesseraPolicy, TesseraClusterPolicy, ClusterNetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy, or a Romana policy)"
            ),
        )),
    }
}

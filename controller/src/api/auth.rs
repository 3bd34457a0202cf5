//! Bearer-token authentication and the authorisation rules of each role.
//!
//! Admin tokens do everything; read tokens read everything; tenant tokens read and change only
//! their own tenant's objects (and never the infrastructure: topology, hosts, routes, tokens).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::store::Principal;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>` header"))?;
        // The scheme is case-insensitive (RFC 7235 §2.1).
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <token>`"))?;
        if let Some(principal) = state.store.authenticate(token).await? {
            return Ok(Caller(principal));
        }
        // In a cluster, an agent's ServiceAccount token (a JWT) speaks for the node it runs on.
        if let Some(reviewer) = state.token_reviewer.as_ref().filter(|_| token.split('.').count() == 3) {
            return match reviewer.node_of(token).await {
                Ok(Some(node)) => Ok(Caller(Principal::Node(node))),
                Ok(None) => Err(ApiError::unauthorized("this ServiceAccount token speaks for no Tessera agent")),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot review a ServiceAccount token");
                    Err(ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Kubernetes could not review the token"))
                }
            };
        }
        Err(ApiError::unauthorized("unknown token"))
    }
}

impl Caller {
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.0 {
            Principal::Admin => Ok(()),
            _ => Err(ApiError::forbidden("this needs an admin token")),
        }
    }

    /// Simulating and explaining policies: people's tokens, not agents'. Checked before the body is read.
    pub fn require_policy_reader(&self) -> Result<(), ApiError> {
        match self.0 {
            Principal::Node(_) => Err(ApiError::forbidden("node tokens only read their own node's state")),
            _ => Ok(()),
        }
    }

    /// Infrastructure (topology, hosts, routes, all blocks) is readable by admin and read tokens.
    pub fn require_infra_read(&self) -> Result<(), ApiError> {
        match self.0 {
            Principal::Admin | Principal::ReadOnly => Ok(()),
            Principal::Tenant(_) => Err(ApiError::forbidden("tenant tokens cannot read the infrastructure")),
            Principal::Node(_) => Err(ApiError::forbidden("node tokens only read their own node's state")),
        }
    }

    pub fn can_read_tenant(&self, tenant: &str) -> bool {
        match &self.0 {
            Principal::Admin | Principal::ReadOnly => true,
            Principal::Tenant(t) => t == tenant,
            Principal::Node(_) => false,
        }
    }

    pub fn require_tenant_read(&self, tenant: &str) -> Result<(), ApiError> {
        if self.can_read_tenant(tenant) { Ok(()) } else { Err(ApiError::forbidden(format!("this token cannot access tenant `{tenant}`"))) }
    }

    pub fn require_tenant_write(&self, tenant: &str) -> Result<(), ApiError> {
        match &self.0 {
            Principal::Admin => Ok(()),
            Principal::Tenant(t) if t == tenant => Ok(()),
            Principal::ReadOnly => Err(ApiError::forbidden("read-only token")),
            Principal::Tenant(_) | Principal::Node(_) => Err(ApiError::forbidden(format!("this token cannot change tenant `{tenant}`"))),
        }
    }

    /// The agent of `node` (or an admin) may register and release endpoints placed on it.
    pub fn is_node(&self, node: &str) -> bool {
        matches!(&self.0, Principal::Node(n) if n == node)
    }

    /// A node's state and acks: its own agent, admins, and (reading) read tokens.
    pub fn require_node_read(&self, node: &str) -> Result<(), ApiError> {
        match &self.0 {
            Principal::Admin | Principal::ReadOnly => Ok(()),
            Principal::Node(n) if n == node => Ok(()),
            _ => Err(ApiError::forbidden(format!("this token cannot read the state of node `{node}`"))),
        }
    }

    /// The tenant a list is filtered to: the one asked for, and for a tenant token always its
    /// own (asking for another is refused).
    pub fn tenant_filter(&self, asked: Option<&str>) -> Result<Option<String>, ApiError> {
        if let Principal::Node(_) = self.0 {
            return Err(ApiError::forbidden("node tokens only read their own node's state"));
        }
        match (self.tenant_scope(), asked) {
            (Some(scope), Some(asked)) if scope != asked => Err(ApiError::forbidden(format!("this token cannot access tenant `{asked}`"))),
            (Some(scope), _) => Ok(Some(scope.to_string())),
            (None, asked) => Ok(asked.map(String::from)),
        }
    }

    /// The one tenant a tenant token is limited to.
    pub fn tenant_scope(&self) -> Option<&str> {
        match &self.0 {
            Principal::Tenant(t) => Some(t),
            _ => None,
        }
    }
}

//! Agents in a cluster authenticate as their node with no shared secret: each presents its
//! projected ServiceAccount token (bound to its pod, audience Tessera), checked here with a
//! TokenReview. It names a node only when Kubernetes vouches for it, for the audience asked, as
//! the agents' ServiceAccount, and with the node the pod runs on (the token's node claim) — a
//! token of another audience, another ServiceAccount, an expired or revoked one, names nothing.
//!
//! Reviews are cached briefly (agents present their token on every request): a revoked token
//! keeps working for at most [`POSITIVE`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use kube::{Api, Client};

/// How long a review that named a node is trusted.
pub const POSITIVE: Duration = Duration::from_secs(30);
/// How long a refusal is remembered (a wrong token is not reviewed on every request).
const NEGATIVE: Duration = Duration::from_secs(5);
/// The extra field of a reviewed user that names the node of a pod-bound token.
const NODE_NAME: &str = "authentication.kubernetes.io/node-name";
/// Reviews remembered at most (the agents of 5,000 nodes, with room for rotation).
const CACHE_LIMIT: usize = 20_000;

pub struct TokenReviewer {
    client: Client,
    audience: String,
    /// `system:serviceaccount:NAMESPACE:NAME` of the agents.
    username: String,
    cache: Mutex<HashMap<String, (Instant, Option<String>)>>,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer").field("audience", &self.audience).field("username", &self.username).finish_non_exhaustive()
    }
}

impl TokenReviewer {
    /// Agents run as ServiceAccount `namespace/name`; tokens must be for `audience`.
    pub fn new(client: Client, audience: &str, service_account: (&str, &str)) -> TokenReviewer {
        TokenReviewer {
            client,
            audience: audience.to_string(),
            username: format!("system:serviceaccount:{}:{}", service_account.0, service_account.1),
            cache: Mutex::default(),
        }
    }

    /// The node an agent's token speaks for, or None; Err when Kubernetes could not be asked.
    pub async fn node_of(&self, token: &str) -> Result<Option<String>, String> {
        if let Some((at, node)) = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(token) {
            let ttl = if node.is_some() { POSITIVE } else { NEGATIVE };
            if at.elapsed() < ttl {
                return Ok(node.clone());
            }
        }
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_string()), audiences: Some(vec![self.audience.clone()]) },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("TokenReview: {e}"))?;
        let node = answer.status.and_then(|s| {
            let vouched = s.authenticated == Some(true) && s.audiences.is_some_and(|a| a.contains(&self.audience));
            let user = s.user.filter(|u| vouched && u.username.as_deref() == Some(self.username.as_str()))?;
            user.extra?.get(NODE_NAME)?.first().cloned()
        });
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= CACHE_LIMIT {
            cache.retain(|_, (at, _)| at.elapsed() < POSITIVE);
        }
        cache.insert(token.to_string(), (Instant::now(), node.clone()));
        Ok(node)
    }
}

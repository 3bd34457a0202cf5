//! The agent's side of the controller API: its node's state stream, acks, and endpoint
//! allocation on behalf of the CNI plugin.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;
use tessera_agent_api::{Ack, NodeState};

#[derive(Debug, Clone)]
pub struct Controller {
    http: reqwest::Client,
    base: String,
    node: String,
    token: String,
}

/// The part of the controller's endpoint answer the agent uses.
#[derive(Debug, Deserialize)]
pub struct EndpointAnswer {
    pub id: String,
    pub ips: Vec<IpAddr>,
}

/// A failure to reach the controller (retry later) or an answer refusing the request.
#[derive(Debug)]
pub enum CallError {
    Unreachable(String),
    Refused { status: u16, message: String },
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(m) => write!(f, "controller unreachable: {m}"),
            CallError::Refused { status, message } => write!(f, "controller refused ({status}): {message}"),
        }
    }
}

impl Controller {
    pub fn new(base: &str, node: &str, token: &str, ca: Option<&[u8]>) -> anyhow::Result<Controller> {
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(3));
        if let Some(pem) = ca {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
        }
        Ok(Controller {
            http: builder.build()?,
            base: base.trim_end_matches('/').to_string(),
            node: node.to_string(),
            token: token.to_string(),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Open the watch; the response streams one state per line.
    pub async fn watch(&self, since: Option<u64>) -> Result<reqwest::Response, CallError> {
        let mut url = format!("{}/v1/nodes/{}/state?watch=true", self.base, self.node);
        if let Some(g) = since {
            url.push_str(&format!("&since={g}"));
        }
        let response = self.http.get(url).bearer_auth(&self.token).send().await.map_err(|e| CallError::Unreachable(e.to_string()))?;
        check(response).await
    }

    pub async fn ack(&self, ack: &Ack) -> Result<(), CallError> {
        let url = format!("{}/v1/nodes/{}/ack", self.base, self.node);
        let call = self.http.post(url).bearer_auth(&self.token).json(ack).timeout(Duration::from_secs(5)).send();
        check(call.await.map_err(|e| CallError::Unreachable(e.to_string()))?).await.map(|_| ())
    }

    pub async fn allocate(
        &self,
        id: &str,
        tenant: &str,
        segment: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<EndpointAnswer, CallError> {
        let body = serde_json::json!({"id": id, "tenant": tenant, "segment": segment, "host": self.node, "labels": labels});
        let call =
            self.http.post(format!("{}/v1/endpoints", self.base)).bearer_auth(&self.token).json(&body).timeout(Duration::from_secs(10));
        let response = check(call.send().await.map_err(|e| CallError::Unreachable(e.to_string()))?).await?;
        response.json().await.map_err(|e| CallError::Unreachable(format!("unreadable answer: {e}")))
    }

    pub async fn release(&self, id: &str) -> Result<(), CallError> {
        let call = self.http.delete(format!("{}/v1/endpoints/{id}", self.base)).bearer_auth(&self.token).timeout(Duration::from_secs(10));
        check(call.send().await.map_err(|e| CallError::Unreachable(e.to_string()))?).await.map(|_| ())
    }
}

async fn check(response: reqwest::Response) -> Result<reqwest::Response, CallError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.pointer("/error/message").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or(text);
    if status.is_server_error() {
        return Err(CallError::Unreachable(format!("{status}: {message}")));
    }
    Err(CallError::Refused { status: status.as_u16(), message })
}

/// Parse one line of the watch stream; blank lines are heartbeats.
pub fn parse_line(line: &[u8]) -> Option<Result<NodeState, String>> {
    let line = std::str::from_utf8(line).ok()?.trim();
    if line.is_empty() {
        return None;
    }
    Some(serde_json::from_str(line).map_err(|e| format!("unreadable node state: {e}")))
}

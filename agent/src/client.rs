//! The agent's side of the controller API: its node's state stream, acks, and endpoint
//! allocation on behalf of the CNI plugin.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;
use tessera_agent_api::{Ack, AgentReport, NodeState};

/// The controller replicas this agent talks to; it stays with one until a call to it fails,
/// then moves on to the next (any replica serves any node the same state).
#[derive(Debug, Clone)]
pub struct Controller {
    http: reqwest::Client,
    bases: std::sync::Arc<Vec<String>>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    node: String,
    token: Credential,
}

/// The node's credential: a token given once, or a file read again whenever it changes (a
/// projected ServiceAccount token is rotated by the kubelet well before it expires).
#[derive(Debug, Clone)]
pub enum Credential {
    Token(String),
    File { path: std::path::PathBuf, read: std::sync::Arc<std::sync::Mutex<(Option<std::time::SystemTime>, String)>> },
}

impl Credential {
    /// A token file, read now (a missing or empty file is an error at start, not later).
    pub fn file(path: &std::path::Path) -> anyhow::Result<Credential> {
        let credential = Credential::File { path: path.to_path_buf(), read: Default::default() };
        anyhow::ensure!(!credential.current().is_empty(), "{}: no token in it", path.display());
        Ok(credential)
    }

    /// The token to present now.
    pub fn current(&self) -> String {
        match self {
            Credential::Token(t) => t.clone(),
            Credential::File { path, read } => {
                let mut read = read.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                if modified.is_none() || modified != read.0 {
                    match std::fs::read_to_string(path) {
                        Ok(text) => *read = (modified, text.trim().to_string()),
                        Err(e) => {
                            tracing::warn!(path = %path.display(), error = %e, "cannot read the token file; presenting the last token read")
                        }
                    }
                }
                read.1.clone()
            }
        }
    }
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
    pub fn new(bases: &[String], node: &str, token: &str, ca: Option<&[u8]>) -> anyhow::Result<Controller> {
        Controller::with_credential(bases, node, Credential::Token(token.to_string()), ca)
    }

    pub fn with_credential(bases: &[String], node: &str, token: Credential, ca: Option<&[u8]>) -> anyhow::Result<Controller> {
        anyhow::ensure!(!bases.is_empty(), "--controller: name at least one controller URL");
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(3));
        if let Some(pem) = ca {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
        }
        let mut list = Vec::new();
        for b in bases {
            let b = b.trim().trim_end_matches('/');
            anyhow::ensure!(b.starts_with("http://") || b.starts_with("https://"), "--controller: `{b}` is not an http:// or https:// URL");
            list.push(b.to_string());
        }
        Ok(Controller {
            http: builder.build()?,
            bases: std::sync::Arc::new(list),
            current: std::sync::Arc::default(),
            node: node.to_string(),
            token,
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// The replica calls go to now.
    pub fn base(&self) -> &str {
        &self.bases[self.current.load(std::sync::atomic::Ordering::Relaxed) % self.bases.len()]
    }

    /// Move on to the next replica (after a failure or a silence).
    pub fn fail_over(&self) {
        if self.bases.len() > 1 {
            let next = self.current.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            tracing::info!(controller = %self.bases[next % self.bases.len()], "moving to another controller");
        }
    }

    /// Run `call` against the current replica, then each other one in turn while they are
    /// unreachable; a refusal is an answer and is not retried elsewhere.
    async fn any<T, F, Fut>(&self, call: F) -> Result<T, CallError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, CallError>>,
    {
        let mut last = CallError::Unreachable("no controller".into());
        for _ in 0..self.bases.len() {
            match call(self.base().to_string()).await {
                Err(CallError::Unreachable(m)) => {
                    last = CallError::Unreachable(format!("{}: {m}", self.base()));
                    self.fail_over();
                }
                other => return other,
            }
        }
        Err(last)
    }

    /// Open the watch; the response streams one state per line.
    pub async fn watch(&self, since: Option<u64>) -> Result<reqwest::Response, CallError> {
        let mut url = format!("{}/v1/nodes/{}/state?watch=true", self.base(), self.node);
        if let Some(g) = since {
            url.push_str(&format!("&since={g}"));
        }
        let response =
            self.http.get(url).bearer_auth(self.token.current()).send().await.map_err(|e| CallError::Unreachable(e.to_string()))?;
        check(response).await
    }

    pub async fn ack(&self, ack: &Ack) -> Result<(), CallError> {
        self.any(|base| async move {
            let url = format!("{base}/v1/nodes/{}/ack", self.node);
            let call = self.http.post(url).bearer_auth(self.token.current()).json(ack).timeout(Duration::from_secs(5)).send();
            check(call.await.map_err(|e| CallError::Unreachable(e.to_string()))?).await.map(|_| ())
        })
        .await
    }

    /// The periodic report (liveness, BGP sessions), to whichever replica answers.
    pub async fn report(&self, report: &AgentReport) -> Result<(), CallError> {
        self.any(|base| async move {
            let url = format!("{base}/v1/nodes/{}/report", self.node);
            let call = self.http.post(url).bearer_auth(self.token.current()).json(report).timeout(Duration::from_secs(5)).send();
            check(call.await.map_err(|e| CallError::Unreachable(e.to_string()))?).await.map(|_| ())
        })
        .await
    }

    pub async fn allocate(
        &self,
        id: &str,
        tenant: &str,
        segment: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<EndpointAnswer, CallError> {
        let body = serde_json::json!({"id": id, "tenant": tenant, "segment": segment, "host": self.node, "labels": labels});
        // Allocation is idempotent by id: retrying on another replica cannot allocate twice.
        self.any(|base| {
            let body = body.clone();
            async move {
                let call = self
                    .http
                    .post(format!("{base}/v1/endpoints"))
                    .bearer_auth(self.token.current())
                    .json(&body)
                    .timeout(Duration::from_secs(10));
                let response = check(call.send().await.map_err(|e| CallError::Unreachable(e.to_string()))?).await?;
                response.json().await.map_err(|e| CallError::Unreachable(format!("unreadable answer: {e}")))
            }
        })
        .await
    }

    pub async fn release(&self, id: &str) -> Result<(), CallError> {
        self.any(|base| async move {
            let call =
                self.http.delete(format!("{base}/v1/endpoints/{id}")).bearer_auth(self.token.current()).timeout(Duration::from_secs(10));
            check(call.send().await.map_err(|e| CallError::Unreachable(e.to_string()))?).await.map(|_| ())
        })
        .await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_urls_are_checked_and_failover_goes_round() {
        let err = Controller::new(&["ftp://x".to_string()], "n", "t", None).expect_err("not http");
        assert!(err.to_string().contains("--controller: `ftp://x`"), "{err}");
        assert!(Controller::new(&[], "n", "t", None).is_err());
        let c = Controller::new(&["http://a:1/".to_string(), " http://b:2".to_string()], "n", "t", None).expect("valid");
        assert_eq!(c.base(), "http://a:1");
        c.fail_over();
        assert_eq!(c.base(), "http://b:2");
        c.fail_over();
        assert_eq!(c.base(), "http://a:1");
    }

    #[test]
    fn a_token_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("token");
        std::fs::write(&path, "first\n").expect("write");
        let credential = Credential::file(&path).expect("readable");
        assert_eq!(credential.current(), "first");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&path, "second").expect("rotate");
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
        std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(later)).expect("mtime");
        assert_eq!(credential.current(), "second");
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(credential.current(), "second", "a vanished file keeps the last token");
        std::fs::write(&path, "").expect("empty");
        assert!(Credential::file(&path).is_err(), "an empty token file is refused at start");
    }
}

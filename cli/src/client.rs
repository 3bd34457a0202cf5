//! The HTTP edge of the CLI: requests with the token, API errors turned into one clear line.

use std::time::Duration;

use anyhow::{Context, anyhow};
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::Value;

#[derive(Debug)]
pub struct Api {
    base: String,
    token: Option<String>,
    http: Client,
}

impl Api {
    pub fn new(server: &str, token: Option<&str>) -> anyhow::Result<Api> {
        // An empty TESSERA_TOKEN is a token left unset, not a token to send.
        let token = token.map(str::trim).filter(|t| !t.is_empty());
        let base = server.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            anyhow::bail!("--server must be an http:// or https:// URL, not `{server}`");
        }
        let http = Client::builder().timeout(Duration::from_secs(60)).build().context("building the HTTP client")?;
        Ok(Api { base, token: token.map(String::from), http })
    }

    fn send(&self, request: RequestBuilder) -> anyhow::Result<Value> {
        let request = match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let response = request.send().map_err(|e| anyhow!("cannot reach the controller at {}: {}", self.base, root_cause(&e)))?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED && self.token.is_none() {
            anyhow::bail!("no API token: set TESSERA_TOKEN or pass --token (the controller printed an admin token at its first start)");
        }
        decode(response)
    }

    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }

    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
    }

    pub fn post_text(&self, path: &str, body: String, content_type: &str) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.base)).header("content-type", content_type).body(body))
    }

    pub fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.send(self.http.put(format!("{}{path}", self.base)).json(body))
    }

    pub fn put_text(&self, path: &str, body: String, content_type: &str) -> anyhow::Result<Value> {
        self.send(self.http.put(format!("{}{path}", self.base)).header("content-type", content_type).body(body))
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn decode(response: Response) -> anyhow::Result<Value> {
    let status = response.status();
    let text = response.text().context("reading the controller's answer")?;
    let body: Value = if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    if status.is_success() {
        return Ok(body);
    }
    let error = &body["error"];
    let message = error["message"].as_str().map(String::from).unwrap_or_else(|| format!("{body}"));
    let mut line = match error["field"].as_str() {
        Some(field) => format!("{field}: {message}"),
        None => message,
    };
    if let Some(refusals) = body["plan"]["refusals"].as_array().filter(|r| !r.is_empty()) {
        line = format!("{line} ({} refusal(s))", refusals.len());
    }
    Err(anyhow!("{line} [HTTP {}]", status.as_u16()))
}

/// Percent-encode a value (endpoint ids contain '/').
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A value as one URL path segment. A `.` or `..` part would be resolved away by URL
/// normalisation (encoded or not) and reach another resource: refused, clearly.
pub fn segment(s: &str) -> anyhow::Result<String> {
    if s.split('/').any(|part| part == "." || part == "..") {
        anyhow::bail!("`{s}`: '.' and '..' cannot be addressed in a URL (no Tessera object has such a name)");
    }
    if s.is_empty() {
        anyhow::bail!("an empty name cannot be addressed");
    }
    Ok(encode(s))
}

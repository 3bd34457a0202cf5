//! Request extractors that turn bad input into field-named errors: JSON bodies (with the path
//! of the offending field), text bodies of a declared media type, `If-Match` revisions, and
//! query strings.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The largest request body the API reads (topology and policy documents included).
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Media types of the YAML-or-JSON document bodies (`PUT /v1/topology`, `POST /v1/policies`).
pub const DOCUMENT_TYPES: &[&str] = &["application/yaml", "application/x-yaml", "text/yaml", "application/json", "text/plain"];

const JSON_TYPES: &[&str] = &["application/json"];

/// A JSON body; a syntax or type error names the field (`ips[1]`) and answers 400.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let bytes = read_body(req, JSON_TYPES).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Read a request's body: its `Content-Type`, when sent, must be one of `accepted` (415
/// otherwise); over [`BODY_LIMIT`] is a 413 and an empty body a 400, all as JSON errors.
/// Handlers call this after their role check, so a caller without the right never gets a
/// body read, let alone parsed.
pub async fn read_body(req: Request, accepted: &[&str]) -> Result<Bytes, ApiError> {
    if let Some(value) = req.headers().get(axum::http::header::CONTENT_TYPE) {
        let essence = value.to_str().unwrap_or_default().split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        let json_suffix = accepted.contains(&"application/json") && essence.starts_with("application/") && essence.ends_with("+json");
        if !accepted.contains(&essence.as_str()) && !json_suffix {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("Content-Type `{essence}` is not accepted here; send one of: {}", accepted.join(", ")),
            )
            .with_field("Content-Type"));
        }
    }
    let bytes = Bytes::from_request(req, &()).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the body is over the limit of {BODY_LIMIT} bytes"))
                .with_field("body")
        } else {
            ApiError::bad_request("body", e.body_text())
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("body", "required: the request has no body"));
    }
    Ok(bytes)
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path == "?" { "body".to_string() } else { path };
        ApiError::bad_request(field, e.into_inner().to_string())
    })
}

/// The revision a write is conditional on (`If-Match: "7"`), if the caller sent one.
#[derive(Debug, Clone, Copy)]
pub struct IfMatch(pub Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(axum::http::header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let text = value.to_str().unwrap_or_default().trim();
        // `*` matches any current revision (RFC 9110 §13.1.1): the write is unconditional.
        if text == "*" {
            return Ok(IfMatch(None));
        }
        let text = text.strip_prefix("W/").unwrap_or(text);
        text.trim_matches('"')
            .parse::<i64>()
            .map(|r| IfMatch(Some(r)))
            .map_err(|_| ApiError::bad_request("If-Match", format!("`{text}` is not an ETag this API issued (expected for example \"3\")")))
    }
}

/// A query string; an unknown or malformed parameter names itself and answers 400.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let mut seen = std::collections::BTreeSet::new();
        for (key, _) in form_urlencoded::parse(query.as_bytes()) {
            if !seen.insert(key.clone()) {
                return Err(ApiError::bad_request(format!("query.{key}"), "given more than once"));
            }
        }
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(QueryParams)
            .map_err(|e| ApiError::bad_request(format!("query.{}", e.path()), e.into_inner().to_string()))
    }
}

/// An `ETag` header value for a revision.
pub fn etag(revision: i64) -> [(axum::http::HeaderName, String); 1] {
    [(axum::http::header::ETAG, format!("\"{revision}\""))]
}

//! Endpoints, a page at a time: filtered in the database (tenant, segment, host, part of the
//! id or an address, labels) and continued by id, so 100,000 endpoints cost one page to show.

use std::net::IpAddr;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::{Value, context};
use serde::Deserialize;

use super::pages::encode;
use super::tenants::parse_labels;
use super::{Viewer, refused};
use crate::api::AppState;
use crate::store::EndpointQuery;

/// Endpoints on one page.
pub const PAGE: usize = 50;

#[derive(Deserialize, Default)]
pub struct EndpointFilter {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    segment: String,
    #[serde(default)]
    host: String,
    /// Part of an id, or an address.
    #[serde(default)]
    q: String,
    #[serde(default)]
    labels: String,
    after: Option<String>,
}

fn given(text: &str) -> Option<String> {
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

pub async fn endpoints(viewer: Viewer, State(state): State<AppState>, Query(f): Query<EndpointFilter>) -> Response {
    // A tenant's token lists its own tenant's endpoints, whatever the form says.
    let tenant = match viewer.0.tenant_filter(given(&f.tenant).as_deref()) {
        Ok(t) => t,
        Err(e) => return refused(&viewer, StatusCode::FORBIDDEN, &e.message),
    };
    let form = context! { tenant => f.tenant.clone(), segment => f.segment.clone(), host => f.host.clone(), q => f.q.clone(), labels => f.labels.clone() };
    let labels = match parse_labels(&f.labels) {
        Ok(l) => l,
        Err(message) => {
            let error = context! { field => "labels", message };
            return viewer.page("endpoints.html", "/ui/endpoints", "Endpoints", context! { error, ..form });
        }
    };
    let text = given(&f.q);
    let address = text.as_deref().and_then(|t| t.parse::<IpAddr>().ok());
    let query = EndpointQuery {
        tenant,
        segment: given(&f.segment),
        host: given(&f.host),
        id_contains: text.filter(|_| address.is_none()),
        address,
        labels,
        after: f.after.clone().filter(|a| !a.is_empty()),
        limit: PAGE,
    };
    let page = match state.store.endpoint_page(&query).await {
        Ok(p) => p,
        Err(e) => return super::failure(&e.to_string()),
    };
    let rows: Vec<Value> = page
        .endpoints
        .iter()
        .map(|e| {
            let labels: Vec<String> = e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let ports: Vec<String> = e.named_ports.iter().map(|p| format!("{} {}/{}", p.name, p.protocol, p.port)).collect();
            context! {
                id => e.id.clone(), tenant => e.tenant.clone(), segment => e.segment.clone(), host => e.host.clone(),
                ips => e.ips.iter().map(ToString::to_string).collect::<Vec<_>>(), labels, ports,
                explain => format!("/ui/explain?from={}", encode(&e.id)),
            }
        })
        .collect();
    let filters = format!(
        "tenant={}&segment={}&host={}&q={}&labels={}",
        encode(&f.tenant),
        encode(&f.segment),
        encode(&f.host),
        encode(&f.q),
        encode(&f.labels)
    );
    let next = page.next.as_ref().map(|after| format!("/ui/endpoints?{filters}&after={}", encode(after)));
    let first = f.after.is_some().then(|| format!("/ui/endpoints?{filters}"));
    let values = context! { rows, total => page.total, next, first, infra => viewer.infra(), live => true, ..form };
    viewer.page("endpoints.html", "/ui/endpoints", "Endpoints", values)
}

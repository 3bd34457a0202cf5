//! The web UI at `/`: server-rendered HTML (minijinja templates and CSS/JS from `web/`, embedded
//! in the binary: no build step, no network), behind the API's tokens and rules. A login form
//! takes a token and keeps it in an HttpOnly, SameSite=Strict cookie; every page asks the same
//! questions of it as the API does of a bearer token, so a read-only or tenant token sees and
//! changes here exactly what it may through the API. Views that show live state follow the
//! change feed (`/ui/events`, server-sent events).

mod endpoints;
mod pages;
mod routes;
mod tenants;
mod topology;
mod tree;

use std::sync::OnceLock;

use axum::Router;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use minijinja::{Environment, Value, context};

use crate::api::AppState;
use crate::api::auth::Caller;
use crate::store::Principal;

/// The session cookie: the token itself, never readable by scripts.
const COOKIE: &str = "tessera_session";

const TEMPLATES: [(&str, &str); 13] = [
    ("layout.html", include_str!("../../../web/templates/layout.html")),
    ("login.html", include_str!("../../../web/templates/login.html")),
    ("topology.html", include_str!("../../../web/templates/topology.html")),
    ("policies.html", include_str!("../../../web/templates/policies.html")),
    ("policy.html", include_str!("../../../web/templates/policy.html")),
    ("explain.html", include_str!("../../../web/templates/explain.html")),
    ("nodes.html", include_str!("../../../web/templates/nodes.html")),
    ("search.html", include_str!("../../../web/templates/search.html")),
    ("error.html", include_str!("../../../web/templates/error.html")),
    ("tenants.html", include_str!("../../../web/templates/tenants.html")),
    ("endpoints.html", include_str!("../../../web/templates/endpoints.html")),
    ("routes.html", include_str!("../../../web/templates/routes.html")),
    ("pager.html", include_str!("../../../web/templates/pager.html")),
];

const ASSETS: [(&str, &str, &str); 3] = [
    ("tessera.css", "text/css; charset=utf-8", include_str!("../../../web/static/tessera.css")),
    ("tessera.js", "text/javascript; charset=utf-8", include_str!("../../../web/static/tessera.js")),
    ("favicon.svg", "image/svg+xml", include_str!("../../../web/static/favicon.svg")),
];

fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        for (name, text) in TEMPLATES {
            env.add_template(name, text).unwrap_or_else(|e| panic!("web/templates/{name}: {e}"));
        }
        env
    })
}

/// The UI's routes (merged into the whole HTTP surface by `api::app`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/topology") }))
        .route("/ui", get(|| async { Redirect::to("/ui/topology") }))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/topology", get(topology::topology).post(topology::change))
        .route("/ui/policies", get(pages::policies).post(pages::apply_policies))
        .route("/ui/policies/{*id}", get(pages::policy))
        .route("/ui/explain", get(pages::explain))
        .route("/ui/tenants", get(tenants::tenants).post(tenants::create_tenant))
        .route("/ui/tenants/{tenant}", get(tenants::tenant))
        .route("/ui/tenants/{tenant}/segments", post(tenants::create_segment))
        .route("/ui/tenants/{tenant}/delete", post(tenants::delete_tenant))
        .route("/ui/tenants/{tenant}/labels", post(tenants::relabel_tenant))
        .route("/ui/tenants/{tenant}/segments/{segment}/labels", post(tenants::relabel_segment))
        .route("/ui/endpoints", get(endpoints::endpoints))
        .route("/ui/routes", get(routes::routes))
        .route("/ui/nodes", get(pages::nodes))
        .route("/ui/search", get(pages::search))
        .route("/ui/events", get(events))
        .route("/ui/static/{file}", get(asset))
        .layer(axum::middleware::map_response(secure))
}

/// Every UI answer: no framing, no sniffing, nothing loaded from elsewhere, no referrer to
/// other sites (same-origin: with none at all, browsers send `Origin: null` on our own forms).
async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("x-frame-options", "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// One page of a listing held in memory (`?page=N`, from 1): its rows, and the pager the
/// templates show (`pager.html`); `href` is the listing's URL with its filters, ending in `?`
/// or `&`.
fn paginate<T>(items: Vec<T>, page: Option<usize>, size: usize, href: &str) -> (Vec<T>, Value) {
    let total = items.len();
    let pages = total.div_ceil(size).max(1);
    let page = page.unwrap_or(1).clamp(1, pages);
    let rows: Vec<T> = items.into_iter().skip((page - 1) * size).take(size).collect();
    let link = |n: usize| format!("{href}page={n}");
    let pager = context! {
        total, page, pages,
        prev => (page > 1).then(|| link(page - 1)),
        next => (page < pages).then(|| link(page + 1)),
    };
    (rows, pager)
}

/// A form's number field that may be left empty.
fn optional_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let text: Option<String> = serde::Deserialize::deserialize(d)?;
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(n) => n.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// Who is looking: the session's token, authenticated as the API authenticates it. Nodes' tokens
/// are for agents, not people.
#[derive(Debug)]
pub struct Viewer(pub Caller);

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let to_login = || Redirect::to("/ui/login").into_response();
        let token = session_token(&parts.headers).ok_or_else(to_login)?;
        match state.store.authenticate(&token).await {
            Ok(Some(Principal::Node(_))) | Ok(None) => Err(to_login()),
            Ok(Some(principal)) => Ok(Viewer(Caller(principal))),
            Err(e) => Err(failure(&e.to_string())),
        }
    }
}

fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|t| !t.is_empty())
}

/// A form post from this site: SameSite=Strict keeps the cookie off other sites' requests, and
/// a browser's `Origin`, when it sends one, must name this host. Others are refused before the
/// form is read.
#[derive(Debug)]
pub struct FromThisSite;

impl<S: Send + Sync> FromRequestParts<S> for FromThisSite {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        if same_origin(&parts.headers) {
            Ok(FromThisSite)
        } else {
            Err((StatusCode::FORBIDDEN, render_plain("Refused", "The form came from another site.")).into_response())
        }
    }
}

fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else { return true };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    origin.split_once("://").is_some_and(|(_, rest)| rest == host)
}

impl Viewer {
    /// How the header names the token's reach.
    fn label(&self) -> String {
        match &self.0.0 {
            Principal::Admin => "admin".into(),
            Principal::ReadOnly => "read-only".into(),
            Principal::Tenant(t) => format!("tenant {t}"),
            Principal::Node(n) => format!("node {n}"),
        }
    }

    fn infra(&self) -> bool {
        self.0.require_infra_read().is_ok()
    }

    /// A page of the UI: `template` with `values`, the header for this viewer, `current` marked.
    fn page(&self, template: &str, current: &str, title: &str, values: Value) -> Response {
        let mut nav = Vec::new();
        for (href, label, infra) in [
            ("/ui/topology", "Topology", true),
            ("/ui/tenants", "Tenants", false),
            ("/ui/endpoints", "Endpoints", false),
            ("/ui/policies", "Policies", false),
            ("/ui/explain", "Explain", true),
            ("/ui/nodes", "Nodes", true),
            ("/ui/routes", "Routes", true),
        ] {
            if !infra || self.infra() {
                nav.push(context! { href, label, current => href == current });
            }
        }
        render(template, context! { who => self.label(), nav, title, ..values })
    }
}

fn render(template: &str, values: Value) -> Response {
    match templates().get_template(template).and_then(|t| t.render(values)) {
        Ok(html) => Html(html).into_response(),
        Err(e) => failure(&format!("{template}: {e}")),
    }
}

/// An internal failure: logged, and said in a few words.
fn failure(detail: &str) -> Response {
    tracing::error!(error = %detail, "the web UI failed");
    let body = render_plain("Something went wrong", "The controller could not answer; its log says why.");
    (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
}

fn render_plain(title: &str, message: &str) -> Html<String> {
    let html = templates()
        .get_template("error.html")
        .and_then(|t| t.render(context! { title, message }))
        .unwrap_or_else(|_| tree::escape(message));
    Html(html)
}

/// What the viewer may not see, said as a page (not as the API's JSON).
fn refused(viewer: &Viewer, status: StatusCode, message: &str) -> Response {
    let mut page = viewer.page("error.html", "", "Not for this token", context! { message });
    *page.status_mut() = status;
    page
}

async fn login_form() -> Response {
    render("login.html", context! { title => "Log in" })
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(_: FromThisSite, State(state): State<AppState>, headers: HeaderMap, axum::Form(form): axum::Form<LoginForm>) -> Response {
    let token = form.token.trim();
    let refused = |error: &str| {
        let mut page = render("login.html", context! { title => "Log in", error });
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        page
    };
    // A cookie holds printable ASCII without separators: anything else is no token of ours.
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic() && b != b';' && b != b',') {
        return refused("That is not a token.");
    }
    match state.store.authenticate(token).await {
        Ok(Some(Principal::Node(_))) => refused("A node's token is for its agent, not for people."),
        Ok(Some(_)) => {
            // Over HTTPS (the browser says so in its Origin), the cookie never travels in clear.
            let https = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()).is_some_and(|o| o.starts_with("https://"));
            let secure = if https { "; Secure" } else { "" };
            let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200{secure}");
            let mut answer = Redirect::to("/ui/topology").into_response();
            answer.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).unwrap_or(HeaderValue::from_static("")));
            answer
        }
        Ok(None) => refused("Unknown token."),
        Err(e) => failure(&e.to_string()),
    }
}

async fn logout(_: FromThisSite) -> Response {
    let mut answer = Redirect::to("/ui/login").into_response();
    answer
        .headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_static("tessera_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"));
    answer
}

/// The change feed as server-sent events: one `change` event per position this replica reaches.
async fn events(_: Viewer, State(state): State<AppState>) -> impl IntoResponse {
    let positions = state.dist.positions();
    let stream = futures_util::stream::unfold(positions, |mut rx| async move {
        rx.changed().await.ok()?;
        let seq = *rx.borrow_and_update();
        Some((Ok::<_, std::convert::Infallible>(Event::default().event("change").data(seq.to_string())), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, ..)| *name == file) {
        Some((_, kind, body)) => ([(header::CONTENT_TYPE, *kind), (header::CACHE_CONTROL, "no-cache")], *body).into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

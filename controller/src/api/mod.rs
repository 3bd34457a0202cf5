//! The REST API under `/v1`, plus `/healthz`, `/readyz` and `/metrics`.
//!
//! `app(state)` builds the whole router, so tests drive it with `oneshot` and the binary serves it.

pub(crate) mod auth;
mod error;
mod extract;
pub(crate) mod fabric;
pub(crate) mod inventory;
mod ipam;
mod nodes;
mod openapi;
pub(crate) mod policies;
mod policy;
mod system;
pub(crate) mod topology;
pub(crate) mod views;

use std::sync::Arc;

use axum::Router;
use axum::routing::get;

pub use error::{ApiError, ErrorBody};
pub use openapi::ApiDoc;

use crate::distribute::Distributor;
use crate::metrics::Metrics;
use crate::ops::Ops;
use crate::store::{Store, StoreError};
use crate::writer::Writer;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub dist: Distributor,
    /// Every change's one way in.
    pub ops: Ops,
    /// This replica's side of the writer lease.
    pub writer: Writer,
    /// Its BGP sessions with route servers (controller mode; while it holds the lease).
    pub route_servers: crate::route_servers::Status,
    /// The VPC route tables as its last passes left them (while it holds the lease).
    pub vpc_routes: crate::vpc_routes::Status,
    /// In a cluster: agents' ServiceAccount tokens, checked with TokenReviews.
    pub token_reviewer: Option<Arc<tessera_operator::review::TokenReviewer>>,
}

impl AppState {
    /// Compile the stored state and get ready to serve, as a replica with a fresh id.
    pub async fn new(store: Store) -> Result<AppState, StoreError> {
        AppState::with_replica(store, crate::writer::new_replica_id()).await
    }

    /// Compile the stored state and get ready to serve, as replica `replica`.
    pub async fn with_replica(store: Store, replica: String) -> Result<AppState, StoreError> {
        let dist = Distributor::start(store.clone()).await?;
        let writer = Writer::new(store.clone(), replica);
        let ops = Ops::new(store.clone(), dist.clone());
        Ok(AppState {
            store,
            metrics: Arc::new(Metrics::default()),
            dist,
            ops,
            writer,
            route_servers: Default::default(),
            vpc_routes: Default::default(),
            token_reviewer: None,
        })
    }
}

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/openapi.json", get(system::openapi))
        .route("/policy/simulate", axum::routing::post(policy::simulate_handler))
        .route("/policy/explain", axum::routing::post(policy::explain_handler))
        .route("/policies", get(policies::list_policies).post(policies::put_policies))
        .route("/policies/{*id}", get(policies::get_policy).delete(policies::delete_policy))
        .route("/nodes", get(nodes::list_nodes))
        .route("/nodes/{node}/state", get(nodes::node_state))
        .route("/nodes/{node}/ack", axum::routing::post(nodes::ack))
        .route("/nodes/{node}/report", axum::routing::post(nodes::report))
        .route("/bgp", get(fabric::bgp))
        .route("/bgp/controller", get(fabric::bgp_controller))
        .route("/vips", get(fabric::list_vips).post(fabric::create_vip))
        .route("/vips/{address}", get(fabric::get_vip).delete(fabric::delete_vip))
        .route("/hosts/{name}/drain", axum::routing::post(fabric::drain_host).delete(fabric::undrain_host))
        .route("/topology", get(topology::get_topology).put(topology::put_topology))
        .route("/networks", get(topology::list_networks))
        .route("/routes", get(topology::get_routes))
        .route("/routes/cloud", get(fabric::cloud_routes))
        .route("/hosts", get(inventory::list_hosts).post(inventory::create_host))
        .route("/hosts/{name}", get(inventory::get_host).put(inventory::update_host).delete(inventory::delete_host))
        .route("/tenants", get(inventory::list_tenants).post(inventory::create_tenant))
        .route("/tenants/{tenant}", get(inventory::get_tenant).put(inventory::update_tenant).delete(inventory::delete_tenant))
        .route("/tenants/{tenant}/segments", get(inventory::list_segments).post(inventory::create_segment))
        .route(
            "/tenants/{tenant}/segments/{segment}",
            get(inventory::get_segment).put(inventory::update_segment).delete(inventory::delete_segment),
        )
        .route("/blocks", get(ipam::list_blocks))
        .route("/endpoints", get(ipam::list_endpoints).post(ipam::create_endpoint))
        .route("/endpoints/{*id}", get(ipam::get_endpoint).put(ipam::update_endpoint).delete(ipam::delete_endpoint))
        .route("/tokens", get(system::list_tokens).post(system::create_token))
        .route("/tokens/{id}", axum::routing::delete(system::delete_token))
        .route("/leader", get(system::leader))
        .route("/controllers", get(system::controllers));
    Router::new()
        .nest("/v1", v1)
        .merge(crate::web::router())
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .fallback(system::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(state.clone(), system::observe))
        .with_state(state)
}

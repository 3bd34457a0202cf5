//! The Tessera controller: the composition root. It owns the store, serves the REST API and the
//! metrics, and distributes node state to the agents.

pub mod api;
pub mod distribute;
pub mod health;
pub mod kubernetes;
pub mod metrics;
pub mod ops;
pub mod route_servers;
pub mod routes;
pub mod run;
pub mod store;
pub mod vips;
pub mod vpc_routes;
pub mod web;
pub mod writer;

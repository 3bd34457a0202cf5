//! The Tessera controller: the composition root. It owns the store, serves the REST API and the
//! metrics, and (in later work) distributes node state and reconciles route targets.

pub mod api;
pub mod metrics;
pub mod run;
pub mod store;

//! Tessera's policy engine, pure: the policy model, label selectors, Kubernetes NetworkPolicy,
//! native and Romana policies translated into one intermediate form, the reference evaluator
//! behind `simulate`/`explain`, and the compiler to per-endpoint allow-lists and nftables rulesets.
//!
//! **Architecture Invariant:** this crate does no IO, spawns nothing and reads no clock (checked
//! by `tests/tests/purity.rs`).

pub mod compile;
pub mod compiler;
pub mod error;
pub mod eval;
pub mod input;
mod k8s;
pub mod model;
mod native;
pub mod network_policy_api;
pub mod nft;
mod romana;
#[cfg(feature = "schema")]
pub mod schema;
pub mod selector;
pub mod simulate;
pub mod testgen;

pub use error::PolicyError;
pub use input::Inputs;

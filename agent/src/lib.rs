//! The node agent as a library: the binary (`main.rs`) runs [`run::run`]; benchmarks and tests
//! use the pieces (for example [`nft`]) directly.

/// The BGP speaker's IO (its own crate, shared with the controller).
pub use tessera_bgp_speaker as bgp;
pub mod client;
pub mod disk;
pub mod drift;
pub mod elements;
pub mod enforcer;
pub mod error;
pub mod fabric;
pub mod metrics;
pub mod nft;
pub mod routes;
pub mod run;
pub mod socket;

//! Tessera's policy model and compiler: NetworkPolicy and native policies compiled into
//! per-endpoint allow-lists and nftables rulesets, with offline simulate/explain.
//!
//! Not built yet (tracked by the policy engine issue). The crate exists so that its purity is
//! checked from the start: no IO, no runtime, no other Tessera crate (see `tests/tests/purity.rs`).

//! The agent's errors, one enum per edge it drives: nftables, routes over netlink, its state
//! directory; and what the enforcer reports for a state it could not apply. Messages stay one
//! line: they go to logs and, in acks, to the controller.

use std::path::PathBuf;

/// nftables refused, or said something unexpected.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot run {binary}: {source}")]
    Run { binary: String, source: std::io::Error },
    #[error("nft {args}: {stderr}")]
    Refused { args: String, stderr: String },
    #[error("unreadable nft listing: {0}")]
    Listing(#[from] serde_json::Error),
    #[error("nf_tables batch: {0}")]
    Batch(String),
    #[error("verification after a delta: {0}")]
    Verification(String),
}

impl NftError {
    /// The table (or another object) does not exist.
    pub fn is_missing(&self) -> bool {
        matches!(self, NftError::Refused { stderr, .. } if stderr.contains("No such file or directory"))
    }
}

/// A route or the policy rule could not be read or changed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct RouteError {
    pub what: String,
    pub message: String,
}

impl RouteError {
    pub fn new(what: impl Into<String>, error: impl std::fmt::Display) -> RouteError {
        RouteError { what: what.into(), message: error.to_string() }
    }
}

/// A state file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("encoding {path}: {source}")]
    Encode { path: PathBuf, source: serde_json::Error },
}

/// Why the enforcer could not apply a state (it keeps enforcing the previous one).
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error(transparent)]
    Nft(#[from] NftError),
    #[error(transparent)]
    Routes(#[from] RouteError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("the saved state is for node `{found}`, not `{node}`; refusing to enforce it")]
    WrongNode { node: String, found: String },
    #[error("{0}")]
    Mismatch(String),
    #[error("the wiring of endpoint `{0}` was abandoned")]
    Abandoned(String),
}

/// Why a watch connection ended, and whether any state arrived before it did.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct WatchEnded {
    pub message: String,
    pub received: bool,
    /// The controller refused the watch with this HTTP status (the node or its token is gone).
    pub refused: Option<u16>,
}

//! The agent's files: the last-known-good node state and the host interfaces of endpoints.
//! Written to a temporary file and renamed, so a crash never leaves half a file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tessera_agent_api::NodeState;

use crate::error::DiskError;

#[derive(Debug, Clone)]
pub struct Disk {
    pub dir: PathBuf,
}

impl Disk {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn load_state(&self) -> Option<NodeState> {
        read(&self.path("node-state.json"))
    }

    pub fn save_state(&self, state: &NodeState) -> Result<(), DiskError> {
        write(&self.path("node-state.json"), state)
    }

    pub fn load_wired(&self) -> BTreeMap<String, String> {
        read(&self.path("wired.json")).unwrap_or_default()
    }

    pub fn save_wired(&self, wired: &BTreeMap<String, String>) -> Result<(), DiskError> {
        write(&self.path("wired.json"), wired)
    }
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "ignoring an unreadable state file");
            None
        }
    }
}

fn write<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), DiskError> {
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec(value).map_err(|source| DiskError::Encode { path: path.to_path_buf(), source })?;
    std::fs::write(&tmp, bytes).map_err(|source| DiskError::Io { path: tmp.clone(), source })?;
    std::fs::rename(&tmp, path).map_err(|source| DiskError::Io { path: path.to_path_buf(), source })
}

//! Errors of the policy crate: always anchored at a field, with the fix in the message.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{}{field}: {message}", object.as_ref().map(|o| format!("{o}: ")).unwrap_or_default())]
pub struct PolicyError {
    /// The object at fault (`NetworkPolicy default/deny-all`), when known.
    pub object: Option<String>,
    /// Path of the field inside the object (`spec.ingress[0].ports[1].endPort`).
    pub field: String,
    pub message: String,
}

impl PolicyError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
        PolicyError { object: None, field: field.into(), message: message.into() }
    }

    pub fn in_object(mut self, object: impl Into<String>) -> PolicyError {
        self.object.get_or_insert_with(|| object.into());
        self
    }
}

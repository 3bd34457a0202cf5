//! Errors of the policy crate: always anchored at a field, with the fix in the message, and
//! saying whether the input is invalid (its own API or format refuses it too) or valid but
//! refused because Tessera cannot enforce it exactly (strict admission).

use serde::Serialize;

/// Why input is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Refusal {
    /// Invalid: the object's own API (the Kubernetes API server, Romana, Tessera's schema) refuses it.
    Invalid,
    /// Valid, but the dataplane cannot enforce it exactly; refused rather than widened or dropped.
    Unenforceable,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{}{field}: {message}{}", object.as_ref().map(|o| format!("{o}: ")).unwrap_or_default(), match kind {
    Refusal::Invalid => "",
    Refusal::Unenforceable => " (strict admission: valid input that Tessera cannot enforce exactly is refused, never widened or dropped)",
})]
pub struct PolicyError {
    /// The object at fault (`NetworkPolicy default/deny-all`), when known.
    pub object: Option<String>,
    /// Path of the field inside the object (`spec.ingress[0].ports[1].endPort`).
    pub field: String,
    pub message: String,
    pub kind: Refusal,
}

impl PolicyError {
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
        PolicyError { object: None, field: field.into(), message: message.into(), kind: Refusal::Invalid }
    }

    /// Valid input that cannot be enforced exactly.
    pub fn unenforceable(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
        PolicyError { kind: Refusal::Unenforceable, ..PolicyError::field(field, message) }
    }

    pub fn in_object(mut self, object: impl Into<String>) -> PolicyError {
        self.object.get_or_insert_with(|| object.into());
        self
    }
}

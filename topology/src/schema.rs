//! The JSON schema of Tessera's topology document, from the types it is read with (so the
//! Kubernetes CRD cannot drift from the parser). What a structural schema cannot say — a
//! group's nested groups (a recursive shape), a CIDR given as one string or a list — is left
//! open there and checked by the parser, which names the field.

use schemars::generate::SchemaSettings;
use schemars::{Schema, SchemaGenerator, json_schema};

/// `cidr: 10.1.0.0/16` or `cidr: [10.1.0.0/16, fd00:1::/48]`.
pub(crate) fn string_or_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"x-kubernetes-preserve-unknown-fields": true, "description": "a CIDR, or a list of CIDRs (one per network)"})
}

/// A group's subgroups: groups again, to any depth.
pub(crate) fn nested_groups(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "description": "subgroups, shaped like this group",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
    })
}

/// The topology document (Tessera's format), under `settings` (their transforms applied).
pub fn document(settings: SchemaSettings) -> Schema {
    settings.into_generator().into_root_schema_for::<crate::format::TesseraDoc>()
}

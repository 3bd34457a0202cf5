//! JSON schemas of the native kinds' `spec`, from the very types the engine reads them with (so
//! a Kubernetes CRD cannot drift from the engine). The schemas say the shape; what a shape cannot
//! say (one peer kind per entry, port ranges, selectors' syntax) the engine checks and names.

use schemars::generate::SchemaSettings;
use schemars::{Schema, SchemaGenerator, json_schema};

/// A `port` that is a number or a name, as Kubernetes marks it.
pub(crate) fn int_or_string(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"x-kubernetes-int-or-string": true})
}

/// A segment named alone (`front`) or with its tenant (`{tenant: shop, name: front}`): no
/// structural schema has "string or object", so the shape is left to the engine.
pub(crate) fn string_or_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"x-kubernetes-preserve-unknown-fields": true, "description": "a segment name, or {tenant, name}"})
}

/// The `spec` of a `TesseraPolicy`, under `settings` (their transforms applied).
pub fn tessera_policy(settings: SchemaSettings) -> Schema {
    settings.into_generator().into_root_schema_for::<crate::native::TenantPolicySpec>()
}

/// The `spec` of a `TesseraClusterPolicy`, under `settings`.
pub fn tessera_cluster_policy(settings: SchemaSettings) -> Schema {
    settings.into_generator().into_root_schema_for::<crate::native::ClusterPolicySpec>()
}

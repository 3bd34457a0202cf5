//! Tessera's own kinds as CustomResourceDefinitions (`tessera.io/v1`): `TesseraPolicy`
//! (namespaced), `TesseraClusterPolicy` and `TesseraTopology` (cluster-scoped; the one named
//! `default` is the topology). Their `spec` schemas are generated from the types the engine and
//! the topology parser read them with, so the apiserver refuses what cannot parse (a
//! misspelt field, a wrong type) and the engine names the rest in the object's status; the
//! status subresource is the operator's: whether the engine accepted the object, and how many
//! nodes enforce it.
//!
//! `deploy/kubernetes/crds/tessera.io.yaml` is this module's output, checked in (a test keeps
//! the two equal; `TESSERA_WRITE_CRDS=1 cargo test -p tessera-operator` rewrites the file).

use kube_core::schema::StructuralSchemaRewriter;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use serde::Serialize;
use serde_json::{Value, json};

use crate::index::{CUSTOM_POLICY_KINDS, PolicyKind};

pub const GROUP: &str = "tessera.io";

/// The topology as a cluster-scoped object; only the one named [`TOPOLOGY_NAME`] is read.
pub const TOPOLOGY: PolicyKind =
    PolicyKind { group: GROUP, version: "v1", kind: "TesseraTopology", plural: "tesseratopologies", namespaced: false };
pub const TOPOLOGY_NAME: &str = "default";

/// What the operator says in the topology object's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopologyStatus {
    pub observed_generation: i64,
    /// `Accepted`: True once the store holds this generation, False (reason `Refused`) with the
    /// parser's field or the addresses the change would move.
    pub conditions: Vec<Condition>,
    /// The store's topology revision this generation became.
    pub revision: Option<i64>,
}

/// What the operator says in a policy object's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// The `metadata.generation` the status speaks of.
    pub observed_generation: i64,
    /// `Accepted`: True once the engine has taken the object, False (reason `Refused`, the
    /// field in the message) when it refused it; nothing of a refused object is enforced.
    pub conditions: Vec<Condition>,
    /// How many nodes enforce the object's latest generation, of how many (nodes that have
    /// applied their latest state; a lower bound).
    pub nodes: Option<crate::index::Enforced>,
}

/// A condition as Kubernetes objects carry them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    pub observed_generation: i64,
    /// RFC 3339.
    pub last_transition_time: String,
}

/// The CustomResourceDefinitions of Tessera's kinds.
pub fn definitions() -> Vec<Value> {
    let settings = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(StructuralSchemaRewriter);
    let status = settings.clone().into_generator().into_root_schema_for::<PolicyStatus>();
    let accepted = json!({"name": "Accepted", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Accepted\")].status"});
    let age = json!({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"});
    let mut out: Vec<Value> = CUSTOM_POLICY_KINDS
        .iter()
        .filter(|kind| kind.group == GROUP)
        .map(|kind| {
            let spec = match kind.kind {
                "TesseraPolicy" => tessera_policy::schema::tessera_policy(settings.clone()),
                _ => tessera_policy::schema::tessera_cluster_policy(settings.clone()),
            };
            let mut columns = vec![
                accepted.clone(),
                json!({"name": "Enforced", "type": "integer", "jsonPath": ".status.nodes.applied"}),
                json!({"name": "Nodes", "type": "integer", "jsonPath": ".status.nodes.total"}),
                age.clone(),
            ];
            if kind.kind == "TesseraClusterPolicy" {
                columns.insert(0, json!({"name": "Tier", "type": "string", "jsonPath": ".spec.tier"}));
                columns.insert(1, json!({"name": "Priority", "type": "integer", "jsonPath": ".spec.priority"}));
            }
            definition(kind, spec, status.clone(), columns)
        })
        .collect();
    let topology = tessera_topology::schema::document(settings.clone());
    let topology_status = settings.into_generator().into_root_schema_for::<TopologyStatus>();
    let columns = vec![accepted, json!({"name": "Revision", "type": "integer", "jsonPath": ".status.revision"}), age];
    out.push(definition(&TOPOLOGY, topology, topology_status, columns));
    out
}

fn definition(kind: &PolicyKind, spec: Schema, status: Schema, columns: Vec<Value>) -> Value {
    let schema = json!({
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    });
    let singular = kind.kind.to_ascii_lowercase();
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{}.{}", kind.plural, kind.group)},
        "spec": {
            "group": kind.group,
            "names": {"kind": kind.kind, "listKind": format!("{}List", kind.kind), "plural": kind.plural, "singular": singular, "categories": ["tessera"]},
            "scope": if kind.namespaced { "Namespaced" } else { "Cluster" },
            "versions": [{
                "name": kind.version,
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": structural(schema)},
            }],
        },
    })
}

/// What the apiserver's structural-schema rules refuse, taken out: `additionalProperties: false`
/// (pruning drops unknown fields anyway; the engine names them), and integer formats it does not
/// know (`uint32`, ...), which say no more than the bounds the engine checks; and type names.
fn structural(mut schema: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if map.get("additionalProperties") == Some(&Value::Bool(false)) {
                    map.remove("additionalProperties");
                }
                // Rust type names say nothing to a cluster's users.
                if map.get("title").is_some_and(Value::is_string) {
                    map.remove("title");
                }
                if map.get("format").and_then(Value::as_str).is_some_and(|f| !["int32", "int64", "date-time"].contains(&f)) {
                    map.remove("format");
                }
                map.values_mut().for_each(walk);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut schema);
    schema
}

/// The definitions as the YAML file deploy/ holds (one document each).
pub fn definitions_yaml() -> String {
    let mut out = String::from("# Generated by tessera-operator (crd.rs) from the engine's types: do not edit.\n");
    for d in definitions() {
        out.push_str("---\n");
        out.push_str(&serde_json::to_string_pretty(&d).expect("JSON"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/kubernetes/crds/tessera.io.yaml");

    #[test]
    fn deploy_holds_the_generated_definitions() {
        let generated = definitions_yaml();
        if std::env::var_os("TESSERA_WRITE_CRDS").is_some() {
            std::fs::write(FILE, &generated).expect("write");
        }
        let held = std::fs::read_to_string(FILE).unwrap_or_default();
        assert!(held == generated, "{FILE} differs from the generated CRDs: run `TESSERA_WRITE_CRDS=1 cargo test -p tessera-operator`");
    }

    #[test]
    fn the_schemas_are_structural() {
        fn check(path: &str, value: &Value) {
            match value {
                Value::Object(map) => {
                    for bad in ["$ref", "anyOf", "oneOf", "allOf", "additionalProperties"] {
                        if bad == "additionalProperties" && map.get(bad).is_some_and(|v| v != &Value::Bool(false)) {
                            continue;
                        }
                        assert!(!map.contains_key(bad), "{path} has {bad}: {value}");
                    }
                    if let Some(t) = map.get("type").filter(|_| !path.ends_with(".properties")) {
                        assert!(t.is_string(), "{path}: a type is one name: {value}");
                    }
                    let typed = map.contains_key("type")
                        || map.contains_key("x-kubernetes-int-or-string")
                        || map.contains_key("x-kubernetes-preserve-unknown-fields");
                    if path.ends_with(".properties") || path.is_empty() {
                        // a properties map, or the root
                    } else {
                        assert!(typed, "{path} has no type: {value}");
                    }
                    for (k, v) in map {
                        if k != "default" && k != "enum" {
                            check(&format!("{path}.{k}"), v);
                        }
                    }
                }
                Value::Array(items) => items.iter().enumerate().for_each(|(i, v)| check(&format!("{path}[{i}]"), v)),
                _ => {}
            }
        }
        for d in definitions() {
            let schema = &d["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            for field in ["spec", "status"] {
                check(&format!(".{field}"), &schema["properties"][field]);
            }
        }
    }
}

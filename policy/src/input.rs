//! Reading policy inputs: YAML or JSON text holding several documents (`---`) and/or `kind: List`
//! objects with `items`: Namespaces, Pods, Nodes, NetworkPolicies, the network-policy-api's
//! cluster policies, native Tessera policies and Romana v2 policies. Every error names the file,
//! the object and the field.
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::PolicyError;
use crate::model::{Cluster, Policy};
use crate::{k8s, native, network_policy_api, romana};

/// Everything read from the inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    pub cluster: Cluster,
    pub policies: Vec<Policy>,
    /// Pods read but left out (they take part in no traffic), with the reason, in input order.
    pub skipped: Vec<SkippedPod>,
}

/// A pod that is not an endpoint, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedPod {
    /// `NAMESPACE/NAME`.
    pub id: String,
    pub reason: &'static str,
}

impl Inputs {
    /// Add the objects of one file (`origin` names it in errors). Nothing is added on error.
    pub fn add_text(&mut self, origin: &str, text: &str) -> Result<(), PolicyError> {
        let mut staged = self.clone();
        for (d, value) in read_documents(text).map_err(|e| e.in_object(origin))?.into_iter().enumerate() {
            staged.add_value(&format!("{origin} document {}", d + 1), value)?;
        }
        *self = staged;
        Ok(())
    }

    /// Add one already-parsed document (`origin` names it in errors). On error part of it may
    /// have been added: discard these inputs (`add_text` stages for you).
    pub fn add_document(&mut self, origin: &str, value: Value) -> Result<(), PolicyError> {
        self.add_value(origin, value)
    }

    fn add_value(&mut self, origin: &str, value: Value) -> Result<(), PolicyError> {
        // Romana policy files have no `kind`.
        if value.get("kind").is_none() && (value.get("securitypolicies").is_some() || value.get("applied_to").is_some()) {
            let policies = romana::policies(value).map_err(|e| e.in_object(format!("{origin} (Romana policy)")))?;
            self.policies.extend(policies);
            return Ok(());
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).map(String::from);
        let name = value.get("metadata").and_then(|m| m.get("name")).and_then(|n| n.as_str()).unwrap_or("?").to_string();
        let namespace = value.get("metadata").and_then(|m| m.get("namespace")).and_then(|n| n.as_str()).map(String::from);
        let object = match &namespace {
            Some(ns) => format!("{origin}: {} {ns}/{name}", kind.as_deref().unwrap_or("object")),
            None => format!("{origin}: {} {name}", kind.as_deref().unwrap_or("object")),
        };
        let api = value.get("apiVersion").and_then(|a| a.as_str()).unwrap_or("").to_string();
        let at = |e: PolicyError| e.in_object(object.clone());
        match kind.as_deref() {
            Some("List") => {
                let items = value.get("items").and_then(|i| i.as_array()).cloned().unwrap_or_default();
                for (i, item) in items.into_iter().enumerate() {
                    self.add_value(&format!("{origin} items[{i}]"), item)?;
                }
            }
            Some("Namespace") => {
                let ns = k8s::namespace(decode(value).map_err(at)?).map_err(at)?;
                self.cluster.namespaces.insert(ns.name.clone(), ns);
            }
            Some("Pod") => match k8s::pod(decode(value).map_err(at)?).map_err(at)? {
                k8s::PodOutcome::Skipped { id, reason } => self.skipped.push(SkippedPod { id, reason }),
                k8s::PodOutcome::Endpoint(e) => {
                    if let Some(other) = self.cluster.endpoints.values().find(|o| o.id != e.id && o.ips.iter().any(|ip| e.ips.contains(ip)))
                    {
                        return Err(at(PolicyError::field("status.podIP", format!("is also the address of {}", other.id))));
                    }
                    self.cluster.endpoints.insert(e.id.clone(), e);
                }
            },
            Some("Node") => {
                let node: NodeDoc = decode(value).map_err(at)?;
                k8s::validate_dns_subdomain("metadata.name", &node.metadata.name).map_err(at)?;
                let mut ips = Vec::new();
                for (i, a) in node.status.addresses.iter().enumerate() {
                    if a.kind == "InternalIP" || a.kind == "ExternalIP" {
                        ips.push(
                            a.address
                                .parse()
                                .map_err(|_| at(PolicyError::field(format!("status.addresses[{i}].address"), "not an IP address")))?,
                        );
                    }
                }
                self.cluster.hosts.insert(node.metadata.name, ips);
            }
            Some("NetworkPolicy") if api == "networking.k8s.io/v1" => {
                self.push(k8s::network_policy(decode(value).map_err(at)?).map_err(at)?).map_err(at)?
            }
            Some("NetworkPolicy") => {
                return Err(at(PolicyError::field("apiVersion", format!("`{api}`: only networking.k8s.io/v1 NetworkPolicy is supported"))));
            }
            Some("TesseraPolicy") => self.push(native::tenant_policy(decode(value).map_err(at)?).map_err(at)?).map_err(at)?,
            Some("TesseraClusterPolicy") => self.push(native::cluster_policy(decode(value).map_err(at)?).map_err(at)?).map_err(at)?,
            Some(kind @ ("ClusterNetworkPolicy" | "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy")) => {
                let kind = network_policy_api::Kind::of(kind, &api).map_err(at)?;
                self.push(network_policy_api::policy(kind, decode(value).map_err(at)?).map_err(at)?).map_err(at)?
            }
            Some(other) => {
                return Err(at(PolicyError::field(
                    "kind",
                    format!(
                        "`{other}` is not a kind Tessera reads (Namespace, Pod, Node, NetworkPolicy, TesseraPolicy, TesseraClusterPolicy, ClusterNetworkPolicy, AdminNetworkPolicy, BaselineAdminNetworkPolicy, List)"
                    ),
                )));
            }
            None => return Err(at(PolicyError::field("kind", "missing"))),
        }
        Ok(())
    }

    fn push(&mut self, policy: Policy) -> Result<(), PolicyError> {
        if self.policies.iter().any(|p| p.id == policy.id) {
            return Err(PolicyError::field("metadata.name", format!("{} is defined twice", policy.id)));
        }
        self.policies.push(policy);
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
struct NodeDoc {
    metadata: k8s::Meta,
    #[serde(default)]
    status: NodeStatus,
}

#[derive(Debug, Default, Deserialize)]
struct NodeStatus {
    #[serde(default)]
    addresses: Vec<NodeAddress>,
}

#[derive(Debug, Deserialize)]
struct NodeAddress {
    #[serde(rename = "type")]
    kind: String,
    address: String,
}

/// The documents of a YAML or JSON text (`---` separated; empty documents left out), parsed in
/// time linear in its size: nesting, events, aliases and documents are bounded, so hostile
/// input (deep nesting, alias bombs) fails fast with a clear error instead of stalling.
pub fn read_documents(text: &str) -> Result<Vec<Value>, PolicyError> {
    // Counts grow with the text (a cluster dump holds many thousand documents); depth, aliases
    // and anchors keep the library's defaults, which stop the blow-ups.
    let budget = serde_saphyr::budget! { max_documents: 10_000_000, max_nodes: 100_000_000, max_events: 200_000_000 };
    let options = serde_saphyr::options! { with_snippet: false, strict_booleans: true, budget: budget };
    serde_saphyr::from_str_multiple_with_options::<Value, Vec<Value>>(text, options)
        .map(|docs| docs.into_iter().filter(|d| !d.is_null()).collect())
        .map_err(|e| PolicyError::field("document", format!("not valid YAML or JSON: {e}")))
}

fn decode<T: DeserializeOwned>(value: Value) -> Result<T, PolicyError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path == "?" { "document".to_string() } else { path };
        PolicyError::field(field, e.into_inner().to_string())
    })
}

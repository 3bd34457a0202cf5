//! The pure part of the operator: Kubernetes objects mapped onto what Tessera should hold, and
//! the changes that take the store there. No client, no clock: tested without a server.
//!
//! Nodes become hosts (their InternalIPs the underlay addresses, their labels the placement, an
//! AWS `providerID` the instance VPC routes point at); Namespaces become tenants (their labels
//! what namespaceSelectors match). The operator owns only what it made (origin `kubernetes`):
//! an object of the same name made through the API is left alone and reported.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};

pub type Labels = BTreeMap<String, String>;

/// A host as its Node says it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSpec {
    pub name: String,
    pub ips: Vec<String>,
    pub labels: Labels,
    /// The EC2 instance of an AWS node (`providerID` `aws:///ZONE/i-…`).
    pub cloud_target: Option<String>,
}

/// A tenant as its Namespace says it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSpec {
    pub name: String,
    pub labels: Labels,
}

/// A policy object as the document to store, keyed by the object it comes from
/// (`NetworkPolicy shop/web`, `ClusterNetworkPolicy deny-all`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    pub key: String,
    pub document: Value,
}

/// A policy kind defined by a CRD, watched when the CRD is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
}

impl PolicyKind {
    const fn cluster(group: &'static str, version: &'static str, kind: &'static str, plural: &'static str) -> PolicyKind {
        PolicyKind { group, version, kind, plural, namespaced: false }
    }
}

/// The network-policy-api's ClusterNetworkPolicy at `v1alpha2` (served by every release that
/// has the kind) and the older AdminNetworkPolicy and BaselineAdminNetworkPolicy; Tessera's own
/// TesseraPolicy and TesseraClusterPolicy.
pub const CUSTOM_POLICY_KINDS: [PolicyKind; 5] = [
    PolicyKind::cluster("policy.networking.k8s.io", "v1alpha2", "ClusterNetworkPolicy", "clusternetworkpolicies"),
    PolicyKind::cluster("policy.networking.k8s.io", "v1alpha1", "AdminNetworkPolicy", "adminnetworkpolicies"),
    PolicyKind::cluster("policy.networking.k8s.io", "v1alpha1", "BaselineAdminNetworkPolicy", "baselineadminnetworkpolicies"),
    PolicyKind { group: "tessera.io", version: "v1", kind: "TesseraPolicy", plural: "tesserapolicies", namespaced: true },
    PolicyKind::cluster("tessera.io", "v1", "TesseraClusterPolicy", "tesseraclusterpolicies"),
];

/// The key of a stored policy document the operator could have made (`Kind namespace/name` or
/// `Kind name`); none for other kinds.
pub fn policy_key(document: &Value) -> Option<String> {
    let kind = document.get("kind")?.as_str()?;
    let name = document.pointer("/metadata/name")?.as_str()?;
    let namespaced = match kind {
        "NetworkPolicy" => true,
        _ => CUSTOM_POLICY_KINDS.iter().find(|k| k.kind == kind)?.namespaced,
    };
    if namespaced {
        Some(format!("{kind} {}/{name}", document.pointer("/metadata/namespace")?.as_str()?))
    } else {
        Some(format!("{kind} {name}"))
    }
}

/// An endpoint as the store holds it (the CNI plugin made it; the operator keeps its labels and
/// named ports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView {
    pub id: String,
    pub tenant: String,
    pub segment: String,
    pub ips: Vec<String>,
    pub labels: Labels,
    pub named_ports: Vec<PortName>,
}

/// A container port with a name: (name, port, protocol `TCP`/`UDP`/`SCTP`), sorted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortName {
    pub name: String,
    pub port: u16,
    pub protocol: String,
}

/// The named container ports of a pod (init containers that keep running — sidecars — too).
pub fn pod_ports(pod: &Pod) -> Vec<PortName> {
    let spec = pod.spec.as_ref();
    let containers = spec.map(|s| s.containers.iter()).into_iter().flatten();
    let sidecars =
        spec.and_then(|s| s.init_containers.as_ref()).into_iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always"));
    let mut out: Vec<PortName> = containers
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some(PortName {
                name: p.name.clone()?,
                port: u16::try_from(p.container_port).ok()?,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The pod label that names a pod's segment.
pub const SEGMENT_LABEL: &str = "tessera.io/segment";

/// What the store holds: the hosts, tenants and policies the operator made, and the names of
/// those made through the API (never touched).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    pub hosts: BTreeMap<String, HostSpec>,
    pub tenants: BTreeMap<String, TenantSpec>,
    /// [`policy_key`] → document.
    pub policies: BTreeMap<String, Value>,
    pub other_hosts: BTreeSet<String>,
    pub other_tenants: BTreeSet<String>,
    /// [`policy_key`]s of the policies of the kinds the operator watches stored through the API.
    pub other_policies: BTreeSet<String>,
    /// The endpoints of the operator's tenants (pods are matched to them by address).
    pub endpoints: Vec<EndpointView>,
    /// [`policy_key`] → how many nodes enforce the stored policy, of how many.
    pub enforced: BTreeMap<String, Enforced>,
}

/// How many nodes enforce a policy, of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, schemars::JsonSchema)]
pub struct Enforced {
    pub applied: u64,
    pub total: u64,
}

/// One change to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    CreateTenant(TenantSpec),
    UpdateTenant(TenantSpec),
    CreateHost(HostSpec),
    UpdateHost(HostSpec),
    PutPolicy(PolicySpec),
    /// An endpoint takes its pod's labels and named ports (`pod`: `namespace/name`).
    UpdateEndpoint {
        id: String,
        pod: String,
        labels: Labels,
        named_ports: Vec<PortName>,
    },
    /// An endpoint no pod has had for the grace time: its pod is gone.
    ReleaseEndpoint(String),
    DeletePolicy(String),
    DeleteHost(String),
    DeleteTenant(String),
}

impl Change {
    /// The Kubernetes object the change comes from (`Kind name`, `Kind namespace/name`), as a
    /// skip names it; none for deletions: the object is gone.
    pub fn object(&self) -> Option<String> {
        match self {
            Change::CreateTenant(t) | Change::UpdateTenant(t) => Some(format!("Namespace {}", t.name)),
            Change::CreateHost(h) | Change::UpdateHost(h) => Some(format!("Node {}", h.name)),
            Change::PutPolicy(p) => Some(p.key.clone()),
            Change::UpdateEndpoint { pod, .. } => Some(format!("Pod {pod}")),
            Change::ReleaseEndpoint(_) | Change::DeletePolicy(_) | Change::DeleteHost(_) | Change::DeleteTenant(_) => None,
        }
    }
}

/// Why an object maps to nothing (yet), or is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// `Kind name` or `Kind namespace/name`.
    pub object: String,
    pub reason: String,
    /// Something for a person to act on (a Warning Event), not a passing state.
    pub warn: bool,
}

/// The host of a Node, or why it has none yet.
pub fn node_host(node: &Node) -> Result<HostSpec, String> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let ips: Vec<String> = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
        .collect();
    if ips.is_empty() {
        return Err("status.addresses has no InternalIP yet".into());
    }
    let cloud_target = node.spec.as_ref().and_then(|s| s.provider_id.as_deref()).and_then(aws_instance);
    Ok(HostSpec { name, ips, labels: node.metadata.labels.clone().unwrap_or_default(), cloud_target })
}

/// The instance id of an AWS `providerID` (`aws:///us-east-1a/i-0123456789abcdef0`).
fn aws_instance(provider_id: &str) -> Option<String> {
    let rest = provider_id.strip_prefix("aws://")?;
    rest.rsplit('/').next().filter(|id| id.starts_with("i-")).map(String::from)
}

/// The tenant of a Namespace.
pub fn namespace_tenant(namespace: &Namespace) -> TenantSpec {
    TenantSpec { name: namespace.metadata.name.clone().unwrap_or_default(), labels: namespace.metadata.labels.clone().unwrap_or_default() }
}

/// The policy document of a NetworkPolicy: exactly its kind, name, namespace and spec (what
/// the engine reads; the server's bookkeeping — uid, resourceVersion, managedFields — left out,
/// so a document changes only when the policy does).
pub fn network_policy(policy: &NetworkPolicy) -> PolicySpec {
    let (namespace, name) = (policy.metadata.namespace.clone().unwrap_or_default(), policy.metadata.name.clone().unwrap_or_default());
    let document = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": serde_json::to_value(&policy.spec).unwrap_or(Value::Null),
    });
    PolicySpec { key: format!("NetworkPolicy {namespace}/{name}"), document }
}

/// The key of a custom policy object (as [`policy_key`] names its stored document).
pub fn custom_policy_key(kind: &PolicyKind, namespace: Option<&str>, name: &str) -> String {
    match namespace.filter(|_| kind.namespaced) {
        Some(ns) => format!("{} {ns}/{name}", kind.kind),
        None => format!("{} {name}", kind.kind),
    }
}

/// The policy document of a custom policy object (the `spec` of a `kind` object named `name`,
/// in `namespace` for a namespaced kind): like [`network_policy`], only what the engine reads.
pub fn custom_policy(kind: &PolicyKind, namespace: Option<&str>, name: &str, spec: &Value) -> PolicySpec {
    let metadata = match namespace.filter(|_| kind.namespaced) {
        Some(ns) => json!({"name": name, "namespace": ns}),
        None => json!({"name": name}),
    };
    let key = custom_policy_key(kind, namespace, name);
    let document = json!({
        "apiVersion": format!("{}/{}", kind.group, kind.version),
        "kind": kind.kind,
        "metadata": metadata,
        "spec": spec,
    });
    PolicySpec { key, document }
}

/// The pods that take part in traffic, by namespace and address: running or pending with an
/// address, not on the host's network (NetworkPolicy does not apply to those).
fn pods_by_address<'a>(pods: &[&'a Pod]) -> BTreeMap<(String, String), &'a Pod> {
    let mut out = BTreeMap::new();
    for pod in pods {
        let spec_host = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
        let status = pod.status.as_ref();
        let finished = status.and_then(|s| s.phase.as_deref()).is_some_and(|p| p == "Succeeded" || p == "Failed");
        if spec_host || finished || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        for ip in status.and_then(|s| s.pod_ips.as_ref()).into_iter().flatten() {
            out.insert((namespace.clone(), ip.ip.clone()), *pod);
        }
    }
    out
}

/// The endpoints of `held` that no pod of the cluster has (by namespace and address): the
/// candidates for collection, once they stay so for the grace time (a pod's address reaches its
/// status only after the CNI plugin made its endpoint).
pub fn unmatched_endpoints(pods: &[&Pod], held: &Held) -> BTreeSet<String> {
    let by_address = pods_by_address(pods);
    held.endpoints
        .iter()
        .filter(|e| !e.ips.iter().any(|ip| by_address.contains_key(&(e.tenant.clone(), ip.clone()))))
        .map(|e| e.id.clone())
        .collect()
}

/// The changes that take `held` to what the cluster says, and what was skipped. Tenants come
/// before hosts and policies; deletions run the other way round.
pub fn plan(
    nodes: &[&Node],
    namespaces: &[&Namespace],
    policies: Vec<PolicySpec>,
    pods: &[&Pod],
    held: &Held,
) -> (Vec<Change>, Vec<Skipped>) {
    let mut changes = Vec::new();
    let mut skipped = Vec::new();
    let tenants: BTreeMap<String, TenantSpec> = namespaces.iter().map(|n| namespace_tenant(n)).map(|t| (t.name.clone(), t)).collect();
    for (name, want) in &tenants {
        match held.tenants.get(name) {
            Some(have) if have == want => {}
            Some(_) => changes.push(Change::UpdateTenant(want.clone())),
            None if held.other_tenants.contains(name) => skipped.push(Skipped {
                object: format!("Namespace {name}"),
                reason: format!("tenant `{name}` was made through the API; left alone"),
                warn: true,
            }),
            None => changes.push(Change::CreateTenant(want.clone())),
        }
    }
    let mut hosts = BTreeMap::new();
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        match node_host(node) {
            Ok(spec) => {
                hosts.insert(name, spec);
            }
            // A Node not yet ready to place keeps the host it had.
            Err(reason) => {
                if let Some(have) = held.hosts.get(&name) {
                    hosts.insert(name.clone(), have.clone());
                }
                skipped.push(Skipped { object: format!("Node {name}"), reason, warn: false });
            }
        }
    }
    for (name, want) in &hosts {
        match held.hosts.get(name) {
            Some(have) if have == want => {}
            Some(_) => changes.push(Change::UpdateHost(want.clone())),
            None if held.other_hosts.contains(name) => skipped.push(Skipped {
                object: format!("Node {name}"),
                reason: format!("host `{name}` was made through the API; left alone"),
                warn: true,
            }),
            None => changes.push(Change::CreateHost(want.clone())),
        }
    }
    let wanted: BTreeMap<String, PolicySpec> = policies.into_iter().map(|p| (p.key.clone(), p)).collect();
    for (key, want) in &wanted {
        match held.policies.get(key) {
            Some(have) if *have == want.document => {}
            None if held.other_policies.contains(key) => skipped.push(Skipped {
                object: key.clone(),
                reason: "a policy of the same name was stored through the API; left alone".into(),
                warn: true,
            }),
            _ => changes.push(Change::PutPolicy(want.clone())),
        }
    }
    let by_address = pods_by_address(pods);
    for endpoint in &held.endpoints {
        let Some(pod) = endpoint.ips.iter().find_map(|ip| by_address.get(&(endpoint.tenant.clone(), ip.clone()))) else { continue };
        let key = format!("{}/{}", endpoint.tenant, pod.metadata.name.clone().unwrap_or_default());
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let segment = labels.get(SEGMENT_LABEL).map_or("default", String::as_str);
        if segment != endpoint.segment {
            skipped.push(Skipped {
                object: format!("Pod {key}"),
                reason: format!(
                    "label {SEGMENT_LABEL} says segment `{segment}`, its address is in `{}`: a pod moves between segments by being recreated",
                    endpoint.segment
                ),
                warn: true,
            });
        }
        let named_ports = pod_ports(pod);
        if labels != endpoint.labels || named_ports != endpoint.named_ports {
            changes.push(Change::UpdateEndpoint { id: endpoint.id.clone(), pod: key, labels, named_ports });
        }
    }
    changes.extend(held.policies.keys().filter(|k| !wanted.contains_key(*k)).map(|k| Change::DeletePolicy(k.clone())));
    changes.extend(held.hosts.keys().filter(|h| !hosts.contains_key(*h)).map(|h| Change::DeleteHost(h.clone())));
    changes.extend(held.tenants.keys().filter(|t| !tenants.contains_key(*t)).map(|t| Change::DeleteTenant(t.clone())));
    (changes, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn node(name: &str, ips: &[&str], rack: &str, provider: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta { name: Some(name.into()), labels: Some(labels(&[("rack", rack)])), ..Default::default() },
            spec: Some(NodeSpec { provider_id: provider.map(String::from), ..Default::default() }),
            status: Some(NodeStatus {
                addresses: Some(
                    ips.iter()
                        .map(|ip| NodeAddress { type_: "InternalIP".into(), address: ip.to_string() })
                        .chain([NodeAddress { type_: "Hostname".into(), address: name.into() }])
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    fn namespace(name: &str, team: &str) -> Namespace {
        Namespace {
            metadata: ObjectMeta { name: Some(name.into()), labels: Some(labels(&[("team", team)])), ..Default::default() },
            ..Default::default()
        }
    }

    fn host(name: &str, ip: &str, rack: &str, target: Option<&str>) -> HostSpec {
        HostSpec { name: name.into(), ips: vec![ip.into()], labels: labels(&[("rack", rack)]), cloud_target: target.map(String::from) }
    }

    #[test]
    fn nodes_become_hosts_with_their_internal_ips_labels_and_instance() {
        let n = node("n1", &["10.0.0.1", "fd00::1"], "r1", Some("aws:///us-east-1a/i-0123456789abcdef0"));
        let spec = node_host(&n).expect("placed");
        assert_eq!(spec.ips, vec!["10.0.0.1", "fd00::1"]);
        assert_eq!(spec.cloud_target.as_deref(), Some("i-0123456789abcdef0"));
        assert_eq!(node_host(&node("n2", &["10.0.0.2"], "r1", Some("gce://project/zone/vm"))).expect("placed").cloud_target, None);
        assert!(node_host(&node("n3", &[], "r1", None)).is_err(), "no InternalIP: not placed yet");
    }

    #[test]
    fn the_plan_creates_updates_and_deletes_only_what_the_operator_owns() {
        let (n1, n2) = (node("n1", &["10.0.0.1"], "r1", None), node("n2", &["10.0.0.2"], "r2", None));
        let (shop, bank) = (namespace("shop", "shop"), namespace("bank", "bank"));
        let held = Held {
            hosts: BTreeMap::from([
                ("n1".into(), host("n1", "10.0.0.1", "r0", None)),
                ("gone".into(), host("gone", "10.0.0.9", "r1", None)),
            ]),
            tenants: BTreeMap::from([("shop".into(), TenantSpec { name: "shop".into(), labels: labels(&[("team", "shop")]) })]),
            other_hosts: BTreeSet::from(["n2".to_string()]),
            ..Default::default()
        };
        let (changes, skipped) = plan(&[&n1, &n2], &[&shop, &bank], vec![], &[], &held);
        assert_eq!(
            changes,
            vec![
                Change::CreateTenant(TenantSpec { name: "bank".into(), labels: labels(&[("team", "bank")]) }),
                Change::UpdateHost(host("n1", "10.0.0.1", "r1", None)),
                Change::DeleteHost("gone".into()),
            ]
        );
        assert_eq!(skipped.len(), 1, "n2 is a host of the API's: {skipped:?}");
        // Applied, nothing more to do.
        let held = Held {
            hosts: BTreeMap::from([("n1".into(), host("n1", "10.0.0.1", "r1", None))]),
            tenants: [&shop, &bank].iter().map(|n| namespace_tenant(n)).map(|t| (t.name.clone(), t)).collect(),
            other_hosts: BTreeSet::from(["n2".to_string()]),
            ..Default::default()
        };
        assert_eq!(plan(&[&n1, &n2], &[&shop, &bank], vec![], &[], &held).0, vec![]);
        // A Namespace gone: its tenant goes, after the hosts.
        assert_eq!(plan(&[&n1, &n2], &[&shop], vec![], &[], &held).0, vec![Change::DeleteTenant("bank".into())]);
    }

    #[test]
    fn cluster_policies_are_keyed_by_kind_and_name_and_keep_only_their_spec() {
        let spec = json!({"tier": "Admin", "priority": 3, "subject": {"namespaces": {}}});
        let p = custom_policy(&CUSTOM_POLICY_KINDS[0], None, "deny-all", &spec);
        assert_eq!(p.key, "ClusterNetworkPolicy deny-all");
        assert_eq!(p.document["apiVersion"], "policy.networking.k8s.io/v1alpha2");
        assert_eq!(policy_key(&p.document).as_deref(), Some("ClusterNetworkPolicy deny-all"));
        assert_eq!(policy_key(&json!({"kind": "Pod", "metadata": {"name": "x", "namespace": "y"}})), None, "not a policy kind");
        let tessera = custom_policy(&CUSTOM_POLICY_KINDS[3], Some("shop"), "web", &json!({}));
        assert_eq!(
            (tessera.key.as_str(), policy_key(&tessera.document)),
            ("TesseraPolicy shop/web", Some("TesseraPolicy shop/web".into()))
        );
        // The same key whatever else the stored document holds: a policy stored through the API
        // under that name is someone else's.
        let theirs = Held { other_policies: BTreeSet::from([p.key.clone()]), ..Default::default() };
        let (changes, skipped) = plan(&[], &[], vec![p.clone()], &[], &theirs);
        assert!(changes.is_empty() && skipped.len() == 1 && skipped[0].object == "ClusterNetworkPolicy deny-all", "{skipped:?}");
        let held = Held { policies: BTreeMap::from([(p.key.clone(), p.document.clone())]), ..Default::default() };
        assert_eq!(plan(&[], &[], vec![], &[], &held).0, vec![Change::DeletePolicy("ClusterNetworkPolicy deny-all".into())]);
    }

    #[test]
    fn network_policies_become_documents_that_change_only_with_the_policy() {
        use k8s_openapi::api::networking::v1::NetworkPolicySpec;
        let policy = |uid: &str, types: &[&str]| NetworkPolicy {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("shop".into()),
                uid: Some(uid.into()),
                resource_version: Some(uid.into()),
                ..Default::default()
            },
            spec: Some(NetworkPolicySpec { policy_types: Some(types.iter().map(|t| t.to_string()).collect()), ..Default::default() }),
        };
        let (a, b) = (policy("1", &["Ingress"]), policy("2", &["Ingress"]));
        assert_eq!(network_policy(&a), network_policy(&b), "bookkeeping is no change");
        let spec = network_policy(&a);
        assert_eq!((spec.key.as_str(), spec.document["kind"].as_str()), ("NetworkPolicy shop/web", Some("NetworkPolicy")));
        let held = Held {
            policies: BTreeMap::from([
                ("NetworkPolicy shop/web".into(), spec.document.clone()),
                ("NetworkPolicy shop/old".into(), json!({})),
            ]),
            ..Default::default()
        };
        let egress = policy("3", &["Egress"]);
        assert_eq!(
            plan(&[], &[], vec![network_policy(&egress)], &[], &held).0,
            vec![Change::PutPolicy(network_policy(&egress)), Change::DeletePolicy("NetworkPolicy shop/old".into())]
        );
        let theirs = Held { other_policies: BTreeSet::from(["NetworkPolicy shop/web".to_string()]), ..Default::default() };
        assert_eq!(plan(&[], &[], vec![network_policy(&a)], &[], &theirs).0, vec![]);
    }

    #[test]
    fn an_endpoint_takes_the_labels_of_the_pod_at_its_address() {
        use k8s_openapi::api::core::v1::{PodIP, PodSpec, PodStatus};
        let pod = |name: &str, ip: &str, app: &str, host_network: bool| Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                labels: Some(labels(&[("app", app)])),
                ..Default::default()
            },
            spec: Some(PodSpec { host_network: Some(host_network), ..Default::default() }),
            status: Some(PodStatus { pod_ips: Some(vec![PodIP { ip: ip.into() }]), phase: Some("Running".into()), ..Default::default() }),
        };
        let endpoint = |id: &str, ip: &str, app: &str| EndpointView {
            id: id.into(),
            tenant: "shop".into(),
            segment: "default".into(),
            ips: vec![ip.into()],
            labels: labels(&[("app", app)]),
            named_ports: Vec::new(),
        };
        let held = Held {
            endpoints: vec![endpoint("cni/a/eth0", "10.96.0.2", "old"), endpoint("cni/b/eth0", "10.96.0.3", "db")],
            ..Default::default()
        };
        let (web, db, host) =
            (pod("web", "10.96.0.2", "web", false), pod("db", "10.96.0.3", "db", false), pod("h", "10.96.0.9", "x", true));
        let (changes, _) = plan(&[], &[], vec![], &[&web, &db, &host], &held);
        assert_eq!(
            changes,
            vec![Change::UpdateEndpoint {
                id: "cni/a/eth0".into(),
                pod: "shop/web".into(),
                labels: labels(&[("app", "web")]),
                named_ports: vec![]
            }]
        );
        // A pod of another namespace at the same address is not this endpoint's.
        let mut elsewhere = pod("web", "10.96.0.2", "web", false);
        elsewhere.metadata.namespace = Some("bank".into());
        assert_eq!(plan(&[], &[], vec![], &[&elsewhere], &held).0, vec![]);
        // Endpoints without a pod: candidates for collection.
        assert_eq!(unmatched_endpoints(&[&web], &held), BTreeSet::from(["cni/b/eth0".to_string()]));
        assert_eq!(unmatched_endpoints(&[&elsewhere], &held).len(), 2);
    }

    #[test]
    fn a_node_that_loses_its_address_keeps_its_host() {
        let held = Held { hosts: BTreeMap::from([("n1".into(), host("n1", "10.0.0.1", "r1", None))]), ..Default::default() };
        let (changes, skipped) = plan(&[&node("n1", &[], "r1", None)], &[], vec![], &[], &held);
        assert_eq!((changes, skipped.len()), (vec![], 1));
    }
}

//! Tessera's Kubernetes operator: watch → index → publish. Watches of Nodes, Namespaces, Pods,
//! NetworkPolicies and (when their CRDs are installed) the network-policy-api's cluster policies
//! feed reflector stores (kube-runtime: resourceVersion-aware, bookmarks, a relist on 410 Gone,
//! backoff); after each burst of events — and on a timer, as a safety net — the pure [`index`]
//! maps the stores onto hosts and tenants and plans the changes against what the store holds,
//! which the caller's [`Inventory`] carries out (in the controller: the operations layer, on
//! the writer-lease holder only). A start, a restart or a regained lease begins with the full
//! lists, so nothing is left stale.

pub mod crd;
pub mod index;
pub mod review;

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
pub use kube::Client;
use kube::Resource as _;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

pub use index::{Change, EndpointView, Enforced, Held, HostSpec, PolicyKind, PolicySpec, PortName, Skipped, TenantSpec, policy_key};

/// What the operator changes: the caller's store.
pub trait Inventory: Send + Sync {
    /// The hosts and tenants the operator made, and the names of the others.
    fn held(&self) -> impl Future<Output = Result<Held, String>> + Send;
    /// Carry out one change; an error is reported and the change tried again later. It may
    /// answer before the change is compiled (endpoint labels): [`Inventory::settle`] waits.
    fn apply(&self, change: &Change) -> impl Future<Output = Result<(), String>> + Send;
    /// Wait until every change applied so far is compiled (once a pass: a relist's thousands of
    /// changes cost one compile, not one each).
    fn settle(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// Make `document` (a TesseraTopology's spec: Tessera's topology format) the topology: its
    /// new revision, or why not (the field at fault, the addresses it would move).
    fn apply_topology(&self, document: &serde_json::Value) -> impl Future<Output = Result<i64, String>> + Send;
}

/// How the cluster is reached: a kubeconfig file, or (None) the standard inference (in a pod:
/// its service account; else `KUBECONFIG` or `~/.kube/config`).
pub async fn connect(kubeconfig: Option<&std::path::Path>) -> Result<Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| format!("Kubernetes configuration: {e}"))?,
    };
    Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
}

/// Quiet time after an event before the index is published (a burst costs one pass).
const SETTLE: Duration = Duration::from_millis(100);
/// A full pass even without events (a change that failed is tried again).
const RESYNC: Duration = Duration::from_secs(30);
/// How often a kind whose CRD is not installed is looked for again.
const ABSENT_RECHECK: Duration = Duration::from_secs(10);

/// The reflector stores of the watched kinds.
struct Stores {
    nodes: Store<Node>,
    namespaces: Store<Namespace>,
    policies: Store<NetworkPolicy>,
    pods: Store<Pod>,
    /// The policy kinds defined by CRDs (empty while a CRD is not installed).
    custom: Vec<(PolicyKind, ApiResource, Store<DynamicObject>)>,
    /// TesseraTopology objects (empty while the CRD is not installed).
    topology: (ApiResource, Store<DynamicObject>),
}

impl Stores {
    /// The object named `Kind name` or `Kind namespace/name` (a skip's or a change's).
    fn named(&self, object: &str) -> Option<k8s_openapi::api::core::v1::ObjectReference> {
        let (kind, rest) = object.split_once(' ')?;
        let scoped = || rest.split_once('/');
        match kind {
            "Node" => self.nodes.get(&ObjectRef::new(rest)).map(|o| o.object_ref(&())),
            "Namespace" => self.namespaces.get(&ObjectRef::new(rest)).map(|o| o.object_ref(&())),
            "NetworkPolicy" => {
                scoped().and_then(|(ns, name)| self.policies.get(&ObjectRef::new(name).within(ns))).map(|o| o.object_ref(&()))
            }
            "Pod" => scoped().and_then(|(ns, name)| self.pods.get(&ObjectRef::new(name).within(ns))).map(|o| o.object_ref(&())),
            _ => self.custom.iter().find(|(k, ..)| k.kind == kind).and_then(|(k, resource, store)| {
                let key = match rest.split_once('/').filter(|_| k.namespaced) {
                    Some((ns, name)) => ObjectRef::new_with(name, resource.clone()).within(ns),
                    None => ObjectRef::new_with(rest, resource.clone()),
                };
                store.get(&key).map(|o| o.object_ref(resource))
            }),
        }
    }
}

/// How the operator runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long an endpoint may lack a pod before it is released (its pod is gone; a new pod's
    /// address reaches the API only after its endpoint is made).
    pub endpoint_grace: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options { endpoint_grace: Duration::from_secs(120) }
    }
}

/// Keep `inventory` as the cluster says until `stop` turns true.
pub async fn run(client: Client, inventory: impl Inventory, options: Options, mut stop: watch::Receiver<bool>) {
    let recorder = Recorder::new(client.clone(), Reporter { controller: "tessera".into(), instance: None });
    let (nodes, node_writer) = reflector::store::<Node>();
    let (namespaces, namespace_writer) = reflector::store::<Namespace>();
    let (policies, policy_writer) = reflector::store::<NetworkPolicy>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    // Each item: an error to report, or None for an event the stores took in.
    let mut streams: Vec<futures_util::stream::BoxStream<'static, Option<String>>> = vec![
        followed(node_writer, client.clone(), |_| {}).boxed(),
        followed(namespace_writer, client.clone(), |_| {}).boxed(),
        followed(policy_writer, client.clone(), |_| {}).boxed(),
        // Pods carry much the operator does not read (managed fields): dropped before they are kept.
        followed(pod_writer, client.clone(), |pod: &mut Pod| pod.metadata.managed_fields = None).boxed(),
    ];
    // The custom kinds: watched while their CRDs are installed.
    let mut watch_custom = |kind: PolicyKind| {
        let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(kind.group, kind.version, kind.kind), kind.plural);
        let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
        let store = writer.as_reader();
        streams.push(followed_if_installed(writer, Api::all_with(client.clone(), &resource)).boxed());
        (resource, store)
    };
    let custom: Vec<_> = index::CUSTOM_POLICY_KINDS.into_iter().map(|kind| (kind, watch_custom(kind))).collect();
    let custom = custom.into_iter().map(|(kind, (resource, store))| (kind, resource, store)).collect();
    let topology = watch_custom(crd::TOPOLOGY);
    let mut events = futures_util::stream::select_all(streams);
    let stores = Stores { nodes, namespaces, policies, pods, custom, topology };
    // Nothing is published before every full list is in: a partial view would delete. (A kind
    // whose CRD is not installed is ready at once, and empty.)
    let ready = async {
        let _ = stores.nodes.wait_until_ready().await;
        let _ = stores.namespaces.wait_until_ready().await;
        let _ = stores.policies.wait_until_ready().await;
        let _ = stores.pods.wait_until_ready().await;
        for (.., store) in &stores.custom {
            let _ = store.wait_until_ready().await;
        }
        let _ = stores.topology.1.wait_until_ready().await;
    };
    tokio::pin!(ready);
    let mut is_ready = false;
    let mut dirty = true;
    let mut unmatched = std::collections::HashMap::new();
    loop {
        // While endpoints wait out their grace, passes come often enough to collect them on time.
        let idle = if unmatched.is_empty() { RESYNC } else { (options.endpoint_grace / 4).clamp(Duration::from_secs(1), RESYNC) };
        let settle = tokio::time::sleep(if dirty { SETTLE } else { idle });
        tokio::select! {
            event = events.next() => {
                match event {
                    Some(Some(error)) => tracing::warn!(%error, "Kubernetes watch failed; retrying with backoff"),
                    Some(None) => dirty = true,
                    None => return,
                }
                continue;
            }
            () = &mut ready, if !is_ready => { is_ready = true; dirty = true; continue; }
            () = settle => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        if is_ready {
            // The topology first: hosts are placed in it.
            follow_topology(&client, &stores, &inventory).await;
            if let Some(outcome) = publish(&stores, &inventory, &recorder, options, &mut unmatched).await {
                report_status(&client, &stores, &outcome).await;
            }
        }
        dirty = false;
    }
}

/// Every object of kind `K` in the cluster, watched into `writer`'s store (trimmed by `trim`
/// first): each item an error to report, or None for an event the store took in.
fn followed<K>(writer: reflector::store::Writer<K>, client: Client, trim: fn(&mut K)) -> impl futures_util::Stream<Item = Option<String>>
where
    K: kube::Resource<DynamicType = ()> + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    reflector::reflector(writer, watcher(Api::<K>::all(client), watcher::Config::default()).modify(trim))
        .default_backoff()
        .map(|e| e.err().map(|e| e.to_string()))
}

/// Like [`followed`], for a custom kind whose CRD may not be installed: while it is not, the
/// store is empty and ready (the operator's other kinds are not held up) and the kind is looked
/// for again every [`ABSENT_RECHECK`]; once installed it is watched; if its CRD goes (and with it
/// every object of the kind), the store empties.
fn followed_if_installed(
    writer: reflector::store::Writer<DynamicObject>,
    api: Api<DynamicObject>,
) -> impl futures_util::Stream<Item = Option<String>> {
    type Events = futures_util::stream::BoxStream<'static, Result<watcher::Event<DynamicObject>, watcher::Error>>;
    enum Phase {
        Look,
        Absent,
        Watching(Events),
    }
    // An API group not served answers a bare "404 page not found" (no Status reason).
    fn absent(error: &kube::Error) -> bool {
        matches!(error, kube::Error::Api(status) if status.code == 404)
    }
    fn empty(writer: &mut reflector::store::Writer<DynamicObject>) {
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
    }
    futures_util::stream::unfold((writer, Phase::Look), move |(mut writer, phase)| {
        let api = api.clone();
        async move {
            let (item, next) = match phase {
                Phase::Absent => {
                    tokio::time::sleep(ABSENT_RECHECK).await;
                    (None, Phase::Look)
                }
                Phase::Look => match api.list_metadata(&ListParams::default().limit(1)).await {
                    Ok(_) => (None, Phase::Watching(watcher(api, watcher::Config::default()).default_backoff().boxed())),
                    Err(e) if absent(&e) => {
                        empty(&mut writer);
                        (None, Phase::Absent)
                    }
                    Err(e) => {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        (Some(e.to_string()), Phase::Look)
                    }
                },
                Phase::Watching(mut events) => match events.next().await {
                    Some(Ok(event)) => {
                        writer.apply_watcher_event(&event);
                        (None, Phase::Watching(events))
                    }
                    Some(Err(
                        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e),
                    )) if absent(&e) => {
                        empty(&mut writer);
                        (None, Phase::Absent)
                    }
                    Some(Err(e)) => (Some(e.to_string()), Phase::Watching(events)),
                    None => return None,
                },
            };
            Some((item, (writer, next)))
        }
    })
}

/// One pass: plan from the stores against what the inventory holds, and apply. A change the
/// store refuses is a Warning Event on its object (repeats fold into one series), nothing is
/// silently dropped, and it is tried again at the next pass.
async fn publish(
    stores: &Stores,
    inventory: &impl Inventory,
    recorder: &Recorder,
    options: Options,
    unmatched: &mut std::collections::HashMap<String, std::time::Instant>,
) -> Option<Outcome> {
    let mut refused = std::collections::HashMap::new();
    let held = match inventory.held().await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the store; the next pass tries again");
            return None;
        }
    };
    let (nodes, namespaces, policies, pods) =
        (stores.nodes.state(), stores.namespaces.state(), stores.policies.state(), stores.pods.state());
    let pod_refs: Vec<&Pod> = pods.iter().map(AsRef::as_ref).collect();
    let node_refs: Vec<&Node> = nodes.iter().map(AsRef::as_ref).collect();
    let namespace_refs: Vec<&Namespace> = namespaces.iter().map(AsRef::as_ref).collect();
    let mut documents: Vec<PolicySpec> = policies.iter().map(|p| index::network_policy(p)).collect();
    for (kind, _, store) in &stores.custom {
        for object in store.state() {
            let spec = object.data.get("spec").cloned().unwrap_or_default();
            let (namespace, name) = (object.metadata.namespace.as_deref(), object.metadata.name.as_deref().unwrap_or_default());
            documents.push(index::custom_policy(kind, namespace, name, &spec));
        }
    }
    let (mut changes, skipped) = index::plan(&node_refs, &namespace_refs, documents, &pod_refs, &held);
    // Endpoints without a pod since longer than the grace time are collected.
    let now = std::time::Instant::now();
    let lacking = index::unmatched_endpoints(&pod_refs, &held);
    unmatched.retain(|id, _| lacking.contains(id));
    for id in lacking {
        let since = *unmatched.entry(id.clone()).or_insert(now);
        if now.duration_since(since) >= options.endpoint_grace {
            changes.push(Change::ReleaseEndpoint(id));
        }
    }
    for s in &skipped {
        tracing::debug!(object = %s.object, reason = %s.reason, "skipped");
        if s.warn {
            refused.insert(s.object.clone(), s.reason.clone());
        }
        // What a person must act on is said on the object itself.
        if let Some(reference) = stores.named(&s.object).filter(|_| s.warn) {
            let event = Event {
                type_: EventType::Warning,
                reason: "Skipped".into(),
                note: Some(truncate(&s.reason)),
                action: "Apply".into(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(error = %e, "cannot publish the Event");
            }
        }
    }
    for change in &changes {
        match inventory.apply(change).await {
            Ok(()) => tracing::info!(?change, "applied from Kubernetes"),
            Err(e) => {
                tracing::warn!(?change, error = %e, "refused; tried again at the next pass");
                if let Some(object) = change.object() {
                    refused.insert(object, e.clone());
                }
                let Some(reference) = change.object().and_then(|o| stores.named(&o)) else { continue };
                let event = Event {
                    type_: EventType::Warning,
                    reason: "Refused".into(),
                    note: Some(truncate(&e)),
                    action: "Apply".into(),
                    secondary: None,
                };
                if let Err(e) = recorder.publish(&event, &reference).await {
                    tracing::warn!(error = %e, "cannot publish the Event");
                }
            }
        }
    }
    if !changes.is_empty()
        && let Err(e) = inventory.settle().await
    {
        tracing::warn!(error = %e, "the changes are stored but not yet compiled");
    }
    Some(Outcome { refused, enforced: held.enforced })
}

/// What a pass found about the policy objects.
struct Outcome {
    /// Objects (named as [`Change::object`] names them) whose policy was refused, and why.
    refused: std::collections::HashMap<String, String>,
    /// As the store said at the start of the pass.
    enforced: std::collections::BTreeMap<String, Enforced>,
}

/// Each custom policy object's `Accepted` condition, written to its status subresource when it
/// changed: False with the engine's reason (or the conflict) for those refused, True for the
/// others, which the store holds; Tessera's own kinds also say how many nodes enforce them.
async fn report_status(client: &Client, stores: &Stores, outcome: &Outcome) {
    for (kind, resource, store) in &stores.custom {
        for object in store.state() {
            let (namespace, name) = (object.metadata.namespace.as_deref(), object.metadata.name.clone().unwrap_or_default());
            let key = index::custom_policy_key(kind, namespace, &name);
            let verdict = match outcome.refused.get(&key) {
                Some(why) => Verdict { accepted: false, reason: "Refused", message: truncate(why) },
                None => Verdict { accepted: true, reason: "Accepted", message: "enforced as written".into() },
            };
            // Other projects' kinds have no place for it in their status.
            let enforced = outcome.enforced.get(&key).filter(|_| kind.group == crd::GROUP && verdict.accepted);
            set_accepted(client, resource, &object, verdict, ("nodes", enforced.map(|e| serde_json::json!(e)))).await;
        }
    }
}

/// What an object's `Accepted` condition says.
struct Verdict {
    accepted: bool,
    reason: &'static str,
    message: String,
}

/// Write `object`'s `Accepted` condition (and one more status field, `extra`) to its status
/// subresource, unless that is what it says already; the transition time moves only when the
/// condition's status does.
async fn set_accepted(
    client: &Client,
    resource: &ApiResource,
    object: &DynamicObject,
    verdict: Verdict,
    extra: (&str, Option<serde_json::Value>),
) {
    let (namespace, name) = (object.metadata.namespace.as_deref(), object.metadata.name.clone().unwrap_or_default());
    let generation = object.metadata.generation.unwrap_or_default();
    let status = if verdict.accepted { "True" } else { "False" };
    let current = object
        .data
        .pointer("/status/conditions")
        .and_then(|c| c.as_array())
        .and_then(|c| c.iter().find(|c| c.get("type").and_then(|t| t.as_str()) == Some("Accepted")).cloned());
    let same = |field: &str, want: serde_json::Value| current.as_ref().and_then(|c| c.get(field)) == Some(&want);
    let (extra_field, extra_value) = extra;
    let unchanged = same("status", status.into())
        && same("message", verdict.message.clone().into())
        && same("observedGeneration", generation.into())
        && object.data.get("status").and_then(|s| s.get(extra_field)) == extra_value.as_ref();
    if unchanged {
        return;
    }
    let since = match current.as_ref().filter(|_| same("status", status.into())) {
        Some(c) => c.get("lastTransitionTime").and_then(|t| t.as_str()).unwrap_or_default().to_string(),
        None => k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    };
    let condition = crd::Condition {
        kind: "Accepted".into(),
        status: status.into(),
        reason: verdict.reason.into(),
        message: verdict.message,
        observed_generation: generation,
        last_transition_time: since,
    };
    let mut patch = serde_json::json!({"status": {"observedGeneration": generation, "conditions": [condition]}});
    patch["status"][extra_field] = extra_value.unwrap_or(serde_json::Value::Null);
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    };
    if let Err(e) = api.patch_status(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await {
        tracing::warn!(object = %name, kind = %resource.kind, error = %e, "cannot write the status");
    }
}

/// The TesseraTopology named `default` carried into the store when its generation is new (or
/// was refused before: tried again each pass); its status says what became of it, and any other
/// object of the kind is said to be ignored.
async fn follow_topology(client: &Client, stores: &Stores, inventory: &impl Inventory) {
    let (resource, store) = &stores.topology;
    for object in store.state() {
        let generation = object.metadata.generation.unwrap_or_default();
        let conditions = object.data.pointer("/status/conditions").and_then(|c| c.as_array()).cloned().unwrap_or_default();
        let done = conditions.iter().any(|c| c["type"] == "Accepted" && c["status"] == "True" && c["observedGeneration"] == generation);
        if done {
            continue;
        }
        let (verdict, revision) = if object.metadata.name.as_deref() != Some(crd::TOPOLOGY_NAME) {
            let message = format!("only the TesseraTopology named `{}` is the topology", crd::TOPOLOGY_NAME);
            (Verdict { accepted: false, reason: "Ignored", message }, None)
        } else {
            let spec = object.data.get("spec").cloned().unwrap_or_default();
            match inventory.apply_topology(&spec).await {
                Ok(revision) => {
                    let message = format!("the topology's revision {revision}");
                    (Verdict { accepted: true, reason: "Accepted", message }, Some(serde_json::json!(revision)))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the TesseraTopology was refused");
                    (Verdict { accepted: false, reason: "Refused", message: truncate(&e) }, None)
                }
            }
        };
        set_accepted(client, resource, &object, verdict, ("revision", revision)).await;
    }
}

/// An Event's note holds at most 1 kB.
fn truncate(text: &str) -> String {
    let mut end = text.len().min(1000);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

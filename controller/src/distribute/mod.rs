//! Distribution of node state: the controller keeps every node's compiled state in memory,
//! recompiles only what a change affects, bumps the generation of each node whose state really
//! changed (persisted, so generations keep growing across restarts), and wakes that node's
//! watchers. Agents ack what they applied; the status of each node is kept here.
//!
//! Changes arrive as "this object changed, read it again": the distributor reads the store under
//! its own lock, so the order in which handlers report changes cannot leave it stale.

mod build;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tessera_agent_api::{Ack, NodeState, NodeStatus};
use tokio::sync::watch;

use crate::store::{Store, StoreError};

pub use build::{PolicyDocument, read_policy_documents};

/// One node's published state and what its agent reported.
#[derive(Debug)]
pub struct NodeChannel {
    tx: watch::Sender<Arc<NodeState>>,
    report: Mutex<Report>,
    watchers: AtomicUsize,
}

#[derive(Debug, Default, Clone)]
struct Report {
    applied: Option<u64>,
    last_error: Option<String>,
    last_seen: Option<i64>,
}

impl NodeChannel {
    pub fn subscribe(&self) -> watch::Receiver<Arc<NodeState>> {
        self.tx.subscribe()
    }

    pub fn current(&self) -> Arc<NodeState> {
        self.tx.borrow().clone()
    }

    /// Counts a watcher for as long as the guard lives.
    pub fn watching(self: &Arc<Self>) -> WatchGuard {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        self.seen();
        WatchGuard(self.clone())
    }

    pub fn seen(&self) {
        lock(&self.report).last_seen = Some(crate::store::unix_now());
    }
}

/// Decrements the watcher count on drop (when the client goes away).
#[derive(Debug)]
pub struct WatchGuard(Arc<NodeChannel>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A record, or `None` if the store has none (it was deleted).
fn found<T>(read: Result<T, StoreError>) -> Result<Option<T>, StoreError> {
    match read {
        Ok(r) => Ok(Some(r)),
        Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The controller's view of every node's state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Distributor {
    store: Store,
    model: Arc<tokio::sync::Mutex<Option<build::Model>>>,
    nodes: Arc<Mutex<BTreeMap<String, Arc<NodeChannel>>>>,
    /// Set when the controller stops: watches end so the server can finish.
    closing: Arc<watch::Sender<bool>>,
}

impl Distributor {
    /// Compile everything in the store and publish every node's state.
    pub async fn start(store: Store) -> Result<Distributor, StoreError> {
        let d = Distributor { store, model: Arc::default(), nodes: Arc::default(), closing: Arc::new(watch::channel(false).0) };
        d.rebuild().await?;
        Ok(d)
    }

    /// End every watch (the controller is stopping).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    pub fn node(&self, name: &str) -> Option<Arc<NodeChannel>> {
        lock(&self.nodes).get(name).cloned()
    }

    /// Compile everything again (topology, hosts, tenants or blocks changed).
    pub async fn rebuild(&self) -> Result<(), StoreError> {
        let mut guard = self.model.lock().await;
        let model = build::Model::load(&self.store).await?;
        let hosts: BTreeSet<String> = model.hosts.keys().cloned().collect();
        *guard = Some(model);
        self.publish(guard.as_ref(), &hosts).await?;
        lock(&self.nodes).retain(|name, _| hosts.contains(name));
        Ok(())
    }

    /// An endpoint was created, changed or deleted.
    pub async fn endpoint_changed(&self, id: &str) -> Result<(), StoreError> {
        let mut guard = self.model.lock().await;
        let Some(model) = guard.as_mut() else { return Ok(()) };
        let record = found(self.store.endpoint(id).await)?;
        // A block may have been taken or given back with it: segment blocks and routes follow.
        let segment = record.as_ref().or_else(|| model.endpoints.get(id)).map(|e| (e.tenant.clone(), e.segment.clone()));
        let mut changed = BTreeSet::new();
        if let Some((tenant, segment)) = segment {
            changed.extend(model.refresh_segment_blocks(&self.store, &tenant, &segment).await?);
        }
        changed.extend(model.apply_endpoint(id, record));
        self.publish(guard.as_ref(), &changed).await
    }

    /// A tenant was created, relabelled or deleted.
    pub async fn tenant_changed(&self, name: &str) -> Result<(), StoreError> {
        let mut guard = self.model.lock().await;
        let Some(model) = guard.as_mut() else { return Ok(()) };
        let record = found(self.store.tenant(name).await)?;
        let changed = model.apply_tenant(name, record);
        self.publish(guard.as_ref(), &changed).await
    }

    /// Policies were stored or deleted: read them again.
    pub async fn policies_changed(&self, ids: &[String]) -> Result<(), StoreError> {
        let mut guard = self.model.lock().await;
        let Some(model) = guard.as_mut() else { return Ok(()) };
        let mut changed = BTreeSet::new();
        for id in ids {
            let record = found(self.store.policy(id).await)?;
            changed.extend(model.apply_policy(id, record.as_ref())?);
        }
        self.publish(guard.as_ref(), &changed).await
    }

    /// Render the states of `hosts`, bump the generation of those whose digest changed, persist
    /// the generations, then wake watchers.
    async fn publish(&self, model: Option<&build::Model>, hosts: &BTreeSet<String>) -> Result<(), StoreError> {
        let Some(model) = model else { return Ok(()) };
        // Generations come from the store only for nodes without a channel yet (at start).
        let stored = if hosts.iter().any(|h| self.node(h).is_none()) { self.store.node_generations().await? } else { BTreeMap::new() };
        let mut fresh = Vec::new();
        for host in hosts.iter().filter(|h| model.hosts.contains_key(*h)) {
            let (mut state, digest) = model.node_state(host);
            let current = self.node(host).map(|c| c.current());
            let (last_generation, last_digest) = match &current {
                Some(c) => (c.generation, c.digest.clone()),
                None => stored.get(host).cloned().unwrap_or((0, String::new())),
            };
            if current.is_some() && digest == last_digest {
                continue;
            }
            state.generation = if digest == last_digest { last_generation } else { last_generation + 1 };
            state.digest = digest;
            fresh.push(state);
        }
        let changes: Vec<(String, u64, String)> = fresh.iter().map(|s| (s.node.clone(), s.generation, s.digest.clone())).collect();
        self.store.set_node_generations(&changes).await?;
        let mut nodes = lock(&self.nodes);
        for state in fresh {
            let state = Arc::new(state);
            match nodes.get(&state.node) {
                Some(channel) => {
                    channel.tx.send_replace(state);
                }
                None => {
                    let (tx, _) = watch::channel(state.clone());
                    let channel = NodeChannel { tx, report: Mutex::default(), watchers: AtomicUsize::new(0) };
                    nodes.insert(state.node.clone(), Arc::new(channel));
                }
            }
        }
        Ok(())
    }

    /// Record an agent's ack. Acks of generations never published are refused.
    /// Record an agent's ack; a refusal names the ack's field at fault.
    pub fn ack(&self, node: &str, ack: &Ack) -> Result<(), (&'static str, String)> {
        let channel = self.node(node).ok_or_else(|| ("node", format!("node `{node}` has no state")))?;
        let current = channel.current();
        let desired = current.generation;
        if ack.generation > desired {
            return Err(("generation", format!("generation {} was never published (the latest is {desired})", ack.generation)));
        }
        // The latest generation's digest is known: an ack of it must name the same state.
        if ack.generation == desired && ack.digest != current.digest {
            return Err(("digest", format!("`{}` is not the digest of generation {desired}", ack.digest)));
        }
        if !ack.apply_ms.is_finite() || ack.apply_ms < 0.0 {
            return Err(("applyMs", "must be a non-negative number of milliseconds".to_string()));
        }
        let mut report = lock(&channel.report);
        report.last_seen = Some(crate::store::unix_now());
        match &ack.error {
            Some(e) => report.last_error = Some(e.clone()),
            None => {
                report.applied = Some(ack.generation.max(report.applied.unwrap_or(0)));
                report.last_error = None;
            }
        }
        Ok(())
    }

    pub fn status(&self) -> Vec<NodeStatus> {
        let nodes = lock(&self.nodes);
        nodes
            .iter()
            .map(|(name, c)| {
                let report = lock(&c.report).clone();
                let desired = c.current().generation;
                NodeStatus {
                    node: name.clone(),
                    desired_generation: desired,
                    applied_generation: report.applied,
                    lag: desired.saturating_sub(report.applied.unwrap_or(0)),
                    last_error: report.last_error,
                    last_seen: report.last_seen,
                    watchers: c.watchers.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

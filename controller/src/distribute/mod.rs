//! Distribution of node state: every replica keeps every node's compiled state in memory,
//! following the change feed from its cursor; it recompiles only what a change affects, has the
//! store number each node state that really changed (so a generation names the same state on
//! every replica), and wakes that node's watchers. Agents ack what they applied; their reports
//! are kept in the store (batched), so every replica answers the same status.
//!
//! Changes arrive as feed records, "this object changed, read it again": the distributor reads
//! the store under its own lock, so the order of records cannot leave it stale.
//!
//! Tasks: one follower per replica (`follow.rs`), spawned by `start`: it reads the feed after
//! each local commit, each PostgreSQL notification and at least every second, applies records
//! in batches, and stores agents' reports every half second.

mod compiled;
mod fabric;
mod follow;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tessera_agent_api::{Ack, AgentReport, NodeState, NodeStatus};
use tokio::sync::watch;

use crate::store::{Change, ChangeKind, NodeReport, Store, StoreError};

/// How many nodes enforce a change, of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Realization {
    pub applied: usize,
    pub total: usize,
}

/// How long a REST write waits for this replica to have applied it before answering.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// One node's published state and what its agent reported.
#[derive(Debug)]
pub struct NodeChannel {
    tx: watch::Sender<Arc<NodeState>>,
    report: Mutex<NodeReport>,
    /// The report changed since it was last stored.
    dirty: AtomicBool,
    watchers: AtomicUsize,
    /// True once the node left the topology: its watches end (their guards keep the channel alive).
    gone: watch::Sender<bool>,
}

impl NodeChannel {
    fn new(state: Arc<NodeState>) -> NodeChannel {
        NodeChannel {
            tx: watch::channel(state).0,
            report: Mutex::default(),
            dirty: AtomicBool::new(false),
            watchers: AtomicUsize::new(0),
            gone: watch::channel(false).0,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<NodeState>> {
        self.tx.subscribe()
    }

    /// Turns true when the node leaves the topology.
    pub fn gone(&self) -> watch::Receiver<bool> {
        self.gone.subscribe()
    }

    pub fn current(&self) -> Arc<NodeState> {
        self.tx.borrow().clone()
    }

    /// Counts a watcher for as long as the guard lives.
    pub fn watching(self: &Arc<Self>) -> WatchGuard {
        self.watchers.fetch_add(1, Ordering::Relaxed);
        WatchGuard(self.clone())
    }

    /// The node's agent spoke to this replica.
    pub fn seen(&self) {
        lock(&self.report).last_seen = Some(crate::store::unix_now());
        self.dirty.store(true, Ordering::Relaxed);
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

/// Counters of the feed follower, for metrics.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Full resyncs because the cursor fell behind the retained window.
    pub resyncs: AtomicU64,
    /// Records applied.
    pub records: AtomicU64,
}

/// The controller's view of every node's state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Distributor {
    store: Store,
    model: Arc<tokio::sync::Mutex<Option<compiled::CompiledCluster>>>,
    nodes: Arc<Mutex<BTreeMap<String, Arc<NodeChannel>>>>,
    /// The feed position the compiled state reflects.
    applied: Arc<watch::Sender<i64>>,
    /// Nodes whose newest state still waits for a generation (this replica was behind).
    pending: Arc<Mutex<BTreeSet<String>>>,
    pub stats: Arc<FeedStats>,
    /// Set when the controller stops: watches end so the server can finish.
    closing: Arc<watch::Sender<bool>>,
}

impl Distributor {
    /// Compile everything in the store, publish every node's state, and follow the feed.
    pub async fn start(store: Store) -> Result<Distributor, StoreError> {
        let d = Distributor::load(store).await?;
        tokio::spawn(follow::follow(d.clone()));
        Ok(d)
    }

    /// Compile everything in the store and publish every node's state, without following.
    async fn load(store: Store) -> Result<Distributor, StoreError> {
        let d = Distributor {
            store,
            model: Arc::default(),
            nodes: Arc::default(),
            applied: Arc::new(watch::channel(0).0),
            pending: Arc::default(),
            stats: Arc::default(),
            closing: Arc::new(watch::channel(false).0),
        };
        let head = d.store.feed_head().await?;
        d.rebuild_at(head).await?;
        Ok(d)
    }

    /// End every watch (the controller is stopping).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Follow the feed position this replica's state reflects (each change moves it).
    pub fn positions(&self) -> watch::Receiver<i64> {
        self.applied.subscribe()
    }

    pub fn node(&self, name: &str) -> Option<Arc<NodeChannel>> {
        lock(&self.nodes).get(name).cloned()
    }

    /// The feed position this replica's state reflects.
    pub fn position(&self) -> i64 {
        *self.applied.borrow()
    }

    /// Wait until this replica has applied every change committed so far (bounded): a REST
    /// write answers once its effect is distributed, as it did when handlers distributed inline.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let head = self.store.feed_head().await?;
        let mut applied = self.applied.subscribe();
        if tokio::time::timeout(SYNC_TIMEOUT, applied.wait_for(|a| *a >= head)).await.is_err() {
            tracing::warn!(head, applied = self.position(), "the distributor is behind the feed; answering anyway");
        }
        Ok(())
    }

    /// Compile everything again as of feed position `seq` (at start, after falling behind the
    /// retained feed, or when the topology, a host or a segment changed).
    async fn rebuild_at(&self, seq: i64) -> Result<(), StoreError> {
        let mut guard = self.model.lock().await;
        let model = compiled::CompiledCluster::load(&self.store).await?;
        let hosts: BTreeSet<String> = model.hosts.keys().cloned().collect();
        // Only hosts whose state may differ are rendered again.
        let changed = match guard.take() {
            Some(old) => hosts.iter().filter(|h| !old.same_state(&model, h)).cloned().collect(),
            None => hosts.clone(),
        };
        *guard = Some(model);
        if let Err(e) = self.publish(guard.as_ref(), &changed, seq).await {
            // The model is already the new one: what was not published waits as pending.
            lock(&self.pending).extend(changed);
            return Err(e);
        }
        lock(&self.nodes).retain(|name, channel| {
            let keep = hosts.contains(name);
            if !keep {
                channel.gone.send_replace(true);
            }
            keep
        });
        self.applied.send_replace(seq);
        Ok(())
    }

    /// Apply a batch of feed records, in order, ending at position `upto`.
    async fn apply(&self, changes: &[Change], upto: i64) -> Result<(), StoreError> {
        // Segments matter to nodes through their endpoints and blocks only: their own records
        // change nothing compiled.
        if changes.iter().any(|c| matches!(c.kind, ChangeKind::Topology | ChangeKind::Host)) {
            return self.rebuild_at(upto).await;
        }
        let mut guard = self.model.lock().await;
        let Some(model) = guard.as_mut() else { return Ok(()) };
        let mut changed: BTreeSet<String> = std::mem::take(&mut *lock(&self.pending));
        for change in changes {
            match change.kind {
                ChangeKind::Endpoint => changed.extend(self.endpoint_changed(model, &change.object).await?),
                ChangeKind::Tenant => changed.extend(model.apply_tenant(&change.object, found(self.store.tenant(&change.object).await)?)),
                ChangeKind::Policy => {
                    let record = found(self.store.policy(&change.object).await)?;
                    changed.extend(model.apply_policy(&change.object, record.as_ref())?);
                }
                ChangeKind::Vip => {
                    // The object is the address; an unreadable one names no VIP of ours.
                    if let Ok(address) = change.object.parse() {
                        changed.extend(model.apply_vip(address, found(self.store.vip(&address).await)?));
                    }
                }
                ChangeKind::Token | ChangeKind::Topology | ChangeKind::Host | ChangeKind::Segment => {}
            }
        }
        self.publish(guard.as_ref(), &changed, upto).await?;
        self.stats.records.fetch_add(changes.len() as u64, Ordering::Relaxed);
        self.applied.send_replace(upto);
        Ok(())
    }

    /// Ask `question` of the cluster and policies exactly as this replica compiled and
    /// distributed them (no store read); `None` before the first compile. The compiled model
    /// waits meanwhile: keep questions short.
    pub async fn ask<R>(&self, question: impl FnOnce(&tessera_policy::model::Cluster, &[tessera_policy::model::Policy]) -> R) -> Option<R> {
        let guard = self.model.lock().await;
        guard.as_ref().map(|model| {
            let (cluster, policies) = model.policy_view();
            question(cluster, policies)
        })
    }

    /// Publish nodes still waiting for a generation.
    async fn retry_pending(&self) -> Result<(), StoreError> {
        let waiting: BTreeSet<String> = std::mem::take(&mut *lock(&self.pending));
        if waiting.is_empty() {
            return Ok(());
        }
        let guard = self.model.lock().await;
        self.publish(guard.as_ref(), &waiting, self.position()).await
    }

    /// An endpoint was created, changed or deleted: the nodes whose state may have changed.
    async fn endpoint_changed(&self, model: &mut compiled::CompiledCluster, id: &str) -> Result<BTreeSet<String>, StoreError> {
        let record = found(self.store.endpoint(id).await)?;
        // A block may have been taken or given back with it: segment blocks and routes follow.
        let segment = record.as_ref().or_else(|| model.endpoints.get(id)).map(|e| (e.tenant.clone(), e.segment.clone()));
        let mut changed = BTreeSet::new();
        if let Some((tenant, segment)) = segment {
            changed.extend(model.refresh_segment_blocks(&self.store, &tenant, &segment).await?);
        }
        changed.extend(model.apply_endpoint(id, record));
        Ok(changed)
    }

    /// Render the states of `hosts`; those whose digest changed get their generation from the
    /// store (as of feed position `seq`) and wake their watchers.
    async fn publish(&self, model: Option<&compiled::CompiledCluster>, hosts: &BTreeSet<String>, seq: i64) -> Result<(), StoreError> {
        let Some(model) = model else { return Ok(()) };
        let mut fresh = Vec::new();
        for host in hosts.iter().filter(|h| model.hosts.contains_key(*h)) {
            let (state, digest) = model.node_state(host);
            if self.node(host).is_some_and(|c| c.current().digest == digest) {
                continue;
            }
            fresh.push((state, digest));
        }
        let keys: Vec<(String, String)> = fresh.iter().map(|(s, d)| (s.node.clone(), d.clone())).collect();
        let numbers = self.store.assign_generations(&keys, seq).await?;
        let mut nodes = lock(&self.nodes);
        for ((mut state, digest), number) in fresh.into_iter().zip(numbers) {
            let Some(generation) = number else {
                lock(&self.pending).insert(state.node.clone());
                continue;
            };
            state.generation = generation;
            state.digest = digest;
            let state = Arc::new(state);
            match nodes.get(&state.node) {
                Some(channel) => {
                    channel.tx.send_replace(state);
                }
                None => {
                    nodes.insert(state.node.clone(), Arc::new(NodeChannel::new(state)));
                }
            }
        }
        Ok(())
    }

    /// Record an agent's ack (stored with the next batch); a refusal names the ack's field at
    /// fault. Acks of generations never published are refused.
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
        channel.dirty.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// An agent's periodic report: it is alive, and (when it says) how its fabric stands.
    pub fn report(&self, node: &str, report: AgentReport) -> Result<(), (&'static str, String)> {
        let channel = self.node(node).ok_or_else(|| ("node", format!("node `{node}` has no state")))?;
        let mut stored = lock(&channel.report);
        stored.last_seen = Some(crate::store::unix_now());
        if report.fabric.is_some() {
            stored.fabric = report.fabric;
        }
        channel.dirty.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Store the reports that changed since the last batch.
    async fn flush_reports(&self) -> Result<(), StoreError> {
        let dirty: BTreeMap<String, NodeReport> = lock(&self.nodes)
            .iter()
            .filter(|(_, c)| c.dirty.swap(false, Ordering::Relaxed))
            .map(|(name, c)| (name.clone(), lock(&c.report).clone()))
            .collect();
        self.store.save_reports(&dirty).await
    }

    /// Every node's stored row, with this replica's latest reports stored first.
    pub async fn records(&self) -> Result<BTreeMap<String, crate::store::NodeRecord>, StoreError> {
        self.flush_reports().await?;
        self.store.node_records().await
    }

    /// How many nodes enforce the latest change of each stored policy of `ids` (see
    /// [`Distributor::realization`]); a change older than the retained feed is in every state.
    pub async fn policies_enforced<'a>(&self, ids: impl Iterator<Item = &'a String>) -> Result<BTreeMap<String, Realization>, StoreError> {
        let retained = self.store.last_changes(ChangeKind::Policy).await?;
        let changed_at = ids.map(|id| (id.clone(), retained.get(id).copied().unwrap_or(0))).collect();
        self.realization(&changed_at).await
    }

    /// For each object changed at a feed position (`changed_at`), how many nodes enforce its
    /// latest change, of how many nodes: those that have applied their latest state, once this
    /// replica has followed the feed past the change. (A node still applying a later state is
    /// not counted even if the change is already in what it runs: a lower bound, never more.)
    pub async fn realization(&self, changed_at: &BTreeMap<String, i64>) -> Result<BTreeMap<String, Realization>, StoreError> {
        let records = self.records().await?;
        let position = self.position();
        let current = records.values().filter(|r| r.report.applied.is_some_and(|a| a >= r.generation)).count();
        Ok(changed_at
            .iter()
            .map(|(object, at)| {
                let applied = if position >= *at { current } else { 0 };
                (object.clone(), Realization { applied, total: records.len() })
            })
            .collect())
    }

    /// Every node's status as the store has it (the same on every replica), with this
    /// replica's count of watchers.
    pub async fn status(&self) -> Result<Vec<NodeStatus>, StoreError> {
        self.flush_reports().await?;
        let records = self.store.node_records().await?;
        let nodes: Vec<(String, usize)> = lock(&self.nodes).iter().map(|(n, c)| (n.clone(), c.watchers.load(Ordering::Relaxed))).collect();
        Ok(nodes
            .into_iter()
            .filter_map(|(name, watchers)| {
                let record = records.get(&name)?;
                let applied = record.report.applied;
                Some(NodeStatus {
                    node: name,
                    desired_generation: record.generation,
                    applied_generation: applied,
                    lag: record.generation.saturating_sub(applied.unwrap_or(0)),
                    last_error: record.report.last_error.clone(),
                    last_seen: record.report.last_seen,
                    watchers,
                })
            })
            .collect())
    }
}

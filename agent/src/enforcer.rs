//! The one task that changes the node: applies states, repairs drift, keeps routes. Everything
//! that touches nftables or routes goes through its queue, so changes never interleave.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tessera_agent_api::{Ack, NodeState};
use tessera_netlink::Netlink;
use tokio::sync::{mpsc, oneshot, watch};

use crate::client::Controller;
use crate::disk::Disk;
use crate::drift::{Drift, Watch};
use crate::error::EnforceError;
use crate::metrics::Metrics;
use crate::nft::{Applied, Census, Nft};
use crate::routes;

/// What the rest of the agent can see of the enforced state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Enforced {
    pub generation: Option<u64>,
    pub endpoints: BTreeSet<String>,
    /// The fabric part of the enforced state (BGP speaker, VIPs).
    pub fabric: crate::fabric::Desired,
}

/// Seconds between resyncs, by default.
pub const RESYNC_SECONDS: f64 = 10.0;

/// While the table is watched, one resync in this many lists it whole (10 minutes at the
/// default 10 s).
pub const LISTING_EVERY: u64 = 60;

#[derive(Debug)]
pub enum Event {
    /// A new state from the controller.
    State(Box<NodeState>),
    /// Verify the table and routes; repair drift.
    Resync,
    /// A watcher saw the table or routes changed by someone else.
    Drift(Drift),
    /// The CNI plugin wired (or unwired: `None`) an endpoint's host interface.
    Wire { endpoint: String, interface: Option<String>, done: oneshot::Sender<Result<(), EnforceError>> },
    /// The kernel does not hold what the last delta should have made: restore the table.
    Differs(String),
}

pub struct Enforcer {
    pub nft: Nft,
    /// The drift watchers, once started.
    pub watch: Option<Arc<Watch>>,
    /// Resyncs so far (every [`LISTING_EVERY`]th lists the table even while it is watched).
    pub resyncs: u64,
    pub netlink: Netlink,
    pub disk: Disk,
    pub metrics: Arc<Metrics>,
    pub controller: Controller,
    pub enforced: watch::Sender<Enforced>,
    pub current: Option<NodeState>,
    pub wired: BTreeMap<String, String>,
    /// The enforcer's own queue, once running: a delta's check reports a difference through it.
    pub events: Option<mpsc::Sender<Event>>,
}

impl std::fmt::Debug for Enforcer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enforcer").field("generation", &self.current.as_ref().map(|s| s.generation)).finish()
    }
}

impl Enforcer {
    /// Enforce the last-known-good state from disk, before talking to anyone.
    pub async fn start(&mut self) -> Result<(), EnforceError> {
        self.wired = self.disk.load_wired();
        let Some(state) = self.disk.load_state() else {
            tracing::info!("no last-known-good state on disk; waiting for the controller");
            return Ok(());
        };
        if state.node != self.controller.node() {
            return Err(EnforceError::WrongNode { node: self.controller.node().to_string(), found: state.node });
        }
        tracing::info!(generation = state.generation, "enforcing the last-known-good state from disk");
        let started = Instant::now();
        tokio::task::block_in_place(|| self.nft.replace(&state.ruleset))?;
        self.metrics.apply_seconds.observe(started.elapsed().as_secs_f64());
        self.current = Some(state);
        self.sync_routes().await?;
        self.publish();
        Ok(())
    }

    pub async fn run(mut self, mut events: mpsc::Receiver<Event>) {
        while let Some(event) = events.recv().await {
            match event {
                Event::State(state) => self.apply(*state).await,
                Event::Resync => self.resync().await,
                Event::Drift(drift) => self.repair(drift).await,
                Event::Differs(why) => self.differs(&why),
                Event::Wire { endpoint, interface, done } => {
                    match interface {
                        Some(i) => self.wired.insert(endpoint, i),
                        None => self.wired.remove(&endpoint),
                    };
                    let saved = self.disk.save_wired(&self.wired).map_err(EnforceError::from);
                    let routed = self.sync_routes().await.map(|_| ());
                    let _ = done.send(saved.and(routed));
                }
            }
        }
    }

    async fn apply(&mut self, state: NodeState) {
        let started = Instant::now();
        let old = self.current.as_ref().map(|s| &s.ruleset);
        let outcome = tokio::task::block_in_place(|| -> Result<Applied, EnforceError> {
            let applied = match self.nft.apply(old, &state.ruleset) {
                Ok(a) => a,
                // A failed delta leaves the table as it was (one transaction): replace it whole.
                Err(e) if old.is_some() => {
                    tracing::warn!(error = %e, "delta failed; replacing the table");
                    self.nft.replace(&state.ruleset)?;
                    Applied::Full
                }
                Err(e) => return Err(e.into()),
            };
            self.verify(&state, applied)?;
            Ok(applied)
        });
        let elapsed = started.elapsed();
        let ack = match outcome {
            Ok(applied) => {
                self.metrics.apply_seconds.observe(elapsed.as_secs_f64());
                self.metrics.applied(applied.how());
                tracing::info!(generation = state.generation, ?applied, ms = elapsed.as_secs_f64() * 1e3, "applied");
                // Enforced now: the CNI plugin waiting for it goes on (its Wire call brings
                // the pod's route) while the state is saved and routes are synced.
                self.current = Some(state);
                self.publish();
                if let Some(state) = &self.current
                    && let Err(e) = self.disk.save_state(state)
                {
                    tracing::error!(error = %e, "could not save the last-known-good state");
                }
                let routed = self.sync_routes().await;
                let current = self.current.as_ref().map(|s| (s.generation, s.digest.clone())).unwrap_or_default();
                let error = routed.err().map(|e| e.to_string());
                Ack { generation: current.0, digest: current.1, error, apply_ms: elapsed.as_secs_f64() * 1e3 }
            }
            Err(e) => {
                self.metrics.apply_failures.inc();
                tracing::error!(generation = state.generation, error = %e, "could not apply; still enforcing the previous state");
                Ack {
                    generation: state.generation,
                    digest: state.digest.clone(),
                    error: Some(e.to_string()),
                    apply_ms: elapsed.as_secs_f64() * 1e3,
                }
            }
        };
        let controller = self.controller.clone();
        tokio::spawn(async move {
            if let Err(e) = controller.ack(&ack).await {
                tracing::warn!(error = %e, generation = ack.generation, "ack not delivered");
            }
        });
        // A delta is checked against the kernel once acknowledged, beside the next events (a
        // CNI plugin's Wire call does not wait for it); a difference comes back as an event.
        match self.events.clone() {
            Some(events) => {
                let nft = self.nft.clone();
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = nft.verify_delta() {
                        let _ = events.blocking_send(Event::Differs(e.to_string()));
                    }
                });
            }
            None => {
                if let Err(e) = tokio::task::block_in_place(|| self.nft.verify_delta()) {
                    self.differs(&e.to_string());
                }
            }
        }
    }

    /// A delta's check found the kernel holding something else.
    fn differs(&mut self, why: &str) {
        tracing::warn!(error = %why, "the kernel does not hold what was applied; restoring the table");
        self.restore();
    }

    /// The table is not what the current state says: replace it whole, counted as drift.
    fn restore(&mut self) {
        let Some(state) = self.current.clone() else { return };
        match tokio::task::block_in_place(|| self.nft.replace(&state.ruleset)) {
            Ok(()) => self.metrics.drift_repaired("nftables"),
            Err(e) => tracing::error!(error = %e, "restoring table inet tessera failed"),
        }
    }

    /// After a full replacement, compare what the kernel holds with `state` (a delta is checked
    /// once acknowledged, `Nft::verify_delta`; the periodic resync lists the whole table).
    fn verify(&self, state: &NodeState, applied: Applied) -> Result<(), EnforceError> {
        if matches!(applied, Applied::Unchanged | Applied::Delta(_) | Applied::Elements(_)) && self.current.is_some() {
            return Ok(());
        }
        let want = Census::of(&state.ruleset);
        match self.nft.census()? {
            Some(have) if have == want => Ok(()),
            Some(have) => Err(EnforceError::Mismatch(format!(
                "table inet tessera differs after applying: {} rules and {:?}, expected {} and {:?}",
                have.rules, have.elements, want.rules, want.elements
            ))),
            None => Err(EnforceError::Mismatch("table inet tessera is missing after applying".into())),
        }
    }

    /// The periodic safety net. While nf_tables commits are watched, listing the whole table
    /// (2.5 s at 100k elements) is left to every [`LISTING_EVERY`]th resync; routes are cheap
    /// to compare and always are.
    async fn resync(&mut self) {
        self.resyncs += 1;
        let watched = self.watch.as_ref().is_some_and(|w| w.watching_nftables());
        if !watched || self.resyncs.is_multiple_of(LISTING_EVERY) {
            self.check_nftables();
        }
        self.repair_routes().await;
    }

    /// Drift a watcher saw, repaired at once.
    async fn repair(&mut self, drift: Drift) {
        if let Some(w) = &self.watch {
            w.taken(&drift);
        }
        match drift {
            Drift::Routes => self.repair_routes().await,
            Drift::Unknown => self.check_nftables(),
            Drift::Nftables { by } => {
                tracing::warn!(by = %by, "table inet tessera changed by another process; restoring it");
                self.restore();
            }
        }
    }

    /// List the table and restore it if it is not what the state says.
    fn check_nftables(&mut self) {
        let Some(state) = self.current.clone() else { return };
        let want = Census::of(&state.ruleset);
        let repaired = tokio::task::block_in_place(|| -> Result<bool, crate::error::NftError> {
            let have = self.nft.census()?;
            if have.as_ref() == Some(&want) {
                return Ok(false);
            }
            tracing::warn!(found = ?have.map(|h| (h.rules, h.elements.values().sum::<usize>())), "table inet tessera drifted; restoring it");
            self.nft.replace(&state.ruleset)?;
            Ok(true)
        });
        match repaired {
            Ok(true) => self.metrics.drift_repaired("nftables"),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "resync of nftables failed"),
        }
    }

    async fn repair_routes(&mut self) {
        match self.sync_routes().await {
            Ok(changes) if changes.added + changes.removed > 0 => {
                tracing::warn!(added = changes.added, removed = changes.removed, "routes drifted; restored them");
                self.metrics.drift_repaired("routes");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "resync of routes failed"),
        }
    }

    async fn sync_routes(&mut self) -> Result<routes::RouteChanges, EnforceError> {
        let Some(state) = &self.current else { return Ok(Default::default()) };
        let want = routes::desired(&self.netlink, state, &self.wired).await?;
        Ok(routes::reconcile(&self.netlink, &want).await?)
    }

    fn publish(&self) {
        let Some(state) = &self.current else { return };
        self.metrics.generation.set(state.generation as i64);
        self.metrics.set_elements.set(state.ruleset.element_count() as i64);
        self.enforced.send_replace(Enforced {
            generation: Some(state.generation),
            endpoints: state.endpoints.iter().map(|e| e.id.clone()).collect(),
            fabric: crate::fabric::Desired { speaker: state.bgp.clone(), vips: state.vips.clone() },
        });
    }
}

/// Where the agent keeps its last-known-good state.
pub fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/tessera")
}

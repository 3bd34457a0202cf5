//! The writer lease: singleton work (feed compaction now; route publishers, the operator's
//! writes and garbage collection later) runs only on the replica that holds it, and checks the
//! lease's fencing token before each external write. Every replica also heartbeats here, for
//! `GET /v1/controllers`.
//!
//! Task: one per replica (`run`), spawned at start: every `renew` it heartbeats and takes or
//! renews the lease; on a clean stop it gives the lease up so another replica takes over at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::store::{Store, StoreError};

/// A replica id for a process that was given none: host name, process id, and randomness.
pub fn new_replica_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let host = if host.is_empty() { "controller".to_string() } else { host };
    format!("{host}-{}-{:04x}", std::process::id(), rand::random::<u16>())
}

/// The lease singleton work runs under.
pub const WRITER_LEASE: &str = "writer";

/// Timings of the lease and of the work under it.
#[derive(Debug, Clone, Copy)]
pub struct LeaseConfig {
    /// How often the holder renews (and every replica heartbeats).
    pub renew: Duration,
    /// How long a lease lasts unless renewed: a dead holder is replaced after at most this.
    pub ttl: Duration,
    /// Change records kept; older ones are compacted by the holder.
    pub feed_retention: i64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig { renew: Duration::from_secs(2), ttl: Duration::from_secs(10), feed_retention: 100_000 }
    }
}

/// What this replica knows of the lease: the fencing token while it holds it, and until when
/// (by its own monotonic clock, counted from before the renewal, so never later than the store's).
#[derive(Debug, Clone, Copy, Default)]
struct Held {
    token: Option<i64>,
    until: Option<Instant>,
}

/// This replica's side of the writer lease; cheap to clone.
#[derive(Debug, Clone)]
pub struct Writer {
    pub replica: String,
    store: Store,
    held: Arc<watch::Sender<Held>>,
}

impl Writer {
    pub fn new(store: Store, replica: String) -> Writer {
        Writer { replica, store, held: Arc::new(watch::channel(Held::default()).0) }
    }

    /// The fencing token, while this replica holds the lease: check it right before each
    /// external write, and write nothing without it.
    pub fn fence(&self) -> Option<i64> {
        let held = *self.held.borrow();
        held.until.filter(|u| Instant::now() < *u).and(held.token)
    }

    pub fn is_leader(&self) -> bool {
        self.fence().is_some()
    }

    /// Heartbeat, take or renew the lease, and do the holder's work, until `closing`.
    pub async fn run(self, address: String, config: LeaseConfig, mut closing: watch::Receiver<bool>) {
        let started_at = crate::store::unix_now();
        let mut last_compaction: Option<Instant> = None;
        loop {
            if let Err(e) = self.round(&address, started_at, config, &mut last_compaction).await {
                // The store is unreachable: whatever was held lapses by its own clock.
                tracing::warn!(error = %e, "writer lease round failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(config.renew) => {}
                _ = closing.changed() => {
                    if self.held.borrow().token.is_some() {
                        let _ = self.store.release_lease(WRITER_LEASE, &self.replica).await;
                    }
                    self.held.send_replace(Held::default());
                    return;
                }
            }
        }
    }

    async fn round(&self, address: &str, started_at: i64, config: LeaseConfig, last: &mut Option<Instant>) -> Result<(), StoreError> {
        self.store.heartbeat(&self.replica, address, started_at).await?;
        let asked = Instant::now();
        let ttl_ms = i64::try_from(config.ttl.as_millis()).unwrap_or(i64::MAX);
        let lease = self.store.acquire_lease(WRITER_LEASE, &self.replica, ttl_ms).await?;
        let was = self.held.borrow().token;
        let now_held =
            if lease.holder == self.replica { Held { token: Some(lease.token), until: Some(asked + config.ttl) } } else { Held::default() };
        if was != now_held.token {
            match now_held.token {
                Some(token) => tracing::info!(replica = %self.replica, token, "holding the writer lease"),
                None => tracing::info!(replica = %self.replica, holder = %lease.holder, "not holding the writer lease"),
            }
        }
        self.held.send_replace(now_held);
        if self.fence().is_some() && last.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            *last = Some(Instant::now());
            let dropped = self.store.compact_feed(config.feed_retention).await?;
            if dropped > 0 {
                tracing::info!(dropped, "compacted the change feed");
            }
        }
        Ok(())
    }
}

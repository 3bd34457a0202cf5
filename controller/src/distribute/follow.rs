//! The feed follower of one replica: reads the change feed from the distributor's cursor and
//! applies it in batches; resyncs from the store when the cursor fell behind the retained
//! window; stores agents' reports every half second.
//!
//! Wake-ups are hints: a commit of this process, a PostgreSQL notification (other replicas'
//! commits), or the poll interval. The feed table is the data, so a lost wake-up costs at most
//! one poll interval.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Distributor;
use crate::store::{Backend, FeedRead, NOTIFY_CHANNEL, StoreError};

/// The longest a replica goes without reading the feed.
const POLL: Duration = Duration::from_secs(1);
/// Records applied per batch (one lock of the model, one generation transaction).
const BATCH: i64 = 500;
/// How often agents' reports are stored.
const FLUSH: Duration = Duration::from_millis(500);

pub(super) async fn follow(dist: Distributor) {
    let mut commits = dist.store.commits();
    let mut closing = dist.closing();
    let mut listener = None;
    let mut flush = tokio::time::interval(FLUSH);
    loop {
        if listener.is_none() && dist.store.backend() == Backend::Postgres {
            listener = listen(dist.store.url()).await;
        }
        loop {
            match step(&dist).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the change feed failed; retrying");
                    break;
                }
            }
        }
        tokio::select! {
            _ = commits.changed() => {}
            lost = notified(&mut listener) => if lost { listener = None },
            _ = tokio::time::sleep(POLL) => {}
            _ = flush.tick() => {
                if let Err(e) = dist.flush_reports().await {
                    tracing::warn!(error = %e, "storing agents' reports failed; keeping them for the next batch");
                }
            }
            _ = closing.changed() => {
                let _ = dist.flush_reports().await;
                return;
            }
        }
    }
}

/// Read and apply the next batch; `true` when there may be more.
async fn step(dist: &Distributor) -> Result<bool, StoreError> {
    match dist.store.changes_since(dist.position(), BATCH).await? {
        FeedRead::Behind { head } => {
            tracing::warn!(cursor = dist.position(), head, "the change feed was compacted past this replica's cursor; resyncing");
            dist.stats.resyncs.fetch_add(1, Ordering::Relaxed);
            dist.rebuild_at(head).await?;
            Ok(true)
        }
        FeedRead::Changes(list) => {
            let Some(last) = list.last().map(|c| c.seq) else {
                dist.retry_pending().await?;
                return Ok(false);
            };
            dist.apply(&list, last).await?;
            Ok(list.len() as i64 == BATCH)
        }
    }
}

async fn listen(url: &str) -> Option<sqlx::postgres::PgListener> {
    let mut listener = match sqlx::postgres::PgListener::connect(url).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "no LISTEN connection yet; polling");
            return None;
        }
    };
    listener.listen(NOTIFY_CHANNEL).await.ok()?;
    Some(listener)
}

/// Waits for a notification; `true` when the connection was lost (polling goes on).
async fn notified(listener: &mut Option<sqlx::postgres::PgListener>) -> bool {
    match listener {
        Some(l) => l.try_recv().await.map_or(true, |n| n.is_none()),
        None => std::future::pending().await,
    }
}

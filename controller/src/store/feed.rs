//! The change feed: one record per change, appended in the change's own transaction, followed
//! by every consumer from its own cursor.
//!
//! Every writing transaction bumps `feed_head.seq`, which holds that row's lock until commit:
//! records become visible in sequence order, so a follower reading `seq > cursor` never skips
//! one that commits late. Wake-ups are hints (an in-process `Notify`; PostgreSQL `NOTIFY` for the
//! other replicas): a lost one costs a poll interval, never a change. Old records are compacted;
//! a follower whose cursor fell below the retained window must resync from the store.

use std::collections::BTreeMap;

use sqlx::AnyConnection;
use sqlx::Row;

use super::{Result, Store, StoreError, now};

/// The PostgreSQL channel that wakes the followers of other replicas.
pub const NOTIFY_CHANNEL: &str = "tessera_changes";

/// What changed: read the object again to learn how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    Topology,
    Host,
    Tenant,
    /// Object `tenant/segment`.
    Segment,
    Endpoint,
    Policy,
    Token,
    /// Object: the VIP's address.
    Vip,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Topology => "topology",
            ChangeKind::Host => "host",
            ChangeKind::Tenant => "tenant",
            ChangeKind::Segment => "segment",
            ChangeKind::Endpoint => "endpoint",
            ChangeKind::Policy => "policy",
            ChangeKind::Token => "token",
            ChangeKind::Vip => "vip",
        }
    }

    fn parse(text: &str) -> Option<ChangeKind> {
        [
            ChangeKind::Topology,
            ChangeKind::Host,
            ChangeKind::Tenant,
            ChangeKind::Segment,
            ChangeKind::Endpoint,
            ChangeKind::Policy,
            ChangeKind::Token,
            ChangeKind::Vip,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// One record of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub kind: ChangeKind,
    pub object: String,
    pub revision: i64,
}

/// What a follower reads from its cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedRead {
    /// The next records, in order (empty: nothing new).
    Changes(Vec<Change>),
    /// The cursor is below the retained window: resync from the store, then follow from `head`.
    Behind { head: i64 },
}

/// Append a change record inside the writing transaction `conn`; returns its sequence.
pub(super) async fn record(conn: &mut AnyConnection, kind: ChangeKind, object: &str, revision: i64) -> Result<i64> {
    sqlx::query("UPDATE feed_head SET seq = seq + 1 WHERE id = 1").execute(&mut *conn).await?;
    let seq: i64 = sqlx::query("SELECT seq FROM feed_head WHERE id = 1").fetch_one(&mut *conn).await?.try_get("seq")?;
    sqlx::query("INSERT INTO changes (seq, kind, object, revision, at) VALUES ($1, $2, $3, $4, $5)")
        .bind(seq)
        .bind(kind.as_str())
        .bind(object)
        .bind(revision)
        .bind(now())
        .execute(&mut *conn)
        .await?;
    if conn.backend_name() == "PostgreSQL" {
        // Delivered at commit, and only then.
        sqlx::query(&format!("NOTIFY {NOTIFY_CHANNEL}")).execute(&mut *conn).await?;
    }
    Ok(seq)
}

impl Store {
    /// The sequence of the newest change.
    /// The feed position of each retained object's latest change of `kind`.
    pub async fn last_changes(&self, kind: ChangeKind) -> Result<BTreeMap<String, i64>> {
        let rows = sqlx::query("SELECT object, MAX(seq) AS seq FROM changes WHERE kind = $1 GROUP BY object")
            .bind(kind.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("object")?, r.try_get("seq")?))).collect()
    }

    pub async fn feed_head(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT seq FROM feed_head WHERE id = 1").fetch_one(&self.pool).await?.try_get("seq")?)
    }

    /// Up to `limit` records after `cursor`, or `Behind` when some were compacted away.
    pub async fn changes_since(&self, cursor: i64, limit: i64) -> Result<FeedRead> {
        let head = sqlx::query("SELECT seq, compacted FROM feed_head WHERE id = 1").fetch_one(&self.pool).await?;
        let (seq, compacted): (i64, i64) = (head.try_get("seq")?, head.try_get("compacted")?);
        if cursor < compacted {
            return Ok(FeedRead::Behind { head: seq });
        }
        let rows = sqlx::query("SELECT seq, kind, object, revision FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(cursor)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let kind: String = r.try_get("kind")?;
            out.push(Change {
                seq: r.try_get("seq")?,
                kind: ChangeKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("change kind `{kind}`")))?,
                object: r.try_get("object")?,
                revision: r.try_get("revision")?,
            });
        }
        Ok(FeedRead::Changes(out))
    }

    /// Drop records so that at most `keep` remain; followers behind them will resync.
    pub async fn compact_feed(&self, keep: i64) -> Result<i64> {
        let mut tx = self.write().await?;
        let seq: i64 = sqlx::query("SELECT seq FROM feed_head WHERE id = 1").fetch_one(&mut *tx).await?.try_get("seq")?;
        let upto = (seq - keep).max(0);
        let done = sqlx::query("DELETE FROM changes WHERE seq <= $1").bind(upto).execute(&mut *tx).await?;
        sqlx::query("UPDATE feed_head SET compacted = $1 WHERE id = 1 AND compacted < $1").bind(upto).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() as i64)
    }

    /// Changes whenever a write commits through this process.
    pub fn commits(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

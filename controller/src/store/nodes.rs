//! Node states shared by every replica: each node's generation (assigned here, once per distinct
//! state), and what its agent last reported (applied generation, error, when it was seen).
//!
//! A generation names one state on every replica: it is assigned in a transaction on the node's
//! row, and only by a replica whose feed cursor is at or past the one that assigned the last
//! generation (a replica behind waits until it catches up instead of numbering an older state).

use std::collections::BTreeMap;

use sqlx::Row;

use super::{Backend, Result, Store};

/// What an agent reported, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeReport {
    pub applied: Option<u64>,
    pub last_error: Option<String>,
    pub last_seen: Option<i64>,
}

/// A node's row: its generation and digest, and its agent's last report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub host: String,
    pub generation: u64,
    pub digest: String,
    pub report: NodeReport,
}

impl Store {
    /// Number each state (host, digest) computed at feed position `seq`: the stored generation
    /// when the digest is the stored one, the next generation when it differs and `seq` is not
    /// behind the position that numbered the stored one, `None` when it is (try again later).
    pub async fn assign_generations(&self, states: &[(String, String)], seq: i64) -> Result<Vec<Option<u64>>> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let mut sorted: Vec<(usize, &(String, String))> = states.iter().enumerate().collect();
        // One lock order for every replica: no deadlocks between them.
        sorted.sort_by(|a, b| a.1.0.cmp(&b.1.0));
        let lock = if self.backend == Backend::Postgres { " FOR UPDATE" } else { "" };
        let mut out = vec![None; states.len()];
        let mut tx = self.write().await?;
        for (i, (host, digest)) in sorted {
            sqlx::query("INSERT INTO node_states (host, generation, digest, seq) VALUES ($1, 0, '', 0) ON CONFLICT (host) DO NOTHING")
                .bind(host)
                .execute(&mut *tx)
                .await?;
            let row = sqlx::query(&format!("SELECT generation, digest, seq FROM node_states WHERE host = $1{lock}"))
                .bind(host)
                .fetch_one(&mut *tx)
                .await?;
            let (generation, stored, at): (i64, String, i64) = (row.try_get("generation")?, row.try_get("digest")?, row.try_get("seq")?);
            out[i] = if stored == *digest {
                sqlx::query("UPDATE node_states SET seq = $1 WHERE host = $2 AND seq < $1").bind(seq).bind(host).execute(&mut *tx).await?;
                Some(generation as u64)
            } else if seq < at {
                None
            } else {
                sqlx::query("UPDATE node_states SET generation = $1, digest = $2, seq = $3 WHERE host = $4")
                    .bind(generation + 1)
                    .bind(digest)
                    .bind(seq)
                    .bind(host)
                    .execute(&mut *tx)
                    .await?;
                Some(generation as u64 + 1)
            };
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Every node's row.
    pub async fn node_records(&self) -> Result<BTreeMap<String, NodeRecord>> {
        let rows =
            sqlx::query("SELECT host, generation, digest, applied, last_error, last_seen FROM node_states").fetch_all(&self.pool).await?;
        let mut out = BTreeMap::new();
        for r in &rows {
            let host: String = r.try_get("host")?;
            let report = NodeReport {
                applied: r.try_get::<Option<i64>, _>("applied")?.map(|a| a as u64),
                last_error: r.try_get("last_error")?,
                last_seen: r.try_get("last_seen")?,
            };
            out.insert(
                host.clone(),
                NodeRecord { host, generation: r.try_get::<i64, _>("generation")? as u64, digest: r.try_get("digest")?, report },
            );
        }
        Ok(out)
    }

    /// Store agents' reports, all in one transaction (the distributor batches them). An applied
    /// generation never goes back.
    pub async fn save_reports(&self, reports: &BTreeMap<String, NodeReport>) -> Result<()> {
        if reports.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        for (host, r) in reports {
            sqlx::query(
                "UPDATE node_states SET applied = CASE WHEN applied IS NULL OR applied < $1 THEN $1 ELSE applied END,
                 last_error = $2, last_seen = $3 WHERE host = $4",
            )
            .bind(r.applied.map(|a| a as i64))
            .bind(&r.last_error)
            .bind(r.last_seen)
            .bind(host)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

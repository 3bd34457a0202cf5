//! Node states shared by every replica: each node's generation (assigned here, once per distinct
//! state), and what its agent last reported (applied generation, error, when it was seen).
//!
//! A generation names one state on every replica: it is assigned in a serialised transaction,
//! and only by a replica whose feed cursor is at or past the one that assigned the last
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
    /// The agent's last BGP report (`None`: none received by this replica; the stored one stays).
    pub fabric: Option<tessera_agent_api::FabricReport>,
}

/// A node's row: its generation and digest, and its agent's last report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub host: String,
    pub generation: u64,
    pub digest: String,
    /// The feed position at which `generation` was numbered.
    pub seq: i64,
    pub report: NodeReport,
}

impl Store {
    /// Number each state (host, digest) computed at feed position `seq`: the stored generation
    /// when the digest is the stored one, the next generation when it differs and `seq` is not
    /// behind the position that numbered the stored one, `None` when it is (try again later).
    ///
    /// Assigners are serialised (SQLite: the write lock; PostgreSQL: a table lock that readers
    /// do not wait for); only numbers that change are written.
    pub async fn assign_generations(&self, states: &[(String, String)], seq: i64) -> Result<Vec<Option<u64>>> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.write().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("LOCK TABLE node_states IN SHARE ROW EXCLUSIVE MODE").execute(&mut *tx).await?;
        }
        // A few nodes (one change) are read one by one; many (a rebuild) in one read of the table.
        let rows = if states.len() > 64 {
            sqlx::query("SELECT host, generation, digest, seq FROM node_states").fetch_all(&mut *tx).await?
        } else {
            let mut rows = Vec::new();
            for (host, _) in states {
                let query = sqlx::query("SELECT host, generation, digest, seq FROM node_states WHERE host = $1").bind(host);
                rows.extend(query.fetch_optional(&mut *tx).await?);
            }
            rows
        };
        let mut stored: BTreeMap<String, (i64, String, i64)> = BTreeMap::new();
        for r in rows {
            stored.insert(r.try_get("host")?, (r.try_get("generation")?, r.try_get("digest")?, r.try_get("seq")?));
        }
        let mut out = Vec::with_capacity(states.len());
        let mut fresh: Vec<(&str, &str)> = Vec::new();
        for (host, digest) in states {
            out.push(match stored.get(host) {
                None => {
                    fresh.push((host, digest));
                    Some(1)
                }
                Some((generation, d, _)) if d == digest => Some(*generation as u64),
                Some((_, _, at)) if seq < *at => None,
                Some((generation, _, _)) => {
                    sqlx::query("UPDATE node_states SET generation = $1, digest = $2, seq = $3 WHERE host = $4")
                        .bind(generation + 1)
                        .bind(digest)
                        .bind(seq)
                        .bind(host)
                        .execute(&mut *tx)
                        .await?;
                    Some(*generation as u64 + 1)
                }
            });
        }
        // New nodes (all of them at a first start) in a few statements, not one each.
        for chunk in fresh.chunks(200) {
            let values: Vec<String> = (0..chunk.len()).map(|i| format!("(${}, 1, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3)).collect();
            let sql = format!("INSERT INTO node_states (host, generation, digest, seq) VALUES {}", values.join(", "));
            let mut query = sqlx::query(&sql);
            for (host, digest) in chunk {
                query = query.bind(*host).bind(*digest).bind(seq);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Every node's row.
    pub async fn node_records(&self) -> Result<BTreeMap<String, NodeRecord>> {
        let rows = sqlx::query("SELECT host, generation, digest, seq, applied, last_error, last_seen, fabric FROM node_states")
            .fetch_all(&self.pool)
            .await?;
        let mut out = BTreeMap::new();
        for r in &rows {
            let host: String = r.try_get("host")?;
            let report = NodeReport {
                applied: r.try_get::<Option<i64>, _>("applied")?.map(|a| a as u64),
                last_error: r.try_get("last_error")?,
                last_seen: r.try_get("last_seen")?,
                fabric: r.try_get::<Option<String>, _>("fabric")?.map(|f| super::from_json(&f)).transpose()?,
            };
            out.insert(
                host.clone(),
                NodeRecord {
                    host,
                    generation: r.try_get::<i64, _>("generation")? as u64,
                    digest: r.try_get("digest")?,
                    seq: r.try_get("seq")?,
                    report,
                },
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
                 last_error = $2, last_seen = $3, fabric = COALESCE($4, fabric) WHERE host = $5",
            )
            .bind(r.applied.map(|a| a as i64))
            .bind(&r.last_error)
            .bind(r.last_seen)
            .bind(r.fabric.as_ref().map(super::to_json).transpose()?)
            .bind(host)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

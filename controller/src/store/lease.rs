//! Leases in the store (the writer lease and any other singleton), and replicas' heartbeats.
//!
//! Times are the database's clock, so replicas on machines whose clocks disagree still agree on
//! who holds a lease. A lease's `token` grows at every change of holder: singleton work checks it
//! before each external write (fencing), so a holder that lost the lease without noticing writes
//! nothing with a stale token.

use sqlx::{AnyConnection, Row};

use super::{Backend, Result, Store};

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    /// Database time (ms since the epoch) when it lapses unless renewed.
    pub expires_ms: i64,
    pub token: i64,
}

/// A replica as it last said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRecord {
    pub id: String,
    pub address: String,
    pub started_at: i64,
    pub heartbeat_ms: i64,
}

/// Fail unless the writer lease still carries fencing token `fence`: a replica that lost the
/// lease (a pause, a partition) writes nothing in the transaction this runs in.
pub(super) async fn check_fence(conn: &mut AnyConnection, fence: i64) -> Result<()> {
    let token: Option<i64> = sqlx::query("SELECT token FROM leases WHERE name = $1")
        .bind(crate::writer::WRITER_LEASE)
        .fetch_optional(&mut *conn)
        .await?
        .map(|r| r.try_get("token"))
        .transpose()?;
    if token != Some(fence) {
        return Err(super::StoreError::Conflict(format!("the writer lease moved on (token {token:?}, ours {fence})")));
    }
    Ok(())
}

impl Store {
    async fn db_now_ms(&self, conn: &mut AnyConnection) -> Result<i64> {
        let sql = match self.backend {
            Backend::Postgres => "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) AS now",
            Backend::Sqlite => "SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) AS now",
        };
        Ok(sqlx::query(sql).fetch_one(&mut *conn).await?.try_get("now")?)
    }

    /// Take or renew lease `name` for `me` for `ttl_ms`; the lease as it stands afterwards
    /// (held by `me` or by someone else whose lease has not lapsed).
    pub async fn acquire_lease(&self, name: &str, me: &str, ttl_ms: i64) -> Result<Lease> {
        let mut tx = self.write().await?;
        let now = self.db_now_ms(&mut tx).await?;
        let inserted =
            sqlx::query("INSERT INTO leases (name, holder, expires_ms, token) VALUES ($1, $2, $3, 1) ON CONFLICT (name) DO NOTHING")
                .bind(name)
                .bind(me)
                .bind(now + ttl_ms)
                .execute(&mut *tx)
                .await?;
        if inserted.rows_affected() == 1 {
            tx.commit().await?;
            return Ok(Lease { holder: me.to_string(), expires_ms: now + ttl_ms, token: 1 });
        }
        let lock = if self.backend == Backend::Postgres { " FOR UPDATE" } else { "" };
        let row = sqlx::query(&format!("SELECT holder, expires_ms, token FROM leases WHERE name = $1{lock}"))
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        let current = Lease { holder: row.try_get("holder")?, expires_ms: row.try_get("expires_ms")?, token: row.try_get("token")? };
        let lease = if current.holder == me {
            Lease { expires_ms: now + ttl_ms, ..current }
        } else if current.expires_ms < now {
            Lease { holder: me.to_string(), expires_ms: now + ttl_ms, token: current.token + 1 }
        } else {
            tx.rollback().await?;
            return Ok(current);
        };
        sqlx::query("UPDATE leases SET holder = $1, expires_ms = $2, token = $3 WHERE name = $4")
            .bind(&lease.holder)
            .bind(lease.expires_ms)
            .bind(lease.token)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(lease)
    }

    /// Give lease `name` up if `me` holds it (a clean stop: another replica takes over at once).
    pub async fn release_lease(&self, name: &str, me: &str) -> Result<()> {
        sqlx::query("UPDATE leases SET expires_ms = 0 WHERE name = $1 AND holder = $2").bind(name).bind(me).execute(&self.pool).await?;
        Ok(())
    }

    /// Lease `name` as stored, and the database's clock.
    pub async fn lease(&self, name: &str) -> Result<(Option<Lease>, i64)> {
        let mut conn = self.pool.acquire().await?;
        let now = self.db_now_ms(&mut conn).await?;
        let row = sqlx::query("SELECT holder, expires_ms, token FROM leases WHERE name = $1").bind(name).fetch_optional(&mut *conn).await?;
        let lease = row
            .map(|r| -> Result<Lease> {
                Ok(Lease { holder: r.try_get("holder")?, expires_ms: r.try_get("expires_ms")?, token: r.try_get("token")? })
            })
            .transpose()?;
        Ok((lease, now))
    }

    /// Record that replica `id` (serving at `address`) is alive.
    pub async fn heartbeat(&self, id: &str, address: &str, started_at: i64) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        let now = self.db_now_ms(&mut conn).await?;
        sqlx::query(
            "INSERT INTO replicas (id, address, started_at, heartbeat_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET address = excluded.address, started_at = excluded.started_at, heartbeat_ms = excluded.heartbeat_ms",
        )
        .bind(id)
        .bind(address)
        .bind(started_at)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        // Replicas silent for a day are forgotten.
        sqlx::query("DELETE FROM replicas WHERE heartbeat_ms < $1").bind(now - 86_400_000).execute(&mut *conn).await?;
        Ok(())
    }

    /// Every replica, newest heartbeat first.
    pub async fn replicas(&self) -> Result<Vec<ReplicaRecord>> {
        let rows = sqlx::query("SELECT id, address, started_at, heartbeat_ms FROM replicas ORDER BY heartbeat_ms DESC, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ReplicaRecord {
                    id: r.try_get("id")?,
                    address: r.try_get("address")?,
                    started_at: r.try_get("started_at")?,
                    heartbeat_ms: r.try_get("heartbeat_ms")?,
                })
            })
            .collect()
    }
}

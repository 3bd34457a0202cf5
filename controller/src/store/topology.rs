//! Stored topology: one document with a revision, carved on read, changed only through a
//! change plan that refuses to move allocated addresses.

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlx::AnyConnection;
use sqlx::{Any, Row, Transaction};
use tessera_topology::change::{Allocated, ChangePlan, HeldBlock, PlacedHost, plan_change};
use tessera_topology::{Layout, TopologySpec};

use super::feed::{ChangeKind, record};
use super::{Result, Store, StoreError, from_json, now, to_json};

/// The topology as stored.
#[derive(Debug, Clone)]
pub struct TopologyRecord {
    /// 0 before any topology was stored.
    pub revision: i64,
    pub spec: TopologySpec,
    pub layout: Arc<Layout>,
}

impl Store {
    pub async fn topology(&self) -> Result<TopologyRecord> {
        let mut conn = self.pool.acquire().await?;
        self.topology_in(&mut conn).await
    }

    pub(super) async fn topology_in(&self, conn: &mut AnyConnection) -> Result<TopologyRecord> {
        let revision: i64 = match sqlx::query("SELECT revision FROM topology WHERE id = 1").fetch_optional(&mut *conn).await? {
            Some(row) => row.try_get("revision")?,
            None => 0,
        };
        // Carving is pure, so a record cached for this revision is as good as a fresh read.
        if let Some(cached) = self.topology.lock().ok().and_then(|c| c.as_ref().filter(|t| t.revision == revision).cloned()) {
            return Ok(cached);
        }
        let spec: TopologySpec = match revision {
            0 => TopologySpec::default(),
            _ => {
                let row = sqlx::query("SELECT spec FROM topology WHERE id = 1").fetch_one(&mut *conn).await?;
                from_json(&row.try_get::<String, _>("spec")?)?
            }
        };
        let layout = Arc::new(Layout::build(&spec).map_err(|e| StoreError::Corrupt(format!("stored topology: {e}")))?);
        let record = TopologyRecord { revision, spec, layout };
        if let Ok(mut cache) = self.topology.lock() {
            *cache = Some(record.clone());
        }
        Ok(record)
    }

    /// Plan replacing the topology by `spec`; unless `dry_run`, apply it when nothing is refused.
    /// Returns the plan and, when applied, the new revision.
    pub async fn apply_topology(&self, spec: TopologySpec, if_match: Option<i64>, dry_run: bool) -> Result<(ChangePlan, Option<i64>)> {
        let new_layout = Arc::new(Layout::build(&spec).map_err(|e| StoreError::invalid(e.field, e.message))?);
        let store = self.clone();
        self.with_retries(move |tx| {
            let (store, spec, new_layout) = (store.clone(), spec.clone(), new_layout.clone());
            Box::pin(async move {
                // Allocations read the layout; none may run while it changes.
                store.lock_groups(tx, None).await?;
                let current = store.topology_in(tx).await?;
                if let Some(sent) = if_match.filter(|sent| *sent != current.revision) {
                    return Err(StoreError::Stale { kind: "topology", name: "topology".into(), current: current.revision, sent });
                }
                let now_allocated = allocated(tx).await?;
                let plan = plan_change(&current.layout, &new_layout, &now_allocated);
                if dry_run || !plan.is_allowed() {
                    return Ok((plan, None));
                }
                let revision = current.revision + 1;
                write_topology(tx, &spec, &new_layout, &plan, revision).await?;
                record(tx, ChangeKind::Topology, "topology", revision).await?;
                Ok((plan, Some(revision)))
            })
        })
        .await
    }
}

async fn allocated(conn: &mut AnyConnection) -> Result<Allocated> {
    let mut out = Allocated::default();
    for row in sqlx::query("SELECT name, group_path, labels FROM hosts").fetch_all(&mut *conn).await? {
        out.hosts.push(PlacedHost {
            name: row.try_get("name")?,
            group: row.try_get("group_path")?,
            labels: from_json(&row.try_get::<String, _>("labels")?)?,
        });
    }
    for row in sqlx::query("SELECT cidr, network, host, tenant, used FROM blocks").fetch_all(&mut *conn).await? {
        out.blocks.push(HeldBlock {
            cidr: parse(&row.try_get::<String, _>("cidr")?)?,
            network: row.try_get("network")?,
            host: row.try_get("host")?,
            tenant: row.try_get("tenant")?,
            used: u64::try_from(row.try_get::<i64, _>("used")?).unwrap_or(0),
        });
    }
    for row in sqlx::query("SELECT address FROM endpoint_addresses").fetch_all(&mut *conn).await? {
        out.addresses.push(parse(&row.try_get::<String, _>("address")?)?);
    }
    Ok(out)
}

fn parse<T: std::str::FromStr>(text: &str) -> Result<T> {
    text.parse().map_err(|_| StoreError::Corrupt(format!("`{text}` in the store does not parse")))
}

async fn write_topology(
    tx: &mut Transaction<'static, Any>,
    spec: &TopologySpec,
    layout: &Layout,
    plan: &ChangePlan,
    revision: i64,
) -> Result<()> {
    let text = to_json(spec)?;
    sqlx::query(
        "INSERT INTO topology (id, revision, spec, updated_at) VALUES (1, $1, $2, $3)
         ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, spec = excluded.spec, updated_at = excluded.updated_at",
    )
    .bind(revision)
    .bind(text)
    .bind(now())
    .execute(&mut **tx)
    .await?;
    for g in &layout.groups {
        sqlx::query("INSERT INTO group_locks (path) VALUES ($1) ON CONFLICT (path) DO NOTHING").bind(&g.path).execute(&mut **tx).await?;
    }
    for m in &plan.host_moves {
        sqlx::query("UPDATE hosts SET group_path = $1, revision = revision + 1 WHERE name = $2")
            .bind(&m.to)
            .bind(&m.host)
            .execute(&mut **tx)
            .await?;
    }
    for g in &layout.groups {
        for h in &g.static_hosts {
            sqlx::query(
                "INSERT INTO hosts (name, group_path, ips, labels, pinned, revision, created_at) VALUES ($1, $2, $3, $4, 1, 1, $5)
                 ON CONFLICT (name) DO UPDATE SET group_path = excluded.group_path, ips = excluded.ips, labels = excluded.labels,
                 pinned = 1, revision = hosts.revision + 1",
            )
            .bind(&h.name)
            .bind(&g.path)
            .bind(to_json(&h.ips)?)
            .bind(to_json(&h.labels)?)
            .bind(now())
            .execute(&mut **tx)
            .await?;
        }
    }
    for cidr in &plan.released_blocks_dropped {
        sqlx::query("DELETE FROM blocks WHERE cidr = $1 AND host IS NULL").bind(cidr.to_string()).execute(&mut **tx).await?;
    }
    // Re-file every block under the leaf group that now contains it.
    let hosts: BTreeMap<String, String> = sqlx::query("SELECT name, group_path FROM hosts")
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|r| Ok((r.try_get("name")?, r.try_get("group_path")?)))
        .collect::<Result<_>>()?;
    let rows = sqlx::query("SELECT cidr, network, host, group_path FROM blocks").fetch_all(&mut **tx).await?;
    for row in rows {
        let cidr: ipnet::IpNet = parse(&row.try_get::<String, _>("cidr")?)?;
        let network: String = row.try_get("network")?;
        let host: Option<String> = row.try_get("host")?;
        let old_path: String = row.try_get("group_path")?;
        let new_path = match host.and_then(|h| hosts.get(&h).cloned()) {
            Some(path) => Some(path),
            None => layout.network_by_name(&network).and_then(|(net_id, _)| {
                layout.leaves().find(|g| g.cidrs.get(&net_id).is_some_and(|c| c.contains(&cidr))).map(|g| g.path.clone())
            }),
        };
        match new_path {
            Some(path) if path != old_path => {
                sqlx::query("UPDATE blocks SET group_path = $1 WHERE cidr = $2")
                    .bind(path)
                    .bind(cidr.to_string())
                    .execute(&mut **tx)
                    .await?;
            }
            Some(_) => {}
            None => {
                sqlx::query("DELETE FROM blocks WHERE cidr = $1 AND host IS NULL").bind(cidr.to_string()).execute(&mut **tx).await?;
            }
        }
    }
    Ok(())
}

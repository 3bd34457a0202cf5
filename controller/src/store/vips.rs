//! Virtual IPs: an address that one healthy host of those allowed holds at a time. The holder
//! is chosen by the writer-lease holder (`crate::vips`) and written here under its fencing token.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use super::feed::{ChangeKind, record};
use super::{Result, Store, StoreError, from_json, now, to_json};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipRecord {
    pub address: IpAddr,
    /// Hosts allowed to hold it (empty when a group says who may).
    pub hosts: Vec<String>,
    /// A group path: every host under it may hold it.
    pub group: Option<String>,
    pub holder: Option<String>,
    pub revision: i64,
}

impl VipRecord {
    /// May `host`, placed in group `group_path`, hold this VIP?
    pub fn allows(&self, host: &str, group_path: &str) -> bool {
        match &self.group {
            Some(g) => group_path == g || group_path.strip_prefix(g.as_str()).is_some_and(|rest| rest.starts_with('/')),
            None => self.hosts.iter().any(|h| h == host),
        }
    }
}

fn vip_from(row: &sqlx::any::AnyRow) -> Result<VipRecord> {
    let address: String = row.try_get("address")?;
    Ok(VipRecord {
        address: address.parse().map_err(|_| StoreError::Corrupt(format!("stored VIP `{address}` is not an address")))?,
        hosts: from_json(&row.try_get::<String, _>("hosts")?)?,
        group: row.try_get("group_path")?,
        holder: row.try_get("holder")?,
        revision: row.try_get("revision")?,
    })
}

const COLUMNS: &str = "SELECT address, hosts, group_path, holder, revision FROM vips";

async fn vip_in(conn: &mut AnyConnection, address: &IpAddr) -> Result<VipRecord> {
    let row = sqlx::query(&format!("{COLUMNS} WHERE address = $1")).bind(address.to_string()).fetch_optional(&mut *conn).await?;
    vip_from(&row.ok_or_else(|| StoreError::NotFound { kind: "vip", name: address.to_string() })?)
}

/// A host leaves service (drained, removed): the VIPs it held have no holder until the lease
/// holder places them again. Written with the host's own change, which rebuilds every node.
pub(super) async fn release_held_by(conn: &mut AnyConnection, host: &str) -> Result<()> {
    sqlx::query("UPDATE vips SET holder = NULL, revision = revision + 1 WHERE holder = $1").bind(host).execute(&mut *conn).await?;
    Ok(())
}

impl Store {
    pub async fn vips(&self) -> Result<Vec<VipRecord>> {
        let rows = sqlx::query(&format!("{COLUMNS} ORDER BY address")).fetch_all(&self.pool).await?;
        rows.iter().map(vip_from).collect()
    }

    pub async fn vip(&self, address: &IpAddr) -> Result<VipRecord> {
        let mut conn = self.pool.acquire().await?;
        vip_in(&mut conn, address).await
    }

    /// Define a VIP; the caller checked the address and who may hold it (`ops`). A group must
    /// exist in the topology; hosts may be registered later.
    pub async fn create_vip(&self, address: IpAddr, hosts: Vec<String>, group: Option<String>) -> Result<VipRecord> {
        let store = self.clone();
        self.with_retries(move |tx| {
            let (store, hosts, group) = (store.clone(), hosts.clone(), group.clone());
            Box::pin(async move {
                if sqlx::query("SELECT 1 FROM vips WHERE address = $1").bind(address.to_string()).fetch_optional(&mut **tx).await?.is_some()
                {
                    return Err(StoreError::Conflict(format!("VIP {address} already exists")));
                }
                let topology = store.topology_in(tx).await?;
                if let Some(net) = topology.layout.networks.iter().find(|n| n.cidr.contains(&address)) {
                    return Err(StoreError::invalid(
                        "address",
                        format!("{address} lies in network `{}` ({}), whose addresses go to endpoints", net.name, net.cidr),
                    ));
                }
                if let Some(g) = group.as_deref().filter(|g| topology.layout.group_by_path(g).is_none()) {
                    return Err(StoreError::invalid("group", format!("no group `{g}` in the topology")));
                }
                sqlx::query("INSERT INTO vips (address, hosts, group_path, holder, revision, created_at) VALUES ($1, $2, $3, NULL, 1, $4)")
                    .bind(address.to_string())
                    .bind(to_json(&hosts)?)
                    .bind(&group)
                    .bind(now())
                    .execute(&mut **tx)
                    .await?;
                record(tx, ChangeKind::Vip, &address.to_string(), 1).await?;
                vip_in(tx, &address).await
            })
        })
        .await
    }

    pub async fn delete_vip(&self, address: IpAddr, if_match: Option<i64>) -> Result<()> {
        self.with_retries(move |tx| {
            Box::pin(async move {
                let vip = vip_in(tx, &address).await?;
                if let Some(sent) = if_match.filter(|s| *s != vip.revision) {
                    return Err(StoreError::Stale { kind: "vip", name: address.to_string(), current: vip.revision, sent });
                }
                sqlx::query("DELETE FROM vips WHERE address = $1").bind(address.to_string()).execute(&mut **tx).await?;
                record(tx, ChangeKind::Vip, &address.to_string(), vip.revision + 1).await?;
                Ok(())
            })
        })
        .await
    }

    /// Move VIPs to new holders, each if it is still at the revision given, all in one
    /// transaction, and only while the writer lease carries fencing token `fence` (a replica
    /// that lost the lease writes nothing). Returns the VIPs as moved.
    pub async fn move_vips(&self, moves: Vec<(IpAddr, Option<String>, i64)>, fence: i64) -> Result<Vec<VipRecord>> {
        self.with_retries(move |tx| {
            let moves = moves.clone();
            Box::pin(async move {
                super::lease::check_fence(tx, fence).await?;
                let mut out = Vec::new();
                for (address, holder, revision) in moves {
                    let vip = vip_in(tx, &address).await?;
                    if vip.revision != revision {
                        return Err(StoreError::Stale { kind: "vip", name: address.to_string(), current: vip.revision, sent: revision });
                    }
                    sqlx::query("UPDATE vips SET holder = $1, revision = revision + 1 WHERE address = $2")
                        .bind(&holder)
                        .bind(address.to_string())
                        .execute(&mut **tx)
                        .await?;
                    record(tx, ChangeKind::Vip, &address.to_string(), revision + 1).await?;
                    out.push(VipRecord { holder, revision: revision + 1, ..vip });
                }
                Ok(out)
            })
        })
        .await
    }
}

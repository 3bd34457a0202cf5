//! Stored hosts, tenants and segments.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use sqlx::Row;
use tessera_topology::spec::{validate_host_ips, validate_name};
use tessera_topology::{Labels, place_host};

use super::feed::{ChangeKind, record};
use super::{Result, Store, StoreError, from_json, now, to_json};

/// A host as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub name: String,
    pub group: String,
    pub ips: Vec<IpAddr>,
    pub labels: Labels,
    /// Placed by the topology document rather than by labels.
    pub pinned: bool,
    /// Drained: announces nothing and holds no VIP (its pods stay).
    pub drained: bool,
    /// The EC2 instance or interface VPC routes point at when this host is a gateway.
    pub cloud_target: Option<String>,
    pub revision: i64,
    #[serde(default)]
    pub origin: Origin,
}

#[cfg(test)]
impl HostRecord {
    /// A host of `group` with nothing else set, for tests.
    pub fn bare(name: &str, group: &str, drained: bool) -> HostRecord {
        HostRecord {
            name: name.into(),
            group: group.into(),
            ips: Vec::new(),
            labels: Labels::new(),
            pinned: false,
            drained,
            cloud_target: None,
            revision: 1,
            origin: Origin::Api,
        }
    }
}

/// A host to register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewHost {
    pub name: String,
    pub ips: Vec<IpAddr>,
    pub labels: Labels,
    #[serde(default)]
    pub cloud_target: Option<String>,
    /// Never from a request body: set by whoever registers the host.
    #[serde(skip)]
    pub origin: Origin,
}

/// Who made a host or tenant, and so who may change it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// REST, the CLI, the topology document.
    #[default]
    Api,
    /// The Kubernetes operator (a Node, a Namespace): read-only through REST.
    Kubernetes,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Api => "api",
            Origin::Kubernetes => "kubernetes",
        }
    }

    pub(super) fn parse(text: &str) -> Result<Origin> {
        match text {
            "api" => Ok(Origin::Api),
            "kubernetes" => Ok(Origin::Kubernetes),
            other => Err(StoreError::Corrupt(format!("origin `{other}`"))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub name: String,
    pub labels: Labels,
    pub revision: i64,
    #[serde(default)]
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRecord {
    pub tenant: String,
    pub name: String,
    pub labels: Labels,
    pub revision: i64,
}

/// Every tenant has this segment from its creation on.
pub use tessera_policy::model::DEFAULT_SEGMENT;

fn host_from(row: &sqlx::any::AnyRow) -> Result<HostRecord> {
    Ok(HostRecord {
        name: row.try_get("name")?,
        group: row.try_get("group_path")?,
        ips: from_json(&row.try_get::<String, _>("ips")?)?,
        labels: from_json(&row.try_get::<String, _>("labels")?)?,
        pinned: row.try_get::<i64, _>("pinned")? != 0,
        drained: row.try_get::<i64, _>("drained")? != 0,
        cloud_target: row.try_get("cloud_target")?,
        revision: row.try_get("revision")?,
        origin: Origin::parse(&row.try_get::<String, _>("origin")?)?,
    })
}

impl Store {
    pub async fn hosts(&self) -> Result<Vec<HostRecord>> {
        let rows =
            sqlx::query("SELECT name, group_path, ips, labels, pinned, drained, cloud_target, revision, origin FROM hosts ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(host_from).collect()
    }

    pub async fn host(&self, name: &str) -> Result<HostRecord> {
        let mut conn = self.pool.acquire().await?;
        host_in(&mut conn, name).await
    }

    /// Register a host, placing it by its labels (or by the document if it is pinned there).
    pub async fn create_host(&self, host: NewHost) -> Result<HostRecord> {
        validate_name("name", &host.name).map_err(|e| StoreError::invalid(e.field, e.message))?;
        validate_host_ips("ips", &host.ips).map_err(|e| StoreError::invalid(e.field, e.message))?;
        let store = self.clone();
        self.with_retries(move |tx| {
            let (store, host) = (store.clone(), host.clone());
            Box::pin(async move {
                if sqlx::query("SELECT 1 FROM hosts WHERE name = $1").bind(&host.name).fetch_optional(&mut **tx).await?.is_some() {
                    return Err(StoreError::Conflict(format!("host `{}` already exists", host.name)));
                }
                unique_host_ips(tx, &host.name, &host.ips).await?;
                let topology = store.topology_in(tx).await?;
                let layout = &topology.layout;
                let group = place(tx, layout, &host.name, &host.labels).await?;
                let pinned = layout.static_host(&host.name).is_some();
                sqlx::query(
                    "INSERT INTO hosts (name, group_path, ips, labels, pinned, cloud_target, revision, created_at, origin) VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $8)",
                )
                .bind(&host.name)
                .bind(&group)
                .bind(to_json(&host.ips)?)
                .bind(to_json(&host.labels)?)
                .bind(i64::from(pinned))
                .bind(&host.cloud_target)
                .bind(now())
                .bind(host.origin.as_str())
                .execute(&mut **tx)
                .await?;
                record(tx, ChangeKind::Host, &host.name, 1).await?;
                host_in(tx, &host.name).await
            })
        })
        .await
    }

    /// Change a host's underlay IPs and labels. A host whose new labels no longer fit its group
    /// moves to a group they fit, unless it holds blocks (its addresses would have to move).
    pub async fn update_host(
        &self,
        name: &str,
        ips: Vec<IpAddr>,
        labels: Labels,
        cloud_target: Option<String>,
        if_match: Option<i64>,
    ) -> Result<HostRecord> {
        validate_host_ips("ips", &ips).map_err(|e| StoreError::invalid(e.field, e.message))?;
        let name = name.to_string();
        let store = self.clone();
        self.with_retries(move |tx| {
            let (name, ips, labels, store, cloud_target) = (name.clone(), ips.clone(), labels.clone(), store.clone(), cloud_target.clone());
            Box::pin(async move {
                let host = host_in(tx, &name).await?;
                if let Some(sent) = if_match.filter(|s| *s != host.revision) {
                    return Err(StoreError::Stale { kind: "host", name, current: host.revision, sent });
                }
                store.lock_groups(tx, Some(&host.group)).await?;
                unique_host_ips(tx, &name, &ips).await?;
                let topology = store.topology_in(tx).await?;
                let layout = &topology.layout;
                let fits = host.pinned || layout.group_by_path(&host.group).is_some_and(|g| g.required.iter().all(|(k, v)| labels.get(k) == Some(v)));
                let group = if fits {
                    host.group.clone()
                } else {
                    let held = sqlx::query("SELECT cidr FROM blocks WHERE host = $1 LIMIT 1").bind(&name).fetch_optional(&mut **tx).await?;
                    if held.is_some() {
                        return Err(StoreError::invalid(
                            "labels",
                            format!("host `{name}` holds blocks in group {}, whose labels it would no longer carry; release its endpoints first", host.group),
                        ));
                    }
                    place(tx, layout, &name, &labels).await?
                };
                sqlx::query("UPDATE hosts SET ips = $1, labels = $2, group_path = $3, cloud_target = $4, revision = revision + 1 WHERE name = $5")
                    .bind(to_json(&ips)?)
                    .bind(to_json(&labels)?)
                    .bind(&group)
                    .bind(&cloud_target)
                    .bind(&name)
                    .execute(&mut **tx)
                    .await?;
                record(tx, ChangeKind::Host, &name, host.revision + 1).await?;
                host_in(tx, &name).await
            })
        })
        .await
    }

    /// Drain a host (or bring it back): a drained host withdraws its announcements and gives
    /// up its VIPs; its pods and policies stay.
    pub async fn set_drained(&self, name: &str, drained: bool) -> Result<HostRecord> {
        let name = name.to_string();
        self.with_retries(move |tx| {
            let name = name.clone();
            Box::pin(async move {
                let host = host_in(tx, &name).await?;
                if host.drained == drained {
                    return Ok(host);
                }
                sqlx::query("UPDATE hosts SET drained = $1, revision = revision + 1 WHERE name = $2")
                    .bind(i64::from(drained))
                    .bind(&name)
                    .execute(&mut **tx)
                    .await?;
                if drained {
                    super::vips::release_held_by(tx, &name).await?;
                }
                record(tx, ChangeKind::Host, &name, host.revision + 1).await?;
                host_in(tx, &name).await
            })
        })
        .await
    }

    /// Remove a host, releasing its endpoints and blocks.
    pub async fn delete_host(&self, name: &str, if_match: Option<i64>) -> Result<()> {
        let name = name.to_string();
        let store = self.clone();
        self.with_retries(move |tx| {
            let (name, store) = (name.clone(), store.clone());
            Box::pin(async move {
                let host = host_in(tx, &name).await?;
                store.lock_groups(tx, Some(&host.group)).await?;
                if let Some(sent) = if_match.filter(|s| *s != host.revision) {
                    return Err(StoreError::Stale { kind: "host", name, current: host.revision, sent });
                }
                sqlx::query("DELETE FROM endpoint_addresses WHERE endpoint IN (SELECT id FROM endpoints WHERE host = $1)")
                    .bind(&name)
                    .execute(&mut **tx)
                    .await?;
                sqlx::query("DELETE FROM endpoints WHERE host = $1").bind(&name).execute(&mut **tx).await?;
                sqlx::query("UPDATE blocks SET host = NULL, tenant = NULL, segment = NULL, used = 0 WHERE host = $1")
                    .bind(&name)
                    .execute(&mut **tx)
                    .await?;
                super::vips::release_held_by(tx, &name).await?;
                sqlx::query("DELETE FROM hosts WHERE name = $1").bind(&name).execute(&mut **tx).await?;
                // Its agent's tokens die with it: a host re-created under the same name starts clean.
                sqlx::query("DELETE FROM tokens WHERE node = $1").bind(&name).execute(&mut **tx).await?;
                record(tx, ChangeKind::Host, &name, host.revision + 1).await?;
                Ok(())
            })
        })
        .await
    }

    pub async fn tenants(&self) -> Result<Vec<TenantRecord>> {
        let rows = sqlx::query("SELECT name, labels, revision, origin FROM tenants ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(TenantRecord {
                    name: r.try_get("name")?,
                    labels: from_json(&r.try_get::<String, _>("labels")?)?,
                    revision: r.try_get("revision")?,
                    origin: Origin::parse(&r.try_get::<String, _>("origin")?)?,
                })
            })
            .collect()
    }

    pub async fn tenant(&self, name: &str) -> Result<TenantRecord> {
        let row =
            sqlx::query("SELECT name, labels, revision, origin FROM tenants WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        let row = row.ok_or_else(|| StoreError::NotFound { kind: "tenant", name: name.into() })?;
        Ok(TenantRecord {
            name: row.try_get("name")?,
            labels: from_json(&row.try_get::<String, _>("labels")?)?,
            revision: row.try_get("revision")?,
            origin: Origin::parse(&row.try_get::<String, _>("origin")?)?,
        })
    }

    /// Create a tenant and its `default` segment.
    pub async fn create_tenant(&self, name: &str, labels: Labels) -> Result<TenantRecord> {
        self.create_tenant_from(name, labels, Origin::Api).await
    }

    /// Create a tenant made by `origin`.
    pub async fn create_tenant_from(&self, name: &str, labels: Labels, origin: Origin) -> Result<TenantRecord> {
        validate_name("name", name).map_err(|e| StoreError::invalid(e.field, e.message))?;
        let name = name.to_string();
        self.with_retries(move |tx| {
            let (name, labels) = (name.clone(), labels.clone());
            Box::pin(async move {
                if sqlx::query("SELECT 1 FROM tenants WHERE name = $1").bind(&name).fetch_optional(&mut **tx).await?.is_some() {
                    return Err(StoreError::Conflict(format!("tenant `{name}` already exists")));
                }
                sqlx::query("INSERT INTO tenants (name, labels, revision, created_at, origin) VALUES ($1, $2, 1, $3, $4)")
                    .bind(&name)
                    .bind(to_json(&labels)?)
                    .bind(now())
                    .bind(origin.as_str())
                    .execute(&mut **tx)
                    .await?;
                sqlx::query("INSERT INTO segments (tenant, name, labels, revision, created_at) VALUES ($1, $2, '{}', 1, $3)")
                    .bind(&name)
                    .bind(DEFAULT_SEGMENT)
                    .bind(now())
                    .execute(&mut **tx)
                    .await?;
                record(tx, ChangeKind::Tenant, &name, 1).await?;
                Ok(TenantRecord { name, labels, revision: 1, origin })
            })
        })
        .await
    }

    /// Replace a tenant's labels.
    pub async fn update_tenant(&self, name: &str, labels: Labels, if_match: Option<i64>) -> Result<TenantRecord> {
        let name = name.to_string();
        self.with_retries(move |tx| {
            let (name, labels) = (name.clone(), labels.clone());
            Box::pin(async move {
                let query = sqlx::query("SELECT revision FROM tenants WHERE name = $1").bind(&name);
                let current = checked_revision(tx, "tenant", &name, query, if_match).await?;
                sqlx::query("UPDATE tenants SET labels = $1, revision = revision + 1 WHERE name = $2")
                    .bind(to_json(&labels)?)
                    .bind(&name)
                    .execute(&mut **tx)
                    .await?;
                record(tx, ChangeKind::Tenant, &name, current + 1).await?;
                let origin: String =
                    sqlx::query("SELECT origin FROM tenants WHERE name = $1").bind(&name).fetch_one(&mut **tx).await?.try_get("origin")?;
                Ok(TenantRecord { name, labels, revision: current + 1, origin: Origin::parse(&origin)? })
            })
        })
        .await
    }

    /// Delete a tenant that has no endpoints left.
    pub async fn delete_tenant(&self, name: &str, if_match: Option<i64>) -> Result<()> {
        let name = name.to_string();
        self.with_retries(move |tx| {
            let name = name.clone();
            Box::pin(async move {
                let query = sqlx::query("SELECT revision FROM tenants WHERE name = $1").bind(&name);
                checked_revision(tx, "tenant", &name, query, if_match).await?;
                if sqlx::query("SELECT 1 FROM endpoints WHERE tenant = $1 LIMIT 1").bind(&name).fetch_optional(&mut **tx).await?.is_some() {
                    return Err(StoreError::Conflict(format!("tenant `{name}` still has endpoints; delete them first")));
                }
                sqlx::query("DELETE FROM segments WHERE tenant = $1").bind(&name).execute(&mut **tx).await?;
                sqlx::query("DELETE FROM tenants WHERE name = $1").bind(&name).execute(&mut **tx).await?;
                // Its tokens die with it: a tenant re-created under the same name starts clean.
                sqlx::query("DELETE FROM tokens WHERE tenant = $1").bind(&name).execute(&mut **tx).await?;
                record(tx, ChangeKind::Tenant, &name, 0).await?;
                Ok(())
            })
        })
        .await
    }

    pub async fn segments(&self, tenant: &str) -> Result<Vec<SegmentRecord>> {
        self.tenant(tenant).await?;
        let rows = sqlx::query("SELECT tenant, name, labels, revision FROM segments WHERE tenant = $1 ORDER BY name")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(segment_from).collect()
    }

    pub async fn segment(&self, tenant: &str, name: &str) -> Result<SegmentRecord> {
        let row = sqlx::query("SELECT tenant, name, labels, revision FROM segments WHERE tenant = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        segment_from(&row.ok_or_else(|| StoreError::NotFound { kind: "segment", name: format!("{tenant}/{name}") })?)
    }

    pub async fn create_segment(&self, tenant: &str, name: &str, labels: Labels) -> Result<SegmentRecord> {
        validate_name("name", name).map_err(|e| StoreError::invalid(e.field, e.message))?;
        let (tenant, name) = (tenant.to_string(), name.to_string());
        self.with_retries(move |tx| {
            let (tenant, name, labels) = (tenant.clone(), name.clone(), labels.clone());
            Box::pin(async move {
                if sqlx::query("SELECT 1 FROM tenants WHERE name = $1").bind(&tenant).fetch_optional(&mut **tx).await?.is_none() {
                    return Err(StoreError::NotFound { kind: "tenant", name: tenant });
                }
                let exists = sqlx::query("SELECT 1 FROM segments WHERE tenant = $1 AND name = $2")
                    .bind(&tenant)
                    .bind(&name)
                    .fetch_optional(&mut **tx)
                    .await?;
                if exists.is_some() {
                    return Err(StoreError::Conflict(format!("segment `{tenant}/{name}` already exists")));
                }
                sqlx::query("INSERT INTO segments (tenant, name, labels, revision, created_at) VALUES ($1, $2, $3, 1, $4)")
                    .bind(&tenant)
                    .bind(&name)
                    .bind(to_json(&labels)?)
                    .bind(now())
                    .execute(&mut **tx)
                    .await?;
                record(tx, ChangeKind::Segment, &format!("{tenant}/{name}"), 1).await?;
                Ok(SegmentRecord { tenant, name, labels, revision: 1 })
            })
        })
        .await
    }

    /// Replace a segment's labels.
    pub async fn update_segment(&self, tenant: &str, name: &str, labels: Labels, if_match: Option<i64>) -> Result<SegmentRecord> {
        let (tenant, name) = (tenant.to_string(), name.to_string());
        self.with_retries(move |tx| {
            let (tenant, name, labels) = (tenant.clone(), name.clone(), labels.clone());
            Box::pin(async move {
                let full = format!("{tenant}/{name}");
                let query = sqlx::query("SELECT revision FROM segments WHERE tenant = $1 AND name = $2").bind(&tenant).bind(&name);
                let current = checked_revision(tx, "segment", &full, query, if_match).await?;
                sqlx::query("UPDATE segments SET labels = $1, revision = revision + 1 WHERE tenant = $2 AND name = $3")
                    .bind(to_json(&labels)?)
                    .bind(&tenant)
                    .bind(&name)
                    .execute(&mut **tx)
                    .await?;
                record(tx, ChangeKind::Segment, &full, current + 1).await?;
                Ok(SegmentRecord { tenant, name, labels, revision: current + 1 })
            })
        })
        .await
    }

    pub async fn delete_segment(&self, tenant: &str, name: &str, if_match: Option<i64>) -> Result<()> {
        let (tenant, name) = (tenant.to_string(), name.to_string());
        self.with_retries(move |tx| {
            let (tenant, name) = (tenant.clone(), name.clone());
            Box::pin(async move {
                let full = format!("{tenant}/{name}");
                let query = sqlx::query("SELECT revision FROM segments WHERE tenant = $1 AND name = $2").bind(&tenant).bind(&name);
                checked_revision(tx, "segment", &full, query, if_match).await?;
                if name == DEFAULT_SEGMENT {
                    // The CNI plugin and the operator place pods here when they name no segment.
                    return Err(StoreError::invalid(
                        "segment",
                        format!("`{full}` is every tenant's default segment and cannot be deleted"),
                    ));
                }
                let used = sqlx::query("SELECT 1 FROM endpoints WHERE tenant = $1 AND segment = $2 LIMIT 1")
                    .bind(&tenant)
                    .bind(&name)
                    .fetch_optional(&mut **tx)
                    .await?;
                if used.is_some() {
                    return Err(StoreError::Conflict(format!("segment `{full}` still has endpoints; delete them first")));
                }
                sqlx::query("DELETE FROM segments WHERE tenant = $1 AND name = $2").bind(&tenant).bind(&name).execute(&mut **tx).await?;
                record(tx, ChangeKind::Segment, &full, 0).await?;
                Ok(())
            })
        })
        .await
    }
}

/// No two hosts share an underlay address: it is their route gateway.
async fn unique_host_ips(conn: &mut AnyConnection, name: &str, ips: &[IpAddr]) -> Result<()> {
    let rows = sqlx::query("SELECT name, ips FROM hosts WHERE name <> $1").bind(name).fetch_all(&mut *conn).await?;
    for r in &rows {
        let theirs: Vec<IpAddr> = from_json(&r.try_get::<String, _>("ips")?)?;
        if let Some((i, ip)) = ips.iter().enumerate().find(|(_, ip)| theirs.contains(ip)) {
            let other: String = r.try_get("name")?;
            return Err(StoreError::invalid(format!("ips[{i}]"), format!("{ip} is already the address of host `{other}`")));
        }
    }
    Ok(())
}

fn segment_from(r: &sqlx::any::AnyRow) -> Result<SegmentRecord> {
    Ok(SegmentRecord {
        tenant: r.try_get("tenant")?,
        name: r.try_get("name")?,
        labels: from_json(&r.try_get::<String, _>("labels")?)?,
        revision: r.try_get("revision")?,
    })
}

/// The leaf group for a host by the placement rule, counting every other host where it is now.
async fn place(conn: &mut AnyConnection, layout: &tessera_topology::Layout, name: &str, labels: &Labels) -> Result<String> {
    let counts: BTreeMap<String, i64> = sqlx::query("SELECT group_path, COUNT(*) AS n FROM hosts WHERE name <> $1 GROUP BY group_path")
        .bind(name)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|r| Ok((r.try_get("group_path")?, r.try_get("n")?)))
        .collect::<Result<_>>()?;
    let group = place_host(layout, name, labels, |g| counts.get(&layout.groups[g].path).copied().unwrap_or(0) as usize)
        .map_err(|e| StoreError::invalid("labels", e.to_string()))?;
    Ok(layout.groups[group].path.clone())
}

/// The current revision of the row `query` selects, checked against `If-Match`.
pub(super) async fn checked_revision<'q>(
    conn: &mut AnyConnection,
    kind: &'static str,
    name: &str,
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    if_match: Option<i64>,
) -> Result<i64> {
    let row = query.fetch_optional(&mut *conn).await?;
    let current: i64 = row.ok_or_else(|| StoreError::NotFound { kind, name: name.to_string() })?.try_get("revision")?;
    match if_match {
        Some(sent) if sent != current => Err(StoreError::Stale { kind, name: name.to_string(), current, sent }),
        _ => Ok(current),
    }
}

pub(super) async fn host_in(conn: &mut AnyConnection, name: &str) -> Result<HostRecord> {
    let row =
        sqlx::query("SELECT name, group_path, ips, labels, pinned, drained, cloud_target, revision, origin FROM hosts WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    host_from(&row.ok_or_else(|| StoreError::NotFound { kind: "host", name: name.into() })?)
}

//! Stored endpoints and blocks: allocation and release of endpoint addresses.
//!
//! An allocation is one transaction: lock the host's group, load that group's blocks, let the
//! pure `tessera_topology::ipam` decide, write. One address per family the host's group has a
//! network for (and the tenant may use). Allocating an existing endpoint id again returns it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use sqlx::Row;
use tessera_topology::cidr::Family;
use tessera_topology::ipam::{BlockChoice, BlockOwner, BlockState, capacity, choose_address, choose_block};
use tessera_topology::{Labels, Network};

use super::feed::{ChangeKind, record};
use super::inventory::{checked_revision, host_in};
use super::{Result, Store, StoreError, from_json, now, to_json};
use tessera_policy::model::NamedPort;

/// An endpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub id: String,
    pub tenant: String,
    pub segment: String,
    pub host: String,
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
    pub revision: i64,
    /// Container ports by name (from its pod): what policies' named ports resolve to.
    #[serde(default)]
    pub named_ports: Vec<NamedPort>,
}

/// An endpoint to allocate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEndpoint {
    pub id: String,
    pub tenant: String,
    pub segment: String,
    pub host: String,
    pub labels: Labels,
}

/// A block as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRecord {
    pub cidr: IpNet,
    pub network: String,
    pub group: String,
    pub host: Option<String>,
    pub tenant: Option<String>,
    pub segment: Option<String>,
    pub used: i64,
    pub capacity: i64,
}

/// Filters for listing blocks.
#[derive(Debug, Clone, Default)]
pub struct BlockFilter<'a> {
    pub host: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub segment: Option<&'a str>,
}

impl Store {
    /// Allocate addresses for a new endpoint, or return it unchanged if it exists with the same
    /// owner (`false` in the second field when it already existed).
    pub async fn allocate(&self, new: NewEndpoint) -> Result<(EndpointRecord, bool)> {
        validate_endpoint_id(&new.id)?;
        let store = self.clone();
        self.with_retries(move |tx| {
            let (store, new) = (store.clone(), new.clone());
            Box::pin(async move {
                if let Some(existing) = endpoint_in(tx, &new.id).await? {
                    if (existing.tenant.as_str(), existing.segment.as_str(), existing.host.as_str())
                        == (new.tenant.as_str(), new.segment.as_str(), new.host.as_str())
                    {
                        return Ok((existing, false));
                    }
                    // Where it lives is for those who may read it; the API adds it for them.
                    return Err(StoreError::Conflict(format!("endpoint `{}` already exists", new.id)));
                }
                let host = host_in(tx, &new.host).await.map_err(|e| match e {
                    StoreError::NotFound { .. } => StoreError::invalid("host", format!("host `{}` is not registered", new.host)),
                    other => other,
                })?;
                let segment = sqlx::query("SELECT 1 FROM segments WHERE tenant = $1 AND name = $2")
                    .bind(&new.tenant)
                    .bind(&new.segment)
                    .fetch_optional(&mut **tx)
                    .await?;
                if segment.is_none() {
                    let tenant = sqlx::query("SELECT 1 FROM tenants WHERE name = $1").bind(&new.tenant).fetch_optional(&mut **tx).await?;
                    return Err(match tenant {
                        None => StoreError::invalid("tenant", format!("tenant `{}` does not exist", new.tenant)),
                        Some(_) => {
                            StoreError::invalid("segment", format!("segment `{}` does not exist in tenant `{}`", new.segment, new.tenant))
                        }
                    });
                }
                let topology = store.topology_in(tx).await?;
                let layout = topology.layout.clone();
                let group = layout
                    .group_by_path(&host.group)
                    .ok_or_else(|| StoreError::Corrupt(format!("host `{}` is in unknown group {}", host.name, host.group)))?;
                // First network of each family that the tenant may use.
                let mut networks: BTreeMap<Family, (&Network, IpNet)> = BTreeMap::new();
                for (&net_id, &cidr) in &group.cidrs {
                    let network = &layout.networks[net_id];
                    if network.allows(&new.tenant) {
                        networks.entry(network.family).or_insert((network, cidr));
                    }
                }
                if networks.is_empty() {
                    return Err(StoreError::invalid(
                        "tenant",
                        format!("tenant `{}` may not draw from any network of group {}", new.tenant, group.path),
                    ));
                }
                store.lock_groups(tx, Some(&group.path)).await?;
                sqlx::query(
                    "INSERT INTO endpoints (id, tenant, segment, host, labels, revision, created_at) VALUES ($1, $2, $3, $4, $5, 1, $6)",
                )
                .bind(&new.id)
                .bind(&new.tenant)
                .bind(&new.segment)
                .bind(&new.host)
                .bind(to_json(&new.labels)?)
                .bind(now())
                .execute(&mut **tx)
                .await?;
                let owner = BlockOwner { host: new.host.clone(), tenant: new.tenant.clone(), segment: new.segment.clone() };
                let mut ips = Vec::new();
                for (network, cidr) in networks.values() {
                    ips.push(allocate_in(tx, &group.path, network, *cidr, &owner, &new.id).await?);
                }
                record(tx, ChangeKind::Endpoint, &new.id, 1).await?;
                Ok((
                    EndpointRecord {
                        id: new.id,
                        tenant: new.tenant,
                        segment: new.segment,
                        host: new.host,
                        labels: new.labels,
                        ips,
                        revision: 1,
                        named_ports: Vec::new(),
                    },
                    true,
                ))
            })
        })
        .await
    }

    /// Release an endpoint's addresses. Releasing an unknown id does nothing.
    pub async fn release(&self, id: &str) -> Result<Option<EndpointRecord>> {
        let id = id.to_string();
        let store = self.clone();
        self.with_retries(move |tx| {
            let (id, store) = (id.clone(), store.clone());
            Box::pin(async move {
                let Some(existing) = endpoint_in(tx, &id).await? else { return Ok(None) };
                let group: Option<String> = sqlx::query("SELECT group_path FROM hosts WHERE name = $1")
                    .bind(&existing.host)
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|r| r.try_get("group_path"))
                    .transpose()?;
                store.lock_groups(tx, group.as_deref()).await?;
                let blocks: Vec<String> = sqlx::query("SELECT block FROM endpoint_addresses WHERE endpoint = $1")
                    .bind(&id)
                    .fetch_all(&mut **tx)
                    .await?
                    .iter()
                    .map(|r| r.try_get("block"))
                    .collect::<Result<_, _>>()?;
                sqlx::query("DELETE FROM endpoint_addresses WHERE endpoint = $1").bind(&id).execute(&mut **tx).await?;
                sqlx::query("DELETE FROM endpoints WHERE id = $1").bind(&id).execute(&mut **tx).await?;
                for block in blocks {
                    sqlx::query("UPDATE blocks SET used = used - 1 WHERE cidr = $1").bind(&block).execute(&mut **tx).await?;
                    // An emptied block is released so any owner in the group can take it.
                    sqlx::query("UPDATE blocks SET host = NULL, tenant = NULL, segment = NULL WHERE cidr = $1 AND used = 0")
                        .bind(&block)
                        .execute(&mut **tx)
                        .await?;
                }
                record(tx, ChangeKind::Endpoint, &id, 0).await?;
                Ok(Some(existing))
            })
        })
        .await
    }

    /// Replace an endpoint's labels (its addresses and placement never change).
    pub async fn update_endpoint_labels(&self, id: &str, labels: Labels, if_match: Option<i64>) -> Result<EndpointRecord> {
        self.update_endpoint(id, labels, None, if_match).await
    }

    /// An endpoint as its pod says: its labels and named ports (the operator keeps them).
    pub async fn update_endpoint_from_pod(&self, id: &str, labels: Labels, named_ports: Vec<NamedPort>) -> Result<EndpointRecord> {
        self.update_endpoint(id, labels, Some(named_ports), None).await
    }

    /// New labels and, when given, named ports.
    async fn update_endpoint(
        &self,
        id: &str,
        labels: Labels,
        named_ports: Option<Vec<NamedPort>>,
        if_match: Option<i64>,
    ) -> Result<EndpointRecord> {
        let id = id.to_string();
        self.with_retries(move |tx| {
            let (id, labels, named_ports) = (id.clone(), labels.clone(), named_ports.clone());
            Box::pin(async move {
                let query = sqlx::query("SELECT revision FROM endpoints WHERE id = $1").bind(&id);
                let current = checked_revision(tx, "endpoint", &id, query, if_match).await?;
                sqlx::query(
                    "UPDATE endpoints SET labels = $1, named_ports = COALESCE($2, named_ports), revision = revision + 1 WHERE id = $3",
                )
                .bind(to_json(&labels)?)
                .bind(named_ports.as_ref().map(to_json).transpose()?)
                .bind(&id)
                .execute(&mut **tx)
                .await?;
                record(tx, ChangeKind::Endpoint, &id, current + 1).await?;
                endpoint_in(tx, &id).await?.ok_or_else(|| StoreError::NotFound { kind: "endpoint", name: id.clone() })
            })
        })
        .await
    }

    pub async fn endpoint(&self, id: &str) -> Result<EndpointRecord> {
        let mut conn = self.pool.acquire().await?;
        endpoint_in(&mut conn, id).await?.ok_or_else(|| StoreError::NotFound { kind: "endpoint", name: id.into() })
    }

    /// Endpoints, optionally of one tenant and/or host, ordered by id.
    pub async fn endpoints(&self, tenant: Option<&str>, host: Option<&str>) -> Result<Vec<EndpointRecord>> {
        let rows = sqlx::query(
            "SELECT e.id, e.tenant, e.segment, e.host, e.labels, e.revision, e.named_ports, a.address FROM endpoints e
             LEFT JOIN endpoint_addresses a ON a.endpoint = e.id
             WHERE ($1 IS NULL OR e.tenant = $1) AND ($2 IS NULL OR e.host = $2) ORDER BY e.id, a.address",
        )
        .bind(tenant)
        .bind(host)
        .fetch_all(&self.pool)
        .await?;
        with_addresses(rows)
    }

    pub async fn blocks(&self, filter: BlockFilter<'_>) -> Result<Vec<BlockRecord>> {
        let rows = sqlx::query(
            "SELECT cidr, network, group_path, host, tenant, segment, used, capacity FROM blocks
             WHERE ($1 IS NULL OR host = $1) AND ($2 IS NULL OR tenant = $2) AND ($3 IS NULL OR segment = $3)",
        )
        .bind(filter.host)
        .bind(filter.tenant)
        .bind(filter.segment)
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(BlockRecord {
                    cidr: r.try_get::<String, _>("cidr")?.parse().map_err(|_| StoreError::Corrupt("block CIDR".into()))?,
                    network: r.try_get("network")?,
                    group: r.try_get("group_path")?,
                    host: r.try_get("host")?,
                    tenant: r.try_get("tenant")?,
                    segment: r.try_get("segment")?,
                    used: r.try_get("used")?,
                    capacity: r.try_get("capacity")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|b| b.cidr);
        Ok(out)
    }
}

fn validate_endpoint_id(id: &str) -> Result<()> {
    // Kubernetes endpoints are `namespace/pod`; container ids are hex.
    // A `.` or `..` part could never be addressed in a URL (clients resolve it away).
    let ok = !id.is_empty()
        && id.len() <= 512
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':'))
        && !id.split('/').any(|part| part == "." || part == "..");
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid("id", "must be 1-512 characters of letters, digits, '-', '_', '.', '/', ':', with no `.` or `..` part"))
    }
}

/// Allocate one address of `network` inside `group_cidr` for `owner`.
async fn allocate_in(
    conn: &mut AnyConnection,
    group_path: &str,
    network: &Network,
    group_cidr: IpNet,
    owner: &BlockOwner,
    endpoint: &str,
) -> Result<IpAddr> {
    // Fast path: a block of this owner with room needs only the owner's blocks; the whole
    // group's blocks are read only when a block must be taken over or carved.
    let owned = load_blocks(
        conn,
        "SELECT cidr, host, tenant, segment, used FROM blocks WHERE group_path = $1 AND network = $2 AND host = $3 AND tenant = $4 AND segment = $5 AND used < capacity",
        group_path,
        network,
        Some(owner),
    )
    .await?;
    let choice = match choose_block(network, group_cidr, &owned, owner) {
        Some(choice @ BlockChoice::Owned(_)) => choice,
        _ => {
            let all = load_blocks(
                conn,
                "SELECT cidr, host, tenant, segment, used FROM blocks WHERE group_path = $1 AND network = $2",
                group_path,
                network,
                None,
            )
            .await?;
            choose_block(network, group_cidr, &all, owner).ok_or_else(|| {
                StoreError::Exhausted(format!("group {group_path} has no room left in network `{}` ({group_cidr})", network.name))
            })?
        }
    };
    let block = choice.cidr();
    let block_text = block.to_string();
    let cap = i64::try_from(capacity(network, block)).unwrap_or(i64::MAX);
    let used: BTreeSet<IpAddr> = match choice {
        BlockChoice::New(_) => {
            sqlx::query("INSERT INTO blocks (cidr, network, group_path, host, tenant, segment, used, capacity) VALUES ($1, $2, $3, $4, $5, $6, 0, $7)")
                .bind(&block_text)
                .bind(&network.name)
                .bind(group_path)
                .bind(&owner.host)
                .bind(&owner.tenant)
                .bind(&owner.segment)
                .bind(cap)
                .execute(&mut *conn)
                .await?;
            BTreeSet::new()
        }
        BlockChoice::Reuse(_) => {
            let taken =
                sqlx::query("UPDATE blocks SET host = $1, tenant = $2, segment = $3, capacity = $4 WHERE cidr = $5 AND host IS NULL")
                    .bind(&owner.host)
                    .bind(&owner.tenant)
                    .bind(&owner.segment)
                    .bind(cap)
                    .bind(&block_text)
                    .execute(&mut *conn)
                    .await?;
            if taken.rows_affected() != 1 {
                return Err(StoreError::Conflict(format!("block {block} was taken concurrently; retry")));
            }
            BTreeSet::new()
        }
        BlockChoice::Owned(_) => sqlx::query("SELECT address FROM endpoint_addresses WHERE block = $1")
            .bind(&block_text)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| parse_ip(&r.try_get::<String, _>("address")?))
            .collect::<Result<_>>()?,
    };
    let address = choose_address(network, block, &used)
        .ok_or_else(|| StoreError::Corrupt(format!("block {block} counts free addresses but has none")))?;
    sqlx::query("INSERT INTO endpoint_addresses (address, endpoint, block) VALUES ($1, $2, $3)")
        .bind(address.to_string())
        .bind(endpoint)
        .bind(&block_text)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE blocks SET used = used + 1 WHERE cidr = $1").bind(&block_text).execute(&mut *conn).await?;
    Ok(address)
}

async fn load_blocks(
    conn: &mut AnyConnection,
    sql: &str,
    group_path: &str,
    network: &Network,
    owner: Option<&BlockOwner>,
) -> Result<Vec<BlockState>> {
    let mut query = sqlx::query(sql).bind(group_path).bind(&network.name);
    if let Some(o) = owner {
        query = query.bind(&o.host).bind(&o.tenant).bind(&o.segment);
    }
    let mut blocks = Vec::new();
    for r in query.fetch_all(&mut *conn).await? {
        let owner = match r.try_get::<Option<String>, _>("host")? {
            Some(host) => Some(BlockOwner {
                host,
                tenant: r.try_get::<Option<String>, _>("tenant")?.unwrap_or_default(),
                segment: r.try_get::<Option<String>, _>("segment")?.unwrap_or_default(),
            }),
            None => None,
        };
        let cidr: IpNet = r.try_get::<String, _>("cidr")?.parse().map_err(|_| StoreError::Corrupt("block CIDR".into()))?;
        blocks.push(BlockState { cidr, owner, used: u64::try_from(r.try_get::<i64, _>("used")?).unwrap_or(0) });
    }
    Ok(blocks)
}

fn parse_ip(text: &str) -> Result<IpAddr> {
    text.parse().map_err(|_| StoreError::Corrupt(format!("address `{text}`")))
}

/// Which endpoints a listing shows: every filter optional; `after` continues by id.
#[derive(Debug, Default, Clone)]
pub struct EndpointQuery {
    pub tenant: Option<String>,
    pub segment: Option<String>,
    pub host: Option<String>,
    /// Part of the id.
    pub id_contains: Option<String>,
    /// An address the endpoint holds.
    pub address: Option<IpAddr>,
    /// Labels it must carry, each with exactly this value.
    pub labels: Labels,
    /// The last id of the previous page.
    pub after: Option<String>,
    pub limit: usize,
}

/// One page of a listing, and how many endpoints the filters match in all.
#[derive(Debug, Clone, Default)]
pub struct EndpointPage {
    pub endpoints: Vec<EndpointRecord>,
    pub total: i64,
    /// Where the next page starts (`after`), if there is one.
    pub next: Option<String>,
}

/// `text` inside a LIKE pattern, matched literally (`\` escapes).
fn like_literal(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

impl Store {
    /// A page of endpoints in id order, filtered in the database: a listing of 100,000 reads
    /// one page, not all of them.
    pub async fn endpoint_page(&self, q: &EndpointQuery) -> Result<EndpointPage> {
        // Only the filters given become conditions (so the database can use its indexes); labels
        // are stored as compact JSON, each pair a LIKE on its exact text.
        let mut conditions: Vec<String> = Vec::new();
        let mut filters: Vec<Option<String>> = Vec::new();
        let mut condition = |sql: &str, value: String| {
            filters.push(Some(value));
            conditions.push(sql.replace('?', &format!("${}", filters.len())));
        };
        for (column, value) in [("tenant", &q.tenant), ("segment", &q.segment), ("host", &q.host)] {
            if let Some(v) = value {
                condition(&format!("e.{column} = ?"), v.clone());
            }
        }
        if let Some(part) = &q.id_contains {
            condition("e.id LIKE ? ESCAPE '\\'", format!("%{}%", like_literal(part)));
        }
        if let Some(address) = q.address {
            condition("e.id IN (SELECT endpoint FROM endpoint_addresses WHERE address = ?)", address.to_string());
        }
        for (key, value) in &q.labels {
            let pair = format!("{}:{}", to_json(key)?, to_json(value)?);
            condition("e.labels LIKE ? ESCAPE '\\'", format!("%{}%", like_literal(&pair)));
        }
        let filter = if conditions.is_empty() { "1 = 1".to_string() } else { conditions.join(" AND ") };
        fn bound<'q>(sql: &'q str, filters: &[Option<String>]) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
            filters.iter().fold(sqlx::query(sql), |query, f| query.bind(f.clone()))
        }
        let count_sql = format!("SELECT COUNT(*) AS n FROM endpoints e WHERE {filter}");
        let total: i64 = bound(&count_sql, &filters).fetch_one(&self.pool).await?.try_get("n")?;
        let mut page_filters = filters.clone();
        let after = match &q.after {
            Some(after) => {
                page_filters.push(Some(after.clone()));
                format!(" AND e.id > ${}", page_filters.len())
            }
            None => String::new(),
        };
        let page_sql = format!(
            "SELECT p.id, p.tenant, p.segment, p.host, p.labels, p.revision, p.named_ports, a.address FROM \
             (SELECT e.* FROM endpoints e WHERE {filter}{after} ORDER BY e.id LIMIT ${}) p \
             LEFT JOIN endpoint_addresses a ON a.endpoint = p.id ORDER BY p.id, a.address",
            page_filters.len() + 1
        );
        // One more than asked says whether a next page exists.
        let rows = bound(&page_sql, &page_filters).bind((q.limit + 1) as i64).fetch_all(&self.pool).await?;
        let mut endpoints = with_addresses(rows)?;
        let next = if endpoints.len() > q.limit {
            endpoints.truncate(q.limit);
            endpoints.last().map(|e| e.id.clone())
        } else {
            None
        };
        Ok(EndpointPage { endpoints, total, next })
    }
}

/// Endpoints from rows of endpoint columns and one `address` each (ordered by id; an endpoint
/// without addresses has one row with none), each with its addresses sorted.
fn with_addresses(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<EndpointRecord>> {
    let mut out: Vec<EndpointRecord> = Vec::new();
    for row in rows {
        let id: String = row.try_get("id")?;
        if out.last().is_none_or(|e| e.id != id) {
            out.push(endpoint_from(&row)?);
        }
        if let (Some(e), Some(a)) = (out.last_mut(), row.try_get::<Option<String>, _>("address")?) {
            e.ips.push(parse_ip(&a)?);
        }
    }
    for e in &mut out {
        e.ips.sort();
    }
    Ok(out)
}

fn endpoint_from(row: &sqlx::any::AnyRow) -> Result<EndpointRecord> {
    Ok(EndpointRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        segment: row.try_get("segment")?,
        host: row.try_get("host")?,
        labels: from_json(&row.try_get::<String, _>("labels")?)?,
        ips: Vec::new(),
        revision: row.try_get("revision")?,
        named_ports: from_json(&row.try_get::<String, _>("named_ports")?)?,
    })
}

async fn endpoint_in(conn: &mut AnyConnection, id: &str) -> Result<Option<EndpointRecord>> {
    let row = sqlx::query("SELECT id, tenant, segment, host, labels, revision, named_ports FROM endpoints WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut e = endpoint_from(&row)?;
    for r in sqlx::query("SELECT address FROM endpoint_addresses WHERE endpoint = $1").bind(id).fetch_all(&mut *conn).await? {
        e.ips.push(parse_ip(&r.try_get::<String, _>("address")?)?);
    }
    e.ips.sort();
    Ok(Some(e))
}

//! Stored policies (their source documents) and the generations of node states.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::feed::{ChangeKind, record as record_change};
use super::{Origin, Result, Store, StoreError, from_json, now, to_json};

/// A policy document as stored: the engine re-reads `document` on every start, so what is
/// stored is exactly what was validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub id: String,
    /// The owning tenant; `None` for cluster-scoped policies.
    pub tenant: Option<String>,
    pub document: serde_json::Value,
    pub revision: i64,
    pub created_at: i64,
    #[serde(default)]
    pub origin: Origin,
}

/// A policy to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPolicy {
    pub id: String,
    pub tenant: Option<String>,
    pub document: serde_json::Value,
    pub origin: Origin,
}

fn record(row: &sqlx::any::AnyRow) -> Result<PolicyRecord> {
    Ok(PolicyRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        document: from_json(&row.try_get::<String, _>("document")?)?,
        revision: row.try_get("revision")?,
        created_at: row.try_get("created_at")?,
        origin: Origin::parse(&row.try_get::<String, _>("origin")?)?,
    })
}

impl Store {
    pub async fn policies(&self) -> Result<Vec<PolicyRecord>> {
        let rows = sqlx::query("SELECT id, tenant, document, revision, created_at, origin FROM policies ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(record).collect()
    }

    pub async fn policy(&self, id: &str) -> Result<PolicyRecord> {
        let row = sqlx::query("SELECT id, tenant, document, revision, created_at, origin FROM policies WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record).transpose()?.ok_or_else(|| StoreError::NotFound { kind: "policy", name: id.into() })
    }

    /// Create or replace policies, all or none. A replaced policy keeps its tenant: moving a
    /// policy between tenants is a delete and a create.
    pub async fn put_policies(&self, policies: Vec<NewPolicy>) -> Result<Vec<PolicyRecord>> {
        self.with_retries(|tx| {
            let policies = policies.clone();
            Box::pin(async move {
                let mut out = Vec::new();
                for p in policies {
                    let existing = sqlx::query("SELECT tenant, revision, created_at, origin FROM policies WHERE id = $1")
                        .bind(&p.id)
                        .fetch_optional(&mut **tx)
                        .await?;
                    let document = to_json(&p.document)?;
                    let (revision, created_at) = match existing {
                        Some(row) => {
                            let tenant: Option<String> = row.try_get("tenant")?;
                            if tenant != p.tenant {
                                return Err(StoreError::Conflict(format!("policy `{}` belongs to another tenant", p.id)));
                            }
                            let origin = Origin::parse(&row.try_get::<String, _>("origin")?)?;
                            if origin != p.origin {
                                return Err(StoreError::Conflict(match origin {
                                    Origin::Kubernetes => {
                                        format!("policy `{}` is managed by Kubernetes: change the NetworkPolicy instead", p.id)
                                    }
                                    Origin::Api => format!("policy `{}` was made through the API; Kubernetes does not replace it", p.id),
                                }));
                            }
                            let revision = row.try_get::<i64, _>("revision")? + 1;
                            sqlx::query("UPDATE policies SET document = $1, revision = $2 WHERE id = $3")
                                .bind(&document)
                                .bind(revision)
                                .bind(&p.id)
                                .execute(&mut **tx)
                                .await?;
                            (revision, row.try_get("created_at")?)
                        }
                        None => {
                            let created_at = now();
                            sqlx::query(
                                "INSERT INTO policies (id, tenant, document, revision, created_at, origin) VALUES ($1, $2, $3, 1, $4, $5)",
                            )
                            .bind(&p.id)
                            .bind(&p.tenant)
                            .bind(&document)
                            .bind(created_at)
                            .bind(p.origin.as_str())
                            .execute(&mut **tx)
                            .await?;
                            (1, created_at)
                        }
                    };
                    record_change(tx, ChangeKind::Policy, &p.id, revision).await?;
                    out.push(PolicyRecord { id: p.id, tenant: p.tenant, document: p.document, revision, created_at, origin: p.origin });
                }
                Ok(out)
            })
        })
        .await
    }

    pub async fn delete_policy(&self, id: &str, if_match: Option<i64>) -> Result<()> {
        let id = id.to_string();
        self.with_retries(move |tx| {
            let id = id.clone();
            Box::pin(async move {
                let row = sqlx::query("SELECT revision FROM policies WHERE id = $1").bind(&id).fetch_optional(&mut **tx).await?;
                let current: i64 = row.ok_or_else(|| StoreError::NotFound { kind: "policy", name: id.clone() })?.try_get("revision")?;
                if let Some(sent) = if_match.filter(|sent| *sent != current) {
                    return Err(StoreError::Stale { kind: "policy", name: id, current, sent });
                }
                sqlx::query("DELETE FROM policies WHERE id = $1").bind(&id).execute(&mut **tx).await?;
                record_change(tx, ChangeKind::Policy, &id, 0).await?;
                Ok(())
            })
        })
        .await
    }
}

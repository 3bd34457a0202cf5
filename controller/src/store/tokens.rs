//! API tokens, stored as SHA-256 hashes: a leaked database does not leak usable tokens.
//!
//! A token reads `tsr_<id>_<secret>`; the id is public (for listing and deleting), the secret is
//! shown once when the token is created.

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::feed::{ChangeKind, record};
use super::{Result, Store, StoreError, now};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Read,
    Tenant,
    /// A node agent: reads its own node's state, acks it, and registers endpoints on its node.
    Node,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Read => "read",
            Role::Tenant => "tenant",
            Role::Node => "node",
        }
    }
}

/// The caller behind a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Admin,
    ReadOnly,
    Tenant(String),
    Node(String),
}

/// A token as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub tenant: Option<String>,
    pub node: Option<String>,
    pub created_at: i64,
}

/// A freshly created token: the only time the secret is seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    #[serde(flatten)]
    pub record: TokenRecord,
    pub token: String,
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn random_string(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    (0..len).map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())])).collect()
}

impl Store {
    /// Create a token; `scope` is the tenant of a tenant token and the node of a node token;
    /// `secret` lets an operator supply one (the bootstrap admin token).
    pub async fn create_token(&self, name: &str, role: Role, scope: Option<&str>, secret: Option<&str>) -> Result<NewToken> {
        let (mut tenant, mut node) = (None, None);
        match (role, scope) {
            (Role::Tenant, None) => return Err(StoreError::invalid("tenant", "a tenant token must name its tenant")),
            (Role::Node, None) => return Err(StoreError::invalid("node", "a node token must name its node")),
            (Role::Admin | Role::Read, Some(_)) => {
                return Err(StoreError::invalid("tenant", "only tenant and node tokens have a scope"));
            }
            (Role::Tenant, Some(t)) => {
                self.tenant(t).await.map_err(|_| StoreError::invalid("tenant", format!("tenant `{t}` does not exist")))?;
                tenant = Some(t);
            }
            (Role::Node, Some(n)) => {
                self.host(n).await.map_err(|_| StoreError::invalid("node", format!("host `{n}` does not exist")))?;
                node = Some(n);
            }
            _ => {}
        }
        if name.is_empty() || name.len() > 200 {
            return Err(StoreError::invalid("name", "must be 1-200 characters"));
        }
        let id = random_string(12);
        let token = match secret {
            Some(s) if s.len() < 16 => {
                return Err(StoreError::invalid("token", "a supplied token must be at least 16 characters"));
            }
            Some(s) => s.to_string(),
            None => format!("tsr_{id}_{}", random_string(32)),
        };
        let created_at = now();
        let mut tx = self.write().await?;
        sqlx::query("INSERT INTO tokens (id, hash, role, tenant, node, name, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&id)
            .bind(hash(&token))
            .bind(role.as_str())
            .bind(tenant)
            .bind(node)
            .bind(name)
            .bind(created_at)
            .execute(&mut *tx)
            .await?;
        record(&mut tx, ChangeKind::Token, &id, 1).await?;
        tx.commit().await?;
        self.changed.send_modify(|n| *n += 1);
        let record =
            TokenRecord { id, name: name.into(), role, tenant: tenant.map(String::from), node: node.map(String::from), created_at };
        Ok(NewToken { record, token })
    }

    /// The principal a bearer token stands for, if any.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>> {
        let row = sqlx::query("SELECT role, tenant, node FROM tokens WHERE hash = $1").bind(hash(token)).fetch_optional(&self.pool).await?;
        let Some(row) = row else { return Ok(None) };
        let role: String = row.try_get("role")?;
        let tenant: Option<String> = row.try_get("tenant")?;
        let node: Option<String> = row.try_get("node")?;
        Ok(Some(match (role.as_str(), tenant, node) {
            ("admin", _, _) => Principal::Admin,
            ("read", _, _) => Principal::ReadOnly,
            ("tenant", Some(t), _) => Principal::Tenant(t),
            ("node", _, Some(n)) => Principal::Node(n),
            _ => return Err(StoreError::Corrupt(format!("token role `{role}`"))),
        }))
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query("SELECT id, name, role, tenant, node, created_at FROM tokens ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let role = match r.try_get::<String, _>("role")?.as_str() {
                    "admin" => Role::Admin,
                    "read" => Role::Read,
                    "node" => Role::Node,
                    _ => Role::Tenant,
                };
                Ok(TokenRecord {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    role,
                    tenant: r.try_get("tenant")?,
                    node: r.try_get("node")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    pub async fn token_count(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM tokens").fetch_one(&self.pool).await?.try_get("n")?)
    }

    /// Delete a token; the last admin token is kept (409): without it nobody could manage the
    /// controller until a restart with `--admin-token`.
    pub async fn delete_token(&self, id: &str) -> Result<()> {
        // One statement, so two concurrent deletions cannot both see another admin left.
        let mut tx = self.write().await?;
        let done =
            sqlx::query("DELETE FROM tokens WHERE id = $1 AND (role <> 'admin' OR (SELECT COUNT(*) FROM tokens WHERE role = 'admin') > 1)")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 1 {
            record(&mut tx, ChangeKind::Token, id, 0).await?;
            tx.commit().await?;
            self.changed.send_modify(|n| *n += 1);
            return Ok(());
        }
        tx.rollback().await?;
        match sqlx::query("SELECT role FROM tokens WHERE id = $1").bind(id).fetch_optional(&self.pool).await? {
            Some(_) => Err(StoreError::Conflict(format!(
                "token `{id}` is the last admin token; create another admin token before deleting this one"
            ))),
            None => Err(StoreError::NotFound { kind: "token", name: id.into() }),
        }
    }
}

//! The store edge: sqlx over SQLite (embedded default, WAL) or PostgreSQL (by URL).
//!
//! One set of queries serves both (`$N` placeholders work in both). Write transactions are
//! serialised where allocation needs it: `BEGIN IMMEDIATE` on SQLite, a `FOR UPDATE` row lock
//! per prefix group on PostgreSQL; unique keys on block CIDRs and addresses back both up.

mod cloud;
mod feed;
mod inventory;
mod ipam;
mod lease;
mod nodes;
mod policies;
mod tokens;
mod topology;
mod vips;

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Transaction};

pub use feed::{Change, ChangeKind, FeedRead, NOTIFY_CHANNEL};
pub use inventory::{DEFAULT_SEGMENT, HostRecord, NewHost, Origin, SegmentRecord, TenantRecord};
pub use ipam::{BlockFilter, BlockRecord, EndpointPage, EndpointQuery, EndpointRecord, NewEndpoint};
pub use lease::{Lease, ReplicaRecord};
pub use nodes::{NodeRecord, NodeReport};
pub use policies::{NewPolicy, PolicyRecord};
pub use tokens::{NewToken, Principal, Role, TokenRecord};
pub use topology::TopologyRecord;
pub use vips::VipRecord;

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Errors of the store, each mapped to one HTTP status by the API.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} `{name}` not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{0}")]
    Conflict(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{kind} `{name}` was changed by someone else (revision {current}, you sent {sent}); fetch it again")]
    Stale { kind: &'static str, name: String, current: i64, sent: i64 },
    #[error("no free address: {0}")]
    Exhausted(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> StoreError {
        StoreError::Invalid { field: field.into(), message: message.into() }
    }

    /// True for errors a retry of the whole transaction can fix (lost races).
    fn is_retryable(&self) -> bool {
        match self {
            StoreError::Db(sqlx::Error::Database(db)) => {
                db.is_unique_violation() || matches!(db.code().as_deref(), Some("40001" | "40P01" | "5" | "517" | "6"))
            }
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The stored topology and its carved layout, for the revision it was read at.
    topology: Arc<Mutex<Option<TopologyRecord>>>,
    /// Counts the committed writes of this process (the feed's in-process wake-up; a watch
    /// channel, so a follower busy at the moment of a commit still sees it).
    changed: Arc<tokio::sync::watch::Sender<u64>>,
    /// Where the store is, for PostgreSQL `LISTEN` connections of the feed followers.
    url: String,
}

impl Store {
    /// Connect, create a SQLite file if needed, and apply migrations.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::invalid("database-url", format!("`{url}` is neither sqlite:… nor postgres://…")));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
            }
            _ => url.to_string(),
        };
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        use sqlx::Executor;
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 30000; PRAGMA synchronous = NORMAL;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations").run(&pool).await.map_err(|e| StoreError::Db(e.into()))?;
        Ok(Store {
            pool,
            backend,
            topology: Arc::new(Mutex::new(None)),
            changed: Arc::new(tokio::sync::watch::channel(0).0),
            url: url.to_string(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database URL (PostgreSQL followers open their own `LISTEN` connection to it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answers when the database does.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Begin a write transaction. On SQLite it takes the write lock up front, so two writers
    /// never both read and then race to upgrade.
    async fn write(&self) -> Result<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// Serialise with every other writer of the prefix group at `path` (PostgreSQL; on SQLite
    /// `BEGIN IMMEDIATE` already serialises all writers). `None` locks every group.
    async fn lock_groups(&self, conn: &mut sqlx::AnyConnection, path: Option<&str>) -> Result<()> {
        if self.backend == Backend::Postgres {
            match path {
                Some(p) => sqlx::query("SELECT path FROM group_locks WHERE path = $1 FOR UPDATE").bind(p).fetch_all(&mut *conn).await?,
                None => sqlx::query("SELECT path FROM group_locks ORDER BY path FOR UPDATE").fetch_all(&mut *conn).await?,
            };
        }
        Ok(())
    }

    /// Run `body` in a write transaction, retrying lost races a bounded number of times.
    async fn with_retries<T, F>(&self, mut body: F) -> Result<T>
    where
        F: for<'t> FnMut(&'t mut Transaction<'static, Any>) -> futures_like::BoxFuture<'t, Result<T>>,
    {
        let mut attempt = 0u32;
        loop {
            let mut tx = self.write().await?;
            let outcome = body(&mut tx).await;
            let outcome = match outcome {
                Ok(v) => {
                    let committed = tx.commit().await.map(|_| v).map_err(StoreError::from);
                    if committed.is_ok() {
                        self.changed.send_modify(|n| *n += 1);
                    }
                    committed
                }
                Err(e) => {
                    let _ = tx.rollback().await;
                    Err(e)
                }
            };
            match outcome {
                Err(e) if e.is_retryable() && attempt < 30 => {
                    attempt += 1;
                    let jitter = rand::random::<u64>() % (2 + 2 * u64::from(attempt));
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                other => return other,
            }
        }
    }
}

/// Seconds since the epoch, for created/updated columns and last-seen times.
pub fn unix_now() -> i64 {
    now()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A boxed future without pulling in the `futures` crate.
pub(crate) mod futures_like {
    pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
}

//! Operations: every change's one way in, whoever makes it (the REST API today; the Kubernetes
//! operator and the route publishers next). Each validates its input once, writes in one store
//! transaction that also appends the change record, and answers once this replica's
//! distributor has applied the change, so a caller that reads right after sees its effect.
//!
//! Authorisation is the caller's (HTTP roles, the operator's identity); the checks on the input
//! itself live here, so every door enforces the same ones.

use std::net::IpAddr;

use tessera_topology::change::ChangePlan;
use tessera_topology::spec::validate_labels;
use tessera_topology::{Format, Labels, parse_topology};

use crate::distribute::Distributor;
use crate::store::{
    EndpointRecord, HostRecord, NewEndpoint, NewHost, NewPolicy, NewToken, PolicyRecord, Role, SegmentRecord, Store, StoreError,
    TenantRecord,
};

type Result<T> = std::result::Result<T, StoreError>;

/// The door every change goes through; cheap to clone.
#[derive(Debug, Clone)]
pub struct Ops {
    store: Store,
    dist: Distributor,
}

fn labels_ok(field: &str, labels: &Labels) -> Result<()> {
    validate_labels(field, labels).map_err(|e| StoreError::invalid(e.field, e.message))
}

fn ips(field: &str, texts: &[String]) -> Result<Vec<IpAddr>> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| t.parse::<IpAddr>().map_err(|_| StoreError::invalid(format!("{field}[{i}]"), format!("`{t}` is not an IP address"))))
        .collect()
}

impl Ops {
    pub fn new(store: Store, dist: Distributor) -> Ops {
        Ops { store, dist }
    }

    /// Answer once this replica has applied what was just written.
    async fn applied<T>(&self, written: T) -> Result<T> {
        self.dist.sync().await?;
        Ok(written)
    }

    /// Replace the topology (unless `dry_run`), from a Tessera or Romana document.
    pub async fn apply_topology(
        &self,
        text: String,
        format: Format,
        if_match: Option<i64>,
        dry_run: bool,
    ) -> Result<(ChangePlan, Option<i64>)> {
        // Parsing is CPU work, bounded by the body limit: off the async workers.
        let spec = tokio::task::spawn_blocking(move || parse_topology(&text, format))
            .await
            .map_err(|e| StoreError::Corrupt(e.to_string()))?
            .map_err(|e| StoreError::invalid(e.field, e.message))?;
        let outcome = self.store.apply_topology(spec, if_match, dry_run).await?;
        self.applied(outcome).await
    }

    pub async fn create_host(&self, name: String, addresses: &[String], labels: Labels) -> Result<HostRecord> {
        labels_ok("labels", &labels)?;
        let host = self.store.create_host(NewHost { name, ips: ips("ips", addresses)?, labels }).await?;
        self.applied(host).await
    }

    pub async fn update_host(&self, name: &str, addresses: &[String], labels: Labels, if_match: Option<i64>) -> Result<HostRecord> {
        labels_ok("labels", &labels)?;
        let host = self.store.update_host(name, ips("ips", addresses)?, labels, if_match).await?;
        self.applied(host).await
    }

    pub async fn delete_host(&self, name: &str, if_match: Option<i64>) -> Result<()> {
        self.store.delete_host(name, if_match).await?;
        self.applied(()).await
    }

    pub async fn create_tenant(&self, name: &str, labels: Labels) -> Result<TenantRecord> {
        labels_ok("labels", &labels)?;
        let tenant = self.store.create_tenant(name, labels).await?;
        self.applied(tenant).await
    }

    pub async fn update_tenant(&self, name: &str, labels: Labels, if_match: Option<i64>) -> Result<TenantRecord> {
        labels_ok("labels", &labels)?;
        let tenant = self.store.update_tenant(name, labels, if_match).await?;
        self.applied(tenant).await
    }

    pub async fn delete_tenant(&self, name: &str, if_match: Option<i64>) -> Result<()> {
        self.store.delete_tenant(name, if_match).await?;
        self.applied(()).await
    }

    pub async fn create_segment(&self, tenant: &str, name: &str, labels: Labels) -> Result<SegmentRecord> {
        labels_ok("labels", &labels)?;
        let segment = self.store.create_segment(tenant, name, labels).await?;
        self.applied(segment).await
    }

    pub async fn update_segment(&self, tenant: &str, name: &str, labels: Labels, if_match: Option<i64>) -> Result<SegmentRecord> {
        labels_ok("labels", &labels)?;
        let segment = self.store.update_segment(tenant, name, labels, if_match).await?;
        self.applied(segment).await
    }

    pub async fn delete_segment(&self, tenant: &str, name: &str, if_match: Option<i64>) -> Result<()> {
        self.store.delete_segment(tenant, name, if_match).await?;
        self.applied(()).await
    }

    /// Register an endpoint and allocate its addresses; `false` when it existed already.
    pub async fn allocate(&self, endpoint: NewEndpoint) -> Result<(EndpointRecord, bool)> {
        labels_ok("labels", &endpoint.labels)?;
        let outcome = self.store.allocate(endpoint).await?;
        self.applied(outcome).await
    }

    /// Release an endpoint's addresses (`None`: there was no such endpoint).
    pub async fn release(&self, id: &str) -> Result<Option<EndpointRecord>> {
        let released = self.store.release(id).await?;
        self.applied(released).await
    }

    pub async fn relabel_endpoint(&self, id: &str, labels: Labels, if_match: Option<i64>) -> Result<EndpointRecord> {
        labels_ok("labels", &labels)?;
        let endpoint = self.store.update_endpoint_labels(id, labels, if_match).await?;
        self.applied(endpoint).await
    }

    /// Store validated policy documents (see `api::policies` for reading a body), all or none.
    pub async fn put_policies(&self, policies: Vec<NewPolicy>) -> Result<Vec<PolicyRecord>> {
        if policies.is_empty() {
            return Err(StoreError::invalid("body", "no policy documents"));
        }
        let stored = self.store.put_policies(policies).await?;
        self.applied(stored).await
    }

    pub async fn delete_policy(&self, id: &str, if_match: Option<i64>) -> Result<()> {
        self.store.delete_policy(id, if_match).await?;
        self.applied(()).await
    }

    pub async fn create_token(&self, name: &str, role: Role, scope: Option<&str>) -> Result<NewToken> {
        self.store.create_token(name, role, scope, None).await
    }

    pub async fn delete_token(&self, id: &str) -> Result<()> {
        self.store.delete_token(id).await
    }
}

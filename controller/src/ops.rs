//! Operations: every change's one way in, whoever makes it (the REST API today; the Kubernetes
//! operator and the route publishers next). Each validates its input once, writes in one store
//! transaction that also appends the change record, and answers once this replica's
//! distributor has applied the change, so a caller that reads right after sees its effect.
//!
//! Authorisation is the caller's (HTTP roles, the operator's identity); the checks on the input
//! itself live here, so every door enforces the same ones.

use std::net::IpAddr;

use tessera_topology::change::ChangePlan;
use tessera_topology::spec::{validate_labels, validate_name};
use tessera_topology::{Format, Labels, parse_topology};

use crate::distribute::Distributor;
use crate::store::{
    EndpointRecord, HostRecord, NewEndpoint, NewHost, NewPolicy, NewToken, Origin, PolicyRecord, Role, SegmentRecord, Store, StoreError,
    TenantRecord, VipRecord,
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

fn cloud_target_ok(id: Option<&str>) -> Result<()> {
    match id.map(tessera_cloud::vpc::Target::from_ec2_id) {
        Some(Err(message)) => Err(StoreError::invalid("cloudTarget", message)),
        _ => Ok(()),
    }
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

    pub async fn create_host(
        &self,
        name: String,
        addresses: &[String],
        labels: Labels,
        cloud_target: Option<String>,
    ) -> Result<HostRecord> {
        self.create_host_from(name, addresses, labels, cloud_target, Origin::Api).await
    }

    /// Register a host made by `origin` (the operator registers Nodes as `kubernetes`).
    pub async fn create_host_from(
        &self,
        name: String,
        addresses: &[String],
        labels: Labels,
        cloud_target: Option<String>,
        origin: Origin,
    ) -> Result<HostRecord> {
        labels_ok("labels", &labels)?;
        cloud_target_ok(cloud_target.as_deref())?;
        let host = self.store.create_host(NewHost { name, ips: ips("ips", addresses)?, labels, cloud_target, origin }).await?;
        self.applied(host).await
    }

    pub async fn update_host(
        &self,
        name: &str,
        addresses: &[String],
        labels: Labels,
        cloud_target: Option<String>,
        if_match: Option<i64>,
    ) -> Result<HostRecord> {
        labels_ok("labels", &labels)?;
        cloud_target_ok(cloud_target.as_deref())?;
        let host = self.store.update_host(name, ips("ips", addresses)?, labels, cloud_target, if_match).await?;
        self.applied(host).await
    }

    /// Drain a host (`true`) or bring it back: see `Store::set_drained`.
    pub async fn set_drained(&self, name: &str, drained: bool) -> Result<HostRecord> {
        let host = self.store.set_drained(name, drained).await?;
        self.applied(host).await
    }

    /// Define a virtual IP that one of `hosts`, or any host under `group`, holds.
    pub async fn create_vip(&self, address: &str, hosts: Vec<String>, group: Option<String>) -> Result<VipRecord> {
        let address: IpAddr = address.parse().map_err(|_| StoreError::invalid("address", format!("`{address}` is not an IP address")))?;
        let what = match address {
            _ if address.is_unspecified() => Some("the unspecified address"),
            _ if address.is_loopback() => Some("a loopback address"),
            _ if address.is_multicast() => Some("a multicast address"),
            IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
            IpAddr::V4(v4) if v4.is_link_local() => Some("a link-local address"),
            IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("a link-local address"),
            _ => None,
        };
        if let Some(what) = what {
            return Err(StoreError::invalid("address", format!("{address} is {what}; a VIP is a routable unicast address")));
        }
        match (hosts.is_empty(), &group) {
            (true, None) => return Err(StoreError::invalid("hosts", "name the hosts that may hold the VIP, or a group")),
            (false, Some(_)) => return Err(StoreError::invalid("group", "give either hosts or a group, not both")),
            _ => {}
        }
        for (i, h) in hosts.iter().enumerate() {
            validate_name(&format!("hosts[{i}]"), h).map_err(|e| StoreError::invalid(e.field, e.message))?;
            if hosts[..i].contains(h) {
                return Err(StoreError::invalid(format!("hosts[{i}]"), format!("`{h}` is listed twice")));
            }
        }
        let vip = self.store.create_vip(address, hosts, group).await?;
        self.applied(vip).await
    }

    pub async fn delete_vip(&self, address: &str, if_match: Option<i64>) -> Result<()> {
        let address: IpAddr = address.parse().map_err(|_| StoreError::NotFound { kind: "vip", name: address.to_string() })?;
        self.store.delete_vip(address, if_match).await?;
        self.applied(()).await
    }

    /// Move VIPs to other holders (VIP, new holder), in one transaction under the writer
    /// lease's fencing token.
    pub async fn move_vips(&self, moves: &[(&VipRecord, Option<String>)], fence: i64) -> Result<Vec<VipRecord>> {
        let moves = moves.iter().map(|(v, holder)| (v.address, holder.clone(), v.revision)).collect();
        let moved = self.store.move_vips(moves, fence).await?;
        self.applied(moved).await
    }

    pub async fn delete_host(&self, name: &str, if_match: Option<i64>) -> Result<()> {
        self.store.delete_host(name, if_match).await?;
        self.applied(()).await
    }

    pub async fn create_tenant(&self, name: &str, labels: Labels) -> Result<TenantRecord> {
        self.create_tenant_from(name, labels, Origin::Api).await
    }

    /// Create a tenant made by `origin` (the operator creates Namespaces as `kubernetes`).
    pub async fn create_tenant_from(&self, name: &str, labels: Labels, origin: Origin) -> Result<TenantRecord> {
        labels_ok("labels", &labels)?;
        let tenant = self.store.create_tenant_from(name, labels, origin).await?;
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

    /// An endpoint as its pod says (labels, named ports): the Kubernetes operator's.
    pub async fn update_endpoint_from_pod(
        &self,
        id: &str,
        labels: Labels,
        named_ports: Vec<tessera_policy::model::NamedPort>,
    ) -> Result<EndpointRecord> {
        let endpoint = self.label_endpoint_from_pod(id, labels, named_ports).await?;
        self.applied(endpoint).await
    }

    /// The same, answering once stored, before this replica has compiled it: for a writer of
    /// many changes (the operator after a relist), which then waits once with [`Ops::settle`] —
    /// the distributor compiles the whole batch in one pass instead of one pass per change.
    pub async fn label_endpoint_from_pod(
        &self,
        id: &str,
        labels: Labels,
        named_ports: Vec<tessera_policy::model::NamedPort>,
    ) -> Result<EndpointRecord> {
        labels_ok("labels", &labels)?;
        self.store.update_endpoint_from_pod(id, labels, named_ports).await
    }

    /// Wait until this replica has compiled every change stored so far.
    pub async fn settle(&self) -> Result<()> {
        self.applied(()).await
    }

    /// Store validated policy documents (see `api::policies` for reading a body), all or none.
    pub async fn put_policies(&self, policies: Vec<NewPolicy>) -> Result<Vec<PolicyRecord>> {
        let stored = self.write_policies(policies).await?;
        self.applied(stored).await
    }

    /// The same, answering once stored (see [`Ops::label_endpoint_from_pod`]).
    pub async fn write_policies(&self, policies: Vec<NewPolicy>) -> Result<Vec<PolicyRecord>> {
        if policies.is_empty() {
            return Err(StoreError::invalid("body", "no policy documents"));
        }
        self.store.put_policies(policies).await
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

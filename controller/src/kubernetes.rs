//! The Kubernetes operator inside the controller: `tessera-operator`'s watches carried out
//! through the operations layer, on the writer-lease holder only — started when this replica
//! takes the lease, stopped when it loses it; each start begins with the full lists, so what
//! changed while no replica watched (or this one was down) is caught up.

use std::collections::BTreeMap;
use std::time::Duration;

use tessera_operator::{Change, EndpointView, Enforced, Held, HostSpec, PortName, TenantSpec, policy_key};
use tessera_policy::model::{NamedPort, Protocol};
use tokio::sync::watch;

use crate::api::AppState;
use crate::store::Origin;

/// The store as the operator sees it, changed through the operations.
struct Inventory {
    state: AppState,
}

impl tessera_operator::Inventory for Inventory {
    async fn held(&self) -> Result<Held, String> {
        let store = &self.state.store;
        let (hosts, tenants) = (store.hosts().await.map_err(|e| e.to_string())?, store.tenants().await.map_err(|e| e.to_string())?);
        let mut held = Held::default();
        for h in hosts {
            if h.origin == Origin::Kubernetes {
                let spec = HostSpec {
                    name: h.name.clone(),
                    ips: h.ips.iter().map(ToString::to_string).collect(),
                    labels: h.labels,
                    cloud_target: h.cloud_target,
                };
                held.hosts.insert(h.name, spec);
            } else {
                held.other_hosts.insert(h.name);
            }
        }
        for t in tenants {
            if t.origin == Origin::Kubernetes {
                held.tenants.insert(t.name.clone(), TenantSpec { name: t.name, labels: t.labels });
            } else {
                held.other_tenants.insert(t.name);
            }
        }
        for e in store.endpoints(None, None).await.map_err(|e| e.to_string())? {
            if held.tenants.contains_key(&e.tenant) {
                let ips = e.ips.iter().map(ToString::to_string).collect();
                let mut named_ports: Vec<PortName> = e
                    .named_ports
                    .iter()
                    .map(|p| PortName { name: p.name.clone(), port: p.port, protocol: p.protocol.to_string() })
                    .collect();
                named_ports.sort();
                held.endpoints.push(EndpointView { id: e.id, tenant: e.tenant, segment: e.segment, ips, labels: e.labels, named_ports });
            }
        }
        let mut ids = BTreeMap::new();
        for p in store.policies().await.map_err(|e| e.to_string())? {
            let Some(key) = policy_key(&p.document) else { continue };
            if p.origin == Origin::Kubernetes {
                held.policies.insert(key.clone(), p.document);
                ids.insert(p.id, key);
            } else {
                held.other_policies.insert(key);
            }
        }
        for (id, r) in self.state.dist.policies_enforced(ids.keys()).await.map_err(|e| e.to_string())? {
            if let Some(key) = ids.get(&id) {
                held.enforced.insert(key.clone(), Enforced { applied: r.applied as u64, total: r.total as u64 });
            }
        }
        Ok(held)
    }

    async fn settle(&self) -> Result<(), String> {
        self.state.ops.settle().await.map_err(|e| e.to_string())
    }

    async fn apply_topology(&self, document: &serde_json::Value) -> Result<i64, String> {
        if self.state.writer.fence().is_none() {
            return Err("the writer lease was lost".into());
        }
        let text = document.to_string();
        let (plan, revision) =
            self.state.ops.apply_topology(text, tessera_topology::Format::Tessera, None, false).await.map_err(|e| e.to_string())?;
        revision.ok_or_else(|| {
            let reasons: Vec<String> = plan.refusals.iter().map(|r| format!("{}: {}", r.subject, r.message)).collect();
            format!("the change would move allocated addresses: {}", reasons.join("; "))
        })
    }

    async fn apply(&self, change: &Change) -> Result<(), String> {
        // Only the lease holder writes.
        if self.state.writer.fence().is_none() {
            return Err("the writer lease was lost".into());
        }
        let ops = &self.state.ops;
        let done = match change.clone() {
            Change::CreateTenant(t) => ops.create_tenant_from(&t.name, t.labels, Origin::Kubernetes).await.map(drop),
            Change::UpdateTenant(t) => ops.update_tenant(&t.name, t.labels, None).await.map(drop),
            Change::CreateHost(h) => ops.create_host_from(h.name, &h.ips, h.labels, h.cloud_target, Origin::Kubernetes).await.map(drop),
            Change::UpdateHost(h) => ops.update_host(&h.name, &h.ips, h.labels, h.cloud_target, None).await.map(drop),
            Change::PutPolicy(p) => {
                let policy = crate::api::policies::read_policy(p.document, "Kubernetes", Origin::Kubernetes)?;
                ops.write_policies(vec![policy]).await.map(drop)
            }
            Change::UpdateEndpoint { id, labels, named_ports, .. } => {
                let ports = named_ports
                    .into_iter()
                    .map(|p| {
                        let protocol = match p.protocol.as_str() {
                            "TCP" => Protocol::Tcp,
                            "UDP" => Protocol::Udp,
                            "SCTP" => Protocol::Sctp,
                            other => return Err(format!("port {}: protocol `{other}` is not one of TCP, UDP, SCTP", p.name)),
                        };
                        Ok(NamedPort { name: p.name, port: p.port, protocol })
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                ops.label_endpoint_from_pod(&id, labels, ports).await.map(drop)
            }
            Change::ReleaseEndpoint(id) => ops.release(&id).await.map(drop),
            Change::DeletePolicy(key) => {
                let stored = self.state.store.policies().await.map_err(|e| e.to_string())?;
                let ours =
                    stored.into_iter().find(|p| p.origin == Origin::Kubernetes && policy_key(&p.document).as_deref() == Some(key.as_str()));
                match ours {
                    Some(p) => ops.delete_policy(&p.id, None).await,
                    None => Ok(()),
                }
            }
            Change::DeleteHost(name) => ops.delete_host(&name, None).await,
            Change::DeleteTenant(name) => ops.delete_tenant(&name, None).await,
        };
        done.map_err(|e| e.to_string())
    }
}

/// How often leadership is looked at.
const LEASE_CHECK: Duration = Duration::from_millis(500);

/// Watch Kubernetes while this replica holds the writer lease, until `closing`.
pub async fn run(
    state: AppState,
    client: tessera_operator::Client,
    options: tessera_operator::Options,
    mut closing: watch::Receiver<bool>,
) {
    loop {
        while state.writer.fence().is_none() {
            tokio::select! {
                () = tokio::time::sleep(LEASE_CHECK) => {}
                _ = closing.changed() => return,
            }
        }
        tracing::info!("this replica holds the writer lease: keeping hosts and tenants as Kubernetes says");
        let (stop, stopped) = watch::channel(false);
        let operator = tokio::spawn(tessera_operator::run(client.clone(), Inventory { state: state.clone() }, options, stopped));
        let closed = loop {
            tokio::select! {
                () = tokio::time::sleep(LEASE_CHECK) => if state.writer.fence().is_none() { break false },
                _ = closing.changed() => break true,
            }
        };
        let _ = stop.send(true);
        let _ = operator.await;
        if closed {
            return;
        }
        tracing::info!("the writer lease was lost: no longer watching Kubernetes");
    }
}

//! The cluster as compiled, behind every node state: the incremental policy compiler, hosts,
//! endpoints, segment blocks and host routes, fed from store records; per-node states out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use sha2::{Digest, Sha256};
use tessera_agent_api::{LocalEndpoint, NodeState, Route, Ruleset};
use tessera_policy::compile::Options;
use tessera_policy::compiler::Compiler;
use tessera_policy::model::{Cluster, Endpoint, Namespace, Policy};
use tessera_policy::{Inputs, nft};

use super::fabric::{Holders, NodeFabric, node_fabrics};
use crate::store::{
    BlockFilter, BlockRecord, EndpointRecord, HostRecord, PolicyRecord, Store, StoreError, TenantRecord, TopologyRecord, VipRecord,
};

#[derive(Debug)]
pub(super) struct CompiledCluster {
    compiler: Compiler,
    pub(super) hosts: BTreeMap<String, Vec<IpAddr>>,
    pub(super) endpoints: BTreeMap<String, EndpointRecord>,
    /// Endpoint ids by host: a node's state lists its own without scanning every endpoint.
    by_host: BTreeMap<String, BTreeSet<String>>,
    /// Blocks of each `tenant/segment`, as the compiler was given them.
    segment_blocks: BTreeMap<String, Vec<IpNet>>,
    /// Engine policy ids of each stored policy document.
    documents: BTreeMap<String, Vec<String>>,
    routes: BTreeMap<String, Vec<Route>>,
    /// Each host's BGP speaker (VIPs aside), and who holds each VIP.
    fabric: BTreeMap<String, NodeFabric>,
    holders: Holders,
}

fn endpoint(e: &EndpointRecord) -> Endpoint {
    Endpoint {
        id: e.id.clone(),
        namespace: e.tenant.clone(),
        name: e.id.clone(),
        labels: e.labels.clone(),
        segment: e.segment.clone(),
        ips: e.ips.clone(),
        named_ports: e.named_ports.clone(),
        host: Some(e.host.clone()),
    }
}

impl CompiledCluster {
    pub(super) async fn load(store: &Store) -> Result<CompiledCluster, StoreError> {
        let topology = store.topology().await?;
        let hosts = store.hosts().await?;
        let tenants = store.tenants().await?;
        let endpoints = store.endpoints(None, None).await?;
        let blocks = store.blocks(BlockFilter::default()).await?;
        let stored_policies = store.policies().await?;
        let vips = store.vips().await?;

        let cluster = cluster_of(&tenants, &endpoints, &hosts);
        let mut segment_blocks: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
        for b in &blocks {
            if let (Some(t), Some(s)) = (&b.tenant, &b.segment) {
                segment_blocks.entry(format!("{t}/{s}")).or_default().push(b.cidr);
            }
        }
        segment_blocks.values_mut().for_each(|b| b.sort());
        let mut policies = Vec::new();
        let mut documents = BTreeMap::new();
        for record in &stored_policies {
            let defined = read_stored(record)?;
            documents.insert(record.id.clone(), defined.iter().map(|p| p.id.clone()).collect());
            policies.extend(defined);
        }

        let routes = host_routes(&topology, &hosts, &blocks)?;
        let fabric = node_fabrics(&topology, &hosts, &blocks);
        let compiler = Compiler::new(cluster, segment_blocks.clone(), policies, Options::default());
        Ok(CompiledCluster {
            compiler,
            hosts: hosts.into_iter().map(|h| (h.name, h.ips)).collect(),
            by_host: endpoints.iter().fold(BTreeMap::new(), |mut m: BTreeMap<String, BTreeSet<String>>, e| {
                m.entry(e.host.clone()).or_default().insert(e.id.clone());
                m
            }),
            endpoints: endpoints.into_iter().map(|e| (e.id.clone(), e)).collect(),
            segment_blocks,
            documents,
            routes,
            fabric,
            holders: Holders::load(&vips),
        })
    }

    /// Follow the blocks of `tenant/segment` in the store, if a block was taken or given back:
    /// the compiler's copy, and every host's routes. Returns the nodes whose state changed.
    pub(super) async fn refresh_segment_blocks(
        &mut self,
        store: &Store,
        tenant: &str,
        segment: &str,
    ) -> Result<BTreeSet<String>, StoreError> {
        let key = format!("{tenant}/{segment}");
        let filter = BlockFilter { host: None, tenant: Some(tenant), segment: Some(segment) };
        let mut now: Vec<IpNet> = store.blocks(filter).await?.into_iter().map(|b| b.cidr).collect();
        now.sort();
        if now == self.segment_blocks.get(&key).cloned().unwrap_or_default() {
            return Ok(BTreeSet::new());
        }
        let (topology, hosts, blocks) = (store.topology().await?, store.hosts().await?, store.blocks(BlockFilter::default()).await?);
        let routes = host_routes(&topology, &hosts, &blocks)?;
        let mut changed: BTreeSet<String> = self.hosts.keys().filter(|h| routes.get(*h) != self.routes.get(*h)).cloned().collect();
        self.routes = routes;
        // Hosts that announce their blocks announce a new set.
        changed.extend(self.set_fabric(node_fabrics(&topology, &hosts, &blocks)));
        changed.extend(self.compiler.set_segment_blocks(&key, now.clone()));
        self.segment_blocks.insert(key, now);
        Ok(changed)
    }

    /// The cluster and policies as compiled: what explanations are asked of.
    pub(super) fn policy_view(&self) -> (&tessera_policy::model::Cluster, &[Policy]) {
        (self.compiler.cluster(), self.compiler.policies())
    }

    /// A VIP was defined, moved or removed (`None`): the nodes whose state changed.
    pub(super) fn apply_vip(&mut self, address: IpAddr, record: Option<VipRecord>) -> BTreeSet<String> {
        self.holders.set(address, record.and_then(|v| v.holder))
    }

    fn set_fabric(&mut self, fabric: BTreeMap<String, NodeFabric>) -> BTreeSet<String> {
        let changed = self.hosts.keys().filter(|h| fabric.get(*h) != self.fabric.get(*h)).cloned().collect();
        self.fabric = fabric;
        changed
    }

    /// Nodes whose state may have changed.
    pub(super) fn apply_endpoint(&mut self, id: &str, record: Option<EndpointRecord>) -> BTreeSet<String> {
        let mut hosts: BTreeSet<String> = self.endpoints.get(id).map(|e| e.host.clone()).into_iter().collect();
        if let Some(ids) = self.endpoints.get(id).and_then(|old| self.by_host.get_mut(&old.host)) {
            ids.remove(id);
        }
        match record {
            Some(r) => {
                hosts.insert(r.host.clone());
                hosts.extend(self.compiler.upsert_endpoint(endpoint(&r)));
                self.by_host.entry(r.host.clone()).or_default().insert(id.to_string());
                self.endpoints.insert(id.to_string(), r);
            }
            None => {
                hosts.extend(self.compiler.remove_endpoint(id));
                self.endpoints.remove(id);
            }
        }
        hosts
    }

    /// A tenant's labels (`None`: it was deleted). Nodes whose state may have changed.
    pub(super) fn apply_tenant(&mut self, name: &str, record: Option<TenantRecord>) -> BTreeSet<String> {
        match record {
            Some(t) => self.compiler.upsert_namespace(Namespace::new(&t.name, t.labels)),
            None => self.compiler.remove_namespace(name),
        }
    }

    /// Replace the policies of one stored document (`None`: it was deleted).
    pub(super) fn apply_policy(&mut self, id: &str, record: Option<&PolicyRecord>) -> Result<BTreeSet<String>, StoreError> {
        let mut hosts = BTreeSet::new();
        let new = match record {
            Some(r) => read_stored(r)?,
            None => Vec::new(),
        };
        let new_ids: BTreeSet<&str> = new.iter().map(|p| p.id.as_str()).collect();
        for old in self.documents.remove(id).unwrap_or_default() {
            if !new_ids.contains(old.as_str()) {
                hosts.extend(self.compiler.remove_policy(&old));
            }
        }
        if record.is_some() {
            self.documents.insert(id.to_string(), new.iter().map(|p| p.id.clone()).collect());
        }
        for p in new {
            hosts.extend(self.compiler.upsert_policy(p));
        }
        Ok(hosts)
    }

    /// The state of one node (generation and digest left for the caller) and its digest.
    /// Whether `host`'s state renders the same from `other` as from `self`: it is a function of
    /// the host's endpoints, their compiled rules, its routes, its fabric and the VIPs it holds,
    /// so equal inputs spare a render (a host joining a 5,000-host cluster re-rendered them all).
    pub(super) fn same_state(&self, other: &CompiledCluster, host: &str) -> bool {
        self.routes.get(host) == other.routes.get(host)
            && self.fabric.get(host) == other.fabric.get(host)
            && self.holders.held(host) == other.holders.held(host)
            && self.local_endpoints(host) == other.local_endpoints(host)
            && self.compiler.node_rules(host) == other.compiler.node_rules(host)
    }

    fn local_endpoints(&self, host: &str) -> Vec<Option<&EndpointRecord>> {
        self.by_host.get(host).into_iter().flatten().map(|id| self.endpoints.get(id)).collect()
    }

    pub(super) fn node_state(&self, host: &str) -> (NodeState, String) {
        let rendered = nft::render_sets(&self.compiler.node_rules(host));
        let endpoints = self
            .by_host
            .get(host)
            .into_iter()
            .flatten()
            .filter_map(|id| self.endpoints.get(id))
            .map(|e| LocalEndpoint { id: e.id.clone(), tenant: e.tenant.clone(), segment: e.segment.clone(), ips: e.ips.clone() })
            .collect();
        let mut state = NodeState {
            node: host.to_string(),
            generation: 0,
            digest: String::new(),
            endpoints,
            ruleset: Ruleset::new(rendered.skeleton, rendered.sets, rendered.rules),
            routes: self.routes.get(host).cloned().unwrap_or_default(),
            bgp: None,
            vips: Vec::new(),
        };
        if let Some(f) = self.fabric.get(host) {
            (state.bgp, state.vips) = f.with_vips(&self.holders.held(host));
        }
        state.routes.sort();
        let digest = hex::encode(Sha256::digest(serde_json::to_vec(&state).unwrap_or_default()));
        (state, digest)
    }
}

/// Every host's routes to the blocks of the other hosts of its group, from the route plan.
fn host_routes(
    topology: &TopologyRecord,
    hosts: &[HostRecord],
    blocks: &[BlockRecord],
) -> Result<BTreeMap<String, Vec<Route>>, StoreError> {
    let plan = crate::routes::plan(topology, hosts, blocks, None).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(plan
        .host_routes
        .into_iter()
        .map(|(host, list)| (host, list.into_iter().map(|r| Route { destination: r.dst, via: r.via }).collect()))
        .collect())
}

/// The policies one stored document defines (a Romana document may define several).
/// Tenants, endpoints and hosts as the policy engine sees them.
fn cluster_of(tenants: &[TenantRecord], endpoints: &[EndpointRecord], hosts: &[HostRecord]) -> Cluster {
    let mut cluster = Cluster::default();
    for t in tenants {
        cluster.namespaces.insert(t.name.clone(), Namespace::new(&t.name, t.labels.clone()));
    }
    for e in endpoints {
        cluster.endpoints.insert(e.id.clone(), endpoint(e));
    }
    for h in hosts {
        cluster.hosts.insert(h.name.clone(), h.ips.clone());
    }
    cluster
}

fn read_stored(record: &PolicyRecord) -> Result<Vec<Policy>, StoreError> {
    let mut inputs = Inputs::default();
    let origin = format!("stored policy `{}`", record.id);
    inputs.add_document(&origin, record.document.clone()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(inputs.policies)
}

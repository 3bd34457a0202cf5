//! Request and response bodies of the API, as the OpenAPI document describes them.
//!
//! Requests deny unknown fields (a typo is an error, not a silently ignored setting).

use std::collections::BTreeMap;

use crate::store::Origin;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Label map (`key: value`).
pub type LabelMap = BTreeMap<String, String>;

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopologyView {
    /// 0 before any topology was applied. Also sent as the `ETag`.
    pub revision: i64,
    /// The stored document in Tessera's format.
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    pub networks: Vec<NetworkView>,
    pub groups: Vec<GroupView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkView {
    pub name: String,
    pub cidr: String,
    pub block_prefix: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenants: Option<Vec<String>>,
    pub blackouts: Vec<String>,
    pub blocks: usize,
    pub used_addresses: i64,
    /// Used addresses over the network's size.
    pub utilization: f64,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupView {
    pub path: String,
    pub name: String,
    pub leaf: bool,
    pub assignment: LabelMap,
    /// CIDR per network name.
    pub cidrs: BTreeMap<String, String>,
    pub hosts: usize,
    pub blocks: usize,
    pub used_addresses: i64,
    /// Used addresses over the addresses of the group's CIDRs.
    pub utilization: f64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TopologyQuery {
    /// Return the plan without changing anything.
    #[serde(default)]
    pub dry_run: bool,
    /// `tessera`, `romana`, or (default) detect from the document.
    pub format: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopologyChangeView {
    pub applied: bool,
    pub dry_run: bool,
    /// The revision after the change (unchanged for a dry run).
    pub revision: i64,
    #[schema(value_type = Object)]
    pub plan: serde_json::Value,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutesQuery {
    /// Most fabric/VPC routes Tessera may use (for example 50 minus the routes it does not own).
    pub budget: Option<usize>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewHostBody {
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")]
    pub name: String,
    /// Underlay addresses of the host (IPv4 or IPv6, unicast, one host's alone).
    #[schema(min_items = 1)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub labels: LabelMap,
    /// The EC2 instance (`i-…`) or network interface (`eni-…`) VPC routes point at when this
    /// host is its group's gateway.
    #[schema(pattern = "^(i|eni)-([0-9a-f]{8}|[0-9a-f]{17})$")]
    pub cloud_target: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateHostBody {
    /// Underlay addresses of the host (IPv4 or IPv6, unicast, one host's alone).
    #[schema(min_items = 1)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub labels: LabelMap,
    /// As at creation; left out, the host has none.
    #[schema(pattern = "^(i|eni)-([0-9a-f]{8}|[0-9a-f]{17})$")]
    pub cloud_target: Option<String>,
}

/// New labels for a tenant or a segment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateLabelsBody {
    #[serde(default)]
    pub labels: LabelMap,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostView {
    pub name: String,
    /// The leaf group the host was placed in.
    pub group: String,
    pub ips: Vec<String>,
    pub labels: LabelMap,
    pub pinned: bool,
    /// Drained: announces nothing and holds no VIP.
    pub drained: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_target: Option<String>,
    pub revision: i64,
    /// Who made it: `api`, or `kubernetes` (a Node; read-only here).
    pub origin: Origin,
    pub blocks: Vec<String>,
    /// The host's blocks aggregated.
    pub cidrs: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTenantBody {
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")]
    pub name: String,
    #[serde(default)]
    pub labels: LabelMap,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    pub name: String,
    pub labels: LabelMap,
    pub revision: i64,
    /// Who made it: `api`, or `kubernetes` (a Namespace; read-only here).
    pub origin: Origin,
    pub segments: Vec<String>,
    pub blocks: Vec<String>,
    /// The tenant's blocks aggregated: the compact form policies use.
    pub cidrs: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewSegmentBody {
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")]
    pub name: String,
    #[serde(default)]
    pub labels: LabelMap,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentView {
    pub tenant: String,
    pub name: String,
    pub labels: LabelMap,
    pub revision: i64,
    pub blocks: Vec<String>,
    /// The segment's blocks aggregated: the compact form policies use.
    pub cidrs: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlocksQuery {
    pub host: Option<String>,
    pub tenant: Option<String>,
    pub segment: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockView {
    pub cidr: String,
    pub network: String,
    pub group: String,
    /// Absent for a released block.
    pub host: Option<String>,
    pub tenant: Option<String>,
    pub segment: Option<String>,
    pub used: i64,
    pub capacity: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointsQuery {
    pub tenant: Option<String>,
    pub host: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewEndpointBody {
    /// Caller-chosen id (`namespace/pod` for Kubernetes); allocating the same id again returns it.
    #[schema(pattern = "^[A-Za-z0-9_:-][A-Za-z0-9._/:-]{0,511}$")]
    pub id: String,
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")]
    pub tenant: String,
    #[serde(default = "default_segment")]
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")]
    pub segment: String,
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")]
    pub host: String,
    #[serde(default)]
    pub labels: LabelMap,
}

/// New labels for an endpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointLabelsBody {
    pub labels: LabelMap,
}

fn default_segment() -> String {
    crate::store::DEFAULT_SEGMENT.to_string()
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    pub id: String,
    pub tenant: String,
    pub segment: String,
    pub host: String,
    pub labels: LabelMap,
    pub ips: Vec<String>,
    pub revision: i64,
    /// Container ports by name (`name: port/PROTOCOL`), from its pod in Kubernetes.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub named_ports: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTokenBody {
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// `admin`, `read`, `tenant` or `node`.
    #[schema(pattern = "^(admin|read|tenant|node)$")]
    pub role: String,
    /// Required for (and only for) tenant tokens.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")]
    pub tenant: Option<String>,
    /// Required for (and only for) node tokens: the host whose agent uses it.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")]
    pub node: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub role: String,
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub created_at: i64,
    /// Only in the answer to the creation: the secret is not stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl From<crate::store::EndpointRecord> for EndpointView {
    fn from(e: crate::store::EndpointRecord) -> EndpointView {
        EndpointView {
            id: e.id,
            tenant: e.tenant,
            segment: e.segment,
            host: e.host,
            labels: e.labels,
            ips: e.ips.iter().map(ToString::to_string).collect(),
            revision: e.revision,
            named_ports: e.named_ports.iter().map(|p| (p.name.clone(), format!("{}/{}", p.port, p.protocol))).collect(),
        }
    }
}

impl From<crate::store::BlockRecord> for BlockView {
    fn from(b: crate::store::BlockRecord) -> BlockView {
        BlockView {
            cidr: b.cidr.to_string(),
            network: b.network,
            group: b.group,
            host: b.host,
            tenant: b.tenant,
            segment: b.segment,
            used: b.used,
            capacity: b.capacity,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VipView {
    pub address: String,
    /// Hosts allowed to hold it (empty when `group` says).
    pub hosts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The host holding it now (none: no healthy host may).
    pub holder: Option<String>,
    pub revision: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewVipBody {
    /// An IPv4 or IPv6 unicast address outside Tessera's networks.
    pub address: String,
    /// The hosts that may hold it; or give `group`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// A group path: any host under it may hold it.
    pub group: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BgpNodeView {
    pub node: String,
    pub group: String,
    pub drained: bool,
    /// Unix seconds of the agent's last report, watch or ack.
    pub last_seen: Option<i64>,
    /// The node's AS (none: its group speaks no BGP).
    pub local_as: Option<u32>,
    /// What the node should announce.
    pub desired: Vec<String>,
    /// What its agent reports announcing.
    pub announced: Vec<String>,
    /// Desired and announced agree.
    pub in_sync: bool,
    /// VIPs the node holds.
    pub vips: Vec<String>,
    /// Each session as the agent reports it: peer, AS, state, established since, prefixes
    /// sent and received, last error, flaps.
    #[schema(value_type = Vec<Object>)]
    pub sessions: Vec<serde_json::Value>,
}

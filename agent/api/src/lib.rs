//! Wire types shared by the controller, the node agent and the CNI plugin.
//!
//! Controller ⇄ agent: the agent watches `GET /v1/nodes/{node}/state?watch=true&since=G`, one
//! [`NodeState`] per line (NDJSON), and acks each generation with `POST /v1/nodes/{node}/ack`.
//! Agent ⇄ CNI plugin: one JSON [`AgentRequest`] line on the agent's unix socket, one JSON
//! [`AgentReply`] line back.

/// How often a controller sends a blank line on an idle watch; an agent that hears nothing for
/// 2.5 times this takes the link for dead and moves to another controller.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);

/// The CNI error code "try again later" (spec 1.1), which the agent's socket and the plugin both
/// answer when the node is not ready for a pod yet.
pub const TRY_AGAIN_LATER: u32 = 11;

/// The nftables table (family `inet`) the agent owns and the policy engine renders (the same as
/// `tessera_policy::nft::TABLE`; a test keeps them equal).
pub const NFT_TABLE: &str = "tessera";

/// The segment a pod joins when it names none (the same as the policy engine's
/// `model::DEFAULT_SEGMENT`; a test keeps them equal, as this crate depends on no other).
pub const DEFAULT_SEGMENT: &str = "default";
use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Everything one node must enforce. `generation` grows whenever the content changes;
/// `digest` names the content, so an agent can tell "same state" without comparing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    pub node: String,
    pub generation: u64,
    pub digest: String,
    /// Endpoints placed on this node.
    pub endpoints: Vec<LocalEndpoint>,
    pub ruleset: Ruleset,
    /// Routes to other hosts' blocks in the same leaf group, via those hosts.
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalEndpoint {
    pub id: String,
    pub tenant: String,
    pub segment: String,
    pub ips: Vec<IpAddr>,
}

/// The node's `table inet tessera`: the table with every set declared empty (`skeleton`, nft
/// text), and the elements of each set and map by name (nft element syntax). Split so that an
/// agent can apply a change of elements alone as a delta.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ruleset {
    pub skeleton: String,
    pub sets: BTreeMap<String, Vec<String>>,
    pub rules: usize,
}

impl Ruleset {
    pub fn element_count(&self) -> usize {
        self.sets.values().map(Vec::len).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub destination: IpNet,
    pub via: IpAddr,
}

/// An agent's report after applying (or failing to apply) a generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ack {
    pub generation: u64,
    pub digest: String,
    /// Why the generation could not be applied; the agent keeps enforcing its previous state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the apply took, in milliseconds.
    #[serde(default)]
    pub apply_ms: f64,
}

/// What the controller knows about one node's distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node: String,
    pub desired_generation: u64,
    pub applied_generation: Option<u64>,
    /// Desired minus applied generations (desired when nothing was applied yet).
    pub lag: u64,
    pub last_error: Option<String>,
    /// Unix seconds of the last watch or ack from the node's agent.
    pub last_seen: Option<i64>,
    /// Agents watching right now.
    pub watchers: usize,
}

/// A request of the CNI plugin to its node's agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum AgentRequest {
    /// Register an attachment and allocate its addresses (idempotent per attachment).
    Allocate(Attachment),
    /// Release an attachment's addresses (idempotent).
    Release { attachment: AttachmentKey },
    /// Answer once the endpoint's rules are enforced on this node, or after `timeout_ms`.
    WaitEnforced { endpoint: String, timeout_ms: u64 },
    /// Tell the host-side interface of an endpoint, so the agent keeps its route in place.
    Wire { endpoint: String, host_interface: String },
    /// Release every attachment not in `keep` (CNI GC).
    Gc { keep: Vec<AttachmentKey> },
    /// Is the agent ready to add pods?
    Status,
}

/// The CNI's identity of one network attachment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentKey {
    pub container_id: String,
    pub ifname: String,
}

impl AttachmentKey {
    /// The endpoint id in the controller. Attachment-scoped, so a DEL of an old sandbox never
    /// releases the addresses of a new one with the same pod name.
    pub fn endpoint_id(&self) -> String {
        format!("cni/{}/{}", self.container_id, self.ifname)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub key: AttachmentKey,
    pub tenant: String,
    pub segment: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum AgentReply {
    Allocated { endpoint: String, ips: Vec<IpNet>, gateway_v4: IpAddr, gateway_v6: IpAddr },
    Done,
    Enforced { generation: u64 },
    Status { ready: bool, message: String },
    Error { code: u32, message: String },
}

/// The link-local gateway every endpoint routes through: the host side of each veth answers
/// for it, so no proxy ARP is needed (the same trick as Calico's).
pub const GATEWAY_V4: &str = "169.254.1.1";
pub const GATEWAY_V6: &str = "fe80::1";

/// Tessera's own routing table and the priority of its rule on every node.
pub const ROUTE_TABLE: u32 = 7743;
pub const RULE_PRIORITY: u32 = 7743;

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
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
    /// How this node speaks BGP to its routers, and what it announces (agent mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<Speaker>,
    /// Virtual IPs this node holds: it answers for them (and announces them when it speaks BGP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vips: Vec<IpAddr>,
}

/// A node's BGP speaker: its sessions and its announcements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Speaker {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    /// Proposed hold time, seconds.
    pub hold_time: u16,
    /// Graceful-restart time advertised, seconds (0: off).
    pub graceful_restart: u16,
    pub peers: Vec<SpeakerPeer>,
    /// Every prefix announced to every peer: the leaf group's prefixes, the node's blocks when
    /// configured, and the VIPs it holds.
    pub prefixes: Vec<IpNet>,
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
    pub communities: Vec<u32>,
    pub large_communities: Vec<[u32; 3]>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpeakerPeer {
    pub address: IpAddr,
    #[serde(rename = "as")]
    pub asn: u32,
    pub port: u16,
    /// IP TTL of the session (None: 1 for eBGP, 64 for iBGP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multihop: Option<u8>,
    /// The file on this node holding the session's TCP-MD5 key (RFC 2385).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// Wait for the router to connect instead of connecting.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub passive: bool,
}

/// What an agent tells its controller every few seconds: that it is alive, and (when it
/// changed, and now and then) how its BGP sessions and VIPs stand.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentReport {
    /// `None`: unchanged since the last report that carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fabric: Option<FabricReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FabricReport {
    pub sessions: Vec<SessionReport>,
    /// The prefixes the speaker announces on its established sessions.
    pub announced: Vec<IpNet>,
    /// The VIPs configured on the node.
    pub vips: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionReport {
    pub peer: IpAddr,
    #[serde(rename = "as")]
    pub asn: u32,
    /// The RFC 4271 state: idle, connect, active, openSent, openConfirm, established.
    pub state: String,
    /// Unix seconds since the session is established.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub established_since: Option<i64>,
    pub prefixes_sent: usize,
    pub prefixes_received: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Times the session went down.
    pub flaps: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalEndpoint {
    pub id: String,
    pub tenant: String,
    pub segment: String,
    pub ips: Vec<IpAddr>,
}

/// A set's elements, hashed: each element and its length (so no two lists hash alike by
/// where the boundaries fall).
fn set_digest(elements: &[String]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for e in elements {
        hash.update((e.len() as u64).to_le_bytes());
        hash.update(e.as_bytes());
    }
    hex::encode(&hash.finalize()[..16])
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
    /// Each set's digest (SHA-256 of its elements, truncated to 128 bits): an agent finds the
    /// sets a change touches without comparing every element. Absent from older controllers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digests: BTreeMap<String, String>,
}

impl Ruleset {
    /// A ruleset with its sets' digests.
    pub fn new(skeleton: String, sets: BTreeMap<String, Vec<String>>, rules: usize) -> Ruleset {
        let digests = sets.iter().map(|(name, elements)| (name.clone(), set_digest(elements))).collect();
        Ruleset { skeleton, sets, rules, digests }
    }

    /// Whether set `name` is known to hold the same elements in both (by digest).
    pub fn same_set(&self, other: &Ruleset, name: &str) -> bool {
        matches!((self.digests.get(name), other.digests.get(name)), (Some(a), Some(b)) if a == b)
    }

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

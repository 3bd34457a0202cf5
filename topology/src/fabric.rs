//! How hosts reach an on-prem L3 fabric: the `bgp` section of a prefix group, inherited downward
//! field by field (a zone names the AS, each rack its ToRs), and what it resolves to for one
//! host's leaf group. Pure: the agent's speaker and the controller read the result.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::spec::SpecError;

/// Who speaks BGP for a group's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BgpMode {
    /// Each host's agent peers with the group's routers and announces the group's prefix.
    Agent,
    /// The controller holding the writer lease peers with the group's routers (route servers)
    /// and announces the group's prefix with each healthy host of the group as a path.
    Controller,
    /// Nobody announces (a subtree that should not, under a parent that does).
    Off,
}

/// A group's `bgp` section as written: every field optional, unset fields inherit the parent's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct BgpSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<BgpMode>,
    /// The hosts' AS number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_as: Option<u32>,
    /// The routers the hosts peer with (the rack's ToRs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<BgpPeerSpec>>,
    /// Proposed hold time in seconds (0, or at least 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<u16>,
    /// Graceful-restart time advertised (RFC 4724), seconds; 0 turns graceful restart off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_restart: Option<u16>,
    /// RFC 1997 communities attached to every announcement, as `ASN:VALUE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communities: Option<Vec<u32>>,
    /// RFC 8092 large communities, as `GLOBAL:LOCAL1:LOCAL2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large_communities: Option<Vec<[u32; 3]>>,
    /// Also announce each host's own blocks (more specific than the group's prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announce_blocks: Option<bool>,
}

/// One router to peer with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BgpPeerSpec {
    pub address: IpAddr,
    #[serde(rename = "as")]
    pub asn: u32,
    #[serde(default = "default_port")]
    pub port: u16,
    /// IP TTL of the session's packets: 1 for a directly connected eBGP peer, more for multihop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multihop: Option<u8>,
    /// A file on each host holding the session's TCP-MD5 key (RFC 2385): the key itself never
    /// passes through the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// Wait for the router to connect (on port 179) instead of connecting to it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub passive: bool,
}

fn default_port() -> u16 {
    179
}

pub const DEFAULT_HOLD_TIME: u16 = 90;
pub const DEFAULT_GRACEFUL_RESTART: u16 = 120;
/// The AS number a 2-octet field carries for a 4-octet AS (RFC 6793): never a real AS.
const AS_TRANS: u32 = 23456;

/// A leaf group's BGP settings after inheritance: what every host placed there runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Fabric {
    /// Who speaks: each host (agent) or the lease-holding controller.
    pub mode: BgpMode,
    /// The AS of whoever speaks.
    pub local_as: u32,
    pub peers: Vec<BgpPeerSpec>,
    pub hold_time: u16,
    pub graceful_restart: u16,
    pub communities: Vec<u32>,
    pub large_communities: Vec<[u32; 3]>,
    pub announce_blocks: bool,
}

impl BgpSpec {
    /// `self` with every unset field taken from `parent`.
    pub fn inherit(&self, parent: &BgpSpec) -> BgpSpec {
        BgpSpec {
            mode: self.mode.or(parent.mode),
            local_as: self.local_as.or(parent.local_as),
            peers: self.peers.clone().or_else(|| parent.peers.clone()),
            hold_time: self.hold_time.or(parent.hold_time),
            graceful_restart: self.graceful_restart.or(parent.graceful_restart),
            communities: self.communities.clone().or_else(|| parent.communities.clone()),
            large_communities: self.large_communities.clone().or_else(|| parent.large_communities.clone()),
            announce_blocks: self.announce_blocks.or(parent.announce_blocks),
        }
    }

    /// What a leaf group with this (inherited) section runs; `None` when nobody speaks.
    /// `field` names the leaf group's section for errors.
    pub fn resolve(&self, field: &str) -> Result<Option<Fabric>, SpecError> {
        if self.mode == Some(BgpMode::Off) || *self == BgpSpec::default() {
            return Ok(None);
        }
        let local_as = self
            .local_as
            .ok_or_else(|| SpecError::new(format!("{field}.localAs"), "BGP needs the hosts' AS number here or in a parent group"))?;
        let peers = self.peers.clone().unwrap_or_default();
        if peers.is_empty() {
            return Err(SpecError::new(format!("{field}.peers"), "BGP needs at least one peer here or in a parent group"));
        }
        Ok(Some(Fabric {
            mode: self.mode.unwrap_or(BgpMode::Agent),
            local_as,
            peers,
            hold_time: self.hold_time.unwrap_or(DEFAULT_HOLD_TIME),
            graceful_restart: self.graceful_restart.unwrap_or(DEFAULT_GRACEFUL_RESTART),
            communities: self.communities.clone().unwrap_or_default(),
            large_communities: self.large_communities.clone().unwrap_or_default(),
            announce_blocks: self.announce_blocks.unwrap_or(false),
        }))
    }
}

/// A group's `bgp` section as a document writes it (strings for communities), before checks.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct BgpText {
    mode: Option<String>,
    local_as: Option<u32>,
    peers: Option<Vec<PeerText>>,
    hold_time: Option<u16>,
    graceful_restart: Option<u16>,
    communities: Option<Vec<String>>,
    large_communities: Option<Vec<String>>,
    announce_blocks: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PeerText {
    address: String,
    #[serde(rename = "as")]
    asn: u32,
    port: Option<u16>,
    multihop: Option<u8>,
    password_file: Option<String>,
    passive: Option<bool>,
}

fn check_as(field: &str, asn: u32) -> Result<u32, SpecError> {
    match asn {
        0 => Err(SpecError::new(field, "AS 0 is reserved (RFC 7607)")),
        AS_TRANS => Err(SpecError::new(field, "AS 23456 is AS_TRANS (RFC 6793), not a real AS")),
        u32::MAX => Err(SpecError::new(field, "AS 4294967295 is reserved (RFC 7300)")),
        _ => Ok(asn),
    }
}

fn number<T: std::str::FromStr>(text: &str) -> Option<T> {
    text.trim().parse().ok()
}

/// `ASN:VALUE`, each 16 bits, or one 32-bit number.
fn community(field: &str, text: &str) -> Result<u32, SpecError> {
    let parsed = match text.split_once(':') {
        Some((high, low)) => number::<u16>(high).zip(number::<u16>(low)).map(|(h, l)| (u32::from(h) << 16) | u32::from(l)),
        None => number::<u32>(text),
    };
    parsed.ok_or_else(|| SpecError::new(field, format!("`{text}` is not a community (ASN:VALUE, each 0-65535)")))
}

fn large_community(field: &str, text: &str) -> Result<[u32; 3], SpecError> {
    let parts: Vec<Option<u32>> = text.split(':').map(number::<u32>).collect();
    match parts[..] {
        [Some(a), Some(b), Some(c)] => Ok([a, b, c]),
        _ => Err(SpecError::new(field, format!("`{text}` is not a large community (GLOBAL:LOCAL1:LOCAL2, each 0-4294967295)"))),
    }
}

impl BgpText {
    /// Check every field; `field` names the section (`topologies[0].groups[1].bgp`).
    pub(crate) fn check(self, field: &str) -> Result<BgpSpec, SpecError> {
        let mode = match self.mode.as_deref() {
            None => None,
            Some("agent") => Some(BgpMode::Agent),
            Some("off") => Some(BgpMode::Off),
            Some("controller") => Some(BgpMode::Controller),
            Some(other) => {
                return Err(SpecError::new(format!("{field}.mode"), format!("`{other}` is not a mode (agent, controller, off)")));
            }
        };
        let local_as = self.local_as.map(|a| check_as(&format!("{field}.localAs"), a)).transpose()?;
        if let Some(hold) = self.hold_time.filter(|h| (1..3).contains(h)) {
            return Err(SpecError::new(
                format!("{field}.holdTime"),
                format!("{hold} s: a hold time is 0 (no keepalives) or at least 3 s (RFC 4271)"),
            ));
        }
        if let Some(gr) = self.graceful_restart.filter(|g| *g > 4095) {
            return Err(SpecError::new(
                format!("{field}.gracefulRestart"),
                format!("{gr} s: the restart time field holds at most 4095 s (RFC 4724)"),
            ));
        }
        let peers = match self.peers {
            None => None,
            Some(list) => {
                let mut peers: Vec<BgpPeerSpec> = Vec::new();
                for (i, p) in list.into_iter().enumerate() {
                    let pfield = format!("{field}.peers[{i}]");
                    let address: IpAddr = p
                        .address
                        .parse()
                        .map_err(|_| SpecError::new(format!("{pfield}.address"), format!("`{}` is not an IP address", p.address)))?;
                    // Loopback is allowed: a route server may run beside the controller.
                    if address.is_unspecified() || address.is_multicast() {
                        return Err(SpecError::new(format!("{pfield}.address"), format!("{address} is not a router's unicast address")));
                    }
                    if peers.iter().any(|q| q.address == address) {
                        return Err(SpecError::new(format!("{pfield}.address"), format!("{address} is listed twice")));
                    }
                    if p.port == Some(0) {
                        return Err(SpecError::new(format!("{pfield}.port"), "port 0 cannot be connected to"));
                    }
                    if p.multihop == Some(0) {
                        return Err(SpecError::new(
                            format!("{pfield}.multihop"),
                            "a TTL of 0 reaches nobody; 1 is a directly connected peer",
                        ));
                    }
                    if let Some(path) = p.password_file.as_deref().filter(|f| !f.starts_with('/') || f.contains('\0') || f.len() > 4096) {
                        return Err(SpecError::new(format!("{pfield}.passwordFile"), format!("`{path}` is not an absolute path")));
                    }
                    let asn = check_as(&format!("{pfield}.as"), p.asn)?;
                    peers.push(BgpPeerSpec {
                        address,
                        asn,
                        port: p.port.unwrap_or(179),
                        multihop: p.multihop,
                        password_file: p.password_file,
                        passive: p.passive.unwrap_or(false),
                    });
                }
                Some(peers)
            }
        };
        let communities = self
            .communities
            .map(|list| {
                list.iter().enumerate().map(|(i, c)| community(&format!("{field}.communities[{i}]"), c)).collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let large_communities = self
            .large_communities
            .map(|list| {
                list.iter()
                    .enumerate()
                    .map(|(i, c)| large_community(&format!("{field}.largeCommunities[{i}]"), c))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(BgpSpec {
            mode,
            local_as,
            peers,
            hold_time: self.hold_time,
            graceful_restart: self.graceful_restart,
            communities,
            large_communities,
            announce_blocks: self.announce_blocks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(json: serde_json::Value) -> BgpText {
        serde_json::from_value(json).expect("wire shape")
    }

    #[test]
    fn communities_and_peers_are_checked_with_the_field_named() {
        let spec = text(serde_json::json!({
            "localAs": 4200000001u32,
            "peers": [{"address": "10.0.0.1", "as": 65001}],
            "communities": ["65000:100", "7"],
            "largeCommunities": ["4200000001:1:2"],
        }))
        .check("g.bgp")
        .expect("valid");
        assert_eq!(spec.communities, Some(vec![(65000 << 16) | 100, 7]));
        assert_eq!(spec.large_communities, Some(vec![[4_200_000_001, 1, 2]]));
        assert_eq!(spec.peers.as_ref().map(|p| p[0].port), Some(179));

        let cases = [
            (serde_json::json!({"communities": ["65536:1"]}), "g.bgp.communities[0]"),
            (serde_json::json!({"largeCommunities": ["1:2"]}), "g.bgp.largeCommunities[0]"),
            (serde_json::json!({"localAs": 23456}), "g.bgp.localAs"),
            (serde_json::json!({"localAs": 0}), "g.bgp.localAs"),
            (serde_json::json!({"holdTime": 2}), "g.bgp.holdTime"),
            (serde_json::json!({"gracefulRestart": 5000}), "g.bgp.gracefulRestart"),
            (serde_json::json!({"mode": "speaker"}), "g.bgp.mode"),
            (serde_json::json!({"peers": [{"address": "10.0.0.1", "as": 1}, {"address": "10.0.0.1", "as": 2}]}), "g.bgp.peers[1].address"),
            (serde_json::json!({"peers": [{"address": "tor-1", "as": 1}]}), "g.bgp.peers[0].address"),
            (serde_json::json!({"peers": [{"address": "224.0.0.1", "as": 1}]}), "g.bgp.peers[0].address"),
            (serde_json::json!({"peers": [{"address": "10.0.0.1", "as": 1, "multihop": 0}]}), "g.bgp.peers[0].multihop"),
            (serde_json::json!({"peers": [{"address": "10.0.0.1", "as": 1, "passwordFile": "tor.key"}]}), "g.bgp.peers[0].passwordFile"),
        ];
        for (json, field) in cases {
            let e = text(json.clone()).check("g.bgp").expect_err(&json.to_string());
            assert_eq!(e.field, field, "{json}: {e}");
        }
    }

    #[test]
    fn fields_inherit_one_by_one_and_resolution_names_what_is_missing() {
        let zone = BgpSpec { local_as: Some(64512), communities: Some(vec![1]), ..Default::default() };
        let peer = BgpPeerSpec {
            address: "10.200.1.1".parse().expect("ip"),
            asn: 65001,
            port: 179,
            multihop: None,
            password_file: None,
            passive: false,
        };
        let rack = BgpSpec { peers: Some(vec![peer.clone()]), hold_time: Some(9), ..Default::default() };
        let fabric = rack.inherit(&zone).resolve("rack.bgp").expect("valid").expect("speaks");
        assert_eq!((fabric.local_as, fabric.hold_time, fabric.graceful_restart), (64512, 9, DEFAULT_GRACEFUL_RESTART));
        assert_eq!((fabric.peers, fabric.communities), (vec![peer], vec![1]));

        assert_eq!(rack.resolve("rack.bgp").expect_err("no AS").field, "rack.bgp.localAs");
        assert_eq!(zone.resolve("zone.bgp").expect_err("no peers").field, "zone.bgp.peers");
        let off = BgpSpec { mode: Some(BgpMode::Off), ..Default::default() };
        assert_eq!(off.inherit(&rack.inherit(&zone)).resolve("r.bgp").expect("valid"), None);
        assert_eq!(BgpSpec::default().resolve("r.bgp").expect("valid"), None);
    }

    #[test]
    fn a_document_sets_the_as_on_the_zone_and_the_routers_on_each_rack() {
        let doc = "networks: [{name: pods, cidr: 10.96.0.0/16}]
groups:
  - name: zone
    bgp: {localAs: 64512, gracefulRestart: 0}
    groups:
      - name: rack-1
        bgp: {peers: [{address: 10.200.1.1, as: 65001}]}
      - name: rack-2
        bgp: {peers: [{address: 10.200.2.1, as: 65002}], holdTime: 3}
";
        let spec = crate::parse_topology(doc, crate::Format::Tessera).expect("valid");
        let layout = crate::Layout::build(&spec).expect("carves");
        let rack2 = layout.group_by_path("zone/rack-2").expect("rack").fabric().expect("valid").expect("speaks");
        assert_eq!((rack2.local_as, rack2.hold_time, rack2.graceful_restart, rack2.peers[0].asn), (64512, 3, 0, 65002));

        let missing = doc.replace("localAs: 64512, ", "");
        let e = crate::Layout::build(&crate::parse_topology(&missing, crate::Format::Tessera).expect("parses")).expect_err("no AS");
        assert_eq!(e.field, "topologies[0].groups[0].groups[0].bgp.localAs", "{e}");
    }
}

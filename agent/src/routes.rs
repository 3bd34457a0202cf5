//! Routes the agent owns: to other hosts' blocks in the same leaf group (Tessera's own table,
//! reached through its own rule) and to each local endpoint through its veth (main table).
//! Owned routes carry Tessera's route protocol number; anything else is never touched.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use tessera_agent_api::{NodeState, ROUTE_TABLE, RULE_PRIORITY};

use crate::error::RouteError;
use tessera_netlink::{Netlink, OwnedRoute};

const MAIN_TABLE: u32 = 254;

/// What a reconcile changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RouteChanges {
    pub added: usize,
    pub removed: usize,
}

/// The routes `state` asks for, given the host interfaces of local endpoints.
pub async fn desired(nl: &Netlink, state: &NodeState, wired: &BTreeMap<String, String>) -> Result<BTreeSet<OwnedRoute>, RouteError> {
    let mut out = BTreeSet::new();
    for r in &state.routes {
        out.insert(OwnedRoute { destination: r.destination, gateway: Some(r.via), device: None, table: ROUTE_TABLE });
    }
    // One dump of the links serves every endpoint (a lookup each costs a round trip per pod).
    let indexes: BTreeMap<String, u32> = match state.endpoints.iter().any(|e| wired.contains_key(&e.id)) {
        true => nl.links().await.map_err(|e| RouteError::new("listing links", e))?.into_iter().map(|(index, name)| (name, index)).collect(),
        false => BTreeMap::new(),
    };
    for e in &state.endpoints {
        let Some(ifname) = wired.get(&e.id) else { continue };
        // A wired endpoint whose veth is gone (pod deleted, DEL pending) has no route to keep.
        let Some(&index) = indexes.get(ifname) else { continue };
        for ip in &e.ips {
            out.insert(OwnedRoute { destination: IpNet::from(*ip), gateway: None, device: Some(index), table: MAIN_TABLE });
        }
    }
    Ok(out)
}

/// Make the owned routes exactly `want`, and the rule that sends lookups to Tessera's table.
pub async fn reconcile(nl: &Netlink, want: &BTreeSet<OwnedRoute>) -> Result<RouteChanges, RouteError> {
    nl.ensure_rule(ROUTE_TABLE, RULE_PRIORITY).await.map_err(|e| RouteError::new("policy rule", e))?;
    let have: BTreeSet<OwnedRoute> = nl.owned_routes().await.map_err(|e| RouteError::new("listing routes", e))?.into_iter().collect();
    let mut changes = RouteChanges::default();
    for stale in have.difference(want) {
        nl.delete_route(stale).await.map_err(|e| RouteError::new(format!("deleting route to {}", stale.destination), e))?;
        changes.removed += 1;
    }
    for missing in want.difference(&have) {
        nl.replace_route(missing).await.map_err(|e| RouteError::new(format!("route {missing:?}"), e))?;
        changes.added += 1;
    }
    Ok(changes)
}

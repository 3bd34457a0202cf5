//! The route plan, built in one place from store records: the API shows it (`GET /v1/routes`),
//! the distributor takes each host's routes from it, and the route publishers will announce it.

use tessera_topology::plan::{BlockInfo, HostInfo};
use tessera_topology::{PlanError, RoutePlan, plan_routes};

use crate::store::{BlockRecord, HostRecord, TopologyRecord};

/// The route plan of the stored topology, hosts and blocks; `budget` bounds the fabric/VPC
/// routes (none: one per populated leaf group).
pub fn plan(
    topology: &TopologyRecord,
    hosts: &[HostRecord],
    blocks: &[BlockRecord],
    budget: Option<usize>,
) -> Result<RoutePlan, PlanError> {
    let layout = &topology.layout;
    let host_infos: Vec<HostInfo> = hosts
        .iter()
        .filter_map(|h| layout.group_by_path(&h.group).map(|g| HostInfo { name: h.name.clone(), group: g.id, ips: h.ips.clone() }))
        .collect();
    let block_infos: Vec<BlockInfo> = blocks.iter().filter_map(|b| b.host.clone().map(|host| BlockInfo { cidr: b.cidr, host })).collect();
    plan_routes(layout, &host_infos, &block_infos, budget)
}

/// The fabric part of the plan only (fabric routes, over-coverage, budget): no host routes,
/// which grow with the hosts of a leaf squared and which views of the fabric do not show.
pub fn fabric_plan(topology: &TopologyRecord, hosts: &[HostRecord], budget: Option<usize>) -> Result<RoutePlan, PlanError> {
    plan(topology, hosts, &[], budget)
}

//! Tessera's topology model, pure: networks and prefix groups, host placement, block IPAM
//! decisions, route aggregation and route planning.
//!
//! **Architecture Invariant:** this crate does no IO, spawns nothing and reads no clock. Inputs
//! are plain data, outputs are plain data or errors that name the offending field.

pub mod aggregate;
pub mod change;
pub mod cidr;
pub mod fabric;
pub mod format;
pub mod ipam;
pub mod layout;
pub mod placement;
pub mod plan;
#[cfg(feature = "schema")]
pub mod schema;
pub mod spec;

pub use aggregate::{aggregate, subtract};
pub use cidr::{Family, Prefix};
pub use fabric::{BgpSpec, Fabric};
pub use format::{Format, parse_topology};
pub use ipam::{BlockChoice, BlockOwner, BlockState};
pub use layout::{Group, GroupId, Layout, Network, NetworkId};
pub use placement::{PlacementError, place_host};
pub use plan::{PlanError, RoutePlan, plan_routes};
pub use spec::{HostSpec, Labels, SpecError, TopologySpec};

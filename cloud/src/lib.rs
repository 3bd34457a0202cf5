//! Route targets: AWS VPC route tables and BGP announcements, fed by the route plan of
//! `tessera-topology`.
//!
//! `vpc` plans VPC route tables, pure (what a table should hold, the fewest calls to get there,
//! ownership, collisions, drift, the gateway of a group); `pace` paces the calls (token bucket,
//! backoff with jitter), pure. The EC2 adapter (aws-sdk-ec2) that carries the calls out is
//! later work.

pub mod pace;
pub mod vpc;

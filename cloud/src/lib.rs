//! Route targets: AWS VPC route tables and BGP announcements, fed by the route plan of
//! `tessera-topology`.
//!
//! Not built yet: the REST API already serves the plan (`GET /v1/routes`); reconciling it into
//! a VPC route table or a BGP fabric is later work.

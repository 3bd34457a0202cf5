//! The EC2 side of VPC route tables: read what tables hold (paginated) and carry out the
//! planner's calls (`tessera_cloud::vpc::Call`) as CreateRoute, ReplaceRoute and DeleteRoute.
//! Everything decided is in `tessera_cloud`; errors are sorted here into what the reconciler
//! does about them (slow down, give up on this pass, report).

use ipnet::IpNet;
use tessera_cloud::vpc::{Call, Route, Target};

/// Why a call failed, as the reconciler acts on it.
#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    /// `RequestLimitExceeded` or another throttling answer: back off and try again.
    #[error("throttled: {0}")]
    Throttled(String),
    /// The table or route is not there (deleted out of band): describe again.
    #[error("not found: {0}")]
    NotFound(String),
    /// Anything else (bad credentials, permissions, a bad id, an unreachable endpoint).
    #[error("{0}")]
    Failed(String),
}

fn classify<E: aws_sdk_ec2::error::ProvideErrorMetadata + std::fmt::Debug>(e: &E) -> Ec2Error {
    let code = e.code().unwrap_or_default().to_string();
    let message = format!("{}: {}", if code.is_empty() { "error" } else { &code }, e.message().unwrap_or("no message"));
    match code.as_str() {
        "RequestLimitExceeded" | "Throttling" | "ThrottlingException" | "TooManyRequestsException" => Ec2Error::Throttled(message),
        c if c.ends_with(".NotFound") || c == "InvalidRouteTableID.NotFound" => Ec2Error::NotFound(message),
        "" => Ec2Error::Failed(format!("{e:?}")),
        _ => Ec2Error::Failed(message),
    }
}

/// Where to reach EC2.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub region: String,
    /// A VPC endpoint or a test server instead of the public endpoint.
    pub endpoint_url: Option<String>,
    /// Let the SDK retry by itself (off in tests against servers that answer 500 on their own bugs).
    pub sdk_retries: bool,
}

/// An EC2 client for route tables.
#[derive(Debug, Clone)]
pub struct Ec2 {
    client: aws_sdk_ec2::Client,
}

/// A route table as described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub id: String,
    pub vpc: String,
    pub routes: Vec<Route>,
}

/// A route request's destination, in the field of its family (the SDK's builders share no trait).
macro_rules! routed {
    ($request:expr, $destination:expr) => {
        match $destination {
            IpNet::V4(_) => $request.destination_cidr_block($destination.to_string()),
            IpNet::V6(_) => $request.destination_ipv6_cidr_block($destination.to_string()),
        }
    };
}

/// A route request's target: an instance or a network interface, never anything else.
macro_rules! aimed {
    ($request:expr, $target:expr) => {
        match $target {
            Target::Instance(id) => $request.instance_id(id),
            Target::Interface(id) => $request.network_interface_id(id),
            Target::Other(kind, _) => return Err(Ec2Error::Failed(format!("Tessera never points routes at a {kind}"))),
        }
    };
}

impl Ec2 {
    /// Credentials and the rest come from the standard AWS chain (environment, profile, SSO,
    /// instance metadata, web identity for IRSA).
    pub async fn connect(settings: &Settings) -> Ec2 {
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).region(aws_config::Region::new(settings.region.clone()));
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_ec2::config::Builder::from(&shared);
        if !settings.sdk_retries {
            config = config.retry_config(aws_config::retry::RetryConfig::disabled());
        }
        Ec2 { client: aws_sdk_ec2::Client::from_conf(config.build()) }
    }

    /// The tables with these ids, or carrying tag `key=value` (every page).
    pub async fn tables(&self, ids: &[String], tag: Option<(&str, &str)>) -> Result<Vec<Table>, Ec2Error> {
        let mut request = self.client.describe_route_tables();
        if !ids.is_empty() {
            request = request.set_route_table_ids(Some(ids.to_vec()));
        }
        if let Some((key, value)) = tag {
            request = request.filters(aws_sdk_ec2::types::Filter::builder().name(format!("tag:{key}")).values(value).build());
        }
        let mut pages = request.into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(&e))?;
            for t in page.route_tables() {
                out.push(Table {
                    id: t.route_table_id().unwrap_or_default().to_string(),
                    vpc: t.vpc_id().unwrap_or_default().to_string(),
                    routes: t.routes().iter().filter_map(route).collect(),
                });
            }
        }
        Ok(out)
    }

    /// Carry out one call on `table`.
    pub async fn call(&self, table: &str, call: &Call) -> Result<(), Ec2Error> {
        match call {
            Call::Create { destination, target } => {
                let r = routed!(self.client.create_route().route_table_id(table), destination);
                aimed!(r, target).send().await.map(|_| ()).map_err(|e| classify(&e))
            }
            Call::Replace { destination, target } => {
                let r = routed!(self.client.replace_route().route_table_id(table), destination);
                aimed!(r, target).send().await.map(|_| ()).map_err(|e| classify(&e))
            }
            Call::Delete { destination } => {
                let r = routed!(self.client.delete_route().route_table_id(table), destination);
                r.send().await.map(|_| ()).map_err(|e| classify(&e))
            }
        }
    }
}

/// A described route as the planner sees it; routes to prefix lists (no CIDR) are left out:
/// they are never Tessera's and a CIDR never equals them.
fn route(r: &aws_sdk_ec2::types::Route) -> Option<Route> {
    let destination: IpNet = r.destination_cidr_block().or(r.destination_ipv6_cidr_block())?.parse().ok()?;
    let other = |kind: &str, id: &str| Target::Other(kind.to_string(), id.to_string());
    let target = if let Some(id) = r.network_interface_id().filter(|_| r.instance_id().is_none()) {
        Target::Interface(id.to_string())
    } else if let Some(id) = r.instance_id() {
        Target::Instance(id.to_string())
    } else if let Some(id) = r.gateway_id() {
        other(if id == "local" { "local" } else { "gateway" }, id)
    } else if let Some(id) = r.nat_gateway_id() {
        other("nat-gateway", id)
    } else if let Some(id) = r.vpc_peering_connection_id() {
        other("peering", id)
    } else if let Some(id) = r.transit_gateway_id() {
        other("transit-gateway", id)
    } else if let Some(id) = r.egress_only_internet_gateway_id() {
        other("egress-only-gateway", id)
    } else {
        other("other", r.local_gateway_id().or(r.carrier_gateway_id()).or(r.core_network_arn()).unwrap_or("?"))
    };
    Some(Route { destination, target, interface: r.network_interface_id().map(String::from) })
}

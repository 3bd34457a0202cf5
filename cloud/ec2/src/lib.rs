//! The EC2 side of VPC route tables: read what tables hold (paginated) and carry out the
//! planner's calls (`tessera_cloud::vpc::Call`) as CreateRoute, ReplaceRoute and DeleteRoute.
//! Everything decided is in `tessera_cloud`; errors are sorted here into what the reconciler
//! does about them (slow down, give up on this pass, report).

use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{DisplayErrorContext, SdkError};
use ipnet::IpNet;
use tessera_cloud::vpc::{Call, Route, Target};

/// Why a call failed, as the reconciler acts on it.
#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    /// `RequestLimitExceeded` or another throttling answer: EC2 did nothing; back off and try
    /// again.
    #[error("throttled: {0}")]
    Throttled(String),
    /// The table or route is not there (deleted out of band): describe again.
    #[error("not found: {0}")]
    NotFound(String),
    /// A 5xx answer, a dropped connection or a timeout: the call may or may not have been
    /// carried out, so it is never blindly repeated; the next pass finds out from the table.
    #[error("no answer: {0}")]
    Unanswered(String),
    /// Anything else (bad credentials, permissions, a bad id, an unreachable endpoint).
    #[error("{0}")]
    Failed(String),
}

/// Codes of EC2 answers that mean "slow down".
const THROTTLING: [&str; 4] = ["RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException"];

/// Codes that mean the credentials (the standard AWS chain) are wrong, named as such.
const CREDENTIALS: [&str; 5] =
    ["AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "UnrecognizedClientException", "ExpiredToken"];

fn classify<E>(e: &SdkError<E, HttpResponse>) -> Ec2Error
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    let full = || DisplayErrorContext(e).to_string();
    match e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            let code = err.code().unwrap_or_default();
            let status = service.raw().status();
            let message = match (code, err.message()) {
                ("", None) => format!("HTTP {status} with no EC2 error in it"),
                (code, message) => format!("{}: {}", if code.is_empty() { "error" } else { code }, message.unwrap_or("no message")),
            };
            match code {
                c if THROTTLING.contains(&c) => Ec2Error::Throttled(message),
                c if c.ends_with(".NotFound") => Ec2Error::NotFound(message),
                c if CREDENTIALS.contains(&c) => Ec2Error::Failed(format!(
                    "credentials (the standard AWS chain: AWS_ACCESS_KEY_ID, AWS_PROFILE, instance metadata, web identity) refused: {message}"
                )),
                _ if status.is_server_error() => Ec2Error::Unanswered(message),
                _ => Ec2Error::Failed(message),
            }
        }
        // A body that is no EC2 answer (an HTML error page) from a failing server.
        SdkError::ResponseError(r) if r.raw().status().is_server_error() => Ec2Error::Unanswered(format!("HTTP {}", r.raw().status())),
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => Ec2Error::Unanswered(full()),
        SdkError::TimeoutError(_) => Ec2Error::Unanswered(full()),
        _ => Ec2Error::Failed(full()),
    }
}

/// Where to reach EC2.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub region: String,
    /// A VPC endpoint or a test server instead of the public endpoint.
    pub endpoint_url: Option<String>,
    /// Let the SDK retry reads by itself (off in tests against servers that answer 500 on their
    /// own bugs). Mutating calls are never retried by the SDK: each attempt goes through
    /// Tessera's pacing, and an unanswered one is not repeated blindly.
    pub sdk_retries: bool,
}

/// An EC2 client for route tables.
#[derive(Debug, Clone)]
pub struct Ec2 {
    /// Describes.
    reader: aws_sdk_ec2::Client,
    /// Create, Replace, Delete: no SDK retries.
    writer: aws_sdk_ec2::Client,
}

/// A route table as described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub id: String,
    pub vpc: String,
    pub routes: Vec<Route>,
}

/// The subnet an instance or interface is in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Subnet {
    pub id: String,
    pub vpc: String,
}

/// EC2 takes at most this many values in one filter.
const FILTER_VALUES: usize = 200;

fn filter(name: &str, values: &[String]) -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder().name(name).set_values(Some(values.to_vec())).build()
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
        let config = aws_sdk_ec2::config::Builder::from(&shared);
        let once = config.clone().retry_config(aws_config::retry::RetryConfig::disabled()).build();
        let reader = if settings.sdk_retries { config.build() } else { once.clone() };
        Ec2 { reader: aws_sdk_ec2::Client::from_conf(reader), writer: aws_sdk_ec2::Client::from_conf(once) }
    }

    /// The tables with these ids, or carrying tag `key=value` (every page).
    pub async fn tables(&self, ids: &[String], tag: Option<(&str, &str)>) -> Result<Vec<Table>, Ec2Error> {
        let mut request = self.reader.describe_route_tables();
        if !ids.is_empty() {
            request = request.set_route_table_ids(Some(ids.to_vec()));
        }
        if let Some((key, value)) = tag {
            request = request.filters(filter(&format!("tag:{key}"), &[value.to_string()]));
        }
        Ok(self.described(request).await?.into_iter().map(|(t, _)| t).collect())
    }

    /// The tables that route `subnets`: each one's explicit association, else its VPC's main
    /// table (as EC2 itself decides).
    pub async fn subnet_tables(&self, subnets: &[Subnet]) -> Result<Vec<Table>, Ec2Error> {
        let mut out: Vec<Table> = Vec::new();
        let mut associated = std::collections::BTreeSet::new();
        let ids: Vec<String> = subnets.iter().map(|s| s.id.clone()).collect();
        for chunk in ids.chunks(FILTER_VALUES) {
            let request = self.reader.describe_route_tables().filters(filter("association.subnet-id", chunk));
            for (table, explicit) in self.described(request).await? {
                associated.extend(explicit.into_iter().filter(|s| chunk.contains(s)));
                out.push(table);
            }
        }
        let mut vpcs: Vec<String> = subnets.iter().filter(|s| !associated.contains(&s.id)).map(|s| s.vpc.clone()).collect();
        vpcs.sort();
        vpcs.dedup();
        for chunk in vpcs.chunks(FILTER_VALUES) {
            let request =
                self.reader.describe_route_tables().filters(filter("vpc-id", chunk)).filters(filter("association.main", &["true".into()]));
            out.extend(self.described(request).await?.into_iter().map(|(t, _)| t));
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        Ok(out)
    }

    /// Every page of a DescribeRouteTables: each table with the subnets explicitly associated.
    async fn described(
        &self,
        request: aws_sdk_ec2::operation::describe_route_tables::builders::DescribeRouteTablesFluentBuilder,
    ) -> Result<Vec<(Table, Vec<String>)>, Ec2Error> {
        let mut pages = request.into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(&e))?;
            for t in page.route_tables() {
                let table = Table {
                    id: t.route_table_id().unwrap_or_default().to_string(),
                    vpc: t.vpc_id().unwrap_or_default().to_string(),
                    routes: t.routes().iter().filter_map(route).collect(),
                };
                let subnets = t.associations().iter().filter_map(|a| a.subnet_id().map(String::from)).collect();
                out.push((table, subnets));
            }
        }
        Ok(out)
    }

    /// The subnet of each of these instances or interfaces that EC2 knows (an unknown id is
    /// left out, not an error: one host's bad target must not hide every table).
    pub async fn subnets(&self, targets: &[Target]) -> Result<Vec<(Target, Subnet)>, Ec2Error> {
        let mut out = Vec::new();
        let ids = |kind: fn(&Target) -> Option<&String>| targets.iter().filter_map(kind).cloned().collect::<Vec<String>>();
        let instances = ids(|t| if let Target::Instance(id) = t { Some(id) } else { None });
        for chunk in instances.chunks(FILTER_VALUES) {
            let mut pages = self.reader.describe_instances().filters(filter("instance-id", chunk)).into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| classify(&e))?;
                for i in page.reservations().iter().flat_map(|r| r.instances()) {
                    if let (Some(id), Some(subnet), Some(vpc)) = (i.instance_id(), i.subnet_id(), i.vpc_id()) {
                        out.push((Target::Instance(id.into()), Subnet { id: subnet.into(), vpc: vpc.into() }));
                    }
                }
            }
        }
        let interfaces = ids(|t| if let Target::Interface(id) = t { Some(id) } else { None });
        for chunk in interfaces.chunks(FILTER_VALUES) {
            let mut pages =
                self.reader.describe_network_interfaces().filters(filter("network-interface-id", chunk)).into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| classify(&e))?;
                for n in page.network_interfaces() {
                    if let (Some(id), Some(subnet), Some(vpc)) = (n.network_interface_id(), n.subnet_id(), n.vpc_id()) {
                        out.push((Target::Interface(id.into()), Subnet { id: subnet.into(), vpc: vpc.into() }));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Turn off the source/destination check of a gateway's instance or interface, so EC2
    /// delivers it traffic addressed to the pods behind it.
    pub async fn disable_source_dest_check(&self, target: &Target) -> Result<(), Ec2Error> {
        let off = aws_sdk_ec2::types::AttributeBooleanValue::builder().value(false).build();
        match target {
            Target::Instance(id) => self
                .writer
                .modify_instance_attribute()
                .instance_id(id)
                .source_dest_check(off)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&e)),
            Target::Interface(id) => self
                .writer
                .modify_network_interface_attribute()
                .network_interface_id(id)
                .source_dest_check(off)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify(&e)),
            Target::Other(kind, _) => Err(Ec2Error::Failed(format!("a {kind} has no source/destination check"))),
        }
    }

    /// Carry out one call on `table`.
    pub async fn call(&self, table: &str, call: &Call) -> Result<(), Ec2Error> {
        match call {
            Call::Create { destination, target } => {
                let r = routed!(self.writer.create_route().route_table_id(table), destination);
                aimed!(r, target).send().await.map(|_| ()).map_err(|e| classify(&e))
            }
            Call::Replace { destination, target } => {
                let r = routed!(self.writer.replace_route().route_table_id(table), destination);
                aimed!(r, target).send().await.map(|_| ()).map_err(|e| classify(&e))
            }
            Call::Delete { destination } => {
                let r = routed!(self.writer.delete_route().route_table_id(table), destination);
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

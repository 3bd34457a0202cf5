//! The commands: each builds one or two API calls and prints a table or JSON.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tessera_topology::{Format, parse_topology};

use crate::client::{Api, encode, segment};
use crate::table::{cell, render};
use crate::{Cli, Command, Output};

#[derive(Debug, Subcommand)]
pub enum TopologyCmd {
    /// Groups with their CIDRs, hosts and utilization.
    Show,
    /// Replace the topology with a Tessera (YAML/JSON) or Romana v2 file.
    Apply {
        /// The topology file (YAML or JSON).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Show the plan without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// File format (default: detect).
        #[arg(long, default_value = "auto", value_parser = ["auto", "tessera", "romana"])]
        format: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum HostsCmd {
    /// Every host with its group, underlay IPs, labels and CIDRs.
    List,
    /// One host.
    Show {
        /// The host's name.
        name: String,
    },
    /// Register a host; it is placed by its labels.
    Add {
        /// The host's name (its node name in Kubernetes).
        name: String,
        /// Underlay IP (repeatable: one per family).
        #[arg(long = "ip", required = true)]
        ips: Vec<String>,
        /// key=value, repeatable.
        #[arg(long = "label")]
        labels: Vec<String>,
        /// The EC2 instance (i-…) or network interface (eni-…) VPC routes point at when the
        /// host is its group's gateway.
        #[arg(long)]
        cloud_target: Option<String>,
    },
    /// Remove a host, releasing its endpoints and blocks.
    Remove {
        /// The host's name.
        name: String,
    },
    /// Drain a host: it withdraws its BGP announcements and gives up its VIPs (pods stay).
    Drain {
        /// The host's name.
        name: String,
    },
    /// Bring a drained host back.
    Undrain {
        /// The host's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum VipsCmd {
    /// Every VIP, who may hold it and who does.
    List,
    /// Define a VIP held by one healthy host of `--host`s (or of `--group`).
    Add {
        /// An IPv4 or IPv6 address outside Tessera's networks.
        address: String,
        /// A host allowed to hold it (repeatable).
        #[arg(long = "host", conflicts_with = "group")]
        hosts: Vec<String>,
        /// A group path: any host under it may hold it.
        #[arg(long)]
        group: Option<String>,
    },
    /// Remove a VIP: its holder stops answering for it and withdraws it.
    Remove { address: String },
}

#[derive(Debug, Subcommand)]
pub enum TenantsCmd {
    /// Every tenant with its segments and CIDRs.
    List,
    /// One tenant.
    Show {
        /// The tenant's name.
        name: String,
    },
    /// Create a tenant (with its `default` segment).
    Add {
        /// The tenant's name (a Kubernetes namespace's name).
        name: String,
        /// key=value, repeatable (namespace labels that policies select on).
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Delete a tenant without endpoints; its tokens are revoked.
    Remove {
        /// The tenant's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SegmentsCmd {
    /// The segments of a tenant.
    List {
        /// The tenant.
        tenant: String,
    },
    /// One segment with its blocks, aggregated.
    Show {
        /// The tenant.
        tenant: String,
        /// The segment.
        name: String,
    },
    /// Create a segment.
    Add {
        /// The tenant.
        tenant: String,
        /// The segment's name (pods choose it with the label `tessera.io/segment`).
        name: String,
        /// key=value, repeatable.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Delete a segment without endpoints (never `default`).
    Remove {
        /// The tenant.
        tenant: String,
        /// The segment.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum EndpointsCmd {
    /// Endpoints with their addresses and labels.
    List {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// Only those on this host.
        #[arg(long)]
        host: Option<String>,
    },
    /// One endpoint.
    Show {
        /// The endpoint's id (`namespace/pod` for pods).
        id: String,
    },
    /// Allocate addresses for an endpoint.
    Add {
        /// The endpoint's id (`namespace/pod` for pods).
        id: String,
        /// Its tenant.
        #[arg(long)]
        tenant: String,
        /// Its segment.
        #[arg(long, default_value = "default")]
        segment: String,
        /// The host it runs on.
        #[arg(long)]
        host: String,
        /// key=value, repeatable.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Replace an endpoint's labels (policies that select by label follow).
    Label {
        /// The endpoint's id.
        id: String,
        /// key=value, repeatable; the new labels replace all the old ones.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Release an endpoint's addresses.
    Remove {
        /// The endpoint's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum BlocksCmd {
    /// Address blocks with their owner and use.
    List {
        /// Only this host's.
        #[arg(long)]
        host: Option<String>,
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this segment's.
        #[arg(long)]
        segment: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct RoutesArgs {
    /// `cloud`: the same as `--cloud`.
    #[arg(value_enum)]
    pub scope: Option<RouteScope>,
    /// Most fabric/VPC routes to use.
    #[arg(long)]
    pub budget: Option<usize>,
    /// The VPC route tables as the controller keeps them: desired and actual routes, budget,
    /// collisions, drift repairs, last error (ask the writer-lease holder: `tessera controllers`).
    #[arg(long, conflicts_with = "budget")]
    pub cloud: bool,
}

/// Which routes `tessera routes` shows besides the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RouteScope {
    /// The VPC route tables as the controller keeps them.
    Cloud,
}

#[derive(Debug, Subcommand)]
pub enum PoliciesCmd {
    /// Stored policies the token may read.
    List,
    /// Store the policies of YAML/JSON files (all or none), then distribute them.
    Apply {
        /// Policy files (repeatable).
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// Remove a policy by id (`NetworkPolicy shop/deny-all` or `NetworkPolicy/shop/deny-all`).
    Remove {
        /// The policy's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCmd {
    /// Tokens (never their secrets).
    List,
    /// Create a token; its secret is printed once.
    Create {
        /// What the token is for.
        #[arg(long)]
        name: String,
        /// What it may do.
        #[arg(long, value_parser = ["admin", "read", "tenant", "node"])]
        role: String,
        /// The tenant of a tenant token.
        #[arg(long)]
        tenant: Option<String>,
        /// The host of a node token (its agent's).
        #[arg(long)]
        node: Option<String>,
    },
    /// Delete a token (never the last admin token).
    Remove {
        /// The token's id (the `tsr_<id>_` part).
        id: String,
    },
}

fn labels(pairs: &[String]) -> anyhow::Result<Value> {
    let mut map = serde_json::Map::new();
    for p in pairs {
        let (k, v) = p.split_once('=').with_context(|| format!("--label `{p}`: expected key=value"))?;
        map.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(Value::Object(map))
}

fn query(pairs: &[(&str, &Option<String>)]) -> String {
    let parts: Vec<String> = pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v)))).collect();
    if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
}

/// Print `value` as JSON, or as a table of `columns` (header, JSON key) over a list or one object.
fn print(output: Output, value: &Value, columns: &[(&str, &str)]) {
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
        return;
    }
    let items: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let rows: Vec<Vec<String>> = items.iter().map(|item| columns.iter().map(|(_, key)| cell(&item[*key])).collect()).collect();
    let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
    println!("{}", render(&headers, &rows));
}

const HOST_COLUMNS: &[(&str, &str)] = &[("NAME", "name"), ("GROUP", "group"), ("IPS", "ips"), ("LABELS", "labels"), ("CIDRS", "cidrs")];
const VIP_COLUMNS: &[(&str, &str)] = &[("ADDRESS", "address"), ("HOLDER", "holder"), ("HOSTS", "hosts"), ("GROUP", "group")];
const BGP_COLUMNS: &[(&str, &str)] = &[
    ("NODE", "node"),
    ("AS", "localAs"),
    ("SESSIONS", "sessions"),
    ("DESIRED", "desired"),
    ("ANNOUNCED", "announced"),
    ("IN SYNC", "inSync"),
    ("VIPS", "vips"),
];
const TENANT_COLUMNS: &[(&str, &str)] = &[("NAME", "name"), ("SEGMENTS", "segments"), ("CIDRS", "cidrs")];
const SEGMENT_COLUMNS: &[(&str, &str)] = &[("TENANT", "tenant"), ("NAME", "name"), ("CIDRS", "cidrs"), ("BLOCKS", "blocks")];
const ENDPOINT_COLUMNS: &[(&str, &str)] =
    &[("ID", "id"), ("TENANT", "tenant"), ("SEGMENT", "segment"), ("HOST", "host"), ("IPS", "ips"), ("LABELS", "labels")];
const BLOCK_COLUMNS: &[(&str, &str)] = &[
    ("CIDR", "cidr"),
    ("NETWORK", "network"),
    ("GROUP", "group"),
    ("HOST", "host"),
    ("TENANT", "tenant"),
    ("SEGMENT", "segment"),
    ("USED", "used"),
    ("CAPACITY", "capacity"),
];
const TOKEN_COLUMNS: &[(&str, &str)] =
    &[("ID", "id"), ("NAME", "name"), ("ROLE", "role"), ("TENANT", "tenant"), ("NODE", "node"), ("TOKEN", "token")];
const POLICY_COLUMNS: &[(&str, &str)] =
    &[("ID", "id"), ("TENANT", "tenant"), ("REVISION", "revision"), ("ORIGIN", "origin"), ("ENFORCED ON", "enforcedOn")];
const NODE_COLUMNS: &[(&str, &str)] = &[
    ("NODE", "node"),
    ("DESIRED", "desiredGeneration"),
    ("APPLIED", "appliedGeneration"),
    ("LAG", "lag"),
    ("WATCHERS", "watchers"),
    ("LAST SEEN", "lastSeen"),
    ("LAST ERROR", "lastError"),
];

pub fn run(cli: &Cli) -> anyhow::Result<()> {
    // Policy commands work offline, from files.
    if let Command::Policy(cmd) = &cli.command {
        return crate::policy::run(cmd, cli.output);
    }
    let api = Api::new(&cli.server, cli.token.as_deref())?;
    let out = cli.output;
    match &cli.command {
        Command::Topology(TopologyCmd::Show) => {
            let t = api.get("/v1/topology")?;
            if out == Output::Json {
                print(out, &t, &[]);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = t["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|g| {
                    let used = format!("{} ({:.2}%)", g["usedAddresses"], g["utilization"].as_f64().unwrap_or(0.0) * 100.0);
                    vec![cell(&g["path"]), cell(&g["cidrs"]), cell(&g["assignment"]), cell(&g["hosts"]), cell(&g["blocks"]), used]
                })
                .collect();
            println!("revision {}", t["revision"]);
            println!("{}", render(&["GROUP", "CIDRS", "ASSIGNMENT", "HOSTS", "BLOCKS", "USED"], &rows));
        }
        Command::Topology(TopologyCmd::Apply { file, dry_run, format }) => {
            let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
            // Check locally first, so errors name the file.
            let parsed = match format.as_str() {
                "tessera" => Format::Tessera,
                "romana" => Format::Romana,
                _ => Format::Auto,
            };
            parse_topology(&text, parsed).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let path = format!("/v1/topology?format={format}{}", if *dry_run { "&dryRun=true" } else { "" });
            let answer = api.put_text(&path, text, "application/yaml")?;
            if out == Output::Json {
                print(out, &answer, &[]);
                return Ok(());
            }
            print_plan(&answer);
        }
        Command::Hosts(cmd) => match cmd {
            HostsCmd::List => print(out, &api.get("/v1/hosts")?, HOST_COLUMNS),
            HostsCmd::Show { name } => print(out, &api.get(&format!("/v1/hosts/{}", segment(name)?))?, HOST_COLUMNS),
            HostsCmd::Add { name, ips, labels: l, cloud_target } => print(
                out,
                &api.post("/v1/hosts", &json!({"name": name, "ips": ips, "labels": labels(l)?, "cloudTarget": cloud_target}))?,
                HOST_COLUMNS,
            ),
            HostsCmd::Remove { name } => {
                api.delete(&format!("/v1/hosts/{}", segment(name)?))?;
                println!("host {name} removed");
            }
            HostsCmd::Drain { name } => {
                api.post(&format!("/v1/hosts/{}/drain", segment(name)?), &json!({}))?;
                println!("host {name} drained: it withdraws its announcements and VIPs");
            }
            HostsCmd::Undrain { name } => {
                api.delete(&format!("/v1/hosts/{}/drain", segment(name)?))?;
                println!("host {name} back in service");
            }
        },
        Command::Vips(cmd) => match cmd {
            VipsCmd::List => print(out, &api.get("/v1/vips")?, VIP_COLUMNS),
            VipsCmd::Add { address, hosts, group } => {
                print(out, &api.post("/v1/vips", &json!({"address": address, "hosts": hosts, "group": group}))?, VIP_COLUMNS)
            }
            VipsCmd::Remove { address } => {
                api.delete(&format!("/v1/vips/{}", segment(address)?))?;
                println!("VIP {address} removed");
            }
        },
        Command::Bgp => {
            let mut nodes = api.get("/v1/bgp")?;
            if out == Output::Table {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                for n in nodes.as_array_mut().into_iter().flatten() {
                    let sessions: Vec<String> = n["sessions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|s| {
                            let since = s["establishedSince"]
                                .as_u64()
                                .map(|t| format!(" {}", crate::table::ago(now.saturating_sub(t))))
                                .unwrap_or_default();
                            let error = s["lastError"]
                                .as_str()
                                .filter(|_| s["state"] != "established")
                                .map(|e| format!(" ({e})"))
                                .unwrap_or_default();
                            format!(
                                "{} AS{} {}{since}{error}",
                                s["peer"].as_str().unwrap_or("?"),
                                s["as"],
                                s["state"].as_str().unwrap_or("?")
                            )
                        })
                        .collect();
                    n["sessions"] = Value::String(if sessions.is_empty() { "-".into() } else { sessions.join("; ") });
                    n["inSync"] = Value::String(if n["inSync"] == true { "yes".into() } else { "NO".into() });
                    if n["drained"] == true {
                        n["node"] = Value::String(format!("{} (drained)", n["node"].as_str().unwrap_or_default()));
                    }
                }
            }
            print(out, &nodes, BGP_COLUMNS)
        }
        Command::Tenants(cmd) => match cmd {
            TenantsCmd::List => print(out, &api.get("/v1/tenants")?, TENANT_COLUMNS),
            TenantsCmd::Show { name } => print(out, &api.get(&format!("/v1/tenants/{}", segment(name)?))?, TENANT_COLUMNS),
            TenantsCmd::Add { name, labels: l } => {
                print(out, &api.post("/v1/tenants", &json!({"name": name, "labels": labels(l)?}))?, TENANT_COLUMNS)
            }
            TenantsCmd::Remove { name } => {
                api.delete(&format!("/v1/tenants/{}", segment(name)?))?;
                println!("tenant {name} removed");
            }
        },
        Command::Segments(cmd) => match cmd {
            SegmentsCmd::List { tenant } => print(out, &api.get(&format!("/v1/tenants/{}/segments", segment(tenant)?))?, SEGMENT_COLUMNS),
            SegmentsCmd::Show { tenant, name } => {
                print(out, &api.get(&format!("/v1/tenants/{}/segments/{}", segment(tenant)?, segment(name)?))?, SEGMENT_COLUMNS)
            }
            SegmentsCmd::Add { tenant, name, labels: l } => print(
                out,
                &api.post(&format!("/v1/tenants/{}/segments", segment(tenant)?), &json!({"name": name, "labels": labels(l)?}))?,
                SEGMENT_COLUMNS,
            ),
            SegmentsCmd::Remove { tenant, name } => {
                api.delete(&format!("/v1/tenants/{}/segments/{}", segment(tenant)?, segment(name)?))?;
                println!("segment {tenant}/{name} removed");
            }
        },
        Command::Endpoints(cmd) => match cmd {
            EndpointsCmd::List { tenant, host } => {
                print(out, &api.get(&format!("/v1/endpoints{}", query(&[("tenant", tenant), ("host", host)])))?, ENDPOINT_COLUMNS)
            }
            EndpointsCmd::Show { id } => print(out, &api.get(&format!("/v1/endpoints/{}", segment(id)?))?, ENDPOINT_COLUMNS),
            EndpointsCmd::Label { id, labels: l } => {
                print(out, &api.put(&format!("/v1/endpoints/{}", segment(id)?), &json!({"labels": labels(l)?}))?, ENDPOINT_COLUMNS)
            }
            EndpointsCmd::Add { id, tenant, segment: seg, host, labels: l } => print(
                out,
                &api.post("/v1/endpoints", &json!({"id": id, "tenant": tenant, "segment": seg, "host": host, "labels": labels(l)?}))?,
                ENDPOINT_COLUMNS,
            ),
            EndpointsCmd::Remove { id } => {
                api.delete(&format!("/v1/endpoints/{}", segment(id)?))?;
                println!("endpoint {id} released");
            }
        },
        Command::Blocks(BlocksCmd::List { host, tenant, segment: seg }) => {
            print(out, &api.get(&format!("/v1/blocks{}", query(&[("host", host), ("tenant", tenant), ("segment", seg)])))?, BLOCK_COLUMNS)
        }
        Command::Routes(RoutesArgs { cloud, scope, .. }) if *cloud || *scope == Some(RouteScope::Cloud) => {
            let answer = api.get("/v1/routes/cloud")?;
            if out == Output::Json || answer["holdsLease"] != true {
                if answer["holdsLease"] != true {
                    eprintln!("tessera: this controller does not hold the writer lease; the one that does keeps the tables");
                }
                print(out, &answer, &[]);
                return Ok(());
            }
            let mut rows = Vec::new();
            for t in answer["tables"].as_array().into_iter().flatten() {
                let pairs = |v: &Value| -> Vec<(String, String)> {
                    v.as_object().into_iter().flatten().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect()
                };
                let (desired, actual) = (pairs(&t["desired"]), pairs(&t["actual"]));
                for (dst, target) in &desired {
                    let now = actual.iter().find(|(d, _)| d == dst).map(|(_, t)| t.clone()).unwrap_or_else(|| "-".into());
                    let state = if &now == target { "ok" } else { "pending" };
                    rows.push(json!({"table": t["id"], "destination": dst, "desired": target, "actual": now, "state": state}));
                }
                for over in t["overCoverage"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                    rows.push(json!({"table": t["id"], "destination": over, "desired": "-", "actual": "-", "state": "over-covers"}));
                }
                rows.push(json!({
                    "table": t["id"],
                    "destination": format!("budget {} used {}", t["budget"], t["used"]),
                    "desired": format!("drift repairs {}", t["driftRepairs"]),
                    "actual": format!("calls {} throttles {}", t["calls"], t["throttles"]),
                    "state": t["lastError"].as_str().unwrap_or("-"),
                }));
            }
            print(
                out,
                &Value::Array(rows),
                &[("TABLE", "table"), ("DESTINATION", "destination"), ("DESIRED", "desired"), ("ACTUAL", "actual"), ("STATE", "state")],
            );
        }
        Command::Routes(RoutesArgs { budget, .. }) => {
            let plan = api.get(&format!("/v1/routes{}", query(&[("budget", &budget.map(|b| b.to_string()))])))?;
            if out == Output::Json {
                print(out, &plan, &[]);
                return Ok(());
            }
            print_routes(&plan);
        }
        Command::Policy(cmd) => crate::policy::run(cmd, out)?,
        Command::Policies(cmd) => match cmd {
            PoliciesCmd::List => {
                let mut list = api.get("/v1/policies")?;
                if out != Output::Json {
                    // Realization as people read it: `3/5` nodes.
                    for p in list.as_array_mut().into_iter().flatten() {
                        if let Some(nodes) = p.get("nodes").filter(|n| n.is_object()).cloned() {
                            p["enforcedOn"] = format!("{}/{} nodes", nodes["applied"], nodes["total"]).into();
                        }
                    }
                }
                print(out, &list, POLICY_COLUMNS)
            }
            PoliciesCmd::Apply { files } => {
                let mut text = String::new();
                for f in files {
                    let body = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
                    text.push_str("---\n");
                    text.push_str(&body);
                    text.push('\n');
                }
                print(out, &api.post_text("/v1/policies", text, "application/yaml")?, POLICY_COLUMNS)
            }
            PoliciesCmd::Remove { id } => {
                api.delete(&format!(
                    "/v1/policies/{}",
                    id.replacen(' ', "/", 1).split('/').map(segment).collect::<anyhow::Result<Vec<_>>>()?.join("/")
                ))?;
                println!("policy {id} removed");
            }
        },
        Command::Controllers => {
            let mut list = api.get("/v1/controllers")?;
            if out == Output::Table {
                for c in list.as_array_mut().into_iter().flatten() {
                    let age = c["heartbeatAgeMs"].as_i64().unwrap_or(0).max(0) as u64 / 1000;
                    c["heartbeatAgeMs"] = Value::String(crate::table::ago(age));
                    c["leader"] = Value::String(if c["leader"] == true { "yes".into() } else { "-".into() });
                }
            }
            print(out, &list, &[("ID", "id"), ("ADDRESS", "address"), ("LEADER", "leader"), ("LAST HEARTBEAT", "heartbeatAgeMs")])
        }
        Command::Nodes => {
            let mut nodes = api.get("/v1/nodes")?;
            if out == Output::Table {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                for n in nodes.as_array_mut().into_iter().flatten() {
                    n["lastSeen"] = match n["lastSeen"].as_u64() {
                        Some(at) => Value::String(crate::table::ago(now.saturating_sub(at))),
                        None => Value::String("never".into()),
                    };
                }
            }
            print(out, &nodes, NODE_COLUMNS)
        }
        Command::Tokens(cmd) => match cmd {
            TokensCmd::List => print(out, &api.get("/v1/tokens")?, TOKEN_COLUMNS),
            TokensCmd::Create { name, role, tenant, node } => {
                print(out, &api.post("/v1/tokens", &json!({"name": name, "role": role, "tenant": tenant, "node": node}))?, TOKEN_COLUMNS)
            }
            TokensCmd::Remove { id } => {
                api.delete(&format!("/v1/tokens/{}", segment(id)?))?;
                println!("token {id} removed");
            }
        },
    }
    Ok(())
}

fn print_plan(answer: &Value) {
    let plan = &answer["plan"];
    let verb = match (answer["dryRun"].as_bool(), answer["applied"].as_bool()) {
        (Some(true), _) => "dry run: nothing changed",
        (_, Some(true)) => "applied",
        _ => "not applied",
    };
    println!("{verb} (revision {})", answer["revision"]);
    for c in plan["cidrChanges"].as_array().into_iter().flatten() {
        println!("  group {} in {}: {} -> {}", cell(&c["group"]), cell(&c["network"]), cell(&c["from"]), cell(&c["to"]));
    }
    for m in plan["hostMoves"].as_array().into_iter().flatten() {
        println!("  host {} moves: {} -> {}", cell(&m["host"]), cell(&m["from"]), cell(&m["to"]));
    }
    for r in plan["refusals"].as_array().into_iter().flatten() {
        println!("  REFUSED {}: {}", cell(&r["subject"]), cell(&r["message"]));
    }
}

fn print_routes(plan: &Value) {
    let rows: Vec<Vec<String>> = plan["fabricRoutes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let gws: Vec<String> =
                r["gateways"].as_array().into_iter().flatten().map(|g| format!("{}({})", cell(&g["host"]), cell(&g["ip"]))).collect();
            vec![cell(&r["network"]), cell(&r["dst"]), cell(&r["scope"]), gws.join(",")]
        })
        .collect();
    println!("{}", render(&["NETWORK", "DESTINATION", "SCOPE", "GATEWAYS"], &rows));
    let over = plan["overCoverage"].as_array().map(Vec::len).unwrap_or(0);
    if over > 0 {
        println!("\nover-covered ranges (forced by the budget):");
        for o in plan["overCoverage"].as_array().into_iter().flatten() {
            println!("  {} under {}: {}", cell(&o["range"]), cell(&o["route"]), cell(&o["belongsTo"]));
        }
    }
    let host_routes: usize =
        plan["hostRoutes"].as_object().map(|m| m.values().map(|v| v.as_array().map_or(0, Vec::len)).sum()).unwrap_or(0);
    println!("\n{host_routes} host route(s) across {} host(s)", plan["hostRoutes"].as_object().map_or(0, |m| m.len()));
    for d in plan["diagnostics"].as_array().into_iter().flatten() {
        println!("warning: {}", cell(d));
    }
}

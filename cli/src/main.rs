//! `tessera`: the command-line client of the controller's REST API.
//!
//! Every command prints a table by default and JSON with `-o json`. Any failure is one line on
//! stderr and exit code 1.

mod client;
mod commands;
mod policy;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Tessera: topology-aware IPAM, route aggregation and microsegmentation.
#[derive(Debug, Parser)]
#[command(name = "tessera", version)]
pub struct Cli {
    /// Controller URL.
    #[arg(long, global = true, env = "TESSERA_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// API token.
    #[arg(long, global = true, env = "TESSERA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show or change the topology.
    #[command(subcommand)]
    Topology(commands::TopologyCmd),
    /// Hosts (nodes) and their placement.
    #[command(subcommand)]
    Hosts(commands::HostsCmd),
    /// Tenants.
    #[command(subcommand)]
    Tenants(commands::TenantsCmd),
    /// Segments of a tenant.
    #[command(subcommand)]
    Segments(commands::SegmentsCmd),
    /// Endpoints (create = allocate addresses, remove = release them).
    #[command(subcommand)]
    Endpoints(commands::EndpointsCmd),
    /// Address blocks.
    #[command(subcommand)]
    Blocks(commands::BlocksCmd),
    /// The route plan.
    Routes(commands::RoutesArgs),
    /// Stored policies (NetworkPolicy, TesseraPolicy, TesseraClusterPolicy, Romana).
    #[command(subcommand)]
    Policies(commands::PoliciesCmd),
    /// Virtual IPs: one healthy host of those allowed holds each, and announces it.
    #[command(subcommand)]
    Vips(commands::VipsCmd),
    /// BGP: each node's sessions, desired against announced prefixes, VIPs.
    Bgp,
    /// Distribution status of every node: desired and applied generation, lag, errors.
    Nodes,
    /// Controller replicas: their last heartbeat, and which holds the writer lease.
    Controllers,
    /// API tokens.
    #[command(subcommand)]
    Tokens(commands::TokensCmd),
    /// Policy simulation and explanation, offline from files.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go to stdout with success, as usual.
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // A usage error is one line and exit code 1, like every other failure.
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid usage").trim_start_matches("error: ");
            eprintln!("tessera: {first} (see `tessera --help`)");
            return ExitCode::from(1);
        }
    };
    match commands::run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tessera: {e:#}");
            ExitCode::from(1)
        }
    }
}

//! `tessera policy simulate|explain`: offline, from files, with the same evaluator the
//! controller and the compiler use.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use tessera_policy::Inputs;
use tessera_policy::eval::{Decision, SideVerdict};
use tessera_policy::simulate::{parse_probe, simulate};

use crate::Output;
use crate::table::render;

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Verdicts for every ordered pair of pods (and external addresses) and every probe.
    Simulate {
        /// YAML/JSON files: Namespaces, Pods, Nodes, NetworkPolicies, Tessera and Romana policies.
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
        /// Probes: tcp/80, udp/53, sctp/9000, icmp/8 (repeatable; default tcp/80).
        #[arg(long = "port")]
        ports: Vec<String>,
        /// Cluster-external endpoints by IP (repeatable).
        #[arg(long = "external")]
        externals: Vec<IpAddr>,
    },
    /// The nftables ruleset of one node's endpoints (pods with that `spec.nodeName`; all pods
    /// when no node is given), as `nft` text or, with `-o json`, nftables JSON.
    Render {
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        node: Option<String>,
    },
    /// The verdict for one pair and the rules that decided it.
    Explain {
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
        /// NAMESPACE/POD or an IP address.
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long = "port", default_value = "tcp/80")]
        port: String,
    },
}

fn load(files: &[PathBuf]) -> anyhow::Result<Inputs> {
    let mut inputs = Inputs::default();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        inputs.add_text(&f.display().to_string(), &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(inputs)
}

pub fn run(cmd: &PolicyCmd, output: Output) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Simulate { files, ports, externals } => {
            let inputs = load(files)?;
            let texts = if ports.is_empty() { vec!["tcp/80".to_string()] } else { ports.clone() };
            let probes = texts.iter().map(|p| parse_probe(p).map_err(|e| anyhow::anyhow!("{e}"))).collect::<anyhow::Result<Vec<_>>>()?;
            let verdicts = simulate(&inputs, externals, &probes).map_err(|e| anyhow::anyhow!("{e}"))?;
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&json!({ "verdicts": verdicts }))?);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = verdicts
                .iter()
                .map(|v| {
                    let port = v.port.map(|p| p.to_string()).or(v.icmp_type.map(|t| format!("type {t}"))).unwrap_or_default();
                    vec![
                        v.from.clone(),
                        v.to.clone(),
                        v.protocol.clone(),
                        port,
                        if v.allowed { "allow" } else { "DENY" }.into(),
                        v.reason.clone(),
                    ]
                })
                .collect();
            println!("{}", render(&["FROM", "TO", "PROTO", "PORT", "VERDICT", "REASON"], &rows));
        }
        PolicyCmd::Render { files, node } => {
            let inputs = load(files)?;
            let compiled = tessera_policy::compile::compile(&inputs.cluster, &Default::default(), &inputs.policies, Default::default());
            let local: Vec<_> = compiled.values().filter(|e| node.is_none() || e.host == *node).collect();
            let ruleset = tessera_policy::nft::render(&local);
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&ruleset.json)?);
            } else {
                print!("{}", ruleset.text);
            }
        }
        PolicyCmd::Explain { files, from, to, port } => {
            let inputs = load(files)?;
            let probe = parse_probe(port).map_err(|e| anyhow::anyhow!("{e}"))?;
            let verdict = tessera_policy::simulate::explain(&inputs, from, to, probe).map_err(|e| anyhow::anyhow!("{e}"))?;
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&verdict)?);
                return Ok(());
            }
            println!("{} {from} -> {to} {port}", if verdict.allowed { "ALLOWED" } else { "DENIED" });
            print_side("egress", from, &verdict.egress);
            print_side("ingress", to, &verdict.ingress);
        }
    }
    Ok(())
}

fn print_side(dir: &str, who: &str, side: &SideVerdict) {
    let verdict = if side.allowed { "allows" } else { "denies" };
    match &side.decision {
        Decision::External => println!("  {dir}: {who} is external; no policy applies"),
        Decision::NotIsolated => println!("  {dir} of {who}: no policy isolates it; {verdict}"),
        Decision::ClusterRule { policy, rule, action } => println!("  {dir} of {who}: {policy} {rule} ({action:?}) {verdict}"),
        Decision::AllowedBy { policy, rule } => println!("  {dir} of {who}: allowed by {policy} {rule}"),
        Decision::Isolated { policies } => {
            println!("  {dir} of {who}: isolated, and no rule allows it:");
            for p in policies {
                if p.rules.is_empty() {
                    println!("    {}: has no {dir} rules (allows nothing)", p.policy);
                }
                for r in &p.rules {
                    println!("    {} {r}", p.policy);
                }
            }
        }
    }
}

//! `tessera policy simulate|explain`: offline, from files, with the same evaluator the
//! controller and the compiler use.

use std::io::Write as _;
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use tessera_policy::Inputs;
use tessera_policy::eval::{Decision, SideVerdict};
use tessera_policy::simulate::{VerdictLine, parse_probe, simulate_each};

use crate::Output;

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
        /// YAML/JSON files, as for `simulate`.
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
        /// Only the pods whose `spec.nodeName` is this node.
        #[arg(long)]
        node: Option<String>,
    },
    /// The verdict for one pair and the rules that decided it.
    Explain {
        /// YAML/JSON files, as for `simulate`.
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
        /// The sender: NAMESPACE/POD or an IP address.
        #[arg(long)]
        from: String,
        /// The receiver: NAMESPACE/POD or an IP address.
        #[arg(long)]
        to: String,
        /// The probe: tcp/80, udp/53, sctp/9000, icmp/8.
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
    // Left-out pods are said, never skipped silently (on stderr: stdout stays the answer).
    if !inputs.skipped.is_empty() {
        eprintln!("tessera: {} pod(s) left out, they take part in no traffic:", inputs.skipped.len());
        for s in &inputs.skipped {
            eprintln!("  {}: {}", s.id, s.reason);
        }
    }
    Ok(inputs)
}

pub fn run(cmd: &PolicyCmd, output: Output) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Simulate { files, ports, externals } => {
            let inputs = load(files)?;
            let texts = if ports.is_empty() { vec!["tcp/80".to_string()] } else { ports.clone() };
            let probes = texts.iter().map(|p| parse_probe(p).map_err(|e| anyhow::anyhow!("{e}"))).collect::<anyhow::Result<Vec<_>>>()?;
            stream_verdicts(&inputs, externals, &probes, output)?;
        }
        PolicyCmd::Render { files, node } => {
            let inputs = load(files)?;
            let compiled = tessera_policy::compiler::compile(&inputs.cluster, &Default::default(), &inputs.policies, Default::default());
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

/// Write every verdict as it is decided (memory stays flat however many there are): one JSON
/// document `{"verdicts": [...]}`, or a table whose widths come from the parties' names.
fn stream_verdicts(inputs: &Inputs, externals: &[IpAddr], probes: &[tessera_policy::eval::Probe], output: Output) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + 4096);
    let names = inputs.cluster.endpoints.keys().map(String::len).chain(externals.iter().map(|x| x.to_string().len()));
    let width = names.max().unwrap_or(0).max(4);
    let ports: Vec<String> =
        probes.iter().map(|p| p.port.map(|p| p.to_string()).or(p.icmp.map(|(t, _)| format!("type {t}"))).unwrap_or_default()).collect();
    if output == Output::Json {
        buf.extend_from_slice(b"{\"verdicts\": [");
    } else {
        writeln!(buf, "{:<width$}  {:<width$}  {:<5}  {:<8}  {:<7}  REASON", "FROM", "TO", "PROTO", "PORT", "VERDICT")?;
    }
    let mut first = true;
    let mut failed: Option<std::io::Error> = None;
    let mut line = |v: &VerdictLine<'_>, buf: &mut Vec<u8>| {
        if output == Output::Json {
            buf.extend_from_slice(if std::mem::take(&mut first) { b"\n  " } else { b",\n  " });
            v.write_json(buf);
        } else {
            let port = probes.iter().position(|p| p == v.probe).map_or("", |k| ports[k].as_str());
            let verdict = if v.allowed { "allow" } else { "DENY" };
            let _ = writeln!(
                buf,
                "{:<width$}  {:<width$}  {:<5}  {:<8}  {:<7}  {}",
                v.from,
                v.to,
                v.probe.protocol.to_string(),
                port,
                verdict,
                v.reason
            );
        }
    };
    simulate_each(inputs, externals, probes, |v| {
        line(v, &mut buf);
        if buf.len() >= CHUNK {
            if let Err(e) = out.write_all(&buf) {
                failed = Some(e);
                return ControlFlow::Break(());
            }
            buf.clear();
        }
        ControlFlow::Continue(())
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if output == Output::Json {
        buf.extend_from_slice(b"\n]}\n");
    }
    let written = match failed {
        Some(e) => Err(e),
        None => out.write_all(&buf).and_then(|()| out.flush()),
    };
    match written {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing the verdicts"),
        _ => Ok(()),
    }
}

/// Bytes gathered before a write.
const CHUNK: usize = 1 << 20;

//! Start-up and the agent's tasks: the enforcer (the only writer of nftables and routes), the
//! state watch with backoff, the resync timer, the CNI socket and the metrics listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tessera_netlink::Netlink;
use tokio::sync::{mpsc, watch};

use crate::client::{Controller, Credential, parse_line};
use crate::disk::Disk;
use crate::enforcer::{Enforced, Enforcer, Event, default_state_dir};
use crate::error::WatchEnded;
use crate::metrics::Metrics;
use crate::nft::Nft;
use crate::socket::{self, Socket};

/// Tessera node agent: enforces this node's state (nftables table `inet tessera`, routes).
#[derive(Debug, Parser)]
#[command(name = "tessera-agent", version)]
pub struct Args {
    /// The controllers' base URLs (comma-separated or repeated): replicas sharing a store. The
    /// agent stays with one until it fails or falls silent, then moves to the next.
    #[arg(long, env = "TESSERA_CONTROLLER", value_delimiter = ',', required = true)]
    pub controller: Vec<String>,
    /// This node's host name in the topology.
    #[arg(long, env = "TESSERA_NODE")]
    pub node: String,
    /// The node token (`role: node`) as a file (one line).
    #[arg(long, env = "TESSERA_NODE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The node token itself (prefer --token-file).
    #[arg(long, env = "TESSERA_NODE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) that signed the controller's certificate.
    #[arg(long, env = "TESSERA_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// Where the last-known-good state is kept.
    #[arg(long, env = "TESSERA_STATE_DIR", default_value_os_t = default_state_dir())]
    pub state_dir: PathBuf,
    /// The unix socket the CNI plugin calls.
    #[arg(long, env = "TESSERA_AGENT_SOCKET", default_value = "/run/tessera/agent.sock")]
    pub socket: PathBuf,
    /// Seconds between resyncs (drift repair).
    #[arg(long, env = "TESSERA_RESYNC_SECONDS", default_value_t = crate::enforcer::RESYNC_SECONDS)]
    pub resync: f64,
    /// Seconds between reports to the controller (liveness, which VIP failover counts on, and
    /// BGP sessions).
    #[arg(long, env = "TESSERA_REPORT_SECONDS", default_value_t = 3.0)]
    pub report: f64,
    /// Where /metrics is served (`off` to disable).
    #[arg(long, env = "TESSERA_AGENT_METRICS", default_value = "127.0.0.1:9743")]
    pub metrics: String,
    /// The nft binary.
    #[arg(long, env = "TESSERA_NFT", default_value = "nft")]
    pub nft: String,
    /// Log filter (tracing's EnvFilter syntax).
    #[arg(long, env = "TESSERA_LOG", default_value = "info")]
    pub log: String,
    /// Log lines as `text` (key=value fields) or `json` (one object per line), on stderr.
    #[arg(long, env = "TESSERA_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    // Colours only for a person at a terminal, never in files or journals.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log)?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if args.log_format == "json" {
        logs.json().init();
    } else {
        logs.init();
    }
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Credential::Token(t.trim().to_string()),
        // Read again whenever it changes: a projected ServiceAccount token rotates.
        (None, Some(f)) => Credential::file(f).with_context(|| format!("--token-file {}", f.display()))?,
        (None, None) => anyhow::bail!("a node token is needed: --token-file or TESSERA_NODE_TOKEN"),
    };
    let ca = args.ca_cert.as_ref().map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display()))).transpose()?;
    anyhow::ensure!(args.resync > 0.0, "--resync must be positive");
    anyhow::ensure!(args.report >= 0.1, "--report must be at least 0.1 seconds");
    std::fs::create_dir_all(&args.state_dir).with_context(|| format!("creating {}", args.state_dir.display()))?;
    let controller = Controller::with_credential(&args.controller, &args.node, token, ca.as_deref())?;
    enable_forwarding();
    let metrics = Arc::new(Metrics::default());
    let (enforced_tx, enforced_rx) = watch::channel(Enforced::default());
    let mut enforcer = Enforcer {
        nft: Nft::new(&args.nft),
        watch: None,
        resyncs: 0,
        netlink: Netlink::connect()?,
        disk: Disk { dir: args.state_dir.clone() },
        metrics: metrics.clone(),
        controller: controller.clone(),
        enforced: enforced_tx,
        current: None,
        wired: Default::default(),
        events: None,
    };
    // Never open: the last-known-good state is enforced before anything else happens.
    if let Err(e) = enforcer.start().await {
        tracing::error!(error = %e, "could not enforce the last-known-good state");
    }
    // The fabric follows what is enforced (the last-known-good state first), unless the node
    // was removed: then it withdraws everything (its nftables state stays, never open).
    let (desired_tx, desired_rx) = watch::channel(crate::fabric::Desired::default());
    let (removed_tx, mut removed) = watch::channel(false);
    let mut enforced_changes = enforced_rx.clone();
    tokio::spawn(async move {
        loop {
            let fabric =
                if *removed.borrow_and_update() { Default::default() } else { enforced_changes.borrow_and_update().fabric.clone() };
            desired_tx.send_if_modified(|d| std::mem::replace(d, fabric) != *d);
            tokio::select! {
                changed = enforced_changes.changed() => if changed.is_err() { return },
                changed = removed.changed() => if changed.is_err() { return },
            }
        }
    });
    let fabric = crate::fabric::Fabric::new(Netlink::connect()?, metrics.clone());
    tokio::spawn(fabric.run(desired_rx, controller.clone(), Duration::from_secs_f64(args.report)));
    let (events, queue) = mpsc::channel(64);
    enforcer.watch = Some(crate::drift::start(events.clone(), enforcer.nft.own.clone()));
    enforcer.events = Some(events.clone());
    let enforcer_task = tokio::spawn(enforcer.run(queue));

    let socket = Socket { controller: controller.clone(), events: events.clone(), enforced: enforced_rx.clone() };
    let path = args.socket.clone();
    tokio::spawn(async move {
        if let Err(e) = socket::serve(&path, socket).await {
            tracing::error!(error = %e, path = %path.display(), "the CNI socket failed");
        }
    });
    if args.metrics != "off" {
        let address: SocketAddr = args.metrics.parse().with_context(|| format!("--metrics `{}`", args.metrics))?;
        tokio::spawn(serve_metrics(address, metrics.clone()));
    }
    let resync = Duration::from_secs_f64(args.resync);
    let timer_events = events.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(resync);
        tick.tick().await;
        loop {
            tick.tick().await;
            if timer_events.send(Event::Resync).await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(watch_loop(controller, events, enforced_rx, metrics, removed_tx));
    tokio::select! {
        _ = shutdown() => tracing::info!("stopping; the enforced state stays in place"),
        _ = enforcer_task => anyhow::bail!("the enforcer stopped"),
    }
    Ok(())
}

/// Pods are routed, not bridged: the node must forward (both families).
fn enable_forwarding() {
    for knob in ["/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"] {
        if let Err(e) = std::fs::write(knob, "1") {
            tracing::warn!(%knob, error = %e, "cannot enable forwarding");
        }
    }
}

/// Keep a watch open; reconnect with exponential backoff and jitter. `removed` turns true
/// when the controllers refuse this node twice in a row (it left the topology, or its token
/// was revoked) and false once a state arrives again.
async fn watch_loop(
    controller: Controller,
    events: mpsc::Sender<Event>,
    enforced: watch::Receiver<Enforced>,
    metrics: Arc<Metrics>,
    removed: watch::Sender<bool>,
) {
    let mut failures: u32 = 0;
    let mut refusals: u32 = 0;
    loop {
        let since = enforced.borrow().generation;
        match stream_states(&controller, since, &events, &removed).await {
            Ok(()) => failures = 0,
            Err(WatchEnded { message: e, received, refused }) => {
                if received {
                    failures = 0;
                    refusals = 0;
                }
                if matches!(refused, Some(401 | 403 | 404)) {
                    refusals += 1;
                    if refusals >= 2 && !removed.send_replace(true) {
                        tracing::warn!(error = %e, "this node is no longer known to the controllers: withdrawing its BGP routes and VIPs");
                    }
                } else {
                    refusals = 0;
                }
                failures = failures.saturating_add(1);
                // Another replica serves the same state: try it before backing off further.
                controller.fail_over();
                tracing::warn!(error = %e, attempt = failures, "state watch interrupted; enforcing the current state meanwhile");
            }
        }
        metrics.reconnects.inc();
        let base = Duration::from_millis(100).saturating_mul(1u32 << failures.min(6)).min(Duration::from_secs(5));
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        tokio::time::sleep(base.mul_f64(jitter)).await;
    }
}

/// One watch connection. The error says whether any state arrived before it failed.
async fn stream_states(
    controller: &Controller,
    since: Option<u64>,
    events: &mpsc::Sender<Event>,
    removed: &watch::Sender<bool>,
) -> Result<(), WatchEnded> {
    let mut response = controller.watch(since).await.map_err(|e| {
        let refused = if let crate::client::CallError::Refused { status, .. } = &e { Some(*status) } else { None };
        WatchEnded { message: e.to_string(), received: false, refused }
    })?;
    tracing::info!(?since, "watching the node state");
    // The controller knows this node again.
    removed.send_if_modified(|r| std::mem::replace(r, false));
    let mut buffer: Vec<u8> = Vec::new();
    let mut received = false;
    loop {
        // The controller sends a heartbeat every HEARTBEAT; silence for longer means a dead link.
        let silence = tessera_agent_api::HEARTBEAT.mul_f64(2.5);
        let chunk = tokio::time::timeout(silence, response.chunk()).await;
        let chunk = match chunk {
            Err(_) => {
                return Err(WatchEnded {
                    message: format!("no heartbeat from the controller for {} s", silence.as_secs()),
                    received,
                    refused: None,
                });
            }
            Ok(Err(e)) => return Err(WatchEnded { message: e.to_string(), received, refused: None }),
            Ok(Ok(None)) => return Err(WatchEnded { message: "the controller closed the watch".into(), received, refused: None }),
            Ok(Ok(Some(c))) => c,
        };
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            match parse_line(&line) {
                None => {}
                Some(Ok(state)) => {
                    received = true;
                    if state.node != controller.node() {
                        return Err(WatchEnded {
                            message: format!("the controller sent the state of `{}`", state.node),
                            received,
                            refused: None,
                        });
                    }
                    if events.send(Event::State(Box::new(state))).await.is_err() {
                        return Ok(());
                    }
                }
                Some(Err(e)) => return Err(WatchEnded { message: e, received, refused: None }),
            }
        }
    }
}

async fn serve_metrics(address: SocketAddr, metrics: Arc<Metrics>) {
    let app = axum::Router::new().route("/metrics", axum::routing::get(move || async move { metrics.encode() }));
    match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        }
        Err(e) => tracing::error!(error = %e, %address, "cannot listen for metrics"),
    }
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

//! Start-up: flags, logging, store, bootstrap token and topology, then the HTTP server.
//!
//! Tasks: the axum server (this one); the distributor's feed follower (spawned by
//! `AppState::with_replica`); the writer-lease task (heartbeat, lease, singleton work). On
//! SIGINT/SIGTERM node watches end, the lease is given up and in-flight requests finish.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tessera_topology::{Format, parse_topology};

use crate::api::{AppState, app};
use crate::store::{Role, Store};
use crate::writer::LeaseConfig;

/// Tessera controller.
#[derive(Debug, Parser)]
#[command(name = "tessera-controller", version)]
pub struct Args {
    /// Address the API listens on.
    #[arg(long, env = "TESSERA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// `sqlite://FILE` (embedded default) or `postgres://…` for HA.
    #[arg(long, env = "TESSERA_DATABASE_URL", default_value = "sqlite://tessera.db")]
    pub database_url: String,
    /// Topology document applied on start when the store has none yet.
    #[arg(long, env = "TESSERA_TOPOLOGY")]
    pub topology: Option<PathBuf>,
    /// Admin token to accept (created if missing). Without it, a first start prints a new one.
    #[arg(long, env = "TESSERA_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Do not load the demo topology into an empty store (the variable takes true/false, 1/0,
    /// yes/no, on/off).
    #[arg(long, env = "TESSERA_NO_DEMO", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub no_demo: bool,
    /// Certificate chain (PEM) to serve HTTPS with; needs --tls-key.
    #[arg(long, env = "TESSERA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "TESSERA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// This replica's name among the controllers sharing a PostgreSQL store (default: host
    /// name, process id and a random suffix).
    #[arg(long, env = "TESSERA_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// How often the writer lease is renewed and replicas heartbeat, in milliseconds.
    #[arg(long, env = "TESSERA_LEASE_RENEW_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub lease_renew_ms: u64,
    /// How long the writer lease lasts unless renewed, in milliseconds (a dead holder is
    /// replaced after at most this).
    #[arg(long, env = "TESSERA_LEASE_TTL_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(500..=600_000))]
    pub lease_ttl_ms: u64,
    /// Change records kept in the feed; a replica further behind resyncs from the store.
    #[arg(long, env = "TESSERA_FEED_RETENTION", default_value_t = 100_000, value_parser = clap::value_parser!(i64).range(100..))]
    pub feed_retention: i64,
    /// Seconds a host's agent may stay silent (no report) before it counts as down: its VIPs
    /// move to another host, and BGP controller mode stops announcing it.
    #[arg(long, env = "TESSERA_VIP_FAILOVER_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub vip_failover_seconds: u64,
    /// BGP identifier (an IPv4 address unique in the fabric) this controller uses toward route
    /// servers, for groups in BGP controller mode.
    #[arg(long, env = "TESSERA_BGP_ROUTER_ID")]
    pub bgp_router_id: Option<std::net::Ipv4Addr>,
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
    // The port first: a busy one is found before a store is created or a token printed.
    let listener = std::net::TcpListener::bind(args.listen).with_context(|| format!("listening on {}", args.listen))?;
    listener.set_nonblocking(true)?;
    let store = Store::connect(&args.database_url).await.with_context(|| format!("opening the store at {}", args.database_url))?;
    bootstrap_token(&store, args.admin_token.as_deref()).await?;
    bootstrap_topology(&store, args.topology.as_deref(), args.no_demo).await?;
    anyhow::ensure!(args.lease_ttl_ms > args.lease_renew_ms, "--lease-ttl-ms must be longer than --lease-renew-ms");
    if let Some(id) = args.bgp_router_id.filter(|id| id.is_unspecified() || id.is_multicast() || id.is_broadcast()) {
        anyhow::bail!("--bgp-router-id: {id} cannot be a BGP identifier");
    }
    let replica = args.replica_id.clone().unwrap_or_else(crate::writer::new_replica_id);
    tessera_topology::spec::validate_name("--replica-id", &replica).map_err(|e| anyhow::anyhow!("{e}"))?;
    let state = AppState::with_replica(store, replica).await.context("compiling the stored state")?;
    let lease = LeaseConfig {
        renew: std::time::Duration::from_millis(args.lease_renew_ms),
        ttl: std::time::Duration::from_millis(args.lease_ttl_ms),
        feed_retention: args.feed_retention,
    };
    let address = listener.local_addr()?.to_string();
    let lease_task = tokio::spawn(state.writer.clone().run(address, lease, state.dist.closing()));
    let failover = std::time::Duration::from_secs(args.vip_failover_seconds);
    tokio::spawn(crate::vips::keep_held(state.clone(), failover, state.dist.closing()));
    let sessions = state.route_servers.clone();
    tokio::spawn(crate::route_servers::run(state.clone(), args.bgp_router_id, failover, sessions, state.dist.closing()));
    let dist = state.dist.clone();
    let stopping = async move {
        shutdown().await;
        dist.close();
        // The lease is given up before the server finishes: another replica takes over at once.
        let _ = lease_task.await;
    };
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        return serve_tls(listener, cert, key, state, stopping).await;
    }
    let listener = tokio::net::TcpListener::from_std(listener)?;
    tracing::info!(address = %listener.local_addr()?, "serving the API");
    axum::serve(listener, app(state)).with_graceful_shutdown(stopping).await?;
    Ok(())
}

/// HTTPS with rustls; on SIGINT/SIGTERM watches end and in-flight requests get 5 s to finish.
async fn serve_tls(
    listener: std::net::TcpListener,
    cert: &std::path::Path,
    key: &std::path::Path,
    state: AppState,
    stopping: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .with_context(|| format!("loading the TLS certificate {} and key {}", cert.display(), key.display()))?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        stopping.await;
        stopper.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    let listen = listener.local_addr()?;
    tracing::info!(address = %listen, "serving the API over HTTPS");
    axum_server::from_tcp_rustls(listener, config)?
        .handle(handle)
        .serve(app(state).into_make_service())
        .await
        .with_context(|| format!("serving on {listen}"))?;
    Ok(())
}

async fn bootstrap_token(store: &Store, admin_token: Option<&str>) -> anyhow::Result<()> {
    if let Some(token) = admin_token {
        if store.authenticate(token).await?.is_none() {
            store.create_token("bootstrap admin (TESSERA_ADMIN_TOKEN)", Role::Admin, None, Some(token)).await?;
        }
        return Ok(());
    }
    if store.token_count().await? == 0 {
        let created = store.create_token("bootstrap admin", Role::Admin, None, None).await?;
        // Printed once, on stdout, so it can be captured; the store keeps only its hash.
        println!("Admin token (shown once, keep it): {}", created.token);
    }
    Ok(())
}

async fn bootstrap_topology(store: &Store, file: Option<&std::path::Path>, no_demo: bool) -> anyhow::Result<()> {
    if store.topology().await?.revision != 0 {
        return Ok(());
    }
    let (text, origin) = match file {
        Some(path) => (std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?, path.display().to_string()),
        None if no_demo => return Ok(()),
        None => (include_str!("demo-topology.yaml").to_string(), "the built-in demo".to_string()),
    };
    let spec = parse_topology(&text, Format::Auto).with_context(|| format!("topology from {origin}"))?;
    let (plan, revision) = store.apply_topology(spec, Some(0), false).await?;
    anyhow::ensure!(revision.is_some(), "topology from {origin} was refused: {:?}", plan.refusals);
    tracing::info!(%origin, "loaded the topology");
    Ok(())
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

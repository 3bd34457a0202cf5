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
    /// AWS region of the VPC route tables to keep (unset: Tessera writes no VPC routes).
    #[arg(long, env = "TESSERA_AWS_REGION")]
    pub aws_region: Option<String>,
    /// EC2 endpoint instead of the region's public one (a VPC endpoint, a test server).
    #[arg(long, env = "TESSERA_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// Route tables to keep, by id (comma-separated or repeated).
    #[arg(long, env = "TESSERA_AWS_ROUTE_TABLES", value_delimiter = ',')]
    pub aws_route_tables: Vec<String>,
    /// Or every route table carrying this tag, as `key=value` (for example `tessera.io/managed=true`).
    #[arg(long, env = "TESSERA_AWS_ROUTE_TABLE_TAG")]
    pub aws_route_table_tag: Option<String>,
    /// Routes a route table may hold (the AWS quota), Tessera's and others'.
    #[arg(long, env = "TESSERA_AWS_ROUTE_LIMIT", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub aws_route_limit: u64,
    /// Seconds between passes over the route tables (drift repair); changes start one sooner.
    #[arg(long, env = "TESSERA_AWS_RECONCILE_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub aws_reconcile_seconds: u64,
    /// Mutating EC2 calls per second, at most.
    #[arg(long, env = "TESSERA_AWS_CALL_RATE", default_value_t = 5.0)]
    pub aws_call_rate: f64,
    /// Take over foreign routes on destinations Tessera wants (otherwise reported and left alone).
    #[arg(long, env = "TESSERA_AWS_ADOPT", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub aws_adopt: bool,
    /// Manage the route tables of the subnets the hosts' instances or interfaces are in (their
    /// explicit associations, else their VPC's main table), besides any named or tagged.
    #[arg(long, env = "TESSERA_AWS_HOST_SUBNET_TABLES", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub aws_host_subnet_tables: bool,
    /// Turn off EC2's source/destination check on each gateway's instance or interface before a
    /// route points at it (a gateway forwards traffic that is not its own).
    #[arg(long, env = "TESSERA_AWS_DISABLE_SOURCE_DEST_CHECK", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub disable_source_dest_check: bool,
    /// Keep hosts and tenants as this cluster's Nodes and Namespaces say (the writer-lease
    /// holder watches them), reached through this kubeconfig.
    #[arg(long, env = "TESSERA_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The same, with the configuration inferred (in a pod: its service account; else
    /// `KUBECONFIG` or `~/.kube/config`).
    #[arg(long, env = "TESSERA_KUBERNETES", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub kubernetes: bool,
    /// The ServiceAccount (`namespace/name`) whose pod-bound tokens authenticate agents as their
    /// node (checked with TokenReviews).
    #[arg(long, env = "TESSERA_AGENT_SERVICE_ACCOUNT", default_value = "tessera-system/tessera-agent")]
    pub agent_service_account: String,
    /// How long an endpoint of a Kubernetes namespace may lack a pod before it is released.
    #[arg(long, env = "TESSERA_ENDPOINT_GRACE_SECONDS", default_value_t = 120)]
    pub endpoint_grace_seconds: u64,
    /// The audience agents' tokens must be for.
    #[arg(long, env = "TESSERA_TOKEN_AUDIENCE", default_value = "tessera")]
    pub token_audience: String,
    /// Let the AWS SDK retry failed reads itself (on top of Tessera's own backoff).
    #[arg(long, env = "TESSERA_AWS_SDK_RETRIES", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub aws_sdk_retries: bool,
    /// Log filter (tracing's EnvFilter syntax).
    #[arg(long, env = "TESSERA_LOG", default_value = "info")]
    pub log: String,
    /// Log lines as `text` (key=value fields) or `json` (one object per line), on stderr.
    #[arg(long, env = "TESSERA_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    // One TLS provider for the whole process (serving, the Kubernetes and AWS clients): the
    // dependency graph carries more than one, and rustls will not guess.
    let _ = rustls::crypto::ring::default_provider().install_default();
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
    let vpc = vpc_config(&args)?;
    let replica = args.replica_id.clone().unwrap_or_else(crate::writer::new_replica_id);
    tessera_topology::spec::validate_name("--replica-id", &replica).map_err(|e| anyhow::anyhow!("{e}"))?;
    let agents = args
        .agent_service_account
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| anyhow::anyhow!("--agent-service-account: `{}` is not namespace/name", args.agent_service_account))?;
    anyhow::ensure!(!args.token_audience.trim().is_empty(), "--token-audience must not be empty");
    let kube = match (&args.kubeconfig, args.kubernetes) {
        (None, false) => None,
        (path, _) => Some(tessera_operator::connect(path.as_deref()).await.map_err(|e| anyhow::anyhow!(e))?),
    };
    let mut state = AppState::with_replica(store, replica).await.context("compiling the stored state")?;
    state.token_reviewer =
        kube.clone().map(|client| std::sync::Arc::new(tessera_operator::review::TokenReviewer::new(client, &args.token_audience, agents)));
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
    if let Some(vpc) = vpc {
        tracing::info!(region = %vpc.ec2.region, tables = ?vpc.tables, tag = ?vpc.tag, "keeping VPC route tables");
        tokio::spawn(crate::vpc_routes::run(
            state.clone(),
            crate::vpc_routes::VpcConfig { failover, ..vpc },
            state.vpc_routes.clone(),
            state.dist.closing(),
        ));
    }
    if let Some(client) = &kube {
        let options = tessera_operator::Options { endpoint_grace: std::time::Duration::from_secs(args.endpoint_grace_seconds) };
        tokio::spawn(crate::kubernetes::run(state.clone(), client.clone(), options, state.dist.closing()));
    }
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

/// The VPC route tables to keep, from the `--aws-*` flags (`None`: no region, no VPC routes).
fn vpc_config(args: &Args) -> anyhow::Result<Option<crate::vpc_routes::VpcConfig>> {
    let Some(region) = args.aws_region.clone() else { return Ok(None) };
    anyhow::ensure!(
        !region.trim().is_empty() && region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "--aws-region: `{region}` is not a region"
    );
    let tag = match &args.aws_route_table_tag {
        None => None,
        Some(t) => match t.split_once('=') {
            Some((k, v)) if !k.is_empty() => Some((k.to_string(), v.to_string())),
            _ => anyhow::bail!("--aws-route-table-tag: `{t}` is not key=value"),
        },
    };
    anyhow::ensure!(
        !args.aws_route_tables.is_empty() || tag.is_some() || args.aws_host_subnet_tables,
        "--aws-region is set: name the route tables (--aws-route-tables), their tag (--aws-route-table-tag) or take the hosts' subnets' tables (--aws-host-subnet-tables)"
    );
    for id in &args.aws_route_tables {
        let ok = id
            .strip_prefix("rtb-")
            .is_some_and(|h| (h.len() == 8 || h.len() == 17) && h.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        anyhow::ensure!(ok, "--aws-route-tables: `{id}` is not a route table id (rtb-0123456789abcdef0)");
    }
    anyhow::ensure!(
        args.aws_call_rate.is_finite() && args.aws_call_rate > 0.0,
        "--aws-call-rate must be a positive number of calls per second"
    );
    if let Some(url) = &args.aws_endpoint_url {
        anyhow::ensure!(url.starts_with("http://") || url.starts_with("https://"), "--aws-endpoint-url: `{url}` is not an http(s) URL");
    }
    Ok(Some(crate::vpc_routes::VpcConfig {
        ec2: tessera_cloud_ec2::Settings { region, endpoint_url: args.aws_endpoint_url.clone(), sdk_retries: args.aws_sdk_retries },
        tables: args.aws_route_tables.clone(),
        tag,
        limit: args.aws_route_limit as usize,
        interval: std::time::Duration::from_secs(args.aws_reconcile_seconds),
        rate: args.aws_call_rate,
        adopt: args.aws_adopt,
        host_subnets: args.aws_host_subnet_tables,
        disable_source_dest_check: args.disable_source_dest_check,
        failover: std::time::Duration::from_secs(args.vip_failover_seconds),
    }))
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

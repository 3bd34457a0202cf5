//! VPC route tables (AWS), kept by the writer-lease holder: each pass describes the managed
//! tables, plans each one (`tessera_cloud::vpc`: the route plan within the table's budget, each
//! route to a healthy gateway host's instance or interface, the fewest calls, foreign routes
//! untouched) and carries the calls out through a token bucket, checking the fencing token
//! before each and recording what it wrote right after. A pass that stops half-way (a crash, a
//! lost lease, throttling) leaves a state the next pass finishes from.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tessera_cloud::pace::{TokenBucket, backoff};
use tessera_cloud::vpc::{Call, Candidate, Route, Target, Wanted, budget, desired, plan_table};
use tessera_cloud_ec2::{Ec2, Ec2Error, Settings, Table};
use tokio::sync::watch;

use crate::api::AppState;
use crate::health::Health;
use crate::store::{BlockFilter, BlockRecord, HostRecord, StoreError, TopologyRecord};

/// What the controller manages in AWS, from its flags.
#[derive(Debug, Clone)]
pub struct VpcConfig {
    pub ec2: Settings,
    /// Route tables by id.
    pub tables: Vec<String>,
    /// Or every table carrying this tag (`key=value`).
    pub tag: Option<(String, String)>,
    /// Routes a table may hold (AWS's default quota is 50).
    pub limit: usize,
    /// Time between passes (drift repair).
    pub interval: Duration,
    /// Mutating calls per second, at most.
    pub rate: f64,
    /// Take over foreign routes on destinations Tessera wants.
    pub adopt: bool,
    /// A host silent this long is no gateway.
    pub failover: Duration,
}

/// One table as the last pass left it, for `GET /v1/routes/cloud`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TableStatus {
    pub id: String,
    pub vpc: String,
    /// Destination → target wanted.
    pub desired: BTreeMap<String, String>,
    /// Every route the table holds (destination → target), foreign ones included.
    pub actual: BTreeMap<String, String>,
    /// Routes Tessera may write here: the limit less the routes it does not own.
    pub budget: usize,
    /// Routes of Tessera's in the table.
    pub used: usize,
    /// Foreign routes on destinations Tessera wants (left alone unless `--aws-adopt`).
    pub collisions: Vec<String>,
    /// Routes of ours repaired after they were deleted or retargeted out of band (since start).
    pub drift_repairs: u64,
    pub calls: u64,
    pub throttles: u64,
    pub last_error: Option<String>,
}

/// Every table, and why the last pass could not even list them (a bad table id, credentials,
/// the endpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudStatus {
    pub tables: BTreeMap<String, TableStatus>,
    pub last_error: Option<String>,
}

pub type Status = Arc<Mutex<CloudStatus>>;

fn target_text(t: &Target) -> String {
    match t {
        Target::Instance(id) | Target::Interface(id) => id.clone(),
        Target::Other(kind, id) => format!("{kind} {id}"),
    }
}

/// The token bucket on the monotonic clock: waits until a call may go.
struct Pacer {
    bucket: TokenBucket,
    origin: Instant,
}

impl Pacer {
    fn new(rate: f64) -> Pacer {
        Pacer { bucket: TokenBucket::new(rate, rate.max(1.0), Duration::ZERO), origin: Instant::now() }
    }

    async fn wait(&mut self) {
        while let Err(wait) = self.bucket.take(self.origin.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Retries of one throttled call before the pass gives the table up (the next pass resumes).
const THROTTLE_RETRIES: u32 = 6;

/// Passes while this replica holds the lease, every `interval` (and a second after a change).
pub async fn run(state: AppState, config: VpcConfig, status: Status, mut closing: watch::Receiver<bool>) {
    let ec2 = Ec2::connect(&config.ec2).await;
    let mut pacer = Pacer::new(config.rate);
    let mut commits = state.store.commits();
    loop {
        if let Some(fence) = state.writer.fence() {
            let outcome = pass(&state, &ec2, &config, &status, &mut pacer, fence).await;
            if let Err(e) = &outcome {
                tracing::warn!(error = %e, "VPC route pass failed; the next one resumes");
            }
            status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).last_error = outcome.err().map(|e| e.to_string());
        }
        // The next pass: after the interval, or a second after a change of this replica's.
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = commits.changed() => tokio::time::sleep(Duration::from_secs(1)).await,
            _ = closing.changed() => return,
        }
    }
}

/// What every table of a pass is planned from, read once per pass.
struct Inputs {
    topology: TopologyRecord,
    hosts: Vec<HostRecord>,
    blocks: Vec<BlockRecord>,
    health: Health,
    networks: Vec<IpNet>,
}

impl Inputs {
    async fn read(state: &AppState, failover: Duration) -> Result<Inputs, StoreError> {
        let topology = state.store.topology().await?;
        let networks = topology.layout.networks.iter().map(|n| n.cidr).collect();
        Ok(Inputs {
            hosts: state.store.hosts().await?,
            blocks: state.store.blocks(BlockFilter::default()).await?,
            health: Health::read(&state.dist, failover).await?,
            topology,
            networks,
        })
    }

    /// Every route of the plan made within `budget`, with its gateway candidates: the route's
    /// hosts that have an EC2 target, and whether each is healthy.
    fn wanted(&self, budget: usize) -> Result<Vec<Wanted>, StoreError> {
        let plan =
            crate::routes::plan(&self.topology, &self.hosts, &self.blocks, Some(budget)).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let by_name: BTreeMap<&str, &HostRecord> = self.hosts.iter().map(|h| (h.name.as_str(), h)).collect();
        let mut out = Vec::new();
        for route in &plan.fabric_routes {
            let candidates = route
                .gateways
                .iter()
                .filter_map(|g| by_name.get(g.host.as_str()))
                .filter_map(|h| {
                    let target = Target::from_ec2_id(h.cloud_target.as_deref()?).ok()?;
                    Some(Candidate { host: h.name.clone(), target, healthy: self.health.healthy(h) })
                })
                .collect();
            out.push(Wanted { destination: route.dst, candidates });
        }
        Ok(out)
    }
}

async fn pass(state: &AppState, ec2: &Ec2, config: &VpcConfig, status: &Status, pacer: &mut Pacer, fence: i64) -> Result<(), String> {
    let tag = config.tag.as_ref().map(|(k, v)| (k.as_str(), v.as_str()));
    let tables = ec2.tables(&config.tables, tag).await.map_err(|e| e.to_string())?;
    let inputs = Inputs::read(state, config.failover).await.map_err(|e| e.to_string())?;
    for table in tables {
        let outcome = reconcile_table(state, ec2, config, pacer, fence, &inputs, &table).await;
        let mut all = status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = all.tables.entry(table.id.clone()).or_default();
        match outcome {
            Ok(mut fresh) => {
                fresh.drift_repairs += entry.drift_repairs;
                fresh.calls += entry.calls;
                fresh.throttles += entry.throttles;
                *entry = fresh;
            }
            Err((e, calls, throttles)) => {
                tracing::warn!(table = %table.id, error = %e, "VPC route table not reconciled this pass");
                entry.id = table.id.clone();
                entry.calls += calls;
                entry.throttles += throttles;
                entry.last_error = Some(e);
            }
        }
    }
    Ok(())
}

type Failure = (String, u64, u64);

async fn reconcile_table(
    state: &AppState,
    ec2: &Ec2,
    config: &VpcConfig,
    pacer: &mut Pacer,
    fence: i64,
    inputs: &Inputs,
    table: &Table,
) -> Result<TableStatus, Failure> {
    let store_error = |e: StoreError| (e.to_string(), 0, 0);
    let owned = state.store.cloud_routes(&table.id).await.map_err(store_error)?;
    let room = budget(&table.routes, &owned, &inputs.networks, config.limit);
    let want = desired(&inputs.wanted(room).map_err(store_error)?, &owned);
    let plan = plan_table(&table.routes, &owned, &want, &inputs.networks, config.adopt);
    state.metrics.cloud_drift_repairs.inc_by(plan.drift as u64);
    state.metrics.cloud_collisions.set(plan.collisions.len() as i64);
    // A route of ours moved while it still pointed where we wrote it: a gateway failover.
    let failovers = plan
        .calls
        .iter()
        .filter(|c| {
            matches!(c, Call::Replace { destination, .. }
                if table.routes.iter().any(|r| r.destination.trunc() == *destination && owned.get(destination).is_some_and(|w| r.points_at(w))))
        })
        .count();
    state.metrics.cloud_failovers.inc_by(failovers as u64);
    let (mut calls, mut throttles) = (0u64, 0u64);
    for call in &plan.calls {
        let mut attempt = 0;
        loop {
            pacer.wait().await;
            // Only the lease holder writes: checked right before each call.
            if state.writer.fence() != Some(fence) {
                return Err(("the writer lease was lost mid-pass".into(), calls, throttles));
            }
            calls += 1;
            state.metrics.cloud_calls.inc();
            match ec2.call(&table.id, call).await {
                Ok(()) => break,
                // Already gone: what a delete wanted.
                Err(Ec2Error::NotFound(_)) if matches!(call, Call::Delete { .. }) => break,
                Err(Ec2Error::Throttled(m)) if attempt < THROTTLE_RETRIES => {
                    throttles += 1;
                    state.metrics.cloud_throttles.inc();
                    tracing::debug!(table = %table.id, error = %m, attempt, "throttled; backing off");
                    tokio::time::sleep(backoff(attempt, Duration::from_millis(200), Duration::from_secs(10), rand::random::<f64>())).await;
                    attempt += 1;
                }
                Err(e) => return Err((format!("{call:?}: {e}"), calls, throttles + u64::from(matches!(e, Ec2Error::Throttled(_))))),
            }
        }
        let (destination, target) = match call {
            Call::Create { destination, target } | Call::Replace { destination, target } => (*destination, Some(target)),
            Call::Delete { destination } => (*destination, None),
        };
        state.store.record_cloud_route(&table.id, destination, target, fence).await.map_err(|e| (e.to_string(), calls, throttles))?;
    }
    let shown = |routes: &BTreeMap<IpNet, Target>| routes.iter().map(|(d, t)| (d.to_string(), target_text(t))).collect();
    let actual: BTreeMap<IpNet, Target> = table.routes.iter().map(|r: &Route| (r.destination.trunc(), r.target.clone())).collect();
    Ok(TableStatus {
        id: table.id.clone(),
        vpc: table.vpc.clone(),
        desired: shown(&want),
        actual: shown(&actual),
        budget: room,
        used: plan.owned.len(),
        collisions: plan
            .collisions
            .iter()
            .map(|c| format!("{} → {} (wanted {})", c.destination, target_text(&c.foreign), target_text(&c.wanted)))
            .collect(),
        drift_repairs: plan.drift as u64,
        calls,
        throttles,
        last_error: None,
    })
}

//! VPC route tables (AWS), kept by the writer-lease holder: each pass describes the managed
//! tables, plans each one (`tessera_cloud::vpc`: the route plan within the table's budget, each
//! route to a healthy gateway host's instance or interface, the fewest calls, foreign routes
//! untouched) and carries the calls out through a token bucket, checking the fencing token
//! before each and recording what it wrote right after. A pass that stops half-way (a crash, a
//! lost lease, throttling) leaves a state the next pass finishes from.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tessera_cloud::pace::{TokenBucket, backoff};
use tessera_cloud::vpc::{Call, Candidate, Route, Target, Wanted, budget, desired, overlap_with_vpc, plan_table};
use tessera_cloud_ec2::{Ec2, Ec2Error, Settings, Subnet, Table};
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
    /// And the tables of the subnets the hosts' EC2 targets are in.
    pub host_subnets: bool,
    /// Turn off the source/destination check of each gateway before a route points at it.
    pub disable_source_dest_check: bool,
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
    /// Every route the table holds after the last pass's calls (destination → target), foreign
    /// ones included.
    pub actual: BTreeMap<String, String>,
    /// Routes Tessera may write here: the limit less the routes it does not own.
    pub budget: usize,
    /// Routes of Tessera's in the table.
    pub used: usize,
    /// Foreign routes on destinations Tessera wants (left alone unless `--aws-adopt`).
    pub collisions: Vec<String>,
    /// Addresses the routes cover that are not Tessera's hosts' (the budget forced them):
    /// `route: range (whose)`.
    pub over_coverage: Vec<String>,
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

/// The token bucket on the monotonic clock: waits until a call may go. It holds one token, so
/// calls are spaced 1/rate apart and no second ever sees more than `rate` of them (EC2 counts
/// its own buckets per account; a burst of ours would eat into what other tools share).
struct Pacer {
    bucket: TokenBucket,
    origin: Instant,
}

impl Pacer {
    fn new(rate: f64) -> Pacer {
        Pacer { bucket: TokenBucket::new(rate, 1.0, Duration::ZERO), origin: Instant::now() }
    }

    async fn wait(&mut self) {
        while let Err(wait) = self.bucket.take(self.origin.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// What passes carry from one to the next besides the store: the pacing, the gateways whose
/// source/destination check is already off, and where the hosts' EC2 targets are (an
/// instance never changes subnet; an interface neither).
struct Session {
    pacer: Pacer,
    /// The hosts the last pass pointed routes at: the pass after their silence comes as soon
    /// as the failover time says, not an interval later.
    gateways: BTreeSet<String>,
    unchecked: BTreeSet<Target>,
    subnets: BTreeMap<Target, Subnet>,
}

/// Retries of one throttled call before the pass gives the table up (the next pass resumes).
const THROTTLE_RETRIES: u32 = 6;

/// Passes while this replica holds the lease, every `interval` (and a second after a change).
pub async fn run(state: AppState, config: VpcConfig, status: Status, mut closing: watch::Receiver<bool>) {
    let ec2 = Ec2::connect(&config.ec2).await;
    let mut session =
        Session { pacer: Pacer::new(config.rate), gateways: BTreeSet::new(), unchecked: BTreeSet::new(), subnets: BTreeMap::new() };
    let mut commits = state.store.commits();
    let mut failures = 0;
    loop {
        let mut next = config.interval;
        if let Some(fence) = state.writer.fence() {
            let outcome = pass(&state, &ec2, &config, &status, &mut session, fence).await;
            if let Err(e) = &outcome {
                tracing::warn!(error = %e, "VPC route pass failed; the next one resumes");
            }
            failures = if outcome.as_ref().is_ok_and(|p| p.clean) { 0 } else { failures + 1 };
            if let Ok(Some(expiry)) = outcome.as_ref().map(|p| p.gateway_expiry) {
                next = next.min(expiry.max(Duration::from_secs(1)));
            }
            status.lock().unwrap_or_else(std::sync::PoisonError::into_inner).last_error = outcome.err();
        }
        // The next pass: after the interval, when a gateway's report is due to go stale, or a
        // second after a change of this replica's; after a failed pass, sooner (backing off),
        // so a fault costs seconds, not an interval.
        if failures > 0 {
            next = next.min(backoff(failures - 1, Duration::from_secs(1), config.interval, 0.5 + rand::random::<f64>() / 2.0));
        }
        tokio::select! {
            _ = tokio::time::sleep(next) => {}
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
    /// hosts that have an EC2 target, and whether each is healthy; and what the routes
    /// over-cover.
    fn wanted(&self, budget: usize) -> Result<(Vec<Wanted>, Vec<String>), StoreError> {
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
        let over = plan.over_coverage.iter().map(|o| format!("{}: {} ({})", o.route, o.range, o.belongs_to)).collect();
        Ok((out, over))
    }
}

/// How a pass went.
struct Pass {
    /// Every table reconciled.
    clean: bool,
    /// How long until the first gateway stops being healthy unless it reports.
    gateway_expiry: Option<Duration>,
}

/// One pass over every table, or why they could not be listed.
async fn pass(state: &AppState, ec2: &Ec2, config: &VpcConfig, status: &Status, session: &mut Session, fence: i64) -> Result<Pass, String> {
    let inputs = Inputs::read(state, config.failover).await.map_err(|e| e.to_string())?;
    session.gateways.clear();
    let tables = managed_tables(ec2, config, session, &inputs).await.map_err(|e| e.to_string())?;
    let mut clean = true;
    for table in tables {
        let outcome = reconcile_table(state, ec2, config, session, fence, &inputs, &table).await;
        let mut all = status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = all.tables.entry(table.id.clone()).or_default();
        match outcome {
            Ok(mut fresh) => {
                // A collision is logged once, when it appears (it stays in the status).
                for c in fresh.collisions.iter().filter(|c| !entry.collisions.contains(c)) {
                    tracing::warn!(table = %table.id, collision = %c, "a foreign route holds a CIDR Tessera wants; left alone (--aws-adopt takes it)");
                }
                fresh.drift_repairs += entry.drift_repairs;
                fresh.calls += entry.calls;
                fresh.throttles += entry.throttles;
                *entry = fresh;
            }
            Err((e, calls, throttles)) => {
                clean = false;
                tracing::warn!(table = %table.id, error = %e, "VPC route table not reconciled this pass");
                entry.id = table.id.clone();
                entry.calls += calls;
                entry.throttles += throttles;
                entry.last_error = Some(e);
            }
        }
    }
    Ok(Pass { clean, gateway_expiry: inputs.health.first_expiry(session.gateways.iter().map(String::as_str)) })
}

/// The tables named, tagged, and (`--aws-host-subnet-tables`) those of the hosts' subnets.
async fn managed_tables(ec2: &Ec2, config: &VpcConfig, session: &mut Session, inputs: &Inputs) -> Result<Vec<Table>, Ec2Error> {
    let mut tables = Vec::new();
    let tag = config.tag.as_ref().map(|(k, v)| (k.as_str(), v.as_str()));
    if !config.tables.is_empty() || tag.is_some() {
        tables = ec2.tables(&config.tables, tag).await?;
    }
    if config.host_subnets {
        let targets: BTreeSet<Target> = inputs.hosts.iter().filter_map(|h| Target::from_ec2_id(h.cloud_target.as_deref()?).ok()).collect();
        let unknown: Vec<Target> = targets.iter().filter(|t| !session.subnets.contains_key(t)).cloned().collect();
        if !unknown.is_empty() {
            session.subnets.extend(ec2.subnets(&unknown).await?);
        }
        let mut subnets: Vec<Subnet> = targets.iter().filter_map(|t| session.subnets.get(t)).cloned().collect();
        subnets.sort();
        subnets.dedup();
        if !subnets.is_empty() {
            tables.extend(ec2.subnet_tables(&subnets).await?);
        }
    }
    tables.sort_by(|a, b| a.id.cmp(&b.id));
    tables.dedup_by(|a, b| a.id == b.id);
    Ok(tables)
}

/// Why a table was not reconciled, with the calls and throttles it cost so far.
type Failure = (String, u64, u64);

/// Right before each mutating call: its turn under the rate limit, and the writer lease still
/// this replica's (only the lease holder writes).
async fn turn(state: &AppState, session: &mut Session, fence: i64) -> Result<(), String> {
    session.pacer.wait().await;
    if state.writer.fence() != Some(fence) {
        return Err("the writer lease was lost mid-pass".into());
    }
    Ok(())
}

async fn reconcile_table(
    state: &AppState,
    ec2: &Ec2,
    config: &VpcConfig,
    session: &mut Session,
    fence: i64,
    inputs: &Inputs,
    table: &Table,
) -> Result<TableStatus, Failure> {
    let store_error = |e: StoreError| (e.to_string(), 0, 0);
    if let Some((network, vpc)) = overlap_with_vpc(&table.routes, &inputs.networks) {
        let name = inputs.topology.layout.networks.iter().find(|n| n.cidr == network).map_or("?", |n| n.name.as_str());
        return Err((
            format!(
                "topology networks[{name}].cidr {network} overlaps this table's VPC ({vpc}, its local route): routes into it cannot be told from the VPC's own addresses; give the network a CIDR outside the VPC"
            ),
            0,
            0,
        ));
    }
    let owned = state.store.cloud_routes(&table.id).await.map_err(store_error)?;
    let room = budget(&table.routes, &owned, &inputs.networks, config.limit);
    let (wanted, over_coverage) = inputs.wanted(room).map_err(store_error)?;
    let want = desired(&wanted, &owned);
    for w in &wanted {
        let target = want.get(&w.destination.trunc());
        session.gateways.extend(w.candidates.iter().filter(|c| c.healthy && Some(&c.target) == target).map(|c| c.host.clone()));
    }
    let plan = plan_table(&table.routes, &owned, &want, &inputs.networks, config.adopt);
    state.metrics.cloud_drift_repairs.inc_by(plan.drift as u64);
    state.metrics.cloud_collisions.set(plan.collisions.len() as i64);
    // A route of ours moved while it still pointed where we wrote it: a gateway failover.
    let failovers = plan
        .calls
        .iter()
        .filter(|c| {
            matches!(c, Call::Replace { destination, .. }
                if table.routes.iter().any(|r| r.destination.trunc() == *destination && owned.get(destination).is_some_and(|w| w.confirmed && r.points_at(&w.target))))
        })
        .count();
    state.metrics.cloud_failovers.inc_by(failovers as u64);
    let (mut calls, mut throttles) = (0u64, 0u64);
    if config.disable_source_dest_check {
        for target in want.values().filter(|t| !session.unchecked.contains(*t)).collect::<BTreeSet<_>>() {
            turn(state, session, fence).await.map_err(|e| (e, calls, throttles))?;
            calls += 1;
            state.metrics.cloud_calls.inc();
            match ec2.disable_source_dest_check(target).await {
                Ok(()) => {
                    session.unchecked.insert(target.clone());
                }
                Err(e) => {
                    return Err((format!("turning off the source/destination check of {}: {e}", target_text(target)), calls, throttles));
                }
            }
        }
    }
    for call in &plan.calls {
        let (destination, target) = match call {
            Call::Create { destination, target } | Call::Replace { destination, target } => (*destination, Some(target)),
            Call::Delete { destination } => (*destination, None),
        };
        let mut attempt = 0;
        loop {
            // The fence is checked again in the store, with the record of a create or replace.
            turn(state, session, fence).await.map_err(|e| (e, calls, throttles))?;
            if let Some(target) = target {
                state
                    .store
                    .begin_cloud_route(&table.id, destination, target, fence)
                    .await
                    .map_err(|e| (e.to_string(), calls, throttles))?;
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
                Err(e) => {
                    let throttled = u64::from(matches!(e, Ec2Error::Throttled(_)));
                    state.metrics.cloud_throttles.inc_by(throttled);
                    return Err((format!("{call:?}: {e}"), calls, throttles + throttled));
                }
            }
        }
        state.store.settle_cloud_route(&table.id, destination, target, fence).await.map_err(|e| (e.to_string(), calls, throttles))?;
    }
    // Records the table itself settled: unanswered calls that landed, routes gone.
    for (destination, target) in &plan.settle {
        state
            .store
            .settle_cloud_route(&table.id, *destination, target.as_ref(), fence)
            .await
            .map_err(|e| (e.to_string(), calls, throttles))?;
    }
    let shown = |routes: &BTreeMap<IpNet, Target>| routes.iter().map(|(d, t)| (d.to_string(), target_text(t))).collect();
    // What the table holds once this pass's calls (each answered) are made.
    let mut actual: BTreeMap<IpNet, Target> = table.routes.iter().map(|r: &Route| (r.destination.trunc(), r.target.clone())).collect();
    for call in &plan.calls {
        match call {
            Call::Create { destination, target } | Call::Replace { destination, target } => {
                actual.insert(*destination, target.clone());
            }
            Call::Delete { destination } => {
                actual.remove(destination);
            }
        }
    }
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
        over_coverage,
        drift_repairs: plan.drift as u64,
        calls,
        throttles,
        last_error: None,
    })
}

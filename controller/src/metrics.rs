//! Prometheus metrics of the controller, exposed at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The matched route template (`/v1/hosts/{name}`), never the raw path.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub allocations: Counter,
    pub releases: Counter,
    /// 1 while this replica holds the writer lease.
    pub lease_held: Gauge,
    /// The change-feed position this replica's node states reflect.
    pub feed_position: Gauge,
    /// Full resyncs because this replica fell behind the retained feed.
    pub feed_resyncs: Gauge,
    /// VIPs moved to another host (failovers, drains, first placements) by this replica.
    pub vip_moves: Counter,
    /// Mutating EC2 calls made for VPC route tables, those throttled, routes of Tessera's found
    /// deleted or retargeted out of band and put back, and routes moved to another gateway.
    pub cloud_calls: Counter,
    pub cloud_throttles: Counter,
    pub cloud_drift_repairs: Counter,
    pub cloud_failovers: Counter,
    /// Foreign routes on destinations Tessera wants, at the last pass.
    pub cloud_collisions: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tessera");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16)));
        let allocations = Counter::default();
        let releases = Counter::default();
        registry.register("http_requests", "HTTP requests by route and status", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency by route", latency.clone());
        registry.register("endpoint_allocations", "Endpoint allocations answered", allocations.clone());
        registry.register("endpoint_releases", "Endpoints released", releases.clone());
        let (lease_held, feed_position, feed_resyncs) = (Gauge::default(), Gauge::default(), Gauge::default());
        registry.register("writer_lease_held", "1 while this replica holds the writer lease", lease_held.clone());
        registry.register("feed_position", "Change-feed position this replica's node states reflect", feed_position.clone());
        registry.register("feed_resyncs", "Full resyncs after falling behind the retained change feed", feed_resyncs.clone());
        let vip_moves = Counter::default();
        registry.register("vip_moves", "VIPs moved to another host (failover, drain, placement)", vip_moves.clone());
        let (cloud_calls, cloud_throttles, cloud_drift_repairs, cloud_failovers) =
            (Counter::default(), Counter::default(), Counter::default(), Counter::default());
        let cloud_collisions = Gauge::default();
        registry.register("cloud_calls", "Mutating EC2 calls for VPC route tables", cloud_calls.clone());
        registry.register("cloud_throttles", "EC2 calls answered with throttling", cloud_throttles.clone());
        registry.register("cloud_drift_repairs", "VPC routes of Tessera's put back after out-of-band changes", cloud_drift_repairs.clone());
        registry.register("cloud_failovers", "VPC routes moved to another gateway host", cloud_failovers.clone());
        registry.register("cloud_collisions", "Foreign VPC routes on destinations Tessera wants", cloud_collisions.clone());
        Metrics {
            registry,
            requests,
            latency,
            allocations,
            releases,
            lease_held,
            feed_position,
            feed_resyncs,
            vip_moves,
            cloud_calls,
            cloud_throttles,
            cloud_drift_repairs,
            cloud_failovers,
            cloud_collisions,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

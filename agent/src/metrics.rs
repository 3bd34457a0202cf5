//! Prometheus metrics of the agent.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabels {
    /// `nftables` or `routes`.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApplyLabels {
    /// `full` (the whole table), `delta` (an nft transaction of what differs), `elements` (a
    /// netlink batch of element changes) or `unchanged`.
    pub how: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub peer: String,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub generation: Gauge,
    pub set_elements: Gauge,
    pub apply_seconds: Histogram,
    pub apply_failures: Counter,
    pub applies: Family<ApplyLabels, Counter>,
    pub drift_repairs: Family<DriftLabels, Counter>,
    pub reconnects: Counter,
    pub bgp_up: Family<PeerLabels, Gauge>,
    pub bgp_sent: Family<PeerLabels, Gauge>,
    pub bgp_received: Family<PeerLabels, Gauge>,
    pub bgp_flaps: Family<PeerLabels, Gauge>,
    pub vips: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tessera_agent");
        let m = Metrics {
            generation: Gauge::default(),
            set_elements: Gauge::default(),
            apply_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            apply_failures: Counter::default(),
            applies: Family::default(),
            drift_repairs: Family::default(),
            reconnects: Counter::default(),
            bgp_up: Family::default(),
            bgp_sent: Family::default(),
            bgp_received: Family::default(),
            bgp_flaps: Family::default(),
            vips: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("applied_generation", "Generation of the node state being enforced", m.generation.clone());
        registry.register("set_elements", "Elements in the sets and maps of table inet tessera", m.set_elements.clone());
        registry.register("apply_duration_seconds", "Time to apply a node state", m.apply_seconds.clone());
        registry.register("apply_failures", "Node states that could not be applied", m.apply_failures.clone());
        registry.register(
            "applies",
            "Node states applied, by how: the whole table, a delta through nft, element changes over netlink, nothing to change",
            m.applies.clone(),
        );
        registry.register("drift_repairs", "Drift found and repaired by the resync", m.drift_repairs.clone());
        registry.register("watch_reconnects", "Reconnections of the state watch", m.reconnects.clone());
        registry.register("bgp_session_established", "1 while the BGP session with the peer is established", m.bgp_up.clone());
        registry.register("bgp_prefixes_sent", "Prefixes the peer holds from this node", m.bgp_sent.clone());
        registry.register("bgp_prefixes_received", "Prefixes the peer announced to this node", m.bgp_received.clone());
        registry.register("bgp_session_flaps", "Times the established session went down", m.bgp_flaps.clone());
        registry.register("vips_held", "VIPs configured on this node", m.vips.clone());
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn applied(&self, how: &str) {
        self.applies.get_or_create(&ApplyLabels { how: how.into() }).inc();
    }

    pub fn drift_repaired(&self, kind: &str) {
        self.drift_repairs.get_or_create(&DriftLabels { kind: kind.into() }).inc();
    }

    pub fn bgp_session(&self, peer: &str, up: bool, sent: usize, received: usize, flaps: u64) {
        let labels = PeerLabels { peer: peer.to_string() };
        self.bgp_up.get_or_create(&labels).set(i64::from(up));
        self.bgp_sent.get_or_create(&labels).set(sent as i64);
        self.bgp_received.get_or_create(&labels).set(received as i64);
        self.bgp_flaps.get_or_create(&labels).set(flaps as i64);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

//! Which hosts are up, for the singleton work that moves things between them (VIPs, BGP
//! controller-mode paths, VPC gateways): a host is healthy while it is not drained and its
//! agent reported within the failover time.
//!
//! Reports are read from the store (`last_seen`, Unix seconds written by the replica the agent
//! reports to), so replicas' clocks are assumed to agree to well under the failover time.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::distribute::Distributor;
use crate::store::{HostRecord, StoreError};

/// Every host's last report against a clock and a failover time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    last_seen: BTreeMap<String, i64>,
    now: i64,
    window: i64,
}

impl Health {
    /// Pure: `last_seen` (host → Unix seconds) judged at `now`.
    pub fn new(last_seen: BTreeMap<String, i64>, now: i64, failover: Duration) -> Health {
        Health { last_seen, now, window: i64::try_from(failover.as_secs()).unwrap_or(i64::MAX) }
    }

    /// The reports as the store has them (this replica's latest stored first), judged now.
    pub async fn read(dist: &Distributor, failover: Duration) -> Result<Health, StoreError> {
        let seen = dist.records().await?.into_iter().filter_map(|(host, r)| r.report.last_seen.map(|s| (host, s))).collect();
        Ok(Health::new(seen, crate::store::unix_now(), failover))
    }

    pub fn healthy(&self, host: &HostRecord) -> bool {
        !host.drained && self.last_seen.get(&host.name).is_some_and(|seen| self.now - seen <= self.window)
    }
}

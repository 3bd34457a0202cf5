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

    /// The Unix second from which `host` is no longer healthy unless it reports again.
    pub fn expires(&self, host: &str) -> Option<i64> {
        self.last_seen.get(host).map(|seen| seen.saturating_add(self.window).saturating_add(1))
    }

    /// How long from now until the first of `hosts` stops being healthy unless it reports.
    pub fn first_expiry<'a>(&self, hosts: impl IntoIterator<Item = &'a str>) -> Option<Duration> {
        let at = hosts.into_iter().filter_map(|h| self.expires(h)).min()?;
        Some(Duration::from_secs(u64::try_from(at.saturating_sub(crate::store::unix_now())).unwrap_or(0)))
    }

    pub fn healthy(&self, host: &HostRecord) -> bool {
        !host.drained && self.last_seen.get(&host.name).is_some_and(|seen| self.now - seen <= self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_is_healthy_until_its_report_is_older_than_the_failover_time() {
        let health = Health::new(BTreeMap::from([("a".to_string(), 100), ("b".to_string(), 95)]), 104, Duration::from_secs(10));
        let host = |name: &str, drained: bool| HostRecord::bare(name, "g", drained);
        assert!(health.healthy(&host("a", false)) && health.healthy(&host("b", false)));
        assert!(!health.healthy(&host("a", true)), "drained");
        assert!(!health.healthy(&host("never", false)), "never reported");
        // b (seen at 95) stops being healthy at 106; a at 111.
        assert_eq!((health.expires("b"), health.expires("a"), health.expires("never")), (Some(106), Some(111), None));
        assert!(!Health::new(BTreeMap::from([("b".to_string(), 95)]), 106, Duration::from_secs(10)).healthy(&host("b", false)));
    }
}

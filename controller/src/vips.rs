//! Keeping each VIP on a healthy host (`crate::health`): holder work under the writer lease. A
//! VIP whose holder is not healthy moves to the healthy allowed host holding the fewest VIPs
//! (ties by name), and stays where it is otherwise (no flapping back when a host returns).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::watch;

use crate::api::AppState;
use crate::health::Health;
use crate::store::{HostRecord, StoreError, VipRecord};

/// The moves to make: (VIP, new holder). Pure.
pub fn moves(vips: &[VipRecord], hosts: &[HostRecord], health: &Health) -> Vec<(IpAddr, Option<String>)> {
    let mut load: BTreeMap<String, usize> = BTreeMap::new();
    for h in vips.iter().filter_map(|v| v.holder.clone()) {
        *load.entry(h).or_default() += 1;
    }
    let mut out = Vec::new();
    for v in vips {
        let eligible: Vec<&HostRecord> = hosts.iter().filter(|h| v.allows(&h.name, &h.group) && health.healthy(h)).collect();
        if v.holder.as_deref().is_some_and(|held| eligible.iter().any(|h| h.name == held)) {
            continue;
        }
        let next = eligible.iter().min_by_key(|h| (load.get(&h.name).copied().unwrap_or(0), &h.name)).map(|h| h.name.clone());
        if next != v.holder {
            if let Some(old) = v.holder.as_ref().and_then(|h| load.get_mut(h)) {
                *old = old.saturating_sub(1);
            }
            if let Some(n) = &next {
                *load.entry(n.clone()).or_default() += 1;
            }
            out.push((v.address, next));
        }
    }
    out
}

/// Every second, on the lease holder: move VIPs off hosts that are not healthy.
pub async fn keep_held(state: AppState, failover: Duration, mut closing: watch::Receiver<bool>) {
    loop {
        if let Some(fence) = state.writer.fence()
            && let Err(e) = round(&state, failover, fence).await
        {
            tracing::warn!(error = %e, "moving VIPs failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = closing.changed() => return,
        }
    }
}

async fn round(state: &AppState, failover: Duration, fence: i64) -> Result<(), StoreError> {
    let vips = state.store.vips().await?;
    if vips.is_empty() {
        return Ok(());
    }
    let hosts = state.store.hosts().await?;
    let planned = moves(&vips, &hosts, &Health::read(&state.dist, failover).await?);
    if planned.is_empty() {
        return Ok(());
    }
    let by_address: BTreeMap<IpAddr, &VipRecord> = vips.iter().map(|v| (v.address, v)).collect();
    let list: Vec<(&VipRecord, Option<String>)> = planned.into_iter().filter_map(|(a, h)| by_address.get(&a).map(|v| (*v, h))).collect();
    for moved in state.ops.move_vips(&list, fence).await? {
        let from = by_address.get(&moved.address).and_then(|v| v.holder.as_deref());
        tracing::info!(vip = %moved.address, from = ?from, to = ?moved.holder, "VIP moved");
        state.metrics.vip_moves.inc();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, group: &str, drained: bool) -> HostRecord {
        HostRecord::bare(name, group, drained)
    }

    fn vip(address: &str, hosts: &[&str], group: Option<&str>, holder: Option<&str>) -> VipRecord {
        VipRecord {
            address: address.parse().expect("ip"),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            group: group.map(String::from),
            holder: holder.map(String::from),
            revision: 1,
        }
    }

    #[test]
    fn a_vip_stays_on_a_healthy_holder_and_leaves_a_silent_or_drained_one() {
        let hosts = [host("a", "rack-1", false), host("b", "rack-1", false), host("c", "rack-2", false), host("d", "rack-1/x", true)];
        let seen: BTreeMap<String, i64> =
            [("a", 100), ("b", 95), ("c", 100), ("d", 100)].into_iter().map(|(h, s)| (h.to_string(), s)).collect();
        let at = |now: i64| Health::new(seen.clone(), now, Duration::from_secs(10));
        // Healthy holder: no move, even though another host holds fewer.
        assert!(moves(&[vip("192.0.2.1", &["a", "b"], None, Some("b"))], &hosts, &at(100)).is_empty());
        // b is silent for 11 s: the VIP moves to a.
        assert_eq!(
            moves(&[vip("192.0.2.1", &["a", "b"], None, Some("b"))], &hosts, &at(106)),
            vec![("192.0.2.1".parse().expect("ip"), Some("a".into()))]
        );
        // A group allows hosts under it (not a sibling with the same prefix); a drained host never holds.
        let by_group = vip("192.0.2.2", &[], Some("rack-1"), Some("d"));
        assert_eq!(moves(&[by_group], &hosts, &at(100)), vec![("192.0.2.2".parse().expect("ip"), Some("a".into()))]);
        // New VIPs spread: the second goes to the host holding fewer.
        let two = [vip("192.0.2.3", &["a", "b"], None, None), vip("192.0.2.4", &["a", "b"], None, None)];
        let placed: Vec<Option<String>> = moves(&two, &hosts, &at(100)).into_iter().map(|(_, h)| h).collect();
        assert_eq!(placed, vec![Some("a".into()), Some("b".into())]);
        // Nobody healthy: the holder is cleared (nobody answers rather than a dead host).
        assert_eq!(moves(&[vip("192.0.2.5", &["c"], None, Some("c"))], &hosts, &at(200)), vec![("192.0.2.5".parse().expect("ip"), None)]);
    }
}

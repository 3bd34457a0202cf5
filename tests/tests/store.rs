//! Store behaviour on both backends (SQLite file and a real PostgreSQL): allocation order,
//! idempotency, release, host removal, topology changes, revisions, and concurrency.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use tessera_controller::store::{BlockFilter, NewEndpoint, NewHost, Store, StoreError};
use tessera_tests::{apply, stores};
use tessera_topology::{Format, Labels, parse_topology};

const TOPOLOGY: &str = "
networks:
  - {name: pods, cidr: 10.20.0.0/16, blockPrefix: 29}
  - {name: pods6, cidr: 'fd00:20::/48'}
  - {name: restricted, cidr: 10.30.0.0/16, tenants: [vip]}
groups:
  - name: zone-a
    assignment: {zone: a}
    groups: [{name: rack-1}, {name: rack-2}]
  - name: zone-b
    assignment: {zone: b}
    groups: [{name: rack-3}]
";

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A host with an underlay address of its own (two hosts never share one).
async fn host(store: &Store, name: &str, zone: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ip = std::net::Ipv4Addr::from(0xC612_0000 + n); // 198.18.0.0/15, the benchmarking range
    let h = store
        .create_host(NewHost {
            name: name.into(),
            ips: vec![ip.into()],
            labels: labels(&[("zone", zone)]),
            cloud_target: None,
            origin: Default::default(),
        })
        .await
        .expect("create host");
    h.group
}

fn endpoint(id: &str, tenant: &str, segment: &str, host: &str) -> NewEndpoint {
    NewEndpoint { id: id.into(), tenant: tenant.into(), segment: segment.into(), host: host.into(), labels: Labels::new() }
}

async fn setup(store: &Store) {
    apply(store, TOPOLOGY).await;
    store.create_tenant("t1", Labels::new()).await.expect("tenant");
    store.create_tenant("t2", Labels::new()).await.expect("tenant");
    store.create_segment("t1", "web", Labels::new()).await.expect("segment");
}

#[tokio::test]
async fn placement_and_allocation_order() {
    for (backend, store) in stores().await {
        setup(&store).await;
        assert_eq!(host(&store, "h1", "a").await, "zone-a/rack-1", "{backend}");
        assert_eq!(host(&store, "h2", "a").await, "zone-a/rack-2", "{backend}");
        assert_eq!(host(&store, "h3", "a").await, "zone-a/rack-1", "{backend}");
        let err = store
            .create_host(NewHost {
                name: "h4".into(),
                ips: vec!["192.0.2.9".parse().expect("ip")],
                labels: labels(&[("zone", "c")]),
                cloud_target: None,
                origin: Default::default(),
            })
            .await;
        assert!(matches!(err, Err(StoreError::Invalid { ref field, .. }) if field == "labels"), "{backend}: {err:?}");

        // Dual-stack: one address per family; the restricted network is not for t1.
        let (e1, created) = store.allocate(endpoint("e1", "t1", "default", "h1")).await.expect("allocate");
        assert!(created);
        // The networks' own addresses (10.20.0.0, the subnet-router anycast fd00:20::) are never handed out.
        assert_eq!(e1.ips, vec!["10.20.0.1".parse::<IpAddr>().expect("ip"), "fd00:20::1".parse().expect("ip")], "{backend}");
        // Same id again: the same endpoint, nothing new allocated.
        let (again, created) = store.allocate(endpoint("e1", "t1", "default", "h1")).await.expect("allocate");
        assert!(!created);
        assert_eq!(again.ips, e1.ips);
        // Same id, other owner: refused.
        assert!(matches!(store.allocate(endpoint("e1", "t2", "default", "h1")).await, Err(StoreError::Conflict(_))));

        // Same owner fills its block (a /29 holding the network address: 7 usable), then gets a new block.
        for i in 2..=9 {
            store.allocate(endpoint(&format!("e{i}"), "t1", "default", "h1")).await.expect("allocate");
        }
        let v4: Vec<String> = store
            .blocks(BlockFilter { host: Some("h1"), ..Default::default() })
            .await
            .expect("blocks")
            .iter()
            .filter(|b| b.network == "pods")
            .map(|b| format!("{} {}", b.cidr, b.used))
            .collect();
        assert_eq!(v4, ["10.20.0.0/29 7", "10.20.0.8/29 2"], "{backend}");
        // Another segment on the same host gets its own block.
        let (w, _) = store.allocate(endpoint("w1", "t1", "web", "h1")).await.expect("allocate");
        assert_eq!(w.ips[0].to_string(), "10.20.0.16", "{backend}");
        // Another host of the same group gets its own block too.
        let (o, _) = store.allocate(endpoint("o1", "t1", "default", "h3")).await.expect("allocate");
        assert_eq!(o.ips[0].to_string(), "10.20.0.24", "{backend}");
        // h2 is in rack-2: zone-a is 10.20.0.0/17 carved in two, so rack-2 starts at 10.20.64.0.
        let (r2, _) = store.allocate(endpoint("r2", "t1", "default", "h2")).await.expect("allocate");
        assert_eq!(r2.ips[0].to_string(), "10.20.64.0", "{backend}");
    }
}

#[tokio::test]
async fn release_is_idempotent_and_emptied_blocks_are_reused() {
    for (backend, store) in stores().await {
        setup(&store).await;
        host(&store, "h1", "a").await;
        host(&store, "h2", "a").await;
        assert_eq!(host(&store, "h3", "a").await, "zone-a/rack-1", "{backend}: h3 shares h1's group");
        let (w, _) = store.allocate(endpoint("w1", "t1", "web", "h1")).await.expect("allocate");
        assert_eq!(w.ips[0].to_string(), "10.20.0.1", "{backend}");
        assert!(store.release("w1").await.expect("release").is_some());
        assert!(store.release("w1").await.expect("release twice").is_none(), "{backend}");
        assert!(store.release("never-existed").await.expect("release unknown").is_none());
        let released: Vec<_> =
            store.blocks(BlockFilter::default()).await.expect("blocks").into_iter().filter(|b| b.host.is_none()).collect();
        assert_eq!(released.len(), 2, "{backend}: both families' blocks are released");
        // Another host and owner in the same group takes the released block over.
        let (e, _) = store.allocate(endpoint("x1", "t2", "default", "h3")).await.expect("allocate");
        assert_eq!(e.ips[0].to_string(), "10.20.0.1", "{backend}");
        let b = store.blocks(BlockFilter { host: Some("h3"), ..Default::default() }).await.expect("blocks");
        assert!(b.iter().all(|b| b.tenant.as_deref() == Some("t2")));
    }
}

#[tokio::test]
async fn removing_a_host_releases_its_blocks_and_endpoints() {
    for (backend, store) in stores().await {
        setup(&store).await;
        host(&store, "h1", "a").await;
        store.allocate(endpoint("e1", "t1", "default", "h1")).await.expect("allocate");
        store.delete_host("h1", None).await.expect("delete host");
        assert!(store.endpoints(None, None).await.expect("endpoints").is_empty(), "{backend}");
        let blocks = store.blocks(BlockFilter::default()).await.expect("blocks");
        assert!(blocks.iter().all(|b| b.host.is_none() && b.used == 0), "{backend}: {blocks:?}");
        assert!(matches!(store.delete_host("h1", None).await, Err(StoreError::NotFound { .. })));
    }
}

#[tokio::test]
async fn tenant_networks_and_validation_errors() {
    for (backend, store) in stores().await {
        setup(&store).await;
        store.create_tenant("vip", Labels::new()).await.expect("tenant");
        host(&store, "h1", "a").await;
        let (v, _) = store.allocate(endpoint("v1", "vip", "default", "h1")).await.expect("allocate");
        // pods comes first in the document, so vip draws IPv4 from it, not from restricted.
        assert_eq!(v.ips[0].to_string(), "10.20.0.1", "{backend}");
        let cases = [
            (endpoint("bad id!", "t1", "default", "h1"), "id"),
            (endpoint("e", "nope", "default", "h1"), "tenant"),
            (endpoint("e", "t1", "nope", "h1"), "segment"),
            (endpoint("e", "t1", "default", "nope"), "host"),
        ];
        for (new, field) in cases {
            match store.allocate(new).await {
                Err(StoreError::Invalid { field: f, .. }) => assert_eq!(f, field, "{backend}"),
                other => panic!("{backend}: expected invalid {field}, got {other:?}"),
            }
        }
        assert!(store.endpoints(None, None).await.expect("endpoints").len() == 1, "{backend}: rejected requests stored nothing");
    }
}

#[tokio::test]
async fn topology_changes_never_move_allocated_addresses() {
    for (backend, store) in stores().await {
        setup(&store).await;
        host(&store, "h1", "b").await;
        store.allocate(endpoint("e1", "t1", "default", "h1")).await.expect("allocate");
        let before = store.topology().await.expect("topology");
        // Adding a third zone re-carves zone-b (10.20.128.0/17 → 10.20.64.0/18): refused.
        let grown =
            TOPOLOGY.replace("groups: [{name: rack-3}]", "groups: [{name: rack-3}]\n  - name: zone-c\n    groups: [{name: rack-5}]");
        let spec = parse_topology(&grown, Format::Auto).expect("parses");
        let (plan, revision) = store.apply_topology(spec.clone(), None, true).await.expect("dry run");
        assert!(revision.is_none() && !plan.is_allowed(), "{backend}");
        assert!(plan.refusals.iter().any(|r| r.message.contains("would move")), "{backend}: {plan:?}");
        let (_, revision) = store.apply_topology(spec, None, false).await.expect("apply");
        assert!(revision.is_none(), "{backend}: refused change must not apply");
        let after = store.topology().await.expect("topology");
        assert_eq!(after.revision, before.revision, "{backend}: nothing changed");
        assert_eq!(after.spec, before.spec);

        // Pinning zones with explicit CIDRs makes the same growth safe.
        let pinned = grown
            .replace("  - name: zone-a\n", "  - name: zone-a\n    cidr: 10.20.0.0/17\n")
            .replace("  - name: zone-b\n", "  - name: zone-b\n    cidr: [10.20.128.0/17, 'fd00:20:0:8000::/49', 10.30.128.0/17]\n")
            .replace("  - name: zone-c\n", "  - name: zone-c\n    cidr: [10.20.64.0/18, 'fd00:20:0:4000::/50', 10.30.64.0/18]\n")
            .replace(
                "  - name: zone-a\n    cidr: 10.20.0.0/17\n",
                "  - name: zone-a\n    cidr: [10.20.0.0/18, 'fd00:20::/50', 10.30.0.0/18]\n",
            );
        let spec = parse_topology(&pinned, Format::Auto).expect("parses");
        let (plan, revision) = store.apply_topology(spec, Some(before.revision), false).await.expect("apply");
        assert!(revision.is_some(), "{backend}: {:?}", plan.refusals);
        // Stale revision: 409-worthy error, nothing changed.
        let spec = parse_topology(&pinned, Format::Auto).expect("parses");
        assert!(matches!(store.apply_topology(spec, Some(before.revision), false).await, Err(StoreError::Stale { .. })), "{backend}");
        let e1 = store.endpoint("e1").await.expect("endpoint");
        assert_eq!(e1.ips[0].to_string(), "10.20.128.0", "{backend}: address did not move");
    }
}

/// Many tasks allocate at once on a few hosts: no address and no block is ever handed out twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_allocations_never_collide() {
    for (backend, store) in stores().await {
        setup(&store).await;
        for (i, zone) in ["a", "a", "b"].iter().enumerate() {
            host(&store, &format!("h{i}"), zone).await;
        }
        let mut tasks = Vec::new();
        for t in 0..24 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..10 {
                    let tenant = if t % 2 == 0 { "t1" } else { "t2" };
                    let host = format!("h{}", (t + i) % 3);
                    let (e, _) = store.allocate(endpoint(&format!("c{t}-{i}"), tenant, "default", &host)).await.expect("allocate");
                    out.push(e);
                }
                out
            }));
        }
        let mut addresses = BTreeSet::new();
        let mut count = 0;
        for task in tasks {
            for e in task.await.expect("task") {
                for ip in e.ips {
                    assert!(addresses.insert(ip), "{backend}: {ip} handed out twice");
                }
                count += 1;
            }
        }
        assert_eq!(count, 240);
        // Every block has one owner, and its used count matches its endpoints.
        let blocks = store.blocks(BlockFilter::default()).await.expect("blocks");
        let endpoints = store.endpoints(None, None).await.expect("endpoints");
        let mut per_block: BTreeMap<String, i64> = BTreeMap::new();
        for e in &endpoints {
            for ip in &e.ips {
                let b = blocks.iter().find(|b| b.cidr.contains(ip)).expect("address inside a block");
                assert_eq!(b.host.as_deref(), Some(e.host.as_str()), "{backend}: block {} serves two hosts", b.cidr);
                assert_eq!(b.tenant.as_deref(), Some(e.tenant.as_str()), "{backend}: block {} serves two tenants", b.cidr);
                *per_block.entry(b.cidr.to_string()).or_default() += 1;
            }
        }
        for b in &blocks {
            assert_eq!(per_block.get(&b.cidr.to_string()).copied().unwrap_or(0), b.used, "{backend}: used count of {}", b.cidr);
        }
    }
}

/// Allocations and releases racing on the same hosts and blocks keep every block consistent:
/// a released block holds nothing, and an owned block holds only its owner's addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_allocate_and_release_keep_blocks_consistent() {
    for (backend, store) in stores().await {
        setup(&store).await;
        host(&store, "h0", "a").await;
        host(&store, "h1", "a").await;
        let mut tasks = Vec::new();
        for t in 0..12 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0..15 {
                    let id = format!("r{t}-{round}");
                    let tenant = if t % 3 == 0 { "t2" } else { "t1" };
                    store.allocate(endpoint(&id, tenant, "default", &format!("h{}", t % 2))).await.expect("allocate");
                    if round % 3 != 2 {
                        store.release(&id).await.expect("release");
                    }
                }
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        let blocks = store.blocks(BlockFilter::default()).await.expect("blocks");
        let endpoints = store.endpoints(None, None).await.expect("endpoints");
        assert_eq!(endpoints.len(), 12 * 5, "{backend}");
        for b in &blocks {
            let inside: Vec<_> = endpoints.iter().filter(|e| e.ips.iter().any(|ip| b.cidr.contains(ip))).collect();
            assert_eq!(inside.len() as i64, b.used, "{backend}: used count of {}", b.cidr);
            match &b.host {
                None => assert!(inside.is_empty(), "{backend}: released block {} holds addresses", b.cidr),
                Some(h) => assert!(
                    inside.iter().all(|e| &e.host == h && Some(&e.tenant) == b.tenant.as_ref()),
                    "{backend}: block {} mixes owners",
                    b.cidr
                ),
            }
        }
    }
}

/// The change feed: every write leaves one record in order; a follower that stops mid-stream
/// resumes from its cursor with nothing missed or doubled; one behind the retained window is
/// told to resync.
#[tokio::test]
async fn the_feed_is_complete_ordered_resumable_and_compacted() {
    use tessera_controller::store::{ChangeKind, FeedRead};
    for (backend, store) in stores().await {
        setup(&store).await;
        let start = store.feed_head().await.expect("head");
        host(&store, "h1", "a").await;
        let mut expected = vec![(ChangeKind::Host, "h1".to_string())];
        for i in 0..40 {
            let id = format!("e{i}");
            store.allocate(endpoint(&id, "t1", "default", "h1")).await.expect("allocate");
            expected.push((ChangeKind::Endpoint, id.clone()));
            if i % 3 == 0 {
                store.release(&id).await.expect("release");
                expected.push((ChangeKind::Endpoint, id));
            }
        }
        store.create_tenant("t9", Labels::new()).await.expect("tenant");
        expected.push((ChangeKind::Tenant, "t9".into()));
        // A follower reads 7 at a time and dies after three batches; only its cursor survives,
        // and a new follower resumes from it.
        async fn follow(store: &tessera_controller::store::Store, mut cursor: i64, batches: usize) -> (i64, Vec<(ChangeKind, String)>) {
            let mut seen = Vec::new();
            for _ in 0..batches {
                let FeedRead::Changes(list) = store.changes_since(cursor, 7).await.expect("read") else { panic!("behind") };
                if list.is_empty() {
                    break;
                }
                for c in &list {
                    assert_eq!(c.seq, cursor + 1, "gapless and ordered");
                    cursor = c.seq;
                    seen.push((c.kind, c.object.clone()));
                }
            }
            (cursor, seen)
        }
        let (saved, mut seen) = follow(&store, start, 3).await;
        assert_eq!(seen.len(), 21, "{backend}");
        let (cursor, rest) = follow(&store, saved, usize::MAX).await;
        seen.extend(rest);
        assert_eq!(seen, expected, "{backend}: every change once, in order");
        assert_eq!(store.feed_head().await.expect("head"), cursor);
        // Compaction: a cursor below the retained window must resync.
        store.compact_feed(5).await.expect("compact");
        assert!(matches!(store.changes_since(start, 100).await.expect("read"), FeedRead::Behind { head } if head == cursor), "{backend}");
        let FeedRead::Changes(tail) = store.changes_since(cursor - 5, 100).await.expect("read") else { panic!("{backend}: window") };
        assert_eq!(tail.len(), 5, "{backend}");
    }
}

/// Concurrent writers through several connections: the feed never shows a gap to a follower,
/// because records become visible in sequence order.
#[tokio::test]
async fn concurrent_writes_leave_a_gapless_feed() {
    use tessera_controller::store::FeedRead;
    for (backend, store) in stores().await {
        setup(&store).await;
        host(&store, "h1", "a").await;
        let start = store.feed_head().await.expect("head");
        let follower = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut cursor = start;
                let mut seen = 0;
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                while seen < 60 && std::time::Instant::now() < deadline {
                    let FeedRead::Changes(list) = store.changes_since(cursor, 1000).await.expect("read") else { panic!("behind") };
                    for c in list {
                        assert_eq!(c.seq, cursor + 1, "a follower saw a gap");
                        cursor = c.seq;
                        seen += 1;
                    }
                }
                seen
            })
        };
        let mut writers = Vec::new();
        for w in 0..6 {
            let store = store.clone();
            writers.push(tokio::spawn(async move {
                for i in 0..10 {
                    store.allocate(endpoint(&format!("w{w}-{i}"), "t1", "default", "h1")).await.expect("allocate");
                }
            }));
        }
        for w in writers {
            w.await.expect("writer");
        }
        assert_eq!(follower.await.expect("follower"), 60, "{backend}");
    }
}

#[tokio::test]
async fn endpoint_pages_filter_and_continue_alike_on_both_backends() {
    use tessera_controller::store::EndpointQuery;
    for (backend, store) in stores().await {
        setup(&store).await;
        host(&store, "h1", "a").await;
        host(&store, "h2", "b").await;
        for i in 0..30 {
            let mut e =
                endpoint(&format!("t1/p{i:02}"), "t1", if i < 10 { "web" } else { "default" }, if i % 3 == 0 { "h2" } else { "h1" });
            e.labels = labels(&[("app", if i % 2 == 0 { "even" } else { "odd" }), ("odd_key", "50%")]);
            store.allocate(e).await.expect("allocate");
        }
        store.allocate(endpoint("t2/x_1", "t2", "default", "h1")).await.expect("allocate");
        let all = |limit| EndpointQuery { limit, ..Default::default() };
        // Pages of 7 continue by id until the last, which says there is no next.
        let (mut seen, mut after) = (Vec::new(), None);
        loop {
            let page = store.endpoint_page(&EndpointQuery { after: after.clone(), ..all(7) }).await.expect("page");
            assert_eq!(page.total, 31, "{backend}");
            assert!(page.endpoints.iter().all(|e| !e.ips.is_empty()), "{backend}: each with its addresses");
            seen.extend(page.endpoints.iter().map(|e| e.id.clone()));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!((seen.len(), &seen), (31, &sorted), "{backend}: every endpoint once, in id order");
        let count = |q: EndpointQuery| {
            let store = store.clone();
            async move { store.endpoint_page(&q).await.expect("page").total }
        };
        assert_eq!(count(EndpointQuery { tenant: Some("t1".into()), segment: Some("web".into()), ..all(5) }).await, 10, "{backend}");
        assert_eq!(count(EndpointQuery { host: Some("h2".into()), ..all(5) }).await, 10, "{backend}");
        assert_eq!(count(EndpointQuery { labels: labels(&[("app", "even")]), ..all(5) }).await, 15, "{backend}");
        assert_eq!(count(EndpointQuery { labels: labels(&[("odd_key", "50%")]), ..all(5) }).await, 30, "{backend}: literal % and _");
        assert_eq!(count(EndpointQuery { labels: labels(&[("odd_key", "5%")]), ..all(5) }).await, 0, "{backend}");
        assert_eq!(count(EndpointQuery { id_contains: Some("x_1".into()), ..all(5) }).await, 1, "{backend}");
        assert_eq!(count(EndpointQuery { id_contains: Some("p_1".into()), ..all(5) }).await, 0, "{backend}: _ is literal");
        let one = store.endpoint("t1/p07").await.expect("endpoint");
        let page = store.endpoint_page(&EndpointQuery { address: Some(one.ips[0]), ..all(5) }).await.expect("page");
        assert_eq!(page.endpoints, vec![one], "{backend}");
    }
}

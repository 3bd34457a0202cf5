//! The feed follower of one replica: reads the change feed from the distributor's cursor and
//! applies it in batches; resyncs from the store when the cursor fell behind the retained
//! window; stores agents' reports every half second.
//!
//! Wake-ups are hints: a commit of this process, a PostgreSQL notification (other replicas'
//! commits), or the poll interval. The feed table is the data, so a lost wake-up costs at most
//! one poll interval.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Distributor;
use crate::store::{Backend, FeedRead, NOTIFY_CHANNEL, StoreError};

/// The longest a replica goes without reading the feed.
const POLL: Duration = Duration::from_secs(1);
/// Records applied per batch (one lock of the model, one generation transaction).
const BATCH: i64 = 500;
/// How often agents' reports are stored.
const FLUSH: Duration = Duration::from_millis(500);

pub(super) async fn follow(dist: Distributor) {
    let mut commits = dist.store.commits();
    let mut closing = dist.closing();
    let mut listener = None;
    let mut flush = tokio::time::interval(FLUSH);
    loop {
        if listener.is_none() && dist.store.backend() == Backend::Postgres {
            listener = listen(dist.store.url()).await;
        }
        loop {
            match step(&dist).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the change feed failed; retrying");
                    break;
                }
            }
        }
        tokio::select! {
            _ = commits.changed() => {}
            lost = notified(&mut listener) => if lost { listener = None },
            _ = tokio::time::sleep(POLL) => {}
            _ = flush.tick() => {
                if let Err(e) = dist.flush_reports().await {
                    tracing::warn!(error = %e, "storing agents' reports failed; keeping them for the next batch");
                }
            }
            _ = closing.changed() => {
                let _ = dist.flush_reports().await;
                return;
            }
        }
    }
}

/// Read and apply the next batch; `true` when there may be more.
async fn step(dist: &Distributor) -> Result<bool, StoreError> {
    match dist.store.changes_since(dist.position(), BATCH).await? {
        FeedRead::Behind { head } => {
            tracing::warn!(cursor = dist.position(), head, "the change feed was compacted past this replica's cursor; resyncing");
            dist.stats.resyncs.fetch_add(1, Ordering::Relaxed);
            dist.rebuild_at(head).await?;
            Ok(true)
        }
        FeedRead::Changes(list) => {
            let Some(last) = list.last().map(|c| c.seq) else {
                dist.retry_pending().await?;
                return Ok(false);
            };
            dist.apply(&list, last).await?;
            Ok(list.len() as i64 == BATCH)
        }
    }
}

async fn listen(url: &str) -> Option<sqlx::postgres::PgListener> {
    let mut listener = match sqlx::postgres::PgListener::connect(url).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "no LISTEN connection yet; polling");
            return None;
        }
    };
    listener.listen(NOTIFY_CHANNEL).await.ok()?;
    Some(listener)
}

/// Waits for a notification; `true` when the connection was lost (polling goes on).
async fn notified(listener: &mut Option<sqlx::postgres::PgListener>) -> bool {
    match listener {
        Some(l) => l.try_recv().await.map_or(true, |n| n.is_none()),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use tessera_topology::Labels;

    use super::*;
    use crate::store::{NewEndpoint, NewHost, Store};

    async fn store() -> Store {
        let dir = std::env::temp_dir().join(format!("tessera-follow-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("dir");
        let store = Store::connect(&format!("sqlite://{}", dir.join("t.db").display())).await.expect("store");
        let spec = tessera_topology::parse_topology(
            "networks: [{name: n, cidr: 10.9.0.0/16}]\ngroups: [{name: r}]\n",
            tessera_topology::Format::Auto,
        )
        .expect("topology");
        store.apply_topology(spec, None, false).await.expect("apply");
        store
            .create_host(NewHost {
                name: "h1".into(),
                ips: vec!["192.0.2.1".parse().expect("ip")],
                labels: Labels::new(),
                cloud_target: None,
                origin: Default::default(),
            })
            .await
            .expect("host");
        store.create_tenant("t", Labels::new()).await.expect("tenant");
        store
    }

    fn endpoint(id: &str) -> NewEndpoint {
        NewEndpoint { id: id.into(), tenant: "t".into(), segment: "default".into(), host: "h1".into(), labels: Labels::new() }
    }

    /// A follower resumes from its cursor: each step applies the records after it, once.
    #[tokio::test]
    async fn a_follower_applies_what_follows_its_cursor() {
        let store = store().await;
        let dist = Distributor::load(store.clone()).await.expect("load");
        let before = dist.node("h1").expect("h1").current();
        store.allocate(endpoint("t/a")).await.expect("allocate");
        while step(&dist).await.expect("step") {}
        let after = dist.node("h1").expect("h1").current();
        assert_eq!(after.endpoints.len(), 1);
        assert_eq!(after.generation, before.generation + 1);
        assert_eq!(dist.stats.records.load(Ordering::Relaxed), 1);
        // Nothing new: nothing applied twice.
        assert!(!step(&dist).await.expect("step"));
        assert_eq!(dist.stats.records.load(Ordering::Relaxed), 1);
    }

    /// A follower whose cursor fell behind the retained feed resyncs from the store, says so,
    /// and ends with the state a fresh start compiles.
    #[tokio::test]
    async fn a_follower_behind_the_retained_feed_resyncs() {
        let store = store().await;
        let dist = Distributor::load(store.clone()).await.expect("load");
        for i in 0..30 {
            store.allocate(endpoint(&format!("t/e{i}"))).await.expect("allocate");
        }
        store.compact_feed(5).await.expect("compact");
        while step(&dist).await.expect("step") {}
        assert_eq!(dist.stats.resyncs.load(Ordering::Relaxed), 1);
        assert_eq!(dist.position(), store.feed_head().await.expect("head"));
        let fresh = Distributor::load(store.clone()).await.expect("fresh");
        let (mine, theirs) = (dist.node("h1").expect("h1").current(), fresh.node("h1").expect("h1").current());
        assert_eq!((mine.generation, &mine.digest), (theirs.generation, &theirs.digest));
        assert_eq!(mine.endpoints.len(), 30);
    }
}

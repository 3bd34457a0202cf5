//! A cluster at scale for the benches, written straight through the store: the benches' zones
//! and racks, hosts, tenants with two segments (`front`, `back`) and labelled endpoints.

use std::time::Instant;

use tessera_controller::store::{NewEndpoint, NewHost, Store};
use tessera_topology::Labels;

/// Tenants `t0`…: endpoint `i` belongs to `t{i % TENANTS}`.
pub const TENANTS: usize = 50;

pub fn host_labels(i: usize) -> Labels {
    [("zone".to_string(), format!("z{}", i % 3)), ("rack".to_string(), format!("r{}", (i / 3) % 8))].into_iter().collect()
}

pub fn endpoint(i: usize, hosts: usize) -> NewEndpoint {
    let tenant = i % TENANTS;
    let app = ["web", "api", "db", "cache"][(i / TENANTS) % 4];
    let segment = if app == "db" { "back" } else { "front" };
    NewEndpoint {
        id: format!("t{tenant}/pod-{i}"),
        tenant: format!("t{tenant}"),
        segment: segment.into(),
        host: format!("host-{}", i % hosts),
        labels: [("app".to_string(), app.to_string())].into_iter().collect(),
    }
}

/// Hosts, tenants with two segments, and endpoints, written through the store by 8 clients.
pub async fn populate(store: &Store, hosts: usize, endpoints: usize) -> f64 {
    crate::apply(store, &crate::zones_and_racks()).await;
    for h in 0..hosts {
        let ip = std::net::Ipv4Addr::from(0xc612_0000u32 + h as u32 + 1);
        store
            .create_host(NewHost {
                name: format!("host-{h}"),
                ips: vec![ip.into()],
                labels: host_labels(h),
                cloud_target: None,
                origin: Default::default(),
            })
            .await
            .expect("host");
    }
    for t in 0..TENANTS {
        store
            .create_tenant(&format!("t{t}"), [("team".to_string(), format!("team-{}", t % 5))].into_iter().collect())
            .await
            .expect("tenant");
        for s in ["front", "back"] {
            store.create_segment(&format!("t{t}"), s, Labels::new()).await.expect("segment");
        }
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (c..endpoints).step_by(8) {
                store.allocate(endpoint(i, hosts)).await.expect("allocate");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    endpoints as f64 / started.elapsed().as_secs_f64()
}

/// A store at `db` filled by [`populate`], with an admin token `token`: the fill rate
/// (allocations per second).
pub async fn filled(db: &str, hosts: usize, endpoints: usize, token: &str) -> f64 {
    let store = Store::connect(db).await.expect("store");
    let rate = populate(&store, hosts, endpoints).await;
    store.create_token("bench", tessera_controller::store::Role::Admin, None, Some(token)).await.expect("token");
    rate
}

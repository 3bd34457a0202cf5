//! `cargo bench -p tessera-tests --bench allocation`: allocate 100,000 endpoint addresses across
//! 5,000 hosts in 3 zones x 8 racks, on SQLite and on PostgreSQL, with 8 concurrent clients.
//! Prints addresses per second. Set `TESSERA_BENCH_ENDPOINTS` for a shorter run.

use std::time::Instant;

use tessera_controller::store::{NewEndpoint, NewHost, Store};
use tessera_topology::Labels;

const HOSTS: usize = 5000;
const CLIENTS: usize = 8;

async fn run(backend: &str, store: Store, endpoints: usize) {
    tessera_tests::apply(&store, &tessera_tests::zones_and_racks()).await;
    for t in 0..4 {
        store.create_tenant(&format!("tenant-{t}"), Labels::new()).await.expect("tenant");
    }
    let started = Instant::now();
    for i in 0..HOSTS {
        let labels: Labels =
            [("zone".to_string(), format!("z{}", i % 3)), ("rack".to_string(), format!("r{}", (i / 3) % 8))].into_iter().collect();
        let ip = std::net::Ipv4Addr::from(0xc0a8_0000u32 + i as u32);
        store
            .create_host(NewHost {
                name: format!("host-{i}"),
                ips: vec![ip.into()],
                labels,
                cloud_target: None,
                origin: Default::default(),
            })
            .await
            .expect("host");
    }
    let hosts_time = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (c..endpoints).step_by(CLIENTS) {
                let new = NewEndpoint {
                    id: format!("pod-{i}"),
                    tenant: format!("tenant-{}", i % 4),
                    segment: "default".into(),
                    host: format!("host-{}", i % HOSTS),
                    labels: Labels::new(),
                };
                store.allocate(new).await.expect("allocate");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let secs = started.elapsed().as_secs_f64();
    let blocks = store.blocks(Default::default()).await.expect("blocks").len();
    println!(
        "{backend}: {HOSTS} hosts registered in {hosts_time:.1} s; {endpoints} addresses in {secs:.1} s = {:.0} addresses/s ({CLIENTS} clients, {blocks} blocks)",
        endpoints as f64 / secs
    );
}

#[tokio::main]
async fn main() {
    let endpoints: usize = std::env::var("TESSERA_BENCH_ENDPOINTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    run("sqlite", tessera_tests::sqlite_store().await, endpoints).await;
    run("postgres", tessera_tests::postgres_store().await, endpoints).await;
}

//! Test harness shared by Tessera's integration tests: real databases (a throwaway PostgreSQL
//! cluster, SQLite files), and the project's binaries.

pub mod pg;

use std::path::PathBuf;

use tessera_controller::store::Store;

/// A store on each backend, each in a fresh database: `[("sqlite", …), ("postgres", …)]`.
pub async fn stores() -> Vec<(&'static str, Store)> {
    vec![
        ("sqlite", sqlite_store().await),
        ("postgres", postgres_store().await),
    ]
}

/// A store on a fresh SQLite file (kept for the life of the test process).
pub async fn sqlite_store() -> Store {
    Store::connect(&sqlite_url())
        .await
        .expect("open SQLite store")
}

/// A URL to a fresh SQLite file in a directory removed at process exit by the OS temp cleaner.
pub fn sqlite_url() -> String {
    let dir = tempfile::Builder::new()
        .prefix("tessera-sqlite-")
        .tempdir()
        .expect("temp dir")
        .keep();
    format!("sqlite://{}", dir.join("tessera.db").display())
}

/// A store on a fresh database of the shared throwaway PostgreSQL cluster.
pub async fn postgres_store() -> Store {
    Store::connect(&pg::fresh_database().await)
        .await
        .expect("open PostgreSQL store")
}

/// Path of a binary of this workspace, built by `cargo test` for the integration tests.
pub fn binary(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("test executable");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the tests through `cargo test --workspace`",
        path.display()
    );
    path
}

/// Load a Tessera topology document into `store` (test helper).
pub async fn apply(store: &Store, doc: &str) {
    let spec = tessera_topology::parse_topology(doc, tessera_topology::Format::Auto)
        .expect("test topology parses");
    let (plan, revision) = store
        .apply_topology(spec, None, false)
        .await
        .expect("apply");
    assert!(
        revision.is_some(),
        "test topology refused: {:?}",
        plan.refusals
    );
}

//! A throwaway PostgreSQL 15 cluster for tests: `initdb` into a temp directory, `postgres` on a
//! free loopback port, one fresh database per test. No mock: the real server.
//!
//! The server is started once per test process from a dedicated thread with `setpriv
//! --pdeathsig KILL`, so it dies with the process even when a test panics. As root, it runs as
//! the `postgres` user (PostgreSQL refuses to run as root). Set `TESSERA_TEST_POSTGRES_URL`
//! (a server URL without database) to use an existing server instead.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const BIN: &str = "/usr/lib/postgresql/15/bin";

struct Cluster {
    /// `postgres://postgres@127.0.0.1:PORT`
    base_url: String,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// URL of a new, empty database.
pub async fn fresh_database() -> String {
    let base = match std::env::var("TESSERA_TEST_POSTGRES_URL") {
        Ok(url) => url,
        Err(_) => match CLUSTER.get_or_init(start) {
            Ok(c) => c.base_url.clone(),
            Err(e) => panic!("cannot start the test PostgreSQL cluster: {e}"),
        },
    };
    let name = format!("t_{}", rand::random::<u64>());
    let admin = format!("{base}/postgres");
    let mut last = String::new();
    for _ in 0..50 {
        match sqlx::postgres::PgPool::connect(&admin).await {
            Ok(pool) => {
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await.expect("create test database");
                pool.close().await;
                return format!("{base}/{name}");
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("PostgreSQL at {base} does not answer: {last}");
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Run a command as the postgres user when we are root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", "postgres", "--regid", "postgres", "--init-groups", "--pdeathsig", "KILL", "--"]).arg(program);
        c
    } else {
        let mut c = Command::new("setpriv");
        c.args(["--pdeathsig", "KILL", "--"]).arg(program);
        c
    }
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn remove_stale_clusters(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name.strip_prefix("tessera-pg-").and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn start() -> Result<Cluster, String> {
    let tmp = std::env::temp_dir();
    remove_stale_clusters(&tmp);
    let dir: PathBuf = tmp.join(format!("tessera-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    if is_root() {
        let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("chown of the cluster directory failed".into());
        }
    }
    let data = dir.join("data");
    let out = as_postgres(&Path::new(BIN).join("initdb"))
        .args(["-D"])
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let port = free_port()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let data2 = data.clone();
    let dir2 = dir.clone();
    // The server's parent-death signal fires when this thread ends, so it never ends.
    std::thread::spawn(move || {
        let log = std::fs::File::create(dir2.join("postgres.log"));
        let mut cmd = as_postgres(&Path::new(BIN).join("postgres"));
        cmd.arg("-D").arg(&data2).args(["-p", &port.to_string(), "-k"]).arg(&dir2).args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=500",
        ]);
        if let Ok((log, err)) = log.and_then(|l| l.try_clone().map(|e| (l, e))) {
            cmd.stdout(log).stderr(err);
        }
        match cmd.spawn() {
            Ok(mut child) => {
                let _ = tx.send(Ok(()));
                let _ = child.wait();
                loop {
                    std::thread::park();
                }
            }
            Err(e) => {
                let _ = tx.send(Err(format!("postgres: {e}")));
            }
        }
    });
    rx.recv().map_err(|e| e.to_string())??;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Command::new(Path::new(BIN).join("pg_isready")).args(["-h", "127.0.0.1", "-p", &port.to_string()]).output();
        if ready.map(|o| o.status.success()).unwrap_or(false) {
            break;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
            return Err(format!("postgres did not become ready on port {port}: {log}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Cluster { base_url: format!("postgres://postgres@127.0.0.1:{port}") })
}

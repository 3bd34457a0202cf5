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

/// A PostgreSQL server of a test's own, which the test may stop and start again (the shared
/// cluster above must stay up for the other tests). Stopped and removed on drop.
#[derive(Debug)]
pub struct OwnServer {
    dir: PathBuf,
    port: u16,
}

impl OwnServer {
    /// `initdb` and start a server on a free loopback port.
    pub fn start() -> OwnServer {
        let dir = std::env::temp_dir().join(format!("tessera-pg-own-{}-{}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).expect("server directory");
        if is_root() {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().expect("chown");
            assert!(status.success(), "chown of the server directory failed");
        }
        let out = pg_command("initdb")
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .output()
            .expect("initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let server = OwnServer { dir, port: free_port().expect("port") };
        server.up();
        server
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB`; creates the database.
    pub async fn database(&self, name: &str) -> String {
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let pool = sqlx::postgres::PgPool::connect(&admin).await.expect("connect");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await.expect("create database");
        pool.close().await;
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Start the server again (after `down`), on the same port with the same data.
    pub fn up(&self) {
        let options =
            format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", self.port, self.dir.display());
        let out = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .output()
            .expect("pg_ctl start");
        assert!(out.status.success(), "pg_ctl start failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stop the server at once (connections are cut, as in a crash).
    pub fn down(&self) {
        let _ = pg_command("pg_ctl").arg("-D").arg(self.dir.join("data")).args(["-m", "immediate", "-w", "stop"]).output();
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL program, as the postgres user when we are root; it outlives us (pg_ctl
/// daemonizes the server), so `OwnServer` stops it on drop.
fn pg_command(program: &str) -> Command {
    let path = Path::new(BIN).join(program);
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", "postgres", "--regid", "postgres", "--init-groups", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

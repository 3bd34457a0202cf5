//! Test harness shared by Tessera's integration tests: real databases (a throwaway PostgreSQL
//! cluster, SQLite files), and the project's binaries.

pub mod api;
pub mod aws;
pub mod browser;
pub mod cni;
pub mod kube;
pub mod netns;
pub mod pg;
pub mod scale;
pub mod vdc;

use std::path::PathBuf;

use tessera_controller::store::Store;

/// A store on each backend, each in a fresh database: `[("sqlite", …), ("postgres", …)]`.
pub async fn stores() -> Vec<(&'static str, Store)> {
    vec![("sqlite", sqlite_store().await), ("postgres", postgres_store().await)]
}

/// A store on a fresh SQLite file (kept for the life of the test process).
pub async fn sqlite_store() -> Store {
    Store::connect(&sqlite_url()).await.expect("open SQLite store")
}

/// A URL to a fresh SQLite file in a directory removed at process exit by the OS temp cleaner.
pub fn sqlite_url() -> String {
    let dir = tempfile::Builder::new().prefix("tessera-sqlite-").tempdir().expect("temp dir").keep();
    format!("sqlite://{}", dir.join("tessera.db").display())
}

/// A store on a fresh database of the shared throwaway PostgreSQL cluster.
pub async fn postgres_store() -> Store {
    Store::connect(&pg::fresh_database().await).await.expect("open PostgreSQL store")
}

/// Path of a binary of this workspace, built by `cargo test` for the integration tests.
pub fn binary(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("test executable");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(path.exists(), "{} is not built; run `cargo build --workspace --bins` first (scripts/test-all.sh does)", path.display());
    path
}

/// The benches' topology: 10.0.0.0/8 in 3 zones of 8 racks (hosts carry `zone: zN`, `rack: rN`).
pub fn zones_and_racks() -> String {
    let mut doc = String::from("networks: [{name: pods, cidr: 10.0.0.0/8}]\ngroups:\n");
    for z in 0..3 {
        doc.push_str(&format!("  - name: zone-{z}\n    assignment: {{zone: z{z}}}\n    groups:\n"));
        for r in 0..8 {
            doc.push_str(&format!("      - {{name: rack-{r}, assignment: {{rack: r{r}}}}}\n"));
        }
    }
    doc
}

/// Load a Tessera topology document into `store` (test helper).
pub async fn apply(store: &Store, doc: &str) {
    let spec = tessera_topology::parse_topology(doc, tessera_topology::Format::Auto).expect("test topology parses");
    let (plan, revision) = store.apply_topology(spec, None, false).await.expect("apply");
    assert!(revision.is_some(), "test topology refused: {:?}", plan.refusals);
}

/// A `tessera-controller` process on a free loopback port with a fresh SQLite store; killed on drop.
#[derive(Debug)]
pub struct Controller {
    child: std::process::Child,
    pub url: String,
    pub token: String,
}

/// The controller started with `args` must refuse to start, naming `flag` in its error.
pub fn assert_refused_at_start(args: &[&str], flag: &str) {
    let out = std::process::Command::new(binary("tessera-controller"))
        .args(["--listen", "127.0.0.1:0", "--database-url", &sqlite_url(), "--no-demo"])
        .args(args)
        .output()
        .expect("run the controller");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(flag), "{args:?}: {stderr}");
}

/// Whether this process runs as root (benchmarks that need namespaces skip otherwise).
pub fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// The `p` quantile (0..=1) of sorted figures, nearest rank.
/// Resident memory of a process, and its peak, in MB.
pub fn process_memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()).unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A free loopback TCP port (free when asked).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

impl Controller {
    pub fn start(extra_env: &[(&str, &str)]) -> Controller {
        let token = format!("test-admin-{}", rand::random::<u64>());
        Controller::start_with(free_port(), &sqlite_url(), &token, extra_env)
    }

    /// Start on a given port and database (to restart a controller where it was).
    pub fn start_with(port: u16, database_url: &str, token: &str, extra_env: &[(&str, &str)]) -> Controller {
        let url = format!("http://127.0.0.1:{port}");
        let token = token.to_string();
        let mut cmd = std::process::Command::new(binary("tessera-controller"));
        cmd.env("TESSERA_LISTEN", format!("127.0.0.1:{port}"))
            .env("TESSERA_DATABASE_URL", database_url)
            .env("TESSERA_ADMIN_TOKEN", &token)
            .env("TESSERA_LOG", "warn")
            .stdout(std::process::Stdio::null());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start tessera-controller");
        let controller = Controller { child, url, token };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut controller = controller;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = controller.child.try_wait() {
                panic!("tessera-controller exited at start ({status}); run it by hand with the same environment to see why");
            }
            if reqwest::blocking::get(format!("{}/readyz", controller.url)).is_ok_and(|r| r.status().is_success()) {
                return controller;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("tessera-controller did not become ready at {}", controller.url);
    }
}

impl Controller {
    /// The process id (to read its memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL the process (a crash: nothing is given up cleanly) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM the process (a clean stop) and wait for it.
    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }

    /// A GET with the admin token, as JSON (`Null` when the replica does not answer).
    pub fn get(&self, path: &str) -> serde_json::Value {
        let answer = reqwest::blocking::Client::new().get(format!("{}{path}", self.url)).bearer_auth(&self.token).send();
        answer.ok().and_then(|r| r.json().ok()).unwrap_or(serde_json::Value::Null)
    }

    /// A web UI page as the admin's browser gets it (session cookie): its status and HTML.
    pub fn page(&self, path: &str) -> (u16, String) {
        let answer = reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.url))
            .header("cookie", format!("tessera_session={}", self.token))
            .send();
        match answer {
            Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }

    /// A write with the admin token: its status (0 when the replica does not answer) and JSON body.
    pub fn send(&self, method: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let answer = reqwest::blocking::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .timeout(std::time::Duration::from_secs(20))
            .send();
        match answer {
            Ok(r) => (r.status().as_u16(), r.json().unwrap_or(serde_json::Value::Null)),
            Err(_) => (0, serde_json::Value::Null),
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! A lab of network namespaces for dataplane tests: one "node" namespace routing for endpoint
//! namespaces attached by veth pairs (a /32 per endpoint, a link-local gateway, no overlay and
//! no NAT). Every name starts with a unique prefix; everything is removed on drop, even when
//! the test fails. Traffic only ever goes to addresses inside these namespaces.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

/// Run a command, panicking with its stderr when it fails.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Feed `input` to a command's stdin and return its stdout.
pub fn run_with_input(args: &[&str], input: &str) -> String {
    let mut child =
        Command::new(args[0]).args(&args[1..]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fail clearly unless this process may create network namespaces (root; CI runs as root).
pub fn require_root() {
    assert!(crate::is_root(), "this test needs root to create network namespaces (CI runs as root)");
}

#[derive(Debug)]
pub struct Lab {
    pub prefix: String,
    pub node: String,
    namespaces: Vec<String>,
    servers: Vec<Child>,
    pub dir: tempfile::TempDir,
    veths: usize,
}

impl Lab {
    #[allow(clippy::new_without_default)] // creating namespaces is not a default value
    pub fn new() -> Lab {
        let prefix = format!("tsr{:05x}", rand::random::<u32>() & 0xfffff);
        let dir = tempfile::Builder::new().prefix("tessera-lab-").tempdir().expect("temp dir");
        std::fs::write(dir.path().join("prober.py"), include_str!("../netns/prober.py")).expect("write prober");
        let node = format!("{prefix}-node");
        let mut lab = Lab { prefix, node: node.clone(), namespaces: Vec::new(), servers: Vec::new(), dir, veths: 0 };
        lab.add_namespace(&node);
        run(&[
            "ip",
            "netns",
            "exec",
            &node,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ]);
        lab
    }

    fn add_namespace(&mut self, name: &str) {
        run(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_string());
        run(&["ip", "-n", name, "link", "set", "lo", "up"]);
    }

    /// Attach a namespace holding `ip` (IPv4) to the node; returns the namespace's name.
    pub fn add_endpoint(&mut self, ip: &str) -> String {
        self.veths += 1;
        let ns = format!("{}-e{}", self.prefix, self.veths);
        let veth = format!("{}v{}", self.prefix, self.veths);
        self.add_namespace(&ns);
        run(&["ip", "-n", &self.node, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
        run(&["ip", "-n", &self.node, "link", "set", &veth, "up"]);
        run(&["ip", "-n", &self.node, "route", "add", &format!("{ip}/32"), "dev", &veth]);
        let mac = run(&["ip", "-n", &self.node, "-br", "link", "show", &veth]).split_whitespace().nth(2).expect("mac").to_string();
        run(&["ip", "-n", &ns, "addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
        run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", &ns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"]);
        run(&["ip", "-n", &ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0"]);
        run(&["ip", "-n", &ns, "neigh", "add", "169.254.1.1", "lladdr", &mac, "dev", "eth0", "nud", "permanent"]);
        ns
    }

    /// Start the TCP/UDP/SCTP answerer in `ns`; SCTP arrivals are logged to the returned file.
    pub fn serve(&mut self, ns: &str, tcp: &[u16], udp: &[u16]) -> std::path::PathBuf {
        let log = self.dir.path().join(format!("{ns}.sctp"));
        std::fs::write(&log, "").expect("log");
        let prober = self.dir.path().join("prober.py");
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "python3"])
            .arg(&prober)
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start server");
        let args = serde_json::json!({"tcp": tcp, "udp": udp, "sctp_log": log});
        writeln!(child.stdin.as_mut().expect("stdin"), "{args}").expect("send args");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout")).read_line(&mut line).expect("ready line");
        assert_eq!(line.trim(), "ready", "server in {ns} did not start");
        self.servers.push(child);
        log
    }

    /// Run probes from `ns` concurrently; returns the prober child (collect with `finish`).
    pub fn probe(&self, ns: &str, jobs: &serde_json::Value, timeout: f64) -> Child {
        let prober = self.dir.path().join("prober.py");
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "python3"])
            .arg(&prober)
            .arg("probe")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start prober");
        let args = serde_json::json!({"jobs": jobs, "timeout": timeout});
        writeln!(child.stdin.as_mut().expect("stdin"), "{args}").expect("send jobs");
        child
    }

    /// Load an nftables file into the node namespace (one atomic transaction).
    pub fn nft(&self, text: &str) {
        run_with_input(&["ip", "netns", "exec", &self.node, "nft", "-f", "-"], text);
    }
}

/// Wait for a prober and parse its results (`{"id": true|false|null}`).
pub fn finish(child: Child) -> serde_json::Map<String, serde_json::Value> {
    let out = child.wait_with_output().expect("prober output");
    assert!(out.status.success(), "prober failed");
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("prober json").as_object().cloned().expect("object")
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

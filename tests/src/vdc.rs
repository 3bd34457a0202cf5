//! The virtual datacenter: racks of hosts as network namespaces on per-rack L2 segments (a
//! bridge each), a router namespace between the racks that knows only the fabric routes of the
//! route plan, a controller, an agent per host, and pods made through `tessera-cni` exactly as
//! a runtime makes them. Every name carries a unique prefix; everything is removed on drop.
//!
//! The management link: the controller listens on the test's loopback; inside each host, a
//! relay listening on the host's own loopback forwards to it. Traffic never leaves loopbacks
//! and the test's own namespaces.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cni::{Attachment, Runtime};
use crate::netns::run;
use crate::{Controller, binary, free_port, sqlite_url};

#[derive(Debug)]
pub struct Host {
    pub name: String,
    pub ns: String,
    pub ip: String,
    /// Every underlay address (IPv6 too on a dual-stack datacenter).
    pub ips: Vec<String>,
    pub rack: usize,
    pub dir: PathBuf,
    token_file: PathBuf,
    agent: Option<Child>,
}

impl Host {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }
}

#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub ns: String,
    pub host: usize,
    pub tenant: String,
    pub segment: String,
    pub labels: BTreeMap<String, String>,
    /// The IPv4 address (the first address when the pod has none).
    pub ip: String,
    /// Every address, IPv6 included.
    pub ips: Vec<String>,
    pub attachment: Attachment,
    pub result: Value,
}

#[derive(Debug)]
pub struct Datacenter {
    pub prefix: String,
    pub dir: tempfile::TempDir,
    pub router: String,
    pub hosts: Vec<Host>,
    pub pods: Vec<Pod>,
    pub port: u16,
    pub token: String,
    database_url: String,
    /// Loopback ports of the controller replicas (the first is `port`).
    ports: Vec<u16>,
    /// The replicas; `None` once killed or stopped.
    controllers: Vec<Option<Controller>>,
    namespaces: Vec<String>,
    children: Vec<Child>,
    pub resync_seconds: f64,
    /// Agents started from now on run in a pid namespace of their own, as in a container
    /// without the host's: the kernel then numbers their processes differently from them.
    pub agent_pid_namespace: bool,
    /// With a BGP fabric: each rack's ToR namespace (BIRD), in rack order; the spine is `router`.
    pub tors: Vec<String>,
    timers: Timers,
    /// Extra environment of every controller replica.
    controller_env: Vec<(String, String)>,
}

/// How fast failures are noticed: the controllers' VIP failover and the agents' report interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timers {
    pub vip_failover_seconds: u64,
    pub report_seconds: f64,
}

impl Timers {
    /// Short, for tests: a VIP moves 3 s after its holder falls silent; agents report every second.
    pub const FAST: Timers = Timers { vip_failover_seconds: 3, report_seconds: 1.0 };
    /// The binaries' defaults.
    pub const DEFAULT: Timers = Timers { vip_failover_seconds: 10, report_seconds: 3.0 };
}

/// How the racks are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Underlay {
    /// One router namespace holds every rack's bridge; the test gives it the fabric routes.
    Static,
    /// A ToR per rack (BIRD, AS 65000+R, ECMP into the kernel) under a spine (BIRD, AS 65100):
    /// they learn every route from the hosts' agents (AS 64512, eBGP), none from the test.
    Bgp,
    /// `Static`'s router, whose routes come from a BIRD route server in it, fed by the
    /// controller in BGP controller mode (ADD-PATH: one path per healthy host, ECMP into the
    /// kernel). The controller reaches it at `127.0.0.1:ROUTE_SERVER_PORT` (a relay into the
    /// router's namespace; the topology's `{ROUTE_SERVER_PORT}` is replaced by that port).
    RouteServer,
}

/// The route server's AS, and the AS the controller speaks as toward it.
pub const ROUTE_SERVER_AS: u32 = 65020;
pub const CONTROLLER_AS: u32 = 65010;

/// The AS of the hosts in a BGP-fabric datacenter, and of rack R's ToR (65000 + R).
pub const HOSTS_AS: u32 = 64512;
pub const SPINE_AS: u32 = 65100;

const TOPOLOGY: &str = "networks:
  - name: pods
    cidr: 10.96.0.0/16
groups:
  - name: rack-1
    assignment: {rack: r1}
  - name: rack-2
    assignment: {rack: r2}
";

impl Datacenter {
    /// `racks` racks (at most 2, as the topology has) of `per_rack` hosts each.
    pub fn new(racks: usize, per_rack: usize) -> Datacenter {
        Datacenter::with_topology(racks, per_rack, TOPOLOGY)
    }

    /// The same with another topology document (its racks keep the `rack: rN` assignments).
    /// A topology with an IPv6 network gets an IPv6 underlay too (`fd00:200:R::/64` per rack).
    pub fn with_topology(racks: usize, per_rack: usize, topology: &str) -> Datacenter {
        Datacenter::with_replicas(racks, per_rack, topology, 1, &sqlite_url())
    }

    /// The same with `replicas` controllers sharing the store at `database_url` (PostgreSQL for
    /// more than one); every agent is given all of them, in order.
    pub fn with_replicas(racks: usize, per_rack: usize, topology: &str, replicas: usize, database_url: &str) -> Datacenter {
        Datacenter::build(racks, per_rack, topology, replicas, database_url, Underlay::Static, Timers::FAST, &[])
    }

    /// One controller started with extra environment (e.g. `TESSERA_KUBECONFIG`: the operator).
    pub fn with_controller_env(racks: usize, per_rack: usize, env: &[(&str, &str)]) -> Datacenter {
        Datacenter::build(racks, per_rack, TOPOLOGY, 1, &sqlite_url(), Underlay::Static, Timers::FAST, env)
    }

    /// A datacenter whose racks are joined by a BGP fabric (see [`Underlay::Bgp`]); the
    /// topology's racks should peer with `10.200.R.1`, AS 65000+R, as AS [`HOSTS_AS`].
    /// A datacenter whose router learns the racks from the controller (see [`Underlay::RouteServer`]).
    pub fn with_route_server(racks: usize, per_rack: usize, topology: &str, timers: Timers) -> Datacenter {
        Datacenter::build(racks, per_rack, topology, 1, &sqlite_url(), Underlay::RouteServer, timers, &[])
    }

    /// The routers' hold time is the agents' (BIRD proposes more), so the topology sets it.
    pub fn with_bgp_fabric(racks: usize, per_rack: usize, topology: &str, timers: Timers) -> Datacenter {
        Datacenter::build(racks, per_rack, topology, 1, &sqlite_url(), Underlay::Bgp, timers, &[])
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        racks: usize,
        per_rack: usize,
        topology: &str,
        replicas: usize,
        database_url: &str,
        underlay: Underlay,
        timers: Timers,
        controller_env: &[(&str, &str)],
    ) -> Datacenter {
        let v6 = topology.contains("::");
        let ports: Vec<u16> = (0..replicas.max(1)).map(|_| free_port()).collect();
        assert!((1..=2).contains(&racks));
        let prefix = format!("tv{:05x}", rand::random::<u32>() & 0xfffff);
        let dir = tempfile::Builder::new().prefix("tessera-vdc-").tempdir().expect("temp dir");
        std::fs::write(dir.path().join("prober.py"), include_str!("../netns/prober.py")).expect("prober");
        let route_server_port = free_port();
        let topology = topology.replace("{ROUTE_SERVER_PORT}", &route_server_port.to_string());
        std::fs::write(dir.path().join("topology.yaml"), topology).expect("topology");
        let router = format!("{prefix}-rt");
        let mut dc = Datacenter {
            prefix: prefix.clone(),
            dir,
            router: router.clone(),
            hosts: Vec::new(),
            pods: Vec::new(),
            port: ports[0],
            token: format!("vdc-admin-{}", rand::random::<u64>()),
            database_url: database_url.to_string(),
            controllers: Vec::new(),
            ports,
            namespaces: Vec::new(),
            children: Vec::new(),
            resync_seconds: 1.0,
            agent_pid_namespace: false,
            tors: Vec::new(),
            timers,
            controller_env: controller_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        dc.add_namespace(&router);
        run(&["ip", "netns", "exec", &router, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]);
        for r in 1..=racks {
            let bridge = format!("br{r}");
            // The namespace holding the rack's bridge: the router, or the rack's own ToR.
            let l2 = match underlay {
                Underlay::Static | Underlay::RouteServer => router.clone(),
                Underlay::Bgp => {
                    let tor = format!("{prefix}-tor{r}");
                    dc.add_namespace(&tor);
                    run(&["ip", "netns", "exec", &tor, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1"]);
                    let spine_port = format!("tor{r}");
                    run(&["ip", "-n", &tor, "link", "add", "uplink", "type", "veth", "peer", "name", &spine_port, "netns", &router]);
                    run(&["ip", "-n", &tor, "addr", "add", &format!("10.201.{r}.2/24"), "dev", "uplink"]);
                    run(&["ip", "-n", &tor, "link", "set", "uplink", "up"]);
                    run(&["ip", "-n", &router, "addr", "add", &format!("10.201.{r}.1/24"), "dev", &spine_port]);
                    run(&["ip", "-n", &router, "link", "set", &spine_port, "up"]);
                    dc.tors.push(tor.clone());
                    tor
                }
            };
            run(&["ip", "-n", &l2, "link", "add", &bridge, "type", "bridge"]);
            run(&["ip", "-n", &l2, "addr", "add", &format!("10.200.{r}.1/24"), "dev", &bridge]);
            run(&["ip", "-n", &l2, "link", "set", &bridge, "up"]);
            if v6 {
                run(&["ip", "-n", &l2, "addr", "add", &format!("fd00:200:{r}::1/64"), "dev", &bridge, "nodad"]);
            }
            for h in 1..=per_rack {
                let name = format!("r{r}h{h}");
                let ns = format!("{prefix}-{name}");
                let ip = format!("10.200.{r}.{}", 10 + h);
                dc.add_namespace(&ns);
                let port = format!("p{name}");
                run(&["ip", "-n", &l2, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
                run(&["ip", "-n", &l2, "link", "set", &port, "master", &bridge, "up"]);
                run(&["ip", "-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
                run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
                run(&["ip", "-n", &ns, "route", "add", "default", "via", &format!("10.200.{r}.1")]);
                let mut ips = vec![ip.clone()];
                if v6 {
                    let ip6 = format!("fd00:200:{r}::{}", 10 + h);
                    run(&["ip", "-n", &ns, "addr", "add", &format!("{ip6}/64"), "dev", "eth0", "nodad"]);
                    run(&["ip", "-n", &ns, "-6", "route", "add", "default", "via", &format!("fd00:200:{r}::1")]);
                    ips.push(ip6);
                }
                let host_dir = dc.dir.path().join(&name);
                std::fs::create_dir_all(&host_dir).expect("host dir");
                for port in &dc.ports {
                    relay(&ns, *port);
                }
                dc.hosts.push(Host { name, ns, ip, ips, rack: r, token_file: host_dir.join("token"), dir: host_dir, agent: None });
            }
        }
        match underlay {
            Underlay::Bgp => dc.start_fabric(racks, per_rack),
            Underlay::RouteServer => dc.start_route_server(route_server_port),
            Underlay::Static => {}
        }
        dc.start_controller();
        for i in 0..dc.hosts.len() {
            let h = &dc.hosts[i];
            let labels = json!({"rack": format!("r{}", h.rack)});
            dc.api("POST", "/v1/hosts", Some(json!({"name": h.name, "ips": h.ips, "labels": labels})));
            let token = dc.api("POST", "/v1/tokens", Some(json!({"name": format!("agent {}", h.name), "role": "node", "node": h.name})));
            std::fs::write(&h.token_file, token["token"].as_str().expect("token")).expect("token file");
            dc.start_agent(i);
        }
        dc
    }

    /// BIRD on every ToR (a session per host of its rack, one to the spine) and on the spine.
    /// BIRD proposes its default hold time (240 s), so the agents' (the topology's) decides;
    /// between routers it is 3 s; a failed session is retried within 1-2 s.
    fn start_fabric(&mut self, racks: usize, per_rack: usize) {
        let session = "  connect retry time 1;\n  error wait time 1, 2;\n  ipv4 { import all; export all; };\n";
        let uplink = "  hold time 3;\n";
        let kernel = "protocol device { scan time 1; }\nprotocol kernel { ipv4 { export all; }; merge paths on; }\n";
        for r in 1..=racks {
            let mut conf = format!("router id 10.201.{r}.2;\n{kernel}");
            for h in 1..=per_rack {
                conf.push_str(&format!(
                    "protocol bgp r{r}h{h} {{\n  local 10.200.{r}.1 as {};\n  neighbor 10.200.{r}.{} as {HOSTS_AS};\n{session}}}\n",
                    65000 + r,
                    10 + h
                ));
            }
            conf.push_str(&format!(
                "protocol bgp spine {{\n  local 10.201.{r}.2 as {};\n  neighbor 10.201.{r}.1 as {SPINE_AS};\n{uplink}{session}}}\n",
                65000 + r
            ));
            let tor = self.tors[r - 1].clone();
            self.start_bird(&tor, &conf);
        }
        let mut conf = format!("router id 10.201.0.1;\n{kernel}");
        for r in 1..=racks {
            conf.push_str(&format!(
                "protocol bgp tor{r} {{\n  local 10.201.{r}.1 as {SPINE_AS};\n  neighbor 10.201.{r}.2 as {};\n{uplink}{session}}}\n",
                65000 + r
            ));
        }
        let spine = self.router.clone();
        self.start_bird(&spine, &conf);
    }

    /// BIRD in the router's namespace as a route server: it takes several paths per prefix
    /// from the controller (ADD-PATH receive), resolves their next hops over the racks'
    /// bridges, and installs them as ECMP routes. The controller reaches it through a relay
    /// from `127.0.0.1:port` that connects from 10.250.0.2 to BIRD at 10.250.0.1, both on the
    /// router's loopback.
    fn start_route_server(&mut self, port: u16) {
        let router = self.router.clone();
        run(&["ip", "-n", &router, "addr", "add", "10.250.0.1/32", "dev", "lo"]);
        run(&["ip", "-n", &router, "addr", "add", "10.250.0.2/32", "dev", "lo"]);
        let conf = format!(
            "router id 10.250.0.1;\nprotocol device {{ scan time 1; }}\nprotocol direct {{ ipv4; interface \"br*\"; }}\n\
             protocol kernel {{ ipv4 {{ export where proto = \"controller\"; }}; merge paths on; }}\n\
             protocol bgp controller {{\n  local 10.250.0.1 as {ROUTE_SERVER_AS};\n  neighbor 10.250.0.2 as {CONTROLLER_AS};\n  multihop 2;\n  passive on;\n  ipv4 {{ add paths rx; import all; export none; }};\n}}\n"
        );
        self.start_bird(&router, &conf);
        relay_into(&router, port, "10.250.0.2", "10.250.0.1:179");
    }

    fn bird_socket(&self, ns: &str) -> PathBuf {
        self.dir.path().join(format!("{ns}.bird.ctl"))
    }

    fn start_bird(&mut self, ns: &str, conf: &str) {
        let path = self.dir.path().join(format!("{ns}.bird.conf"));
        std::fs::write(&path, conf).expect("bird.conf");
        let socket = self.bird_socket(ns);
        let log = File::create(self.dir.path().join(format!("{ns}.bird.log"))).expect("bird log");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "bird", "-f", "-c"])
            .arg(&path)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(self.dir.path().join(format!("{ns}.bird.pid")))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start bird");
        self.children.push(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "BIRD in {ns} did not start: {}", self.bird_log(ns));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn bird_log(&self, ns: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{ns}.bird.log"))).unwrap_or_default()
    }

    /// `birdc` in namespace `ns` (a ToR or the spine), BIRD's own words.
    pub fn birdc(&self, ns: &str, command: &str) -> String {
        let out = Command::new("birdc").arg("-s").arg(self.bird_socket(ns)).args(command.split_whitespace()).output().expect("birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The kernel's route to `destination` in namespace `ns` (`ip route show exact`).
    pub fn kernel_route(&self, ns: &str, destination: &str) -> String {
        let out = Command::new("ip").args(["-n", ns, "route", "show", "exact", destination]).output().expect("ip route");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A host dies: its link goes down, then its agent is killed, so nothing it had open is
    /// closed cleanly (no FIN gets out: its routers notice by their hold timers).
    pub fn kill_host(&mut self, i: usize) {
        run(&["ip", "-n", &self.hosts[i].ns, "link", "set", "eth0", "down"]);
        self.kill_agent(i);
    }

    fn add_namespace(&mut self, name: &str) {
        run(&["ip", "netns", "add", name]);
        self.namespaces.push(name.to_string());
        run(&["ip", "-n", name, "link", "set", "lo", "up"]);
        // Links made here are as settled as a datacenter's: no duplicate address detection, which
        // would keep each new link-local address (the source of neighbour solicitations for
        // forwarded packets) unusable for about two seconds.
        run(&["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"]);
    }

    /// The API of the first replica still running.
    pub fn url(&self) -> String {
        let live = self.controllers.iter().position(Option::is_some).unwrap_or(0);
        format!("http://127.0.0.1:{}", self.ports[live])
    }

    /// Every replica's URL, in order: what agents are given.
    fn urls(&self) -> String {
        self.ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    /// Start every replica (one after the other: the first loads the topology and the token).
    pub fn start_controller(&mut self) {
        let topology = self.dir.path().join("topology.yaml");
        self.controllers.clear();
        let failover = self.timers.vip_failover_seconds.to_string();
        for (i, port) in self.ports.clone().into_iter().enumerate() {
            let replica = format!("replica-{i}");
            let env = [
                ("TESSERA_NO_DEMO", "true"),
                ("TESSERA_TOPOLOGY", topology.to_str().expect("path")),
                ("TESSERA_REPLICA_ID", replica.as_str()),
                ("TESSERA_LEASE_RENEW_MS", "300"),
                ("TESSERA_LEASE_TTL_MS", "3000"),
                ("TESSERA_VIP_FAILOVER_SECONDS", failover.as_str()),
                ("TESSERA_BGP_ROUTER_ID", "10.255.0.1"),
            ];
            let mut env: Vec<(&str, &str)> = env.to_vec();
            env.extend(self.controller_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            self.controllers.push(Some(Controller::start_with(port, &self.database_url, &self.token, &env)));
        }
    }

    /// The process id of replica `i`, while it runs.
    pub fn controller_pid(&self, i: usize) -> Option<u32> {
        self.controllers.get(i).and_then(|c| c.as_ref()).map(Controller::pid)
    }

    pub fn stop_controller(&mut self) {
        self.controllers.clear();
    }

    /// SIGKILL replica `i` (a crash).
    pub fn kill_controller(&mut self, i: usize) {
        if let Some(mut c) = self.controllers[i].take() {
            c.kill();
        }
    }

    pub fn start_agent(&mut self, i: usize) {
        self.start_agent_with(i, &[]);
    }

    /// Replace host `i`'s agent by one started with extra environment.
    pub fn restart_agent_with(&mut self, i: usize, env: &[(&str, &str)]) {
        self.kill_agent(i);
        self.start_agent_with(i, env);
    }

    /// Remove this namespace with the datacenter.
    pub fn own_namespace(&mut self, ns: &str) {
        self.namespaces.push(ns.to_string());
        run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }

    /// Remove one of this datacenter's namespaces now.
    pub fn remove_namespace(&mut self, ns: &str) {
        self.namespaces.retain(|n| n != ns);
        let _ = Command::new("ip").args(["netns", "del", ns]).status();
    }

    fn start_agent_with(&mut self, i: usize, env: &[(&str, &str)]) {
        let h = &self.hosts[i];
        let log = File::options().create(true).append(true).open(h.dir.join("agent.log")).expect("agent log");
        let own_pids: &[&str] = if self.agent_pid_namespace { &["unshare", "--pid", "--fork", "--kill-child"] } else { &[] };
        let child = Command::new("ip")
            .args(["netns", "exec", &h.ns])
            .args(own_pids)
            .arg(binary("tessera-agent"))
            .args(["--controller", &self.urls(), "--node", &h.name])
            .arg("--token-file")
            .arg(&h.token_file)
            .arg("--state-dir")
            .arg(&h.dir)
            .arg("--socket")
            .arg(h.socket())
            .args(["--resync", &self.resync_seconds.to_string(), "--log", "info"])
            .env("TESSERA_REPORT_SECONDS", self.timers.report_seconds.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start agent");
        self.hosts[i].agent = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.hosts[i].socket().exists() {
            assert!(Instant::now() < deadline, "agent of {} did not open its socket", self.hosts[i].name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL the agent: no chance to clean up (there is nothing it would clean up anyway).
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut child) = self.hosts[i].agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.hosts[i].socket());
    }

    /// The process id of host `i`'s agent, while it runs.
    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.hosts[i].agent.as_ref().map(Child::id)
    }

    pub fn agent_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.hosts[i].dir.join("agent.log")).unwrap_or_default()
    }

    /// A call to the controller's API with the admin token; panics on an error status.
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.try_api(method, path, body);
        assert!(status < 300, "{method} {path}: {status} {value}");
        value
    }

    pub fn try_api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let client = reqwest::blocking::Client::new();
        let mut req = client.request(method.parse().expect("method"), format!("{}{path}", self.url())).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Store policy documents (YAML) through the API.
    pub fn put_policies(&self, yaml: &str) -> Value {
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}/v1/policies", self.url()))
            .bearer_auth(&self.token)
            .header("content-type", "application/yaml")
            .body(yaml.to_string())
            .send()
            .expect("post policies");
        let status = resp.status();
        let value: Value = resp.json().unwrap_or(Value::Null);
        assert!(status.is_success(), "POST /v1/policies: {status} {value}");
        value
    }

    /// Wait until every agent has applied the controller's latest generation.
    pub fn wait_converged(&self, timeout: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let nodes = self.api("GET", "/v1/nodes", None);
            let list = nodes.as_array().cloned().unwrap_or_default();
            let done = list.len() == self.hosts.len()
                && list.iter().all(|n| n["appliedGeneration"] == n["desiredGeneration"] && n["lastError"].is_null());
            if done {
                return started.elapsed();
            }
            assert!(started.elapsed() < timeout, "agents did not converge in {timeout:?}: {nodes}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Install the route plan's fabric routes in the router (what BGP would announce).
    pub fn install_fabric_routes(&self) -> Vec<String> {
        let plan = self.api("GET", "/v1/routes", None);
        let mut installed = Vec::new();
        for r in plan["fabric_routes"].as_array().or_else(|| plan["fabricRoutes"].as_array()).expect("fabric routes") {
            let dst = r["dst"].as_str().expect("dst");
            let via = r["gateways"][0]["ip"].as_str().expect("gateway");
            run(&["ip", "-n", &self.router, "route", "replace", dst, "via", via]);
            installed.push(dst.to_string());
        }
        installed
    }

    pub fn conflist(&self, host: usize) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "tessera",
            "plugins": [
                {"type": "tessera-cni", "agentSocket": self.hosts[host].socket(), "enforceTimeoutMs": 15000},
            ],
        })
    }

    pub fn runtime(&self, host: usize) -> Runtime {
        let mut bin = binary("tessera-cni");
        bin.pop();
        Runtime { path: vec![bin, PathBuf::from("/usr/lib/cni")], host_netns: Some(self.hosts[host].ns.clone()), runtime_config: json!({}) }
    }

    /// A pod made through the CNI plugin on `host`.
    pub fn add_pod(&mut self, name: &str, host: usize, tenant: &str, segment: &str, labels: &[(&str, &str)]) -> Pod {
        let ns = format!("{}-{name}", self.prefix);
        self.add_namespace(&ns);
        let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let label_arg = labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        let attachment = Attachment {
            container_id: format!("ctr-{name}-{:08x}", rand::random::<u32>()),
            netns: format!("/var/run/netns/{ns}"),
            ifname: "eth0".into(),
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={tenant};K8S_POD_NAME={name};TESSERA_SEGMENT={segment};TESSERA_LABELS={label_arg}"
            ),
        };
        let (result, _) = self.runtime(host).add(&self.conflist(host), &attachment).unwrap_or_else(|call| {
            panic!("CNI ADD of {name} failed: {} {}\nagent log:\n{}", call.output, call.stderr, self.agent_log(host))
        });
        let ips: Vec<String> = result["ips"]
            .as_array()
            .expect("ips")
            .iter()
            .map(|i| i["address"].as_str().expect("address").split('/').next().expect("ip").to_string())
            .collect();
        let ip = ips.iter().find(|a| !a.contains(':')).or(ips.first()).expect("an address").clone();
        let pod = Pod { name: name.into(), ns, host, tenant: tenant.into(), segment: segment.into(), labels, ip, ips, attachment, result };
        self.pods.push(pod.clone());
        pod
    }

    /// Start the probe answerer in a namespace.
    pub fn serve(&mut self, ns: &str, tcp: &[u16], whoami: &[u16], echo: &[u16]) {
        self.serve_families(ns, tcp, whoami, echo, false);
    }

    /// `serve`, with the `whoami` ports on IPv6 as well when `v6`.
    pub fn serve_families(&mut self, ns: &str, tcp: &[u16], whoami: &[u16], echo: &[u16], v6: bool) {
        let log = self.dir.path().join(format!("{ns}.sctp"));
        let mut child =
            self.prober(ns, "serve", &json!({"tcp": tcp, "udp": [53], "sctp_log": log, "whoami": whoami, "echo": echo, "v6": v6}));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().expect("stdout")), &mut line).expect("ready");
        assert_eq!(line.trim(), "ready", "server in {ns}");
        self.children.push(child);
    }

    /// Run probe jobs from `ns` (see prober.py); returns the prober (collect with `netns::finish`).
    pub fn probe(&self, ns: &str, jobs: &Value, timeout: f64) -> Child {
        self.prober(ns, "probe", &json!({"jobs": jobs, "timeout": timeout}))
    }

    /// prober.py in `ns`, in `mode`, given its arguments on stdin.
    fn prober(&self, ns: &str, mode: &str, args: &Value) -> Child {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "python3"])
            .arg(self.dir.path().join("prober.py"))
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("prober");
        writeln!(child.stdin.as_mut().expect("stdin"), "{args}").expect("prober arguments");
        child
    }

    /// Namespaces, Pods (and the given policies) as `simulate` reads them.
    pub fn cluster_yaml(&self, tenants: &[(&str, &[(&str, &str)])], policies: &str) -> String {
        let mut out = String::new();
        for (t, labels) in tenants {
            let labels: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
            out.push_str(&format!(
                "---\n{}\n",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": t, "labels": labels}})
            ));
        }
        for p in &self.pods {
            let mut labels = p.labels.clone();
            labels.insert("tessera.io/segment".into(), p.segment.clone());
            let doc = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": p.name, "namespace": p.tenant, "labels": labels}, "status": {"podIP": p.ip}});
            out.push_str(&format!("---\n{doc}\n"));
        }
        out.push_str("---\n");
        out.push_str(policies);
        out
    }
}

/// Listen on the loopback of `ns` at `port` and forward every connection to the controller on
/// this process's loopback.
fn relay(ns: &str, port: u16) {
    let path = format!("/var/run/netns/{ns}");
    let listener = std::thread::spawn(move || -> TcpListener {
        let file = File::open(&path).expect("netns file");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter netns");
        TcpListener::bind(("127.0.0.1", port)).expect("relay listener")
    })
    .join()
    .expect("relay thread");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(down) = conn else { continue };
            std::thread::spawn(move || {
                let Ok(up) = TcpStream::connect(("127.0.0.1", port)) else {
                    let _ = down.shutdown(std::net::Shutdown::Both);
                    return;
                };
                pipe(down, up);
            });
        }
    });
}

/// The other way round: listen on the test's `127.0.0.1:port`; each connection is carried to
/// `target` from inside namespace `ns`, from address `source`.
fn relay_into(ns: &str, port: u16, source: &str, target: &str) {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("relay listener");
    let (path, source, target) = (format!("/var/run/netns/{ns}"), source.to_string(), target.to_string());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(down) = conn else { continue };
            let (path, source, target) = (path.clone(), source.clone(), target.clone());
            std::thread::spawn(move || {
                let up = (|| -> std::io::Result<TcpStream> {
                    let file = File::open(&path)?;
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::other)?;
                    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
                    let from: std::net::SocketAddr = format!("{source}:0").parse().map_err(std::io::Error::other)?;
                    socket.bind(&from.into())?;
                    let to: std::net::SocketAddr = target.parse().map_err(std::io::Error::other)?;
                    socket.connect(&to.into())?;
                    Ok(socket.into())
                })();
                match up {
                    Ok(up) => pipe(down, up),
                    Err(_) => {
                        let _ = down.shutdown(std::net::Shutdown::Both);
                    }
                }
            });
        }
    });
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (mut a2, mut b2) = (a.try_clone().expect("clone"), b.try_clone().expect("clone"));
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut a2, &mut b2);
        let _ = b2.shutdown(std::net::Shutdown::Both);
        let _ = a2.shutdown(std::net::Shutdown::Both);
    });
    let (mut a3, mut b3) = (a, b);
    let _ = std::io::copy(&mut b3, &mut a3);
    let _ = a3.shutdown(std::net::Shutdown::Both);
    let _ = b3.shutdown(std::net::Shutdown::Both);
    let _ = t.join();
}

impl Drop for Datacenter {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            if let Some(mut c) = h.agent.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.controllers.clear();
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

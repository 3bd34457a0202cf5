//! AWS for tests: moto's EC2 server (from PyPI, in `.venv`, started on loopback), the test's
//! own hands on it (boto3, `tests/aws/ec2.py`), and a fault proxy that stands between the
//! controller's SDK and moto: it logs every mutating call with its arrival time and, on a
//! share of them, answers `RequestLimitExceeded`, answers an HTML 500, or drops the connection
//! before or after moto carried the call out — what EC2 and the network do that moto does not.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const VENV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin");
const EC2_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/aws/ec2.py");

/// moto's server on a free loopback port, stopped on drop.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    pub fn start() -> Moto {
        Moto::start_with(&[])
    }

    /// With extra environment for moto (e.g. `INITIAL_NO_AUTH_ACTION_COUNT` to check credentials).
    pub fn start_with(env: &[(&str, &str)]) -> Moto {
        let port = crate::free_port();
        let server = format!("{VENV}/moto_server");
        assert!(
            std::path::Path::new(&server).exists(),
            "moto_server not found at {server}: run `bash .ci/run` once (it installs moto[server])"
        );
        let child = Command::new(server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, endpoint }
    }

    /// The test's own hands on EC2 (boto3): see `tests/aws/ec2.py`.
    pub fn ec2(&self, args: &[&str]) -> Value {
        let out = Command::new(format!("{VENV}/python")).arg(EC2_PY).arg(&self.endpoint).args(args).output().expect("ec2.py");
        assert!(out.status.success(), "ec2.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("ec2.py json")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Shares of mutating calls (0.0–1.0) that meet each fault; the rest go through.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Answered `RequestLimitExceeded` (HTTP 503), not passed on.
    pub throttle: f64,
    /// Answered with an HTML 500 page, not passed on.
    pub server_error: f64,
    /// Connection closed before the call is passed on.
    pub drop_before: f64,
    /// Passed on and carried out by moto, then the connection closed without its answer.
    pub drop_after: f64,
}

/// What became of one mutating call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Passed on; moto's HTTP status, which the caller got.
    Answered(u16),
    Throttled,
    ServerError,
    DroppedBefore,
    /// Passed on; moto's HTTP status, which the caller never got.
    DroppedAfter(u16),
}

impl Fate {
    /// Whether moto carried the call out.
    pub fn applied(self) -> bool {
        matches!(self, Fate::Answered(200) | Fate::DroppedAfter(200))
    }
}

/// One mutating call as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    /// Arrival, since the proxy started.
    pub at: Duration,
    pub action: String,
    pub destination: String,
    pub fate: Fate,
}

/// The mutating actions of EC2 that the proxy logs and may fault.
const MUTATING: [&str; 5] = ["CreateRoute", "ReplaceRoute", "DeleteRoute", "ModifyInstanceAttribute", "ModifyNetworkInterfaceAttribute"];

/// A fault proxy in front of `upstream` (moto), on a free loopback port.
#[derive(Debug)]
pub struct Ec2Proxy {
    pub endpoint: String,
    started: Instant,
    faults: Arc<Mutex<Faults>>,
    log: Arc<Mutex<Vec<Logged>>>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl Ec2Proxy {
    pub fn start(upstream: &str, faults: Faults) -> Ec2Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("addr").port();
        let upstream = upstream.trim_start_matches("http://").to_string();
        let (faults, log, stop) = (Arc::new(Mutex::new(faults)), Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let shared = (faults.clone(), log.clone(), stop.clone());
        let started = Instant::now();
        std::thread::spawn(move || {
            let (faults, log, stop) = shared;
            let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
            for client in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let roll = dice.next();
                let (faults, log, upstream) = (*faults.lock().expect("faults"), log.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = serve(client, &upstream, faults, roll, started, &log);
                });
            }
        });
        Ec2Proxy { endpoint: format!("http://127.0.0.1:{port}"), started, faults, log, stop, port }
    }

    /// Now on the clock of the log's arrival times.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().expect("faults") = faults;
    }

    /// Every mutating call so far, in order of arrival.
    pub fn log(&self) -> Vec<Logged> {
        let mut log = self.log.lock().expect("log").clone();
        log.sort_by_key(|l| l.at);
        log
    }
}

impl Drop for Ec2Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// The most calls of `log` that arrived within any `window` (the rate the proxy saw).
pub fn busiest(log: &[Logged], window: Duration) -> usize {
    (0..log.len()).map(|i| log[i..].iter().take_while(|l| l.at < log[i].at + window).count()).max().unwrap_or(0)
}

/// A small deterministic generator (xorshift), so a failing run can be replayed.
struct Dice(u64);

impl Dice {
    /// A number in [0, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One request per connection (answered with `Connection: close`): read it, decide its fate,
/// pass it on or not, log it if it mutates.
fn serve(
    mut client: TcpStream,
    upstream: &str,
    faults: Faults,
    roll: f64,
    started: Instant,
    log: &Mutex<Vec<Logged>>,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
            if name.eq_ignore_ascii_case("connection") {
                continue;
            }
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let form = String::from_utf8_lossy(&body).to_string();
    let field =
        |name: &str| form.split('&').find_map(|kv| kv.strip_prefix(&format!("{name}="))).map(|v| v.replace("%2F", "/")).unwrap_or_default();
    let action = field("Action");
    let mutating = MUTATING.contains(&action.as_str());
    let at = started.elapsed();
    let record = |fate: Fate| {
        if mutating {
            let destination =
                [field("DestinationCidrBlock"), field("DestinationIpv6CidrBlock"), field("InstanceId"), field("NetworkInterfaceId")]
                    .into_iter()
                    .find(|v| !v.is_empty())
                    .unwrap_or_default();
            log.lock().expect("log").push(Logged { at, action: action.clone(), destination, fate });
        }
    };
    let mut edge = 0.0;
    let mut falls = |share: f64| {
        edge += share;
        mutating && roll < edge
    };
    if falls(faults.throttle) {
        record(Fate::Throttled);
        let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors><RequestID>proxy</RequestID></Response>";
        return answer(&mut client, "503 Service Unavailable", "text/xml", body);
    }
    if falls(faults.server_error) {
        record(Fate::ServerError);
        return answer(&mut client, "500 Internal Server Error", "text/html", "<html><body><h1>Internal Server Error</h1></body></html>");
    }
    if falls(faults.drop_before) {
        record(Fate::DroppedBefore);
        return client.shutdown(std::net::Shutdown::Both);
    }
    let drop_after = falls(faults.drop_after);
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(&head)?;
    up.write_all(&body)?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    let status = String::from_utf8_lossy(&response).split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    if drop_after {
        record(Fate::DroppedAfter(status));
        return client.shutdown(std::net::Shutdown::Both);
    }
    record(Fate::Answered(status));
    client.write_all(&response)
}

fn answer(client: &mut TcpStream, status: &str, kind: &str, body: &str) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    client.write_all(head.as_bytes())?;
    client.write_all(body.as_bytes())
}

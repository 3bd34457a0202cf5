//! A real Kubernetes control plane for tests: etcd and kube-apiserver of the pinned release,
//! built from Go by `tests/kube/build.sh` (cached outside the clone), started on loopback with
//! their own state in a temp directory. No kubelet: objects such as Nodes are created through
//! the API, as the operator's tests need.
//!
//! Access is a static admin token (group `system:masters`), and one with the identity of
//! deploy/'s controller ServiceAccount, over HTTPS, trusting the serving
//! certificate the apiserver generates; service-account tokens are signed with a key made here.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

/// Where `tests/kube/build.sh` puts the binaries, unless `TESSERA_KUBE_BIN` says otherwise.
/// `KUBEBUILDER_ASSETS` (envtest's convention) is honoured too.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("TESSERA_KUBE_BIN").or_else(|| std::env::var_os("KUBEBUILDER_ASSETS")).map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/root".into());
        home.join(".cache/tessera/kube-1.34.4/bin")
    })
}

/// Where `tests/kube/build.sh` puts the network-policy-api project's CRDs, unless
/// `TESSERA_KUBE_CRDS` says otherwise.
pub fn network_policy_api_crds() -> PathBuf {
    std::env::var_os("TESSERA_KUBE_CRDS").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/root".into());
        home.join(".cache/tessera/network-policy-api")
    })
}

/// etcd and kube-apiserver, stopped (and their state removed) on drop.
#[derive(Debug)]
pub struct Cluster {
    etcd: Child,
    apiserver: Child,
    apiserver_args: Vec<String>,
    /// etcd's client URL (`http://127.0.0.1:PORT`; its JSON gateway answers there too).
    pub etcd_url: String,
    /// `https://127.0.0.1:PORT`
    pub url: String,
    /// The admin bearer token.
    pub token: String,
    /// A static token with the identity of deploy/'s controller ServiceAccount
    /// (`tessera-system/tessera-controller`): what it may do is what deploy/'s RBAC grants.
    pub controller_token: String,
    /// The apiserver's serving certificate (PEM), to trust.
    pub ca: Vec<u8>,
    pub dir: tempfile::TempDir,
    /// One HTTPS client for every request (connections are reused).
    https: std::sync::OnceLock<reqwest::blocking::Client>,
}

fn start(binary: &Path, args: &[String], log: &Path) -> Child {
    assert!(binary.exists(), "{} is missing: run `bash tests/kube/build.sh` (the test script does)", binary.display());
    let log = std::fs::File::create(log).expect("log file");
    // Dies with the test process, even when a test panics.
    Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "--"])
        .arg(binary)
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()))
}

impl Cluster {
    pub fn start() -> Cluster {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("tessera-kube-").tempdir().expect("temp dir");
        let path = |name: &str| dir.path().join(name);
        let (client, peer, secure) = (crate::free_port(), crate::free_port(), crate::free_port());
        let etcd_url = format!("http://127.0.0.1:{client}");
        let etcd = start(
            &bin.join("etcd"),
            &[
                "--name=default".into(),
                format!("--data-dir={}", path("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-cluster=default=http://127.0.0.1:{peer}"),
                "--unsafe-no-fsync".into(),
            ],
            &path("etcd.log"),
        );
        let key = path("sa.key");
        let made = Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
            .arg(&key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(made.success(), "openssl could not make the service-account key");
        let token = format!("admin-{}", rand::random::<u64>());
        let controller_token = format!("controller-{}", rand::random::<u64>());
        let tokens = format!(
            "{token},admin,admin,\"system:masters\"\n\
             {controller_token},system:serviceaccount:tessera-system:tessera-controller,controller-sa,\"system:serviceaccounts,system:serviceaccounts:tessera-system\"\n"
        );
        std::fs::write(path("tokens.csv"), tokens).expect("token file");
        let apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--cert-dir={}", path("certs").display()),
            format!("--secure-port={secure}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            format!("--service-account-key-file={}", key.display()),
            format!("--service-account-signing-key-file={}", key.display()),
            format!("--token-auth-file={}", path("tokens.csv").display()),
            "--authorization-mode=RBAC".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
            "--allow-privileged=true".into(),
        ];
        let apiserver = start(&bin.join("kube-apiserver"), &apiserver_args, &path("apiserver.log"));
        let mut cluster = Cluster {
            etcd,
            apiserver,
            apiserver_args,
            etcd_url,
            url: format!("https://127.0.0.1:{secure}"),
            token,
            controller_token,
            ca: Vec::new(),
            dir,
            https: std::sync::OnceLock::new(),
        };
        cluster.wait_ready();
        cluster
    }

    /// Stop the apiserver (etcd keeps the state); [`Cluster::start_apiserver`] brings it back.
    pub fn stop_apiserver(&mut self) {
        let _ = self.apiserver.kill();
        let _ = self.apiserver.wait();
    }

    /// Start the apiserver again, on the same port and etcd, and wait until it is ready.
    pub fn start_apiserver(&mut self) {
        let log = self.dir.path().join("apiserver.log");
        self.apiserver = start(&bin_dir().join("kube-apiserver"), &self.apiserver_args, &log);
        self.wait_ready();
    }

    /// A call to etcd's JSON gateway (`/v3/kv/range`, `/v3/kv/compaction`, ...).
    pub fn etcd(&self, path: &str, body: &Value) -> Value {
        let answer = reqwest::blocking::Client::new().post(format!("{}{path}", self.etcd_url)).json(body).send().expect("etcd");
        assert!(answer.status().is_success(), "etcd {path}: {}", answer.status());
        answer.json().expect("etcd answer")
    }

    fn wait_ready(&mut self) {
        let cluster = self;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(ca) = std::fs::read(cluster.dir.path().join("certs/apiserver.crt")) {
                cluster.ca = ca;
                if cluster.request("GET", "/readyz", None).is_ok_and(|(status, _)| status == 200) {
                    return;
                }
            }
            if let Ok(Some(status)) = cluster.apiserver.try_wait() {
                panic!("kube-apiserver exited ({status}):\n{}", cluster.log("apiserver.log"));
            }
            assert!(Instant::now() < deadline, "kube-apiserver not ready in 120 s:\n{}", cluster.log("apiserver.log"));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of a component's log.
    pub fn log(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// A client that trusts the apiserver's certificate.
    pub fn client(&self) -> reqwest::blocking::Client {
        self.https
            .get_or_init(|| {
                let ca = reqwest::Certificate::from_pem(&self.ca).expect("the apiserver's certificate");
                reqwest::blocking::Client::builder().add_root_certificate(ca).build().expect("client")
            })
            .clone()
    }

    /// One request as the admin: the status and the body as JSON (text bodies as a string).
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> reqwest::Result<(u16, Value)> {
        self.send(method, path, body, "application/json")
    }

    /// A JSON merge patch as the admin (e.g. a Node's status, which no kubelet sets here).
    pub fn merge_patch(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send("PATCH", path, Some(body), "application/merge-patch+json").expect("patch")
    }

    fn send(&self, method: &str, path: &str, body: Option<&Value>, content_type: &str) -> reqwest::Result<(u16, Value)> {
        self.send_as(&self.token, method, path, body, content_type)
    }

    /// One request presenting `token`: the status and the body.
    pub fn request_as(&self, token: &str, method: &str, path: &str, body: Option<&Value>) -> reqwest::Result<(u16, Value)> {
        self.send_as(token, method, path, body, "application/json")
    }

    fn send_as(&self, token: &str, method: &str, path: &str, body: Option<&Value>, content_type: &str) -> reqwest::Result<(u16, Value)> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.client().request(method, format!("{}{path}", self.url)).bearer_auth(token);
        if let Some(body) = body {
            request = request.header("content-type", content_type).body(body.to_string());
        }
        let answer = request.send()?;
        let status = answer.status().as_u16();
        let text = answer.text()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    /// Create the CRDs of every `*.yaml` in `dir` (other kinds there are left out) and wait
    /// until each is established (served). Returns their names.
    pub fn install_crds(&self, dir: &Path) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e} (run `bash tests/kube/build.sh`)", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        let mut names = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("CRD file");
            let documents = tessera_policy::input::read_documents(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            for crd in documents.into_iter().filter(|d| d["kind"] == "CustomResourceDefinition") {
                let (status, body) = self.request("POST", CRDS, Some(&crd)).expect("create CRD");
                assert_eq!(status, 201, "{}: {body}", file.display());
                names.push(crd["metadata"]["name"].as_str().expect("name").to_string());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for name in &names {
            loop {
                let (_, crd) = self.request("GET", &format!("{CRDS}/{name}"), None).expect("CRD");
                let established = crd["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
                if established {
                    break;
                }
                assert!(Instant::now() < deadline, "CRD {name} not established in 30 s: {crd}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        names
    }

    /// A kubeconfig for the admin (what an operator or kubectl would be given).
    pub fn kubeconfig(&self) -> PathBuf {
        self.kubeconfig_as("kubeconfig", &self.token)
    }

    /// A kubeconfig presenting `token`, written to the file `name` of the cluster's directory.
    pub fn kubeconfig_as(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let ca = self.dir.path().join("certs/apiserver.crt");
        let doc = format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: test, cluster: {{server: \"{}\", certificate-authority: \"{}\"}}}}]\n\
             users: [{{name: admin, user: {{token: {}}}}}]\ncontexts: [{{name: test, context: {{cluster: test, user: admin}}}}]\n\
             current-context: test\n",
            self.url,
            ca.display(),
            token
        );
        std::fs::write(&path, doc).expect("kubeconfig");
        path
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

//! The controller's listener over TLS (rustls) when a certificate is configured: agents reach
//! it with the CA they are given; plain HTTP gets nowhere.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tessera_tests::{binary, free_port, sqlite_url};

#[test]
fn controller_serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    // A CA and a server certificate it signed (rustls refuses a CA certificate as a server's).
    let ca = dir.path().join("ca.pem");
    let ext = dir.path().join("ext.cnf");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").expect("ext");
    let openssl = |args: &[&str]| {
        let ok = Command::new("openssl").current_dir(dir.path()).args(args).stderr(Stdio::null()).status().expect("openssl").success();
        assert!(ok, "openssl {args:?} failed");
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(&[&["req", "-x509"][..], &ec, &["-days", "1", "-subj", "/CN=tessera-test-ca", "-keyout", "ca.key", "-out", "ca.pem"]].concat());
    openssl(&[&["req"][..], &ec, &["-subj", "/CN=controller", "-keyout", "key.pem", "-out", "req.csr"]].concat());
    openssl(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        "cert.pem",
        "-extfile",
        "ext.cnf",
    ]);
    let port = free_port();
    let token = "tls-admin-token-0123456789";
    let mut child = Killed(
        Command::new(binary("tessera-controller"))
            .env("TESSERA_LISTEN", format!("127.0.0.1:{port}"))
            .env("TESSERA_DATABASE_URL", sqlite_url())
            .env("TESSERA_ADMIN_TOKEN", token)
            .env("TESSERA_TLS_CERT", &cert)
            .env("TESSERA_TLS_KEY", &key)
            .env("TESSERA_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("controller"),
    );
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca).expect("ca")).expect("pem");
    let client = reqwest::blocking::Client::builder().add_root_certificate(ca).build().expect("client");
    let https = format!("https://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        if client.get(format!("{https}/readyz")).send().is_ok_and(|r| r.status().is_success()) {
            break true;
        }
        if Instant::now() > deadline || child.0.try_wait().ok().flatten().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    {
        assert!(ready, "the controller did not answer over HTTPS");
        // Register a host, then read its state as its agent would.
        let host = serde_json::json!({"name": "n1", "ips": ["192.0.2.10"]});
        let r = client.post(format!("{https}/v1/hosts")).bearer_auth(token).json(&host).send().expect("create host");
        assert!(r.status().is_success(), "{:?}", r.text());
        let node: serde_json::Value = client
            .post(format!("{https}/v1/tokens"))
            .bearer_auth(token)
            .json(&serde_json::json!({"name": "agent n1", "role": "node", "node": "n1"}))
            .send()
            .and_then(|r| r.json())
            .expect("node token");
        let state: serde_json::Value = client
            .get(format!("{https}/v1/nodes/n1/state"))
            .bearer_auth(node["token"].as_str().expect("token"))
            .send()
            .and_then(|r| r.json())
            .expect("state over TLS");
        assert_eq!(state["node"], "n1");
        // Plain HTTP on the TLS port is refused, and a client without the CA does not connect.
        let plain = reqwest::blocking::get(format!("http://127.0.0.1:{port}/readyz"));
        assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
        let stranger = reqwest::blocking::Client::builder().build().expect("client");
        assert!(stranger.get(format!("{https}/readyz")).send().is_err(), "a client without the CA must not trust the controller");
    }
}

/// Kills the process when the test ends, passed or not.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

//! Debian's chromium, headless, driven through its chromedriver with the W3C WebDriver protocol
//! (JSON over HTTP on loopback): the web UI as a person's browser meets it. Never a downloaded
//! browser; a fresh profile per test; the driver and browser die with the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("session", &self.session).finish()
    }
}

/// Where `scripts/test-all.sh` puts axe-core (npm), unless `TESSERA_AXE` says otherwise.
pub fn axe_path() -> PathBuf {
    std::env::var_os("TESSERA_AXE").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| "/root".into());
        home.join(".cache/tessera/axe/node_modules/axe-core/axe.min.js")
    })
}

impl Browser {
    pub fn start() -> Browser {
        let port = crate::free_port();
        let driver = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--", "chromedriver", &format!("--port={port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; scripts/test-all.sh installs it)");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().expect("client");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !http.get(format!("{base}/status")).send().is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::Builder::new().prefix("tessera-chromium-").tempdir().expect("profile");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1400,1000",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let answer: Value = http.post(format!("{base}/session")).json(&capabilities).send().expect("new session").json().expect("session");
        let session = answer["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {answer}")).to_string();
        Browser { driver, base, session, http, _profile: profile }
    }

    /// One WebDriver command: its `value`, or a panic saying what the driver said.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let answer: Value = request.send().expect("webdriver").json().expect("webdriver json");
        if answer["value"].get("error").is_some() {
            panic!("WebDriver {method} {path}: {}", answer["value"]);
        }
        answer["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({"url": url})));
    }

    pub fn url(&self) -> String {
        self.command("GET", "/url", None).as_str().unwrap_or_default().to_string()
    }

    fn find(&self, css: &str) -> String {
        let found = self.command("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        found[ELEMENT].as_str().expect("element").to_string()
    }

    /// Whether an element matches now.
    pub fn has(&self, css: &str) -> bool {
        let found = self.command("POST", "/elements", Some(json!({"using": "css selector", "value": css})));
        found.as_array().is_some_and(|a| !a.is_empty())
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.command("POST", &format!("/element/{id}/clear"), None);
        self.command("POST", &format!("/element/{id}/value"), Some(json!({"text": text})));
    }

    pub fn click(&self, css: &str) {
        let id = self.find(css);
        self.command("POST", &format!("/element/{id}/click"), None);
    }

    pub fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.command("GET", &format!("/element/{id}/text"), None).as_str().unwrap_or_default().to_string()
    }

    pub fn execute(&self, script: &str) -> Value {
        self.command("POST", "/execute/sync", Some(json!({"script": script, "args": []})))
    }

    pub fn execute_async(&self, script: &str) -> Value {
        self.command("POST", "/execute/async", Some(json!({"script": script, "args": []})))
    }

    /// Wait until `check` holds (polling), or panic naming `what`.
    pub fn wait_for(&self, what: &str, mut check: impl FnMut(&Browser) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !check(self) {
            assert!(Instant::now() < deadline, "{what}: not within 15 s at {}", self.url());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A PNG of the viewport, written to `path`.
    pub fn screenshot(&self, path: &Path) {
        let data = self.command("GET", "/screenshot", None);
        let png = decode_base64(data.as_str().expect("screenshot"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("screenshot");
    }

    /// The browser console's errors since the last call (chromedriver's log endpoint).
    pub fn console_errors(&self) -> Vec<String> {
        let log = self.command("POST", "/se/log", Some(json!({"type": "browser"})));
        log.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// axe-core's serious and critical accessibility violations of the page, one line each.
    pub fn accessibility_violations(&self, axe: &str) -> Vec<String> {
        self.execute(&format!("{axe}\nreturn true;"));
        let found = self.execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document).then(r => done(r.violations
                 .filter(v => v.impact === 'serious' || v.impact === 'critical')
                 .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' + v.nodes.map(n => n.target.join(' ')).join(', '))));",
        );
        found.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.http.delete(format!("{}/session/{}", self.base, self.session)).send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let digits: Vec<u32> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, d)| n | (d << (18 - 6 * i)));
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len().saturating_sub(1)]);
    }
    out
}

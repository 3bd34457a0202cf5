//! A small CNI runtime for tests: runs plugins exactly as a container runtime does
//! (environment variables, network configuration on stdin, result or error on stdout) and
//! runs a conflist: ADD in order threading `prevResult`, CHECK in order and DEL in reverse
//! with the cached result.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// One attachment, as a runtime knows it.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
}

/// Where plugins are found, and the network namespace they run in (the node's).
#[derive(Debug, Clone)]
pub struct Runtime {
    pub path: Vec<PathBuf>,
    pub host_netns: Option<String>,
    /// Capability arguments offered to plugins that declare them (`portMappings`, `bandwidth`).
    pub runtime_config: Value,
}

/// What a plugin call returned: its JSON (result or error), whether it succeeded, how long.
#[derive(Debug, Clone)]
pub struct Call {
    pub ok: bool,
    pub output: Value,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Runtime {
    fn find(&self, kind: &str) -> PathBuf {
        self.path
            .iter()
            .map(|d| d.join(kind))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("plugin `{kind}` not found in {:?}", self.path))
    }

    /// Run one plugin once.
    pub fn exec(&self, command: &str, a: Option<&Attachment>, config: &Value) -> Call {
        let kind = config["type"].as_str().expect("plugin type");
        let binary = self.find(kind);
        let mut cmd = match &self.host_netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", std::env::join_paths(&self.path).expect("CNI_PATH"));
        if let Some(a) = a {
            cmd.env("CNI_CONTAINERID", &a.container_id).env("CNI_NETNS", &a.netns).env("CNI_IFNAME", &a.ifname).env("CNI_ARGS", &a.args);
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("run {}: {e}", binary.display()));
        child.stdin.take().expect("stdin").write_all(config.to_string().as_bytes()).expect("write config");
        let out = child.wait_with_output().expect("plugin output");
        let elapsed = started.elapsed();
        let text = String::from_utf8_lossy(&out.stdout);
        let output =
            if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or_else(|_| json!({"unparsed": text})) };
        Call { ok: out.status.success(), output, stderr: String::from_utf8_lossy(&out.stderr).into_owned(), elapsed }
    }

    /// A plugin's configuration as a runtime builds it from a conflist entry.
    fn config(&self, list: &Value, plugin: &Value, prev: Option<&Value>) -> Value {
        let mut c = plugin.clone();
        c["name"] = list["name"].clone();
        c["cniVersion"] = list["cniVersion"].clone();
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        if let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) {
            let mut rc = serde_json::Map::new();
            for (cap, on) in caps {
                if on.as_bool() == Some(true)
                    && let Some(v) = self.runtime_config.get(cap)
                {
                    rc.insert(cap.clone(), v.clone());
                }
            }
            if !rc.is_empty() {
                c["runtimeConfig"] = Value::Object(rc);
            }
        }
        c
    }

    fn plugins(list: &Value) -> Vec<Value> {
        list["plugins"].as_array().cloned().expect("conflist plugins")
    }

    /// ADD through the list; the final result (or the failing plugin's call).
    pub fn add(&self, list: &Value, a: &Attachment) -> Result<(Value, Duration), Call> {
        let mut prev: Option<Value> = None;
        let mut total = Duration::ZERO;
        for plugin in Self::plugins(list) {
            let call = self.exec("ADD", Some(a), &self.config(list, &plugin, prev.as_ref()));
            total += call.elapsed;
            if !call.ok {
                return Err(call);
            }
            prev = Some(call.output);
        }
        Ok((prev.unwrap_or(Value::Null), total))
    }

    pub fn check(&self, list: &Value, a: &Attachment, result: &Value) -> Result<(), Call> {
        for plugin in Self::plugins(list) {
            let call = self.exec("CHECK", Some(a), &self.config(list, &plugin, Some(result)));
            if !call.ok {
                return Err(call);
            }
        }
        Ok(())
    }

    pub fn del(&self, list: &Value, a: &Attachment, result: Option<&Value>) -> Result<Duration, Call> {
        let mut total = Duration::ZERO;
        for plugin in Self::plugins(list).iter().rev() {
            let call = self.exec("DEL", Some(a), &self.config(list, plugin, result));
            total += call.elapsed;
            if !call.ok {
                return Err(call);
            }
        }
        Ok(total)
    }
}

//! What the runtime hands the plugin: environment variables and the network configuration on
//! stdin, validated into one [`Call`]. Errors carry the CNI error code that fits them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

/// CNI versions this plugin speaks (results have the same shape in both).
pub const SUPPORTED: &[&str] = &["1.0.0", "1.1.0"];

/// A CNI error: code, message, details (spec: "Error" result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError { code, msg: msg.into(), details: String::new() }
    }

    pub fn details(mut self, d: impl Into<String>) -> CniError {
        self.details = d.into();
        self
    }
}

pub const INCOMPATIBLE_VERSION: u32 = 1;
pub const UNKNOWN_CONTAINER: u32 = 3;
pub const INVALID_ENV: u32 = 4;
pub const IO_FAILURE: u32 = 5;
pub const DECODE_FAILURE: u32 = 6;
pub const INVALID_CONFIG: u32 = 7;
pub use tessera_agent_api::TRY_AGAIN_LATER;
pub const NOT_AVAILABLE: u32 = 50;

/// The network configuration (the plugin's entry of a conflist, with the conflist's name and
/// cniVersion, as the runtime passes it).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    /// Required by the spec (the network's name and the plugin's type); not used otherwise.
    #[allow(dead_code)]
    pub name: String,
    #[serde(rename = "type")]
    #[allow(dead_code)]
    pub kind: String,
    /// The node agent's socket.
    #[serde(default = "default_socket")]
    pub agent_socket: PathBuf,
    /// Tenant when neither CNI_ARGS nor Kubernetes names one.
    pub tenant: Option<String>,
    #[serde(default = "default_segment")]
    pub segment: String,
    /// How long ADD waits for the pod's rules to be enforced.
    #[serde(default = "default_timeout")]
    pub enforce_timeout_ms: u64,
    #[serde(default)]
    pub args: Option<Value>,
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// GC: the attachments the runtime still knows.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/tessera/agent.sock")
}

fn default_segment() -> String {
    tessera_agent_api::DEFAULT_SEGMENT.into()
}

fn default_timeout() -> u64 {
    10_000
}

/// The environment of one call.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: String,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: BTreeMap<String, String>,
}

impl Env {
    pub fn from_process() -> Env {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            command: get("CNI_COMMAND").unwrap_or_default(),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: parse_args(&get("CNI_ARGS").unwrap_or_default()),
        }
    }

    pub fn require(&self, what: &'static str, value: &Option<String>) -> Result<String, CniError> {
        value.clone().ok_or_else(|| CniError::new(INVALID_ENV, format!("{what} is required for {}", self.command)))
    }
}

/// Container ids as runtimes make them (the reference plugins' rule): letters, digits, `_.-`,
/// starting with a letter or digit.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let first_ok = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !id.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) || id.len() > 255 {
        return Err(CniError::new(
            INVALID_ENV,
            format!("CNI_CONTAINERID `{id}`: only letters, digits and _.- (starting with a letter or digit)"),
        ));
    }
    Ok(())
}

/// Interface names the kernel accepts: 1–15 bytes, no `/`, `:` or white space, not `.` or `..`.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        return Err(CniError::new(INVALID_ENV, format!("CNI_IFNAME `{name}`: 1-15 characters, no '/', ':' or spaces")));
    }
    Ok(())
}

/// `K=V;K2=V2` (values may contain `=`).
pub fn parse_args(text: &str) -> BTreeMap<String, String> {
    text.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

pub fn read_conf(stdin: &[u8]) -> Result<NetConf, CniError> {
    let conf: NetConf = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(DECODE_FAILURE, "the network configuration on stdin is not valid").details(e.to_string()))?;
    if !SUPPORTED.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(INCOMPATIBLE_VERSION, format!("cniVersion {} is not supported", conf.cni_version))
            .details(format!("supported: {}", SUPPORTED.join(", "))));
    }
    if conf.enforce_timeout_ms == 0 || conf.enforce_timeout_ms > 300_000 {
        return Err(CniError::new(INVALID_CONFIG, "enforceTimeoutMs must be between 1 and 300000"));
    }
    validate_socket(&conf.agent_socket)?;
    Ok(conf)
}

/// A unix socket path the kernel can connect to: absolute, without NUL, at most 107 bytes (the
/// size of `sun_path` less its terminator). A bad one is a configuration error, not a reason
/// to try again later.
fn validate_socket(path: &std::path::Path) -> Result<(), CniError> {
    use std::os::unix::ffi::OsStrExt as _;
    let bytes = path.as_os_str().as_bytes();
    let problem = if !path.is_absolute() {
        Some("must be an absolute path")
    } else if bytes.contains(&0) {
        Some("must not contain a NUL byte")
    } else if bytes.len() > 107 {
        Some("is longer than a unix socket path can be (107 bytes)")
    } else {
        None
    };
    match problem {
        Some(p) => Err(CniError::new(INVALID_CONFIG, format!("agentSocket `{}` {p}", path.display()))),
        None => Ok(()),
    }
}

/// `TESSERA_LABELS=app=web,tier=front` and `args.cni.labels` in the configuration.
pub fn labels(env: &Env, conf: &NetConf) -> Result<BTreeMap<String, String>, CniError> {
    let mut out = BTreeMap::new();
    if let Some(map) = conf.args.as_ref().and_then(|a| a.pointer("/cni/labels")).and_then(Value::as_object) {
        for (k, v) in map {
            let v = v.as_str().ok_or_else(|| CniError::new(INVALID_CONFIG, format!("args.cni.labels.{k}: must be a string")))?;
            out.insert(k.clone(), v.to_string());
        }
    }
    if let Some(text) = env.args.get("TESSERA_LABELS") {
        for pair in text.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| CniError::new(INVALID_ENV, format!("CNI_ARGS TESSERA_LABELS: `{pair}` is not key=value")))?;
            out.insert(k.to_string(), v.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_args_keep_equals_signs_in_values() {
        let a = parse_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=web;TESSERA_LABELS=app=db,tier=back");
        assert_eq!(a["K8S_POD_NAMESPACE"], "web");
        assert_eq!(a["TESSERA_LABELS"], "app=db,tier=back");
    }

    #[test]
    fn container_ids_and_interface_names_are_checked() {
        assert!(validate_container_id("0a1b2c_d.e-f").is_ok());
        for bad in ["", "-x", "a/b", "a?b", "a b"] {
            assert_eq!(validate_container_id(bad).expect_err(bad).code, INVALID_ENV);
        }
        assert!(validate_ifname("eth0").is_ok());
        for bad in ["", ".", "..", "a/b", "sixteen-chars-xx", "e th"] {
            assert_eq!(validate_ifname(bad).expect_err(bad).code, INVALID_ENV);
        }
    }

    #[test]
    fn unsupported_versions_and_bad_json_get_their_codes() {
        let e = read_conf(br#"{"cniVersion":"0.2.0","name":"n","type":"tessera-cni"}"#).expect_err("0.2.0 is refused");
        assert_eq!(e.code, INCOMPATIBLE_VERSION);
        assert_eq!(read_conf(b"{").expect_err("bad JSON").code, DECODE_FAILURE);
    }

    #[test]
    fn a_bad_agent_socket_is_a_configuration_error() {
        let long = format!("/{}", "s".repeat(120));
        for socket in [long.as_str(), "/run/a\\u0000b", "relative.sock"] {
            let conf = format!(r#"{{"cniVersion":"1.0.0","name":"n","type":"tessera-cni","agentSocket":"{socket}"}}"#);
            let e = read_conf(conf.as_bytes()).expect_err(socket);
            assert_eq!(e.code, INVALID_CONFIG, "{socket}: {}", e.msg);
        }
    }
}

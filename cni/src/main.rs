//! `tessera-cni`: the CNI plugin (spec 1.0.0 and 1.1.0: ADD, DEL, CHECK, VERSION, GC, STATUS).
//!
//! ADD asks the node agent for addresses, wires a veth pair (the host side answers for a
//! link-local gateway, so no proxy ARP), and returns only once the agent enforces the pod's
//! rules; until then the host side stays down, so a pod is never reachable unprotected.
//! Results and errors are the spec's JSON on stdout; logs go to stderr only.

mod agent;
mod config;
mod wire;

use std::io::Read;
use std::time::Duration;

use serde_json::{Value, json};
use tessera_agent_api::{AgentReply, AgentRequest, Attachment, AttachmentKey};

use config::{CniError, Env, NetConf, SUPPORTED};

fn main() -> std::process::ExitCode {
    let env = Env::from_process();
    let outcome = run(&env);
    let version = std::env::var("TESSERA_CNI_REPLY_VERSION").unwrap_or_else(|_| "1.1.0".into());
    match outcome {
        Ok(Some(result)) => {
            println!("{result}");
            std::process::ExitCode::SUCCESS
        }
        Ok(None) => std::process::ExitCode::SUCCESS,
        Err((e, cni_version)) => {
            let mut body = json!({"cniVersion": cni_version.unwrap_or(version), "code": e.code, "msg": e.msg});
            if !e.details.is_empty() {
                body["details"] = json!(e.details);
            }
            println!("{body}");
            eprintln!("tessera-cni {}: {} {}", env.command, e.msg, e.details);
            std::process::ExitCode::FAILURE
        }
    }
}

type Outcome = Result<Option<Value>, (CniError, Option<String>)>;

fn run(env: &Env) -> Outcome {
    if env.command == "VERSION" {
        return Ok(Some(json!({"cniVersion": "1.1.0", "supportedVersions": SUPPORTED})));
    }
    let mut stdin = Vec::new();
    std::io::stdin().read_to_end(&mut stdin).map_err(|e| (CniError::new(config::IO_FAILURE, e.to_string()), None))?;
    let conf = config::read_conf(&stdin).map_err(|e| (e, None))?;
    let version = Some(conf.cni_version.clone());
    let result = match env.command.as_str() {
        "ADD" => add(env, &conf).map(Some),
        "DEL" => del(env, &conf).map(|_| None),
        "CHECK" => check(env, &conf).map(|_| None),
        "GC" => gc(&conf).map(|_| None),
        "STATUS" => status(&conf).map(|_| None),
        other => {
            Err(CniError::new(config::INVALID_ENV, format!("CNI_COMMAND `{other}` is not one of ADD, DEL, CHECK, VERSION, GC, STATUS")))
        }
    };
    result.map_err(|e| (e, version))
}

fn key(env: &Env) -> Result<AttachmentKey, CniError> {
    let container_id = env.require("CNI_CONTAINERID", &env.container_id)?;
    let ifname = env.require("CNI_IFNAME", &env.ifname)?;
    config::validate_container_id(&container_id)?;
    config::validate_ifname(&ifname)?;
    Ok(AttachmentKey { container_id, ifname })
}

const AGENT_TIMEOUT: Duration = Duration::from_secs(30);

fn add(env: &Env, conf: &NetConf) -> Result<Value, CniError> {
    let key = key(env)?;
    let netns = env.require("CNI_NETNS", &env.netns)?;
    let tenant =
        env.args.get("TESSERA_TENANT").or_else(|| env.args.get("K8S_POD_NAMESPACE")).cloned().or_else(|| conf.tenant.clone()).ok_or_else(
            || {
                CniError::new(
                    config::INVALID_CONFIG,
                    "no tenant: set `tenant` in the configuration, or K8S_POD_NAMESPACE / TESSERA_TENANT in CNI_ARGS",
                )
            },
        )?;
    let segment = env.args.get("TESSERA_SEGMENT").cloned().unwrap_or_else(|| conf.segment.clone());
    let labels = config::labels(env, conf)?;
    let request = AgentRequest::Allocate(Attachment { key: key.clone(), tenant, segment, labels });
    let AgentReply::Allocated { endpoint, ips, gateway_v4, gateway_v6 } =
        agent::expect(agent::call(&conf.agent_socket, &request, AGENT_TIMEOUT)?)?
    else {
        return Err(CniError::new(config::IO_FAILURE, "the agent answered an allocation with something else"));
    };
    let wiring = wire::Wiring { key: key.clone(), netns: netns.clone(), ips: ips.clone(), gateway_v4, gateway_v6 };
    let undo = |e: CniError| {
        // Leave nothing half made: no veth, no address held.
        let _ = wire::unwire(&key);
        let _ = agent::call(&conf.agent_socket, &AgentRequest::Release { attachment: key.clone() }, AGENT_TIMEOUT);
        e
    };
    let links = wire::wire(&wiring).map_err(undo)?;
    let wait = AgentRequest::WaitEnforced { endpoint: endpoint.clone(), timeout_ms: conf.enforce_timeout_ms };
    agent::call(&conf.agent_socket, &wait, Duration::from_millis(conf.enforce_timeout_ms) + AGENT_TIMEOUT)
        .and_then(agent::expect)
        .map_err(undo)?;
    wire::open(&links).map_err(undo)?;
    let route = AgentRequest::Wire { endpoint, host_interface: links.host.clone() };
    agent::call(&conf.agent_socket, &route, AGENT_TIMEOUT).and_then(agent::expect).map_err(undo)?;

    let ip_entries: Vec<Value> = ips
        .iter()
        .map(|ip| {
            let gateway = if ip.addr().is_ipv4() { gateway_v4 } else { gateway_v6 };
            json!({"address": ip.to_string(), "gateway": gateway.to_string(), "interface": 1})
        })
        .collect();
    let mut routes = Vec::new();
    if ips.iter().any(|ip| ip.addr().is_ipv4()) {
        routes.push(json!({"dst": "0.0.0.0/0", "gw": gateway_v4.to_string()}));
    }
    if ips.iter().any(|ip| ip.addr().is_ipv6()) {
        routes.push(json!({"dst": "::/0", "gw": gateway_v6.to_string()}));
    }
    Ok(json!({
        "cniVersion": conf.cni_version,
        "interfaces": [
            {"name": links.host, "mac": links.host_mac},
            {"name": key.ifname, "mac": links.pod_mac, "sandbox": netns},
        ],
        "ips": ip_entries,
        "routes": routes,
        "dns": {},
    }))
}

/// Idempotent: a missing veth, namespace or endpoint is success. Both halves are always tried
/// and every failure is reported, so a retry knows what is left.
fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let key = key(env)?;
    let unwired = wire::unwire(&key);
    let released = agent::call(&conf.agent_socket, &AgentRequest::Release { attachment: key }, AGENT_TIMEOUT).and_then(agent::expect);
    match (unwired, released) {
        (Ok(()), Ok(_)) => Ok(()),
        (Err(e), Ok(_)) | (Ok(()), Err(e)) => Err(e),
        // The release error decides the code (an unreachable agent is "try again later").
        (Err(w), Err(r)) => Err(CniError { details: format!("{}; also: {} {}", r.details, w.msg, w.details).trim().to_string(), ..r }),
    }
}

fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let key = key(env)?;
    let netns = env.require("CNI_NETNS", &env.netns)?;
    let prev = conf.prev_result.as_ref().ok_or_else(|| CniError::new(config::INVALID_CONFIG, "CHECK needs prevResult"))?;
    let expected: Vec<ipnet::IpNet> = prev
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.get("address").and_then(Value::as_str).and_then(|a| a.parse().ok()))
        .collect();
    wire::check(&key, &netns, &expected)?;
    let wait = AgentRequest::WaitEnforced { endpoint: key.endpoint_id(), timeout_ms: 1000 };
    agent::expect(agent::call(&conf.agent_socket, &wait, AGENT_TIMEOUT)?)?;
    Ok(())
}

fn gc(conf: &NetConf) -> Result<(), CniError> {
    let keep: Vec<AttachmentKey> = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| AttachmentKey { container_id: a.container_id.clone(), ifname: a.ifname.clone() })
        .collect();
    wire::remove_others(&keep)?;
    agent::expect(agent::call(&conf.agent_socket, &AgentRequest::Gc { keep }, AGENT_TIMEOUT)?)?;
    Ok(())
}

fn status(conf: &NetConf) -> Result<(), CniError> {
    match agent::call(&conf.agent_socket, &AgentRequest::Status, Duration::from_secs(5)) {
        Ok(AgentReply::Status { ready: true, .. }) => Ok(()),
        Ok(AgentReply::Status { message, .. }) => Err(CniError::new(config::NOT_AVAILABLE, message)),
        Ok(other) => Err(CniError::new(config::NOT_AVAILABLE, format!("unexpected agent answer: {other:?}"))),
        Err(e) => Err(CniError::new(config::NOT_AVAILABLE, e.msg).details(e.details)),
    }
}

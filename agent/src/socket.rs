//! The unix socket the CNI plugin talks to: one JSON request line, one JSON reply line.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tessera_agent_api::{AgentReply, AgentRequest, Attachment, AttachmentKey, GATEWAY_V4, GATEWAY_V6};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::client::{CallError, Controller};
use crate::enforcer::{Enforced, Event};

/// CNI error codes (spec 1.1): 11 = try again later; 100+ are the plugin's own.
pub use tessera_agent_api::TRY_AGAIN_LATER;
pub const REFUSED: u32 = 100;
pub const NOT_ENFORCED: u32 = 101;

#[derive(Debug, Clone)]
pub struct Socket {
    pub controller: Controller,
    pub events: mpsc::Sender<Event>,
    pub enforced: watch::Receiver<Enforced>,
}

pub async fn serve(path: &Path, socket: Socket) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    // Only root (the runtime calling the plugin) may talk to the agent.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let socket = Arc::new(socket);
    loop {
        let (stream, _) = listener.accept().await?;
        let socket = socket.clone();
        tokio::spawn(async move {
            if let Err(e) = socket.connection(stream).await {
                tracing::warn!(error = %e, "CNI connection failed");
            }
        });
    }
}

impl Socket {
    async fn connection(&self, stream: UnixStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        BufReader::new(read).read_line(&mut line).await?;
        let reply = match serde_json::from_str::<AgentRequest>(&line) {
            Ok(request) => self.handle(request).await,
            Err(e) => AgentReply::Error { code: REFUSED, message: format!("unreadable request: {e}") },
        };
        let mut out = serde_json::to_vec(&reply).unwrap_or_default();
        out.push(b'\n');
        write.write_all(&out).await
    }

    async fn handle(&self, request: AgentRequest) -> AgentReply {
        match request {
            AgentRequest::Allocate(a) => self.allocate(a).await,
            AgentRequest::Release { attachment } => self.release(&attachment).await,
            AgentRequest::WaitEnforced { endpoint, timeout_ms } => self.wait(&endpoint, timeout_ms).await,
            AgentRequest::Wire { endpoint, host_interface } => self.wire(endpoint, Some(host_interface)).await,
            AgentRequest::Gc { keep } => self.gc(&keep).await,
            AgentRequest::Status => {
                let enforced = self.enforced.borrow().clone();
                match enforced.generation {
                    Some(g) => AgentReply::Status { ready: true, message: format!("enforcing generation {g}") },
                    None => AgentReply::Status { ready: false, message: "no node state received from the controller yet".into() },
                }
            }
        }
    }

    async fn allocate(&self, a: Attachment) -> AgentReply {
        let id = a.key.endpoint_id();
        match self.controller.allocate(&id, &a.tenant, &a.segment, &a.labels).await {
            Ok(answer) => {
                let ips = answer.ips.iter().map(|ip| IpNet::from(*ip)).collect();
                AgentReply::Allocated {
                    endpoint: answer.id,
                    ips,
                    gateway_v4: GATEWAY_V4.parse().unwrap_or(IpAddr::from([169, 254, 1, 1])),
                    gateway_v6: GATEWAY_V6.parse().unwrap_or(IpAddr::from([0xfe80, 0, 0, 0, 0, 0, 0, 1])),
                }
            }
            Err(e) => error(e),
        }
    }

    async fn release(&self, key: &AttachmentKey) -> AgentReply {
        let id = key.endpoint_id();
        if let AgentReply::Error { code, message } = self.wire(id.clone(), None).await {
            return AgentReply::Error { code, message };
        }
        match self.controller.release(&id).await {
            Ok(()) => AgentReply::Done,
            Err(e) => error(e),
        }
    }

    async fn wire(&self, endpoint: String, interface: Option<String>) -> AgentReply {
        let (done, reply) = oneshot::channel();
        if self.events.send(Event::Wire { endpoint, interface, done }).await.is_err() {
            return AgentReply::Error { code: TRY_AGAIN_LATER, message: "the agent is shutting down".into() };
        }
        match reply.await {
            Ok(Ok(())) => AgentReply::Done,
            Ok(Err(e)) => AgentReply::Error { code: REFUSED, message: e.to_string() },
            Err(_) => AgentReply::Error { code: TRY_AGAIN_LATER, message: "the agent is shutting down".into() },
        }
    }

    async fn wait(&self, endpoint: &str, timeout_ms: u64) -> AgentReply {
        let mut rx = self.enforced.clone();
        let wait = rx.wait_for(|e| e.endpoints.contains(endpoint));
        match tokio::time::timeout(Duration::from_millis(timeout_ms), wait).await {
            Ok(Ok(e)) => AgentReply::Enforced { generation: e.generation.unwrap_or(0) },
            _ => AgentReply::Error {
                code: NOT_ENFORCED,
                message: format!("the rules of endpoint {endpoint} were not enforced within {timeout_ms} ms; is the controller reachable?"),
            },
        }
    }

    /// Release every CNI endpoint of this node the runtime no longer knows.
    async fn gc(&self, keep: &[AttachmentKey]) -> AgentReply {
        let keep: std::collections::BTreeSet<String> = keep.iter().map(AttachmentKey::endpoint_id).collect();
        let known = self.enforced.borrow().endpoints.clone();
        for id in known.iter().filter(|id| id.starts_with("cni/") && !keep.contains(*id)) {
            if let Err(e) = self.controller.release(id).await {
                return error(e);
            }
            let _ = self.wire(id.clone(), None).await;
        }
        AgentReply::Done
    }
}

fn error(e: CallError) -> AgentReply {
    let code = match e {
        CallError::Unreachable(_) => TRY_AGAIN_LATER,
        CallError::Refused { .. } => REFUSED,
    };
    AgentReply::Error { code, message: e.to_string() }
}

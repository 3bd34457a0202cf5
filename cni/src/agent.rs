//! One request to the node agent over its unix socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use tessera_agent_api::{AgentReply, AgentRequest};

use crate::config::{CniError, IO_FAILURE, TRY_AGAIN_LATER};

pub fn call(socket: &Path, request: &AgentRequest, timeout: Duration) -> Result<AgentReply, CniError> {
    let unreachable = |e: std::io::Error| {
        CniError::new(TRY_AGAIN_LATER, format!("the Tessera agent is not reachable at {}", socket.display())).details(e.to_string())
    };
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    stream.set_read_timeout(Some(timeout)).map_err(unreachable)?;
    let mut line = serde_json::to_vec(request).map_err(|e| CniError::new(IO_FAILURE, e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(unreachable)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(unreachable)?;
    serde_json::from_str(&answer).map_err(|e| CniError::new(IO_FAILURE, "unreadable answer from the agent").details(e.to_string()))
}

/// The agent's answer, with its errors turned into CNI errors.
pub fn expect(reply: AgentReply) -> Result<AgentReply, CniError> {
    match reply {
        AgentReply::Error { code, message } => Err(CniError::new(code, message)),
        other => Ok(other),
    }
}

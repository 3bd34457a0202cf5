//! TCP connections to BGP peers: the session's TTL (GTSM-less eBGP: 1 unless multihop) and,
//! when the peer wants it, TCP-MD5 signatures (RFC 2385) keyed per peer address. The key is set
//! on the socket before the SYN, so every segment of the session is signed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::Connector;

/// The IP TTL of a session's packets: `multihop` when configured, else 1 for an eBGP peer
/// (directly connected) and the system's default for iBGP.
pub fn session_ttl(multihop: Option<u8>, ebgp: bool) -> Option<u32> {
    multihop.map(u32::from).or(ebgp.then_some(1))
}

/// Dial `address` for an active session: the TTL, and the TCP-MD5 key read from `key_file` at
/// each attempt (so a rotated key is picked up).
pub fn dialer(address: SocketAddr, ttl: Option<u32>, key_file: Option<String>) -> Connector {
    Arc::new(move || {
        let key = key_file.as_deref().map(read_key).transpose()?;
        connect(address, ttl, key.as_deref(), Duration::from_secs(5))
    })
}

/// Where sessions' connections come from: dialled, or accepted on one listener on port 179
/// shared by every passive session (opened on first use).
#[derive(Debug, Default)]
pub struct Transports {
    acceptor: Option<Arc<Acceptor>>,
}

impl Transports {
    /// The connector of a session with `peer` (`port` is the peer's, when dialling). `ttl`: the
    /// IP TTL of the session's packets; `key_file`: its TCP-MD5 key.
    pub fn connector(
        &mut self,
        peer: IpAddr,
        port: u16,
        passive: bool,
        ttl: Option<u32>,
        key_file: Option<String>,
    ) -> std::io::Result<Connector> {
        if !passive {
            return Ok(dialer(SocketAddr::new(peer, port), ttl, key_file));
        }
        let acceptor = match &self.acceptor {
            Some(a) => a.clone(),
            None => {
                let a = Acceptor::bind(SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 179))?;
                self.acceptor = Some(a.clone());
                a
            }
        };
        let accept = acceptor.connector(peer, key_file)?;
        Ok(Arc::new(move || {
            // The listener lives as long as a session may still want it.
            let _listening = &acceptor;
            let stream = accept()?;
            if let Some(ttl) = ttl {
                stream.set_ttl(ttl)?;
            }
            Ok(stream)
        }))
    }
}

/// How long a passive session's connector waits for its peer before saying so (it is asked
/// again): short, so a stopping session is not held up.
const ACCEPT_WAIT: Duration = Duration::from_secs(1);

/// One listening socket for every passive session (port 179 is shared): each connection goes
/// to the session of the address it came from; others are closed.
#[derive(Debug)]
pub struct Acceptor {
    listener: Socket,
    sessions: Mutex<HashMap<IpAddr, Sender<TcpStream>>>,
}

impl Acceptor {
    /// Listen on `address` (`[::]:179` takes IPv4 peers too) and start handing connections out.
    pub fn bind(address: SocketAddr) -> std::io::Result<Arc<Acceptor>> {
        let listener = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
        if address.is_ipv6() {
            listener.set_only_v6(false)?;
        }
        listener.set_reuse_address(true)?;
        listener.bind(&address.into())?;
        listener.listen(64)?;
        let accepting = listener.try_clone()?;
        let acceptor = Arc::new(Acceptor { listener, sessions: Mutex::default() });
        let weak = Arc::downgrade(&acceptor);
        std::thread::spawn(move || {
            while let Ok((stream, from)) = accepting.accept() {
                let Some(acceptor) = weak.upgrade() else { return };
                let Some(from) = from.as_socket().map(|a| a.ip().to_canonical()) else { continue };
                let sessions = acceptor.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                // Nobody waits for this address: the connection is closed as it is dropped.
                if let Some(session) = sessions.get(&from) {
                    let _ = session.send(stream.into());
                }
            }
        });
        Ok(acceptor)
    }

    /// The connector of a passive session with `peer`: it waits (a while) for the peer to
    /// connect. Sessions signed with TCP-MD5 have their key set on the listener for `peer`.
    pub fn connector(self: &Arc<Self>, peer: IpAddr, key_file: Option<String>) -> std::io::Result<Connector> {
        if let Some(file) = &key_file {
            let key = read_key(file)?;
            set_md5_key(&self.listener, peer, &key)?;
        }
        let (tx, rx): (Sender<TcpStream>, Receiver<TcpStream>) = std::sync::mpsc::channel();
        self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(peer, tx);
        let rx = Mutex::new(rx);
        Ok(Arc::new(move || {
            let rx = rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            rx.recv_timeout(ACCEPT_WAIT).map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the peer has not connected yet"))
        }))
    }
}

/// Longest TCP-MD5 key Linux takes (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_KEY: usize = 80;

/// Connect to `address` within `timeout`, with `ttl` and an MD5 `key` when given.
pub fn connect(address: SocketAddr, ttl: Option<u32>, key: Option<&[u8]>, timeout: Duration) -> std::io::Result<std::net::TcpStream> {
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(key) = key {
        set_md5_key(&socket, address.ip(), key)?;
    }
    if let Some(ttl) = ttl {
        match address {
            SocketAddr::V4(_) => socket.set_ttl_v4(ttl)?,
            SocketAddr::V6(_) => socket.set_unicast_hops_v6(ttl)?,
        }
    }
    socket.set_tcp_nodelay(true)?;
    socket.connect_timeout(&address.into(), timeout)?;
    Ok(socket.into())
}

/// Read a peer's key from its file (one line; a trailing newline is not part of it).
pub fn read_key(path: &str) -> std::io::Result<Vec<u8>> {
    let text = std::fs::read(path).map_err(|e| std::io::Error::new(e.kind(), format!("reading the TCP-MD5 key {path}: {e}")))?;
    let key = text.strip_suffix(b"\n").unwrap_or(&text);
    let key = key.strip_suffix(b"\r").unwrap_or(key);
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(std::io::Error::other(format!("the TCP-MD5 key in {path} has {} bytes (1 to {MAX_KEY})", key.len())));
    }
    Ok(key.to_vec())
}

/// `struct tcp_md5sig` (linux/tcp.h): the peer's address as a `sockaddr_storage`, flags,
/// prefix length, key length, interface index, then the key.
fn md5sig(peer: IpAddr, key: &[u8]) -> [u8; 216] {
    let mut buf = [0u8; 216];
    match peer {
        IpAddr::V4(v4) => {
            buf[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            buf[4..8].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            buf[0..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            buf[8..24].copy_from_slice(&v6.octets());
        }
    }
    buf[130..132].copy_from_slice(&(key.len() as u16).to_ne_bytes());
    buf[136..136 + key.len()].copy_from_slice(key);
    buf
}

#[allow(unsafe_code)]
fn set_md5_key(socket: &Socket, peer: IpAddr, key: &[u8]) -> std::io::Result<()> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(std::io::Error::other(format!("a TCP-MD5 key has 1 to {MAX_KEY} bytes, not {}", key.len())));
    }
    let sig = md5sig(peer, key);
    // SAFETY: `sig` is a fully initialised buffer of exactly the size of `struct tcp_md5sig`,
    // alive for the call; the kernel copies it and keeps no pointer. The descriptor is ours.
    let done = unsafe {
        libc::setsockopt(socket.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_MD5SIG, sig.as_ptr().cast(), sig.len() as libc::socklen_t)
    };
    if done != 0 {
        return Err(std::io::Error::other(format!("setting the TCP-MD5 key: {}", std::io::Error::last_os_error())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_md5sig_layout_is_the_kernels() {
        let sig = md5sig("10.0.0.1".parse().expect("ip"), b"s3cret");
        assert_eq!(&sig[0..2], &(libc::AF_INET as u16).to_ne_bytes());
        assert_eq!(&sig[4..8], &[10, 0, 0, 1]);
        assert_eq!(u16::from_ne_bytes([sig[130], sig[131]]), 6);
        assert_eq!(&sig[136..142], b"s3cret");
        // std's sockaddr_storage is the kernel's: 128 bytes, so the fields after it line up.
        assert_eq!(std::mem::size_of::<libc::sockaddr_storage>(), 128);
    }
}

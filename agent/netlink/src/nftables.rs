//! Set elements over nf_tables netlink: one batch — one transaction, all of it or nothing — of
//! element deletions and additions, sent on a socket of the calling thread's network namespace
//! and acknowledged message by message. This is what `nft -f` sends for `add element` and
//! `delete element`, without starting a process and without nft reading the table's
//! declarations first: the caller encodes keys (see [`Element`]) for sets it declared itself.
//!
//! The kernel runs the transaction inside `send`; its acknowledgements come once it has
//! committed or aborted, so a batch whose every message is acknowledged without an error is
//! committed.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, getsockname, recv, send, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

use crate::monitor::{align, framed};

/// `NFPROTO_INET`: the family of `table inet …`.
pub const FAMILY_INET: u8 = 1;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NLMSG_ERROR: u16 = 2;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

/// An attribute's length is 16 bits: a message's element list stays below it.
const ELEMENTS_PER_MESSAGE_BYTES: usize = 60_000;

/// How long the kernel may take to answer a batch (it answers within the `send` in practice).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a verdict map gives a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    /// The kernel's verdict code (`NF_DROP`, `NF_ACCEPT`, `NFT_RETURN`, `NFT_JUMP`, `NFT_GOTO`).
    fn code(&self) -> i32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Jump(_) => -3,
            Verdict::Goto(_) => -4,
            Verdict::Return => -5,
        }
    }
}

/// One element as the kernel stores it: the key (each field of a concatenation in its own
/// 32-bit-aligned slot, zero-padded), the end of its range (concatenated interval sets), and a
/// map's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub key: Vec<u8>,
    pub key_end: Option<Vec<u8>>,
    pub verdict: Option<Verdict>,
}

/// Why a batch did not commit.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The kernel refused a message; the whole transaction was aborted.
    #[error("the kernel refused {what}: {errno}")]
    Refused { what: String, errno: Errno },
    #[error("nf_tables netlink: {0}")]
    Io(#[from] std::io::Error),
    #[error("nf_tables netlink: {0}")]
    Answer(String),
}

/// One transaction being written: element deletions and additions in the order given.
#[derive(Debug)]
pub struct Batch {
    family: u8,
    table: String,
    bytes: Vec<u8>,
    /// Each message that asks for an acknowledgement: its sequence number and what it does.
    acked: Vec<(u32, String)>,
    seq: u32,
}

impl Batch {
    pub fn new(family: u8, table: &str) -> Batch {
        let mut batch = Batch { family, table: table.to_string(), bytes: Vec::new(), acked: Vec::new(), seq: 0 };
        let begin = batch.header(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
        batch.close(begin);
        batch
    }

    /// Delete `elements` from `set` (each must exist, or the transaction aborts).
    pub fn delete(&mut self, set: &str, elements: &[Element]) {
        self.elements(NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK, set, elements, "deleting elements of");
    }

    /// Add `elements` to `set` (one already there is left as it is).
    pub fn add(&mut self, set: &str, elements: &[Element]) {
        self.elements(NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, set, elements, "adding elements to");
    }

    fn elements(&mut self, kind: u16, flags: u16, set: &str, elements: &[Element], verb: &str) {
        let mut rest = elements;
        while !rest.is_empty() {
            let start = self.header(NFNL_SUBSYS_NFTABLES << 8 | kind, flags, self.family, 0);
            let table = self.table.clone();
            self.string(NFTA_SET_ELEM_LIST_TABLE, &table);
            self.string(NFTA_SET_ELEM_LIST_SET, set);
            let list = self.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
            let mut taken = 0;
            for e in rest {
                if self.bytes.len() - list > ELEMENTS_PER_MESSAGE_BYTES && taken > 0 {
                    break;
                }
                self.element(e);
                taken += 1;
            }
            self.end_nest(list);
            self.close(start);
            self.acked.push((self.seq, format!("{verb} set {set}")));
            rest = &rest[taken..];
        }
    }

    fn element(&mut self, e: &Element) {
        let item = self.nest(NFTA_LIST_ELEM);
        self.data(NFTA_SET_ELEM_KEY, &e.key);
        if let Some(end) = &e.key_end {
            self.data(NFTA_SET_ELEM_KEY_END, end);
        }
        if let Some(v) = &e.verdict {
            let data = self.nest(NFTA_SET_ELEM_DATA);
            let verdict = self.nest(NFTA_DATA_VERDICT);
            self.attr(NFTA_VERDICT_CODE, &v.code().to_be_bytes());
            if let Verdict::Jump(chain) | Verdict::Goto(chain) = v {
                self.string(NFTA_VERDICT_CHAIN, chain);
            }
            self.end_nest(verdict);
            self.end_nest(data);
        }
        self.end_nest(item);
    }

    /// A value nested as `NFTA_DATA_VALUE` in attribute `kind`.
    fn data(&mut self, kind: u16, value: &[u8]) {
        let nest = self.nest(kind);
        self.attr(NFTA_DATA_VALUE, value);
        self.end_nest(nest);
    }

    /// Start a message: its header and `nfgenmsg`; returns where it starts.
    fn header(&mut self, kind: u16, flags: u16, family: u8, res_id: u16) -> usize {
        self.seq += 1;
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&0u32.to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(&flags.to_ne_bytes());
        self.bytes.extend_from_slice(&self.seq.to_ne_bytes());
        self.bytes.extend_from_slice(&0u32.to_ne_bytes());
        self.bytes.extend_from_slice(&[family, 0]);
        self.bytes.extend_from_slice(&res_id.to_be_bytes());
        start
    }

    fn close(&mut self, start: usize) {
        let len = (self.bytes.len() - start) as u32;
        self.bytes[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn attr(&mut self, kind: u16, value: &[u8]) {
        self.bytes.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(value);
        self.bytes.resize(align(self.bytes.len()), 0);
    }

    fn string(&mut self, kind: u16, value: &str) {
        let mut text = value.as_bytes().to_vec();
        text.push(0);
        self.attr(kind, &text);
    }

    fn nest(&mut self, kind: u16) -> usize {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(&0u16.to_ne_bytes());
        self.bytes.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        start
    }

    fn end_nest(&mut self, start: usize) {
        let len = (self.bytes.len() - start) as u16;
        self.bytes[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// The whole batch, closed.
    fn finish(mut self) -> (Vec<u8>, Vec<(u32, String)>) {
        let end = self.header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, NFNL_SUBSYS_NFTABLES);
        self.close(end);
        (self.bytes, self.acked)
    }
}

/// A netlink socket for nf_tables, in the network namespace of the thread that opened it.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    /// The port the kernel bound it to: the sender named in the notifications of its commits.
    pub port: u32,
}

impl Socket {
    pub fn open() -> std::io::Result<Socket> {
        let fd = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkNetFilter)?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        let port = getsockname::<NetlinkAddr>(fd.as_raw_fd())?.pid();
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(ANSWER_TIMEOUT.as_secs() as _, 0))?;
        Ok(Socket { fd, port })
    }

    /// Send `batch` and wait for every acknowledgement: `Ok` once the transaction committed.
    /// An error means nothing of it was applied — or, on a socket failure after sending, that
    /// the outcome is unknown: the caller replaces what it owns either way.
    pub fn commit(&self, batch: Batch) -> Result<(), BatchError> {
        let (bytes, acked) = batch.finish();
        if acked.is_empty() {
            return Ok(());
        }
        // The whole batch travels in one message buffer (the kernel reads a batch from one).
        let room = bytes.len() + 4096;
        if room > 200_000 && setsockopt(&self.fd, sockopt::SndBufForce, &room).is_err() {
            setsockopt(&self.fd, sockopt::SndBuf, &room).map_err(std::io::Error::from)?;
        }
        let sent = send(self.fd.as_raw_fd(), &bytes, MsgFlags::empty()).map_err(std::io::Error::from)?;
        if sent != bytes.len() {
            return Err(BatchError::Answer(format!("sent {sent} of {} octets", bytes.len())));
        }
        let mut waiting = acked;
        let mut refused = None;
        let mut buffer = vec![0u8; 64 * 1024];
        while !waiting.is_empty() {
            let n = match recv(self.fd.as_raw_fd(), &mut buffer, MsgFlags::empty()) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(BatchError::Io(e.into())),
            };
            for (kind, seq, payload) in replies(&buffer[..n]) {
                if kind != NLMSG_ERROR || payload.len() < 4 {
                    continue;
                }
                let Some(at) = waiting.iter().position(|(s, _)| *s == seq) else { continue };
                let (_, what) = waiting.swap_remove(at);
                let code = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
                if code != 0 && refused.is_none() {
                    refused = Some(BatchError::Refused { what, errno: Errno::from_raw(-code) });
                }
            }
        }
        refused.map_or(Ok(()), Err)
    }
}

/// The messages of a datagram: (type, sequence number, payload after the header).
fn replies(data: &[u8]) -> Vec<(u16, u32, &[u8])> {
    framed(data).into_iter().map(|m| (m.kind, m.seq, m.payload)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (type, flags, seq) of each message, and each message's bytes.
    fn split(bytes: &[u8]) -> Vec<(u16, u16, &[u8])> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[..4].try_into().expect("a length")) as usize;
            out.push((u16::from_ne_bytes([rest[4], rest[5]]), u16::from_ne_bytes([rest[6], rest[7]]), &rest[..len]));
            rest = &rest[len..];
        }
        out
    }

    #[test]
    fn a_batch_is_framed_and_its_element_lists_stay_within_an_attribute() {
        let mut batch = Batch::new(FAMILY_INET, "tessera");
        let exact = |i: u32| Element { key: [i.to_be_bytes(), [6, 0, 0, 0], [0x15, 0x38, 0, 0]].concat(), key_end: None, verdict: None };
        batch.delete("s", &[exact(1)]);
        // 5,000 elements of 24 octets and more: split over messages.
        let many: Vec<Element> = (0..5_000).map(exact).collect();
        batch.add("s", &many);
        batch.add("m", &[Element { key: vec![10, 0, 0, 1], key_end: None, verdict: Some(Verdict::Jump("in4_g".into())) }]);
        let (bytes, acked) = batch.finish();
        let messages = acked.len();
        let framed = split(&bytes);
        assert_eq!(framed.first().map(|m| m.0), Some(NFNL_MSG_BATCH_BEGIN));
        assert_eq!(framed.last().map(|m| m.0), Some(NFNL_MSG_BATCH_END));
        assert_eq!(framed.len(), messages + 2);
        assert!(messages >= 4, "5,000 elements need more than one message ({messages})");
        assert_eq!(framed[1].0, NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_DELSETELEM);
        assert!(framed[2..framed.len() - 1].iter().all(|m| m.0 == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM));
        assert!(framed[2..].iter().all(|m| m.2.len() < 65_536));
        // The map's element carries its verdict code (NFT_JUMP) and chain.
        let map = framed[framed.len() - 2].2;
        let jump = (-3i32).to_be_bytes();
        assert!(map.windows(4).any(|w| w == jump) && map.windows(6).any(|w| w == b"in4_g\0"));
    }

    #[test]
    fn answers_are_read_by_sequence_number() {
        let mut data = Vec::new();
        for (seq, code) in [(2u32, 0i32), (3, -2)] {
            data.extend_from_slice(&36u32.to_ne_bytes());
            data.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            data.extend_from_slice(&0u16.to_ne_bytes());
            data.extend_from_slice(&seq.to_ne_bytes());
            data.extend_from_slice(&0u32.to_ne_bytes());
            data.extend_from_slice(&code.to_ne_bytes());
            data.extend_from_slice(&[0; 16]);
        }
        let got: Vec<(u16, u32, i32)> =
            replies(&data).into_iter().map(|(k, s, p)| (k, s, i32::from_ne_bytes(p[..4].try_into().expect("a code")))).collect();
        assert_eq!(got, vec![(NLMSG_ERROR, 2, 0), (NLMSG_ERROR, 3, -2)]);
    }
}

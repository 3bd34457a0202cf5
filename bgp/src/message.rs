//! BGP messages: the 19-byte header, OPEN with its capabilities, UPDATE, NOTIFICATION,
//! KEEPALIVE and ROUTE-REFRESH; encoding to bytes and decoding from a stream buffer.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::attributes::{self, PathAttribute};
use crate::error_code::*;

const MARKER: [u8; 16] = [0xff; 16];
const HEADER: usize = 19;
const MAX_MESSAGE: usize = 4096;

/// What the session negotiated that changes how messages read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Session {
    /// Both ends sent the 4-octet AS capability: AS_PATH carries 4-byte AS numbers.
    pub four_octet_as: bool,
    /// IPv4 unicast NLRI carry a 4-octet path identifier (ADD-PATH, RFC 7911), in the direction
    /// this session value codes (a speaker may send paths without receiving them).
    pub add_path_v4: bool,
    /// The same for IPv6 unicast (in MP_REACH_NLRI / MP_UNREACH_NLRI).
    pub add_path_v6: bool,
}

impl Session {
    /// Whether NLRI of `afi` carry path identifiers.
    pub fn add_path(&self, afi: u16) -> bool {
        match afi {
            crate::AFI_IPV4 => self.add_path_v4,
            crate::AFI_IPV6 => self.add_path_v6,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The speaker's AS (4-octet; the 2-octet field carries `AS_TRANS` when it does not fit).
    pub asn: u32,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
    /// How many capabilities each optional parameter carried, as received (FRR sends one per
    /// parameter, BIRD and GoBGP all in one); encoding repeats it. Empty: all in one.
    pub parameters: Vec<usize>,
}

impl Open {
    /// The AS the peer says it is: its 4-octet capability when it sent one, else the 2-octet field.
    pub fn four_octet_as(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAs(asn) => Some(*asn),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    Multiprotocol {
        afi: u16,
        safi: u8,
    },
    RouteRefresh,
    FourOctetAs(u32),
    /// RFC 4724: restart flags (the top 4 bits: `RESTARTING`, and RFC 8538's `NOTIFICATION`),
    /// restart time (seconds, 12 bits), and per family whether its forwarding state was preserved.
    /// RFC 7911: per family, whether the speaker can send (2), receive (1) or both (3) paths.
    AddPath(Vec<(u16, u8, u8)>),
    GracefulRestart {
        flags: u8,
        time: u16,
        families: Vec<(u16, u8, bool)>,
    },
    Unknown {
        code: u8,
        value: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    pub withdrawn: Vec<Ipv4Net>,
    pub attributes: Vec<PathAttribute>,
    pub nlri: Vec<Ipv4Net>,
    /// The path identifier of every prefix in this UPDATE where the session carries them
    /// (ADD-PATH, RFC 7911): one UPDATE speaks for one path. `None` reads as 0.
    pub path_id: Option<u32>,
    /// Type codes of attributes that came with the extended-length flag though short enough
    /// without it (BIRD and FRR send MP_REACH_NLRI so); encoding repeats the choice, so a
    /// decoded message encodes back to its very bytes. Longer values always get the flag.
    pub extended_length: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi: u16,
    pub safi: u8,
}

/// A message that cannot be read, and the NOTIFICATION that says why (RFC 4271 §6).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (NOTIFICATION {}/{})", notification.code, notification.subcode)]
pub struct DecodeError {
    pub notification: Notification,
    pub reason: String,
}

impl DecodeError {
    pub(crate) fn new(code: u8, subcode: u8, data: Vec<u8>, reason: impl Into<String>) -> DecodeError {
        DecodeError { notification: Notification { code, subcode, data }, reason: reason.into() }
    }
}

/// The message as bytes, header included.
pub fn encode(message: &Message, session: &Session) -> Vec<u8> {
    let (kind, body) = match message {
        Message::Open(o) => (1, encode_open(o)),
        Message::Update(u) => (2, encode_update(u, session)),
        Message::Notification(n) => (3, [vec![n.code, n.subcode], n.data.clone()].concat()),
        Message::Keepalive => (4, Vec::new()),
        Message::RouteRefresh(r) => (5, [r.afi.to_be_bytes().to_vec(), vec![0, r.safi]].concat()),
    };
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&u16::try_from(HEADER + body.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&body);
    out
}

/// The first message of `buf` and how many bytes it took; `None` while `buf` holds less than a
/// whole message.
pub fn decode(buf: &[u8], session: &Session) -> Result<Option<(Message, usize)>, DecodeError> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    if buf[..16] != MARKER {
        return Err(DecodeError::new(MESSAGE_HEADER, CONNECTION_NOT_SYNCHRONIZED, Vec::new(), "the header's marker is not all ones"));
    }
    let length = usize::from(u16::from_be_bytes([buf[16], buf[17]]));
    let kind = buf[18];
    let bad_length = || {
        DecodeError::new(MESSAGE_HEADER, BAD_MESSAGE_LENGTH, (length as u16).to_be_bytes().to_vec(), format!("bad message length {length}"))
    };
    let minimum = match kind {
        1 => HEADER + 10,
        2 => HEADER + 4,
        3 => HEADER + 2,
        4 => HEADER,
        5 => HEADER + 4,
        other => return Err(DecodeError::new(MESSAGE_HEADER, BAD_MESSAGE_TYPE, vec![other], format!("unknown message type {other}"))),
    };
    if !(minimum..=MAX_MESSAGE).contains(&length) || (kind == 4 && length != HEADER) || (kind == 5 && length != HEADER + 4) {
        return Err(bad_length());
    }
    if buf.len() < length {
        return Ok(None);
    }
    let body = &buf[HEADER..length];
    let message = match kind {
        1 => Message::Open(decode_open(body)?),
        2 => Message::Update(decode_update(body, session)?),
        3 => Message::Notification(Notification { code: body[0], subcode: body[1], data: body[2..].to_vec() }),
        4 => Message::Keepalive,
        _ => Message::RouteRefresh(RouteRefresh { afi: u16::from_be_bytes([body[0], body[1]]), safi: body[3] }),
    };
    Ok(Some((message, length)))
}

fn encode_open(o: &Open) -> Vec<u8> {
    let mut out = vec![4];
    let short = u16::try_from(o.asn).unwrap_or(crate::AS_TRANS);
    out.extend_from_slice(&short.to_be_bytes());
    out.extend_from_slice(&o.hold_time.to_be_bytes());
    out.extend_from_slice(&o.bgp_id.octets());
    let mut encoded: Vec<Vec<u8>> = Vec::new();
    for c in &o.capabilities {
        let (code, value) = match c {
            Capability::Multiprotocol { afi, safi } => (1, [afi.to_be_bytes().to_vec(), vec![0, *safi]].concat()),
            Capability::RouteRefresh => (2, Vec::new()),
            Capability::FourOctetAs(asn) => (65, asn.to_be_bytes().to_vec()),
            Capability::AddPath(families) => {
                (69, families.iter().flat_map(|(afi, safi, mode)| [afi.to_be_bytes().as_slice(), &[*safi, *mode]].concat()).collect())
            }
            Capability::GracefulRestart { flags, time, families } => {
                let mut v = ((u16::from(flags & 0x0f) << 12) | (time & 0x0fff)).to_be_bytes().to_vec();
                for (afi, safi, preserved) in families {
                    v.extend_from_slice(&afi.to_be_bytes());
                    v.extend_from_slice(&[*safi, if *preserved { 0x80 } else { 0 }]);
                }
                (64, v)
            }
            Capability::Unknown { code, value } => (*code, value.clone()),
        };
        encoded.push([vec![code, value.len() as u8], value].concat());
    }
    // Capability parameters (type 2): grouped as `parameters` says, the rest in one.
    let mut params = Vec::new();
    let mut rest = encoded.as_slice();
    for size in o.parameters.iter().copied().chain(std::iter::once(usize::MAX)) {
        if rest.is_empty() {
            break;
        }
        let (group, after) = rest.split_at(size.min(rest.len()));
        let body: Vec<u8> = group.concat();
        params.push(2);
        params.push(body.len() as u8);
        params.extend_from_slice(&body);
        rest = after;
    }
    out.push(params.len() as u8);
    out.extend_from_slice(&params);
    out
}

fn decode_open(body: &[u8]) -> Result<Open, DecodeError> {
    if body[0] != 4 {
        return Err(DecodeError::new(
            OPEN_MESSAGE,
            UNSUPPORTED_VERSION,
            4u16.to_be_bytes().to_vec(),
            format!("BGP version {} (4 is supported)", body[0]),
        ));
    }
    let asn = u32::from(u16::from_be_bytes([body[1], body[2]]));
    let hold_time = u16::from_be_bytes([body[3], body[4]]);
    if hold_time == 1 || hold_time == 2 {
        return Err(DecodeError::new(
            OPEN_MESSAGE,
            UNACCEPTABLE_HOLD_TIME,
            Vec::new(),
            format!("hold time {hold_time} s (0 or at least 3)"),
        ));
    }
    let bgp_id = Ipv4Addr::new(body[5], body[6], body[7], body[8]);
    if bgp_id.is_unspecified() {
        return Err(DecodeError::new(OPEN_MESSAGE, BAD_BGP_IDENTIFIER, Vec::new(), "BGP identifier 0.0.0.0"));
    }
    let params_len = usize::from(body[9]);
    let params = body.get(10..10 + params_len).filter(|_| 10 + params_len == body.len()).ok_or_else(|| {
        DecodeError::new(MESSAGE_HEADER, BAD_MESSAGE_LENGTH, Vec::new(), "optional parameters do not fill the OPEN message")
    })?;
    let mut capabilities = Vec::new();
    let mut parameters = Vec::new();
    let mut i = 0;
    while i < params.len() {
        let (kind, len) = (params[i], usize::from(*params.get(i + 1).unwrap_or(&0)));
        let value = params.get(i + 2..i + 2 + len).ok_or_else(|| malformed_open("an optional parameter runs past the message"))?;
        if kind != 2 {
            return Err(DecodeError::new(
                OPEN_MESSAGE,
                UNSUPPORTED_OPTIONAL_PARAMETER,
                Vec::new(),
                format!("optional parameter type {kind}"),
            ));
        }
        let these = decode_capabilities(value)?;
        parameters.push(these.len());
        capabilities.extend(these);
        i += 2 + len;
    }
    // One parameter holding everything is the default layout: nothing to remember.
    if parameters.len() == 1 {
        parameters.clear();
    }
    let open = Open { asn, hold_time, bgp_id, capabilities, parameters };
    let asn = open.four_octet_as().unwrap_or(asn);
    Ok(Open { asn, ..open })
}

fn malformed_open(reason: &str) -> DecodeError {
    DecodeError::new(OPEN_MESSAGE, 0, Vec::new(), reason)
}

fn decode_capabilities(mut value: &[u8]) -> Result<Vec<Capability>, DecodeError> {
    let mut out = Vec::new();
    while !value.is_empty() {
        let code = value[0];
        let len = usize::from(*value.get(1).ok_or_else(|| malformed_open("a capability lacks its length"))?);
        let v = value.get(2..2 + len).ok_or_else(|| malformed_open("a capability runs past its parameter"))?;
        out.push(match (code, len) {
            (1, 4) => Capability::Multiprotocol { afi: u16::from_be_bytes([v[0], v[1]]), safi: v[3] },
            (2, 0) => Capability::RouteRefresh,
            (65, 4) => Capability::FourOctetAs(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
            (64, n) if n >= 2 && (n - 2) % 4 == 0 => {
                let head = u16::from_be_bytes([v[0], v[1]]);
                let families = v[2..].chunks(4).map(|f| (u16::from_be_bytes([f[0], f[1]]), f[2], f[3] & 0x80 != 0)).collect();
                Capability::GracefulRestart { flags: (head >> 12) as u8, time: head & 0x0fff, families }
            }
            (69, n) if n % 4 == 0 => Capability::AddPath(v.chunks(4).map(|f| (u16::from_be_bytes([f[0], f[1]]), f[2], f[3])).collect()),
            (1 | 2 | 65 | 64 | 69, _) => return Err(malformed_open(&format!("capability {code} has length {len}"))),
            _ => Capability::Unknown { code, value: v.to_vec() },
        });
        value = &value[2 + len..];
    }
    Ok(out)
}

fn encode_update(u: &Update, session: &Session) -> Vec<u8> {
    let mut withdrawn = Vec::new();
    let v4_id = session.add_path_v4.then(|| u.path_id.unwrap_or(0));
    for p in &u.withdrawn {
        encode_prefix(&mut withdrawn, &IpNet::V4(*p), v4_id);
    }
    let mut attrs = Vec::new();
    for a in &u.attributes {
        attributes::encode(&mut attrs, a, session, u.extended_length.contains(&a.code()), u.path_id.unwrap_or(0));
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    out.extend_from_slice(&withdrawn);
    out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    out.extend_from_slice(&attrs);
    for p in &u.nlri {
        encode_prefix(&mut out, &IpNet::V4(*p), v4_id);
    }
    out
}

fn decode_update(body: &[u8], session: &Session) -> Result<Update, DecodeError> {
    let malformed = |reason: &str| DecodeError::new(UPDATE_MESSAGE, MALFORMED_ATTRIBUTE_LIST, Vec::new(), reason);
    let withdrawn_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let withdrawn_bytes = body.get(2..2 + withdrawn_len).ok_or_else(|| malformed("withdrawn routes run past the message"))?;
    let rest = &body[2 + withdrawn_len..];
    let attrs_len = usize::from(u16::from_be_bytes([
        *rest.first().ok_or_else(|| malformed("no attribute length"))?,
        *rest.get(1).ok_or_else(|| malformed("no attribute length"))?,
    ]));
    let attr_bytes = rest.get(2..2 + attrs_len).ok_or_else(|| malformed("path attributes run past the message"))?;
    let nlri_bytes = &rest[2 + attrs_len..];
    let (withdrawn, withdrawn_id) = decode_prefixes(withdrawn_bytes, false, session.add_path_v4)?;
    let (nlri, nlri_id) = decode_prefixes(nlri_bytes, false, session.add_path_v4)?;
    let withdrawn: Vec<Ipv4Net> = withdrawn.into_iter().filter_map(v4).collect();
    let nlri: Vec<Ipv4Net> = nlri.into_iter().filter_map(v4).collect();
    let attributes::Decoded { attributes, extended_length, path_id: mp_id } = attributes::decode_all(attr_bytes, session)?;
    let ids: Vec<u32> = [withdrawn_id, nlri_id, mp_id].into_iter().flatten().collect();
    if ids.windows(2).any(|w| w[0] != w[1]) {
        return Err(malformed("one UPDATE carries several path identifiers"));
    }
    let path_id = ids.first().copied();
    let has = |code: u8| attributes.iter().any(|a| a.code() == code);
    let reach = has(14);
    if !nlri.is_empty() || reach {
        for code in [1u8, 2] {
            if !has(code) {
                return Err(DecodeError::new(
                    UPDATE_MESSAGE,
                    MISSING_WELL_KNOWN_ATTRIBUTE,
                    vec![code],
                    format!("well-known attribute {code} is missing"),
                ));
            }
        }
    }
    if !nlri.is_empty() && !has(3) {
        return Err(DecodeError::new(UPDATE_MESSAGE, MISSING_WELL_KNOWN_ATTRIBUTE, vec![3], "NEXT_HOP is missing for IPv4 NLRI"));
    }
    Ok(Update { withdrawn, attributes, nlri, path_id, extended_length })
}

fn v4(net: IpNet) -> Option<Ipv4Net> {
    match net {
        IpNet::V4(n) => Some(n),
        IpNet::V6(_) => None,
    }
}

/// A prefix as NLRI: its length in bits, then only the bytes that length covers.
/// One prefix in NLRI encoding, after its path identifier when the session carries them.
pub(crate) fn encode_prefix(out: &mut Vec<u8>, net: &IpNet, path_id: Option<u32>) {
    if let Some(id) = path_id {
        out.extend_from_slice(&id.to_be_bytes());
    }
    let len = net.prefix_len();
    out.push(len);
    let bytes = usize::from(len).div_ceil(8);
    match net.trunc() {
        IpNet::V4(n) => out.extend_from_slice(&n.addr().octets()[..bytes]),
        IpNet::V6(n) => out.extend_from_slice(&n.addr().octets()[..bytes]),
    }
}

/// NLRI of one family (`v6`), each after a path identifier when `add_path` (the last one seen
/// is returned; an UPDATE of ours speaks for one path); bits past each prefix's length are
/// ignored, as RFC 4271 says.
pub(crate) fn decode_prefixes(mut bytes: &[u8], v6: bool, add_path: bool) -> Result<(Vec<IpNet>, Option<u32>), DecodeError> {
    let invalid = |reason: String| DecodeError::new(UPDATE_MESSAGE, INVALID_NETWORK_FIELD, Vec::new(), reason);
    let mut out = Vec::new();
    let mut path_id = None;
    loop {
        if add_path && !bytes.is_empty() {
            let id = bytes.get(..4).ok_or_else(|| invalid("a path identifier runs past its field".into()))?;
            let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
            if path_id.is_some_and(|p| p != id) {
                return Err(invalid("one UPDATE carries several path identifiers".into()));
            }
            path_id = Some(id);
            bytes = &bytes[4..];
        }
        let Some(&len) = bytes.first() else { break };
        let max = if v6 { 128 } else { 32 };
        if len > max {
            return Err(invalid(format!("prefix length {len} (at most {max})")));
        }
        let n = usize::from(len).div_ceil(8);
        let addr = bytes.get(1..1 + n).ok_or_else(|| invalid(format!("a /{len} prefix runs past its field")))?;
        let net = if v6 {
            let mut octets = [0u8; 16];
            octets[..n].copy_from_slice(addr);
            Ipv6Net::new(octets.into(), len).map(|p| IpNet::V6(p.trunc()))
        } else {
            let mut octets = [0u8; 4];
            octets[..n].copy_from_slice(addr);
            Ipv4Net::new(octets.into(), len).map(|p| IpNet::V4(p.trunc()))
        };
        out.push(net.map_err(|e| invalid(e.to_string()))?);
        bytes = &bytes[1 + n..];
    }
    Ok((out, path_id))
}

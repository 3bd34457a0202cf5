//! Path attributes: flags, type and length, then the value of each kind this speaker uses;
//! every other kind is kept as bytes (and passed on when transitive).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::error_code::*;
use crate::message::{DecodeError, Session, decode_prefixes, encode_prefix};

const OPTIONAL: u8 = 0x80;
const TRANSITIVE: u8 = 0x40;
const PARTIAL: u8 = 0x20;
const EXTENDED: u8 = 0x10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Igp,
    Egp,
    Incomplete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsSegment {
    Set(Vec<u32>),
    Sequence(Vec<u32>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathAttribute {
    Origin(Origin),
    AsPath(Vec<AsSegment>),
    NextHop(Ipv4Addr),
    Med(u32),
    LocalPref(u32),
    Communities(Vec<u32>),
    /// (global administrator, local data 1, local data 2).
    LargeCommunities(Vec<(u32, u32, u32)>),
    /// IPv6 unicast reachability: next hops (global, then link-local if any) and prefixes.
    MpReach {
        afi: u16,
        safi: u8,
        next_hops: Vec<IpAddr>,
        nlri: Vec<IpNet>,
    },
    MpUnreach {
        afi: u16,
        safi: u8,
        withdrawn: Vec<IpNet>,
    },
    Unknown {
        flags: u8,
        code: u8,
        value: Vec<u8>,
    },
}

impl PathAttribute {
    pub fn code(&self) -> u8 {
        match self {
            PathAttribute::Origin(_) => 1,
            PathAttribute::AsPath(_) => 2,
            PathAttribute::NextHop(_) => 3,
            PathAttribute::Med(_) => 4,
            PathAttribute::LocalPref(_) => 5,
            PathAttribute::Communities(_) => 8,
            PathAttribute::MpReach { .. } => 14,
            PathAttribute::MpUnreach { .. } => 15,
            PathAttribute::LargeCommunities(_) => 32,
            PathAttribute::Unknown { code, .. } => *code,
        }
    }

    /// The flags RFC 4271 (and each attribute's RFC) fixes for this kind.
    fn flags(&self) -> u8 {
        match self {
            PathAttribute::Origin(_) | PathAttribute::AsPath(_) | PathAttribute::NextHop(_) | PathAttribute::LocalPref(_) => TRANSITIVE,
            PathAttribute::Med(_) | PathAttribute::MpReach { .. } | PathAttribute::MpUnreach { .. } => OPTIONAL,
            PathAttribute::Communities(_) | PathAttribute::LargeCommunities(_) => OPTIONAL | TRANSITIVE,
            PathAttribute::Unknown { flags, .. } => *flags & !EXTENDED,
        }
    }
}

fn asn_bytes(asn: u32, session: &Session) -> Vec<u8> {
    if session.four_octet_as { asn.to_be_bytes().to_vec() } else { u16::try_from(asn).unwrap_or(crate::AS_TRANS).to_be_bytes().to_vec() }
}

/// One attribute; `extended` sets the extended-length flag even for a short value; `path_id`
/// goes before each MP_REACH/MP_UNREACH prefix where the session carries path identifiers.
pub(crate) fn encode(out: &mut Vec<u8>, a: &PathAttribute, session: &Session, extended: bool, path_id: u32) {
    let value: Vec<u8> = match a {
        PathAttribute::Origin(o) => vec![*o as u8],
        PathAttribute::AsPath(segments) => {
            let mut v = Vec::new();
            for s in segments {
                let (kind, list) = match s {
                    AsSegment::Set(l) => (1, l),
                    AsSegment::Sequence(l) => (2, l),
                };
                // A segment holds at most 255 AS numbers: longer lists continue in the next one.
                for chunk in list.chunks(255) {
                    v.push(kind);
                    v.push(chunk.len() as u8);
                    for asn in chunk {
                        v.extend_from_slice(&asn_bytes(*asn, session));
                    }
                }
            }
            v
        }
        PathAttribute::NextHop(ip) => ip.octets().to_vec(),
        PathAttribute::Med(v) | PathAttribute::LocalPref(v) => v.to_be_bytes().to_vec(),
        PathAttribute::Communities(list) => list.iter().flat_map(|c| c.to_be_bytes()).collect(),
        PathAttribute::LargeCommunities(list) => {
            list.iter().flat_map(|(g, a, b)| [g.to_be_bytes(), a.to_be_bytes(), b.to_be_bytes()].concat()).collect()
        }
        PathAttribute::MpReach { afi, safi, next_hops, nlri } => {
            let mut v = afi.to_be_bytes().to_vec();
            v.push(*safi);
            let hops: Vec<u8> = next_hops
                .iter()
                .flat_map(|h| match h {
                    IpAddr::V4(a) => a.octets().to_vec(),
                    IpAddr::V6(a) => a.octets().to_vec(),
                })
                .collect();
            v.push(hops.len() as u8);
            v.extend_from_slice(&hops);
            v.push(0);
            let id = session.add_path(*afi).then_some(path_id);
            for p in nlri {
                encode_prefix(&mut v, p, id);
            }
            v
        }
        PathAttribute::MpUnreach { afi, safi, withdrawn } => {
            let mut v = afi.to_be_bytes().to_vec();
            v.push(*safi);
            let id = session.add_path(*afi).then_some(path_id);
            for p in withdrawn {
                encode_prefix(&mut v, p, id);
            }
            v
        }
        PathAttribute::Unknown { value, .. } => value.clone(),
    };
    let mut flags = a.flags();
    if value.len() > 255 || extended {
        flags |= EXTENDED;
    }
    out.push(flags);
    out.push(a.code());
    if flags & EXTENDED != 0 {
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        out.push(value.len() as u8);
    }
    out.extend_from_slice(&value);
}

/// An UPDATE's path attribute field, read.
pub(crate) struct Decoded {
    pub attributes: Vec<PathAttribute>,
    pub extended_length: Vec<u8>,
    pub path_id: Option<u32>,
}

/// Every attribute of an UPDATE's path attribute field, the codes of those sent with the
/// extended-length flag though short, and the path identifier of their MP_REACH/MP_UNREACH prefixes (ADD-PATH sessions).
pub(crate) fn decode_all(mut bytes: &[u8], session: &Session) -> Result<Decoded, DecodeError> {
    let malformed = || DecodeError::new(UPDATE_MESSAGE, MALFORMED_ATTRIBUTE_LIST, Vec::new(), "an attribute runs past the attribute field");
    let mut out: Vec<PathAttribute> = Vec::new();
    let mut extended = Vec::new();
    let mut path_id = None;
    while !bytes.is_empty() {
        let (flags, code) = (bytes[0], *bytes.get(1).ok_or_else(malformed)?);
        let (len, header) = if flags & EXTENDED != 0 {
            (usize::from(u16::from_be_bytes([*bytes.get(2).ok_or_else(malformed)?, *bytes.get(3).ok_or_else(malformed)?])), 4)
        } else {
            (usize::from(*bytes.get(2).ok_or_else(malformed)?), 3)
        };
        let whole = bytes.get(..header + len).ok_or_else(malformed)?;
        let value = &whole[header..];
        if out.iter().any(|a| a.code() == code) {
            return Err(DecodeError::new(UPDATE_MESSAGE, MALFORMED_ATTRIBUTE_LIST, Vec::new(), format!("attribute {code} appears twice")));
        }
        out.push(decode_one(flags, code, value, whole, session, &mut path_id)?);
        if header == 4 && len <= 255 {
            extended.push(code);
        }
        bytes = &bytes[header + len..];
    }
    Ok(Decoded { attributes: out, extended_length: extended, path_id })
}

/// One attribute; the path identifier of MP_REACH/MP_UNREACH prefixes goes to `path_id`.
fn decode_one(
    flags: u8,
    code: u8,
    value: &[u8],
    whole: &[u8],
    session: &Session,
    path_id: &mut Option<u32>,
) -> Result<PathAttribute, DecodeError> {
    let length_error =
        || DecodeError::new(UPDATE_MESSAGE, ATTRIBUTE_LENGTH_ERROR, whole.to_vec(), format!("attribute {code} has length {}", value.len()));
    let u32_at = |i: usize| u32::from_be_bytes([value[i], value[i + 1], value[i + 2], value[i + 3]]);
    let known = |expected: u8| -> Result<(), DecodeError> {
        // The optional and transitive bits are fixed for known kinds; partial is the sender's.
        if flags & (OPTIONAL | TRANSITIVE) != expected {
            return Err(DecodeError::new(
                UPDATE_MESSAGE,
                ATTRIBUTE_FLAGS_ERROR,
                whole.to_vec(),
                format!("attribute {code} has flags {flags:#04x}"),
            ));
        }
        Ok(())
    };
    Ok(match code {
        1 => {
            known(TRANSITIVE)?;
            if value.len() != 1 {
                return Err(length_error());
            }
            PathAttribute::Origin(match value[0] {
                0 => Origin::Igp,
                1 => Origin::Egp,
                2 => Origin::Incomplete,
                other => return Err(DecodeError::new(UPDATE_MESSAGE, INVALID_ORIGIN, whole.to_vec(), format!("ORIGIN {other}"))),
            })
        }
        2 => {
            known(TRANSITIVE)?;
            PathAttribute::AsPath(decode_as_path(value, session)?)
        }
        3 => {
            known(TRANSITIVE)?;
            if value.len() != 4 {
                return Err(length_error());
            }
            let ip = Ipv4Addr::new(value[0], value[1], value[2], value[3]);
            if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
                return Err(DecodeError::new(UPDATE_MESSAGE, INVALID_NEXT_HOP, whole.to_vec(), format!("NEXT_HOP {ip}")));
            }
            PathAttribute::NextHop(ip)
        }
        4 | 5 => {
            known(if code == 4 { OPTIONAL } else { TRANSITIVE })?;
            if value.len() != 4 {
                return Err(length_error());
            }
            if code == 4 { PathAttribute::Med(u32_at(0)) } else { PathAttribute::LocalPref(u32_at(0)) }
        }
        8 => {
            known(OPTIONAL | TRANSITIVE)?;
            if !value.len().is_multiple_of(4) {
                return Err(length_error());
            }
            PathAttribute::Communities((0..value.len()).step_by(4).map(u32_at).collect())
        }
        32 => {
            known(OPTIONAL | TRANSITIVE)?;
            if !value.len().is_multiple_of(12) {
                return Err(length_error());
            }
            PathAttribute::LargeCommunities((0..value.len()).step_by(12).map(|i| (u32_at(i), u32_at(i + 4), u32_at(i + 8))).collect())
        }
        14 => {
            known(OPTIONAL)?;
            let (reach, id) = decode_mp_reach(value, whole, session)?;
            *path_id = path_id.or(id);
            reach
        }
        15 => {
            known(OPTIONAL)?;
            if value.len() < 3 {
                return Err(length_error());
            }
            let afi = u16::from_be_bytes([value[0], value[1]]);
            let (withdrawn, id) =
                decode_prefixes(&value[3..], afi == crate::AFI_IPV6, session.add_path(afi)).map_err(|e| optional_error(whole, e.reason))?;
            *path_id = path_id.or(id);
            PathAttribute::MpUnreach { afi, safi: value[2], withdrawn }
        }
        6 | 7 => PathAttribute::Unknown { flags, code, value: value.to_vec() },
        _ if flags & OPTIONAL == 0 => {
            return Err(DecodeError::new(UPDATE_MESSAGE, 2, whole.to_vec(), format!("unrecognized well-known attribute {code}")));
        }
        // An unknown optional transitive attribute is passed on marked partial.
        _ => PathAttribute::Unknown { flags: if flags & TRANSITIVE != 0 { flags | PARTIAL } else { flags }, code, value: value.to_vec() },
    })
}

fn optional_error(whole: &[u8], reason: String) -> DecodeError {
    DecodeError::new(UPDATE_MESSAGE, OPTIONAL_ATTRIBUTE_ERROR, whole.to_vec(), reason)
}

fn decode_mp_reach(value: &[u8], whole: &[u8], session: &Session) -> Result<(PathAttribute, Option<u32>), DecodeError> {
    let bad = |reason: &str| optional_error(whole, reason.to_string());
    if value.len() < 5 {
        return Err(bad("MP_REACH_NLRI is too short"));
    }
    let afi = u16::from_be_bytes([value[0], value[1]]);
    let safi = value[2];
    let nh_len = usize::from(value[3]);
    let hops = value.get(4..4 + nh_len).ok_or_else(|| bad("MP_REACH_NLRI next hop runs past the attribute"))?;
    let next_hops: Vec<IpAddr> = match (afi, nh_len) {
        (crate::AFI_IPV6, 16 | 32) => {
            hops.chunks(16).map(|c| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(c).unwrap_or([0; 16])))).collect()
        }
        (crate::AFI_IPV4, 4) => vec![IpAddr::V4(Ipv4Addr::new(hops[0], hops[1], hops[2], hops[3]))],
        _ => return Err(bad(&format!("next hop of length {nh_len} for AFI {afi}"))),
    };
    // One reserved byte, then the NLRI.
    let nlri_bytes = value.get(5 + nh_len..).ok_or_else(|| bad("MP_REACH_NLRI lacks its reserved byte"))?;
    let (nlri, id) =
        decode_prefixes(nlri_bytes, afi == crate::AFI_IPV6, session.add_path(afi)).map_err(|e| optional_error(whole, e.reason))?;
    Ok((PathAttribute::MpReach { afi, safi, next_hops, nlri }, id))
}

fn decode_as_path(mut value: &[u8], session: &Session) -> Result<Vec<AsSegment>, DecodeError> {
    let width = if session.four_octet_as { 4 } else { 2 };
    let malformed = |reason: String| DecodeError::new(UPDATE_MESSAGE, MALFORMED_AS_PATH, Vec::new(), reason);
    let mut out = Vec::new();
    while !value.is_empty() {
        let kind = value[0];
        let count = usize::from(*value.get(1).ok_or_else(|| malformed("an AS_PATH segment lacks its count".into()))?);
        let list = value.get(2..2 + count * width).ok_or_else(|| malformed("an AS_PATH segment runs past the attribute".into()))?;
        let asns: Vec<u32> = list
            .chunks(width)
            .map(|c| if width == 4 { u32::from_be_bytes([c[0], c[1], c[2], c[3]]) } else { u32::from(u16::from_be_bytes([c[0], c[1]])) })
            .collect();
        out.push(match kind {
            1 => AsSegment::Set(asns),
            2 => AsSegment::Sequence(asns),
            other => return Err(malformed(format!("AS_PATH segment type {other}"))),
        });
        value = &value[2 + count * width..];
    }
    Ok(out)
}

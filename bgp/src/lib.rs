//! A sans-IO BGP speaker's codec: every message of RFC 4271 (OPEN, UPDATE, NOTIFICATION,
//! KEEPALIVE) and RFC 2918 (ROUTE-REFRESH) as plain data, encoded and decoded byte for byte.
//! Capabilities: multiprotocol (RFC 4760), route refresh, 4-octet AS numbers (RFC 6793),
//! graceful restart (RFC 4724). Path attributes: ORIGIN, AS_PATH (2- or 4-octet by session),
//! NEXT_HOP, MED, LOCAL_PREF, COMMUNITIES (RFC 1997), LARGE_COMMUNITY (RFC 8092),
//! MP_REACH_NLRI / MP_UNREACH_NLRI for IPv6 unicast.
//!
//! Decoding never panics: malformed input becomes a [`DecodeError`] carrying the NOTIFICATION
//! (code, subcode, data) RFC 4271 §6 says to send. `session` is one peer's state machine (RFC
//! 4271 §8) as events in, actions out. No sockets and no clocks here: a tokio driver sits on top.

mod adj_out;
mod attributes;
mod message;
mod session;

pub use adj_out::{Announcement, Paths, Speaker, end_of_rib, paths_changes, paths_family, paths_full, paths_sent, withdraw};
pub use attributes::{AsSegment, Origin, PathAttribute};
pub use message::{Capability, DecodeError, Message, Notification, Open, RouteRefresh, Session, Update, decode, encode};
pub use session::{Action, Event, Peer, PeerConfig, State, Timer};

/// Address family identifiers (RFC 4760).
pub const AFI_IPV4: u16 = 1;
pub const AFI_IPV6: u16 = 2;
/// Unicast subsequent address family.
pub const SAFI_UNICAST: u8 = 1;
/// The AS number a 2-octet field carries for a 4-octet AS (RFC 6793).
pub const AS_TRANS: u16 = 23456;

/// NOTIFICATION error codes (RFC 4271 §4.5) and the subcodes this codec raises.
pub mod error_code {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const OPEN_MESSAGE: u8 = 2;
    pub const UPDATE_MESSAGE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;

    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    pub const BAD_MESSAGE_TYPE: u8 = 3;

    pub const UNSUPPORTED_VERSION: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;

    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const MISSING_WELL_KNOWN_ATTRIBUTE: u8 = 3;
    pub const ATTRIBUTE_FLAGS_ERROR: u8 = 4;
    pub const ATTRIBUTE_LENGTH_ERROR: u8 = 5;
    pub const INVALID_ORIGIN: u8 = 6;
    pub const INVALID_NEXT_HOP: u8 = 8;
    pub const OPTIONAL_ATTRIBUTE_ERROR: u8 = 9;
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    pub const MALFORMED_AS_PATH: u8 = 11;
}

//! Prefix arithmetic on a compact, family-tagged integer form, shared by IPAM and aggregation.
//!
//! `IpNet` is the public currency; `Prefix` is what the hot loops work on (one `u128` and a length),
//! so IPv4 and IPv6 go through the same code.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Number of bits in an address of this family.
    pub const fn width(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    pub fn of_net(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    pub fn of_addr(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// A canonical prefix (no host bits set). Orders by family, then start address, then length
/// (shorter first), which is the order aggregation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    pub family: Family,
    pub addr: u128,
    pub len: u8,
}

/// Host mask for a prefix length: the bits that vary inside the prefix.
pub const fn host_mask(family: Family, len: u8) -> u128 {
    let bits = family.width() - len;
    if bits >= 128 { u128::MAX } else { (1u128 << bits) - 1 }
}

pub fn addr_to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u32::from(a) as u128,
        IpAddr::V6(a) => u128::from(a),
    }
}

pub fn u128_to_addr(family: Family, value: u128) -> IpAddr {
    match family {
        // Truncation is intended: IPv4 values never exceed 32 bits by construction.
        Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

impl Prefix {
    /// Build from any address and length, clearing host bits.
    pub fn new(family: Family, addr: u128, len: u8) -> Prefix {
        Prefix { family, addr: addr & !host_mask(family, len), len }
    }

    pub fn from_net(net: &IpNet) -> Prefix {
        Prefix::new(Family::of_net(net), addr_to_u128(net.addr()), net.prefix_len())
    }

    pub fn to_net(self) -> IpNet {
        match u128_to_addr(self.family, self.addr) {
            IpAddr::V4(a) => IpNet::V4(Ipv4Net::new_assert(a, self.len)),
            IpAddr::V6(a) => IpNet::V6(Ipv6Net::new_assert(a, self.len)),
        }
    }

    /// Last address (inclusive).
    pub fn last(self) -> u128 {
        self.addr | host_mask(self.family, self.len)
    }

    /// Number of addresses, saturating at `u128::MAX` for `::/0`.
    pub fn size(self) -> u128 {
        host_mask(self.family, self.len).saturating_add(1)
    }

    pub fn contains(self, other: Prefix) -> bool {
        self.family == other.family && self.len <= other.len && other.addr & !host_mask(self.family, self.len) == self.addr
    }

    pub fn contains_addr(self, family: Family, value: u128) -> bool {
        self.family == family && value & !host_mask(self.family, self.len) == self.addr
    }

    pub fn overlaps(self, other: Prefix) -> bool {
        self.contains(other) || other.contains(self)
    }

    /// The prefix one bit shorter that contains this one; `None` for a /0.
    pub fn parent(self) -> Option<Prefix> {
        (self.len > 0).then(|| Prefix::new(self.family, self.addr, self.len - 1))
    }

    /// True when `self` and `other` are the two halves of one parent.
    pub fn is_sibling_of(self, other: Prefix) -> bool {
        self.family == other.family && self.len == other.len && self.len > 0 && self.addr != other.addr && self.parent() == other.parent()
    }

    /// The `index`-th sub-prefix of length `len` inside `self`.
    pub fn subnet(self, len: u8, index: u128) -> Prefix {
        let step = host_mask(self.family, len).wrapping_add(1);
        Prefix { family: self.family, addr: self.addr + index * step, len }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_net().fmt(f)
    }
}

/// An inclusive address range of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Range {
    pub family: Family,
    pub first: u128,
    pub last: u128,
}

/// The minimal list of prefixes that covers exactly `range`.
pub fn range_to_prefixes(range: Range) -> Vec<Prefix> {
    let width = range.family.width();
    let mut out = Vec::new();
    let mut start = range.first;
    loop {
        // Largest aligned block starting at `start` that does not pass `range.last`.
        let align = if start == 0 { width as u32 } else { start.trailing_zeros().min(width as u32) };
        let mut bits = align;
        while bits > 0 {
            let mask = if bits >= 128 { u128::MAX } else { (1u128 << bits) - 1 };
            if start.checked_add(mask).is_some_and(|end| end <= range.last) {
                break;
            }
            bits -= 1;
        }
        // `bits <= width` holds, so the cast cannot truncate.
        let prefix = Prefix { family: range.family, addr: start, len: width - bits as u8 };
        out.push(prefix);
        let end = prefix.last();
        if end >= range.last {
            return out;
        }
        start = end + 1;
    }
}

/// Parse a CIDR that must be canonical: `10.1.2.0/24` is fine, `10.1.2.3/24` is refused with the
/// canonical form suggested, because a non-canonical CIDR almost always hides a typo.
pub fn parse_canonical(text: &str) -> Result<IpNet, String> {
    let net: IpNet = text.trim().parse().map_err(|_| format!("`{text}` is not a CIDR (expected for example 10.1.0.0/16 or fd00::/48)"))?;
    if net.trunc() != net {
        return Err(format!("`{text}` has host bits set; did you mean {}?", net.trunc()));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        Prefix::from_net(&s.parse().expect("test CIDR"))
    }

    #[test]
    fn range_to_prefixes_is_minimal() {
        let r = Range {
            family: Family::V4,
            first: addr_to_u128("10.0.0.1".parse().expect("ip")),
            last: addr_to_u128("10.0.0.6".parse().expect("ip")),
        };
        let got: Vec<String> = range_to_prefixes(r).iter().map(|p| p.to_string()).collect();
        assert_eq!(got, ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]);
        let all = Range { family: Family::V6, first: 0, last: u128::MAX };
        assert_eq!(range_to_prefixes(all), vec![p("::/0")]);
        let all4 = Range { family: Family::V4, first: 0, last: u32::MAX as u128 };
        assert_eq!(range_to_prefixes(all4), vec![p("0.0.0.0/0")]);
    }

    #[test]
    fn siblings_and_containment() {
        assert!(p("10.0.0.0/25").is_sibling_of(p("10.0.0.128/25")));
        assert!(!p("10.0.0.128/25").is_sibling_of(p("10.0.1.0/25")));
        assert!(p("10.0.0.0/16").contains(p("10.0.3.0/24")));
        assert!(!p("10.0.0.0/24").contains(p("10.0.0.0/16")));
        assert_eq!(p("::/0").size(), u128::MAX);
        assert_eq!(p("10.0.0.0/28").size(), 16);
    }

    #[test]
    fn canonical_parsing_names_the_fix() {
        assert_eq!(parse_canonical("10.1.0.0/16").expect("valid").to_string(), "10.1.0.0/16");
        let err = parse_canonical("10.1.2.3/16").expect_err("host bits");
        assert!(err.contains("did you mean 10.1.0.0/16"), "{err}");
        assert!(parse_canonical("10.1.0.0/33").is_err());
        assert!(parse_canonical("banana").is_err());
    }
}

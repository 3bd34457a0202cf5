//! The state's set elements (nft element text, as the policy engine renders it) encoded as the
//! kernel stores them, so that a change of elements alone goes to nf_tables over netlink in one
//! batch instead of through an `nft` process.
//!
//! Only what the policy engine declares is understood: sets of `ipv4_addr`/`ipv6_addr`,
//! `inet_proto`, `inet_service` and ICMP type and code fields, concatenated, hashed or with
//! `flags interval`, and maps of an address to a verdict. Anything else is `None`, and the
//! caller lets nft handle it. Each field sits in its own 32-bit slot, in network order, padded
//! with zeros (how nft and the kernel lay out a concatenation's registers).

use std::net::{Ipv4Addr, Ipv6Addr};

use tessera_netlink::nftables::{Element, Verdict};

/// One field of a set's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Ipv4,
    Ipv6,
    /// One octet: `inet_proto`.
    Proto,
    /// One octet: an ICMP type or code (which nft lists by name).
    Icmp,
    /// Two octets in network order: `inet_service`.
    Service,
}

impl Field {
    fn of(name: &str) -> Option<Field> {
        Some(match name {
            "ipv4_addr" => Field::Ipv4,
            "ipv6_addr" => Field::Ipv6,
            "inet_proto" => Field::Proto,
            "icmp_type" | "icmp_code" | "icmpv6_type" | "icmpv6_code" => Field::Icmp,
            "inet_service" => Field::Service,
            _ => return None,
        })
    }

    /// Append `text` (one value) in this field's slot.
    fn encode(self, text: &str, out: &mut Vec<u8>) -> Option<()> {
        match self {
            Field::Ipv4 => out.extend_from_slice(&text.parse::<Ipv4Addr>().ok()?.octets()),
            Field::Ipv6 => out.extend_from_slice(&text.parse::<Ipv6Addr>().ok()?.octets()),
            Field::Proto | Field::Icmp => out.extend_from_slice(&[text.parse::<u8>().ok()?, 0, 0, 0]),
            Field::Service => {
                let [a, b] = text.parse::<u16>().ok()?.to_be_bytes();
                out.extend_from_slice(&[a, b, 0, 0]);
            }
        }
        Some(())
    }
}

/// A set's or map's key as declared: its fields, whether elements are ranges, whether it maps
/// to verdicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyType {
    fields: Vec<Field>,
    interval: bool,
    verdicts: bool,
}

impl KeyType {
    /// The key type of a set or map declaration as the policy engine writes it
    /// (`set NAME {\n type T . T\n [flags interval\n] }`).
    pub fn of_declaration(text: &str) -> Option<KeyType> {
        let mut lines = text.lines().map(str::trim);
        let kind = lines.next()?.split(' ').next()?;
        let ty = lines.next()?.strip_prefix("type ")?;
        let (key, verdicts) = match (kind, ty.split_once(" : ")) {
            ("set", None) => (ty, false),
            ("map", Some((key, "verdict"))) => (key, true),
            _ => return None,
        };
        let fields = key.split(" . ").map(Field::of).collect::<Option<Vec<_>>>()?;
        let interval = match lines.next()? {
            "flags interval" => {
                lines.next().filter(|l| *l == "}")?;
                true
            }
            "}" => false,
            _ => return None,
        };
        // A range of a single field is an rbtree interval (start and end elements): not read here.
        if interval && (fields.len() < 2 || verdicts) {
            return None;
        }
        lines.next().is_none().then_some(KeyType { fields, interval, verdicts })
    }

    /// Whether nft lists this set's elements exactly as the policy engine writes them: no
    /// ranges (nft may list them as prefixes), no ICMP fields (nft names ICMP types).
    pub fn listed_as_written(&self) -> bool {
        !self.interval && !self.fields.contains(&Field::Icmp)
    }

    /// One element's text as the kernel's element; `None` when it does not read as this type.
    pub fn element(&self, text: &str) -> Option<Element> {
        let (key_text, verdict) = match text.split_once(" : ") {
            Some((key, verdict)) if self.verdicts => (key, Some(verdict_of(verdict)?)),
            None if !self.verdicts => (text, None),
            _ => return None,
        };
        let values: Vec<&str> = key_text.split(" . ").collect();
        if values.len() != self.fields.len() {
            return None;
        }
        let (mut key, mut end) = (Vec::new(), Vec::new());
        for (field, value) in self.fields.iter().zip(values) {
            let (first, last) = match value.split_once('-') {
                Some(range) if self.interval => range,
                Some(_) => return None,
                None => (value, value),
            };
            let at = key.len();
            field.encode(first, &mut key)?;
            field.encode(last, &mut end)?;
            // Slots compare as numbers do: network order, padding after the value.
            if key[at..] > end[at..] {
                return None;
            }
        }
        Some(Element { key, key_end: self.interval.then_some(end), verdict })
    }
}

fn verdict_of(text: &str) -> Option<Verdict> {
    let mut words = text.split(' ');
    let verdict = match (words.next()?, words.next()) {
        ("accept", None) => Verdict::Accept,
        ("drop", None) => Verdict::Drop,
        ("return", None) => Verdict::Return,
        ("jump", Some(chain)) => Verdict::Jump(chain.to_string()),
        ("goto", Some(chain)) => Verdict::Goto(chain.to_string()),
        _ => return None,
    };
    words.next().is_none().then_some(verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> KeyType {
        KeyType::of_declaration(text).unwrap_or_else(|| panic!("a key type: {text}"))
    }

    #[test]
    fn declarations_of_the_policy_engine_are_read() {
        let exact = key("\tset in4_10_0_0_1_exact {\n\t\ttype ipv4_addr . inet_proto . inet_service\n\t}\n");
        assert_eq!((exact.fields.len(), exact.interval, exact.verdicts), (3, false, false));
        let icmp = key("\tset in6_fd00__1_icmp {\n\t\ttype ipv6_addr . icmpv6_type . icmpv6_code\n\t\tflags interval\n\t}\n");
        assert_eq!((&icmp.fields, icmp.interval), (&vec![Field::Ipv6, Field::Icmp, Field::Icmp], true));
        let map = key("\tmap in_dispatch4 {\n\t\ttype ipv4_addr : verdict\n\t}\n");
        assert!(map.verdicts);
        assert!(exact.listed_as_written() && map.listed_as_written() && !icmp.listed_as_written());
        // What nft would read differently, or this module cannot encode, is left to nft.
        for other in [
            "\tset s {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t}\n",
            "\tset s {\n\t\ttype ether_addr\n\t}\n",
            "\tset s {\n\t\ttype ipv4_addr\n\t\ttimeout 1s\n\t}\n",
            "\tmap m {\n\t\ttype ipv4_addr : ipv4_addr\n\t}\n",
            "\tchain c {\n\t\taccept\n\t}\n",
        ] {
            assert_eq!(KeyType::of_declaration(other), None, "{other}");
        }
    }

    #[test]
    fn elements_are_laid_out_in_32_bit_slots_in_network_order() {
        let exact = key("\tset s {\n\t\ttype ipv4_addr . inet_proto . inet_service\n\t}\n");
        let e = exact.element("10.1.2.3 . 6 . 5432").expect("an element");
        assert_eq!(e.key, vec![10, 1, 2, 3, 6, 0, 0, 0, 0x15, 0x38, 0, 0]);
        assert_eq!((e.key_end, e.verdict), (None, None));
        assert_eq!(exact.element("10.1.2.3-10.1.2.9 . 6 . 5432"), None, "a hash set holds no ranges");
        assert_eq!(exact.element("10.1.2.3 . tcp . 5432"), None, "names are nft's to resolve");

        let ports = key("\tset s {\n\t\ttype ipv4_addr . inet_proto . inet_service\n\t\tflags interval\n\t}\n");
        let e = ports.element("10.0.0.0-10.0.0.255 . 17 . 1000-2000").expect("a range");
        assert_eq!(e.key, vec![10, 0, 0, 0, 17, 0, 0, 0, 0x03, 0xe8, 0, 0]);
        assert_eq!(e.key_end, Some(vec![10, 0, 0, 255, 17, 0, 0, 0, 0x07, 0xd0, 0, 0]));
        assert_eq!(ports.element("10.0.0.9-10.0.0.1 . 17 . 1000"), None, "a range that runs backwards");

        let v6 = key("\tset s {\n\t\ttype ipv6_addr . inet_proto\n\t\tflags interval\n\t}\n");
        let e = v6.element("fd00::1 . 0-255").expect("a v6 element");
        assert_eq!(e.key.len(), 20);
        assert_eq!(&e.key[16..], &[0, 0, 0, 0]);
        assert_eq!(e.key_end.as_deref().map(|k| &k[16..]), Some(&[255, 0, 0, 0][..]));

        let map = key("\tmap m {\n\t\ttype ipv4_addr : verdict\n\t}\n");
        assert_eq!(map.element("10.0.0.1 : jump in4_10_0_0_1").and_then(|e| e.verdict), Some(Verdict::Jump("in4_10_0_0_1".into())));
        assert_eq!(map.element("10.0.0.1 : drop").and_then(|e| e.verdict), Some(Verdict::Drop));
        assert_eq!(map.element("10.0.0.1"), None);
        assert_eq!(map.element("10.0.0.1 : jump"), None);
    }
}

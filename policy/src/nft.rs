//! Rendering a node's compiled endpoints as one nftables table, `inet tessera`, as data: `nft`
//! text for people and nftables JSON for machines. Both load with `nft -f` / `nft -j -f`.
//!
//! Established and related traffic (ICMP errors of allowed flows included) is accepted first,
//! invalid traffic of local endpoints dropped. A new flow from or to a local endpoint then
//! costs one hash lookup per side: the side's dispatch map, keyed by the local address. A side
//! without exceptions has its verdict there (a denying one `drop`s; an allowing one has no
//! element); the others jump to their *side group's* chain. A side group is the local
//! endpoints whose rules for that side and family are equal; its chain holds the group's
//! exceptions — regions whose verdict is the opposite of its default — in sets of its own.
//! Single peers on one port (most exceptions) go by service: a verdict map keyed by protocol
//! and port (`…_services`) leads with a `goto` to the service's chain (`…_tcp5432`), which looks
//! the peer up in a plain address set (`…_tcp5432_peers`) and otherwise decides as the group
//! does. Port regions with a CIDR peer or a port range are in an interval set (`…_ports`),
//! ICMP type . code and other protocols in interval sets of their own. So the lookups a new
//! flow costs do not grow with the number of endpoints or elements on the node: the hash
//! lookups are constant, and interval sets hold one group's ranges only (what its policies'
//! CIDRs and port ranges need, never the node's whole set). The bulk of a node's elements are
//! plain addresses: what nft and the kernel load cheapest.
//!
//! Names are stable under change: a group is named after its lowest local address, so a
//! change of its peers changes elements only (a new port: a service chain and its set too);
//! sets are declared only when they have elements, and agents apply a change of declarations
//! as a delta too.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use serde_json::{Value, json};

use crate::compile::{Class, EndpointRules, Family, Region, SideRules, Verdict};

pub const TABLE: &str = "tessera";

/// A node's ruleset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeRuleset {
    /// The `table inet tessera { ... }` block.
    pub text: String,
    /// The same as nftables JSON (`{"nftables": [...]}`), table creation included.
    pub json: Value,
    /// The table with every set and map declared but empty, as `nft` text.
    pub skeleton: String,
    /// The elements of each set and map, by name, in `nft` element syntax.
    pub sets: BTreeMap<String, Vec<String>>,
    pub set_elements: usize,
    pub rules: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Ingress,
    Egress,
}

impl Side {
    fn prefix(self) -> &'static str {
        match self {
            Side::Ingress => "in",
            Side::Egress => "eg",
        }
    }
    /// The packet field holding the local endpoint's address, and the peer's.
    fn fields(self) -> (&'static str, &'static str) {
        match self {
            Side::Ingress => ("daddr", "saddr"),
            Side::Egress => ("saddr", "daddr"),
        }
    }
}

fn addr(family: Family, v: u128) -> String {
    match family {
        // The value holds an IPv4 address in its low 32 bits.
        Family::V4 => Ipv4Addr::from(v as u32).to_string(),
        Family::V6 => Ipv6Addr::from(v).to_string(),
    }
}

/// A region's peer range as `nft` text.
fn peer_text(family: Family, r: &Region) -> String {
    range_text(addr(family, r.peer_first), addr(family, r.peer_last))
}

/// A region's peer range as nftables JSON.
fn peer_json(family: Family, r: &Region) -> Value {
    range_json(json!(addr(family, r.peer_first)), json!(addr(family, r.peer_last)))
}

fn range_text(a: String, b: String) -> String {
    if a == b { a } else { format!("{a}-{b}") }
}

fn range_json(a: Value, b: Value) -> Value {
    if a == b { a } else { json!({"range": [a, b]}) }
}

struct Names {
    ip: &'static str,
    addr_type: &'static str,
    icmp: &'static str,
    suffix: &'static str,
}

fn names(family: Family) -> Names {
    match family {
        Family::V4 => Names { ip: "ip", addr_type: "ipv4_addr", icmp: "icmp", suffix: "4" },
        Family::V6 => Names { ip: "ip6", addr_type: "ipv6_addr", icmp: "icmpv6", suffix: "6" },
    }
}

/// The local endpoints whose rules for one side and family are equal: they share one chain and
/// its sets. Named after its lowest local address, so a change to its peers or ports changes
/// elements only, and the name survives every change but that address leaving the group.
struct SideGroup<'a> {
    name: String,
    default: Verdict,
    exceptions: Vec<&'a Region>,
    /// The members' addresses of this family.
    locals: Vec<std::net::IpAddr>,
}

/// The side groups of one side and family, in name order; sides without exceptions get no
/// group (their verdict is in the dispatch map itself, or absent when it is allow).
fn side_groups<'a>(endpoints: &[&'a EndpointRules], family: Family, side: Side) -> (Vec<SideGroup<'a>>, Vec<(std::net::IpAddr, Verdict)>) {
    let mut groups: Vec<SideGroup<'a>> = Vec::new();
    let mut by_rules: HashMap<*const SideRules, usize> = HashMap::new();
    let mut by_content: HashMap<(Verdict, Vec<&'a Region>), usize> = HashMap::new();
    let mut plain = Vec::new();
    for e in endpoints {
        let rules: &'a std::sync::Arc<SideRules> = match side {
            Side::Ingress => &e.ingress,
            Side::Egress => &e.egress,
        };
        let locals: Vec<std::net::IpAddr> = e.ips.iter().copied().filter(|ip| Family::of(ip) == family).collect();
        if locals.is_empty() {
            continue;
        }
        let index = match by_rules.get(&std::sync::Arc::as_ptr(rules)) {
            Some(&i) => Some(i),
            None => {
                let exceptions: Vec<&'a Region> = rules.exceptions.iter().filter(|r| r.family == family).collect();
                if exceptions.is_empty() {
                    plain.extend(locals.iter().map(|ip| (*ip, rules.default)));
                    continue;
                }
                let i = *by_content.entry((rules.default, exceptions.clone())).or_insert_with(|| {
                    groups.push(SideGroup { name: String::new(), default: rules.default, exceptions, locals: Vec::new() });
                    groups.len() - 1
                });
                by_rules.insert(std::sync::Arc::as_ptr(rules), i);
                Some(i)
            }
        };
        if let Some(i) = index {
            groups[i].locals.extend(locals);
        }
    }
    for g in &mut groups {
        g.locals.sort();
        let lowest = g.locals[0].to_string().replace(['.', ':'], "_");
        g.name = format!("{}{}_{lowest}", side.prefix(), names(family).suffix);
    }
    groups.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.locals.cmp(&b.locals)));
    // Two groups share a lowest address only when two endpoints share an address (a mistake
    // reported elsewhere): their names must still differ.
    let mut taken = std::collections::HashSet::new();
    for g in &mut groups {
        let mut k = 1;
        while !taken.insert(g.name.clone()) {
            k += 1;
            g.name = format!("{}_n{k}", g.name.split("_n").next().unwrap_or_default());
        }
    }
    plain.sort();
    (groups, plain)
}

fn verdict_word(v: Verdict, flip: bool) -> &'static str {
    match (v, flip) {
        (Verdict::Allow, false) | (Verdict::Deny, true) => "return",
        _ => "drop",
    }
}

/// The ruleset being written: text, skeleton, JSON commands and elements side by side; text
/// and JSON only when `full`.
struct Out {
    full: bool,
    text: String,
    skeleton: String,
    cmds: Vec<Value>,
    /// JSON commands that add elements going to chains: after every chain is added.
    after_chains: Vec<Value>,
    sets: BTreeMap<String, Vec<String>>,
    set_elements: usize,
    rules: usize,
}

impl Out {
    fn push_str(&mut self, s: &str) {
        if self.full {
            self.text.push_str(s);
        }
        self.skeleton.push_str(s);
    }

    fn push_cmd(&mut self, cmd: impl FnOnce() -> Value) {
        if self.full {
            self.cmds.push(cmd());
        }
    }

    /// A chain and its rules (a base chain when `hook` says how it is hooked).
    fn chain(&mut self, name: &str, hook: Option<(&str, Value)>, body: &[(String, Value)]) {
        self.push_str(&format!("\tchain {name} {{\n"));
        match hook {
            Some((text, json)) => {
                self.push_str(&format!("\t\t{text}\n"));
                self.push_cmd(|| json!({"add": {"chain": json}}));
            }
            None => self.push_cmd(|| json!({"add": {"chain": {"family": "inet", "table": TABLE, "name": name}}})),
        }
        for (t, j) in body {
            self.push_str(&format!("\t\t{t}\n"));
            self.push_cmd(|| json!({"add": {"rule": {"family": "inet", "table": TABLE, "chain": name, "expr": j}}}));
            self.rules += 1;
        }
        self.push_str("\t}\n");
    }
}

/// A node's table as an agent applies it: the skeleton and each set's elements (what `render`
/// gives, without the whole table as text and JSON).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeSets {
    /// The table with every set and map declared but empty, as `nft` text.
    pub skeleton: String,
    /// The elements of each set and map, by name, in `nft` element syntax.
    pub sets: BTreeMap<String, Vec<String>>,
    pub set_elements: usize,
    pub rules: usize,
}

/// Render the ruleset of the endpoints that live on one node.
pub fn render(endpoints: &[&EndpointRules]) -> NodeRuleset {
    build(endpoints, true)
}

/// Render only the skeleton and the sets of the endpoints that live on one node.
pub fn render_sets(endpoints: &[&EndpointRules]) -> NodeSets {
    let r = build(endpoints, false);
    NodeSets { skeleton: r.skeleton, sets: r.sets, set_elements: r.set_elements, rules: r.rules }
}

/// One group's exceptions by set: single peers by protocol and port (plain address sets, one
/// per service), and the interval sets: port regions with a peer or port range, ICMP, other
/// protocols.
#[derive(Default)]
struct GroupSets {
    exact: BTreeMap<(u8, u16), (Vec<String>, Vec<Value>)>,
    ports: (Vec<String>, Vec<Value>),
    icmp: (Vec<String>, Vec<Value>),
    proto: (Vec<String>, Vec<Value>),
}

fn group_sets(g: &SideGroup<'_>, family: Family, full: bool) -> GroupSets {
    let mut out = GroupSets::default();
    for r in &g.exceptions {
        match r.class {
            Class::Ports(proto) if r.peer_first == r.peer_last && r.service_first == r.service_last => {
                let peer = addr(family, r.peer_first);
                let (texts, jsons) = out.exact.entry((proto, r.service_first)).or_default();
                if full {
                    jsons.push(json!(peer));
                }
                texts.push(peer);
            }
            Class::Ports(proto) => {
                out.ports.0.push(format!(
                    "{} . {proto} . {}",
                    peer_text(family, r),
                    range_text(r.service_first.to_string(), r.service_last.to_string())
                ));
                if full {
                    out.ports
                        .1
                        .push(json!({"concat": [peer_json(family, r), proto, range_json(json!(r.service_first), json!(r.service_last))]}));
                }
            }
            Class::Icmp => {
                for (t0, t1, c0, c1) in icmp_boxes(r.service_first, r.service_last) {
                    out.icmp.0.push(format!(
                        "{} . {} . {}",
                        peer_text(family, r),
                        range_text(t0.to_string(), t1.to_string()),
                        range_text(c0.to_string(), c1.to_string())
                    ));
                    if full {
                        out.icmp.1.push(
                            json!({"concat": [peer_json(family, r), range_json(json!(t0), json!(t1)), range_json(json!(c0), json!(c1))]}),
                        );
                    }
                }
            }
            Class::Other => {
                out.proto.0.push(format!("{} . 0-255", peer_text(family, r)));
                if full {
                    out.proto.1.push(json!({"concat": [peer_json(family, r), {"range": [0, 255]}]}));
                }
            }
        }
    }
    out
}

/// What a dispatch map gives a local address: a drop, or its side group's chain.
enum DispatchVerdict {
    Drop,
    Jump(String),
}

impl DispatchVerdict {
    fn text(&self) -> String {
        match self {
            DispatchVerdict::Drop => "drop".into(),
            DispatchVerdict::Jump(chain) => format!("jump {chain}"),
        }
    }

    fn json(&self) -> Value {
        match self {
            DispatchVerdict::Drop => json!({"drop": null}),
            DispatchVerdict::Jump(chain) => json!({"jump": {"target": chain}}),
        }
    }
}

/// A dispatch map: its name, key type, and elements (local address, verdict).
type DispatchMap = (String, &'static str, Vec<(std::net::IpAddr, DispatchVerdict)>);

/// The ruleset; its text and JSON only when `full`.
fn build(endpoints: &[&EndpointRules], full: bool) -> NodeRuleset {
    let header = format!("table inet {TABLE} {{\n");
    let mut out = Out {
        full,
        text: if full { header.clone() } else { String::new() },
        skeleton: header,
        cmds: vec![json!({"add": {"table": {"family": "inet", "name": TABLE}}})],
        after_chains: Vec::new(),
        sets: BTreeMap::new(),
        set_elements: 0,
        rules: 0,
    };
    let mut forward: Vec<(String, Value)> = vec![(
        "ct state established,related accept".into(),
        json!([m("in", ct_state(), json!(["established", "related"])), {"accept": null}]),
    )];
    // Group chains are declared before the dispatch maps whose elements jump to them.
    let mut chains: Vec<(String, Vec<(String, Value)>)> = Vec::new();
    let mut dispatch: Vec<DispatchMap> = Vec::new();
    for family in [Family::V4, Family::V6] {
        let n = names(family);
        let s = n.suffix;
        let mut locals: Vec<std::net::IpAddr> =
            endpoints.iter().flat_map(|e| e.ips.iter().copied().filter(|ip| Family::of(ip) == family)).collect();
        locals.sort();
        let json_locals = locals.iter().filter(|_| full).map(|l| json!(l.to_string())).collect();
        write_set(&mut out, &format!("local{s}"), n.addr_type, false, locals.iter().map(ToString::to_string).collect(), json_locals);
        for side in [Side::Egress, Side::Ingress] {
            let (local_field, peer_field) = side.fields();
            let p = side.prefix();
            let (groups, plain) = side_groups(endpoints, family, side);
            let mut entries: Vec<(std::net::IpAddr, DispatchVerdict)> = Vec::new();
            // Sides without exceptions: a denying one drops here; an allowing one needs no element.
            for (ip, _) in plain.into_iter().filter(|(_, v)| *v == Verdict::Deny) {
                entries.push((ip, DispatchVerdict::Drop));
            }
            let pp = json!({"payload": {"protocol": n.ip, "field": peer_field}});
            let l4 = json!({"meta": {"key": "l4proto"}});
            for g in &groups {
                let sets = group_sets(g, family, full);
                let flip = verdict_word(g.default, true);
                let mut body = Vec::new();
                let dport = json!({"payload": {"protocol": "th", "field": "dport"}});
                let port_key = json!({"concat": [pp, l4, dport]});
                let (texts, jsons) = sets.ports;
                let ports_rule = (!texts.is_empty()).then(|| {
                    let set = format!("{}_ports", g.name);
                    write_set(&mut out, &set, &format!("{0} . inet_proto . inet_service", n.addr_type), true, texts, jsons);
                    (
                        format!("meta l4proto {{ tcp, udp, sctp }} {} {peer_field} . meta l4proto . th dport @{set} {flip}", n.ip),
                        json!([m("==", l4.clone(), json!({"set": ["tcp", "udp", "sctp"]})), m("==", port_key.clone(), json!(format!("@{set}"))), {flip: null}]),
                    )
                });
                let default = verdict_word(g.default, false);
                let default_rule = (default.to_string(), json!([{default: null}]));
                if !sets.exact.is_empty() {
                    // Single peers by service: the packet's protocol and port pick the service's
                    // chain (a goto: its verdicts are the group's), which looks the peer up in a
                    // plain address set, then decides as the group would.
                    let map = format!("{}_services", g.name);
                    let (mut services, mut service_jsons) = (Vec::new(), Vec::new());
                    for ((proto, port), (texts, jsons)) in sets.exact {
                        let chain = format!("{}_{}{port}", g.name, protocol_word(proto));
                        let set = format!("{chain}_peers");
                        write_set(&mut out, &set, n.addr_type, false, texts, jsons);
                        let mut rules = vec![(
                            format!("{} {peer_field} @{set} {flip}", n.ip),
                            json!([m("==", pp.clone(), json!(format!("@{set}"))), {flip: null}]),
                        )];
                        rules.extend(ports_rule.clone());
                        rules.push(default_rule.clone());
                        services.push(format!("{proto} . {port} : goto {chain}"));
                        if full {
                            service_jsons.push(json!([{"concat": [proto, port]}, {"goto": {"target": chain}}]));
                        }
                        chains.push((chain, rules));
                    }
                    write_map(&mut out, &map, "inet_proto . inet_service", services, Vec::new());
                    if full {
                        let add = json!({"add": {"element": {"family": "inet", "table": TABLE, "name": map, "elem": service_jsons}}});
                        out.after_chains.push(add);
                    }
                    body.push((
                        format!("meta l4proto . th dport vmap @{map}"),
                        json!([{"vmap": {"key": {"concat": [l4, dport]}, "data": format!("@{map}")}}]),
                    ));
                }
                body.extend(ports_rule);
                let (texts, jsons) = sets.icmp;
                if !texts.is_empty() {
                    let set = format!("{}_icmp", g.name);
                    let key = json!({"concat": [pp, {"payload": {"protocol": n.icmp, "field": "type"}}, {"payload": {"protocol": n.icmp, "field": "code"}}]});
                    body.push((
                        format!("meta l4proto {icmp} {} {peer_field} . {icmp} type . {icmp} code @{set} {flip}", n.ip, icmp = n.icmp),
                        json!([m("==", l4.clone(), json!(n.icmp)), m("==", key, json!(format!("@{set}"))), {flip: null}]),
                    ));
                    write_set(&mut out, &set, &format!("{0} . {1}_type . {1}_code", n.addr_type, n.icmp), true, texts, jsons);
                }
                let (texts, jsons) = sets.proto;
                if !texts.is_empty() {
                    let set = format!("{}_proto", g.name);
                    body.push((
                        format!(
                            "meta l4proto != {{ tcp, udp, sctp, {icmp} }} {} {peer_field} . meta l4proto @{set} {flip}",
                            n.ip,
                            icmp = n.icmp
                        ),
                        json!([
                            m("!=", l4.clone(), json!({"set": ["tcp", "udp", "sctp", n.icmp]})),
                            m("==", json!({"concat": [pp, l4]}), json!(format!("@{set}"))),
                            {flip: null}
                        ]),
                    ));
                    write_set(&mut out, &set, &format!("{0} . inet_proto", n.addr_type), true, texts, jsons);
                }
                body.push(default_rule);
                for ip in &g.locals {
                    entries.push((*ip, DispatchVerdict::Jump(g.name.clone())));
                }
                chains.push((g.name.clone(), body));
            }
            entries.sort_by_key(|e| e.0);
            // One verdict per address, even when two endpoints hold one by mistake.
            entries.dedup_by_key(|e| e.0);
            let map = format!("{p}_dispatch{s}");
            dispatch.push((map.clone(), n.addr_type, entries));
            let local_set = format!("@local{s}");
            if side == Side::Egress {
                for field in ["saddr", "daddr"] {
                    forward.push((
                        format!("{} {field} {local_set} ct state invalid drop", n.ip),
                        json!([m("==", json!({"payload": {"protocol": n.ip, "field": field}}), json!(local_set)), m("in", ct_state(), json!(["invalid"])), {"drop": null}]),
                    ));
                }
            }
            let lp = json!({"payload": {"protocol": n.ip, "field": local_field}});
            forward.push((format!("{} {local_field} vmap @{map}", n.ip), json!([{"vmap": {"key": lp, "data": format!("@{map}")}}])));
        }
    }
    for (name, body) in &chains {
        out.chain(name, None, body);
    }
    let after_chains = std::mem::take(&mut out.after_chains);
    out.cmds.extend(after_chains);
    for (name, addr_type, elements) in dispatch {
        let texts = elements.iter().map(|(ip, v)| format!("{ip} : {}", v.text())).collect();
        let jsons = elements.iter().filter(|_| full).map(|(ip, v)| json!([ip.to_string(), v.json()])).collect();
        write_map(&mut out, &name, addr_type, texts, jsons);
    }
    let hook =
        json!({"family": "inet", "table": TABLE, "name": "forward", "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"});
    out.chain("forward", Some(("type filter hook forward priority filter; policy accept;", hook)), &forward);
    out.push_str("}\n");
    NodeRuleset {
        text: out.text,
        json: json!({"nftables": out.cmds}),
        skeleton: out.skeleton,
        sets: out.sets,
        set_elements: out.set_elements,
        rules: out.rules,
    }
}

fn m(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

fn ct_state() -> Value {
    json!({"ct": {"key": "state"}})
}

fn write_set(out: &mut Out, name: &str, kind: &str, interval: bool, elements: Vec<String>, json_elements: Vec<Value>) {
    let flags = if interval { "\t\tflags interval\n" } else { "" };
    out.push_str(&format!("\tset {name} {{\n\t\ttype {kind}\n{flags}"));
    let mut set = json!({"family": "inet", "table": TABLE, "name": name, "type": type_json(kind)});
    if interval {
        set["flags"] = json!(["interval"]);
    }
    out.push_cmd(|| json!({"add": {"set": set}}));
    finish_set(out, name, elements, json_elements);
}

fn write_map(out: &mut Out, name: &str, kind: &str, elements: Vec<String>, json_elements: Vec<Value>) {
    out.push_str(&format!("\tmap {name} {{\n\t\ttype {kind} : verdict\n"));
    let ty = type_json(kind);
    out.push_cmd(|| json!({"add": {"map": {"family": "inet", "table": TABLE, "name": name, "type": ty, "map": "verdict"}}}));
    finish_set(out, name, elements, json_elements);
}

/// A key type in nftables JSON: a name, or the names of a concatenation's fields.
fn type_json(kind: &str) -> Value {
    let types: Vec<&str> = kind.split(" . ").collect();
    if types.len() == 1 { json!(types[0]) } else { json!(types) }
}

/// A protocol with ports as a word in chain and set names.
fn protocol_word(proto: u8) -> String {
    match proto {
        6 => "tcp".into(),
        17 => "udp".into(),
        132 => "sctp".into(),
        other => format!("p{other}"),
    }
}

/// A set's or map's elements, and the end of its declaration.
fn finish_set(out: &mut Out, name: &str, elements: Vec<String>, json_elements: Vec<Value>) {
    if out.full {
        write_elements(&mut out.text, &elements);
    }
    out.push_str("\t}\n");
    out.set_elements += elements.len();
    out.sets.insert(name.to_string(), elements);
    if !json_elements.is_empty() {
        out.push_cmd(|| json!({"add": {"element": {"family": "inet", "table": TABLE, "name": name, "elem": json_elements}}}));
    }
}

fn write_elements(text: &mut String, elements: &[String]) {
    if elements.is_empty() {
        return;
    }
    text.push_str("\t\telements = {\n");
    for (i, e) in elements.iter().enumerate() {
        let sep = if i + 1 < elements.len() { "," } else { "" };
        let _ = writeln!(text, "\t\t\t{e}{sep}");
    }
    text.push_str("\t\t}\n");
}

/// Split an encoded ICMP range (`type << 8 | code`) into type × code boxes.
fn icmp_boxes(first: u16, last: u16) -> Vec<(u8, u8, u8, u8)> {
    let (t0, c0) = ((first >> 8) as u8, (first & 0xff) as u8);
    let (t1, c1) = ((last >> 8) as u8, (last & 0xff) as u8);
    if t0 == t1 {
        return vec![(t0, t0, c0, c1)];
    }
    let mut out = Vec::new();
    let (mut mid0, mut mid1) = (t0, t1);
    if c0 != 0 {
        out.push((t0, t0, c0, 255));
        mid0 = t0 + 1;
    }
    let tail = c1 != 255;
    if tail {
        mid1 = t1 - 1;
    }
    if mid0 <= mid1 && !(c0 != 0 && mid0 > t1) {
        out.push((mid0, mid1, 0, 255));
    }
    if tail {
        out.push((t1, t1, 0, c1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_alone_render_as_in_the_whole_ruleset() {
        use crate::testgen::{Shape, cluster_yaml, segment_blocks};
        let shape = Shape { namespaces: 3, pods: 30, policies: 12, cluster_policies: true, whole_segment_peers: false };
        let mut inputs = crate::Inputs::default();
        inputs.add_text("generated", &cluster_yaml(5, shape)).expect("valid");
        let blocks = segment_blocks(&shape).into_iter().map(|(k, v)| (k, vec![v.parse().expect("block")])).collect();
        let compiler = crate::compiler::Compiler::new(inputs.cluster, blocks, inputs.policies, Default::default());
        for host in ["node0", "node1", "node2", "node3"] {
            let local = compiler.node_rules(host);
            let (whole, sets) = (render(&local), render_sets(&local));
            assert!(whole.set_elements > local.len(), "{host}: the generated cluster puts endpoints and exceptions on every node");
            assert_eq!(
                (&whole.skeleton, &whole.sets, whole.set_elements, whole.rules),
                (&sets.skeleton, &sets.sets, sets.set_elements, sets.rules)
            );
        }
    }

    #[test]
    fn side_groups_share_a_chain_and_keep_distinct_names() {
        use crate::compile::{Class, Region, SideRules, Verdict};
        let allow_from = |peer: u32| SideRules {
            default: Verdict::Deny,
            exceptions: vec![Region {
                family: Family::V4,
                peer_first: peer.into(),
                peer_last: peer.into(),
                class: Class::Ports(6),
                service_first: 80,
                service_last: 80,
            }],
        };
        let endpoint = |id: &str, ip: [u8; 4], ingress: &std::sync::Arc<SideRules>| EndpointRules {
            endpoint: id.into(),
            host: None,
            ips: vec![std::net::IpAddr::from(ip)],
            ingress: ingress.clone(),
            egress: SideRules { default: Verdict::Allow, exceptions: Vec::new() }.into(),
        };
        let (a, b) = (std::sync::Arc::new(allow_from(0x0b00_0001)), std::sync::Arc::new(allow_from(0x0b00_0002)));
        // Two endpoints alike share one chain; a third holds the lower one's address by
        // mistake, with other rules: each group still has a name of its own.
        let endpoints = [endpoint("x", [10, 0, 0, 2], &a), endpoint("y", [10, 0, 0, 1], &a), endpoint("z", [10, 0, 0, 1], &b)];
        let refs: Vec<&EndpointRules> = endpoints.iter().collect();
        let r = render(&refs);
        assert!(r.text.contains("chain in4_10_0_0_1 {") && r.text.contains("chain in4_10_0_0_1_n2 {"), "{}", r.text);
        let groups = r.text.lines().filter(|l| l.trim_start().starts_with("chain in4_") && !l.contains("_tcp80 ")).count();
        assert_eq!(groups, 2, "x and y share one chain: {}", r.text);
        // Names in the order of the groups' addresses; the shared address keeps one verdict.
        assert_eq!(r.sets["in_dispatch4"], vec!["10.0.0.1 : jump in4_10_0_0_1", "10.0.0.2 : jump in4_10_0_0_1_n2"]);
        assert_eq!(r.sets["in4_10_0_0_1_tcp80_peers"], vec!["11.0.0.2"]);
        assert_eq!(r.sets["in4_10_0_0_1_n2_tcp80_peers"], vec!["11.0.0.1"]);
        assert_eq!(r.sets["in4_10_0_0_1_services"], vec!["6 . 80 : goto in4_10_0_0_1_tcp80"]);
        assert!(!r.sets.contains_key("eg_dispatch4_x") && r.sets["eg_dispatch4"].is_empty(), "allowing sides need no element");
    }

    #[test]
    fn icmp_ranges_become_boxes() {
        assert_eq!(icmp_boxes(8 << 8, 8 << 8), vec![(8, 8, 0, 0)]);
        assert_eq!(icmp_boxes(0, 0xffff), vec![(0, 255, 0, 255)]);
        assert_eq!(icmp_boxes((3 << 8) | 4, (5 << 8) | 1), vec![(3, 3, 4, 255), (4, 4, 0, 255), (5, 5, 0, 1)]);
        assert_eq!(icmp_boxes((3 << 8) | 4, (4 << 8) | 1), vec![(3, 3, 4, 255), (4, 4, 0, 1)]);
    }
}

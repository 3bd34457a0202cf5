//! Rendering a node's compiled endpoints as one nftables table, `inet tessera`, as data: `nft`
//! text for people and nftables JSON for machines. Both load with `nft -f` / `nft -j -f`.
//!
//! Per-packet cost does not grow with peers or rules: a packet from or to a local endpoint does
//! at most four set/map lookups per side. Each side of each endpoint has a default verdict (a
//! verdict map keyed by the endpoint's address) and exception regions (interval sets keyed by
//! endpoint . peer . protocol . port, or ICMP type . code); a packet in an exception region gets
//! the opposite of the default. Established and related traffic (ICMP errors of allowed flows
//! included) is accepted first, invalid traffic of endpoints dropped.

use std::collections::BTreeMap;
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

/// Elements of one side, by set kind.
#[derive(Default)]
struct Elements {
    defaults: Vec<(String, Verdict)>,
    ports: Vec<(String, Region)>,
    icmp: Vec<(String, Region)>,
    proto: Vec<(String, Region)>,
}

fn collect(endpoints: &[&EndpointRules], family: Family, side: Side) -> Elements {
    let mut out = Elements::default();
    for e in endpoints {
        let rules: &SideRules = match side {
            Side::Ingress => &e.ingress,
            Side::Egress => &e.egress,
        };
        for ip in e.ips.iter().filter(|ip| Family::of(ip) == family) {
            let local = ip.to_string();
            out.defaults.push((local.clone(), rules.default));
            for r in rules.exceptions.iter().filter(|r| r.family == family) {
                let list = match r.class {
                    Class::Ports(_) => &mut out.ports,
                    Class::Icmp => &mut out.icmp,
                    Class::Other => &mut out.proto,
                };
                list.push((local.clone(), r.clone()));
            }
        }
    }
    out
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
    sets: BTreeMap<String, Vec<String>>,
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

/// The ruleset; its text and JSON only when `full`.
fn build(endpoints: &[&EndpointRules], full: bool) -> NodeRuleset {
    let header = format!("table inet {TABLE} {{\n");
    let mut out = Out {
        full,
        text: if full { header.clone() } else { String::new() },
        skeleton: header,
        cmds: vec![json!({"add": {"table": {"family": "inet", "name": TABLE}}})],
        sets: BTreeMap::new(),
    };
    let mut set_elements = 0;
    let mut rules = 0;
    let mut chain_rules: Vec<(String, Vec<(String, Value)>)> = Vec::new();
    let mut forward: Vec<(String, Value)> = vec![(
        "ct state established,related accept".into(),
        json!([m("in", ct_state(), json!(["established", "related"])), {"accept": null}]),
    )];
    for family in [Family::V4, Family::V6] {
        let n = names(family);
        let locals: Vec<String> =
            endpoints.iter().flat_map(|e| e.ips.iter().filter(|ip| Family::of(ip) == family).map(ToString::to_string)).collect();
        set_elements += locals.len();
        let json_locals = locals.iter().filter(|_| full).map(|l| json!(l)).collect();
        write_set(&mut out, &format!("local{}", n.suffix), n.addr_type, false, locals, json_locals);
        for side in [Side::Egress, Side::Ingress] {
            let (local_field, peer_field) = side.fields();
            let p = side.prefix();
            let els = collect(endpoints, family, side);
            let s = n.suffix;
            // Default and flipped verdict per endpoint.
            for (name, flip) in [(format!("{p}_default{s}"), false), (format!("{p}_flip{s}"), true)] {
                let texts: Vec<String> = els.defaults.iter().map(|(l, v)| format!("{l} : {}", verdict_word(*v, flip))).collect();
                let jsons: Vec<Value> =
                    els.defaults.iter().filter(|_| full).map(|(l, v)| json!([l, {verdict_word(*v, flip): null}])).collect();
                set_elements += texts.len();
                write_map(&mut out, &name, n.addr_type, texts, jsons);
            }
            let ports_type = format!("{0} . {0} . inet_proto . inet_service", n.addr_type);
            let (mut t, mut j) = (Vec::new(), Vec::new());
            for (l, r) in &els.ports {
                let Class::Ports(proto) = r.class else { continue };
                let peer = peer_text(family, r);
                t.push(format!("{l} . {peer} . {proto} . {}", range_text(r.service_first.to_string(), r.service_last.to_string())));
                if full {
                    j.push(json!({"concat": [l, peer_json(family, r), proto, range_json(json!(r.service_first), json!(r.service_last))]}));
                }
            }
            set_elements += t.len();
            write_set(&mut out, &format!("{p}_ports{s}"), &ports_type, true, t, j);

            let icmp_type = format!("{0} . {0} . {1}_type . {1}_code", n.addr_type, if family == Family::V4 { "icmp" } else { "icmpv6" });
            let mut t = Vec::new();
            let mut j = Vec::new();
            for (l, r) in &els.icmp {
                let peer = peer_text(family, r);
                for (t0, t1, c0, c1) in icmp_boxes(r.service_first, r.service_last) {
                    t.push(format!(
                        "{l} . {peer} . {} . {}",
                        range_text(t0.to_string(), t1.to_string()),
                        range_text(c0.to_string(), c1.to_string())
                    ));
                    if full {
                        j.push(json!({"concat": [l, peer_json(family, r), range_json(json!(t0), json!(t1)), range_json(json!(c0), json!(c1))]}));
                    }
                }
            }
            set_elements += t.len();
            write_set(&mut out, &format!("{p}_icmp{s}"), &icmp_type, true, t, j);

            let proto_type = format!("{0} . {0} . inet_proto", n.addr_type);
            let (mut t, mut j) = (Vec::new(), Vec::new());
            for (l, r) in &els.proto {
                t.push(format!("{l} . {} . 0-255", peer_text(family, r)));
                if full {
                    j.push(json!({"concat": [l, peer_json(family, r), {"range": [0, 255]}]}));
                }
            }
            set_elements += t.len();
            write_set(&mut out, &format!("{p}_proto{s}"), &proto_type, true, t, j);

            // The side's chain: exceptions flip the endpoint's default, else the default.
            let chain = format!("{}{s}", if side == Side::Ingress { "ingress" } else { "egress" });
            let lp = json!({"payload": {"protocol": n.ip, "field": local_field}});
            let pp = json!({"payload": {"protocol": n.ip, "field": peer_field}});
            let l4 = json!({"meta": {"key": "l4proto"}});
            let flip = json!({"vmap": {"key": lp, "data": format!("@{p}_flip{s}")}});
            let icmp_t = json!({"payload": {"protocol": n.icmp, "field": "type"}});
            let icmp_c = json!({"payload": {"protocol": n.icmp, "field": "code"}});
            let dport = json!({"payload": {"protocol": "th", "field": "dport"}});
            let body = vec![
                (
                    format!(
                        "meta l4proto {{ tcp, udp, sctp }} {ip} {local_field} . {ip} {peer_field} . meta l4proto . th dport @{p}_ports{s} {ip} {local_field} vmap @{p}_flip{s}",
                        ip = n.ip
                    ),
                    json!([
                        m("==", l4.clone(), json!({"set": ["tcp", "udp", "sctp"]})),
                        m("==", json!({"concat": [lp, pp, l4, dport]}), json!(format!("@{p}_ports{s}"))),
                        flip
                    ]),
                ),
                (
                    format!(
                        "meta l4proto {icmp} {ip} {local_field} . {ip} {peer_field} . {icmp} type . {icmp} code @{p}_icmp{s} {ip} {local_field} vmap @{p}_flip{s}",
                        ip = n.ip,
                        icmp = n.icmp
                    ),
                    json!([
                        m("==", l4.clone(), json!(n.icmp)),
                        m("==", json!({"concat": [lp, pp, icmp_t, icmp_c]}), json!(format!("@{p}_icmp{s}"))),
                        flip
                    ]),
                ),
                (
                    format!(
                        "meta l4proto != {{ tcp, udp, sctp, {icmp} }} {ip} {local_field} . {ip} {peer_field} . meta l4proto @{p}_proto{s} {ip} {local_field} vmap @{p}_flip{s}",
                        ip = n.ip,
                        icmp = n.icmp
                    ),
                    json!([
                        m("!=", l4.clone(), json!({"set": ["tcp", "udp", "sctp", n.icmp]})),
                        m("==", json!({"concat": [lp, pp, l4]}), json!(format!("@{p}_proto{s}"))),
                        flip
                    ]),
                ),
                (
                    format!("{} {local_field} vmap @{p}_default{s}", n.ip),
                    json!([{"vmap": {"key": lp, "data": format!("@{p}_default{s}")}}]),
                ),
            ];
            chain_rules.push((chain.clone(), body));
            let local_set = format!("@local{s}");
            if side == Side::Egress {
                forward.push((
                    format!("{} saddr {local_set} ct state invalid drop", n.ip),
                    json!([m("==", json!({"payload": {"protocol": n.ip, "field": "saddr"}}), json!(local_set)), m("in", ct_state(), json!(["invalid"])), {"drop": null}]),
                ));
                forward.push((
                    format!("{} daddr {local_set} ct state invalid drop", n.ip),
                    json!([m("==", json!({"payload": {"protocol": n.ip, "field": "daddr"}}), json!(local_set)), m("in", ct_state(), json!(["invalid"])), {"drop": null}]),
                ));
            }
            forward.push((
                format!("{} {local_field} {local_set} jump {chain}", n.ip),
                json!([m("==", json!({"payload": {"protocol": n.ip, "field": local_field}}), json!(local_set)), {"jump": {"target": chain}}]),
            ));
        }
    }
    for (chain, body) in &chain_rules {
        out.push_str(&format!("\tchain {chain} {{\n"));
        out.push_cmd(|| json!({"add": {"chain": {"family": "inet", "table": TABLE, "name": chain}}}));
        for (t, j) in body {
            out.push_str(&format!("\t\t{t}\n"));
            out.push_cmd(|| json!({"add": {"rule": {"family": "inet", "table": TABLE, "chain": chain, "expr": j}}}));
            rules += 1;
        }
        out.push_str("\t}\n");
    }
    out.push_str("\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n");
    out.push_cmd(|| json!({"add": {"chain": {"family": "inet", "table": TABLE, "name": "forward", "type": "filter", "hook": "forward", "prio": 0, "policy": "accept"}}}));
    for (t, j) in &forward {
        out.push_str(&format!("\t\t{t}\n"));
        out.push_cmd(|| json!({"add": {"rule": {"family": "inet", "table": TABLE, "chain": "forward", "expr": j}}}));
        rules += 1;
    }
    out.push_str("\t}\n}\n");
    NodeRuleset { text: out.text, json: json!({"nftables": out.cmds}), skeleton: out.skeleton, sets: out.sets, set_elements, rules }
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
    let types: Vec<&str> = kind.split(" . ").collect();
    let ty = if types.len() == 1 { json!(types[0]) } else { json!(types) };
    let mut set = json!({"family": "inet", "table": TABLE, "name": name, "type": ty});
    if interval {
        set["flags"] = json!(["interval"]);
    }
    out.push_cmd(|| json!({"add": {"set": set}}));
    finish_set(out, name, elements, json_elements);
}

fn write_map(out: &mut Out, name: &str, kind: &str, elements: Vec<String>, json_elements: Vec<Value>) {
    out.push_str(&format!("\tmap {name} {{\n\t\ttype {kind} : verdict\n"));
    out.push_cmd(|| json!({"add": {"map": {"family": "inet", "table": TABLE, "name": name, "type": kind, "map": "verdict"}}}));
    finish_set(out, name, elements, json_elements);
}

/// A set's or map's elements, and the end of its declaration.
fn finish_set(out: &mut Out, name: &str, elements: Vec<String>, json_elements: Vec<Value>) {
    if out.full {
        write_elements(&mut out.text, &elements);
    }
    out.push_str("\t}\n");
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
    fn icmp_ranges_become_boxes() {
        assert_eq!(icmp_boxes(8 << 8, 8 << 8), vec![(8, 8, 0, 0)]);
        assert_eq!(icmp_boxes(0, 0xffff), vec![(0, 255, 0, 255)]);
        assert_eq!(icmp_boxes((3 << 8) | 4, (5 << 8) | 1), vec![(3, 3, 4, 255), (4, 4, 0, 255), (5, 5, 0, 1)]);
        assert_eq!(icmp_boxes((3 << 8) | 4, (4 << 8) | 1), vec![(3, 3, 4, 255), (4, 4, 0, 1)]);
    }
}

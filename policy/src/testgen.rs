//! Seeded random clusters and policies, as the YAML a user would write, for property tests, the
//! real-packet test and the benchmarks. Deterministic: the same seed gives the same text.

use std::fmt::Write;

/// A small deterministic generator (xorshift64*), so the crate needs no `rand`.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Shape of a generated cluster.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub namespaces: usize,
    pub pods: usize,
    pub policies: usize,
    /// Include Tessera cluster policies (admin/baseline tiers).
    pub cluster_policies: bool,
    /// Peers select whole namespaces (or address blocks) only, never pods by label: the shape
    /// segment compression is made for.
    pub whole_segment_peers: bool,
}

pub const APPS: [&str; 4] = ["web", "api", "db", "cache"];
pub const SEGMENTS: [&str; 3] = ["default", "front", "back"];
/// Ports the generator uses in rules and that probes should cover.
pub const PORTS: [u16; 5] = [53, 80, 443, 5432, 8080];

/// The address of pod `i`: namespace `n` lives in 10.(n).0.0/16, segment `s` in 10.n.s.0/24.
pub fn pod_ip(namespace: usize, segment: usize, index: usize) -> String {
    format!("10.{}.{}.{}", 60 + namespace, segment, 2 + index)
}

/// Segment blocks matching `pod_ip`: `("ns0/front", "10.60.1.0/24")`.
pub fn segment_blocks(shape: &Shape) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for n in 0..shape.namespaces {
        for (s, name) in SEGMENTS.iter().enumerate() {
            out.push((format!("ns{n}/{name}"), format!("10.{}.{s}.0/24", 60 + n)));
        }
    }
    out
}

fn selector(rng: &mut Rng, out: &mut String, indent: &str) {
    match rng.below(5) {
        0 => out.push_str(" {}\n"),
        1 | 2 => {
            let _ = writeln!(out, "\n{indent}matchLabels: {{app: {}}}", rng.pick(&APPS));
        }
        3 => {
            let op = rng.pick(&["In", "NotIn"]);
            let _ = writeln!(
                out,
                "\n{indent}matchExpressions: [{{key: app, operator: {op}, values: [{}, {}]}}]",
                rng.pick(&APPS),
                rng.pick(&APPS)
            );
        }
        _ => {
            let op = rng.pick(&["Exists", "DoesNotExist"]);
            let key = rng.pick(&["tier", "app"]);
            let _ = writeln!(out, "\n{indent}matchExpressions: [{{key: {key}, operator: {op}}}]");
        }
    }
}

fn ns_selector(rng: &mut Rng, shape: &Shape, out: &mut String, indent: &str) {
    if rng.chance(30) {
        out.push_str(" {}\n");
    } else if rng.chance(50) {
        let _ = writeln!(out, "\n{indent}matchLabels: {{team: t{}}}", rng.below(shape.namespaces as u64));
    } else {
        let _ = writeln!(
            out,
            "\n{indent}matchExpressions: [{{key: kubernetes.io/metadata.name, operator: In, values: [ns{}]}}]",
            rng.below(shape.namespaces as u64)
        );
    }
}

fn k8s_peers(rng: &mut Rng, shape: &Shape, out: &mut String, key: &str) {
    if rng.chance(20) {
        return;
    }
    let _ = writeln!(out, "    {key}:");
    for _ in 0..1 + rng.below(2) {
        let kind = if shape.whole_segment_peers { [1, 3][rng.below(2) as usize] } else { rng.below(4) };
        match kind {
            0 => {
                out.push_str("    - podSelector:");
                selector(rng, out, "        ");
            }
            1 => {
                out.push_str("    - namespaceSelector:");
                ns_selector(rng, shape, out, "        ");
            }
            2 => {
                out.push_str("    - namespaceSelector:");
                ns_selector(rng, shape, out, "        ");
                out.push_str("      podSelector:");
                selector(rng, out, "        ");
            }
            _ => {
                let n = 60 + rng.below(shape.namespaces as u64);
                if rng.chance(50) {
                    let _ = writeln!(out, "    - ipBlock: {{cidr: 10.{n}.0.0/16, except: [10.{n}.{}.0/24]}}", rng.below(3));
                } else {
                    let _ = writeln!(out, "    - ipBlock: {{cidr: 192.0.2.0/24}}");
                }
            }
        }
    }
}

fn k8s_ports(rng: &mut Rng, out: &mut String) {
    if rng.chance(30) {
        return;
    }
    out.push_str("    ports:\n");
    for _ in 0..1 + rng.below(2) {
        let proto = rng.pick(&["TCP", "TCP", "UDP", "SCTP"]);
        match rng.below(4) {
            0 => {
                let _ = writeln!(out, "    - {{protocol: {proto}}}");
            }
            1 => {
                let _ = writeln!(out, "    - {{protocol: {proto}, port: {}}}", rng.pick(&PORTS));
            }
            2 => {
                let start = rng.pick(&PORTS);
                let _ = writeln!(out, "    - {{protocol: {proto}, port: {start}, endPort: {}}}", start + rng.below(500) as u16);
            }
            _ => {
                let _ = writeln!(out, "    - {{protocol: {proto}, port: {}}}", rng.pick(&["http", "dns", "pg"]));
            }
        }
    }
}

/// A cluster and its policies, as YAML documents.
pub fn cluster_yaml(seed: u64, shape: Shape) -> String {
    let mut rng = Rng::new(seed);
    let mut out = String::new();
    for n in 0..shape.namespaces {
        let _ = write!(
            out,
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{n}, labels: {{team: t{}}}}}\n---\n",
            rng.below(shape.namespaces as u64)
        );
    }
    // Pods per (namespace, segment), so addresses stay inside the segment's /24.
    let mut used: std::collections::BTreeMap<(usize, usize), usize> = std::collections::BTreeMap::new();
    for i in 0..shape.pods {
        let n = i % shape.namespaces;
        let s = rng.below(SEGMENTS.len() as u64) as usize;
        let count = used.entry((n, s)).or_default();
        let index = *count;
        *count += 1;
        assert!(index < 250, "too many pods for one namespace and segment: use more namespaces");
        let tier = if rng.chance(50) { ", tier: x" } else { "" };
        let _ = write!(
            out,
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: ns{n}, labels: {{app: {}, tessera.io/segment: {}{tier}}}}}\n",
            rng.pick(&APPS),
            SEGMENTS[s]
        );
        let _ = write!(out, "spec:\n  nodeName: node{}\n  containers:\n  - ports:\n", i % 4);
        let _ = writeln!(out, "    - {{name: http, containerPort: {}}}", rng.pick(&[80, 8080]));
        if rng.chance(50) {
            out.push_str("    - {name: dns, containerPort: 53, protocol: UDP}\n");
        }
        if rng.chance(30) {
            out.push_str("    - {name: pg, containerPort: 5432}\n");
        }
        let _ = write!(out, "status: {{podIP: {}}}\n---\n", pod_ip(n, s, index));
    }
    for k in 0..shape.policies {
        let n = rng.below(shape.namespaces as u64);
        if shape.cluster_policies && rng.chance(25) {
            let tier = if rng.chance(50) { "admin" } else { "baseline" };
            let _ = write!(
                out,
                "apiVersion: tessera.io/v1\nkind: TesseraClusterPolicy\nmetadata: {{name: c{k}}}\nspec:\n  tier: {tier}\n  priority: {}\n",
                rng.below(20)
            );
            let _ = writeln!(out, "  subject: {{namespaceSelector: {{matchLabels: {{team: t{}}}}}}}", rng.below(shape.namespaces as u64));
            let dir = if rng.chance(50) { "ingress" } else { "egress" };
            let key = if dir == "ingress" { "from" } else { "to" };
            let _ = writeln!(out, "  {dir}:");
            for _ in 0..1 + rng.below(2) {
                let action = rng.pick(&["allow", "deny", "pass"]);
                let peer = match rng.below(3) {
                    0 => format!("{{namespaceSelector: {{matchLabels: {{team: t{}}}}}}}", rng.below(shape.namespaces as u64)),
                    1 => format!("{{cidr: 10.{}.0.0/16}}", 60 + rng.below(shape.namespaces as u64)),
                    _ => "{any: true}".to_string(),
                };
                let ports =
                    if rng.chance(50) { format!(", ports: [{{protocol: tcp, port: {}}}]", rng.pick(&PORTS)) } else { String::new() };
                let _ = writeln!(out, "  - {{action: {action}, {key}: [{peer}]{ports}}}");
            }
            out.push_str("---\n");
            continue;
        }
        let _ = write!(
            out,
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np{k}, namespace: ns{n}}}\nspec:\n  podSelector:"
        );
        selector(&mut rng, &mut out, "    ");
        let types = rng.below(4);
        match types {
            0 => out.push_str("  policyTypes: [Ingress]\n"),
            1 => out.push_str("  policyTypes: [Egress]\n"),
            2 => out.push_str("  policyTypes: [Ingress, Egress]\n"),
            _ => {}
        }
        for (dir, key) in [("ingress", "from"), ("egress", "to")] {
            if rng.chance(25) {
                continue;
            }
            let rules = rng.below(3);
            if rules == 0 {
                let _ = writeln!(out, "  {dir}: []");
                continue;
            }
            let _ = writeln!(out, "  {dir}:");
            for _ in 0..rules {
                out.push_str("  - {}\n");
                // Replace the empty rule by a real one most of the time.
                if rng.chance(80) {
                    out.truncate(out.len() - "  - {}\n".len());
                    out.push_str("  -\n");
                    let before = out.len();
                    k8s_peers(&mut rng, &shape, &mut out, key);
                    k8s_ports(&mut rng, &mut out);
                    if out.len() == before {
                        out.truncate(before - "  -\n".len());
                        out.push_str("  - {}\n");
                    }
                }
            }
        }
        out.push_str("---\n");
    }
    out
}

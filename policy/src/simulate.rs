//! `simulate` and `explain`: verdicts for every ordered pair of distinct parties and probe, from
//! the reference evaluator.
//!
//! `simulate` answers millions of pairs without evaluating each from scratch. A side's decision
//! depends only on the policies selecting its endpoint, on which rule peers the other party
//! matches (at the address the pair uses), on the destination's port names at the probe, and on
//! the probe; pairs alike in those share one evaluation. Each party's traits are computed once,
//! each side decision once per class, each reason once per pair of decisions, and every line is
//! handed out as it is decided, with its JSON pre-escaped (memory stays flat in the number of
//! verdicts). A test compares every verdict with the reference evaluator run pair by pair.

use rustc_hash::FxHashMap;
use std::net::IpAddr;

use serde::Serialize;

use crate::error::PolicyError;
use crate::eval::{Party, Probe, Verdict, evaluate, peer_matches, side};
use crate::input::Inputs;
use crate::model::{Direction, Endpoint, Peer, Policy, Protocol};

/// One line of `simulate`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairVerdict {
    pub from: String,
    pub to: String,
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(rename = "icmpType", skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    pub allowed: bool,
    pub reason: String,
}

/// Parse `tcp/80`, `udp/53`, `sctp/9000`, `icmp/8` or `icmp/3/4` (type/code).
pub fn parse_probe(text: &str) -> Result<Probe, PolicyError> {
    let err = || PolicyError::field("--port", format!("`{text}` is not PROTO/PORT (tcp/80, udp/53, sctp/9000) or icmp/TYPE[/CODE]"));
    let mut parts = text.split('/');
    let protocol = Protocol::parse(parts.next().ok_or_else(err)?).ok_or_else(err)?;
    let first: u32 = parts.next().ok_or_else(err)?.parse().map_err(|_| err())?;
    let second: Option<u32> = parts.next().map(|p| p.parse().map_err(|_| err())).transpose()?;
    if parts.next().is_some() {
        return Err(err());
    }
    if protocol.has_ports() {
        let port = u16::try_from(first).ok().filter(|p| *p > 0).ok_or_else(err)?;
        if second.is_some() {
            return Err(err());
        }
        Ok(Probe { protocol, port: Some(port), icmp: None })
    } else {
        let t = u8::try_from(first).map_err(|_| err())?;
        let c = u8::try_from(second.unwrap_or(0)).map_err(|_| err())?;
        Ok(Probe { protocol, port: None, icmp: Some((t, c)) })
    }
}

/// The parties: every endpoint with an address, then the external addresses.
fn parties<'a>(inputs: &'a Inputs, externals: &[IpAddr]) -> Vec<(String, Vec<IpAddr>, Option<&'a Endpoint>)> {
    let mut out: Vec<_> = inputs.cluster.endpoints.values().map(|e| (e.id.clone(), e.ips.clone(), Some(e))).collect();
    out.extend(externals.iter().map(|ip| (ip.to_string(), vec![*ip], None)));
    out
}

/// The addresses a packet between two parties uses: the same family, IPv4 first.
fn addresses(from: &[IpAddr], to: &[IpAddr]) -> Option<(IpAddr, IpAddr)> {
    for want_v4 in [true, false] {
        let a = from.iter().find(|ip| ip.is_ipv4() == want_v4);
        let b = to.iter().find(|ip| ip.is_ipv4() == want_v4);
        if let (Some(a), Some(b)) = (a, b) {
            return Some((*a, *b));
        }
    }
    None
}

fn party(e: Option<&Endpoint>, ip: IpAddr) -> Party<'_> {
    match e {
        Some(e) => Party::Endpoint(e, ip),
        None => Party::External(ip),
    }
}

/// Verdicts for every ordered pair of distinct parties and every probe, collected.
pub fn simulate(inputs: &Inputs, externals: &[IpAddr], probes: &[Probe]) -> Result<Vec<PairVerdict>, PolicyError> {
    let mut out = Vec::new();
    simulate_each(inputs, externals, probes, |line| {
        out.push(line.to_verdict());
        std::ops::ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// One verdict as `simulate_each` hands it out: borrowed, with its JSON pre-escaped.
#[derive(Debug, Clone, Copy)]
pub struct VerdictLine<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub probe: &'a Probe,
    pub allowed: bool,
    pub reason: &'a str,
    json_from: &'a str,
    json_to: &'a str,
    json_probe: &'a str,
    json_reason: &'a str,
}

impl VerdictLine<'_> {
    pub fn to_verdict(&self) -> PairVerdict {
        PairVerdict {
            from: self.from.to_string(),
            to: self.to.to_string(),
            protocol: self.probe.protocol.to_string(),
            port: self.probe.port,
            icmp_type: self.probe.icmp.map(|(t, _)| t),
            allowed: self.allowed,
            reason: self.reason.to_string(),
        }
    }

    /// Append the line as JSON, exactly as `PairVerdict` serializes.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"from\":");
        out.extend_from_slice(self.json_from.as_bytes());
        out.extend_from_slice(b",\"to\":");
        out.extend_from_slice(self.json_to.as_bytes());
        out.extend_from_slice(self.json_probe.as_bytes());
        out.extend_from_slice(if self.allowed { b",\"allowed\":true,\"reason\":" } else { b",\"allowed\":false,\"reason\":" });
        out.extend_from_slice(self.json_reason.as_bytes());
        out.push(b'}');
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// What one party brings to a side decision, computed once.
struct Traits {
    name: String,
    json_name: String,
    ips: Vec<IpAddr>,
    endpoint: Option<usize>,
    /// The policies selecting it (interned), for its own sides.
    policy_set: u32,
    /// Which rule peers it matches, per family (interned; `u32::MAX` without an address there).
    class: [u32; 2],
    /// Per probe: the port names that resolve to the probe's port on it (interned).
    port_names: Vec<u32>,
}

/// Interns values as small numbers.
struct Interner<T: std::hash::Hash + Eq>(FxHashMap<T, u32>);

impl<T: std::hash::Hash + Eq> Interner<T> {
    fn new() -> Self {
        Interner(FxHashMap::default())
    }

    fn id(&mut self, value: T) -> u32 {
        let next = self.0.len() as u32;
        *self.0.entry(value).or_insert(next)
    }
}

const DIRECTIONS: [Direction; 2] = [Direction::Egress, Direction::Ingress];
const NONE: u32 = u32::MAX;

/// Side decisions shared between pairs. A side is decided by its endpoint's policies for that
/// direction, by which of *their* peers the other party matches (its "view": a class restricted
/// to those peers), by the destination's port names at the probe, and by the probe.
struct Sides<'a> {
    /// Peer indexes (into the class bitsets) of each policy set's rules, per direction.
    relevant: Vec<[Vec<usize>; 2]>,
    /// Dense: view id by (direction, policy set, class); `NONE` until computed.
    views: [Vec<Vec<u32>>; 2],
    view_ids: Interner<(u8, u32, Vec<bool>)>,
    /// Decision id by (view, destination port names, probe).
    decided: FxHashMap<(u32, u32, usize), u32>,
    /// Distinct decisions: allowed, and the compact text (`None`: decided by no policy).
    decisions: Vec<(bool, Option<String>)>,
    decision_ids: Interner<(bool, Option<String>)>,
    classes: Vec<&'a [u64]>,
}

impl Sides<'_> {
    fn view(&mut self, dir: usize, set: u32, class: u32) -> u32 {
        let slot = &mut self.views[dir][set as usize];
        if slot.is_empty() {
            slot.resize(self.classes.len(), NONE);
        }
        if slot[class as usize] == NONE {
            let bits = self.classes[class as usize];
            let seen: Vec<bool> = self.relevant[set as usize][dir].iter().map(|&k| bits[k / 64] & (1 << (k % 64)) != 0).collect();
            let id = self.view_ids.id((dir as u8, set, seen));
            self.views[dir][set as usize][class as usize] = id;
        }
        self.views[dir][set as usize][class as usize]
    }
}

/// Verdicts for every ordered pair of distinct parties and every probe, handed to `sink` one at
/// a time (memory stays flat in the number of verdicts); `sink` may stop the run early.
///
/// Every pair is answered, as the contract promises: two externals are decided like any pair (no
/// policy side: allowed), and two parties with no address family in common get a denial whose
/// reason says so, since no packet can pass between them.
///
/// Reasons are compact: a denial names the side(s) that deny it, an allowed packet the rule(s)
/// that allow it (or that no policy isolates either end).
pub fn simulate_each(
    inputs: &Inputs,
    externals: &[IpAddr],
    probes: &[Probe],
    mut sink: impl FnMut(&VerdictLine<'_>) -> std::ops::ControlFlow<()>,
) -> Result<(), PolicyError> {
    check_externals(inputs, externals)?;
    let cluster = &inputs.cluster;
    let all = parties(inputs, externals);
    let endpoints: Vec<&Endpoint> = all.iter().filter_map(|(_, _, e)| *e).collect();
    // Every rule peer of every policy, numbered; each policy's range of numbers per direction.
    let mut peers: Vec<&Peer> = Vec::new();
    let mut ranges: Vec<[std::ops::Range<usize>; 2]> = Vec::new();
    for p in &inputs.policies {
        let mut r: [std::ops::Range<usize>; 2] = [0..0, 0..0];
        for (d, dir) in DIRECTIONS.iter().enumerate() {
            let start = peers.len();
            peers.extend(p.rules(*dir).into_iter().flatten().flat_map(|rule| rule.peers.iter()));
            r[d] = start..peers.len();
        }
        ranges.push(r);
    }
    let mut sets: Interner<Vec<usize>> = Interner::new();
    let mut classes: Interner<Vec<u64>> = Interner::new();
    let mut names: Interner<Vec<&str>> = Interner::new();
    let mut selecting: Vec<Vec<&Policy>> = Vec::new();
    let mut relevant: Vec<[Vec<usize>; 2]> = Vec::new();
    let mut traits = Vec::with_capacity(all.len());
    for (name, ips, e) in &all {
        let chosen: Vec<usize> = match e {
            Some(e) => inputs.policies.iter().enumerate().filter(|(_, p)| p.selects(cluster, e)).map(|(i, _)| i).collect(),
            None => Vec::new(),
        };
        let policy_set = sets.id(chosen.clone());
        if policy_set as usize == selecting.len() {
            selecting.push(chosen.iter().map(|&i| &inputs.policies[i]).collect());
            relevant.push([0, 1].map(|d| chosen.iter().flat_map(|&i| ranges[i][d].clone()).collect()));
        }
        let mut class = [NONE; 2];
        for (f, want_v4) in [true, false].into_iter().enumerate() {
            if let Some(ip) = ips.iter().find(|ip| ip.is_ipv4() == want_v4) {
                let me = party(*e, *ip);
                let mut bits = vec![0u64; peers.len().div_ceil(64)];
                for (k, peer) in peers.iter().enumerate() {
                    if peer_matches(cluster, peer, me) {
                        bits[k / 64] |= 1 << (k % 64);
                    }
                }
                class[f] = classes.id(bits);
            }
        }
        let port_names = probes
            .iter()
            .map(|probe| match e {
                None => NONE,
                Some(e) => {
                    let mut list: Vec<&str> = Vec::new();
                    for np in &e.named_ports {
                        // `resolve_port` takes the first port of a name and protocol.
                        if np.protocol == probe.protocol
                            && Some(np.port) == probe.port
                            && e.resolve_port(&np.name, np.protocol) == Some(np.port)
                        {
                            list.push(&np.name);
                        }
                    }
                    list.sort_unstable();
                    list.dedup();
                    names.id(list)
                }
            })
            .collect();
        let endpoint = e.map(|e| endpoints.iter().position(|x| std::ptr::eq(*x, e)).unwrap_or(usize::MAX));
        traits.push(Traits { name: name.clone(), json_name: json_string(name), ips: ips.clone(), endpoint, policy_set, class, port_names });
    }
    let json_probes: Vec<String> = probes
        .iter()
        .map(|p| {
            let mut text = format!(",\"protocol\":{}", json_string(&p.protocol.to_string()));
            if let Some(port) = p.port {
                text.push_str(&format!(",\"port\":{port}"));
            }
            if let Some((t, _)) = p.icmp {
                text.push_str(&format!(",\"icmpType\":{t}"));
            }
            text
        })
        .collect();
    let mut class_bits: Vec<(&Vec<u64>, u32)> = classes.0.iter().map(|(bits, id)| (bits, *id)).collect();
    class_bits.sort_by_key(|(_, id)| *id);
    let mut sides = Sides {
        relevant,
        views: [vec![Vec::new(); selecting.len()], vec![Vec::new(); selecting.len()]],
        view_ids: Interner::new(),
        decided: FxHashMap::default(),
        decisions: Vec::new(),
        decision_ids: Interner::new(),
        classes: class_bits.into_iter().map(|(bits, _)| bits.as_slice()).collect(),
    };
    // Reasons by pair of decisions (`NONE`: an external end): text and JSON text.
    let mut reasons: FxHashMap<(u32, u32), (String, String)> = FxHashMap::default();
    for (i, from) in traits.iter().enumerate() {
        for (j, to) in traits.iter().enumerate() {
            if i == j {
                continue;
            }
            let Some((a, b)) = addresses(&from.ips, &to.ips) else {
                let reason =
                    format!("no address family in common ({}: {}; {}: {})", from.name, families(&from.ips), to.name, families(&to.ips));
                let json = json_string(&reason);
                for (k, probe) in probes.iter().enumerate() {
                    let line = VerdictLine {
                        from: &from.name,
                        to: &to.name,
                        probe,
                        allowed: false,
                        reason: &reason,
                        json_from: &from.json_name,
                        json_to: &to.json_name,
                        json_probe: &json_probes[k],
                        json_reason: &json,
                    };
                    if sink(&line).is_break() {
                        return Ok(());
                    }
                }
                continue;
            };
            let f = usize::from(!a.is_ipv4());
            let (src, dst) = (party(from.endpoint.map(|x| endpoints[x]), a), party(to.endpoint.map(|x| endpoints[x]), b));
            // The views do not depend on the probe.
            let egress_view = from.endpoint.map(|_| sides.view(0, from.policy_set, to.class[f]));
            let ingress_view = to.endpoint.map(|_| sides.view(1, to.policy_set, from.class[f]));
            for (k, probe) in probes.iter().enumerate() {
                let ports = to.port_names[k];
                let mut decide = |owner: &Traits, d: usize, view: Option<u32>, peer: Party<'_>| -> u32 {
                    let (Some(view), Some(e)) = (view, owner.endpoint.map(|x| endpoints[x])) else { return NONE };
                    if let Some(id) = sides.decided.get(&(view, ports, k)) {
                        return *id;
                    }
                    let v = side(cluster, &selecting[owner.policy_set as usize], e, DIRECTIONS[d], peer, dst, *probe, false);
                    let by_policy = !matches!(v.decision, crate::eval::Decision::NotIsolated);
                    let content = (v.allowed, if by_policy { v.compact(if d == 0 { "egress" } else { "ingress" }) } else { None });
                    let id = sides.decision_ids.id(content.clone());
                    if id as usize == sides.decisions.len() {
                        sides.decisions.push(content);
                    }
                    sides.decided.insert((view, ports, k), id);
                    id
                };
                let egress = decide(from, 0, egress_view, dst);
                let ingress = decide(to, 1, ingress_view, src);
                let allowed_side = |d: u32| d == NONE || sides.decisions[d as usize].0;
                let allowed = allowed_side(egress) && allowed_side(ingress);
                let (reason, json_reason) = {
                    let entry = reasons.entry((egress, ingress)).or_insert_with(|| {
                        let text = compact_reason(&sides.decisions, egress, ingress, allowed);
                        let json = json_string(&text);
                        (text, json)
                    });
                    (&entry.0, &entry.1)
                };
                let line = VerdictLine {
                    from: &from.name,
                    to: &to.name,
                    probe,
                    allowed,
                    reason,
                    json_from: &from.json_name,
                    json_to: &to.json_name,
                    json_probe: &json_probes[k],
                    json_reason,
                };
                if sink(&line).is_break() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// A denial names the denying side(s); an allowed packet the rules that allowed it.
fn compact_reason(decisions: &[(bool, Option<String>)], egress: u32, ingress: u32, allowed: bool) -> String {
    let sides: Vec<&(bool, Option<String>)> =
        [egress, ingress].into_iter().filter(|d| *d != NONE).map(|d| &decisions[d as usize]).collect();
    if sides.is_empty() {
        return "both ends are external".to_string();
    }
    let said: Vec<&str> = sides.iter().filter(|(ok, _)| *ok == allowed).filter_map(|(_, text)| text.as_deref()).collect();
    if said.is_empty() { "no policy isolates either end".to_string() } else { said.join("; ") }
}

/// External parties must be distinct and outside the cluster's endpoints.
pub fn check_externals(inputs: &Inputs, externals: &[IpAddr]) -> Result<(), PolicyError> {
    for (i, ip) in externals.iter().enumerate() {
        if let Some(e) = inputs.cluster.endpoint_by_ip(*ip) {
            return Err(PolicyError::field("--external", format!("{ip} is the address of {}", e.id)));
        }
        if externals[..i].contains(ip) {
            return Err(PolicyError::field("--external", format!("{ip} is given twice")));
        }
    }
    Ok(())
}

/// How many verdicts `simulate` gives: every ordered pair of distinct parties, per probe.
pub fn verdict_count(inputs: &Inputs, externals: &[IpAddr], probes: &[Probe]) -> u64 {
    let parties = (inputs.cluster.endpoints.len() + externals.len()) as u64;
    parties * parties.saturating_sub(1) * probes.len() as u64
}

fn families(ips: &[IpAddr]) -> &'static str {
    match (ips.iter().any(IpAddr::is_ipv4), ips.iter().any(IpAddr::is_ipv6)) {
        (true, true) => "IPv4 and IPv6",
        (true, false) => "IPv4 only",
        (false, true) => "IPv6 only",
        (false, false) => "no address",
    }
}

/// The verdict for one pair, with every deciding rule.
pub fn explain(inputs: &Inputs, from: &str, to: &str, probe: Probe) -> Result<Verdict, PolicyError> {
    explain_in(&inputs.cluster, &inputs.policies, from, to, probe)
}

/// [`explain`] over a cluster and policies held elsewhere (a compiler's).
pub fn explain_in(
    cluster: &crate::model::Cluster,
    policies: &[crate::model::Policy],
    from: &str,
    to: &str,
    probe: Probe,
) -> Result<Verdict, PolicyError> {
    let find = |name: &str, field: &str| -> Result<(Vec<IpAddr>, Option<&crate::model::Endpoint>), PolicyError> {
        if let Some(e) = cluster.endpoints.get(name) {
            return Ok((e.ips.clone(), Some(e)));
        }
        let ip: IpAddr = name.parse().map_err(|_| {
            PolicyError::field(field, format!("`{name}` is neither a pod (NAMESPACE/NAME) with an IP in the inputs nor an IP address"))
        })?;
        Ok(match cluster.endpoint_by_ip(ip) {
            Some(e) => (vec![ip], Some(e)),
            None => (vec![ip], None),
        })
    };
    let (from_ips, from_e) = find(from, "--from")?;
    let (to_ips, to_e) = find(to, "--to")?;
    let (a, b) = addresses(&from_ips, &to_ips).ok_or_else(|| PolicyError::field("--to", "the two sides share no address family"))?;
    Ok(evaluate(cluster, policies, party(from_e, a), party(to_e, b), probe))
}

//! `simulate` and `explain`: verdicts for every ordered pair of distinct parties and probe, from
//! the reference evaluator.

use std::net::IpAddr;

use serde::Serialize;

use crate::error::PolicyError;
use crate::eval::{Party, Probe, Verdict, evaluate, evaluate_with};
use crate::input::Inputs;
use crate::model::Policy;
use crate::model::Protocol;

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
fn parties<'a>(inputs: &'a Inputs, externals: &[IpAddr]) -> Vec<(String, Vec<IpAddr>, Option<&'a crate::model::Endpoint>)> {
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

fn party<'a>(e: Option<&'a crate::model::Endpoint>, ip: IpAddr) -> Party<'a> {
    match e {
        Some(e) => Party::Endpoint(e, ip),
        None => Party::External(ip),
    }
}

/// Verdicts for every ordered pair of distinct parties and every probe, collected.
pub fn simulate(inputs: &Inputs, externals: &[IpAddr], probes: &[Probe]) -> Result<Vec<PairVerdict>, PolicyError> {
    let mut out = Vec::new();
    simulate_each(inputs, externals, probes, |v| {
        out.push(v);
        std::ops::ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// Verdicts for every ordered pair of distinct parties and every probe, handed to `sink` one at
/// a time (memory stays flat in the number of verdicts); `sink` may stop the run early.
///
/// Every pair is answered, as the contract promises: two externals are decided like any pair (no
/// policy side: allowed), and two parties with no address family in common get a denial whose
/// reason says so, since no packet can pass between them.
pub fn simulate_each(
    inputs: &Inputs,
    externals: &[IpAddr],
    probes: &[Probe],
    mut sink: impl FnMut(PairVerdict) -> std::ops::ControlFlow<()>,
) -> Result<(), PolicyError> {
    check_externals(inputs, externals)?;
    let all = parties(inputs, externals);
    // Policies selecting each endpoint, found once instead of per pair.
    let selecting: Vec<Vec<&Policy>> = all
        .iter()
        .map(|(_, _, e)| match e {
            Some(e) => inputs.policies.iter().filter(|p| p.selects(&inputs.cluster, e)).collect(),
            None => Vec::new(),
        })
        .collect();
    for (i, (from, from_ips, from_e)) in all.iter().enumerate() {
        for (j, (to, to_ips, to_e)) in all.iter().enumerate() {
            if i == j {
                continue;
            }
            let pair = addresses(from_ips, to_ips);
            for probe in probes {
                let (allowed, reason) = match pair {
                    Some((a, b)) => {
                        let v =
                            evaluate_with(&inputs.cluster, &selecting[i], &selecting[j], party(*from_e, a), party(*to_e, b), *probe, false);
                        (v.allowed, v.reason(from, to))
                    }
                    None => (false, format!("no address family in common ({from}: {}; {to}: {})", families(from_ips), families(to_ips))),
                };
                let verdict = PairVerdict {
                    from: from.clone(),
                    to: to.clone(),
                    protocol: probe.protocol.to_string(),
                    port: probe.port,
                    icmp_type: probe.icmp.map(|(t, _)| t),
                    allowed,
                    reason,
                };
                if sink(verdict).is_break() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
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
    let find = |name: &str, field: &str| -> Result<(Vec<IpAddr>, Option<&crate::model::Endpoint>), PolicyError> {
        if let Some(e) = inputs.cluster.endpoints.get(name) {
            return Ok((e.ips.clone(), Some(e)));
        }
        let ip: IpAddr = name.parse().map_err(|_| {
            PolicyError::field(field, format!("`{name}` is neither a pod (NAMESPACE/NAME) with an IP in the inputs nor an IP address"))
        })?;
        Ok(match inputs.cluster.endpoint_by_ip(ip) {
            Some(e) => (vec![ip], Some(e)),
            None => (vec![ip], None),
        })
    };
    let (from_ips, from_e) = find(from, "--from")?;
    let (to_ips, to_e) = find(to, "--to")?;
    let (a, b) = addresses(&from_ips, &to_ips).ok_or_else(|| PolicyError::field("--to", "the two sides share no address family"))?;
    Ok(evaluate(&inputs.cluster, &inputs.policies, party(from_e, a), party(to_e, b), probe))
}

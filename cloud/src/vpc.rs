//! VPC route tables, pure: what a table should hold (each route-plan CIDR → the instance or
//! network interface of a healthy gateway host of its group) and the fewest calls that take
//! what it holds there — without ever touching a route Tessera does not own.
//!
//! Ownership: a route is Tessera's when its destination lies inside one of Tessera's networks
//! and Tessera created it. The caller keeps what it wrote in the store ([`Written`]), before
//! each call and again once EC2 answered, so a crash or a lost answer between the two leaves a
//! record the next pass settles; a route of ours found pointing elsewhere than it was asked to
//! was changed out of band, which is drift. Everything else — `local`,
//! internet and NAT gateways, peering, transit, routes other tools made inside our space — is
//! foreign: counted against the table's limit, and never changed; a foreign route on a CIDR
//! Tessera wants is reported as a collision, and taken over only with `adopt`.

use std::collections::BTreeMap;

use ipnet::IpNet;

/// Where a route sends traffic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// An EC2 instance (its primary interface).
    Instance(String),
    /// An elastic network interface.
    Interface(String),
    /// Anything Tessera never points at: `local`, a gateway, a peering, a transit gateway…
    /// (kind, id), as the API described it.
    Other(String, String),
}

impl Target {
    /// An EC2 id a route may point at for a host: an instance (`i-` and 8 or 17 hex digits) or
    /// a network interface (`eni-`, likewise).
    pub fn from_ec2_id(id: &str) -> Result<Target, String> {
        let hex =
            |rest: &str| (rest.len() == 8 || rest.len() == 17) && rest.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        match (id.strip_prefix("i-"), id.strip_prefix("eni-")) {
            (Some(rest), _) if hex(rest) => Ok(Target::Instance(id.to_string())),
            (_, Some(rest)) if hex(rest) => Ok(Target::Interface(id.to_string())),
            _ => Err(format!("`{id}` is neither an instance id (i-0123456789abcdef0) nor a network interface id (eni-0123456789abcdef0)")),
        }
    }
}

/// A route as the table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: IpNet,
    pub target: Target,
    /// The network interface the route resolves to, when EC2 says (it does for instance routes
    /// too): a route asked for as that interface is the same route.
    pub interface: Option<String>,
}

impl Route {
    /// Whether this route already points where `want` says.
    pub fn points_at(&self, want: &Target) -> bool {
        &self.target == want || matches!(want, Target::Interface(eni) if self.interface.as_deref() == Some(eni.as_str()))
    }
}

/// One mutating call.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Call {
    Delete {
        destination: IpNet,
    },
    /// A changed target: one ReplaceRoute, never a delete and a create (no window without it).
    Replace {
        destination: IpNet,
        target: Target,
    },
    Create {
        destination: IpNet,
        target: Target,
    },
}

/// What Tessera wrote at one destination of a table: its ownership record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The target last asked for.
    pub target: Target,
    /// Whether EC2 answered that call. An unanswered one (a crash, a lost answer) may or may
    /// not have landed: its route is found at `target`, at `previous` (a replace) or absent (a
    /// create) — none of which is drift.
    pub confirmed: bool,
    /// The target before an unanswered replace.
    pub previous: Option<Target>,
}

impl Written {
    /// A record EC2 answered.
    pub fn confirmed(target: Target) -> Written {
        Written { target, confirmed: true, previous: None }
    }

    /// Whether the route found at this destination is the one Tessera wrote. An unanswered
    /// create found pointing elsewhere is not: someone else made that route.
    fn owns(&self, route: &Route) -> bool {
        self.confirmed || self.previous.is_some() || route.points_at(&self.target)
    }

    /// Whether the route found here was changed out of band: it points neither where it was
    /// asked to nor, for an unanswered replace, where it pointed before.
    fn drifted(&self, route: &Route) -> bool {
        !route.points_at(&self.target) && (self.confirmed || !self.previous.as_ref().is_some_and(|p| route.points_at(p)))
    }

    /// Whether a route of ours was there before (so its absence is drift).
    fn landed(&self) -> bool {
        self.confirmed || self.previous.is_some()
    }
}

/// Destination → what Tessera wrote there.
pub type Owned = BTreeMap<IpNet, Written>;

/// A foreign route on a destination Tessera wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    pub destination: IpNet,
    pub foreign: Target,
    pub wanted: Target,
}

/// What to do to one table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TablePlan {
    /// Deletes first (room under the limit), then replaces, then creates.
    pub calls: Vec<Call>,
    pub collisions: Vec<Collision>,
    /// Tessera's routes once the calls are made, with their targets.
    pub owned: BTreeMap<IpNet, Target>,
    /// Records to settle without a call: an unanswered call found landed (`Some`: confirm at
    /// that target), a record of a route that is gone and not wanted, or that someone else's
    /// route took (`None`: forget it).
    pub settle: Vec<(IpNet, Option<Target>)>,
    /// Routes of ours found gone or retargeted out of band, restored by these calls.
    pub drift: usize,
}

/// Whether `destination` lies inside one of `networks`.
fn ours(networks: &[IpNet], destination: &IpNet) -> bool {
    networks.iter().any(|n| n.contains(destination))
}

/// The first of Tessera's networks that overlaps the VPC's own addresses (the table's `local`
/// routes), with the VPC CIDR it overlaps: routes there could not be told from the VPC's.
pub fn overlap_with_vpc(table: &[Route], networks: &[IpNet]) -> Option<(IpNet, IpNet)> {
    let vpc = table.iter().filter(|r| matches!(&r.target, Target::Other(kind, _) if kind == "local")).map(|r| r.destination.trunc());
    vpc.flat_map(|v| networks.iter().map(move |n| (*n, v))).find(|(n, v)| n.contains(v) || v.contains(n))
}

/// Whether `route` is Tessera's.
fn mine(owned: &Owned, networks: &[IpNet], route: &Route) -> bool {
    let destination = route.destination.trunc();
    ours(networks, &destination) && owned.get(&destination).is_some_and(|w| w.owns(route))
}

/// How many routes Tessera may write to `table`: its limit less the routes that are not ours.
pub fn budget(table: &[Route], owned: &Owned, networks: &[IpNet], limit: usize) -> usize {
    let foreign = table.iter().filter(|r| !mine(owned, networks, r)).count();
    limit.saturating_sub(foreign)
}

/// The calls that take `table` to `desired` (destination → target). `owned` is what Tessera
/// wrote in this table before; only destinations inside `networks` are ever ours.
pub fn plan_table(table: &[Route], owned: &Owned, desired: &BTreeMap<IpNet, Target>, networks: &[IpNet], adopt: bool) -> TablePlan {
    let actual: BTreeMap<IpNet, &Route> = table.iter().map(|r| (r.destination.trunc(), r)).collect();
    let mut plan = TablePlan::default();
    let (mut deletes, mut replaces, mut creates) = (Vec::new(), Vec::new(), Vec::new());
    for (destination, route) in &actual {
        let target = &route.target;
        let written = owned.get(destination);
        let mine = mine(owned, networks, route);
        if mine && written.is_some_and(|w| w.drifted(route)) {
            plan.drift += 1;
        }
        if !mine && written.is_some() {
            // An unanswered create, and someone else's route took the destination.
            plan.settle.push((*destination, None));
        }
        match (mine, desired.get(destination)) {
            (true, Some(want)) if route.points_at(want) => {
                plan.owned.insert(*destination, want.clone());
                if written.is_some_and(|w| !w.confirmed) {
                    plan.settle.push((*destination, Some(want.clone())));
                }
            }
            (true, Some(want)) => {
                // Ours, pointing elsewhere: a gateway moved, or someone retargeted it.
                replaces.push(Call::Replace { destination: *destination, target: want.clone() });
                plan.owned.insert(*destination, want.clone());
            }
            (true, None) => deletes.push(Call::Delete { destination: *destination }),
            (false, Some(want)) if route.points_at(want) => {
                // Someone made exactly our route: take it as ours only when asked to.
                if adopt && ours(networks, destination) {
                    plan.owned.insert(*destination, want.clone());
                } else {
                    plan.collisions.push(Collision { destination: *destination, foreign: target.clone(), wanted: want.clone() });
                }
            }
            (false, Some(want)) => {
                if adopt && ours(networks, destination) {
                    replaces.push(Call::Replace { destination: *destination, target: want.clone() });
                    plan.owned.insert(*destination, want.clone());
                } else {
                    plan.collisions.push(Collision { destination: *destination, foreign: target.clone(), wanted: want.clone() });
                }
            }
            (false, None) => {}
        }
    }
    for (destination, target) in desired {
        if actual.contains_key(destination) || !ours(networks, destination) {
            continue;
        }
        creates.push(Call::Create { destination: *destination, target: target.clone() });
        plan.owned.insert(*destination, target.clone());
        // Ours before, and gone: deleted out of band.
        if owned.get(destination).is_some_and(Written::landed) {
            plan.drift += 1;
        }
    }
    // Records of routes that are gone and not wanted (a delete whose answer was lost).
    for destination in owned.keys() {
        if !actual.contains_key(destination) && !desired.contains_key(destination) {
            plan.settle.push((*destination, None));
        }
    }
    plan.calls.extend(deletes);
    plan.calls.extend(replaces);
    plan.calls.extend(creates);
    plan
}

/// A host that can carry a group's traffic: its EC2 target and whether its agent was seen
/// within the failover time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub host: String,
    pub target: Target,
    pub healthy: bool,
}

/// The gateway of a group: the current one while it is healthy (no flapping), else the
/// healthy candidate first by name; none when no candidate is healthy (the route stays where
/// it is rather than vanish: traffic to a dead gateway fails either way, and it comes back).
pub fn gateway<'a>(current: Option<&str>, candidates: &'a [Candidate]) -> Option<&'a Candidate> {
    let healthy = || candidates.iter().filter(|c| c.healthy);
    current.and_then(|h| healthy().find(|c| c.host == h)).or_else(|| healthy().min_by(|a, b| a.host.cmp(&b.host)))
}

/// A route the plan wants in the VPC (a group's CIDR, within the table's budget) and the hosts
/// of the group that can carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub destination: IpNet,
    pub candidates: Vec<Candidate>,
}

/// What each wanted destination should point at, given what Tessera wrote before (`owned`):
/// its gateway's target — the current gateway while it is healthy, else the first healthy
/// host. With no healthy host a route keeps its current target rather than vanish (traffic to
/// a dead gateway fails either way, and it may come back); a destination never written and with
/// no healthy host is left out.
pub fn desired(wanted: &[Wanted], owned: &Owned) -> BTreeMap<IpNet, Target> {
    let mut out = BTreeMap::new();
    for w in wanted {
        let destination = w.destination.trunc();
        let written = owned.get(&destination).map(|w| &w.target);
        let current = written.and_then(|t| w.candidates.iter().find(|c| &c.target == t)).map(|c| c.host.as_str());
        match (gateway(current, &w.candidates), written) {
            (Some(g), _) => {
                out.insert(destination, g.target.clone());
            }
            (None, Some(t)) => {
                out.insert(destination, t.clone());
            }
            (None, None) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().expect("net")
    }

    fn eni(id: &str) -> Target {
        Target::Interface(id.to_string())
    }

    fn route(dst: &str, target: Target) -> Route {
        Route { destination: net(dst), target, interface: None }
    }

    fn desired(list: &[(&str, Target)]) -> BTreeMap<IpNet, Target> {
        list.iter().map(|(d, t)| (net(d), t.clone())).collect()
    }

    /// What Tessera wrote before, every call answered.
    fn owned(list: &[(&str, Target)]) -> Owned {
        list.iter().map(|(d, t)| (net(d), Written::confirmed(t.clone()))).collect()
    }

    const NETWORKS: [&str; 1] = ["10.96.0.0/16"];

    fn networks() -> Vec<IpNet> {
        NETWORKS.iter().map(|n| net(n)).collect()
    }

    #[test]
    fn foreign_routes_are_never_touched_and_count_against_the_limit() {
        let table = vec![
            route("172.31.0.0/16", Target::Other("local".into(), "local".into())),
            route("0.0.0.0/0", Target::Other("gateway".into(), "igw-1".into())),
            route("10.50.0.0/16", Target::Other("peering".into(), "pcx-1".into())),
            route("10.96.0.0/17", eni("eni-a")),
        ];
        let mine = owned(&[("10.96.0.0/17", eni("eni-a"))]);
        let plan = plan_table(&table, &mine, &desired(&[("10.96.0.0/17", eni("eni-a"))]), &networks(), false);
        assert_eq!(plan, TablePlan { owned: desired(&[("10.96.0.0/17", eni("eni-a"))]), ..Default::default() });
        assert_eq!(budget(&table, &mine, &networks(), 50), 47);
        // Even a foreign route inside our networks that we do not want is left alone.
        let table = vec![route("10.96.200.0/24", eni("eni-other"))];
        assert_eq!(plan_table(&table, &BTreeMap::new(), &desired(&[]), &networks(), false).calls, vec![]);
    }

    #[test]
    fn the_fewest_calls_deletes_first_and_a_new_target_is_one_replace() {
        let table = vec![route("10.96.0.0/17", eni("eni-a")), route("10.96.128.0/18", eni("eni-b")), route("10.96.192.0/18", eni("eni-c"))];
        let want = desired(&[("10.96.0.0/17", eni("eni-a")), ("10.96.128.0/18", eni("eni-d")), ("10.96.224.0/19", eni("eni-e"))]);
        let before = owned(&[("10.96.0.0/17", eni("eni-a")), ("10.96.128.0/18", eni("eni-b")), ("10.96.192.0/18", eni("eni-c"))]);
        let plan = plan_table(&table, &before, &want, &networks(), false);
        assert_eq!(
            plan.calls,
            vec![
                Call::Delete { destination: net("10.96.192.0/18") },
                Call::Replace { destination: net("10.96.128.0/18"), target: eni("eni-d") },
                Call::Create { destination: net("10.96.224.0/19"), target: eni("eni-e") },
            ]
        );
        assert_eq!(plan.owned, want);
        // A gateway moving is no drift.
        assert_eq!(plan.drift, 0);
        // Applying the plan and planning again: nothing to do (idempotent).
        let after = vec![route("10.96.0.0/17", eni("eni-a")), route("10.96.128.0/18", eni("eni-d")), route("10.96.224.0/19", eni("eni-e"))];
        let written = plan.owned.iter().map(|(d, t)| (*d, Written::confirmed(t.clone()))).collect();
        assert_eq!(plan_table(&after, &written, &want, &networks(), false).calls, vec![]);
    }

    #[test]
    fn drift_is_repaired_and_counted() {
        let want = desired(&[("10.96.0.0/17", eni("eni-a")), ("10.96.128.0/17", eni("eni-b"))]);
        let mine = owned(&[("10.96.0.0/17", eni("eni-a")), ("10.96.128.0/17", eni("eni-b"))]);
        // One deleted out of band, the other retargeted.
        let table = vec![route("10.96.128.0/17", eni("eni-x"))];
        let plan = plan_table(&table, &mine, &want, &networks(), false);
        assert_eq!(plan.drift, 2);
        assert_eq!(
            plan.calls,
            vec![
                Call::Replace { destination: net("10.96.128.0/17"), target: eni("eni-b") },
                Call::Create { destination: net("10.96.0.0/17"), target: eni("eni-a") },
            ]
        );
    }

    #[test]
    fn a_foreign_route_on_a_wanted_cidr_is_a_collision_unless_adopted() {
        let table = vec![route("10.96.0.0/17", eni("eni-theirs"))];
        let want = desired(&[("10.96.0.0/17", eni("eni-a"))]);
        let plan = plan_table(&table, &BTreeMap::new(), &want, &networks(), false);
        assert_eq!(plan.calls, vec![]);
        assert_eq!(plan.collisions, vec![Collision { destination: net("10.96.0.0/17"), foreign: eni("eni-theirs"), wanted: eni("eni-a") }]);
        let adopted = plan_table(&table, &BTreeMap::new(), &want, &networks(), true);
        assert_eq!(adopted.calls, vec![Call::Replace { destination: net("10.96.0.0/17"), target: eni("eni-a") }]);
        assert_eq!(adopted.owned, want);
        // A route outside our networks is never ours, adopt or not.
        let outside = desired(&[("10.50.0.0/16", eni("eni-a"))]);
        assert_eq!(plan_table(&[], &BTreeMap::new(), &outside, &networks(), true).calls, vec![]);
    }

    #[test]
    fn destinations_compare_canonically() {
        // The API may describe a route with host bits set; it is the same destination.
        let table = vec![Route { destination: "10.96.0.1/17".parse().expect("net"), target: eni("eni-a"), interface: None }];
        let want = desired(&[("10.96.0.0/17", eni("eni-a"))]);
        let plan = plan_table(&table, &owned(&[("10.96.0.0/17", eni("eni-a"))]), &want, &networks(), false);
        assert_eq!((plan.calls, plan.drift), (vec![], 0));
    }

    #[test]
    fn the_gateway_stays_while_healthy_and_moves_to_the_first_healthy_host() {
        let c = |host: &str, healthy: bool| Candidate { host: host.into(), target: Target::Instance(format!("i-{host}")), healthy };
        let all = [c("b", true), c("a", true), c("c", false)];
        assert_eq!(gateway(Some("b"), &all).map(|g| g.host.as_str()), Some("b"));
        assert_eq!(gateway(Some("c"), &all).map(|g| g.host.as_str()), Some("a"));
        assert_eq!(gateway(None, &all).map(|g| g.host.as_str()), Some("a"));
        assert_eq!(gateway(Some("a"), &[c("a", false)]), None);
    }

    #[test]
    fn each_route_points_at_a_healthy_gateway_of_its_group() {
        let c = |host: &str, healthy: bool| Candidate { host: host.into(), target: Target::Instance(format!("i-{host}")), healthy };
        let wanted = |candidates: Vec<Candidate>| vec![Wanted { destination: net("10.96.0.0/17"), candidates }];
        let written = |host: &str| owned(&[("10.96.0.0/17", Target::Instance(format!("i-{host}")))]);
        let to = |host: &str| desired(&[("10.96.0.0/17", Target::Instance(format!("i-{host}")))]);
        // A healthy current gateway stays, even if another sorts first.
        assert_eq!(super::desired(&wanted(vec![c("a", true), c("b", true)]), &written("b")), to("b"));
        // It falls silent: the route moves to the first healthy host.
        assert_eq!(super::desired(&wanted(vec![c("a", true), c("b", false)]), &written("b")), to("a"));
        // Nobody healthy: the route stays where it is; never written: no route at all.
        assert_eq!(super::desired(&wanted(vec![c("a", false), c("b", false)]), &written("b")), to("b"));
        assert_eq!(super::desired(&wanted(vec![c("a", false)]), &BTreeMap::new()), BTreeMap::new());
    }

    #[test]
    fn an_unanswered_call_is_settled_by_what_the_table_holds_and_is_no_drift() {
        let unanswered = |target: Target, previous: Option<Target>| Written { target, confirmed: false, previous };
        let want = desired(&[("10.96.0.0/17", eni("eni-a"))]);
        let at = |target: Option<Target>| target.map(|t| route("10.96.0.0/17", t)).into_iter().collect::<Vec<_>>();
        let create = [(net("10.96.0.0/17"), unanswered(eni("eni-a"), None))].into_iter().collect();
        // The create landed: confirmed without a call.
        let plan = plan_table(&at(Some(eni("eni-a"))), &create, &want, &networks(), false);
        assert_eq!((plan.calls, plan.settle, plan.drift), (vec![], vec![(net("10.96.0.0/17"), Some(eni("eni-a")))], 0));
        // It did not: made again, no drift.
        let plan = plan_table(&at(None), &create, &want, &networks(), false);
        assert_eq!((plan.calls, plan.drift), (vec![Call::Create { destination: net("10.96.0.0/17"), target: eni("eni-a") }], 0));
        // Someone else's route took the destination meanwhile: theirs, and the record goes.
        let plan = plan_table(&at(Some(eni("eni-theirs"))), &create, &want, &networks(), false);
        assert_eq!((plan.calls, plan.settle, plan.collisions.len()), (vec![], vec![(net("10.96.0.0/17"), None)], 1));
        // A replace that did not land: made again, no drift; one that landed: confirmed.
        let replace = [(net("10.96.0.0/17"), unanswered(eni("eni-a"), Some(eni("eni-old"))))].into_iter().collect();
        let plan = plan_table(&at(Some(eni("eni-old"))), &replace, &want, &networks(), false);
        assert_eq!((plan.calls, plan.drift), (vec![Call::Replace { destination: net("10.96.0.0/17"), target: eni("eni-a") }], 0));
        let plan = plan_table(&at(Some(eni("eni-a"))), &replace, &want, &networks(), false);
        assert_eq!((plan.calls, plan.settle, plan.drift), (vec![], vec![(net("10.96.0.0/17"), Some(eni("eni-a")))], 0));
        // A delete whose answer was lost: the route is gone, its record is forgotten.
        let plan = plan_table(&[], &owned(&[("10.96.0.0/17", eni("eni-a"))]), &BTreeMap::new(), &networks(), false);
        assert_eq!((plan.calls, plan.settle), (vec![], vec![(net("10.96.0.0/17"), None)]));
    }

    #[test]
    fn a_network_overlapping_the_vpc_is_found() {
        let local = |cidr: &str| route(cidr, Target::Other("local".into(), "local".into()));
        let igw = route("10.96.0.0/16", Target::Other("gateway".into(), "igw-1".into()));
        assert_eq!(overlap_with_vpc(&[local("172.31.0.0/16"), igw.clone()], &networks()), None);
        assert_eq!(overlap_with_vpc(&[local("10.0.0.0/8")], &networks()), Some((net("10.96.0.0/16"), net("10.0.0.0/8"))));
        assert_eq!(overlap_with_vpc(&[local("10.96.4.0/24")], &networks()), Some((net("10.96.0.0/16"), net("10.96.4.0/24"))));
    }

    #[test]
    fn ec2_ids_are_instances_or_interfaces() {
        assert_eq!(Target::from_ec2_id("i-0123456789abcdef0"), Ok(Target::Instance("i-0123456789abcdef0".into())));
        assert_eq!(Target::from_ec2_id("eni-12345678"), Ok(Target::Interface("eni-12345678".into())));
        for bad in ["i-0123", "igw-12345678", "eni-0123456789ABCDEF0", "i-0123456789abcdefg", ""] {
            assert!(Target::from_ec2_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_instance_route_is_the_route_to_its_interface() {
        // EC2 describes a route to an instance with the instance and its primary interface.
        let table =
            vec![Route { destination: net("10.96.0.0/17"), target: Target::Instance("i-1".into()), interface: Some("eni-1".into()) }];
        let want = desired(&[("10.96.0.0/17", eni("eni-1"))]);
        let plan = plan_table(&table, &owned(&[("10.96.0.0/17", eni("eni-1"))]), &want, &networks(), false);
        assert_eq!((plan.calls, plan.drift), (vec![], 0));
    }
}

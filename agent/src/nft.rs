//! The agent's hold on `table inet tessera`: it owns that table and nothing else.
//!
//! A full state replaces the table in one `nft -f` transaction (create-if-missing, delete,
//! recreate), so there is no moment without the table. A change is one transaction of what
//! differs: a change of elements alone (most changes: peers and ports come and go) is sent to
//! nf_tables over netlink as one batch, encoded by [`crate::elements`] — no `nft` process, no
//! reading of the table's declarations; a change of declarations is an `nft -f` script. Once
//! acknowledged, the changed sets are listed and checked off the change's path. A full
//! verification lists the table and compares what the kernel holds (elements per set, rules)
//! with what was applied.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tessera_agent_api::Ruleset;

use crate::elements::KeyType;
use crate::error::NftError;

/// The one table the agent owns: the one the policy engine renders.
pub use tessera_agent_api::NFT_TABLE as TABLE;

/// Sets up to this size are listed and checked after a delta.
pub const DELTA_VERIFY_LIMIT: usize = 10_000;

/// At most this many changed sets are listed after a delta (each listing is an nft run).
pub const VERIFY_SETS: usize = 4;

/// An element as nft lists it in JSON, in the state's text form (`10.0.0.1`, `10.0.0.1 : jump
/// chain`, `10.0.0.2 : drop`, `6 . 5432 : goto chain`).
fn listed_element(element: &Value) -> Option<String> {
    let element = element.get("elem").and_then(|e| e.get("val")).map_or(element, |v| v);
    let [key, verdict] = element.as_array().map(Vec::as_slice).unwrap_or_default() else { return key_text(element) };
    let verdict = verdict.as_object()?;
    let (word, detail) = verdict.iter().next()?;
    let target = detail.get("target").and_then(Value::as_str);
    let key = key_text(key)?;
    Some(match target {
        Some(chain) => format!("{key} : {word} {chain}"),
        None => format!("{key} : {word}"),
    })
}

/// A key as nft lists it in JSON, in the state's text form: a concatenation's fields joined
/// by ` . `, protocols by number.
fn key_text(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(match s.as_str() {
            "tcp" => "6".into(),
            "udp" => "17".into(),
            "sctp" => "132".into(),
            other => other.to_string(),
        }),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => {
            let fields = o.get("concat")?.as_array()?;
            Some(fields.iter().map(key_text).collect::<Option<Vec<_>>>()?.join(" . "))
        }
        _ => None,
    }
}

#[derive(Debug, Clone)]
pub struct Nft {
    pub binary: String,
    pub own: OwnRuns,
    /// What the last delta changed, until [`Nft::verify_delta`] checks it, and the apply it was.
    unverified: Arc<Mutex<(u64, Vec<SetCheck>)>>,
    /// Applies begun so far: a check listed while a later apply began proves nothing.
    applies: Arc<std::sync::atomic::AtomicU64>,
}

/// A set or map a delta changed: how many elements it must hold, and (a map) the elements it
/// gained, in the state's text form.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SetCheck {
    kind: String,
    name: String,
    size: usize,
    added: Vec<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Who made this agent's latest nf_tables commits — the process ids of its `nft` runs and the
/// netlink ports of its own batches — so a watcher of commits can tell the agent's own from
/// anyone else's. An id is recorded before the commit can happen (a run's pid under the lock
/// held from spawning it, a batch's port before sending), and a watcher asks under the lock: a
/// commit is never judged before its sender is known.
#[derive(Debug, Clone, Default)]
pub struct OwnRuns(Arc<Mutex<VecDeque<u32>>>);

/// How many senders are remembered (a watcher is at most a few commits behind).
const OWN_RUNS: usize = 64;

impl OwnRuns {
    /// Whether a commit announced with this process id and sender port is the agent's. The
    /// kernel numbers the process in the initial pid namespace and the port (an `nft` process's
    /// own pid, by default) in the sender's: an agent in a container of its own pid namespace
    /// knows its runs by port.
    pub fn made(&self, pid: u32, port: u32) -> bool {
        let own = lock(&self.0);
        own.contains(&pid) || (port != 0 && own.contains(&port))
    }

    fn record(own: &mut VecDeque<u32>, id: u32) {
        own.push_back(id);
        if own.len() > OWN_RUNS {
            own.pop_front();
        }
    }
}

/// What an apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Full,
    /// What differs, in one `nft` transaction, and how many changes (declarations, elements).
    Delta(usize),
    /// Element additions and deletions alone, in one netlink batch, and how many.
    Elements(usize),
    Unchanged,
}

impl Applied {
    /// How, in a word (the `how` of the agent's `applies` metric).
    pub fn how(self) -> &'static str {
        match self {
            Applied::Full => "full",
            Applied::Delta(_) => "delta",
            Applied::Elements(_) => "elements",
            Applied::Unchanged => "unchanged",
        }
    }
}

/// The kernel's table, reduced to what verification compares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Census {
    pub elements: BTreeMap<String, usize>,
    pub rules: usize,
}

impl Census {
    pub fn of(ruleset: &Ruleset) -> Census {
        Census { elements: ruleset.sets.iter().map(|(k, v)| (k.clone(), v.len())).collect(), rules: ruleset.rules }
    }
}

impl Nft {
    pub fn new(binary: &str) -> Nft {
        Nft { binary: binary.to_string(), own: OwnRuns::default(), unverified: Arc::default(), applies: Arc::default() }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
        let failed = |source| NftError::Run { binary: self.binary.clone(), source };
        let mut runs = self.own.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut child = Command::new(&self.binary)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(failed)?;
        OwnRuns::record(&mut runs, child.id());
        drop(runs);
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).map_err(failed)?;
        }
        let out = child.wait_with_output().map_err(failed)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(NftError::Refused { args: args.join(" "), stderr: err.lines().take(6).collect::<Vec<_>>().join(" | ") })
        }
    }

    /// Bring the table to `new`: one transaction of what differs from `old` — declarations
    /// (sets, maps, chains) added, removed or rewritten, and elements deleted and added — or a
    /// full replacement when the skeleton cannot be read as declarations or the kernel refuses
    /// the delta. `old` must be what the kernel holds (verified by the caller).
    pub fn apply(&self, old: Option<&Ruleset>, new: &Ruleset) -> Result<Applied, NftError> {
        let this = self.applies.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let Some(old) = old else {
            self.run(&["-f", "-"], Some(&full_script(new)))?;
            return Ok(Applied::Full);
        };
        let Some(delta) = Delta::between(old, new) else {
            self.run(&["-f", "-"], Some(&full_script(new)))?;
            return Ok(Applied::Full);
        };
        if delta.changes() == 0 && old.rules == new.rules {
            return Ok(Applied::Unchanged);
        }
        let by_nft = |applied| self.run(&["-f", "-"], Some(&delta.script())).map(|_| applied);
        let sent = match delta.batch() {
            Some(batch) => match self.send(batch) {
                Ok(()) => Ok(Applied::Elements(delta.changes())),
                Err(Unsent::Refused(e)) => Err(e),
                Err(Unsent::NoSocket(e)) => {
                    tracing::debug!(error = %e, "no nf_tables netlink socket; the delta goes through nft");
                    by_nft(Applied::Delta(delta.changes()))
                }
            },
            None => by_nft(Applied::Delta(delta.changes())),
        };
        if let Err(e) = &sent {
            // Nothing of a refused transaction is applied: the whole table, then.
            tracing::warn!(error = %e, "the kernel refused a delta; replacing the table");
            self.run(&["-f", "-"], Some(&full_script(new)))?;
            return Ok(Applied::Full);
        }
        *lock(&self.unverified) = (this, delta.checks());
        sent
    }

    /// Check the last delta against the kernel: each changed set or map (up to [`VERIFY_SETS`]
    /// of them, of at most [`DELTA_VERIFY_LIMIT`] elements) holds as many elements as the
    /// state says, and every added element (with its verdict, in a map) where nft lists
    /// elements as the state writes them (not ranges, which it may list as prefixes, nor ICMP
    /// types, which it names). Asked after the delta is
    /// acknowledged, beside the enforcer's work — the transaction committed when nft said so;
    /// this catches what else could differ, off the path that makes a change reach the node.
    /// Listed one set at a time: nft reads only that set (asking for elements makes it load
    /// every set of the table). The others are left to the periodic resync.
    pub fn verify_delta(&self) -> Result<(), NftError> {
        let (apply, checks) = std::mem::take(&mut *lock(&self.unverified));
        for c in checks.iter().filter(|c| c.size <= DELTA_VERIFY_LIMIT).take(VERIFY_SETS) {
            let listing =
                self.run(&["-j", "list", &c.kind, "inet", TABLE, &c.name], None).map_err(|e| NftError::Verification(e.to_string()))?;
            if self.applies.load(std::sync::atomic::Ordering::SeqCst) != apply {
                // A later apply began: this listing may show it; that apply is checked instead.
                return Ok(());
            }
            let json: Value = serde_json::from_str(&listing)?;
            let elements: Vec<&Value> = json
                .get("nftables")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|item| item.get(&c.kind).and_then(|set| set.get("elem")).and_then(Value::as_array))
                .flatten()
                .collect();
            if elements.len() != c.size {
                return Err(NftError::Verification(format!("{} {} holds {} elements, not {}", c.kind, c.name, elements.len(), c.size)));
            }
            let held: HashSet<String> = elements.iter().filter_map(|e| listed_element(e)).collect();
            if let Some(missing) = c.added.iter().find(|e| !held.contains(e.as_str())) {
                return Err(NftError::Verification(format!("{} {} lacks `{missing}`", c.kind, c.name)));
            }
        }
        Ok(())
    }

    /// Send a batch of element changes over netlink, its sender recorded as the agent's own.
    fn send(&self, batch: tessera_netlink::nftables::Batch) -> Result<(), Unsent> {
        let socket = tessera_netlink::nftables::Socket::open().map_err(Unsent::NoSocket)?;
        OwnRuns::record(&mut lock(&self.own.0), socket.port);
        socket.commit(batch).map_err(|e| Unsent::Refused(NftError::Batch(e.to_string())))
    }

    /// Replace the table unconditionally (start-up and drift repair).
    pub fn replace(&self, ruleset: &Ruleset) -> Result<(), NftError> {
        self.run(&["-f", "-"], Some(&full_script(ruleset))).map(|_| ())
    }

    /// What the kernel holds now; `None` when the table does not exist.
    pub fn census(&self) -> Result<Option<Census>, NftError> {
        let listing = match self.run(&["-j", "list", "table", "inet", TABLE], None) {
            Ok(text) => text,
            Err(e) if e.is_missing() => return Ok(None),
            Err(e) => return Err(e),
        };
        let json: Value = serde_json::from_str(&listing)?;
        let mut census = Census::default();
        for item in json.get("nftables").and_then(Value::as_array).into_iter().flatten() {
            if let Some(set) = item.get("set").or_else(|| item.get("map")) {
                let name = set.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                let count = set.get("elem").and_then(Value::as_array).map_or(0, Vec::len);
                census.elements.insert(name, count);
            } else if item.get("rule").is_some() {
                census.rules += 1;
            }
        }
        Ok(Some(census))
    }
}

/// One transaction: make sure the table exists, delete it, create it anew with its elements.
pub fn full_script(r: &Ruleset) -> String {
    let mut s = format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\n{}", r.skeleton);
    for (name, elements) in &r.sets {
        add_elements(&mut s, "add", name, elements.iter());
    }
    s
}

/// Why a batch was not committed: no socket (nft may still do it), or the kernel refused it
/// or did not answer (nothing of it applied, or not known).
enum Unsent {
    NoSocket(std::io::Error),
    Refused(NftError),
}

/// How one set or map changes: elements to delete and to add, and its size afterwards.
struct SetDelta<'a> {
    name: &'a str,
    /// `set` or `map`, as nft names it.
    kind: &'a str,
    /// Its key as declared; `None` when the agent cannot encode it (nft then applies it).
    key: Option<KeyType>,
    gone: Vec<&'a String>,
    came: Vec<&'a String>,
    size: usize,
}

/// One declaration of a skeleton: a set, map or chain, and its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Declaration<'a> {
    kind: &'a str,
    name: &'a str,
    text: &'a str,
}

/// A skeleton's declarations in order, by name; `None` when it is not one table of them.
fn declarations(skeleton: &str) -> Option<BTreeMap<&str, Declaration<'_>>> {
    let header = format!("table inet {TABLE} {{\n");
    let mut rest = skeleton.strip_prefix(header.as_str())?.strip_suffix("}\n")?;
    let mut out = BTreeMap::new();
    while !rest.is_empty() {
        // Inner lines are indented twice: the first line that closes at one tab ends the block.
        let end = rest.find("\n\t}\n")? + 4;
        let (text, tail) = rest.split_at(end);
        let mut head = text.lines().next()?.trim_start_matches('\t').split(' ');
        let (kind, name) = (head.next()?, head.next()?);
        if !matches!(kind, "set" | "map" | "chain") || head.next()? != "{" || head.next().is_some() {
            return None;
        }
        if out.insert(name, Declaration { kind, name, text }).is_some() {
            return None;
        }
        rest = tail;
    }
    Some(out)
}

/// What differs between two rulesets, as one transaction's parts.
struct Delta<'a> {
    /// Chains whose rules change: flushed, and declared again with their rules.
    rewritten: Vec<Declaration<'a>>,
    removed: Vec<Declaration<'a>>,
    added: Vec<Declaration<'a>>,
    sets: Vec<SetDelta<'a>>,
}

impl<'a> Delta<'a> {
    fn between(old: &'a Ruleset, new: &'a Ruleset) -> Option<Delta<'a>> {
        let mut delta = Delta { rewritten: Vec::new(), removed: Vec::new(), added: Vec::new(), sets: Vec::new() };
        // The same skeleton (most changes): the same declarations, only elements may differ.
        let after = declarations(&new.skeleton)?;
        let before = if old.skeleton == new.skeleton { after.clone() } else { declarations(&old.skeleton)? };
        for (name, was) in &before {
            match after.get(name) {
                Some(now) if now == was => {}
                // A chain keeps its name and references; a set or map is made anew.
                Some(now) if now.kind == "chain" && was.kind == "chain" => delta.rewritten.push(*now),
                Some(now) => {
                    delta.removed.push(*was);
                    delta.added.push(*now);
                }
                None => delta.removed.push(*was),
            }
        }
        delta.added.extend(after.iter().filter(|(name, _)| !before.contains_key(*name)).map(|(_, d)| *d));
        let made_anew: HashSet<&str> = delta.added.iter().map(|d| d.name).collect();
        for (name, new_elements) in &new.sets {
            let anew = made_anew.contains(name.as_str());
            if !anew && old.same_set(new, name) {
                continue;
            }
            let old_elements = if anew { &[][..] } else { old.sets.get(name).map(Vec::as_slice).unwrap_or_default() };
            if old_elements == new_elements.as_slice() {
                continue;
            }
            let (kind, key) = after.get(name.as_str()).map_or(("set", None), |d| (d.kind, KeyType::of_declaration(d.text)));
            let before: HashSet<&String> = old_elements.iter().collect();
            let after: HashSet<&String> = new_elements.iter().collect();
            delta.sets.push(SetDelta {
                name,
                kind,
                key,
                gone: old_elements.iter().filter(|e| !after.contains(e)).collect(),
                came: new_elements.iter().filter(|e| !before.contains(e)).collect(),
                size: new_elements.len(),
            });
        }
        Some(delta)
    }

    /// What to check once the delta is applied.
    fn checks(&self) -> Vec<SetCheck> {
        self.sets
            .iter()
            .map(|d| SetCheck {
                kind: d.kind.to_string(),
                name: d.name.to_string(),
                size: d.size,
                added: if d.kind == "map" || d.key.as_ref().is_some_and(KeyType::listed_as_written) {
                    d.came.iter().map(|e| e.to_string()).collect()
                } else {
                    Vec::new()
                },
            })
            .collect()
    }

    /// Elements and declarations changed.
    fn changes(&self) -> usize {
        let elements: usize = self.sets.iter().map(|d| d.gone.len() + d.came.len()).sum();
        elements + self.rewritten.len() + self.removed.len() + self.added.len()
    }

    /// A change of elements alone as one netlink batch: deletions, then additions; `None` when
    /// declarations change too, or an element does not read as its set's key.
    fn batch(&self) -> Option<tessera_netlink::nftables::Batch> {
        if !(self.rewritten.is_empty() && self.removed.is_empty() && self.added.is_empty()) {
            return None;
        }
        let mut changes = Vec::new();
        for d in &self.sets {
            let key = d.key.as_ref()?;
            let encode = |elements: &[&String]| elements.iter().map(|e| key.element(e)).collect::<Option<Vec<_>>>();
            changes.push((d.name, encode(&d.gone)?, encode(&d.came)?));
        }
        let mut batch = tessera_netlink::nftables::Batch::new(tessera_netlink::nftables::FAMILY_INET, TABLE);
        for (set, gone, _) in &changes {
            batch.delete(set, gone);
        }
        for (set, _, came) in &changes {
            batch.add(set, came);
        }
        Some(batch)
    }

    /// One transaction, in the order references allow: elements deleted (map elements that
    /// jump to a chain going away among them), rewritten chains flushed (their rules may name
    /// sets going away), chains then sets removed, sets then chains declared (with their rules),
    /// elements added. An interval element may be replaced by an overlapping one.
    fn script(&self) -> String {
        let mut s = String::new();
        let kept = |name: &str| !self.removed.iter().any(|d| d.name == name);
        for d in self.sets.iter().filter(|d| kept(d.name)) {
            add_elements(&mut s, "delete", d.name, d.gone.iter().copied());
        }
        for d in &self.rewritten {
            let _ = writeln!(s, "flush chain inet {TABLE} {}", d.name);
        }
        for kinds in [["chain", "chain"], ["set", "map"]] {
            for d in self.removed.iter().filter(|d| kinds.contains(&d.kind)) {
                let _ = writeln!(s, "delete {} inet {TABLE} {}", d.kind, d.name);
            }
        }
        let declared: Vec<&Declaration<'_>> = self
            .added
            .iter()
            .filter(|d| d.kind != "chain")
            .chain(self.added.iter().filter(|d| d.kind == "chain"))
            .chain(self.rewritten.iter())
            .collect();
        if !declared.is_empty() {
            let _ = writeln!(s, "table inet {TABLE} {{");
            declared.iter().for_each(|d| s.push_str(d.text));
            s.push_str("}\n");
        }
        for d in &self.sets {
            add_elements(&mut s, "add", d.name, d.came.iter().copied());
        }
        s
    }
}

fn add_elements<'a>(s: &mut String, verb: &str, set: &str, elements: impl Iterator<Item = &'a String>) {
    let mut elements = elements.peekable();
    if elements.peek().is_none() {
        return;
    }
    // nft reads long lines fine; chunks keep error messages readable.
    let all: Vec<&String> = elements.collect();
    for chunk in all.chunks(2000) {
        let _ = writeln!(s, "{verb} element inet {TABLE} {set} {{ {} }}", chunk.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ruleset(sets: &[(&str, &[&str])]) -> Ruleset {
        Ruleset {
            skeleton: "table inet tessera {\n}\n".into(),
            sets: sets.iter().map(|(n, e)| (n.to_string(), e.iter().map(|s| s.to_string()).collect())).collect(),
            rules: 0,
            digests: BTreeMap::new(),
        }
    }

    #[test]
    fn delta_deletes_before_it_adds_and_counts_changes() {
        let old = ruleset(&[("a", &["1", "2"]), ("b", &["x"])]);
        let new = ruleset(&[("a", &["2", "3"]), ("b", &["x"])]);
        let delta = Delta::between(&old, &new).expect("declarations");
        assert_eq!(delta.changes(), 2);
        assert_eq!(delta.script(), "delete element inet tessera a { 1 }\nadd element inet tessera a { 3 }\n");
    }

    fn with_skeleton(declarations: &[&str], sets: &[(&str, &[&str])]) -> Ruleset {
        Ruleset { skeleton: format!("table inet tessera {{\n{}}}\n", declarations.concat()), ..ruleset(sets) }
    }

    #[test]
    fn declarations_change_in_the_order_references_allow() {
        let local = "\tset local4 {\n\t\ttype ipv4_addr\n\t}\n";
        let group = |n: &str| {
            format!(
                "\tset g{n} {{\n\t\ttype ipv4_addr . inet_proto . inet_service\n\t}}\n\tchain c{n} {{\n\t\tip saddr . meta l4proto . th dport @g{n} return\n\t\tdrop\n\t}}\n"
            )
        };
        let map = "\tmap d4 {\n\t\ttype ipv4_addr : verdict\n\t}\n";
        let forward = |extra: &str| {
            format!(
                "\tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tip daddr vmap @d4{extra}\n\t}}\n"
            )
        };
        let old = with_skeleton(
            &[local, &group("1"), map, &forward("")],
            &[("local4", &["10.0.0.1"]), ("g1", &["10.1.0.1 . 6 . 80"]), ("d4", &["10.0.0.1 : jump c1"])],
        );
        let new = with_skeleton(
            &[local, &group("2"), map, &forward(" counter")],
            &[("local4", &["10.0.0.2"]), ("g2", &["10.1.0.1 . 6 . 80"]), ("d4", &["10.0.0.2 : jump c2"])],
        );
        let delta = Delta::between(&old, &new).expect("declarations");
        let script = delta.script();
        let at = |needle: &str| script.find(needle).unwrap_or_else(|| panic!("`{needle}` in:\n{script}"));
        // The jump goes before its chain, the chain before its set; new sets before new chains
        // that name them, before the elements that jump to them.
        assert!(at("delete element inet tessera d4 { 10.0.0.1 : jump c1 }") < at("flush chain inet tessera forward"));
        assert!(at("flush chain inet tessera forward") < at("delete chain inet tessera c1"));
        assert!(at("delete chain inet tessera c1") < at("delete set inet tessera g1"));
        assert!(at("delete set inet tessera g1") < at("\tset g2 {") && at("\tset g2 {") < at("\tchain c2 {"));
        assert!(
            at("\tchain c2 {") < at("ip daddr vmap @d4 counter") && at("ip daddr vmap @d4 counter") < at("add element inet tessera g2")
        );
        assert!(at("\tchain c2 {") < at("add element inet tessera d4 { 10.0.0.2 : jump c2 }"));
        assert!(!script.contains("delete element inet tessera g1"), "a removed set's elements go with it");
        // An unreadable skeleton: no delta.
        let odd = Ruleset { skeleton: "table inet tessera {\n\tflowtable f {\n\t}\n}\n".into(), ..ruleset(&[]) };
        assert!(Delta::between(&old, &odd).is_none());
    }

    #[test]
    fn elements_listed_by_nft_read_as_the_state_writes_them() {
        let listed = |v: Value| listed_element(&v);
        assert_eq!(listed(serde_json::json!(["10.0.0.1", {"jump": {"target": "in4_x"}}])).as_deref(), Some("10.0.0.1 : jump in4_x"));
        assert_eq!(listed(serde_json::json!(["10.0.0.2", {"drop": null}])).as_deref(), Some("10.0.0.2 : drop"));
        let service = serde_json::json!({"elem": {"val": [{"concat": ["tcp", 5432]}, {"goto": {"target": "in4_x_tcp5432"}}]}});
        assert_eq!(listed(service).as_deref(), Some("6 . 5432 : goto in4_x_tcp5432"));
        assert_eq!(listed(serde_json::json!([{"concat": [132, 9000]}, {"goto": {"target": "c"}}])).as_deref(), Some("132 . 9000 : goto c"));
        assert_eq!(listed(serde_json::json!("fd00::1")).as_deref(), Some("fd00::1"));
        assert_eq!(listed(serde_json::json!({"elem": {"val": "10.0.0.3", "counter": {"packets": 0}}})).as_deref(), Some("10.0.0.3"));
    }

    #[test]
    fn full_script_recreates_the_table_in_one_transaction() {
        let script = full_script(&ruleset(&[("a", &["1"]), ("b", &[])]));
        assert!(script.starts_with("table inet tessera {}\ndelete table inet tessera\ntable inet tessera {"));
        assert!(script.ends_with("add element inet tessera a { 1 }\n"));
    }
}

//! The agent's hold on `table inet tessera`: it owns that table and nothing else.
//!
//! A full state replaces the table in one `nft -f` transaction (create-if-missing, delete,
//! recreate), so there is no moment without the table. A change of set elements alone is one
//! transaction of element deletions and additions, verified by asking for the added elements.
//! A full verification lists the table and compares what the kernel holds (elements per set,
//! rules) with what was applied.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tessera_agent_api::Ruleset;

use crate::error::NftError;

/// The one table the agent owns: the one the policy engine renders.
pub use tessera_agent_api::NFT_TABLE as TABLE;

/// Sets up to this size are checked element by element after a delta.
pub const DELTA_VERIFY_LIMIT: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Nft {
    pub binary: String,
    pub own: OwnRuns,
}

/// The process ids of this agent's latest `nft` runs, so a watcher of nf_tables commits can tell
/// the agent's own from anyone else's. The lock is held from spawning a run until its pid is
/// recorded, and a watcher asks under it: a commit is never judged before its pid is known.
#[derive(Debug, Clone, Default)]
pub struct OwnRuns(Arc<Mutex<VecDeque<u32>>>);

/// How many runs are remembered (a watcher is at most a few commits behind).
const OWN_RUNS: usize = 64;

impl OwnRuns {
    pub fn contains(&self, pid: u32) -> bool {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&pid)
    }
}

/// What an apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Full,
    /// Element additions and deletions, and how many.
    Delta(usize),
    Unchanged,
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
        Nft { binary: binary.to_string(), own: OwnRuns::default() }
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
        runs.push_back(child.id());
        if runs.len() > OWN_RUNS {
            runs.pop_front();
        }
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

    /// Bring the table to `new`: a delta from `old` when only elements differ, else a full
    /// replacement. `old` must be what the kernel holds (verified by the caller).
    pub fn apply(&self, old: Option<&Ruleset>, new: &Ruleset) -> Result<Applied, NftError> {
        match old {
            Some(old) if old == new => Ok(Applied::Unchanged),
            Some(old) if old.skeleton == new.skeleton && old.sets.keys().eq(new.sets.keys()) => {
                let deltas = set_deltas(old, new);
                self.run(&["-f", "-"], Some(&delta_script(&deltas)))?;
                self.verify_added(&deltas)?;
                Ok(Applied::Delta(changes(&deltas)))
            }
            _ => {
                self.run(&["-f", "-"], Some(&full_script(new)))?;
                Ok(Applied::Full)
            }
        }
    }

    /// After a delta: every added element is in the kernel (and every map element with its
    /// verdict), asked with `nft get element`. nft loads the whole set to answer, so sets larger
    /// than [`DELTA_VERIFY_LIMIT`] are left to the periodic resync (measured: 0.4 s for 100k).
    fn verify_added(&self, deltas: &[SetDelta<'_>]) -> Result<(), NftError> {
        let mut script = String::new();
        let mut verdicts: Vec<(&str, &str, &str)> = Vec::new();
        for d in deltas.iter().filter(|d| d.size <= DELTA_VERIFY_LIMIT) {
            for chunk in d.came.chunks(500) {
                let keys: Vec<&str> = chunk.iter().map(|e| e.split(" : ").next().unwrap_or(e)).collect();
                let _ = writeln!(script, "get element inet {TABLE} {} {{ {} }}", d.name, keys.join(", "));
                verdicts.extend(chunk.iter().filter_map(|e| e.split_once(" : ")).map(|(k, v)| (d.name, k, v)));
            }
        }
        if script.is_empty() {
            return Ok(());
        }
        // One nft run for every set: each `get` fails unless all its elements are there.
        let listing = self.run(&["-f", "-"], Some(&script)).map_err(|e| NftError::Verification(e.to_string()))?;
        match verdicts.iter().find(|(_, k, v)| !listing.contains(&format!("{k} : {v}"))) {
            Some((name, k, v)) => Err(NftError::Verification(format!("map {name} lacks `{k} : {v}`"))),
            None => Ok(()),
        }
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

/// How one set or map changes: elements to delete and to add, and its size afterwards.
struct SetDelta<'a> {
    name: &'a str,
    gone: Vec<&'a String>,
    came: Vec<&'a String>,
    size: usize,
}

/// The sets whose elements differ between `old` and `new` (their names are the same).
fn set_deltas<'a>(old: &'a Ruleset, new: &'a Ruleset) -> Vec<SetDelta<'a>> {
    let mut out = Vec::new();
    for (name, new_elements) in &new.sets {
        let old_elements = old.sets.get(name).map(Vec::as_slice).unwrap_or_default();
        if old_elements == new_elements.as_slice() {
            continue;
        }
        let before: HashSet<&String> = old_elements.iter().collect();
        let after: HashSet<&String> = new_elements.iter().collect();
        out.push(SetDelta {
            name,
            gone: old_elements.iter().filter(|e| !after.contains(e)).collect(),
            came: new_elements.iter().filter(|e| !before.contains(e)).collect(),
            size: new_elements.len(),
        });
    }
    out
}

/// Elements deleted and added, all sets together.
fn changes(deltas: &[SetDelta<'_>]) -> usize {
    deltas.iter().map(|d| d.gone.len() + d.came.len()).sum()
}

/// Element deletions first (an interval may be replaced by an overlapping one), then additions.
fn delta_script(deltas: &[SetDelta<'_>]) -> String {
    let mut s = String::new();
    for d in deltas {
        add_elements(&mut s, "delete", d.name, d.gone.iter().copied());
    }
    for d in deltas {
        add_elements(&mut s, "add", d.name, d.came.iter().copied());
    }
    s
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
        }
    }

    #[test]
    fn delta_deletes_before_it_adds_and_counts_changes() {
        let old = ruleset(&[("a", &["1", "2"]), ("b", &["x"])]);
        let new = ruleset(&[("a", &["2", "3"]), ("b", &["x"])]);
        let deltas = set_deltas(&old, &new);
        let script = delta_script(&deltas);
        assert_eq!(changes(&deltas), 2);
        assert_eq!(script, "delete element inet tessera a { 1 }\nadd element inet tessera a { 3 }\n");
    }

    #[test]
    fn full_script_recreates_the_table_in_one_transaction() {
        let script = full_script(&ruleset(&[("a", &["1"]), ("b", &[])]));
        assert!(script.starts_with("table inet tessera {}\ndelete table inet tessera\ntable inet tessera {"));
        assert!(script.ends_with("add element inet tessera a { 1 }\n"));
    }
}

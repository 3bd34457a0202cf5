//! Drift by events: the kernel announces every nf_tables commit (with the process that made
//! it) and every route and policy-rule change; a commit by anyone else that touches `table inet
//! tessera`, or a change to Tessera's route table, its routes or its rule, is queued for the
//! enforcer at once — no waiting for the periodic resync, which stays as a cheap safety net.
//!
//! Each kind of drift is queued at most once at a time: a burst of events costs one repair.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tessera_agent_api::ROUTE_TABLE;
use tessera_netlink::monitor::{NftEvent, RouteWatch, watch_nftables, watch_routes};
use tokio::sync::mpsc;

use crate::enforcer::Event;
use crate::nft::{OwnRuns, TABLE};

/// What the enforcer is asked to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// Someone else committed a change to Tessera's table: restore it.
    Nftables { by: String },
    /// The kernel dropped nf_tables notifications (a burst overflowed the socket): compare the
    /// table with the state, and restore it if it differs.
    Unknown,
    /// A route or rule of Tessera's changed: reconcile routes.
    Routes,
}

/// Which watchers run and which drift is queued.
#[derive(Debug, Default)]
pub struct Watch {
    nftables: Mutex<Option<JoinHandle<()>>>,
    nft_queued: AtomicBool,
    routes_queued: AtomicBool,
}

impl Watch {
    /// Whether nf_tables commits are being watched (the resync may then skip listing the table).
    pub fn watching_nftables(&self) -> bool {
        self.nftables.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().is_some_and(|t| !t.is_finished())
    }

    /// The enforcer took up this drift: the next event queues it again.
    pub fn taken(&self, drift: &Drift) {
        let flag = if *drift == Drift::Routes { &self.routes_queued } else { &self.nft_queued };
        flag.store(false, Ordering::Relaxed);
    }
}

/// Start both watchers (in this thread's network namespace). A watcher that cannot start is
/// logged and left to the periodic resync.
pub fn start(events: mpsc::Sender<Event>, own: OwnRuns) -> Arc<Watch> {
    let watch = Arc::new(Watch::default());
    let queue = |flag: fn(&Watch) -> &AtomicBool, watch: Arc<Watch>, events: mpsc::Sender<Event>| {
        move |drift: Drift| -> bool {
            if flag(&watch).swap(true, Ordering::Relaxed) {
                return true;
            }
            events.blocking_send(Event::Drift(drift)).is_ok()
        }
    };
    let nft = queue(|w| &w.nft_queued, watch.clone(), events.clone());
    let mine = |family: &str, name: &str| family == "inet" && name == TABLE;
    let started = watch_nftables(move |event| match event {
        NftEvent::Commit(c) if c.tables.iter().any(|(f, n)| mine(f, n)) && !own.made(c.pid, c.port) => {
            nft(Drift::Nftables { by: format!("{} (pid {}, generation {})", c.process, c.pid, c.generation) })
        }
        NftEvent::Commit(_) => true,
        NftEvent::Overrun => nft(Drift::Unknown),
    });
    match started {
        Ok(thread) => *watch.nftables.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(thread),
        Err(e) => tracing::warn!(error = %e, "cannot watch nf_tables commits; drift is found by the periodic resync only"),
    }
    let routes = queue(|w| &w.routes_queued, watch.clone(), events);
    let started = watch_routes(move |event| match event {
        RouteWatch::Change(e) if e.table == ROUTE_TABLE || (!e.rule && e.protocol == tessera_netlink::PROTOCOL) => routes(Drift::Routes),
        RouteWatch::Change(_) => true,
        RouteWatch::Overrun => routes(Drift::Routes),
    });
    if let Err(e) = started {
        tracing::warn!(error = %e, "cannot watch routes; route drift is found by the periodic resync only");
    }
    watch
}

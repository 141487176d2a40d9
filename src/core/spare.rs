//! The per-leaf tables of the last large plan dropped, kept for the next plan to fill.
//!
//! The allocator hands tables of a few MiB back to the system when they are freed, so a
//! model of many leaves loaded again and again would otherwise fault fresh pages into its
//! tables on every load (about a sixth of the time of a load of 100,000 small leaves).

use super::plan::Run;
use super::ties::TieCache;
use std::sync::{Mutex, MutexGuard};

/// A plan's per-leaf tables: what each leaf's copy changes, its run, and the ties.
#[derive(Default)]
pub struct Tables {
    pub noop: Vec<bool>,
    pub runs: Vec<Option<Run>>,
    pub ties: TieCache,
}

/// The largest tables a dropped plan left.
static SPARE: Mutex<Option<Tables>> = Mutex::new(None);

/// Tables for up to this many leaves are kept (about 6 MiB).
const MAX_LEAVES: usize = 1 << 17;

/// Empty tables with room for `leaves` leaves: those kept, if any.
pub fn take(leaves: usize) -> Tables {
    let mut tables = spare().take().unwrap_or_default();
    tables.noop.clear();
    tables.noop.reserve(leaves);
    tables.runs.clear();
    tables.runs.reserve(leaves);
    tables.ties.reset(leaves);
    tables
}

/// Keeps `tables` for the next plan, unless they are too large or smaller than those kept.
pub fn keep(mut tables: Tables) {
    let capacity = tables.runs.capacity();
    if capacity > MAX_LEAVES {
        return;
    }
    let mut spare = spare();
    if spare
        .as_ref()
        .is_none_or(|kept| kept.runs.capacity() < capacity)
    {
        tables.ties.reset(0); // nothing of a load is kept, only the memory
        *spare = Some(tables);
    }
}

fn spare() -> MutexGuard<'static, Option<Tables>> {
    SPARE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

//! Room to reserve for a walk's tables, from the size the last such table reached: a model
//! loaded (or its state taken) again and again then never grows them.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The size the last table of one kind reached, capped so that one huge tree does not make
/// every later small one reserve as much.
pub struct LastSize {
    last: AtomicUsize,
    max: usize,
}

impl LastSize {
    pub const fn new(max: usize) -> Self {
        LastSize {
            last: AtomicUsize::new(0),
            max,
        }
    }

    /// The room to reserve for the next table.
    pub fn room(&self) -> usize {
        self.last.load(Ordering::Relaxed)
    }

    pub fn remember(&self, size: usize) {
        self.last.store(size.min(self.max), Ordering::Relaxed);
    }
}

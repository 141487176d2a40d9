//! Loads in flight: two loads whose destinations may share memory never copy at once.
//!
//! Each copy reserves the span of addresses its destinations lie in before its first
//! write and releases it after its last. A load whose span overlaps a reservation of
//! another thread waits for it, so two threads loading into the same model give the
//! result of one load after the other, never a mix. Spans are coarse (lowest to highest
//! destination byte), so unrelated loads may wait for each other too; their copies are
//! memory-bound and use every core, so little is lost.

use std::ops::Range;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::{self, ThreadId};

struct Reserved {
    id: u64,
    span: Range<usize>,
    thread: ThreadId,
}

pub(super) struct Table {
    next_id: u64,
    reserved: Vec<Reserved>,
}

impl Table {
    /// In a child of `fork()`: its parent's loads do not go on here, and their memory is a
    /// copy of its own now.
    pub(super) fn forget_parents(&mut self) {
        self.reserved.clear();
    }
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    next_id: 0,
    reserved: Vec::new(),
});
static RELEASED: Condvar = Condvar::new();

/// The span reserved by one load's copy, released on drop.
pub struct Reservation {
    id: Option<u64>,
}

pub(super) fn lock_table() -> MutexGuard<'static, Table> {
    // A panic while holding the lock leaves the table consistent (every change is one
    // push or one removal), so a poisoned lock is still usable.
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

fn overlaps(a: &Range<usize>, b: &Range<usize>) -> bool {
    a.start < b.end && b.start < a.end
}

/// Reserves `span` (nothing for `None`, a load that writes nothing), waiting while another
/// thread's reservation overlaps it. Errors, instead of waiting forever, when the
/// overlapping reservation is this thread's own (a load started from inside another,
/// say from its progress callback).
pub fn reserve(span: Option<Range<usize>>) -> Result<Reservation, String> {
    let Some(span) = span else {
        return Ok(Reservation { id: None });
    };
    let me = thread::current().id();
    super::fork::guard();
    let mut table = lock_table();
    loop {
        let blocking = table.reserved.iter().find(|r| overlaps(&r.span, &span));
        match blocking {
            None => break,
            Some(r) if r.thread == me => {
                return Err(
                    "this thread is already loading into this destination, or into memory \
                     next to it (a load started from inside another one, which holds the \
                     addresses from its lowest destination byte to its highest)"
                        .to_owned(),
                )
            }
            Some(_) => table = RELEASED.wait(table).unwrap_or_else(|e| e.into_inner()),
        }
    }
    let id = table.next_id;
    table.next_id += 1;
    table.reserved.push(Reserved {
        id,
        span,
        thread: me,
    });
    Ok(Reservation { id: Some(id) })
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            lock_table().reserved.retain(|r| r.id != id);
            RELEASED.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn overlapping_spans_take_turns_and_disjoint_ones_do_not_wait() {
        let first = reserve(Some(1000..2000)).unwrap();
        let _disjoint = reserve(Some(2000..3000)).unwrap(); // no wait: touching is not overlapping
        let done = Arc::new(AtomicUsize::new(0));
        let waiter = {
            let done = done.clone();
            thread::spawn(move || {
                let _r = reserve(Some(1500..1600)).unwrap();
                done.store(1, Ordering::SeqCst);
            })
        };
        thread::sleep(Duration::from_millis(50));
        assert_eq!(
            done.load(Ordering::SeqCst),
            0,
            "ran while the span was reserved"
        );
        drop(first);
        waiter.join().unwrap();
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_thread_overlapping_its_own_reservation_gets_an_error() {
        let _mine = reserve(Some(10_000..20_000)).unwrap();
        assert!(reserve(Some(15_000..15_001)).is_err());
        assert!(reserve(None).is_ok());
    }
}

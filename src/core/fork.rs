//! `fork()`: the child has only the thread that forked, so no other thread may hold the
//! engine's locks at that moment (the child would wait for them forever), and the
//! parent's pools and reservations mean nothing in the child.
//!
//! `pthread_atfork` handlers take both locks before a fork and release them after it, in
//! the parent and in the child; the child first forgets its parent's pools and
//! reservations. `multiprocessing` forks its workers by default before Python 3.14.

use std::cell::RefCell;
use std::sync::MutexGuard;

use super::inflight::{self, Table};
use super::threads::{self, Pools};

type Held = (MutexGuard<'static, Pools>, MutexGuard<'static, Table>);

thread_local! {
    /// The locks the forking thread took, until the fork is done.
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Installs the handlers, once per process; called before either lock is first taken.
pub fn guard() {
    #[cfg(unix)]
    {
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            // SAFETY: the handlers are plain functions that live as long as the process.
            let err = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
            // Fails only without memory for the entry: a fork then stays as unguarded as
            // it was without one.
            debug_assert_eq!(err, 0, "pthread_atfork failed");
        });
    }
}

extern "C" fn prepare() {
    // Always in this order, the only one in which both are held.
    let held = (threads::lock_pools(), inflight::lock_table());
    HELD.with(|h| *h.borrow_mut() = Some(held));
}

extern "C" fn parent() {
    HELD.with(|h| drop(h.borrow_mut().take()));
}

extern "C" fn child() {
    HELD.with(|h| {
        if let Some((mut pools, mut table)) = h.borrow_mut().take() {
            pools.forget_parents();
            table.forget_parents();
        }
    });
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Forks while another thread holds `lock` for a while, and tells whether the child
    /// then got through `work` (each in a child of its own) within a few seconds.
    fn child_gets_through<G: 'static>(lock: fn() -> G, work: fn() -> bool) -> bool {
        guard();
        let (taken_tx, taken_rx) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            let held = lock();
            taken_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
        });
        taken_rx.recv().unwrap();
        // SAFETY: the child only runs `work` and exits without unwinding.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = std::panic::catch_unwind(work).unwrap_or(false);
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        holder.join().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut status = 0;
        loop {
            let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if done == pid {
                return libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            }
            if Instant::now() > deadline {
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_child_forked_while_the_pools_are_locked_builds_its_own() {
        assert!(child_gets_through(threads::lock_pools, || {
            let pool = threads::pool(2).unwrap();
            pool.install(|| rayon::join(|| 1, || 2)) == (1, 2)
        }));
    }

    #[test]
    fn a_child_forked_while_the_reservations_are_locked_reserves() {
        assert!(child_gets_through(inflight::lock_table, || {
            inflight::reserve(Some(0..100)).is_ok()
        }));
    }
}

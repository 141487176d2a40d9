//! Thread pools: how many threads a load uses, and the pools that run them.

use rayon::{ThreadPool, ThreadPoolBuilder};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Environment variable that sets the default thread count.
pub const THREADS_ENV: &str = "FASTLOAD_NUM_THREADS";

/// The thread count for `threads=None`: `FASTLOAD_NUM_THREADS` if it is a positive integer,
/// else every core.
pub fn default_threads() -> usize {
    std::env::var(THREADS_ENV)
        .ok()
        .and_then(|v| thread_count(&v))
        .unwrap_or_else(cores)
}

/// The thread count a `FASTLOAD_NUM_THREADS` value sets: a positive integer, else `None`.
pub fn thread_count(value: &str) -> Option<usize> {
    value.trim().parse::<usize>().ok().filter(|&n| n > 0)
}

/// The processor's core count: more copy threads than cores only contend for them.
///
/// Asked once: the standard library reads the process's CPU quota from its cgroup files
/// each time, which costs more than a small load itself.
pub fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The pools built so far, by size; at most as many as cores.
pub(super) struct Pools {
    by_size: Vec<(usize, Arc<ThreadPool>)>,
}

impl Pools {
    /// In a child of `fork()`: the parent's pools have no threads here, and a job sent to
    /// one would wait forever. Forgotten, not dropped: their workers cannot be told to stop.
    pub(super) fn forget_parents(&mut self) {
        std::mem::forget(std::mem::take(&mut self.by_size));
    }
}

static POOLS: Mutex<Pools> = Mutex::new(Pools {
    by_size: Vec::new(),
});

pub(super) fn lock_pools() -> MutexGuard<'static, Pools> {
    // A panic while holding the lock leaves the list whole (every change is one push).
    POOLS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A pool of `threads` workers (at most one per core), built once per size and kept for
/// later loads.
pub fn pool(threads: usize) -> Result<Arc<ThreadPool>, String> {
    let threads = threads.clamp(1, cores());
    super::fork::guard();
    let mut pools = lock_pools();
    if let Some((_, pool)) = pools.by_size.iter().find(|(size, _)| *size == threads) {
        return Ok(pool.clone());
    }
    let pool = ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("fastload-{i}"))
        .build()
        .map_err(|e| format!("cannot start {threads} copy threads: {e}"))?;
    let pool = Arc::new(pool);
    pools.by_size.push((threads, pool.clone()));
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_are_reused_and_sized_as_asked() {
        let a = pool(1).unwrap();
        let b = pool(1).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.current_num_threads(), 1);
        // More threads than cores are not started.
        assert_eq!(pool(cores() + 5).unwrap().current_num_threads(), cores());
    }

    #[test]
    fn default_threads_is_positive() {
        assert!(default_threads() >= 1);
    }
}

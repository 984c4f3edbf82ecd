//! The thread pool the package's Rust work runs on: one the module owns, not rayon's global
//! pool, so that its size can be set and so that a forked child gets a working one.
//!
//! rayon's global pool cannot be rebuilt: its threads do not exist in a child made by
//! `fork()`, so the child's first call would wait on them forever (`multiprocessing` with the
//! fork start method, Celery's prefork pool, gunicorn `--preload`). Every call runs in
//! [`install`], which builds the pool on first use; a `pthread_atfork` handler drops the
//! child's copy of the pool (without touching its threads, which are not there), so that the
//! child builds its own on its first call.
//!
//! The pool has [`num_threads`] threads: the number set by [`set_num_threads`], else
//! `FACEDETECT_NUM_THREADS`, else the cores this process may use (its CPU affinity and its
//! cgroup's CPU quota, as `std::thread::available_parallelism` reads them).

use std::cell::RefCell;
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError};

use rayon::{ThreadPool, ThreadPoolBuilder};

/// The environment variable that sets the number of threads.
pub const NUM_THREADS_VAR: &str = "FACEDETECT_NUM_THREADS";

struct State {
    /// The number [`set_num_threads`] set, if any.
    threads: Option<usize>,
    pool: Option<Arc<ThreadPool>>,
}

static STATE: Mutex<State> = Mutex::new(State {
    threads: None,
    pool: None,
});

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The number of threads without [`set_num_threads`]: `FACEDETECT_NUM_THREADS`, else the
/// cores this process may use.
fn default_num_threads() -> Result<usize, String> {
    match std::env::var(NUM_THREADS_VAR) {
        Ok(value) => match value.trim().parse::<usize>() {
            Ok(threads) if threads >= 1 => Ok(threads),
            _ => Err(format!(
                "{NUM_THREADS_VAR}={value:?}: the number of threads must be an integer of at least 1"
            )),
        },
        Err(_) => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// The number of threads the pool has (or will have when next built).
pub fn num_threads() -> Result<usize, String> {
    let threads = state().threads;
    threads.map_or_else(default_num_threads, Ok)
}

/// Sets the number of threads (at least 1): the pool is rebuilt with that many for the next
/// call, while calls already running finish on the old one.
pub fn set_num_threads(threads: usize) {
    let mut state = state();
    state.threads = Some(threads);
    state.pool = None;
}

/// Runs `work` on the pool, building the pool first if this process has none yet.
pub fn install<T: Send>(work: impl FnOnce() -> T + Send) -> Result<T, String> {
    static AT_FORK: Once = Once::new();
    AT_FORK.call_once(register_at_fork);
    let pool = {
        let mut state = state();
        match &state.pool {
            Some(pool) => Arc::clone(pool),
            None => {
                let threads = state.threads.map_or_else(default_num_threads, Ok)?;
                let pool = ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|index| format!("facedetect-{index}"))
                    .build()
                    .map(Arc::new)
                    .map_err(|error| format!("starting {threads} threads: {error}"))?;
                state.pool = Some(Arc::clone(&pool));
                pool
            }
        }
    };
    Ok(pool.install(work))
}

thread_local! {
    /// The state's lock, held by the forking thread from `prepare` until the fork is done, so
    /// that no other thread holds it when the process is copied.
    static FORK_GUARD: RefCell<Option<MutexGuard<'static, State>>> = const { RefCell::new(None) };
}

extern "C" fn prepare() {
    let guard = state();
    FORK_GUARD.with(|held| *held.borrow_mut() = Some(guard));
}

extern "C" fn parent() {
    FORK_GUARD.with(|held| drop(held.borrow_mut().take()));
}

extern "C" fn child() {
    FORK_GUARD.with(|held| {
        if let Some(mut guard) = held.borrow_mut().take() {
            // The pool's threads were not copied: dropping the pool would signal them and wait
            // on locks they may have held. It is forgotten instead (a few hundred bytes).
            if let Some(pool) = guard.pool.take() {
                std::mem::forget(pool);
            }
        }
    });
}

fn register_at_fork() {
    // SAFETY: the handlers are plain functions that live as long as the process; they only
    // take and release the state's lock and forget the child's copy of the pool.
    let status = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    // pthread_atfork fails only without memory for the handlers; the pool then still works,
    // only not in a forked child.
    debug_assert_eq!(status, 0, "pthread_atfork failed");
}

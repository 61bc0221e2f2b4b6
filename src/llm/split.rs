//! One helper thread that takes half of a product, with a hand-off cheap enough for the
//! ~200 small products of a generated token.
//!
//! Starting a thread per product costs tens of microseconds, as long as a small product itself,
//! and candle's spin-waiting pool made decoding 12x slower on the 2-vCPU build machine (its
//! waiters competed with the element-wise pool for the same two cores). Here a single helper
//! spins briefly for the next job and then sleeps, and the caller does the other half itself,
//! so at most two threads ever run the model.
//!
//! Why not a one-thread rayon pool (`in_place_scope`, no unsafe code)? It was tried: on one
//! host it measured level with this hand-off (`models bench smollm2-135m --threads 2`, 5 runs
//! each, medians: generation 72.7 vs 69.5 tok/s), but on another it halved generation at two
//! threads, below one thread: 30.6–33.6 against this hand-off's 57.7–63.1 tok/s (3 alternated
//! runs each, 2026-12-03; prompt 230–284 vs 271–273, warm decision 193 vs 171 ms). A rayon
//! worker sleeps after a few dozen idle rounds and the caller waits on a lock, so a generated
//! token pays two thread wake-ups per product; here both sides spin through the short gaps
//! between products. The spin is bounded and the helper parks when the model is idle.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Spins before the helper parks (each a `spin_loop` hint: a few microseconds in all), long
/// enough to span the element-wise work between two products of a decoding step.
const SPIN_ROUNDS: u32 = 20_000;

type Job<'a> = &'a (dyn Fn() + Sync);

struct Shared {
    /// The published job: a `*const Job` valid until `done` reaches its sequence number.
    job: AtomicPtr<()>,
    /// Sequence number of the last published job, and of the last one the helper finished.
    posted: AtomicU64,
    done: AtomicU64,
    stop: AtomicBool,
    /// The helper panicked in a job (the caller re-raises it).
    panicked: AtomicBool,
}

/// The helper thread; dropped, it stops and is joined.
pub(crate) struct SplitPool {
    shared: Arc<Shared>,
    helper: Option<JoinHandle<()>>,
    /// One job at a time (snapshots of a model share its pool and may run on other threads).
    lock: std::sync::Mutex<()>,
}

impl std::fmt::Debug for SplitPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SplitPool")
    }
}

impl SplitPool {
    /// The helper a model with `product_threads` threads shares its products with: `None`
    /// for one thread (products run on the caller), else a new helper.
    pub fn for_threads(
        product_threads: usize,
    ) -> candle_core::Result<Option<std::sync::Arc<Self>>> {
        if product_threads < 2 {
            return Ok(None);
        }
        Self::new()
            .map(|p| Some(std::sync::Arc::new(p)))
            .map_err(|e| candle_core::Error::Msg(format!("cannot start a thread: {e}")))
    }

    pub fn new() -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            job: AtomicPtr::new(std::ptr::null_mut()),
            posted: AtomicU64::new(0),
            done: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
        });
        let s = shared.clone();
        let helper = std::thread::Builder::new()
            .name("camxuc-llm-split".into())
            .spawn(move || helper_loop(&s))?;
        Ok(Self {
            shared,
            helper: Some(helper),
            lock: std::sync::Mutex::new(()),
        })
    }

    /// Runs `mine` on this thread and `theirs` on the helper, and returns when both are done.
    pub fn join(&self, mine: impl FnOnce(), theirs: impl FnOnce() + Send) {
        // A poisoned lock only means an earlier job panicked; the state is consistent.
        let _one_at_a_time = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        // The helper calls jobs through a shared reference; the cell lets it take `theirs`
        // (and whatever `theirs` owns, e.g. its half of the output) out by value.
        let cell = std::sync::Mutex::new(Some(theirs));
        let run = || {
            let theirs = cell.lock().ok().and_then(|mut c| c.take());
            if let Some(theirs) = theirs {
                theirs();
            }
        };
        let job: Job<'_> = &run;
        let seq = self.shared.posted.load(Ordering::Relaxed) + 1;
        // SAFETY of the lifetime erasure: the helper only dereferences the pointer for job
        // `seq`, and this function does not return (nor unwind: see `Wait`) before `done`
        // reaches `seq`, so `job` outlives every use.
        self.shared
            .job
            .store(&job as *const Job<'_> as *mut (), Ordering::Relaxed);
        self.shared.posted.store(seq, Ordering::Release);
        if let Some(h) = &self.helper {
            h.thread().unpark();
        }
        let wait = Wait {
            shared: &self.shared,
            seq,
        };
        mine();
        drop(wait);
        if self.shared.panicked.swap(false, Ordering::AcqRel) {
            panic!("a product on the helper thread panicked");
        }
    }
}

/// Waits for the helper's job when dropped, also while `mine` unwinds.
struct Wait<'a> {
    shared: &'a Shared,
    seq: u64,
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        let mut spins = 0u32;
        while self.shared.done.load(Ordering::Acquire) < self.seq {
            if spins < SPIN_ROUNDS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

fn helper_loop(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0u32;
        let seq = loop {
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            let posted = shared.posted.load(Ordering::Acquire);
            if posted > seen {
                break posted;
            }
            if spins < SPIN_ROUNDS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                // Sleep until `join` unparks it: an unpark that comes before this park makes
                // it return at once, so no job is missed, and an idle model costs no wake-ups.
                std::thread::park();
            }
        };
        let ptr = shared.job.load(Ordering::Acquire) as *const Job<'static>;
        // SAFETY: published by `join` for job `seq`, which waits for `done >= seq`.
        let job = unsafe { &*ptr };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            shared.panicked.store(true, Ordering::Release);
        }
        seen = seq;
        shared.done.store(seq, Ordering::Release);
    }
}

impl Drop for SplitPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(h) = self.helper.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[test]
    fn both_halves_run_every_time() {
        let pool = SplitPool::new().unwrap();
        let theirs_runs = AtomicUsize::new(0);
        let mut mine_runs = 0;
        for i in 0..10_000 {
            let mut out = [0usize; 2];
            let (a, b) = out.split_at_mut(1);
            pool.join(
                || {
                    a[0] = i;
                    mine_runs += 1;
                },
                || {
                    b[0] = i + 1;
                    theirs_runs.fetch_add(1, Ordering::Relaxed);
                },
            );
            assert_eq!(out, [i, i + 1]);
        }
        assert_eq!(mine_runs, 10_000);
        assert_eq!(theirs_runs.load(Ordering::Relaxed), 10_000);
    }

    #[test]
    fn a_job_after_a_long_pause_still_runs() {
        let pool = SplitPool::new().unwrap();
        std::thread::sleep(Duration::from_millis(20)); // the helper is parked by now
        let hit = AtomicUsize::new(0);
        pool.join(
            || {},
            || {
                hit.fetch_add(1, Ordering::Relaxed);
            },
        );
        assert_eq!(hit.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_panic_on_the_helper_reaches_the_caller() {
        let pool = SplitPool::new().unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.join(|| {}, || panic!("boom"));
        }));
        assert!(r.is_err());
        // The pool still works afterwards.
        let hit = AtomicUsize::new(0);
        pool.join(
            || {},
            || {
                hit.fetch_add(1, Ordering::Relaxed);
            },
        );
        assert_eq!(hit.load(Ordering::Relaxed), 1);
    }
}

//! One helper thread that takes half of a product: a one-thread rayon pool, the caller doing
//! the other half itself (`in_place_scope`), so at most two threads ever run the model.
//!
//! Starting a thread per product costs tens of microseconds, as long as a small product itself,
//! and candle's spin-waiting pool made decoding 12x slower on the 2-vCPU build machine (its
//! waiters competed with the element-wise pool for the same two cores).
//!
//! Measured against the hand-written hand-off this replaces (an atomic job slot, a helper that
//! spun then parked; unsafe lifetime erasure): `camxuc models bench smollm2-135m --threads 2`,
//! 5 idle runs each, alternated, medians: prompt 293 -> 298 tok/s, generation 69.5 -> 72.7
//! tok/s, warm decision 158 -> 155 ms, whole-process wall time equal (ratio 1.005), peak RSS
//! 228 MB both. The same on the K-quant models (5 runs each): Gemma 3 270M prompt 274 / 273
//! tok/s, generation 29.5 / 29.3; Qwen2.5-Coder-0.5B 109 / 110 and 16.5 / 16.6 (own / rayon).
//! Not measurably better, so the simpler rayon hand-off is kept.

/// The helper thread; dropped, it stops.
pub(crate) struct SplitPool {
    pool: rayon::ThreadPool,
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

    pub fn new() -> Result<Self, rayon::ThreadPoolBuildError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "camxuc-llm-split".into())
            .build()?;
        Ok(Self { pool })
    }

    /// Runs `mine` on this thread and `theirs` on the helper, and returns when both are done
    /// (a panic in either reaches the caller).
    pub fn join(&self, mine: impl FnOnce(), theirs: impl FnOnce() + Send) {
        self.pool.in_place_scope(|s| {
            s.spawn(|_| theirs());
            mine();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
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

//! Thread pools sized to the CPUs this process may use.
//!
//! candle sizes its process-wide pools (the barrier pool behind its element-wise ops, and the
//! parallelism it asks of gemm) from the machine's cores, not from the CPUs the process may run
//! on. Under `taskset -c 0` on the 2-vCPU development machine, `camxuc classify` therefore
//! still started a second candle thread that spun on the one core it had been given: 22 % of
//! the run's samples went to that thread and to the caller waiting on it
//! (`BarrierGuard::drop`), and the product path ran at 69x real time on one core against the
//! in-process bench's 111x (which sets `CANDLE_NUM_THREADS=1`).
//!
//! So when the process is confined to fewer CPUs than the machine has online (an affinity
//! mask, a container's CPU quota), the binary sets `CANDLE_NUM_THREADS` and
//! `RAYON_NUM_THREADS` to that count before any pool exists, unless the user has set them.
//! On an unconfined process nothing changes.

/// What [`fit_pools_to_affinity`] decides: the thread count to set, if any.
///
/// `usable`: CPUs this process may run on (`std::thread::available_parallelism`, which reads
/// the affinity mask and the cgroup quota); `online`: CPUs the machine has online;
/// `already_set`: the user set `CANDLE_NUM_THREADS` or `RAYON_NUM_THREADS`.
pub fn pool_threads(usable: usize, online: usize, already_set: bool) -> Option<usize> {
    (!already_set && usable >= 1 && usable < online).then_some(usable)
}

/// Sets candle's and rayon's pool sizes to the CPUs this process may use when it is confined
/// to fewer than the machine has (see the module docs). Call it first thing in `main`, before
/// any thread starts; returns the count it set.
pub fn fit_pools_to_affinity() -> Option<usize> {
    let usable = std::thread::available_parallelism().ok()?.get();
    // SAFETY: sysconf with a valid name has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let online = usize::try_from(online).ok()?;
    let already_set = ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    let n = pool_threads(usable, online, already_set)?;
    // Single-threaded at this point (the caller's contract), so setting the environment is
    // sound.
    std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::pool_threads;

    #[test]
    fn pools_follow_a_narrower_affinity_unless_the_user_chose() {
        // `taskset -c 0` on a 2-CPU machine.
        assert_eq!(pool_threads(1, 2, false), Some(1));
        // A container limited to 3 of 16 CPUs.
        assert_eq!(pool_threads(3, 16, false), Some(3));
        // Unconfined: candle's own sizing stays.
        assert_eq!(pool_threads(2, 2, false), None);
        // The user's variables win.
        assert_eq!(pool_threads(1, 2, true), None);
        // A nonsensical report changes nothing.
        assert_eq!(pool_threads(0, 2, false), None);
    }
}

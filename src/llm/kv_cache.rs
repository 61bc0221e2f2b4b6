//! A layer's key/value cache that grows in place, while clones stay independent snapshots.
//!
//! The cache used to grow by concatenation: every generated token copied the whole cache of
//! every layer (SmolLM2 at 290 positions: 13 MB per token, about 7 % of a decoding step).
//! Here keys and values live in buffers with spare capacity, shared by clones. Each holder
//! sees its first `len` positions; the buffer records how far anyone has written (`tip`).
//! A holder at the tip appends in place; any other (a snapshot restored after the cache
//! moved on) copies its positions into a fresh buffer first, which is what concatenation did
//! on every pass. Positions below a holder's `len` are never written again, so a snapshot
//! always reads what it saw.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use candle_core::{Result, Tensor};

/// Positions a fresh buffer holds at least.
const MIN_CAPACITY: usize = 64;

#[derive(Debug, Clone)]
pub(crate) struct KvCache {
    /// Keys and values, (1, n_kv, capacity, d), contiguous.
    k: Tensor,
    v: Tensor,
    /// Positions this holder sees.
    len: usize,
    /// Positions written into these buffers by any holder.
    tip: Arc<AtomicUsize>,
}

impl KvCache {
    /// A cache holding `k`, `v` (1, n_kv, seq, d).
    pub fn new(k: &Tensor, v: &Tensor) -> Result<Self> {
        let seq = k.dim(2)?;
        Self::grown(None, k, v, seq, (2 * seq).max(MIN_CAPACITY))
    }

    /// Positions this holder sees.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The buffers, (1, n_kv, capacity, d): positions `0..len()` are this holder's.
    pub fn buffers(&self) -> (&Tensor, &Tensor) {
        (&self.k, &self.v)
    }

    /// Appends `k`, `v` (1, n_kv, seq, d).
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<()> {
        let seq = k.dim(2)?;
        let capacity = self.k.dim(2)?;
        let end = self.len + seq;
        // Claim positions len..end only if nobody wrote past `len` (this holder is the tip).
        if end <= capacity
            && self
                .tip
                .compare_exchange(self.len, end, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.k.slice_set(&k.contiguous()?, 2, self.len)?;
            self.v.slice_set(&v.contiguous()?, 2, self.len)?;
            self.len = end;
            return Ok(());
        }
        // Out of room: double, so a long generation copies O(log n) times. A snapshot going
        // its own way (a label's answer, a rationale from a shared prefix) usually appends a
        // few tokens: room for MIN_CAPACITY more, not another copy of the prefix's size
        // (SmolLM2 kept ~3 such buffers alive, 76 MB at twice the length each; heaptrack).
        let capacity = if end > capacity {
            2 * end
        } else {
            end + MIN_CAPACITY
        };
        *self = Self::grown(Some(self), k, v, end, capacity)?;
        Ok(())
    }

    /// Fresh buffers with room for `capacity` (≥ `end`) positions, holding `old`'s positions
    /// followed by `k`, `v`.
    fn grown(
        old: Option<&Self>,
        k: &Tensor,
        v: &Tensor,
        end: usize,
        capacity: usize,
    ) -> Result<Self> {
        let (b, n_kv, seq, d) = k.dims4()?;
        let zeros = |t: &Tensor| Tensor::zeros((b, n_kv, capacity, d), t.dtype(), t.device());
        let (kb, vb) = (zeros(k)?, zeros(v)?);
        let start = end - seq;
        if let Some(old) = old {
            kb.slice_set(&old.k.narrow(2, 0, start)?.contiguous()?, 2, 0)?;
            vb.slice_set(&old.v.narrow(2, 0, start)?.contiguous()?, 2, 0)?;
        }
        kb.slice_set(&k.contiguous()?, 2, start)?;
        vb.slice_set(&v.contiguous()?, 2, start)?;
        Ok(Self {
            k: kb,
            v: vb,
            len: end,
            tip: Arc::new(AtomicUsize::new(end)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    fn step(pos: usize, seq: usize) -> Result<Tensor> {
        // Position p holds the value p everywhere: what a holder reads tells where it came from.
        let vals: Vec<f32> = (pos..pos + seq)
            .flat_map(|p| std::iter::repeat_n(p as f32, 4))
            .collect();
        Tensor::from_vec(vals, (1, 1, seq, 4), &Device::Cpu)
    }

    /// Where a tensor's storage lives: equal for tensors that share it.
    fn storage_addr(t: &Tensor) -> usize {
        let (s, _) = t.storage_and_layout();
        &*s as *const candle_core::Storage as usize
    }

    fn seen(c: &KvCache) -> Result<Vec<f32>> {
        c.buffers()
            .0
            .narrow(2, 0, c.len())?
            .i((0, 0, .., 0))?
            .to_vec1::<f32>()
    }

    #[test]
    fn appends_in_place_and_snapshots_keep_what_they_saw() -> Result<()> {
        let mut c = KvCache::new(&step(0, 3)?, &step(0, 3)?)?;
        let snapshot = c.clone();
        c.append(&step(3, 2)?, &step(3, 2)?)?;
        // The tip appended into the shared buffer (no copy).
        assert_eq!(
            storage_addr(c.buffers().0),
            storage_addr(snapshot.buffers().0)
        );
        assert_eq!(seen(&c)?, vec![0., 1., 2., 3., 4.]);
        assert_eq!(seen(&snapshot)?, vec![0., 1., 2.]);
        // The snapshot, restored, goes on differently: it copies, and neither sees the other.
        let mut other = snapshot.clone();
        other.append(&step(100, 1)?, &step(100, 1)?)?;
        assert_ne!(storage_addr(other.buffers().0), storage_addr(c.buffers().0));
        assert_eq!(seen(&other)?, vec![0., 1., 2., 100.]);
        assert_eq!(seen(&c)?, vec![0., 1., 2., 3., 4.]);
        // The original tip still appends in place.
        c.append(&step(5, 1)?, &step(5, 1)?)?;
        assert_eq!(seen(&c)?, vec![0., 1., 2., 3., 4., 5.]);
        assert_eq!(seen(&snapshot)?, vec![0., 1., 2.]);
        Ok(())
    }

    #[test]
    fn grows_past_its_capacity() -> Result<()> {
        let mut c = KvCache::new(&step(0, 1)?, &step(0, 1)?)?;
        for p in 1..200 {
            c.append(&step(p, 1)?, &step(p, 1)?)?;
        }
        let want: Vec<f32> = (0..200).map(|p| p as f32).collect();
        assert_eq!(seen(&c)?, want);
        assert_eq!(
            c.buffers()
                .1
                .narrow(2, 0, 200)?
                .i((0, 0, .., 3))?
                .to_vec1::<f32>()?,
            want
        );
        Ok(())
    }

    #[test]
    fn a_branch_gets_a_little_room_and_the_tip_doubles() -> Result<()> {
        let capacity = |c: &KvCache| c.buffers().0.dim(2);
        let prefix = KvCache::new(&step(0, 300)?, &step(0, 300)?)?;
        assert_eq!(capacity(&prefix)?, 600);
        let mut tip = prefix.clone();
        tip.append(&step(300, 10)?, &step(300, 10)?)?;
        // A second branch from the prefix copies 305 positions into room for 64 more.
        let mut branch = prefix.clone();
        branch.append(&step(500, 5)?, &step(500, 5)?)?;
        assert_eq!(capacity(&branch)?, 305 + MIN_CAPACITY);
        assert_eq!(capacity(&tip)?, 600, "the tip appended in place");
        // The branch runs out of room: it doubles.
        for p in 0..MIN_CAPACITY {
            branch.append(&step(600 + p, 1)?, &step(600 + p, 1)?)?;
        }
        assert_eq!(branch.len(), 305 + MIN_CAPACITY);
        branch.append(&step(1000, 1)?, &step(1000, 1)?)?;
        assert_eq!(capacity(&branch)?, 2 * (306 + MIN_CAPACITY));
        let want: Vec<f32> = (0..300)
            .chain(500..505)
            .chain(600..600 + MIN_CAPACITY)
            .chain(1000..1001)
            .map(|p| p as f32)
            .collect();
        assert_eq!(seen(&branch)?, want);
        Ok(())
    }
}

//! SentencePiece BPE from scores (`tokenizer.ggml.model = "llama"`), following llama.cpp's
//! `llm_tokenizer_spm`: spaces become `▁`, the text starts as one symbol per character, and
//! the adjacent pair whose concatenation is the highest-scoring vocabulary entry is merged
//! first (leftmost on ties). Characters that end up outside the vocabulary fall back to their
//! UTF-8 bytes as `<0xNN>` tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;

/// SentencePiece's visible space.
pub const SPACE_MARK: char = '\u{2581}';

#[derive(Debug)]
pub struct Spm {
    scores: Vec<f32>,
    /// `<0xNN>` token per byte value.
    byte_tokens: [Option<u32>; 256],
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl Spm {
    pub fn new(scores: Vec<f32>, tokens: &[&str]) -> Self {
        let mut byte_tokens = [None; 256];
        for (id, text) in tokens.iter().enumerate() {
            if let Some(hex) = text.strip_prefix("<0x").and_then(|t| t.strip_suffix('>')) {
                if hex.len() == 2 {
                    if let Ok(b) = u8::from_str_radix(hex, 16) {
                        byte_tokens[b as usize] = Some(id as u32);
                    }
                }
            }
        }
        Self {
            scores,
            byte_tokens,
        }
    }

    /// Appends the ids of `text` (free of special tokens; spaces already escaped to `▁`).
    pub fn encode(&self, text: &str, vocab: &Vocab, unknown: Option<u32>, out: &mut Vec<u32>) {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
            if i > 0 {
                symbols[i - 1].next = Some(i);
            }
        }
        let mut queue = BinaryHeap::new();
        let try_add = |queue: &mut BinaryHeap<Bigram>,
                       symbols: &[Symbol],
                       left: Option<usize>,
                       right: Option<usize>| {
            let (Some(l), Some(r)) = (left, right) else {
                return;
            };
            let (a, b) = (symbols[l], symbols[r]);
            let joined = &text[a.start..b.start + b.len];
            if let Some(id) = vocab.get(joined) {
                if let Some(&score) = self.scores.get(id as usize) {
                    queue.push(Bigram {
                        left: l,
                        right: r,
                        score,
                        len: joined.len(),
                    });
                }
            }
        };
        for i in 1..symbols.len() {
            try_add(&mut queue, &symbols, Some(i - 1), Some(i));
        }
        while let Some(bigram) = queue.pop() {
            let (l, r) = (symbols[bigram.left], symbols[bigram.right]);
            // Stale entry: one side was merged away or grew since the pair was queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != bigram.len {
                continue;
            }
            symbols[bigram.left].len += r.len;
            symbols[bigram.right].len = 0;
            symbols[bigram.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(bigram.left);
            }
            let left = symbols[bigram.left];
            try_add(&mut queue, &symbols, left.prev, Some(bigram.left));
            try_add(&mut queue, &symbols, Some(bigram.left), left.next);
        }
        let mut cursor = if symbols.is_empty() { None } else { Some(0) };
        while let Some(i) = cursor {
            let s = symbols[i];
            let piece = &text[s.start..s.start + s.len];
            match vocab.get(piece) {
                Some(id) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        if let Some(id) = self.byte_tokens[b as usize].or(unknown) {
                            out.push(id);
                        }
                    }
                }
            }
            cursor = s.next;
        }
    }
}

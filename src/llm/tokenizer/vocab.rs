//! A tokenizer's vocabulary: every token's text in one buffer, and a hash index from text to
//! id over that buffer.
//!
//! `Vec<String>` plus `HashMap<String, u32>` holds each text twice, each behind its own heap
//! allocation: for Gemma 3's 262,144 tokens that is about 30 MB, built while the GGUF
//! metadata (another copy) is still held. Here the texts live once in one `String` with their
//! end offsets, and the index ([`hashbrown::HashTable`], the table behind std's `HashMap`)
//! stores only ids, hashing and comparing the texts in the buffer: about 6 MB for Gemma 3.

use std::hash::BuildHasher;

use hashbrown::HashTable;

pub struct Vocab {
    /// Every token's text, one after another.
    text: String,
    /// `ends[id]`: where token `id`'s text ends in `text` (it starts where `id - 1`'s ends).
    ends: Vec<u32>,
    /// Ids keyed by their text; of equal texts only the lowest id (the first one listed).
    index: HashTable<u32>,
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for Vocab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vocab")
            .field("tokens", &self.ends.len())
            .field("text_bytes", &self.text.len())
            .finish()
    }
}

impl Vocab {
    /// The vocabulary of `tokens`, ids in order. `None` when the texts together exceed
    /// 4 GiB (no GGUF vocabulary comes near).
    pub fn new<'a>(tokens: impl ExactSizeIterator<Item = &'a str>) -> Option<Self> {
        let n = tokens.len();
        let mut text = String::new();
        let mut ends = Vec::with_capacity(n);
        for t in tokens {
            text.push_str(t);
            ends.push(u32::try_from(text.len()).ok()?);
        }
        text.shrink_to_fit();
        let mut v = Self {
            text,
            ends,
            index: HashTable::with_capacity(n),
            hasher: Default::default(),
        };
        let Self {
            text,
            ends,
            index,
            hasher,
        } = &mut v;
        let (text, ends, hasher) = (&*text, &*ends, &*hasher);
        for id in 0..n as u32 {
            let s = slice(text, ends, id);
            let h = hasher.hash_one(s);
            if index
                .find(h, |&other| slice(text, ends, other) == s)
                .is_none()
            {
                index.insert_unique(h, id, |&i| hasher.hash_one(slice(text, ends, i)));
            }
        }
        Some(v)
    }

    /// The id of a token's text (the lowest, when several tokens share it).
    pub fn get(&self, s: &str) -> Option<u32> {
        let h = self.hasher.hash_one(s);
        self.index.find(h, |&id| self.text_of(id) == s).copied()
    }

    /// Token `id`'s text.
    pub fn text(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.ends.len()).then(|| self.text_of(id))
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    fn text_of(&self, id: u32) -> &str {
        slice(&self.text, &self.ends, id)
    }
}

fn slice<'a>(text: &'a str, ends: &[u32], id: u32) -> &'a str {
    let i = id as usize;
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    &text[start..ends[i] as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn agrees_with_a_hash_map_of_strings() {
        // Duplicates, the empty text, multi-byte UTF-8 and a byte token, as GGUF vocabularies
        // have them.
        let tokens = [
            "<pad>", "a", "ab", "", "▁xin", "chào", "a", "<0x0A>", "ab", "ừ",
        ];
        let v = Vocab::new(tokens.iter().copied()).unwrap();
        let mut reference: HashMap<&str, u32> = HashMap::new();
        for (id, t) in tokens.iter().enumerate() {
            reference.entry(t).or_insert(id as u32);
        }
        assert_eq!(v.len(), tokens.len());
        for (id, t) in tokens.iter().enumerate() {
            assert_eq!(v.text(id as u32), Some(*t));
            assert_eq!(v.get(t), reference.get(t).copied(), "{t:?}");
        }
        assert_eq!(v.get("a"), Some(1), "the first of equal texts");
        assert_eq!(v.get("ab"), Some(2));
        assert_eq!(v.get(""), Some(3));
        assert_eq!(v.get("abc"), None);
        assert_eq!(v.get("b"), None, "a prefix of the buffer is not a token");
        assert_eq!(v.text(tokens.len() as u32), None);
    }

    #[test]
    fn a_large_vocabulary_finds_every_token() {
        let tokens: Vec<String> = (0..300_000u32).map(|i| format!("t{i:x}")).collect();
        let v = Vocab::new(tokens.iter().map(String::as_str)).unwrap();
        for (id, t) in tokens.iter().enumerate().step_by(997) {
            assert_eq!(v.get(t), Some(id as u32));
        }
        assert_eq!(v.get("t"), None);
    }
}

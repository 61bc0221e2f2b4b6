//! Character and word error rates of a transcript against its reference sentence.
//!
//! Both texts are normalised first — Unicode NFC (Vietnamese diacritics can be composed or
//! stacked; the same letter must compare equal), lowercase, punctuation removed, whitespace
//! collapsed — so only what was said counts, not how it was written down.

use tokenizers::normalizers::NFC;
use tokenizers::{NormalizedString, Normalizer};

/// NFC, lowercase, punctuation and symbols turned into spaces, single spaces, trimmed.
pub fn normalise(text: &str) -> String {
    let mut nfc = NormalizedString::from(text);
    // NFC cannot fail on a plain string; fall back to the text as given if it ever did.
    let composed = match NFC.normalize(&mut nfc) {
        Ok(()) => nfc.get().to_string(),
        Err(_) => text.to_string(),
    };
    let spaced: String = composed
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Edit distance (substitutions, insertions, deletions, each 1) between two sequences.
pub fn levenshtein<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        current[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(x != y);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// Edits and reference length for one clip, at one granularity (characters or words).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct ErrorCount {
    pub edits: usize,
    pub reference_len: usize,
}

impl ErrorCount {
    /// edits / reference length (1.0 for an empty reference with a non-empty hypothesis).
    pub fn rate(&self) -> f64 {
        if self.reference_len == 0 {
            if self.edits == 0 {
                0.0
            } else {
                1.0
            }
        } else {
            self.edits as f64 / self.reference_len as f64
        }
    }
}

/// Sum over clips: the rate of the sum is the corpus-level (length-weighted) rate.
impl std::ops::Add for ErrorCount {
    type Output = Self;

    fn add(self, other: Self) -> Self {
        Self {
            edits: self.edits + other.edits,
            reference_len: self.reference_len + other.reference_len,
        }
    }
}

/// Character errors of `hypothesis` against `reference` (normalised; spaces count).
pub fn char_errors(reference: &str, hypothesis: &str) -> ErrorCount {
    let r: Vec<char> = normalise(reference).chars().collect();
    let h: Vec<char> = normalise(hypothesis).chars().collect();
    ErrorCount {
        edits: levenshtein(&r, &h),
        reference_len: r.len(),
    }
}

/// Word errors of `hypothesis` against `reference` (normalised, split on spaces; a
/// Vietnamese "word" here is one syllable, as written).
pub fn word_errors(reference: &str, hypothesis: &str) -> ErrorCount {
    let r = normalise(reference);
    let h = normalise(hypothesis);
    let r: Vec<&str> = r.split_whitespace().collect();
    let h: Vec<&str> = h.split_whitespace().collect();
    ErrorCount {
        edits: levenshtein(&r, &h),
        reference_len: r.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalising_composes_lowercases_and_drops_punctuation() {
        // "ệ" written as e + U+0323 (dot below) + U+0302 (circumflex): NFC composes it.
        let stacked = "Vi\u{0065}\u{0323}\u{0302}t  Nam, OK!";
        assert_eq!(normalise(stacked), "việt nam ok");
        assert_eq!(normalise("  ...  "), "");
    }

    #[test]
    fn levenshtein_counts_each_kind_of_edit() {
        assert_eq!(levenshtein(b"kitten", b"sitting"), 3);
        assert_eq!(levenshtein::<u8>(b"", b"abc"), 3);
        assert_eq!(levenshtein(b"abc", b""), 3);
        assert_eq!(levenshtein(b"same", b"same"), 0);
    }

    #[test]
    fn rates_ignore_case_and_punctuation_but_not_tones() {
        assert_eq!(char_errors("Chị ơi!", "chị ơi").rate(), 0.0);
        // One tone mark wrong (ơ → ở) is one character error out of 6.
        let wrong_tone = char_errors("chị ơi", "chị ởi");
        assert_eq!((wrong_tone.edits, wrong_tone.reference_len), (1, 6));
        let words = word_errors("cứu tôi với", "cứu tôi");
        assert_eq!((words.edits, words.reference_len), (1, 3));
        assert_eq!(ErrorCount::default().rate(), 0.0);
        assert_eq!((words + wrong_tone).reference_len, 9);
    }
}

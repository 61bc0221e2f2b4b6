//! The pieces of Whisper's greedy decoding that work on one step's logits: token
//! suppression, log-softmax, and a guard against the decoder's repetition loops.

/// Adds −∞ at every id in `ids` (ids past the vocabulary are ignored).
pub fn suppress(logits: &mut [f32], ids: &[u32]) {
    for &id in ids {
        if let Some(l) = logits.get_mut(id as usize) {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// The index of the largest finite logit (None when every logit is −∞ or NaN).
pub fn argmax(logits: &[f32]) -> Option<usize> {
    let i = crate::math::argmax(logits);
    logits.get(i).is_some_and(|l| l.is_finite()).then_some(i)
}

/// log Σ exp(logits), stable; −∞ when every logit is −∞.
pub fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = logits
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return f32::NEG_INFINITY;
    }
    let sum: f64 = logits
        .iter()
        .map(|&l| f64::from(l - max).exp())
        .sum::<f64>();
    max + sum.ln() as f32
}

/// How many of `tokens` to keep when their tail is a loop: a pattern of `period` tokens
/// repeated back to back. Whisper (base especially) falls into such loops on speech it
/// cannot make out ("ờ ờ ờ ờ …", the same phrase again and again) until the token limit;
/// a single token 4 times or a longer pattern 3 times is taken as a loop and cut to one
/// copy. Real speech rarely repeats 3 times in a row within a 30 s window, and when it does,
/// one copy keeps the words for the reasoner.
pub fn loop_cut(tokens: &[u32]) -> Option<usize> {
    const MAX_PERIOD: usize = 24;
    for period in 1..=MAX_PERIOD {
        let repeats = if period == 1 { 4 } else { 3 };
        let span = period * repeats;
        if span > tokens.len() {
            break;
        }
        let tail = &tokens[tokens.len() - span..];
        let pattern = &tail[..period];
        if tail.chunks_exact(period).all(|chunk| chunk == pattern) {
            return Some(tokens.len() - span + period);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suppressed_tokens_cannot_win() {
        let mut logits = vec![0.0, 5.0, 1.0];
        suppress(&mut logits, &[1, 99]);
        assert_eq!(argmax(&logits), Some(2));
        suppress(&mut logits, &[0, 2]);
        assert_eq!(argmax(&logits), None);
        assert_eq!(log_sum_exp(&logits), f32::NEG_INFINITY);
    }

    #[test]
    fn log_sum_exp_matches_the_direct_sum() {
        let logits = [1.0f32, 2.0, 3.0];
        let direct = logits.iter().map(|l| l.exp()).sum::<f32>().ln();
        assert!((log_sum_exp(&logits) - direct).abs() < 1e-5);
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f32.ln())).abs() < 1e-3);
    }

    #[test]
    fn loops_are_cut_to_one_copy_and_ordinary_text_is_kept() {
        assert_eq!(loop_cut(&[9, 7, 7, 7, 7]), Some(2));
        assert_eq!(loop_cut(&[9, 7, 7, 7]), None);
        assert_eq!(loop_cut(&[1, 2, 3, 4, 5, 4, 5, 4, 5]), Some(5));
        assert_eq!(loop_cut(&[1, 2, 3, 4, 5, 6]), None);
        assert_eq!(loop_cut(&[]), None);
    }
}

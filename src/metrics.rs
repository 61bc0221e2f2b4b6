//! Classification metrics over label indices: confusion, accuracy, per-class and macro F1
//! (scikit-learn's definitions, zero_division = 0), calibration error, bootstrap intervals.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Index of `label` in `labels` (case-insensitive, trimmed), or `labels.len()` when it is
/// outside the set (`uncertain` from `--abstain-below`, `unusable`, a missing prediction): the
/// one mapping eval and the report use, so their scores agree.
pub fn label_index(labels: &[String], label: &str) -> usize {
    let l = label.trim();
    labels
        .iter()
        .position(|n| n.eq_ignore_ascii_case(l))
        .unwrap_or(labels.len())
}

/// Confusion matrix: `counts[true][predicted]`, in label-set order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub counts: Vec<Vec<u32>>,
    /// Per true label, predictions outside the label set (index `n_labels`, see
    /// [`label_index`]): wrong, lowering that label's recall, and counted toward no label's
    /// precision. Empty when there were none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outside: Vec<u32>,
}

impl Confusion {
    /// From `(true, predicted)` label indices; a predicted index `>= n_labels` is a prediction
    /// outside the set. A pair whose true index is outside the set has no label to be scored
    /// against and is left out (eval's manifests refuse such labels).
    pub fn new(n_labels: usize, pairs: impl IntoIterator<Item = (usize, usize)>) -> Self {
        let mut counts = vec![vec![0u32; n_labels]; n_labels];
        let mut outside = Vec::new();
        for (t, p) in pairs {
            if t >= n_labels {
                continue;
            }
            if p < n_labels {
                counts[t][p] += 1;
            } else {
                outside.resize(n_labels, 0);
                outside[t] += 1;
            }
        }
        Self { counts, outside }
    }

    /// Predictions outside the set for true label `t`.
    fn outside_of(&self, t: usize) -> u32 {
        self.outside.get(t).copied().unwrap_or(0)
    }

    pub fn n(&self) -> u32 {
        self.counts.iter().flatten().sum::<u32>() + self.outside.iter().sum::<u32>()
    }

    pub fn accuracy(&self) -> f64 {
        let n = self.n();
        if n == 0 {
            return 0.0;
        }
        let correct: u32 = (0..self.counts.len()).map(|i| self.counts[i][i]).sum();
        correct as f64 / n as f64
    }

    /// Precision, recall, F1 and support per label (0 where a ratio's denominator is 0).
    pub fn per_class(&self) -> Vec<ClassScores> {
        let k = self.counts.len();
        (0..k)
            .map(|c| {
                let tp = self.counts[c][c] as f64;
                let support: u32 = self.counts[c].iter().sum::<u32>() + self.outside_of(c);
                let predicted: u32 = (0..k).map(|t| self.counts[t][c]).sum();
                let precision = ratio(tp, predicted as f64);
                let recall = ratio(tp, support as f64);
                let f1 = ratio(2.0 * precision * recall, precision + recall);
                ClassScores {
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect()
    }

    /// Unweighted mean of the per-class F1 over all labels of the set.
    pub fn macro_f1(&self) -> f64 {
        let pc = self.per_class();
        if pc.is_empty() {
            return 0.0;
        }
        pc.iter().map(|c| c.f1).sum::<f64>() / pc.len() as f64
    }

    /// Cohen's kappa between truth and prediction.
    pub fn cohen_kappa(&self) -> f64 {
        let n = self.n() as f64;
        if n == 0.0 {
            return 0.0;
        }
        let k = self.counts.len();
        let po = self.accuracy();
        let pe: f64 = (0..k)
            .map(|c| {
                let row: u32 = self.counts[c].iter().sum::<u32>() + self.outside_of(c);
                let col: u32 = (0..k).map(|t| self.counts[t][c]).sum();
                row as f64 * col as f64 / (n * n)
            })
            .sum();
        ratio(po - pe, 1.0 - pe)
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u32,
}

/// Accuracy of predictions against truth (label indices).
pub fn accuracy(truth: &[usize], pred: &[usize]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    truth.iter().zip(pred).filter(|(t, p)| t == p).count() as f64 / truth.len() as f64
}

/// Macro F1 over `n_labels` labels.
pub fn macro_f1(n_labels: usize, truth: &[usize], pred: &[usize]) -> f64 {
    Confusion::new(n_labels, truth.iter().copied().zip(pred.iter().copied())).macro_f1()
}

/// Expected calibration error with `bins` equal-width confidence bins: the support-weighted
/// mean |accuracy − mean confidence| over bins, on the top-label confidence.
pub fn expected_calibration_error(confidence: &[f64], correct: &[bool], bins: usize) -> f64 {
    let r = reliability_bins(confidence, correct, bins);
    let n = confidence.len().max(1) as f64;
    r.iter()
        .map(|b| b.count as f64 / n * (b.accuracy - b.confidence).abs())
        .sum()
}

/// One bin of a reliability diagram.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    pub count: usize,
    /// Mean top-label confidence in the bin (0 when empty).
    pub confidence: f64,
    /// Fraction correct in the bin (0 when empty).
    pub accuracy: f64,
}

pub fn reliability_bins(confidence: &[f64], correct: &[bool], bins: usize) -> Vec<ReliabilityBin> {
    let bins = bins.max(1);
    let mut out: Vec<ReliabilityBin> = (0..bins)
        .map(|i| ReliabilityBin {
            lower: i as f64 / bins as f64,
            upper: (i + 1) as f64 / bins as f64,
            count: 0,
            confidence: 0.0,
            accuracy: 0.0,
        })
        .collect();
    for (&c, &ok) in confidence.iter().zip(correct) {
        // Confidence 1.0 belongs to the last bin.
        let i = ((c.clamp(0.0, 1.0) * bins as f64) as usize).min(bins - 1);
        out[i].count += 1;
        out[i].confidence += c;
        out[i].accuracy += ok as u8 as f64;
    }
    for b in &mut out {
        if b.count > 0 {
            b.confidence /= b.count as f64;
            b.accuracy /= b.count as f64;
        }
    }
    out
}

/// A 95 % percentile-bootstrap interval `[low, high]`.
pub type Interval = [f64; 2];

/// Percentile bootstrap of `stat` over resamples of the `n` items (indices with
/// replacement), `reps` times, seeded.
pub fn bootstrap_ci(
    n: usize,
    reps: usize,
    seed: u64,
    stat: impl FnMut(&[usize]) -> f64,
) -> Interval {
    interval(&bootstrap_values(n, reps, seed, stat))
}

/// `stat` on `reps` seeded resamples of the `n` items, sorted (empty when there is nothing
/// to resample).
fn bootstrap_values(
    n: usize,
    reps: usize,
    seed: u64,
    mut stat: impl FnMut(&[usize]) -> f64,
) -> Vec<f64> {
    bootstrap_strata(&[n], reps, seed, |ix| stat(&ix[0]))
}

/// `stat` on `reps` seeded resamples of several sets of items (`sizes[s]` items in set `s`),
/// each set resampled on its own (indices with replacement, set after set), sorted; empty when
/// a set has nothing to resample. With one set this is [`bootstrap_values`].
fn bootstrap_strata(
    sizes: &[usize],
    reps: usize,
    seed: u64,
    mut stat: impl FnMut(&[Vec<usize>]) -> f64,
) -> Vec<f64> {
    if sizes.is_empty() || sizes.contains(&0) || reps == 0 {
        return Vec::new();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx: Vec<Vec<usize>> = sizes.iter().map(|&n| vec![0usize; n]).collect();
    let mut values: Vec<f64> = (0..reps)
        .map(|_| {
            for set in idx.iter_mut() {
                let n = set.len();
                for i in set.iter_mut() {
                    *i = rng.random_range(0..n);
                }
            }
            stat(&idx)
        })
        .collect();
    values.sort_by(f64::total_cmp);
    values
}

/// The 95 % percentile interval of sorted bootstrap values (`[0, 0]` when there are none).
fn interval(sorted: &[f64]) -> Interval {
    if sorted.is_empty() {
        return [0.0, 0.0];
    }
    [percentile(sorted, 0.025), percentile(sorted, 0.975)]
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// 95 % bootstrap intervals of accuracy and macro F1 on one set of predictions.
/// Accuracy of `pred` on the items `ix` (with repeats, as a bootstrap resample gives them).
pub fn accuracy_on(truth: &[usize], pred: &[usize], ix: &[usize]) -> f64 {
    ix.iter().filter(|&&i| truth[i] == pred[i]).count() as f64 / ix.len().max(1) as f64
}

/// Macro F1 of `pred` on the items `ix`.
fn macro_f1_on(n_labels: usize, truth: &[usize], pred: &[usize], ix: &[usize]) -> f64 {
    Confusion::new(n_labels, ix.iter().map(|&i| (truth[i], pred[i]))).macro_f1()
}

pub fn accuracy_and_f1_ci(
    n_labels: usize,
    truth: &[usize],
    pred: &[usize],
    reps: usize,
    seed: u64,
) -> (Interval, Interval) {
    let acc = bootstrap_ci(truth.len(), reps, seed, |ix| accuracy_on(truth, pred, ix));
    let f1 = bootstrap_ci(truth.len(), reps, seed, |ix| {
        macro_f1_on(n_labels, truth, pred, ix)
    });
    (acc, f1)
}

/// The difference `metric(b) − metric(a)` of two systems on the same clips, with a paired
/// bootstrap interval (both systems resampled with the same indices).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedDifference {
    pub difference: f64,
    pub ci95: Interval,
}

/// `metric(ix, pred_b) − metric(ix, pred_a)` on all items and over paired resamples, with the
/// share of resamples where `b` is strictly better.
fn paired_difference(
    n: usize,
    pred_a: &[usize],
    pred_b: &[usize],
    reps: usize,
    seed: u64,
    metric: impl Fn(&[usize], &[usize]) -> f64,
) -> (PairedDifference, f64) {
    paired_strata(
        &[n],
        reps,
        seed,
        |ix| metric(&ix[0], pred_a),
        |ix| metric(&ix[0], pred_b),
    )
}

/// [`paired_difference`] over several sets of items resampled on their own
/// ([`bootstrap_strata`]): `score_b − score_a` on all items and over paired resamples, with
/// the share of resamples where `b` is strictly better.
fn paired_strata(
    sizes: &[usize],
    reps: usize,
    seed: u64,
    score_a: impl Fn(&[Vec<usize>]) -> f64,
    score_b: impl Fn(&[Vec<usize>]) -> f64,
) -> (PairedDifference, f64) {
    let all: Vec<Vec<usize>> = sizes.iter().map(|&n| (0..n).collect()).collect();
    let values = bootstrap_strata(sizes, reps, seed, |ix| score_b(ix) - score_a(ix));
    let better = values.iter().filter(|&&v| v > 0.0).count() as f64 / values.len().max(1) as f64;
    (
        PairedDifference {
            difference: score_b(&all) - score_a(&all),
            ci95: interval(&values),
        },
        better,
    )
}

/// [`paired_macro_f1_difference`] and the share of paired resamples where `pred_b` has the
/// higher macro-F1 (the bootstrap probability of improvement).
pub fn paired_macro_f1_test(
    n_labels: usize,
    truth: &[usize],
    pred_a: &[usize],
    pred_b: &[usize],
    reps: usize,
    seed: u64,
) -> (PairedDifference, f64) {
    paired_difference(truth.len(), pred_a, pred_b, reps, seed, |ix, pred| {
        macro_f1_on(n_labels, truth, pred, ix)
    })
}

/// One test set of a paired comparison: its truth and both models' predictions.
#[derive(Clone, Copy, Debug)]
pub struct PairedColumn<'a> {
    pub truth: &'a [usize],
    pub pred_a: &'a [usize],
    pub pred_b: &'a [usize],
}

/// The lowest macro-F1 over several test sets (a model-selection protocol's "worst column"),
/// `b` against `a`, paired: each resample draws every set's items once, with replacement, and
/// both models are scored on the same draw. Returns the difference (b − a) with its interval
/// and the share of resamples where `b`'s worst set scores higher (an interval of `[0, 0]`,
/// never higher, when a set has no items).
pub fn paired_worst_macro_f1_test<'a>(
    n_labels: usize,
    columns: &[PairedColumn<'a>],
    reps: usize,
    seed: u64,
) -> (PairedDifference, f64) {
    let worst = |ix: &[Vec<usize>], pred: fn(&PairedColumn<'a>) -> &'a [usize]| {
        columns
            .iter()
            .zip(ix)
            .map(|(c, ix)| macro_f1_on(n_labels, c.truth, pred(c), ix))
            .fold(f64::INFINITY, f64::min)
    };
    let sizes: Vec<usize> = columns.iter().map(|c| c.truth.len()).collect();
    paired_strata(
        &sizes,
        reps,
        seed,
        |ix| worst(ix, |c| c.pred_a),
        |ix| worst(ix, |c| c.pred_b),
    )
}

pub fn paired_macro_f1_difference(
    n_labels: usize,
    truth: &[usize],
    pred_a: &[usize],
    pred_b: &[usize],
    reps: usize,
    seed: u64,
) -> PairedDifference {
    paired_macro_f1_test(n_labels, truth, pred_a, pred_b, reps, seed).0
}

pub fn paired_accuracy_difference(
    truth: &[usize],
    pred_a: &[usize],
    pred_b: &[usize],
    reps: usize,
    seed: u64,
) -> PairedDifference {
    paired_difference(truth.len(), pred_a, pred_b, reps, seed, |ix, pred| {
        accuracy_on(truth, pred, ix)
    })
    .0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prediction outside the label set is wrong, lowers its true label's recall, and counts
    /// toward no label's precision: the same scores as a confusion with an "other" column
    /// that is then left out of the average.
    #[test]
    fn a_prediction_outside_the_set_is_wrong_and_no_labels_prediction() {
        let labels: Vec<String> = ["calm", "angry", "panic"].map(String::from).to_vec();
        let truth = [0, 0, 1, 1, 2, 2];
        let preds = ["calm", "uncertain", "angry", "angry", "panic", "calm"];
        let pred: Vec<usize> = preds.iter().map(|p| label_index(&labels, p)).collect();
        assert_eq!(pred[1], 3);
        let c = Confusion::new(3, truth.iter().copied().zip(pred.iter().copied()));
        assert_eq!(c.n(), 6);
        assert!((c.accuracy() - 4.0 / 6.0).abs() < 1e-12);
        let pc = c.per_class();
        // calm: 1 of 2 recalled (the other is `uncertain`); predicted calm twice, once right.
        assert!((pc[0].recall - 0.5).abs() < 1e-12 && (pc[0].precision - 0.5).abs() < 1e-12);
        assert_eq!(pc[0].support, 2);
        // angry: both recalled, never predicted wrongly.
        assert!((pc[1].f1 - 1.0).abs() < 1e-12);
        // The (k + 1)-square confusion with an "other" column, truncated to the k labels.
        let wide = Confusion::new(4, truth.iter().copied().zip(pred.iter().copied()));
        for (a, b) in pc.iter().zip(wide.per_class().iter().take(3)) {
            assert_eq!(a, b);
        }
        let mean = pc.iter().map(|p| p.f1).sum::<f64>() / 3.0;
        assert!((c.macro_f1() - mean).abs() < 1e-12);
    }

    // Expected values computed with scikit-learn 1.x (accuracy_score, f1_score(average='macro'),
    // confusion_matrix, precision_recall_fscore_support, cohen_kappa_score).
    #[test]
    fn matches_scikit_learn_on_a_fixed_example() {
        let y = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 0, 1, 2];
        let p = [0, 1, 0, 2, 1, 1, 0, 2, 2, 1, 2, 0, 0, 1, 1];
        let c = Confusion::new(3, y.iter().copied().zip(p.iter().copied()));
        assert_eq!(c.counts, vec![vec![3, 1, 1], vec![1, 3, 0], vec![1, 2, 3]]);
        assert!((c.accuracy() - 0.6).abs() < 1e-12);
        let pc = c.per_class();
        let precision: Vec<f64> = pc.iter().map(|s| s.precision).collect();
        let recall: Vec<f64> = pc.iter().map(|s| s.recall).collect();
        for (a, b) in precision.iter().zip([0.6, 0.5, 0.75]) {
            assert!((a - b).abs() < 1e-12);
        }
        for (a, b) in recall.iter().zip([0.6, 0.75, 0.5]) {
            assert!((a - b).abs() < 1e-12);
        }
        assert_eq!(
            pc.iter().map(|s| s.support).collect::<Vec<_>>(),
            vec![5, 4, 6]
        );

        let y = [0, 1, 2, 2, 1, 0, 0, 2, 1, 2, 2, 2];
        let p = [0, 2, 2, 2, 1, 1, 0, 0, 1, 2, 1, 2];
        assert!((macro_f1(3, &y, &p) - 0.6551226551226551).abs() < 1e-12);
        let c = Confusion::new(3, y.iter().copied().zip(p.iter().copied()));
        assert!((c.cohen_kappa() - 0.4838709677419355).abs() < 1e-12);
    }

    #[test]
    fn absent_class_counts_as_zero_f1_like_scikit_learn() {
        // f1_score([0,0,1,1],[0,0,0,0],labels=[0,1,2],average='macro',zero_division=0)
        assert!((macro_f1(3, &[0, 0, 1, 1], &[0, 0, 0, 0]) - 0.2222222222222222).abs() < 1e-12);
    }

    #[test]
    fn ece_is_zero_when_confidence_matches_accuracy_and_large_when_overconfident() {
        let conf = vec![0.75; 8];
        let correct = [true, true, true, false, true, true, true, false];
        assert!(expected_calibration_error(&conf, &correct, 10) < 1e-12);
        let over = vec![0.99; 4];
        let half = [true, false, true, false];
        assert!((expected_calibration_error(&over, &half, 10) - 0.49).abs() < 1e-9);
    }

    #[test]
    fn bootstrap_interval_contains_the_estimate_and_narrows_with_n() {
        let truth: Vec<usize> = (0..400).map(|i| i % 3).collect();
        let pred: Vec<usize> = truth
            .iter()
            .enumerate()
            .map(|(i, &t)| if i % 5 == 0 { (t + 1) % 3 } else { t })
            .collect();
        let (acc, _) = accuracy_and_f1_ci(3, &truth, &pred, 500, 1);
        assert!(acc[0] < 0.8 && 0.8 < acc[1], "{acc:?}");
        let (small, _) = accuracy_and_f1_ci(3, &truth[..40], &pred[..40], 500, 1);
        assert!(small[1] - small[0] > acc[1] - acc[0]);
        // Deterministic for a seed.
        assert_eq!(
            accuracy_and_f1_ci(3, &truth, &pred, 200, 9),
            accuracy_and_f1_ci(3, &truth, &pred, 200, 9)
        );
    }

    #[test]
    fn the_worst_column_test_follows_the_weakest_set() {
        let truth: Vec<usize> = (0..300).map(|i| i % 3).collect();
        let wrong_every = |k: usize| -> Vec<usize> {
            truth
                .iter()
                .enumerate()
                .map(|(i, &t)| if i % k == 0 { (t + 1) % 3 } else { t })
                .collect()
        };
        let (good, fair, poor) = (wrong_every(10), wrong_every(4), wrong_every(2));
        // Set 1 is easy for both; on set 2 (each model's worst) `b` is much better.
        let columns = [
            PairedColumn {
                truth: &truth,
                pred_a: &good,
                pred_b: &good,
            },
            PairedColumn {
                truth: &truth,
                pred_a: &poor,
                pred_b: &fair,
            },
        ];
        let (d, better) = paired_worst_macro_f1_test(3, &columns, 300, 5);
        let want = macro_f1(3, &truth, &fair) - macro_f1(3, &truth, &poor);
        assert!((d.difference - want).abs() < 1e-12, "{d:?}");
        assert!(d.ci95[0] > 0.0 && better > 0.99, "{d:?} {better}");
        // Improving only a set that is nobody's worst moves nothing.
        let columns = [
            PairedColumn {
                truth: &truth,
                pred_a: &fair,
                pred_b: &good,
            },
            PairedColumn {
                truth: &truth,
                pred_a: &poor,
                pred_b: &poor,
            },
        ];
        let (d, better) = paired_worst_macro_f1_test(3, &columns, 300, 5);
        assert_eq!(d.difference, 0.0);
        assert_eq!(better, 0.0);
        // A model against itself: zero, never better.
        let same = [PairedColumn {
            truth: &truth,
            pred_a: &fair,
            pred_b: &fair,
        }];
        let (d, better) = paired_worst_macro_f1_test(3, &same, 100, 5);
        assert_eq!((d.difference, d.ci95, better), (0.0, [0.0, 0.0], 0.0));
        // A set with no items: nothing to resample, no panic.
        let empty = [
            same[0],
            PairedColumn {
                truth: &[],
                pred_a: &[],
                pred_b: &[],
            },
        ];
        let (d, better) = paired_worst_macro_f1_test(3, &empty, 100, 5);
        assert_eq!((d.ci95, better), ([0.0, 0.0], 0.0));
    }

    #[test]
    fn paired_difference_sees_a_real_improvement() {
        let truth: Vec<usize> = (0..300).map(|i| i % 3).collect();
        let a: Vec<usize> = truth
            .iter()
            .enumerate()
            .map(|(i, &t)| if i % 3 == 0 { (t + 1) % 3 } else { t })
            .collect();
        let b: Vec<usize> = truth
            .iter()
            .enumerate()
            .map(|(i, &t)| if i % 10 == 0 { (t + 1) % 3 } else { t })
            .collect();
        let d = paired_accuracy_difference(&truth, &a, &b, 500, 3);
        assert!(d.difference > 0.2 && d.ci95[0] > 0.0, "{d:?}");
        let f = paired_macro_f1_difference(3, &truth, &a, &b, 300, 3);
        assert!(f.ci95[0] > 0.0, "{f:?}");
    }
}

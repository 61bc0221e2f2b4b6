//! `eval --report`: a report built from a plausible evaluation (300 clips of three classes, an
//! acoustic model that is right about 80 % of the time and unsure on the hard clips, a router
//! sending the unsure ones to a reasoner) is complete, hides recording folders, escapes text,
//! and — when Chromium is installed — renders to a non-blank screenshot.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use camxuc::eval::record::{AblationLabels, EvalRecord};
use camxuc::eval::run::{Ablations, EvalReport, Identifier, RoutingSummary, Scores};
use camxuc::metrics::{ClassScores, Confusion};
use camxuc::report::{write_report, ReportOptions};
use camxuc::{Decision, Evidence, FiredRule, LabelSet, Probs, Route, DECISION_SCHEMA_VERSION};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const PRIVATE_DIR: &str = "/home/alice/clinic-private/patient_017";
const TEMPERATURE: f32 = 1.6;

/// Typical z-score direction of a few real evidence features per class (calm, angry, panic).
const FEATURES: [(&str, [f64; 3]); 8] = [
    ("f0_median_st27", [-0.6, 0.8, 1.4]),
    ("f0_range_st", [-0.7, 1.2, 0.9]),
    ("f0_tremor_ratio", [-0.2, 0.1, 1.3]),
    ("loudness_range_db", [-0.8, 1.5, 0.6]),
    ("speech_rate_syl_per_s", [-0.9, 0.7, 1.2]),
    ("jitter_local_pct", [-0.1, 0.4, 0.9]),
    ("alpha_ratio_db", [-0.8, 1.6, 0.5]),
    ("pause_ratio", [0.9, -0.6, -0.4]),
];

fn softmax(z: &[f64]) -> Vec<f32> {
    camxuc::math::softmax(z).iter().map(|&v| v as f32).collect()
}

fn pick_other(rng: &mut ChaCha8Rng, not: usize) -> usize {
    (not + 1 + rng.random_range(0..2)) % 3
}

fn records(n: usize, seed: u64) -> Vec<EvalRecord> {
    let labels = LabelSet::default();
    let name = |i: usize| labels.name(i).to_string();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            // Hard clips (about a third) have a weak acoustic signal.
            let leaning = i % 3;
            let strength = if rng.random_bool(0.35) {
                rng.random_range(0.0..0.8)
            } else {
                rng.random_range(1.5..3.5)
            };
            let logits: Vec<f64> = (0..3)
                .map(|c| if c == leaning { strength } else { 0.0 } + rng.random_range(-0.8..0.8))
                .collect();
            let acoustic = Probs::new(&labels, softmax(&logits));
            let (a_ix, top) = acoustic.argmax();
            // The truth drawn from the calibrated probabilities: a well-calibrated model, as
            // temperature scaling aims for.
            let u: f32 = rng.random_range(0.0..1.0);
            let mut acc = 0.0;
            let truth = acoustic
                .values
                .iter()
                .position(|&p| {
                    acc += p;
                    u < acc
                })
                .unwrap_or(2);
            let routed = top < 0.6;
            let reasoner = if rng.random_bool(0.72) {
                truth
            } else {
                pick_other(&mut rng, truth)
            };
            let rules_only = if rng.random_bool(0.58) {
                truth
            } else {
                pick_other(&mut rng, truth)
            };
            let llm_only = if rng.random_bool(0.7) {
                truth
            } else {
                pick_other(&mut rng, truth)
            };
            let final_ix = if routed { reasoner } else { a_ix };
            let mut evidence = Evidence {
                baseline: "corpus:test".into(),
                ..Evidence::default()
            };
            for (f, dirs) in FEATURES {
                let z = dirs[truth] * strength.max(0.3) / 2.0 + rng.random_range(-0.9..0.9);
                evidence.z.insert(f.into(), z);
                evidence.values.insert(f.into(), 10.0 + 3.0 * z);
            }
            let mut fired = Vec::new();
            if evidence.z["loudness_range_db"] > 1.0 {
                fired.push(FiredRule {
                    id: "angry-loud-wide".into(),
                    label: "angry".into(),
                    weight: 1.0,
                    statement_en: "Loud and wide intensity range".into(),
                    statement_vi: Some("Giọng to, biên độ rộng".into()),
                });
            }
            if evidence.z["f0_tremor_ratio"] > 0.8 {
                fired.push(FiredRule {
                    id: "panic-tremor".into(),
                    label: "panic".into(),
                    weight: 0.8,
                    statement_en: "Trembling pitch".into(),
                    statement_vi: None,
                });
            }
            let rationale = routed.then(|| {
                format!(
                    "Giọng run, <b>\"nói nhanh\"</b> & cao độ tăng → {} (rules {}).",
                    name(final_ix),
                    fired.len()
                )
            });
            let probs = if routed {
                let mut v = vec![0.1f32; 3];
                v[final_ix] = 0.8;
                Probs::new(&labels, v)
            } else {
                acoustic.clone()
            };
            EvalRecord {
                decision: Decision {
                    schema_version: DECISION_SCHEMA_VERSION,
                    file: format!("{PRIVATE_DIR}/clip_{i:04}.wav"),
                    segment: None,
                    label: name(final_ix),
                    probs,
                    acoustic_probs: acoustic,
                    route: if routed { Route::Llm } else { Route::Acoustic },
                    unfamiliarity: Some(1.0),
                    evidence,
                    fired_rules: fired,
                    contributions: None,
                    rationale,
                    rationale_language: None,
                    rationale_check: None,
                    transcript: None,
                    timings_ms: BTreeMap::from([("acoustic".into(), 4.0)]),
                },
                truth: name(truth),
                speaker: Some(format!("spk{}", i % 7)),
                ablations: AblationLabels {
                    acoustic_only: name(a_ix),
                    rules_only: name(rules_only),
                    llm_only: Some(name(llm_only)),
                    reasoner: name(reasoner),
                    routed: name(final_ix),
                },
                perturbed_label: None,
                temperature: TEMPERATURE,
            }
        })
        .collect()
}

/// The summary `eval` would write for these records (only what the report reads matters).
fn summary(records: &[EvalRecord]) -> EvalReport {
    let labels = LabelSet::default();
    let ix = |l: &str| labels.index_of(l).unwrap_or(0);
    // Like `eval --json` today: the headline numbers are the acoustic model's.
    let conf = Confusion::new(
        3,
        records
            .iter()
            .map(|r| (ix(&r.truth), ix(&r.ablations.acoustic_only))),
    );
    let routed = records
        .iter()
        .filter(|r| r.decision.route != Route::Acoustic)
        .count();
    let per_class: BTreeMap<String, ClassScores> = labels
        .names()
        .iter()
        .cloned()
        .zip(conf.per_class())
        .collect();
    EvalReport {
        n: records.len(),
        n_failed: 2,
        failures: vec![
            format!("decode {PRIVATE_DIR}/clip_9998.wav: no audio track"),
            format!("'{PRIVATE_DIR}/clip_9999.m4a': no speech found after trimming"),
        ],
        labels: labels.names().to_vec(),
        headline: "final decisions of the routed pipeline (= ablations.routed)".into(),
        accuracy: conf.accuracy(),
        accuracy_ci95: [conf.accuracy() - 0.05, conf.accuracy() + 0.05],
        macro_f1: conf.macro_f1(),
        macro_f1_ci95: [conf.macro_f1() - 0.05, conf.macro_f1() + 0.05],
        per_class,
        confusion: conf.counts.clone(),
        ece: 0.04,
        acoustic_ece: 0.05,
        routing: RoutingSummary {
            threshold: 0.6,
            routed_fraction: routed as f64 / records.len() as f64,
            acoustic_accuracy_on_routed: Some(0.45),
            final_accuracy_on_routed: Some(0.7),
            acoustic_accuracy_on_kept: Some(0.9),
        },
        ablations: Ablations {
            acoustic_only: Scores {
                accuracy: 0.78,
                macro_f1: 0.77,
                ..Default::default()
            },
            rules_only: Some(Scores {
                accuracy: 0.58,
                macro_f1: 0.57,
                ..Default::default()
            }),
            llm_only: Some(Scores {
                accuracy: 0.7,
                macro_f1: 0.69,
                ..Default::default()
            }),
            routed: Some(Scores {
                accuracy: conf.accuracy(),
                macro_f1: conf.macro_f1(),
                ..Default::default()
            }),
            routed_minus_acoustic_macro_f1: None,
            routed_minus_acoustic_accuracy: None,
        },
        timings_ms: BTreeMap::from([
            ("analyse_per_clip".into(), 35.2),
            ("llm_per_clip".into(), 410.0),
        ]),
        model: Identifier {
            name: format!("{PRIVATE_DIR}/../models/synth-v1"),
            sha256: Some("ab".repeat(32)),
        },
        rules: Some(Identifier {
            name: "vi-guidelines v3".into(),
            sha256: Some("cd".repeat(32)),
        }),
        llm: Some(Identifier {
            name: "smollm2-360m-instruct-q8".into(),
            sha256: None,
        }),
        seed: 7,
        robustness: None,
        rationale_faithfulness: camxuc::eval::run::faithfulness(records),
    }
}

fn read_all(dir: &Path) -> String {
    let mut all = std::fs::read_to_string(dir.join("report.html")).unwrap();
    all += &std::fs::read_to_string(dir.join("report.md")).unwrap();
    for e in std::fs::read_dir(dir.join("figures")).unwrap() {
        all += &std::fs::read_to_string(e.unwrap().path()).unwrap();
    }
    all
}

#[test]
fn report_is_complete_private_and_escaped() {
    let recs = records(300, 11);
    let report = summary(&recs);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("report");
    let opts = ReportOptions {
        note: Some("Data is SYNTHETIC: espeak-ng voices, not real patients.".into()),
        bootstrap_reps: 300,
        ..ReportOptions::default()
    };
    let files = write_report(&dir, &report, &recs, &opts).unwrap();
    assert!(files.html.is_file() && files.markdown.is_file());
    let stems: Vec<String> = files
        .figures
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        stems,
        [
            "confusion_routed",
            "confusion_acoustic",
            "reliability",
            "coverage",
            "per_class_f1"
        ]
    );

    let html = std::fs::read_to_string(&files.html).unwrap();
    let md = std::fs::read_to_string(&files.markdown).unwrap();
    // Every figure inline in the HTML, and linked from the Markdown.
    assert_eq!(html.matches("<svg ").count(), files.figures.len());
    for s in &stems {
        assert!(
            html.contains(&format!("<figure id=\"{s}\"")),
            "{s} missing from the HTML"
        );
        assert!(
            md.contains(&format!("(figures/{s}.svg)")),
            "{s} not linked from the Markdown"
        );
    }
    // Self-contained: nothing to fetch, no scripts.
    for bad in ["<script", "http://", "https://", "<link", "@import", "url("] {
        let without_svg_ns = html.replace("http://www.w3.org/2000/svg", "");
        assert!(!without_svg_ns.contains(bad), "HTML contains {bad}");
    }
    // The note, the reliability ECEs and the tables are there.
    assert!(html.contains("Data is SYNTHETIC"));
    // The final decisions lead the headline; the summary's numbers say whose they are.
    assert!(html.contains("accuracy, final (routed) decisions"));
    assert!(html.contains("accuracy, acoustic only (eval --json)"));
    assert!(html.contains("before calibration (T = 1.60 undone): ECE"));
    for id in [
        "headline",
        "ablations",
        "per_class",
        "routing",
        "examples",
        "failures",
    ] {
        assert!(
            html.contains(&format!("<h2 id=\"{id}\">")),
            "table {id} missing"
        );
    }
    assert!(md.contains("| ablation | accuracy | macro F1 |"));
    assert!(md.contains("| LLM only |"));
    // File names, never the private folder (also not inside error messages or the model id).
    let all = read_all(&dir);
    assert!(!all.contains("/home/alice"), "a private folder leaked");
    assert!(!all.contains("clinic-private"), "a private folder leaked");
    assert!(html.contains("clip_9998.wav: no audio track"));
    assert!(html.contains(">clip_0"), "example rows show file names");
    // Rationale text is escaped, in HTML and in Markdown.
    assert!(html.contains("&lt;b&gt;&quot;nói nhanh&quot;&lt;/b&gt; &amp; cao độ"));
    assert!(!html.contains("<b>\"nói"));
    assert!(!md.contains("<b>\"nói"));
    // Owner-only files and folder.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&files.html), 0o600);
        assert_eq!(mode(&files.figures[0]), 0o600);
    }

    // Full paths only when asked.
    let dir2 = tmp.path().join("full");
    write_report(
        &dir2,
        &report,
        &recs,
        &ReportOptions {
            full_paths: true,
            bootstrap_reps: 50,
            ..ReportOptions::default()
        },
    )
    .unwrap();
    assert!(std::fs::read_to_string(dir2.join("report.html"))
        .unwrap()
        .contains(PRIVATE_DIR));

    render_if_chromium(&dir);
}

#[test]
fn report_of_an_empty_evaluation_still_renders() {
    let report = summary(&records(3, 1));
    let tmp = tempfile::tempdir().unwrap();
    let files = write_report(tmp.path(), &report, &[], &ReportOptions::default()).unwrap();
    let html = std::fs::read_to_string(files.html).unwrap();
    assert_eq!(html.matches("<svg ").count(), 5);
    assert!(!html.contains("NaN"));
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&bytes[16..20]), be(&bytes[20..24])))
}

fn render_if_chromium(dir: &Path) {
    let has = |b: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {b}"))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .any(|b| has(b))
    {
        // .ci/run installs Chromium: in CI a missing browser is a failure, not a skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium must be installed in CI (.ci/run installs it)"
        );
        println!("skipped the screenshot: chromium is not installed (apt-get install chromium)");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/render_report.sh");
    let out = Command::new("bash").arg(&script).arg(dir).output().unwrap();
    assert!(
        out.status.success(),
        "render_report.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(dir.join("report.png")).unwrap();
    assert_eq!(png_size(&png), Some((1200, 3000)));
    // A blank 1200×3000 page compresses to a few KB; text, tables and figures make it far larger.
    assert!(
        png.len() > 100_000,
        "screenshot looks blank ({} bytes)",
        png.len()
    );
    if let Ok(keep) = std::env::var("CAMXUC_KEEP_REPORT") {
        // For looking at the page by eye: copy the whole report out of the temp dir.
        let keep = Path::new(&keep);
        std::fs::create_dir_all(keep.join("figures")).unwrap();
        for f in ["report.html", "report.md", "report.png"] {
            std::fs::copy(dir.join(f), keep.join(f)).unwrap();
        }
        for e in std::fs::read_dir(dir.join("figures")).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, keep.join("figures").join(p.file_name().unwrap())).unwrap();
        }
    }
}

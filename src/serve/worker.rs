//! The one thread that owns the pipeline. `Pipeline` holds the model and a reasoner that may
//! keep a KV cache: it is built on this thread, never shared, and decides one clip at a time
//! while the async side keeps answering other requests.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::ServeError;
use crate::pipeline::{Pipeline, PipelineError, PipelineSpec, Router};
use crate::{Decision, Route};

/// Why a clip is in the review queue.
pub fn review_reason(d: &Decision, router: &Router, below: f32) -> Option<&'static str> {
    if router.is_unfamiliar(d.unfamiliarity) {
        Some("unfamiliar")
    } else if d.route != Route::Acoustic {
        Some("routed")
    } else if d.probs.argmax().1 < below {
        Some("low_confidence")
    } else {
        None
    }
}

/// A decided clip (or segment) and why it needs a person, if it does.
pub type Decided = (Decision, Option<&'static str>);

/// Why a job gave no decision.
#[derive(Debug)]
pub enum JobError {
    /// The upload is not usable audio (400).
    BadInput(String),
    /// The pipeline failed or panicked (500).
    Internal(String),
}

enum Job {
    Classify {
        path: PathBuf,
        name: String,
        segments: bool,
        reply: oneshot::Sender<Result<Vec<Decided>, JobError>>,
    },
    /// Build the pipeline again with another model directory (an accepted adaptation); the
    /// old one stays in use when that fails.
    Reload {
        model: PathBuf,
        reply: oneshot::Sender<Result<PathBuf, String>>,
    },
}

/// What the built pipeline tells the server.
pub struct WorkerInfo {
    /// The model directory in use.
    pub model: PathBuf,
    pub labels: Vec<String>,
}

/// Handle to the worker thread.
pub struct Worker {
    jobs: mpsc::Sender<Job>,
}

impl Worker {
    /// Build the pipeline on a new thread; returns once it is built (or failed to build).
    pub fn start(
        spec: PipelineSpec,
        models_dir: PathBuf,
        below: f32,
    ) -> Result<(Self, WorkerInfo), ServeError> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<WorkerInfo, PipelineError>>();
        std::thread::Builder::new()
            .name("camxuc-pipeline".into())
            .spawn(move || {
                let mut spec = spec;
                let opened = match Pipeline::open(&spec, &models_dir) {
                    Ok(o) => o,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let mut pipeline = opened.pipeline;
                let info = WorkerInfo {
                    model: opened.model_dir.clone(),
                    labels: pipeline.model.meta.labels.names().to_vec(),
                };
                if ready_tx.send(Ok(info)).is_err() {
                    return;
                }
                for job in rx {
                    let (path, name, segments, reply) = match job {
                        Job::Classify {
                            path,
                            name,
                            segments,
                            reply,
                        } => (path, name, segments, reply),
                        Job::Reload { model, reply } => {
                            let mut next = spec.clone();
                            next.model = Some(model);
                            let result = match Pipeline::open(&next, &models_dir) {
                                Ok(o) => {
                                    pipeline = o.pipeline;
                                    spec = next;
                                    Ok(o.model_dir)
                                }
                                Err(e) => Err(e.to_string()),
                            };
                            let _ = reply.send(result);
                            continue;
                        }
                    };
                    let result = catch_unwind(AssertUnwindSafe(|| {
                        decide(&mut pipeline, &path, &name, segments, below)
                    }))
                    .unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "unknown panic".into());
                        eprintln!("error: classifying {name} panicked: {what}");
                        Err(JobError::Internal(format!(
                            "{name}: the pipeline failed on this clip (internal error)"
                        )))
                    });
                    // The client may have gone away; then the decision is not stored.
                    let _ = reply.send(result);
                }
            })
            .map_err(|_| ServeError::WorkerGone)?;
        match ready_rx.recv() {
            Ok(Ok(info)) => Ok((Self { jobs }, info)),
            Ok(Err(e)) => Err(ServeError::Pipeline(Box::new(e))),
            Err(_) => Err(ServeError::WorkerGone),
        }
    }

    /// Decide `path` (stored as `name`) on the worker thread.
    pub async fn classify(
        &self,
        path: PathBuf,
        name: String,
        segments: bool,
    ) -> Result<Vec<Decided>, JobError> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Classify {
                path,
                name,
                segments,
                reply,
            })
            .map_err(|_| JobError::Internal("the classification worker has stopped".into()))?;
        rx.await
            .map_err(|_| JobError::Internal("the classification worker has stopped".into()))?
    }

    /// Use the model directory `model` from now on (the pipeline is built anew on the worker).
    pub async fn reload(&self, model: PathBuf) -> Result<PathBuf, String> {
        let (reply, rx) = oneshot::channel();
        let gone = || "the classification worker has stopped".to_string();
        self.jobs
            .send(Job::Reload { model, reply })
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

/// Whether an error is about the input rather than the server.
fn is_input_error(e: &PipelineError) -> bool {
    matches!(e, PipelineError::Audio(_) | PipelineError::Analyse(_))
}

/// The error text with the server's path of the stored clip replaced by its stored name.
fn message(e: &PipelineError, path: &Path, name: &str) -> String {
    e.to_string().replace(&path.display().to_string(), name)
}

fn decide(
    pipeline: &mut Pipeline,
    path: &Path,
    name: &str,
    segments: bool,
    below: f32,
) -> Result<Vec<Decided>, JobError> {
    let fail = |e: PipelineError| {
        let m = message(&e, path, name);
        if is_input_error(&e) {
            JobError::BadInput(m)
        } else {
            eprintln!("error: {m}");
            JobError::Internal(m)
        }
    };
    let router = pipeline.router;
    if !segments {
        let d = pipeline.decide_file(path, name).map_err(fail)?;
        let reason = review_reason(&d, &router, below);
        return Ok(vec![(d, reason)]);
    }
    let mut out = Vec::new();
    let mut failed = Vec::new();
    for r in pipeline.decide_segments(path, name).map_err(fail)? {
        match r {
            Ok(d) => {
                let reason = review_reason(&d, &router, below);
                out.push((d, reason));
            }
            Err(e) => failed.push(message(&e, path, name)),
        }
    }
    if out.is_empty() {
        return Err(JobError::BadInput(match failed.first() {
            Some(first) => format!("{name}: no utterance could be decided ({first})"),
            None => format!("{name}: no speech found (no utterance between pauses)"),
        }));
    }
    for f in &failed {
        eprintln!("warning: a segment was skipped: {f}");
    }
    Ok(out)
}

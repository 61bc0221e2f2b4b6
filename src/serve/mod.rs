//! `camxuc serve`: a local web workbench over the same pipeline as `classify`.
//!
//! One process serves an embedded page (no CDN, no web fonts: it works with no network) and a
//! small JSON API the page itself uses: classify uploaded clips, label the ones that need a
//! person (routed, low-confidence, unfamiliar) with the keyboard, and collect the labels into
//! a manifest that `camxuc adapt --labelled` reads. Recordings and labels are health data, so
//! the server binds to the loopback interface unless told otherwise, and everything it stores
//! under `--data` is owner-only.
//!
//! Threads: the pipeline is CPU-heavy and not `Sync`, so it lives on one worker thread
//! (`worker`) that takes jobs from a channel; the async handlers only move bytes and wait
//! for replies, so a long classification never blocks `/api/health` or the page.

mod routes;
pub mod store;
mod worker;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use crate::pipeline::{PipelineError, PipelineSpec};

pub use store::{Record, Store, StoreError, LABELS_COLUMNS, LABELS_FILE};

/// Default port of the workbench.
pub const DEFAULT_PORT: u16 = 8177;
/// Default upload size limit in MB (a long recording at 16-bit 48 kHz stereo is ~11 MB/min).
pub const DEFAULT_MAX_UPLOAD_MB: u64 = 200;

/// What `camxuc serve` was asked for.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Port; 0 picks a free one (the first stdout line says which).
    pub port: u16,
    /// Address to bind; a non-loopback one needs `allow_remote`.
    pub listen: IpAddr,
    /// Accept a non-loopback `listen` (with a warning: the API has no authentication).
    pub allow_remote: bool,
    /// Folder for uploaded clips, decisions and labels (created owner-only).
    pub data: PathBuf,
    /// Uploads above this many MB are refused with 413.
    pub max_upload_mb: u64,
    /// Also queue for review clips whose final top probability is below this.
    pub below: f32,
    /// The pipeline, built once by [`crate::pipeline::Pipeline::open`].
    pub pipeline: PipelineSpec,
    /// The models folder (Whisper front end and the default model).
    pub models_dir: PathBuf,
    /// The folder an `eval --report` wrote, shown on the report page (default
    /// `<data>/report`).
    pub report: Option<PathBuf>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            port: DEFAULT_PORT,
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            allow_remote: false,
            data: PathBuf::from("site"),
            max_upload_mb: DEFAULT_MAX_UPLOAD_MB,
            below: 0.0,
            pipeline: PipelineSpec::default(),
            models_dir: crate::catalog::models_dir(),
            report: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to listen on {addr}: it is not a loopback address and the workbench has no \
         authentication; pass --allow-remote to accept connections from other machines"
    )]
    RemoteRefused { addr: IpAddr },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the server stopped with an error: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pipeline(Box<PipelineError>),
    #[error("the classification worker stopped before the pipeline was built")]
    WorkerGone,
}

/// Shared by every handler.
pub(crate) struct AppState {
    pub store: Store,
    pub worker: worker::Worker,
    /// The model directory in use (what `/api/health` names; an accepted adaptation
    /// replaces it).
    pub model: std::sync::Mutex<PathBuf>,
    /// The model's labels, in order (the keys 1, 2, 3 of the review page).
    pub labels: Vec<String>,
    pub max_upload_bytes: usize,
    pub models_dir: PathBuf,
    /// The `eval --report` folder the report page shows.
    pub report: PathBuf,
    /// Set while an adaptation runs (one at a time).
    pub adapting: std::sync::atomic::AtomicBool,
}

impl AppState {
    pub fn model(&self) -> PathBuf {
        self.model.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Keeps a long-running server's memory flat. glibc raises its mmap threshold every time a
/// large block is freed (up to 32 MB); after the model loads, the per-clip buffers (decoded
/// audio, features, encoder activations, 0.1–1 MB each) then come from the brk heap, where the
/// decisions the server keeps pin its top so freed space is never returned. Measured here over
/// 400 sequential `/api/classify` calls (`just bench` runs 100): RSS grew 67 → 138 MB with the
/// dynamic threshold and 62 → 72 MB with it fixed (mostly the kept decisions, about 20 KB a
/// clip). Fixing it at glibc's initial 128 KB turns the adjustment off.
fn fix_malloc_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Check the address, open the data folder, build the pipeline, then serve until Ctrl-C or
/// SIGTERM. The first line on stdout is `listening on http://ADDR:PORT` (flushed), so a
/// script that started it with `--port 0` can read the port.
pub fn run(opts: ServeOptions) -> Result<(), ServeError> {
    if !opts.listen.is_loopback() {
        if !opts.allow_remote {
            return Err(ServeError::RemoteRefused { addr: opts.listen });
        }
        eprintln!(
            "warning: listening on {} (--allow-remote): anyone who can reach this machine can \
             upload recordings, read stored clips and decisions, and write labels; there is no \
             authentication",
            opts.listen
        );
    }
    fix_malloc_threshold();
    let store = Store::open(&opts.data)?;
    let (worker, info) =
        worker::Worker::start(opts.pipeline.clone(), opts.models_dir.clone(), opts.below)?;
    let state = Arc::new(AppState {
        store,
        worker,
        model: std::sync::Mutex::new(info.model),
        labels: info.labels,
        max_upload_bytes: usize::try_from(opts.max_upload_mb.saturating_mul(1024 * 1024))
            .unwrap_or(usize::MAX),
        models_dir: opts.models_dir.clone(),
        report: opts
            .report
            .clone()
            .unwrap_or_else(|| opts.data.join("report")),
        adapting: std::sync::atomic::AtomicBool::new(false),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    runtime.block_on(async move {
        let addr = SocketAddr::new(opts.listen, opts.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;
        {
            let mut out = std::io::stdout().lock();
            // Scripts and tests read the port from this line: write it whole and flush.
            let _ = writeln!(out, "listening on http://{local}");
            let _ = out.flush();
        }
        eprintln!(
            "data: {} (clips, decisions.jsonl, {LABELS_FILE})",
            state.store.dir().display()
        );
        axum::serve(listener, routes::router(state))
            .with_graceful_shutdown(shutdown_signal())
            .await
            .map_err(ServeError::Serve)
    })
}

/// Ctrl-C or (on unix) SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    eprintln!("stopping");
}

//! The page, its assets and the JSON API. Every error is `{"error": "…"}` with a status that
//! names the kind of problem (400 bad upload or label, 404 unknown clip, 409 labelled
//! already, 413 too large, 500 the server's fault); a handler that panics answers 500 the
//! same way and the server goes on.

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path as UrlPath, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tower_http::catch_panic::CatchPanicLayer;

use super::store::{Record, StoreError};
use super::worker::JobError;
use super::AppState;

type Shared = Arc<AppState>;

/// Assets built into the binary: the workbench needs nothing from the network.
const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// A JSON error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::UnknownClip { .. } => StatusCode::NOT_FOUND,
            StoreError::AlreadyLabelled { .. } => StatusCode::CONFLICT,
            StoreError::Io { .. } | StoreError::Labels { .. } => {
                eprintln!("error: {e}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self::new(status, e.to_string())
    }
}

/// The application's routes with the upload limit and the panic guard.
pub(crate) fn router(state: Shared) -> Router {
    let limit = state.max_upload_bytes;
    Router::new()
        .route("/", get(page))
        .route("/review", get(page))
        .route("/adapt", get(page))
        .route("/report", get(page))
        .route("/app.js", get(app_js))
        .route("/style.css", get(style_css))
        .route("/api/health", get(health))
        .route(
            "/api/classify",
            post(classify).layer(DefaultBodyLimit::max(limit)),
        )
        .route("/api/review", get(review))
        .route("/api/decisions", get(decisions))
        .route("/api/label", post(label))
        .route("/api/labels", get(labels))
        .route("/api/clips/{file}", get(clip))
        .route("/api/adapt", post(adapt))
        .route("/api/adapt/accept", post(accept))
        .route("/api/report", get(report_index))
        .route("/api/report/{*path}", get(report_file))
        .fallback(not_found)
        .layer(CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

/// A handler panic: logged, answered as a 500 JSON error.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    eprintln!("error: a request handler panicked: {what}");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error (the server logged it and goes on)",
    )
    .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such page or API route")
}

async fn page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        INDEX_HTML,
    )
}

async fn app_js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        APP_JS,
    )
}

async fn style_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_CSS,
    )
}

async fn health(State(s): State<Shared>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "model": s.model().display().to_string(),
        "labels": s.labels,
        "data": s.store.dir().display().to_string(),
    }))
}

/// `segments=true|1` in the query string.
fn wants_segments(query: Option<&str>) -> Result<bool, ApiError> {
    let Some(q) = query else { return Ok(false) };
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
        if k == "segments" {
            return match v {
                "true" | "1" | "" => Ok(true),
                "false" | "0" => Ok(false),
                other => Err(ApiError::bad(format!(
                    "segments must be true or false, not {other:?}"
                ))),
            };
        }
    }
    Ok(false)
}

/// Store the multipart field `file` under a generated name, decide it on the worker, record
/// the decision(s) and answer with them (one Decision, or an array with `?segments=true`).
async fn classify(
    State(s): State<Shared>,
    RawQuery(query): RawQuery,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<Value>, ApiError> {
    let segments = wants_segments(query.as_deref())?;
    let mut multipart = multipart.map_err(|e| {
        ApiError::bad(format!(
            "expected a multipart/form-data upload with a field named file ({e})"
        ))
    })?;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the upload is larger than the limit of {} MB (--max-upload-mb)",
                s.max_upload_bytes / (1024 * 1024)
            ),
        )
    };
    let multipart_error = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::bad(format!("unreadable upload: {}", e.body_text()))
        }
    };
    let mut field = loop {
        match multipart.next_field().await.map_err(multipart_error)? {
            Some(f) if f.name() == Some("file") => break f,
            Some(_) => continue,
            None => return Err(ApiError::bad("the upload has no field named file")),
        }
    };
    let (name, path, mut out) = s.store.new_clip(field.file_name())?;
    // Removed again unless handed on, also when the client goes away mid-upload (the
    // handler is then dropped at an await).
    let mut partial = Partial {
        path: path.clone(),
        keep: false,
    };
    // Streamed to disk: a long recording is never held in memory whole.
    let mut size = 0usize;
    loop {
        match field.chunk().await {
            Ok(Some(bytes)) => {
                size += bytes.len();
                if let Err(e) = out.write_all(&bytes) {
                    eprintln!("error: {}: cannot write: {e}", path.display());
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "cannot store the upload",
                    ));
                }
            }
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e)),
        }
    }
    drop(out);
    if size == 0 {
        return Err(ApiError::bad("the upload is empty (0 bytes)"));
    }
    partial.keep = true;
    // Decided and recorded in a task of its own: a client that goes away mid-way leaves a
    // stored clip with its decision (or no clip), never a clip without one.
    let task = tokio::spawn(decide_and_record(Arc::clone(&s), path, name, segments));
    let decisions = task.await.map_err(|e| {
        eprintln!("error: classification task failed: {e}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    })??;
    let body = if segments {
        serde_json::to_value(&decisions)
    } else {
        serde_json::to_value(&decisions[0])
    }
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(body))
}

/// An upload being stored.
struct Partial {
    path: std::path::PathBuf,
    keep: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Decide the stored clip on the worker and append its records to `decisions.jsonl`; a clip
/// that gives no decision is removed (`adapt --unlabelled` reads the folder).
async fn decide_and_record(
    s: Shared,
    path: std::path::PathBuf,
    name: String,
    segments: bool,
) -> Result<Vec<crate::Decision>, ApiError> {
    let decided = match s
        .worker
        .classify(path.clone(), name.clone(), segments)
        .await
    {
        Ok(d) => d,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(match e {
                JobError::BadInput(m) => ApiError::bad(m),
                JobError::Internal(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m),
            });
        }
    };
    let records: Vec<Record> = decided
        .iter()
        .map(|(d, reason)| Record {
            file: name.clone(),
            decision: d.clone(),
            reason: reason.map(String::from),
        })
        .collect();
    s.store.add_decisions(records)?;
    Ok(decided.into_iter().map(|(d, _)| d).collect())
}

async fn review(State(s): State<Shared>) -> Json<Value> {
    let items: Vec<Value> = s
        .store
        .review_queue()
        .into_iter()
        .map(|r| json!({ "file": r.file, "decision": r.decision, "reason": r.reason }))
        .collect();
    Json(json!({ "items": items }))
}

/// How many clips `/api/decisions` lists.
const RECENT: usize = 20;

/// The last classified clips, newest first, each with its decisions (several for a long
/// recording with segments): what the classify page shows after a reload.
async fn decisions(State(s): State<Shared>) -> Json<Value> {
    let items: Vec<Value> = s
        .store
        .recent(RECENT)
        .into_iter()
        .map(|(file, ds)| json!({ "file": file, "decisions": ds }))
        .collect();
    Json(json!({ "items": items }))
}

/// `{"file": stored name, "label": one of the model's labels}` → appended to labels.csv.
async fn label(State(s): State<Shared>, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    #[derive(serde::Deserialize)]
    struct LabelRequest {
        file: String,
        label: String,
        /// Who speaks in the clip, when the person labelling knows (adapt holds out by it).
        #[serde(default)]
        speaker: Option<String>,
    }
    let req: LabelRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad(format!(
            "expected JSON {{\"file\": \"…\", \"label\": \"…\"}}: {e}"
        ))
    })?;
    let label = req.label.trim().to_lowercase();
    if !s.labels.contains(&label) {
        return Err(ApiError::bad(format!(
            "unknown label {:?}: use one of {}",
            req.label,
            s.labels.join(", ")
        )));
    }
    let store = Arc::clone(&s);
    let file = req.file.clone();
    // A synced append: off the async threads.
    let speaker = clean_speaker(req.speaker.as_deref().unwrap_or(""))?;
    tokio::task::spawn_blocking(move || {
        store
            .store
            .add_label(&file, &label, &speaker)
            .map(|()| label)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map(|label| Json(json!({ "file": req.file, "label": label })))
    .map_err(ApiError::from)
}

/// A speaker name for the manifest: trimmed, at most 64 characters, no control characters.
fn clean_speaker(raw: &str) -> Result<String, ApiError> {
    let s = raw.trim();
    if s.chars().count() > 64 || s.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "speaker: at most 64 characters, no line breaks or control characters",
        ));
    }
    Ok(s.to_string())
}

/// How many labels of each class `labels.csv` holds (the adapt page).
async fn labels(State(s): State<Shared>) -> Json<Value> {
    let given = s.store.labels();
    let mut counts = serde_json::Map::new();
    for l in &s.labels {
        let n = given.values().filter(|v| *v == l).count();
        counts.insert(l.clone(), n.into());
    }
    Json(json!({ "total": given.len(), "counts": counts }))
}

/// The stored clip, for the page's audio player.
async fn clip(
    State(s): State<Shared>,
    UrlPath(file): UrlPath<String>,
) -> Result<Response, ApiError> {
    let path = s
        .store
        .clip_path(&file)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("{file}: no such clip")))?;
    let bytes = std::fs::read(&path).map_err(|e| {
        eprintln!("error: {}: {e}", path.display());
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the clip")
    })?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mime = match ext.as_str() {
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "m4a" | "mp4" => "audio/mp4",
        "webm" => "audio/webm",
        _ => "application/octet-stream",
    };
    Ok(([(header::CONTENT_TYPE, mime)], Body::from(bytes)).into_response())
}

/// Where adapted models go: `<data>/models/<name>`.
const ADAPTED_DIR: &str = "models";

/// Clears the adaptation flag however the adaptation ends.
struct Adapting<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Adapting<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Adapt the model in use to the collected labels (`labels.csv`) and clips (`clips/`) into a
/// new folder `<data>/models/adapted-<unix-ms>`, the way `camxuc adapt` does; the answer has
/// the report with `before` / `after` on held-out labels. The new model is not used until
/// `/api/adapt/accept` names it.
async fn adapt(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    use std::sync::atomic::Ordering;
    if s.adapting.swap(true, Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "an adaptation is already running",
        ));
    }
    let state = Arc::clone(&s);
    let result = tokio::task::spawn_blocking(move || {
        let _flag = Adapting(&state.adapting);
        let parent = state.store.dir().join(ADAPTED_DIR);
        crate::private_fs::create_private_dir_all(&parent)
            .map_err(|e| format!("{}: cannot create: {e}", parent.display()))?;
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let name = format!("adapted-{ms}");
        let mut opts = crate::acoustic::adapt::AdaptOptions::new(
            state.model(),
            state.models_dir.clone(),
            parent.join(&name),
        );
        opts.unlabelled = Some(state.store.clips_dir());
        let labels = state.store.labels_path();
        opts.labelled = labels.is_file().then_some(labels);
        let mut report =
            crate::acoustic::adapt::adapt(&opts, &mut |_| {}).map_err(|e| e.to_string())?;
        crate::pipeline::fusion::refit_after_adapt(&mut report).map_err(|e| e.to_string())?;
        Ok::<_, String>((name, report))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    // What adapt refuses (too few clips, one class) is about the collected data.
    let (name, report) = result.map_err(ApiError::bad)?;
    Ok(Json(json!({ "model": name, "report": report })))
}

/// `{"model": "adapted-…"}`: classify with that adapted model from now on.
async fn accept(State(s): State<Shared>, body: axum::body::Bytes) -> Result<Json<Value>, ApiError> {
    #[derive(serde::Deserialize)]
    struct AcceptRequest {
        model: String,
    }
    let req: AcceptRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("expected JSON {{\"model\": \"adapted-…\"}}: {e}")))?;
    let dir = s.store.dir().join(ADAPTED_DIR).join(&req.model);
    if !req.model.starts_with("adapted-")
        || req.model.contains(['/', '\\'])
        || !dir.join(crate::acoustic::model_dir::META_FILE).is_file()
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{}: no such adapted model", req.model),
        ));
    }
    let model = s
        .worker
        .reload(dir)
        .await
        .map_err(|m| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m))?;
    eprintln!("model: {} (accepted adaptation)", model.display());
    *s.model.lock().unwrap_or_else(|p| p.into_inner()) = model.clone();
    Ok(Json(json!({ "model": model.display().to_string() })))
}

/// Whether the report folder holds a report.
async fn report_index(State(s): State<Shared>) -> Json<Value> {
    let html = s.report.join("report.html");
    Json(json!({
        "available": html.is_file(),
        "dir": s.report.display().to_string(),
    }))
}

/// A file of the `eval --report` folder (the page and its figures), never outside it.
async fn report_file(
    State(s): State<Shared>,
    UrlPath(rel): UrlPath<String>,
) -> Result<Response, ApiError> {
    let missing = || ApiError::new(StatusCode::NOT_FOUND, format!("{rel}: not in the report"));
    let rel_path = std::path::Path::new(&rel);
    if !rel_path
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return Err(missing());
    }
    let path = s.report.join(rel_path);
    let bytes = std::fs::read(&path).map_err(|_| missing())?;
    let mime = match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "md" | "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    };
    Ok(([(header::CONTENT_TYPE, mime)], Body::from(bytes)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn boom() -> &'static str {
        panic!("boom")
    }

    #[test]
    fn a_panicking_handler_answers_500_json_and_the_server_goes_on() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let app: Router = Router::new()
            .route("/boom", get(boom))
            .route("/ok", get(|| async { "ok" }))
            .layer(CatchPanicLayer::custom(panic_response));
        rt.spawn(async move { axum::serve(listener, app).await });
        let url = |p: &str| format!("http://127.0.0.1:{port}{p}");
        for _ in 0..2 {
            let Err(ureq::Error::Status(500, r)) = ureq::get(&url("/boom")).call() else {
                panic!("expected a 500");
            };
            let v: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
            assert!(
                v["error"].as_str().unwrap().contains("internal error"),
                "{v}"
            );
        }
        assert_eq!(
            ureq::get(&url("/ok"))
                .call()
                .unwrap()
                .into_string()
                .unwrap(),
            "ok"
        );
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("style.css", STYLE_CSS),
        ] {
            for banned in ["://", "@import", "url(", "@font-face"] {
                assert!(!text.contains(banned), "{name} contains {banned}");
            }
        }
        // Both language tables name the same keys.
        let table = |lang: &str| -> Vec<String> {
            let start = APP_JS.find(&format!("  {lang}: {{")).unwrap();
            let end = start + APP_JS[start..].find("\n  },").unwrap();
            APP_JS[start..end]
                .split([',', '\n', '{'])
                .filter_map(|p| p.trim().split_once(": "))
                .map(|(k, _)| k.trim().to_string())
                .filter(|k| k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .collect()
        };
        let (vi, en) = (table("vi"), table("en"));
        assert!(vi.len() > 50, "{vi:?}");
        assert_eq!(vi, en);
    }

    #[test]
    fn segments_query() {
        assert!(!wants_segments(None).unwrap());
        assert!(wants_segments(Some("segments=true")).unwrap());
        assert!(wants_segments(Some("a=1&segments=1")).unwrap());
        assert!(!wants_segments(Some("segments=false")).unwrap());
        assert!(wants_segments(Some("segments=maybe")).is_err());
    }
}

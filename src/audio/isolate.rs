//! Decode isolation: a persistent worker process decodes files so that a decoder panic, an
//! abort on a huge allocation (symphonia #485, #488, #497, #508) or a hang can only fail the
//! file that caused it, never the caller.
//!
//! The parent keeps idle workers in a pool (one per concurrent caller). A worker is the
//! `camxuc` binary started with the hidden first argument [`WORKER_ARG`]; `main()` calls
//! [`serve_child_if_requested`] first thing, which serves requests and exits. The worker runs
//! under an address-space limit (`RLIMIT_AS`) and with core dumps off; the parent kills it if it
//! sends nothing for `timeout_s`. If a worker dies, that file gets a `DecoderCrashed` error and
//! the next file gets a fresh worker.
//!
//! Protocol (all integers little-endian). On start the worker writes the 8-byte [`MAGIC`]
//! (the parent skips anything before it). Request: `u64 max_out_samples` (`u64::MAX` = no
//! limit), `u32 to_rate`, `u32 path_len`, path bytes. Reply: frames `u8 tag, u32 len, payload`:
//! `S` f32 samples, `W` a warning (UTF-8), then exactly one of `D` (done) or `E` (error, JSON).

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::decode::Stream16k;
use super::error::AudioError;

/// Hidden first argument that turns the `camxuc` binary into a decode worker.
pub const WORKER_ARG: &str = "__camxuc_decode_worker";
/// Environment variable naming the worker executable (overrides discovery).
pub const WORKER_EXE_ENV: &str = "CAMXUC_DECODER_EXE";
/// Sent by a worker when it is ready; also a protocol version.
pub const MAGIC: &[u8; 8] = b"CXDEC\x00\x01\n";

/// Worker samples are sent in frames of about this many samples.
const FRAME_SAMPLES: usize = 8192;
/// Largest frame a parent accepts (guards against a confused worker).
const MAX_FRAME_BYTES: u32 = 64 << 20;
/// How long a fresh worker has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(20);

/// If this process was started as a decode worker, serve requests until stdin closes and exit
/// the process; otherwise return at once. Call it first thing in `main()`.
pub fn serve_child_if_requested() {
    if std::env::args_os().nth(1).as_deref() != Some(OsStr::new(WORKER_ARG)) {
        return;
    }
    let code = match serve() {
        Ok(()) => 0,
        Err(_) => 1,
    };
    std::process::exit(code);
}

/// The worker loop. The protocol goes to a private copy of stdout; fd 1 itself is pointed at
/// stderr so that a stray print (from us, a dependency or a test harness) cannot corrupt it.
fn serve() -> std::io::Result<()> {
    // SAFETY: dup/dup2 on the process's own standard descriptors; no Rust object owns fd 1
    // exclusively and the duplicate is wrapped in exactly one File below.
    let proto_fd = unsafe { libc::dup(1) };
    if proto_fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    unsafe { libc::dup2(2, 1) };
    // SAFETY: proto_fd is a fresh descriptor that nothing else owns.
    let proto: std::fs::File = unsafe { std::os::unix::io::FromRawFd::from_raw_fd(proto_fd) };
    let mut out = std::io::BufWriter::with_capacity(FRAME_SAMPLES * 4 + 64, proto);
    // Panics are reported to the parent as the file's error; the default hook would only
    // spill the same message onto stderr.
    std::panic::set_hook(Box::new(|_| {}));
    out.write_all(MAGIC)?;
    out.flush()?;
    let mut input = std::io::stdin().lock();
    loop {
        let mut head = [0u8; 16];
        match input.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let max_out = u64::from_le_bytes(head[0..8].try_into().unwrap_or_default());
        let to_rate = u32::from_le_bytes(head[8..12].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(head[12..16].try_into().unwrap_or_default()) as usize;
        let mut path = vec![0u8; len.min(1 << 16)];
        input.read_exact(&mut path)?;
        let path = PathBuf::from(OsStr::from_bytes(&path));
        let result = catch_unwind(AssertUnwindSafe(|| {
            serve_one(&path, max_out, to_rate, &mut out)
        }));
        match result {
            Ok(Ok(Ok(()))) => write_frame(&mut out, b'D', &[])?,
            Ok(Ok(Err(e))) => write_frame(&mut out, b'E', e.to_wire().to_string().as_bytes())?,
            Ok(Err(io)) => return Err(io), // the parent went away
            Err(panic) => {
                let e = AudioError::DecoderCrashed {
                    path: path.clone(),
                    detail: panic_message(&panic),
                };
                write_frame(&mut out, b'E', e.to_wire().to_string().as_bytes())?;
            }
        }
        out.flush()?;
    }
}

/// Decode one file onto the wire. Outer error: the pipe broke; inner: the file's error.
fn serve_one(
    path: &Path,
    max_out: u64,
    to_rate: u32,
    out: &mut impl Write,
) -> std::io::Result<Result<(), AudioError>> {
    let max_s = (max_out != u64::MAX).then(|| max_out as f64 / to_rate.max(1) as f64);
    let mut stream = match Stream16k::open(path, to_rate, max_s) {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    let mut pending: Vec<f32> = Vec::with_capacity(FRAME_SAMPLES * 2);
    loop {
        match stream.next_chunk() {
            Ok(Some(piece)) => {
                pending.extend_from_slice(&piece);
                if pending.len() >= FRAME_SAMPLES {
                    send_samples(out, &pending)?;
                    pending.clear();
                }
            }
            Ok(None) => break,
            Err(e) => return Ok(Err(e)),
        }
    }
    if !pending.is_empty() {
        send_samples(out, &pending)?;
    }
    for w in stream.warnings() {
        write_frame(out, b'W', w.as_bytes())?;
    }
    Ok(Ok(()))
}

fn send_samples(out: &mut impl Write, samples: &[f32]) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(samples.len() * 4);
    for s in samples {
        bytes.extend_from_slice(&s.to_le_bytes());
    }
    write_frame(out, b'S', &bytes)?;
    out.flush()
}

fn write_frame(out: &mut impl Write, tag: u8, payload: &[u8]) -> std::io::Result<()> {
    out.write_all(&[tag])?;
    out.write_all(&(payload.len() as u32).to_le_bytes())?;
    out.write_all(payload)
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into());
    format!("decoder panicked: {msg}")
}

// ---------------------------------------------------------------------------------------------
// Parent side

/// Where to find the worker executable: `$CAMXUC_DECODER_EXE`, else this executable if it is
/// `camxuc`, else a `camxuc` next to this executable or in its parent folder (cargo puts test
/// binaries in `target/<profile>/deps/`). `None` when there is none.
pub fn find_worker_exe() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(WORKER_EXE_ENV) {
        return Some(PathBuf::from(p));
    }
    let me = std::env::current_exe().ok()?;
    if me.file_stem() == Some(OsStr::new("camxuc")) {
        return Some(me);
    }
    let dir = me.parent()?;
    [dir.join("camxuc"), dir.parent()?.join("camxuc")]
        .into_iter()
        .find(|p| p.is_file())
}

/// A running worker and its pipes.
pub(crate) struct Worker {
    exe: PathBuf,
    mem_limit: u64,
    child: Child,
    stdin: ChildStdin,
    reader: FrameReader,
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Reap it so no zombie is left; killing an idle worker loses nothing.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Pool {
    idle: Vec<Worker>,
    /// Executables that failed to start as workers, with the reason (not retried).
    broken: Vec<(PathBuf, String)>,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    idle: Vec::new(),
    broken: Vec::new(),
});

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    // A poisoned pool only means another thread panicked while holding it; its data is fine.
    POOL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a worker could not be used (the caller then falls back to in-process decoding).
pub(crate) struct Unavailable(pub String);

impl Worker {
    /// An idle worker from the pool, or a fresh one.
    pub(crate) fn acquire(exe: &Path, mem_limit: u64) -> Result<Worker, Unavailable> {
        {
            let mut p = pool();
            if let Some((_, why)) = p.broken.iter().find(|(e, _)| e == exe) {
                return Err(Unavailable(why.clone()));
            }
            while let Some(i) = p
                .idle
                .iter()
                .position(|w| w.exe == exe && w.mem_limit == mem_limit)
            {
                let mut w = p.idle.swap_remove(i);
                if matches!(w.child.try_wait(), Ok(None)) {
                    return Ok(w);
                }
            }
        }
        Worker::spawn(exe, mem_limit).map_err(|why| {
            pool().broken.push((exe.to_path_buf(), why.clone()));
            Unavailable(why)
        })
    }

    fn spawn(exe: &Path, mem_limit: u64) -> Result<Worker, String> {
        let mut cmd = Command::new(exe);
        cmd.arg(WORKER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: the closure runs in the forked child before exec and only calls
        // async-signal-safe setrlimit.
        unsafe {
            cmd.pre_exec(move || {
                let no_core = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
                if mem_limit > 0 {
                    let lim = libc::rlimit {
                        rlim_cur: mem_limit as libc::rlim_t,
                        rlim_max: mem_limit as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("worker pipes missing".into());
        };
        let mut w = Worker {
            exe: exe.to_path_buf(),
            mem_limit,
            child,
            stdin,
            reader: FrameReader::new(stdout),
        };
        match w.reader.skip_to_magic(Instant::now() + HELLO_TIMEOUT) {
            Ok(()) => Ok(w),
            Err(e) => Err(format!(
                "{} did not start as a decode worker ({e}); does its main() call \
                 audio::serve_child_if_requested()?",
                exe.display()
            )),
        }
    }

    fn release(self) {
        pool().idle.push(self);
    }

    /// Why the worker stopped answering, for the error message.
    fn death_reason(&mut self, what: &str) -> String {
        let _ = self.child.kill();
        let status = self.child.wait();
        let mib = self.mem_limit >> 20;
        match status.ok().and_then(|s| s.signal().map(|sig| (sig, s))) {
            Some((libc::SIGABRT, _)) => {
                format!("worker aborted (out of memory under its {mib} MiB limit, or an internal abort)")
            }
            Some((libc::SIGSEGV, _)) | Some((libc::SIGBUS, _)) => {
                "worker crashed with a memory fault".into()
            }
            Some((libc::SIGKILL, _)) if what.starts_with("no progress") => what.into(),
            Some((sig, _)) => format!("worker killed by signal {sig} ({what})"),
            None => format!("worker exited ({what})"),
        }
    }
}

/// Reads frames from a worker's stdout with a deadline (via poll), so a hung worker cannot
/// block the caller.
struct FrameReader {
    out: ChildStdout,
    buf: Vec<u8>,
}

impl FrameReader {
    fn new(out: ChildStdout) -> Self {
        Self {
            out,
            buf: Vec::new(),
        }
    }

    /// Read more bytes, waiting at most until `deadline`. `Ok(false)` means end of file.
    fn fill(&mut self, deadline: Instant) -> Result<bool, String> {
        let now = Instant::now();
        if now >= deadline {
            return Err("timed out".into());
        }
        let ms = (deadline - now).as_millis().min(i32::MAX as u128) as i32;
        let mut pfd = libc::pollfd {
            fd: self.out.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for a descriptor we own.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc == 0 {
            return Err("timed out".into());
        }
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(true);
            }
            return Err(e.to_string());
        }
        let mut tmp = [0u8; 65536];
        match self.out.read(&mut tmp) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e.to_string()),
        }
    }

    fn need(&mut self, n: usize, deadline: Instant) -> Result<(), String> {
        while self.buf.len() < n {
            if !self.fill(deadline)? {
                return Err("worker closed its output".into());
            }
        }
        Ok(())
    }

    fn skip_to_magic(&mut self, deadline: Instant) -> Result<(), String> {
        loop {
            if let Some(i) = self.buf.windows(MAGIC.len()).position(|w| w == MAGIC) {
                self.buf.drain(..i + MAGIC.len());
                return Ok(());
            }
            if self.buf.len() > 1 << 16 {
                return Err("no hello from the worker".into());
            }
            if !self.fill(deadline)? {
                return Err("it exited before saying hello".into());
            }
        }
    }

    /// Next frame; each frame gets the full `timeout` (an inactivity timeout).
    fn frame(&mut self, timeout: Duration) -> Result<(u8, Vec<u8>), String> {
        let deadline = Instant::now() + timeout;
        self.need(5, deadline)?;
        let tag = self.buf[0];
        let len = u32::from_le_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        if len > MAX_FRAME_BYTES {
            return Err(format!("bad frame length {len}"));
        }
        self.need(5 + len as usize, deadline)?;
        let payload = self.buf[5..5 + len as usize].to_vec();
        self.buf.drain(..5 + len as usize);
        Ok((tag, payload))
    }
}

/// One file being decoded by a worker, pulled in pieces.
pub(crate) struct WorkerStream {
    path: PathBuf,
    worker: Option<Worker>,
    timeout: Duration,
    pub(crate) warnings: Vec<String>,
}

impl WorkerStream {
    pub(crate) fn start(
        mut worker: Worker,
        path: &Path,
        to_rate: u32,
        max_out_samples: Option<u64>,
        timeout: Duration,
    ) -> Result<Self, AudioError> {
        // The worker resolves the path relative to its own working directory, which is ours.
        let bytes = path.as_os_str().as_bytes();
        let mut req = Vec::with_capacity(16 + bytes.len());
        req.extend_from_slice(&max_out_samples.unwrap_or(u64::MAX).to_le_bytes());
        req.extend_from_slice(&to_rate.to_le_bytes());
        req.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        req.extend_from_slice(bytes);
        if let Err(e) = worker
            .stdin
            .write_all(&req)
            .and_then(|_| worker.stdin.flush())
        {
            let detail = worker.death_reason(&format!("request failed: {e}"));
            return Err(AudioError::Worker {
                path: path.to_path_buf(),
                detail,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            worker: Some(worker),
            timeout,
            warnings: Vec::new(),
        })
    }

    /// Next piece of samples; `None` when the file is done.
    pub(crate) fn next_chunk(&mut self) -> Result<Option<Vec<f32>>, AudioError> {
        loop {
            let Some(w) = self.worker.as_mut() else {
                return Ok(None);
            };
            let frame = w.reader.frame(self.timeout);
            match frame {
                Ok((b'S', p)) => {
                    return Ok(Some(
                        p.chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect(),
                    ))
                }
                Ok((b'W', p)) => self.warnings.push(String::from_utf8_lossy(&p).into_owned()),
                Ok((b'D', _)) => {
                    self.finish_ok();
                    return Ok(None);
                }
                Ok((b'E', p)) => {
                    self.finish_ok();
                    let v: serde_json::Value = serde_json::from_slice(&p).unwrap_or_default();
                    return Err(AudioError::from_wire(&self.path, &v));
                }
                Ok((tag, _)) => {
                    return Err(self.crashed(format!("protocol error: unknown frame tag {tag}")))
                }
                Err(e) if e == "timed out" => {
                    let secs = self.timeout.as_secs_f64();
                    return Err(self.crashed(format!("no progress for {secs:.0} s; worker killed")));
                }
                Err(e) => return Err(self.crashed(e)),
            }
        }
    }

    fn finish_ok(&mut self) {
        if let Some(w) = self.worker.take() {
            w.release();
        }
    }

    fn crashed(&mut self, what: String) -> AudioError {
        let detail = match self.worker.take() {
            Some(mut w) => w.death_reason(&what),
            None => what,
        };
        AudioError::DecoderCrashed {
            path: self.path.clone(),
            detail,
        }
    }
}

impl Drop for WorkerStream {
    fn drop(&mut self) {
        // Abandoned mid-file (e.g. a windowed reader dropped early): the worker is still
        // streaming that file, so it cannot serve another; dropping it kills it.
        self.worker.take();
    }
}

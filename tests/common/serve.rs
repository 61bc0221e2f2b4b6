//! Starting the real `camxuc serve` binary for the workbench tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running `camxuc serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub stderr: PathBuf,
}

impl Server {
    /// `camxuc serve --port 0 --data DATA ARGS...` with the models folder `models`; returns
    /// once the first stdout line (`listening on http://127.0.0.1:PORT`) names the port.
    pub fn start(models: &Path, data: &Path, args: &[&str]) -> Server {
        let stderr = data.with_extension("stderr.txt");
        std::fs::create_dir_all(data.parent().unwrap()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_camxuc"))
            .args(["serve", "--port", "0", "--data"])
            .arg(data)
            .arg("--model")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/acoustic/default"))
            .args(args)
            .env("CAMXUC_MODELS_DIR", models)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start camxuc serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(port) = line
            .trim()
            .strip_prefix("listening on http://127.0.0.1:")
            .and_then(|p| p.parse().ok())
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "first stdout line {line:?} does not name the port; stderr: {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        };
        Server {
            child,
            port,
            stderr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Kill it as a crash would (no graceful shutdown) and reap it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A short Vietnamese utterance spoken by espeak-ng (about 60 KB of WAV), or `None` when
/// espeak-ng is missing (skipped outside CI, see `espeak_or_skip`).
pub fn speech_clip(dir: &Path) -> Option<PathBuf> {
    if !super::espeak_or_skip() {
        return None;
    }
    let out = dir.join("cau-noi.wav");
    let status = Command::new("espeak-ng")
        .args(["-v", "vi", "-s", "170", "-w"])
        .arg(&out)
        .arg("Tôi không biết chuyện gì đang xảy ra ở đây nữa")
        .status()
        .expect("run espeak-ng");
    assert!(status.success(), "espeak-ng failed");
    Some(out)
}

//! Shared by the fuzz targets: a scratch file per process (the readers under test take paths).

use std::path::PathBuf;

/// Write `data` to this process's scratch file named `name` and return its path. /dev/shm
/// when present so the fuzzer does not wear the disk.
pub fn scratch_file(name: &str, data: &[u8]) -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("camxuc-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join(name);
    std::fs::write(&path, data).expect("scratch file");
    path
}

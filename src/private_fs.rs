//! Files and folders readable by their owner only. Recordings' labels, evidence and decisions
//! are health data: every output camxuc creates goes through these helpers, so a shared
//! machine's other users cannot read them whatever the umask. On non-unix systems they are
//! the plain std calls.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Create (or truncate) `path` for writing, mode 0o600 when it is created.
pub fn create_private(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

/// Open `path` for appending (JSONL outputs), mode 0o600 when it is created.
pub fn append_private(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

/// `fs::write`, but a new file is readable by its owner only.
pub fn write_private(path: &Path, contents: impl AsRef<[u8]>) -> io::Result<()> {
    let mut f = create_private(path)?;
    f.write_all(contents.as_ref())?;
    f.flush()
}

/// `fs::create_dir_all`, but folders it creates are mode 0o700.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_files_and_folders_are_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        create_private_dir_all(&sub).unwrap();
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        let f = sub.join("report.json");
        write_private(&f, b"{}\n").unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(fs::read(&f).unwrap(), b"{}\n");
        let j = sub.join("out.jsonl");
        append_private(&j).unwrap().write_all(b"1\n").unwrap();
        append_private(&j).unwrap().write_all(b"2\n").unwrap();
        assert_eq!(mode(&j), 0o600);
        assert_eq!(fs::read_to_string(&j).unwrap(), "1\n2\n");
    }
}

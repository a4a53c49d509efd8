//! A test's scratch directory under the system temp dir, removed with its contents when dropped,
//! also when the test panics (drop on unwind), so `cargo test` leaves nothing in /tmp. Hold it
//! as long as a server or child process uses the directory (e.g. next to the server).
//!
//! One file for every test helper: `tests/common/mod.rs` declares it, and the helpers compiled
//! without `common` include it by path (`tests/practice_support/mod.rs`,
//! `benches/tools_db.rs` for `tests/common/postgres.rs`), so one binary may hold two copies of
//! this module. Names stay unique across them because a directory is claimed with
//! `create_dir`, which fails on one that exists, not by the counter alone.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty `<temp>/ignis-<name>-<pid>-<n>`.
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let parent = std::env::temp_dir();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = parent.join(format!("ignis-{name}-{}-{n}", std::process::id()));
            // Exists: left by an earlier process with this pid, or taken by the other copy of
            // this module in the same binary; try the next number.
            match std::fs::create_dir(&dir) {
                Ok(()) => return TempDir(dir),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create {}: {e}", dir.display()),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

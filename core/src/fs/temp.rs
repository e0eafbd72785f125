//! Temporary files: the crate's fixed-length names, and the sweep of stale ones.

use std::{
    ffi::OsStr,
    fs::File,
    hash::{BuildHasher, RandomState},
    io,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use super::{FileOps, FsError, Step};

/// `.sf-` + 16 hex digits + `.tmp`: fixed length (24 bytes), whatever the target's name,
/// so a target name that fits the file system's limit always has a temp that fits too.
const PREFIX: &str = ".sf-";
const SUFFIX: &str = ".tmp";
const HEX_DIGITS: usize = 16;

/// True for a name this crate gives its temporary files.
pub(crate) fn is_temp_name(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else { return false };
    name.len() == PREFIX.len() + HEX_DIGITS + SUFFIX.len()
        && name.starts_with(PREFIX)
        && name.ends_with(SUFFIX)
        && name[PREFIX.len()..PREFIX.len() + HEX_DIGITS]
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn random_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let bits = RandomState::new().hash_one((n, std::process::id()));
    format!("{PREFIX}{bits:016x}{SUFFIX}")
}

/// Creates a new temp file in `dir` with O_EXCL, retrying on a name collision.
pub(crate) fn create(ops: &dyn FileOps, dir: &Path, mode: u32) -> Result<(PathBuf, File), FsError> {
    let mut last = None;
    for _ in 0..8 {
        let path = dir.join(random_name());
        match ops.create_new(&path, mode) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some((path, e)),
            Err(e) => return Err(FsError::new(path, Step::CreateTemp, e)),
        }
    }
    let (path, e) = last.unwrap_or_else(|| (dir.to_path_buf(), io::ErrorKind::AlreadyExists.into()));
    Err(FsError::new(path, Step::CreateTemp, e))
}

/// Removes this crate's temp files in `dir` older than `min_age`; returns how many.
pub(crate) fn sweep(ops: &dyn FileOps, dir: &Path, min_age: Duration) -> Result<usize, FsError> {
    let names = ops.list_dir(dir).map_err(|e| FsError::new(dir, Step::Sweep, e))?;
    let now = SystemTime::now();
    let mut removed = 0;
    for name in names.iter().filter(|n| is_temp_name(n)) {
        let path = dir.join(name);
        let Ok(meta) = ops.symlink_metadata(&path) else {
            continue;
        };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        if meta.file_type().is_file() && age >= min_age {
            match ops.remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(FsError::new(path, Step::Sweep, e)),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_fixed_length_and_recognised() {
        let a = random_name();
        let b = random_name();
        assert_ne!(a, b);
        assert_eq!(a.len(), 24);
        assert!(is_temp_name(OsStr::new(&a)));
        for other in [
            ".sf-ABCDEF0123456789.tmp",
            ".sf-123.tmp",
            "x.sf-0123456789abcdef.tmp",
            ".sf-0123456789abcdeg.tmp",
            "data.json",
        ] {
            assert!(!is_temp_name(OsStr::new(other)), "{other}");
        }
    }
}

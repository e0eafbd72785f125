//! The end of a record log: finding a torn tail and cutting it off after keeping a copy.
//! Shared by [`DurableAppend`](super::DurableAppend), which must never write after a
//! fragment, and [`LogReader`](super::LogReader), which repairs what a crash left.

use std::{
    ffi::OsStr,
    fs::File,
    io,
    path::{Path, PathBuf},
};

use super::{
    FileOps, FsError, Step,
    io::{DEFAULT_FILE_MODE, sync_dir, write_all},
};

/// A torn or zero-filled tail, cut off the log after a copy was kept.
///
/// ```
/// # use stayfast_core::fs::TornTail;
/// # fn show(t: TornTail) { println!("{} bytes at {} kept in {}", t.len, t.offset, t.backup.display()); }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TornTail {
    /// Where the tail began: the new length of the log.
    pub offset: u64,
    /// How many bytes were cut.
    pub len: u64,
    /// The file holding a copy of them (`<name>.torn-<offset>`, mode 0600).
    pub backup: PathBuf,
}

/// How far back a torn tail is searched for in one read.
const CHUNK: usize = 64 * 1024;

/// The length of the log up to and including its last newline: where a torn tail (an
/// unterminated fragment, or a zero fill a crash left) begins. `len` when the file ends
/// in a newline (the common case: one one-byte read).
pub(crate) fn complete_len(ops: &dyn FileOps, file: &File, path: &Path, len: u64) -> Result<u64, FsError> {
    let mut end = len;
    let mut chunk = vec![0u8; 1];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let want = usize::try_from(end - start).unwrap_or(chunk.len());
        let got = read_exact_at(ops, file, path, &mut chunk[..want], start)?;
        if let Some(i) = got.iter().rposition(|b| *b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
        // The first read looks at the last byte only; a torn tail is searched in chunks.
        if chunk.len() < CHUNK {
            chunk = vec![0u8; CHUNK];
        }
    }
    Ok(0)
}

pub(super) fn read_exact_at<'b>(
    ops: &dyn FileOps,
    file: &File,
    path: &Path,
    buf: &'b mut [u8],
    offset: u64,
) -> Result<&'b [u8], FsError> {
    let mut filled = 0;
    while filled < buf.len() {
        match ops.read_at(file, path, &mut buf[filled..], offset + filled as u64) {
            Ok(0) => {
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while being read");
                return Err(FsError::new(path, Step::Read, e));
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FsError::new(path, Step::Read, e)),
        }
    }
    Ok(&buf[..filled])
}

/// Copies the bytes of `path` from `valid_end` on to a backup (`<name>.torn-<offset>`,
/// mode 0600, fsynced with its directory), then truncates the log there. The caller
/// holds the file's write lock.
pub(crate) fn cut(
    ops: &dyn FileOps,
    path: &Path,
    dir: &Path,
    name: &OsStr,
    valid_end: u64,
) -> Result<TornTail, FsError> {
    let source = ops
        .open_read(path)
        .map_err(|e| FsError::new(path, Step::Read, e))?;
    let total = ops
        .len(&source, path)
        .map_err(|e| FsError::new(path, Step::Inspect, e))?;
    let (backup, out) = create_backup(ops, dir, name, &format!("torn-{valid_end}"))?;
    copy_range(ops, &source, path, valid_end, total, &out, &backup)?;
    ops.sync(&out, &backup)
        .map_err(|e| FsError::new(&backup, Step::Backup, e))?;
    sync_dir(ops, dir)?;
    // Only once the copy is safe is the log cut.
    let rw = ops
        .open_read_write(path)
        .map_err(|e| FsError::new(path, Step::Truncate, e))?;
    ops.set_len(&rw, path, valid_end)
        .map_err(|e| FsError::new(path, Step::Truncate, e))?;
    ops.sync(&rw, path)
        .map_err(|e| FsError::new(path, Step::SyncFile, e))?;
    Ok(TornTail {
        offset: valid_end,
        len: total.saturating_sub(valid_end),
        backup,
    })
}

/// A new file `<name>.<suffix>` (or `<name>.<suffix>.<n>` when taken) next to the log.
pub(crate) fn create_backup(
    ops: &dyn FileOps,
    dir: &Path,
    name: &OsStr,
    suffix: &str,
) -> Result<(std::path::PathBuf, File), FsError> {
    let mut base = name.to_os_string();
    base.push(format!(".{suffix}"));
    let mut backup = dir.join(&base);
    let mut n = 1;
    loop {
        match ops.create_new(&backup, DEFAULT_FILE_MODE) {
            Ok(f) => return Ok((backup, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 100 => {
                let mut next = base.clone();
                next.push(format!(".{n}"));
                backup = dir.join(next);
                n += 1;
            }
            Err(e) => return Err(FsError::new(&backup, Step::Backup, e)),
        }
    }
}

/// Copies bytes `from..to` of `source` into `out`, a chunk at a time (a torn tail may
/// be a long run of zeros).
fn copy_range(
    ops: &dyn FileOps,
    source: &File,
    path: &Path,
    from: u64,
    to: u64,
    out: &File,
    out_path: &Path,
) -> Result<(), FsError> {
    let mut chunk = vec![0u8; CHUNK];
    let mut at = from;
    while at < to {
        let want = usize::try_from(to - at).unwrap_or(CHUNK).min(CHUNK);
        let got = read_exact_at(ops, source, path, &mut chunk[..want], at)?;
        write_all(ops, out, out_path, got)?;
        at += want as u64;
    }
    Ok(())
}

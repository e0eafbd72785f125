//! [`LogReader::repair`]: take the damaged lines out of a log, keeping every valid
//! record in order and every removed byte in a quarantine file.

use std::{
    fs::File,
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    FileOps, FsError, LogReader, ReadLogError, Step, flock,
    io::{regular_file, split, sync_dir, write_all},
    locks,
    log::Validate,
    tail, temp,
};
use crate::Error;

/// What [`LogReader::repair`] did.
///
/// ```
/// # use stayfast_core::fs::Repaired;
/// # fn show(r: Repaired) {
/// if let Some(q) = &r.quarantine {
///     println!("kept {} records, moved {} bad lines to {}", r.kept, r.quarantined, q.display());
/// }
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Repaired {
    /// Valid records kept, in their order.
    pub kept: usize,
    /// Lines taken out (an unterminated tail counts as one).
    pub quarantined: usize,
    /// The file holding them, byte for byte (`<name>.quarantine-<offset of the first>`,
    /// mode 0600); `None` when the log had nothing to take out and was left untouched.
    pub quarantine: Option<PathBuf>,
}

impl LogReader {
    /// Takes every line that fails `validate` (or is longer than the reader's
    /// `max_record`, or is a torn tail) out of `path`: the valid records are kept in
    /// their order, the others are appended to a quarantine file next to the log, then
    /// the log is replaced atomically (temp file, fsync, rename, fsync of the
    /// directory) with the file's own mode. After it, [`read`](Self::read) no longer
    /// reports [`ReadLogError::Corrupt`]. A log without damage is left untouched.
    ///
    /// Holds the file's write lock throughout, and its cross-process lock (`flock`,
    /// waited for until the deadline), so no append of this process or another
    /// interleaves with it.
    ///
    /// # Errors
    ///
    /// [`ReadLogError::Fs`] for a file-system error (the log is then unchanged: it is
    /// replaced only once the quarantine and the new log are on disk), or the policy's
    /// errors.
    ///
    /// # Cancellation
    ///
    /// Dropping the future does not stop the blocking task: the repair completes or
    /// leaves the log as it was.
    ///
    /// ```
    /// # use stayfast_core::{Policy, fs::LogReader};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let dir = std::env::temp_dir().join(format!("stayfast-doc-log-repair-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("t.log");
    /// std::fs::write(&path, b"1\nx\n3\n").unwrap(); // damage in the middle
    /// let reader = LogReader::new(Policy::builder("fs.read").build().unwrap());
    /// let digits = |r: &[u8]| !r.is_empty() && r.iter().all(u8::is_ascii_digit);
    /// let repaired = reader.repair(&path, digits).await.unwrap();
    /// assert_eq!((repaired.kept, repaired.quarantined), (2, 1));
    /// assert_eq!(std::fs::read(&path).unwrap(), b"1\n3\n");
    /// assert_eq!(std::fs::read(repaired.quarantine.unwrap()).unwrap(), b"x\n");
    /// assert_eq!(reader.read(&path, digits).await.unwrap().records.len(), 2);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # }
    /// ```
    pub async fn repair<V>(
        &self,
        path: impl Into<PathBuf>,
        validate: V,
    ) -> Result<Repaired, Error<ReadLogError>>
    where
        V: Fn(&[u8]) -> bool + Send + Sync + 'static,
    {
        self.run_blocking(path.into(), Arc::new(validate), repair_blocking)
            .await
    }
}

fn repair_blocking(
    ops: &dyn FileOps,
    path: &Path,
    max_record: usize,
    validate: &Validate,
    deadline: Option<std::time::Instant>,
) -> Result<Repaired, FsError> {
    let (dir, name) = split(path)?;
    let serialised = locks::lock_file(ops, dir, name, deadline)?;
    // A kept append handle would hold the replaced file open: closed now.
    drop(serialised.take_handle());
    let Some(meta) = regular_file(ops, path)? else {
        return Ok(Repaired::default());
    };
    // Under the file's cross-process lock too: no append of another process is half
    // done (it would go on into the replaced file), and none starts until the new log is
    // in place (a waiting one then locks the new file).
    let open = || match ops.open_read(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FsError::new(path, Step::Open, e)),
    };
    let Some(locked) = flock::open_locked(ops, path, deadline, open)? else {
        return Ok(Repaired::default());
    };
    let source = &locked.file;
    let (temp, kept_file) = temp::create(ops, dir, meta.permissions().mode() & 0o7777)?;
    let sorted = Sorter {
        ops,
        dir,
        name,
        kept: Out::new(&temp, kept_file),
        quarantine: None,
        counts: Repaired::default(),
    }
    .sort(source, path, max_record, validate);
    let result = sorted.and_then(|sorter| sorter.finish(path, &temp));
    if result.as_ref().map_or(true, |r| r.quarantine.is_none()) {
        // Best effort: the outcome matters more; a later sweep removes stale temps.
        let _ = ops.remove_file(&temp);
    }
    result
}

/// An output file and its path.
struct Out<'p> {
    path: &'p Path,
    file: File,
}

impl<'p> Out<'p> {
    fn new(path: &'p Path, file: File) -> Self {
        Self { path, file }
    }
}

/// Sends each line of the log to the new log or to the quarantine.
struct Sorter<'a> {
    ops: &'a dyn FileOps,
    dir: &'a Path,
    name: &'a std::ffi::OsStr,
    kept: Out<'a>,
    quarantine: Option<(PathBuf, File)>,
    counts: Repaired,
}

impl Sorter<'_> {
    fn sort(
        mut self,
        source: &File,
        path: &Path,
        max_record: usize,
        validate: &(dyn Fn(&[u8]) -> bool + Send + Sync),
    ) -> Result<Self, FsError> {
        let mut chunk = vec![0u8; 64 * 1024];
        let mut line = Vec::new();
        // Bytes of an overlong line already sent to the quarantine.
        let mut spilled = false;
        let mut offset = 0u64;
        let mut line_start = 0u64;
        loop {
            let n = match self.ops.read(source, path, &mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(FsError::new(path, Step::Read, e)),
            };
            for &byte in &chunk[..n] {
                offset += 1;
                line.push(byte);
                if byte == b'\n' {
                    let record = &line[..line.len() - 1];
                    if !spilled && validate(record) {
                        write_all(self.ops, &self.kept.file, self.kept.path, &line)?;
                        self.counts.kept += 1;
                    } else {
                        self.quarantine(line_start, &line, !spilled)?;
                    }
                    line.clear();
                    spilled = false;
                    line_start = offset;
                } else if line.len() > max_record {
                    // Memory stays bounded: an overlong line streams to the quarantine.
                    self.quarantine(line_start, &line, !spilled)?;
                    line.clear();
                    spilled = true;
                }
            }
        }
        if !line.is_empty() || spilled {
            // An unterminated tail: what a crash leaves.
            self.quarantine(line_start, &line, !spilled)?;
        }
        Ok(self)
    }

    /// Appends `bytes` to the quarantine, created at the first bad line; `new_line`
    /// when they begin a line (counted once).
    fn quarantine(&mut self, line_start: u64, bytes: &[u8], new_line: bool) -> Result<(), FsError> {
        if self.quarantine.is_none() {
            let suffix = format!("quarantine-{line_start}");
            self.quarantine = Some(tail::create_backup(self.ops, self.dir, self.name, &suffix)?);
        }
        if let Some((path, file)) = &self.quarantine {
            write_all(self.ops, file, path, bytes)?;
        }
        if new_line {
            self.counts.quarantined += 1;
        }
        Ok(())
    }

    /// Puts the new log in place once the quarantine and it are on disk.
    fn finish(self, path: &Path, temp: &Path) -> Result<Repaired, FsError> {
        let Some((quarantine, file)) = self.quarantine else {
            return Ok(self.counts);
        };
        let ops = self.ops;
        ops.sync(&file, &quarantine)
            .map_err(|e| FsError::new(&quarantine, Step::Backup, e))?;
        ops.sync(&self.kept.file, temp)
            .map_err(|e| FsError::new(temp, Step::SyncTemp, e))?;
        sync_dir(ops, self.dir)?;
        ops.rename(temp, path)
            .map_err(|e| FsError::new(path, Step::Rename, e))?;
        sync_dir(ops, self.dir)?;
        Ok(Repaired {
            quarantine: Some(quarantine),
            ..self.counts
        })
    }
}

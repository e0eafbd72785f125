//! [`LogReader`]: read a record log back, repairing a torn tail and refusing to skip
//! corruption in the middle.

use std::{
    fmt,
    fs::File,
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    FileOps, FsError, RealFs, Step, flock,
    io::{regular_file, split},
    locks,
    tail::{self, TornTail},
};
use crate::{Classify, Error, Policy, Verdict};

/// What was read from a log.
///
/// ```
/// # use stayfast_core::fs::Recovered;
/// # fn show(r: Recovered) { let _ = (r.records.len(), r.torn.is_some()); }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovered {
    /// Every valid record, in file order, without its newline.
    pub records: Vec<Vec<u8>>,
    /// The torn tail that was cut off the file, if there was one.
    pub torn: Option<TornTail>,
}

/// An invalid record with valid records after it: the log is corrupt in the middle.
/// Nothing is repaired or skipped; the records before it are carried here.
///
/// ```
/// # use stayfast_core::fs::Corruption;
/// # fn show(c: Corruption) { println!("{} valid records before line {}", c.valid.len(), c.line); }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Corruption {
    /// The log.
    pub path: PathBuf,
    /// 1-based line number of the first invalid record.
    pub line: usize,
    /// Its byte offset.
    pub offset: u64,
    /// What is wrong with it.
    pub reason: String,
    /// The valid records before it.
    pub valid: Vec<Vec<u8>>,
}

/// Why a log could not be read.
///
/// ```
/// # use stayfast_core::fs::{FsError, ReadLogError, Step};
/// let e = ReadLogError::Fs(FsError::new("/x", Step::Open, std::io::ErrorKind::PermissionDenied.into()));
/// assert!(e.to_string().starts_with("open /x"));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadLogError {
    /// A file-system error.
    Fs(FsError),
    /// Corruption in the middle of the log.
    Corrupt(Box<Corruption>),
}

impl fmt::Display for ReadLogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadLogError::Fs(e) => e.fmt(f),
            ReadLogError::Corrupt(c) => write!(
                f,
                "{} is corrupt at line {} (byte {}): {}; {} valid records before it",
                c.path.display(),
                c.line,
                c.offset,
                c.reason,
                c.valid.len()
            ),
        }
    }
}

impl std::error::Error for ReadLogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent: `Display` already shows the `FsError`'s own level.
            ReadLogError::Fs(e) => std::error::Error::source(e),
            ReadLogError::Corrupt(_) => None,
        }
    }
}

impl From<FsError> for ReadLogError {
    fn from(e: FsError) -> Self {
        ReadLogError::Fs(e)
    }
}

/// A corrupt log will not heal by retrying, and says nothing about the disk's health.
impl Classify for ReadLogError {
    fn classify(&self) -> Verdict {
        match self {
            ReadLogError::Fs(e) => e.classify(),
            ReadLogError::Corrupt(_) => Verdict::caller_error(),
        }
    }
}

/// Reads logs written by [`DurableAppend`](super::DurableAppend), through a [`Policy`]
/// (so a read has a deadline like every other call).
///
/// Records are checked by the caller's `validate` closure. A *torn tail* — bytes after
/// the last newline, or a trailing run of zero bytes and newlines (a file extended by
/// the kernel whose data never reached the disk) — is copied to `<name>.torn-<offset>`
/// and cut off the log, and reported in [`Recovered::torn`]. A complete line (one that
/// ends in a newline and holds data) that fails validation was fully written, so it is
/// never cut, even as the last line: it is corruption, and [`ReadLogError::Corrupt`]
/// carries the valid records before it; nothing is changed. A missing file is an empty log. Only
/// regular files are read (never through a symlink, never a FIFO or device), records
/// longer than `max_record` are invalid, and memory stays bounded by the valid records.
/// Holds the file's process-wide write lock while reading, so it never mistakes an
/// append of this process in progress for a torn tail; it cuts a torn tail only under
/// the file's cross-process lock (`flock`, not waited for), so an append of another
/// process in progress is never cut either: without that lock, an unterminated last
/// line is skipped as not yet written, and the file left alone.
///
/// # Examples
///
/// ```
/// use stayfast_core::{Policy, fs::{DurableAppend, LogReader}};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// # let dir = std::env::temp_dir().join(format!("stayfast-log-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("t.jsonl");
/// let log = DurableAppend::new(Policy::builder("fs.append").build().unwrap());
/// log.append(&path, b"one".to_vec()).await.unwrap();
/// // A crash in the middle of the next append left half a record behind:
/// use std::io::Write;
/// std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"tw").unwrap();
///
/// let reader = LogReader::new(Policy::builder("fs.read").build().unwrap());
/// let read = reader.read(&path, |record| !record.is_empty()).await.unwrap();
/// assert_eq!(read.records, vec![b"one".to_vec()]);
/// assert_eq!(read.torn.unwrap().len, 2); // "tw", a torn record, was cut and kept aside
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # }
/// ```
///
/// # Cancellation
///
/// Dropping the future does not stop the blocking task; a repair in progress finishes.
#[derive(Clone)]
pub struct LogReader {
    pub(super) inner: Arc<ReaderInner>,
}

pub(super) struct ReaderInner {
    pub(super) ops: Arc<dyn FileOps>,
    pub(super) policy: Policy,
    pub(super) max_record: usize,
}

/// Default cap on one record's length.
///
/// ```
/// assert_eq!(stayfast_core::fs::DEFAULT_MAX_RECORD, 1024 * 1024); // 1 MiB
/// ```
pub const DEFAULT_MAX_RECORD: usize = 1 << 20;

const CHUNK: usize = 64 * 1024;

impl LogReader {
    /// A reader running through `policy` on the real file system.
    ///
    /// ```
    /// # use stayfast_core::{Policy, fs::LogReader};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let dir = std::env::temp_dir().join(format!("stayfast-doc-log-new-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let reader = LogReader::new(Policy::builder("fs.read").build().unwrap());
    /// let read = reader.read(dir.join("absent.log"), |_| true).await.unwrap();
    /// assert!(read.records.is_empty() && read.torn.is_none()); // a missing file is an empty log
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # }
    /// ```
    pub fn new(policy: Policy) -> Self {
        Self {
            inner: Arc::new(ReaderInner {
                ops: Arc::new(RealFs),
                policy,
                max_record: DEFAULT_MAX_RECORD,
            }),
        }
    }

    /// The same reader over another [`FileOps`].
    ///
    /// ```
    /// # use stayfast_core::{Policy, fs::{LogReader, RealFs}};
    /// let r = LogReader::new(Policy::builder("fs.read").build().unwrap()).with_ops(RealFs);
    /// # let _ = r;
    /// ```
    #[must_use]
    pub fn with_ops(self, ops: impl FileOps) -> Self {
        Self {
            inner: Arc::new(ReaderInner {
                ops: Arc::new(ops),
                policy: self.inner.policy.clone(),
                max_record: self.inner.max_record,
            }),
        }
    }

    /// Records longer than `bytes` are invalid (default 1 MiB).
    ///
    /// ```
    /// # use stayfast_core::{Policy, fs::LogReader};
    /// let r = LogReader::new(Policy::builder("fs.read").build().unwrap()).max_record(64 * 1024);
    /// # let _ = r;
    /// ```
    #[must_use]
    pub fn max_record(self, bytes: usize) -> Self {
        Self {
            inner: Arc::new(ReaderInner {
                ops: Arc::clone(&self.inner.ops),
                policy: self.inner.policy.clone(),
                max_record: bytes,
            }),
        }
    }

    /// Reads every valid record of `path`, repairing a torn tail.
    ///
    /// # Errors
    ///
    /// [`ReadLogError::Corrupt`] for corruption in the middle, [`ReadLogError::Fs`] for
    /// a file-system error (a directory, FIFO or symlink at `path` included), or the
    /// policy's errors (a timeout, an open circuit).
    ///
    /// ```
    /// # use stayfast_core::{Error, Policy, fs::{LogReader, ReadLogError}};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let dir = std::env::temp_dir().join(format!("stayfast-doc-log-read-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("t.log");
    /// std::fs::write(&path, b"1\nx\n3\n").unwrap(); // a bad record with a good one after it
    /// let reader = LogReader::new(Policy::builder("fs.read").build().unwrap());
    /// let err = reader.read(&path, |r| r.iter().all(u8::is_ascii_digit)).await.unwrap_err();
    /// let Error::Inner { source: ReadLogError::Corrupt(c), .. } = err else { panic!("not corrupt") };
    /// assert_eq!((c.line, c.valid.len()), (2, 1)); // nothing skipped, nothing repaired
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # }
    /// ```
    pub async fn read<V>(
        &self,
        path: impl Into<PathBuf>,
        validate: V,
    ) -> Result<Recovered, Error<ReadLogError>>
    where
        V: Fn(&[u8]) -> bool + Send + Sync + 'static,
    {
        let path = path.into();
        let validate = Arc::new(validate);
        let inner = Arc::clone(&self.inner);
        self.inner
            .policy
            .call_with(|attempt| {
                let (inner, path, validate) = (Arc::clone(&inner), path.clone(), Arc::clone(&validate));
                let ops = Arc::clone(&inner.ops);
                let task = locks::spawn_in_order(&path.clone(), attempt.remaining(), move |turn| {
                    turn.wait(&*ops, &path)?;
                    inner.read_blocking(&path, &*validate, turn.deadline())
                });
                async move {
                    task.await.unwrap_or_else(|e| {
                        Err(ReadLogError::Fs(FsError::new(
                            "log",
                            Step::Task,
                            io::Error::other(e.to_string()),
                        )))
                    })
                }
            })
            .await
    }
}

/// The record check a reader is given.
pub(super) type Validate = dyn Fn(&[u8]) -> bool + Send + Sync;

impl LogReader {
    /// Runs `work` over `path` through the policy, on the blocking pool in the path's
    /// turn, with the reader's record cap, `validate` and the attempt's deadline.
    pub(super) async fn run_blocking<T, W>(
        &self,
        path: PathBuf,
        validate: Arc<Validate>,
        work: W,
    ) -> Result<T, Error<ReadLogError>>
    where
        T: Send + 'static,
        W: Fn(&dyn FileOps, &Path, usize, &Validate, Option<std::time::Instant>) -> Result<T, FsError>
            + Clone
            + Send
            + 'static,
    {
        let (ops, max_record) = (Arc::clone(&self.inner.ops), self.inner.max_record);
        self.inner
            .policy
            .call_with(|attempt| {
                let (validate, work) = (Arc::clone(&validate), work.clone());
                let budget = attempt.remaining();
                let task = super::io::run_blocking(
                    Arc::clone(&ops),
                    path.clone(),
                    budget,
                    move |ops, path, deadline| work(ops, path, max_record, &*validate, deadline),
                );
                async move { task.await.map_err(ReadLogError::Fs) }
            })
            .await
    }
}

/// The state of a scan: where the valid prefix ends, and what follows it.
enum Tail {
    /// Nothing after the valid prefix.
    Clean,
    /// Only bytes that a crash can leave: a record without its newline, zeros.
    Torn,
    /// An invalid record followed by more data.
    Corrupt {
        line: usize,
        offset: u64,
        reason: String,
    },
}

impl ReaderInner {
    fn read_blocking(
        &self,
        path: &Path,
        validate: &(dyn Fn(&[u8]) -> bool + Send + Sync),
        deadline: Option<std::time::Instant>,
    ) -> Result<Recovered, ReadLogError> {
        let ops = &*self.ops;
        let (dir, name) = split(path)?;
        let _serialised = locks::lock_file(ops, dir, name, deadline)?;
        if regular_file(ops, path)?.is_none() {
            return Ok(Recovered::default());
        }
        let file = ops
            .open_read(path)
            .map_err(|e| FsError::new(path, Step::Open, e))?;
        let (records, valid_end, tail) = self.scan(&file, path, validate)?;
        if matches!(tail, Tail::Torn) {
            // NOTE: the tail is cut only under the file's cross-process lock: without it
            // the "torn" bytes may be another process's append in progress, not yet
            // written whole, so they are skipped, never cut. Under it, the file is read
            // again: that append may have completed meanwhile.
            let Some(locked) = flock::try_locked(ops, path, file)? else {
                tracing::debug!(target: "stayfast::fs", path = %path.display(), offset = valid_end,
                    "another process holds the log's lock: its unterminated tail is skipped, not cut");
                return Ok(Recovered { records, torn: None });
            };
            let again = ops
                .open_read(path)
                .map_err(|e| FsError::new(path, Step::Open, e))?;
            let (records, valid_end, tail) = self.scan(&again, path, validate)?;
            return finish(ops, path, dir, name, records, valid_end, tail, Some(locked));
        }
        finish(ops, path, dir, name, records, valid_end, tail, None)
    }

    /// Reads the file once, in chunks, keeping only valid records in memory.
    fn scan(
        &self,
        file: &File,
        path: &Path,
        validate: &(dyn Fn(&[u8]) -> bool + Send + Sync),
    ) -> Result<(Vec<Vec<u8>>, u64, Tail), ReadLogError> {
        let ops = &*self.ops;
        let mut records = Vec::new();
        let mut line = Vec::new();
        let mut line_oversized = false;
        // Whether the line being assembled holds a byte other than zero: a crash's zero
        // fill has none.
        let mut line_has_data = false;
        let mut line_start = 0u64; // offset of the line being assembled
        let mut valid_end = 0u64; // end of the valid prefix
        let mut first_invalid: Option<(usize, u64, String)> = None;
        // A complete line with data, at or after the first invalid one: it was written
        // whole (its newline is there), so what follows the valid prefix is damage, not
        // a crash's leftover.
        let mut written_after_invalid = false;
        let mut chunk = vec![0u8; CHUNK];
        let mut offset = 0u64;
        loop {
            let n = match ops.read(file, path, &mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(FsError::new(path, Step::Read, e).into()),
            };
            // A slice at a time: each piece up to the next newline is looked at and copied
            // whole, not byte by byte.
            let mut rest = &chunk[..n];
            while !rest.is_empty() {
                let end = rest.iter().position(|b| *b == b'\n');
                let piece = &rest[..end.unwrap_or(rest.len())];
                offset += piece.len() as u64;
                line_has_data |= piece.iter().any(|b| *b != 0);
                // After an invalid record nothing is kept, only looked at.
                if first_invalid.is_none() {
                    let room = self.max_record - line.len();
                    line.extend_from_slice(&piece[..piece.len().min(room)]);
                    line_oversized |= piece.len() > room;
                }
                let Some(end) = end else { break };
                rest = &rest[end + 1..];
                offset += 1;
                let number = records.len() + 1;
                if first_invalid.is_some() {
                    written_after_invalid |= line_has_data;
                } else if line_oversized {
                    first_invalid = Some((
                        number,
                        line_start,
                        format!("record longer than {} bytes", self.max_record),
                    ));
                    written_after_invalid = line_has_data;
                } else if validate(&line) {
                    records.push(std::mem::take(&mut line));
                    valid_end = offset;
                } else {
                    first_invalid = Some((number, line_start, "invalid record".into()));
                    written_after_invalid = line_has_data;
                }
                line.clear();
                line_oversized = false;
                line_has_data = false;
                line_start = offset;
            }
        }
        let tail = match first_invalid {
            // A complete line that fails validation was fully written: never cut it,
            // wherever it is (the last line included). What a crash leaves — a record
            // without its newline, zeros — is cut.
            Some((line, offset, reason)) if written_after_invalid => Tail::Corrupt { line, offset, reason },
            _ if offset > valid_end => Tail::Torn,
            _ => Tail::Clean,
        };
        Ok((records, valid_end, tail))
    }
}

impl fmt::Debug for LogReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogReader")
            .field("ops", &self.inner.ops)
            .field("policy", &self.inner.policy)
            .field("max_record", &self.inner.max_record)
            .finish()
    }
}

/// What a scan found, acted on: a torn tail cut (under the file's cross-process lock,
/// `_locked`, when the scan found one), corruption reported.
#[allow(clippy::too_many_arguments)]
fn finish(
    ops: &dyn FileOps,
    path: &Path,
    dir: &Path,
    name: &std::ffi::OsStr,
    records: Vec<Vec<u8>>,
    valid_end: u64,
    tail: Tail,
    // Held until the tail is cut.
    _locked: Option<flock::Locked<'_>>,
) -> Result<Recovered, ReadLogError> {
    match tail {
        Tail::Clean => Ok(Recovered { records, torn: None }),
        Tail::Corrupt { line, offset, reason } => Err(ReadLogError::Corrupt(Box::new(Corruption {
            path: path.to_path_buf(),
            line,
            offset,
            reason,
            valid: records,
        }))),
        Tail::Torn => {
            let torn = tail::cut(ops, path, dir, name, valid_end)?;
            Ok(Recovered {
                records,
                torn: Some(torn),
            })
        }
    }
}

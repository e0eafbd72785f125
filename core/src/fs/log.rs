//! [`LogReader`]: read a record log back, repairing a torn tail and refusing to skip
//! corruption in the middle.

use std::{
    fmt,
    fs::File,
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{FileOps, FsError, RealFs, Step, atomic, locks};
use crate::{Classify, Error, Policy, Verdict, fs::DEFAULT_FILE_MODE};

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
            ReadLogError::Fs(e) => Some(e),
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
/// the last newline, or a trailing run of zero bytes (a file extended by the kernel
/// whose data never reached the disk) — is copied to `<name>.torn-<offset>` and cut off
/// the log, and reported in [`Recovered::torn`]. An invalid record followed by anything
/// else is corruption in the middle: [`ReadLogError::Corrupt`] carries the valid
/// records before it and nothing is changed. A missing file is an empty log. Only
/// regular files are read (never through a symlink, never a FIFO or device), records
/// longer than `max_record` are invalid, and memory stays bounded by the valid records.
/// Holds the file's write lock while reading, so it never mistakes an append in
/// progress for a torn tail.
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
    inner: Arc<ReaderInner>,
}

struct ReaderInner {
    ops: Arc<dyn FileOps>,
    policy: Policy,
    max_record: usize,
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
            .call(|| {
                let (inner, path, validate) = (Arc::clone(&inner), path.clone(), Arc::clone(&validate));
                let ops = Arc::clone(&inner.ops);
                let task = locks::spawn_in_order(&path.clone(), move |turn| {
                    turn.wait(&*ops, &path);
                    inner.read_blocking(&path, &*validate)
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
    ) -> Result<Recovered, ReadLogError> {
        let ops = &*self.ops;
        let (dir, name) = atomic::split(path)?;
        let _serialised = locks::lock_file(ops, dir, name)?;
        match ops.symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Recovered::default()),
            Err(e) => return Err(FsError::new(path, Step::Inspect, e).into()),
            Ok(meta) if !meta.file_type().is_file() => {
                let e = io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
                return Err(FsError::new(path, Step::Open, e).into());
            }
            Ok(_) => {}
        }
        let file = ops
            .open_read(path)
            .map_err(|e| FsError::new(path, Step::Open, e))?;
        let (records, valid_end, tail) = self.scan(&file, path, validate)?;
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
                let torn = self.cut_tail(&file, path, dir, name, valid_end)?;
                Ok(Recovered {
                    records,
                    torn: Some(torn),
                })
            }
        }
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
        let mut line_start = 0u64; // offset of the line being assembled
        let mut valid_end = 0u64; // end of the valid prefix
        let mut first_invalid: Option<(usize, u64, String)> = None;
        let mut only_zeros_after_invalid = true;
        let mut chunk = vec![0u8; CHUNK];
        let mut offset = 0u64;
        loop {
            let n = match ops.read(file, path, &mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(FsError::new(path, Step::Read, e).into()),
            };
            for &byte in &chunk[..n] {
                offset += 1;
                if first_invalid.is_some() {
                    // After an invalid record only a crash's leftovers may follow.
                    only_zeros_after_invalid &= byte == 0 || byte == b'\n';
                    continue;
                }
                if byte != b'\n' {
                    if line.len() < self.max_record {
                        line.push(byte);
                    } else {
                        line_oversized = true;
                    }
                    continue;
                }
                let number = records.len() + 1;
                if line_oversized {
                    first_invalid = Some((
                        number,
                        line_start,
                        format!("record longer than {} bytes", self.max_record),
                    ));
                } else if validate(&line) {
                    records.push(std::mem::take(&mut line));
                    valid_end = offset;
                } else {
                    first_invalid = Some((number, line_start, "invalid record".into()));
                }
                line.clear();
                line_oversized = false;
                line_start = offset;
            }
        }
        let tail = match first_invalid {
            // The invalid record is the last data in the file (only zeros and newlines
            // follow): what a crash leaves, not corruption.
            Some(_) if only_zeros_after_invalid => Tail::Torn,
            Some((line, offset, reason)) => Tail::Corrupt { line, offset, reason },
            None if offset > valid_end => Tail::Torn, // a last record without its newline
            None => Tail::Clean,
        };
        Ok((records, valid_end, tail))
    }

    /// Copies the bytes from `valid_end` on to a backup, then truncates the log there.
    fn cut_tail(
        &self,
        file: &File,
        path: &Path,
        dir: &Path,
        name: &std::ffi::OsStr,
        valid_end: u64,
    ) -> Result<TornTail, FsError> {
        let ops = &*self.ops;
        let total = ops
            .len(file, path)
            .map_err(|e| FsError::new(path, Step::Inspect, e))?;
        let mut backup_name = name.to_os_string();
        backup_name.push(format!(".torn-{valid_end}"));
        let mut backup = dir.join(&backup_name);
        let mut n = 1;
        let out = loop {
            match ops.create_new(&backup, DEFAULT_FILE_MODE) {
                Ok(f) => break f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 100 => {
                    let mut next = backup_name.clone();
                    next.push(format!(".{n}"));
                    backup = dir.join(next);
                    n += 1;
                }
                Err(e) => return Err(FsError::new(&backup, Step::Backup, e)),
            }
        };
        copy_tail(ops, path, valid_end, &out, &backup)?;
        ops.sync(&out, &backup)
            .map_err(|e| FsError::new(&backup, Step::Backup, e))?;
        atomic::sync_dir(ops, dir)?;
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
}

/// Copies every byte of `path` from `from` on into `out`, a chunk at a time (a torn
/// tail may be a long run of zeros).
fn copy_tail(ops: &dyn FileOps, path: &Path, from: u64, out: &File, out_path: &Path) -> Result<(), FsError> {
    let file = ops
        .open_read(path)
        .map_err(|e| FsError::new(path, Step::Read, e))?;
    let mut chunk = vec![0u8; CHUNK];
    let mut offset = 0u64;
    loop {
        let n = match ops.read(&file, path, &mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FsError::new(path, Step::Read, e)),
        };
        let start = from.saturating_sub(offset).min(n as u64) as usize;
        atomic::write_all(ops, out, out_path, &chunk[start..n])?;
        offset += n as u64;
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

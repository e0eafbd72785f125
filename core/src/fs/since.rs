//! [`DurableAppend::append_since`]: an append whose record is decided under the file's
//! locks, from what other processes appended since the caller last looked.

use std::{
    fs::{File, Metadata},
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use super::{DurableAppend, FileOps, FsError, Step, append::Appended, io::run_staged, tail::read_exact_at};
use crate::Error;

/// Where a log stood when an appender last held its locks: the file (device, inode and
/// creation time) and its length then. Handed back to
/// [`append_since`](DurableAppend::append_since), it tells what changed since.
///
/// ```
/// # use stayfast_core::{Policy, fs::{Decision, DurableAppend}};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = std::env::temp_dir().join(format!("stayfast-doc-mark-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// let log = DurableAppend::new(Policy::builder("fs.append").build()?);
/// let done = log.append_since(dir.join("t.log"), None, |_| Decision::append(b"one".to_vec(), ())).await?;
/// assert_eq!(done.mark.end(), 4); // "one\n"
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogMark {
    dev: u64,
    ino: u64,
    /// Creation time, where the file system keeps one: an inode number reused by a
    /// file created after a removal is still another file.
    born: Option<SystemTime>,
    len: u64,
}

impl LogMark {
    pub(super) fn of(meta: &Metadata, len: u64) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            born: meta.created().ok(),
            len,
        }
    }

    /// Where the log ended at the mark: the end of its last complete record, in bytes.
    ///
    /// ```
    /// # fn show(mark: stayfast_core::fs::LogMark) { println!("{} bytes", mark.end()); }
    /// ```
    pub fn end(&self) -> u64 {
        self.len
    }

    /// Whether `meta` is the marked file.
    pub(super) fn is_file(&self, meta: &Metadata) -> bool {
        self.dev == meta.dev() && self.ino == meta.ino() && self.born == meta.created().ok()
    }
}

/// What a log holds beyond what the caller knew (its [`LogMark`]), as
/// [`append_since`](DurableAppend::append_since) sees it under the file's locks: no
/// other writer is in the middle of an append then. Bytes are complete lines, each
/// ending with a newline; [`lines`](Self::lines) iterates over them.
///
/// ```
/// # use stayfast_core::fs::Since;
/// fn count(since: &Since<'_>) -> usize {
///     match since {
///         Since::Unchanged => 0,
///         Since::Grown(_) | Since::Whole(_) => since.lines().count(),
///         _ => 0,
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Since<'a> {
    /// The file is as the mark left it.
    Unchanged,
    /// The same file, with these lines appended after the mark (by another process, or
    /// another appender of this one).
    Grown(&'a [u8]),
    /// No mark was given, or the file is not the marked one any more (replaced,
    /// removed and created again, truncated): every complete line it holds.
    Whole(&'a [u8]),
}

impl<'a> Since<'a> {
    /// The lines, without their newlines (none for [`Since::Unchanged`]).
    ///
    /// ```
    /// # use stayfast_core::fs::Since;
    /// let lines: Vec<&[u8]> = Since::Grown(b"a\nb\n").lines().collect();
    /// assert_eq!(lines, [b"a".as_slice(), b"b".as_slice()]);
    /// ```
    pub fn lines(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let bytes: &'a [u8] = match *self {
            Since::Unchanged => &[],
            Since::Grown(b) | Since::Whole(b) => b,
        };
        bytes
            .strip_suffix(b"\n")
            .unwrap_or(bytes)
            .split(|b| *b == b'\n')
            .filter(move |_| !bytes.is_empty())
    }
}

/// What an [`append_since`](DurableAppend::append_since) decided: a record to append
/// (without its newline), or nothing; and a value handed back to the caller.
///
/// ```
/// # use stayfast_core::fs::Decision;
/// let write: Decision<&str> = Decision::append(b"{\"seq\":3}".to_vec(), "appended");
/// let skip: Decision<&str> = Decision::skip("already there");
/// # let _ = (write, skip);
/// ```
#[derive(Debug)]
pub struct Decision<T> {
    pub(super) record: Option<Vec<u8>>,
    pub(super) value: T,
}

impl<T> Decision<T> {
    /// Append `record` (it may not contain a newline), and hand `value` back.
    ///
    /// ```
    /// let d = stayfast_core::fs::Decision::append(b"one".to_vec(), 1);
    /// # let _ = d;
    /// ```
    pub fn append(record: impl Into<Vec<u8>>, value: T) -> Self {
        Self {
            record: Some(record.into()),
            value,
        }
    }

    /// Append nothing; hand `value` back.
    ///
    /// ```
    /// let d = stayfast_core::fs::Decision::skip("a repeated id");
    /// # let _ = d;
    /// ```
    pub fn skip(value: T) -> Self {
        Self { record: None, value }
    }
}

/// The result of an [`append_since`](DurableAppend::append_since).
///
/// ```
/// # use stayfast_core::fs::Decided;
/// # fn show(d: Decided<u64>) { println!("{} at {} bytes, appended: {}", d.value, d.mark.end(), d.appended.is_some()); }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decided<T> {
    /// What the decision handed back.
    pub value: T,
    /// Where and how durably the record was appended; `None` when the decision skipped.
    pub appended: Option<Appended>,
    /// The log after it: give it to the next `append_since` of this file.
    pub mark: LogMark,
}

/// What the appender reads for a decision.
pub(super) enum Known {
    /// Nothing: the record is fixed (a plain [`append`](DurableAppend::append)).
    Ignored,
    /// The lines after this mark (all of them for `None`).
    Mark(Option<LogMark>),
}

impl Known {
    /// Whether the file (`meta`, `len` bytes long) is exactly as the caller's mark left
    /// it: the same file, the same length.
    pub(super) fn unchanged(&self, meta: &Metadata, len: u64) -> bool {
        self.mark().is_some_and(|m| m.is_file(meta) && m.len == len)
    }

    /// The caller's mark, if it gave one.
    pub(super) fn mark(&self) -> Option<&LogMark> {
        match self {
            Known::Mark(Some(m)) => Some(m),
            _ => None,
        }
    }
}

/// Reads what the file (`meta`, complete up to `end`) holds beyond `known` into `buf`.
pub(super) fn read_since<'b>(
    ops: &dyn FileOps,
    file: &File,
    path: &Path,
    meta: &Metadata,
    known: &Known,
    end: u64,
    buf: &'b mut Vec<u8>,
) -> Result<Since<'b>, FsError> {
    let mark = match known {
        Known::Ignored => return Ok(Since::Unchanged),
        Known::Mark(mark) => mark,
    };
    let from = match mark {
        Some(m) if m.is_file(meta) && m.len == end => return Ok(Since::Unchanged),
        Some(m) if m.is_file(meta) && m.len < end => m.len,
        _ => 0,
    };
    let size = usize::try_from(end - from).map_err(|_| {
        let e = io::Error::new(io::ErrorKind::OutOfMemory, "the file is too large to read");
        FsError::new(path, Step::Read, e)
    })?;
    buf.resize(size, 0);
    read_exact_at(ops, file, path, buf, from)?;
    Ok(if from == 0 {
        Since::Whole(buf)
    } else {
        Since::Grown(buf)
    })
}

impl DurableAppend {
    /// Appends the record `decide` makes from what the file holds beyond `known`, all
    /// under the file's locks — the process-wide one and the cross-process `flock` —
    /// so no other writer, in this process or another, appends in between: a record
    /// numbered from the file's last one gets a number nobody else gets. Give it the
    /// [`Decided::mark`] of the previous call on this file (or `None`, to be shown the
    /// whole file); when the file is still the marked one and only grew, only the new
    /// lines are read; when it is unchanged (the common case of a single writer),
    /// nothing is read. `decide` runs on the blocking pool and may run again on a
    /// retry.
    ///
    /// Otherwise as [`append`](Self::append): a torn tail is cut first (a crashed
    /// writer's: no writer is in progress under the lock), one `write()`, the fsync
    /// policy, a rollback on failure.
    ///
    /// # Errors
    ///
    /// As [`append`](Self::append); an `InvalidInput` [`FsError`] at [`Step::Write`]
    /// when the record contains a newline (nothing is written); at [`Step::Lock`] with
    /// kind `TimedOut` when another process held the file's lock until (shortly
    /// before) the deadline: nothing was written.
    ///
    /// # Cancellation
    ///
    /// As [`append`](Self::append): the blocking task runs to its end.
    ///
    /// ```
    /// # use stayfast_core::{Policy, fs::{Decision, DurableAppend, Since}};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let dir = std::env::temp_dir().join(format!("stayfast-doc-since-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("counter.log");
    /// let log = DurableAppend::new(Policy::builder("fs.append").build()?);
    /// // Each record is the previous one plus one, whoever wrote the previous one.
    /// let next = |known: u64| move |since: Since<'_>| {
    ///     let last = since.lines().last().map_or(known, |l| String::from_utf8_lossy(l).parse().unwrap_or(0));
    ///     Decision::append((last + 1).to_string(), last + 1)
    /// };
    /// let first = log.append_since(&path, None, next(0)).await?;
    /// std::fs::OpenOptions::new().append(true).open(&path)?.write_all(b"2\n")?; // another writer
    /// # use std::io::Write;
    /// let third = log.append_since(&path, Some(first.mark), next(first.value)).await?;
    /// assert_eq!(third.value, 3);
    /// assert_eq!(std::fs::read_to_string(&path)?, "1\n2\n3\n");
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok(()) }
    /// ```
    pub async fn append_since<T, F>(
        &self,
        path: impl Into<PathBuf>,
        known: Option<LogMark>,
        decide: F,
    ) -> Result<Decided<T>, Error<FsError>>
    where
        T: Send + 'static,
        F: Fn(Since<'_>) -> Decision<T> + Send + Sync + 'static,
    {
        let path = path.into();
        let decide = Arc::new(decide);
        let inner = Arc::clone(&self.inner);
        let decided = self
            .inner
            .policy
            .call_with(|attempt| {
                let (inner, path, decide) = (Arc::clone(&inner), path.clone(), Arc::clone(&decide));
                let ops = Arc::clone(&inner.ops);
                run_staged(ops, path, attempt.remaining(), move |ops, path, deadline| {
                    let decide = |since: Since<'_>| {
                        let Decision { record, value } = decide(since);
                        let line = record.map(|mut r| {
                            if r.contains(&b'\n') {
                                return Err(r);
                            }
                            r.push(b'\n');
                            Ok(r)
                        });
                        (line, value)
                    };
                    Ok(inner
                        .write_blocking(ops, path, deadline, &Known::Mark(known), &decide)?
                        .then_sync(&inner))
                })
            })
            .await?;
        if let Some(appended) = &decided.appended {
            self.after_append(&path, appended);
        }
        Ok(decided)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::{io::Write, os::unix::fs::PermissionsExt};

    use super::*;
    use crate::Policy;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stayfast-since-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn log() -> DurableAppend {
        DurableAppend::new(Policy::builder("fs.append").build().unwrap())
    }

    /// Counts the records `since` shows, and appends `record`.
    fn add(record: &'static str) -> impl Fn(Since<'_>) -> Decision<usize> + Send + Sync + 'static {
        move |since| Decision::append(record, since.lines().count())
    }

    /// The tail check is skipped only for a file exactly as the mark left it: a torn
    /// fragment left since (another process's crash) changes the length, and is cut.
    #[tokio::test]
    async fn a_torn_tail_after_the_mark_is_cut_before_appending() {
        let dir = dir("torn");
        let path = dir.join("t.log");
        let log = log();
        let first = log.append_since(&path, None, add("one")).await.unwrap();
        let same = log
            .append_since(&path, Some(first.mark), add("two"))
            .await
            .unwrap();
        assert_eq!(same.value, 0, "unchanged since the mark: nothing to show");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"thr")
            .unwrap();
        let after = log
            .append_since(&path, Some(same.mark), add("three"))
            .await
            .unwrap();
        assert_eq!(after.appended.unwrap().torn_cut, 3);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\nthree\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The append handle kept open between appends is checked like a new one: a file
    /// replaced since (a repair, another process) gets the record, not the old inode.
    #[tokio::test]
    async fn a_file_replaced_under_a_kept_handle_gets_the_next_record() {
        let dir = dir("replaced");
        let path = dir.join("t.log");
        let log = log();
        let first = log.append_since(&path, None, add("one")).await.unwrap();
        let other = dir.join("t.log.new");
        std::fs::write(&other, b"x\n").unwrap();
        std::fs::rename(&other, &path).unwrap();
        let next = log
            .append_since(&path, Some(first.mark), add("two"))
            .await
            .unwrap();
        assert_eq!(next.value, 1, "shown the whole new file");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x\ntwo\n");
        std::fs::remove_file(&path).unwrap();
        let plain = log.append(&path, b"three".to_vec()).await.unwrap();
        assert_eq!(
            plain.offset, 0,
            "a removed file is created again, not the old one written"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// With a mark, the file's creation is not checked before the open: a file removed
    /// since and created again by this append still gets its exact mode (not the umask's
    /// cut of it) and a durable directory entry.
    #[tokio::test]
    async fn a_file_created_again_after_the_mark_gets_its_exact_mode() {
        let dir = dir("mode");
        let path = dir.join("t.log");
        // Group- and world-writable: a umask of 022 (the usual) would take bits off it.
        let log = log().new_file_mode(0o666);
        let first = log.append_since(&path, None, add("one")).await.unwrap();
        let mode = || std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(), 0o666);
        std::fs::remove_file(&path).unwrap();
        let again = log
            .append_since(&path, Some(first.mark), add("two"))
            .await
            .unwrap();
        assert_eq!(again.value, 0, "a new file: nothing before its record");
        assert_eq!(mode(), 0o666, "the new file's mode was set exactly");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! [`LogReader::read_last`]: the last records of a log, read from its end.

use std::{path::Path, sync::Arc};

use super::{
    FileOps, FsError, LogReader, ReadLogError, Step,
    io::{regular_file, split},
    locks,
    log::Validate,
    tail,
};
use crate::Error;

/// How much is read from the end at a time.
const CHUNK: u64 = 64 * 1024;

impl LogReader {
    /// The last `n` records of `path` (fewer when it holds fewer), oldest first, read
    /// backwards from the file's end: the cost follows `n`, not the file's length.
    ///
    /// Returns `None` when the end is not clean — a torn tail, or a line among the last
    /// `n` that fails `validate` or is longer than `max_record` — so the caller falls
    /// back to [`read`](Self::read), which repairs or reports it. A missing file is an
    /// empty log. Holds the file's write lock while reading.
    ///
    /// # Errors
    ///
    /// [`ReadLogError::Fs`] for a file-system error (a directory, FIFO or symlink at
    /// `path` included), or the policy's errors.
    ///
    /// # Cancellation
    ///
    /// Dropping the future does not stop the blocking task; it only reads.
    ///
    /// ```
    /// # use stayfast_core::{Policy, fs::LogReader};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let dir = std::env::temp_dir().join(format!("stayfast-doc-log-last-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("t.log");
    /// std::fs::write(&path, b"1\n2\n3\n").unwrap();
    /// let reader = LogReader::new(Policy::builder("fs.read").build().unwrap());
    /// let digits = |r: &[u8]| !r.is_empty() && r.iter().all(u8::is_ascii_digit);
    /// let last = reader.read_last(&path, 2, digits).await.unwrap();
    /// assert_eq!(last, Some(vec![b"2".to_vec(), b"3".to_vec()]));
    /// std::fs::write(&path, b"1\n2\n3").unwrap(); // a torn tail: read() must repair it
    /// assert_eq!(reader.read_last(&path, 2, digits).await.unwrap(), None);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # }
    /// ```
    pub async fn read_last<V>(
        &self,
        path: impl Into<std::path::PathBuf>,
        n: usize,
        validate: V,
    ) -> Result<Option<Vec<Vec<u8>>>, Error<ReadLogError>>
    where
        V: Fn(&[u8]) -> bool + Send + Sync + 'static,
    {
        let work = move |ops: &dyn FileOps, path: &Path, max_record, validate: &Validate, deadline| {
            read_last_blocking(ops, path, n, max_record, validate, deadline)
        };
        self.run_blocking(path.into(), Arc::new(validate), work).await
    }
}

fn read_last_blocking(
    ops: &dyn FileOps,
    path: &Path,
    n: usize,
    max_record: usize,
    validate: &Validate,
    deadline: Option<std::time::Instant>,
) -> Result<Option<Vec<Vec<u8>>>, FsError> {
    let (dir, name) = split(path)?;
    let _serialised = locks::lock_file(ops, dir, name, deadline)?;
    if regular_file(ops, path)?.is_none() {
        return Ok(Some(Vec::new()));
    }
    let file = ops
        .open_read(path)
        .map_err(|e| FsError::new(path, Step::Open, e))?;
    let len = ops
        .len(&file, path)
        .map_err(|e| FsError::new(path, Step::Inspect, e))?;
    if len == 0 || n == 0 {
        return Ok(Some(Vec::new()));
    }
    let mut last = [0u8];
    if tail::read_exact_at(ops, &file, path, &mut last, len - 1)? != b"\n" {
        return Ok(None); // a torn tail
    }
    // `pending` holds the bytes from `pos` up to the last unprocessed line's end (the
    // final newline excluded); complete lines are taken off its back.
    let mut pending: Vec<u8> = Vec::new();
    let mut pos = len - 1;
    let mut records = Vec::new();
    loop {
        while let Some(i) = pending.iter().rposition(|b| *b == b'\n') {
            let line = pending.split_off(i + 1);
            pending.truncate(i);
            if line.len() > max_record || !validate(&line) {
                return Ok(None);
            }
            records.push(line);
            if records.len() == n {
                records.reverse();
                return Ok(Some(records));
            }
        }
        if pos == 0 {
            // What is left is the file's first line.
            if pending.len() > max_record || !validate(&pending) {
                return Ok(None);
            }
            records.push(pending);
            records.reverse();
            return Ok(Some(records));
        }
        if pending.len() > max_record {
            return Ok(None); // memory stays bounded by `n` records
        }
        let start = pos.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; usize::try_from(pos - start).unwrap_or(0)];
        tail::read_exact_at(ops, &file, path, &mut chunk, start)?;
        chunk.extend_from_slice(&pending);
        pending = chunk;
        pos = start;
    }
}

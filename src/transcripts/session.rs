//! Session ids turned into safe names, and the bounded map of per-session writer state.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use sha2::{Digest, Sha256};
use stayfast_core::fs::LogMark;

use super::{
    pushes::PushQueue,
    record::{End, Record},
};
use crate::StoreError;

/// Longest accepted session id, in bytes.
pub(crate) const MAX_SESSION_ID_BYTES: usize = 1024;

/// A session id as the file system and Redis see it: the hex SHA-256 of the caller's
/// id. The raw id never reaches a path (no `..`, `/`, NUL or overlong name can), the
/// mapping is injective in practice and fixed-length, and the Redis keys carry it as
/// their hash tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SessionKey {
    hex: String,
}

impl SessionKey {
    pub(crate) fn new(session: &str) -> Result<Self, StoreError> {
        if session.is_empty() {
            return Err(StoreError::InvalidInput {
                what: "session id",
                problem: "is empty".into(),
            });
        }
        if session.len() > MAX_SESSION_ID_BYTES {
            return Err(StoreError::InvalidInput {
                what: "session id",
                problem: format!("is {} bytes, over {MAX_SESSION_ID_BYTES}", session.len()),
            });
        }
        let digest = Sha256::digest(session.as_bytes());
        // Every append computes it: a table lookup per nibble, not a formatter call per
        // byte (which cost more than the hash itself).
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = String::with_capacity(64);
        for byte in digest {
            hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
            hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
        }
        Ok(Self { hex })
    }

    /// The key of the session whose file is named `name` (`<hex>.jsonl`), if it is one.
    pub(crate) fn from_file_name(name: &str) -> Option<Self> {
        let hex = name.strip_suffix(".jsonl")?;
        (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self { hex: hex.to_owned() })
    }

    /// The keys of the session's Redis order (`order = "redis"`): its counter
    /// `{<prefix>:<hex>}:seq`, its message ids `…:ids` (a hash id → seq) and its whole
    /// history `…:history` (a list, element `seq - 1` holding record `seq`). One hash
    /// tag, so one slot for the script; none of them is a file order key.
    pub(crate) fn order_keys(&self, prefix: &str) -> Vec<String> {
        ["seq", "ids", "history"]
            .iter()
            .map(|part| format!("{{{prefix}:{}}}:{part}", self.hex))
            .collect()
    }

    /// `<dir>/<hex>.jsonl`.
    pub(crate) fn file(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.jsonl", self.hex))
    }

    /// `{<prefix>:<hex>}:log`: every key of a session shares the `{<prefix>:<hex>}`
    /// hash tag (`prefix` is [`TranscriptConfig::key_prefix`], `tx` by default).
    ///
    /// [`TranscriptConfig::key_prefix`]: super::TranscriptConfig::key_prefix
    pub(crate) fn redis_key(&self, prefix: &str) -> String {
        format!("{{{prefix}:{}}}:log", self.hex)
    }

    /// `{<prefix>:<hex>}:deleted`: the set of the session's deleted incarnations (see
    /// [`End::incarnation`]), so a late write of one is refused.
    pub(crate) fn tombstone_key(&self, prefix: &str) -> String {
        format!("{{{prefix}:{}}}:deleted", self.hex)
    }
}

/// What the writer of one session knows, loaded from its file on first use.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    /// Whether the fields below reflect the file. False at first, and again after an
    /// append whose outcome is unknown (it may land later): the next append re-reads.
    pub(crate) loaded: bool,
    /// The file's last record.
    pub(crate) last: End,
    /// The file's first record: its incarnation (see [`End::incarnation`]).
    pub(crate) first: End,
    /// Every message id in the file, for idempotent appends.
    pub(crate) ids: HashSet<String>,
    /// The file as this process's last append left it (under its cross-process lock):
    /// the fields above are the file's up to there. `None` when they were read without
    /// that lock (or not at all): the next append is shown the whole file.
    pub(crate) mark: Option<LogMark>,
}

/// Records of the file an append was shown under its locks: those appended since its
/// mark (by another process), or the whole file's.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) records: Vec<Record>,
    /// The whole file's records (else those after the mark).
    pub(crate) whole: bool,
}

impl Writer {
    /// Takes in the records an append was shown, and the file's mark after it.
    pub(crate) fn observe(&mut self, seen: Seen, mark: LogMark) {
        let Seen { records, whole } = seen;
        if whole {
            self.first = End::of(records.first());
            self.last = End::of(records.last());
            self.ids = records.into_iter().map(|r| r.id).collect();
        } else if let Some(last) = records.last() {
            if self.last.seq == 0 {
                self.first = End::of(records.first());
            }
            self.last = End::of(Some(last));
            self.ids.extend(records.into_iter().map(|r| r.id));
        }
        self.loaded = true;
        self.mark = Some(mark);
    }
}

/// One session's state: the writer behind an async lock (appends of a session are
/// serialised: seq order = file order), the last record the file is known to end
/// with, readable without that lock, and the pushes to its Redis window not yet sent.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) writer: tokio::sync::Mutex<Writer>,
    /// The file's last record; `None` until the writer loads it.
    known_end: Mutex<Option<End>>,
    /// The file's first record (its incarnation), known with `known_end`.
    known_first: Mutex<Option<End>>,
    /// Filled under the writer lock, so in seq order.
    pub(crate) pushes: Arc<PushQueue>,
    /// Held by the `order = "redis"` replay while it gives a batch of this session's
    /// pending records their seqs, and by a delete of the session (after the writer):
    /// a delete waits for the batch in flight rather than racing it.
    pub(crate) replay: tokio::sync::Mutex<()>,
    last_used: AtomicU64,
}

impl Session {
    fn new() -> Self {
        Self {
            writer: tokio::sync::Mutex::new(Writer::default()),
            known_end: Mutex::new(None),
            known_first: Mutex::new(None),
            pushes: Arc::default(),
            replay: tokio::sync::Mutex::new(()),
            last_used: AtomicU64::new(0),
        }
    }

    /// The file's last record, if known.
    pub(crate) fn known_end(&self) -> Option<End> {
        // Only ever replaced whole: a panic cannot leave it half-written.
        self.known_end
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The file's first record, if known.
    pub(crate) fn known_first(&self) -> Option<End> {
        self.known_first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What the writer knows of the file's ends (`None`: nothing, re-read it). The
    /// first is set before the last: a reader that sees the last sees its first.
    pub(crate) fn set_known(&self, writer: Option<&Writer>) {
        let (first, last) = writer.map(|w| (w.first.clone(), w.last.clone())).unzip();
        *self.known_first.lock().unwrap_or_else(PoisonError::into_inner) = first;
        *self.known_end.lock().unwrap_or_else(PoisonError::into_inner) = last;
    }

    /// Whether only the map holds it: no caller, and no drainer of its pushes (forgot
    /// while one runs, it would come back with a second queue, and two drainers of one
    /// session could push out of order).
    fn is_idle(self: &Arc<Self>) -> bool {
        Arc::strong_count(self) == 1 && Arc::strong_count(&self.pushes) == 1
    }
}

/// Sessions in use, at most `capacity` of them idle: past it, the least recently used
/// idle ones are forgotten (their state is re-read from the file when needed). A
/// session someone holds is never forgotten, so two writers of one session always
/// share one lock.
#[derive(Debug)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<SessionKey, Arc<Session>>>,
    clock: AtomicU64,
    capacity: usize,
}

impl Sessions {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            capacity,
        }
    }

    /// The session for `key`, created if absent.
    pub(crate) fn get(&self, key: &SessionKey) -> Arc<Session> {
        let tick = self.clock.fetch_add(1, Ordering::Relaxed);
        // The map holds no invariant a panic could break midway: recover the guard.
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let session = match map.get(key) {
            Some(s) => Arc::clone(s),
            None => {
                if map.len() >= self.capacity {
                    evict_idle(&mut map, self.capacity);
                }
                let s = Arc::new(Session::new());
                map.insert(key.clone(), Arc::clone(&s));
                s
            }
        };
        session.last_used.store(tick, Ordering::Relaxed);
        session
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// Forgets the least recently used idle sessions, down to 7/8 of `capacity` so the
/// O(n) pass runs once per many insertions.
fn evict_idle(map: &mut HashMap<SessionKey, Arc<Session>>, capacity: usize) {
    let target = capacity - capacity / 8 - 1;
    let mut idle: Vec<(u64, SessionKey)> = map
        .iter()
        .filter(|(_, s)| s.is_idle())
        .map(|(k, s)| (s.last_used.load(Ordering::Relaxed), k.clone()))
        .collect();
    idle.sort_unstable_by_key(|(used, _)| *used);
    let excess = map.len().saturating_sub(target);
    for (_, key) in idle.into_iter().take(excess) {
        map.remove(&key);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hostile_ids_become_fixed_length_hex_names_inside_the_dir() {
        let dir = Path::new("/srv/transcripts");
        for id in [
            "../x",
            "/etc/passwd",
            "a\0b",
            ".",
            "..",
            "ünï/cödé",
            &"x".repeat(300),
        ] {
            let key = SessionKey::new(id).unwrap();
            let file = key.file(dir);
            assert_eq!(file.parent(), Some(dir), "{id:?}");
            let name = file.file_name().unwrap().to_str().unwrap();
            assert_eq!(name.len(), 64 + ".jsonl".len());
            assert!(
                name.trim_end_matches(".jsonl")
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit())
            );
        }
        assert!(SessionKey::new("").is_err());
        assert!(SessionKey::new(&"x".repeat(MAX_SESSION_ID_BYTES + 1)).is_err());
        assert_ne!(SessionKey::new("a").unwrap(), SessionKey::new("b").unwrap());
    }

    #[test]
    fn the_map_stays_bounded_and_never_drops_a_held_session() {
        let sessions = Sessions::new(100);
        let held = sessions.get(&SessionKey::new("held").unwrap());
        for i in 0..10_000 {
            let _ = sessions.get(&SessionKey::new(&format!("s{i}")).unwrap());
        }
        assert!(sessions.len() <= 100, "{}", sessions.len());
        let again = sessions.get(&SessionKey::new("held").unwrap());
        assert!(Arc::ptr_eq(&held, &again), "a held session keeps its one lock");
    }
}

//! Files appended to but not yet fsynced (`FsyncPolicy::EveryMs`), and the timer that
//! syncs them within the interval even when no further append comes.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard, PoisonError},
};

/// The set of unsynced files, and whether a flusher task owns it. Never pruned: every
/// path in it holds acknowledged records that are not yet durable.
#[derive(Debug, Default)]
pub(super) struct PendingSyncs {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    paths: HashSet<PathBuf>,
    /// A flusher task is running; it clears this, under the same lock, when it finds
    /// nothing to do, so a path added afterwards starts a new one.
    flusher: bool,
}

impl PendingSyncs {
    fn state(&self) -> MutexGuard<'_, State> {
        // A set of paths and a flag: no invariant a panic could break midway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes `path` as unsynced; true when the caller must start a flusher.
    pub(super) fn add(&self, path: &Path) -> bool {
        let mut state = self.state();
        state.paths.insert(path.to_path_buf());
        !std::mem::replace(&mut state.flusher, true)
    }

    /// `path` was just fsynced.
    pub(super) fn remove(&self, path: &Path) {
        self.state().paths.remove(path);
    }

    /// Every unsynced path, now owned by the caller (who puts back those it could
    /// not sync).
    pub(super) fn take(&self) -> Vec<PathBuf> {
        self.state().paths.drain().collect()
    }

    /// For the flusher: the paths to sync now, or `None` (and the flusher flag
    /// cleared) when there are none and it should end.
    pub(super) fn take_or_stop(&self) -> Option<Vec<PathBuf>> {
        let mut state = self.state();
        if state.paths.is_empty() {
            state.flusher = false;
            return None;
        }
        Some(state.paths.drain().collect())
    }

    /// Puts back a path whose sync failed: the next round tries again.
    pub(super) fn put_back(&self, path: PathBuf) {
        self.state().paths.insert(path);
    }

    /// How many files are unsynced.
    pub(super) fn len(&self) -> usize {
        self.state().paths.len()
    }
}

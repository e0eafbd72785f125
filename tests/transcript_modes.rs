//! F5 file_modes: under `umask 000` a transcript directory is created 0700 and a
//! transcript file 0600. The umask is process-wide, so the test re-runs its own binary
//! as a child under `sh -c 'umask 000; exec …'`, filtered to this one test; the child
//! appends and checks, and the parent checks again after it exits.
#![allow(clippy::unwrap_used)]

use std::{os::unix::fs::PermissionsExt, path::Path, process::Command};

use stayfast::transcripts::{Message, TranscriptConfig, TranscriptStore};

/// Set in the child: the directory to create its transcripts in.
const CHILD_DIR: &str = "STAYFAST_TX_MODES_DIR";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// The process's umask, from `/proc/self/status` (Linux).
fn umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// The child's side: append one message, then check the modes.
fn child(base: &Path) {
    if let Some(mask) = umask() {
        assert_eq!(mask, 0, "the child must run under umask 000");
    }
    let dir = base.join("nested").join("transcripts");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut config = TranscriptConfig::default();
        config.dir = dir.clone();
        let store = TranscriptStore::builder(&config).open().await.unwrap();
        store.append("s", Message::new("user", "hello")).await.unwrap();
    });
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    assert_eq!(mode(&dir), 0o700, "transcript directory");
    assert_eq!(mode(&base.join("nested")), 0o700, "missing parents too");
    assert_eq!(mode(&files[0]), 0o600, "transcript file");
}

#[test]
fn file_modes() {
    if let Some(base) = std::env::var_os(CHILD_DIR) {
        child(Path::new(&base));
        return;
    }
    let base = std::env::temp_dir().join(format!("stayfast-tx-modes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let output = Command::new("sh")
        .arg("-c")
        .arg(r#"umask 000; exec "$0" "$@""#)
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "file_modes", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, &base)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "the child ran no test:\n{stdout}");

    let dir = base.join("nested").join("transcripts");
    let file = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let (dir_mode, file_mode) = (mode(&dir), mode(&file));
    std::fs::remove_dir_all(&base).unwrap();
    eprintln!("under umask 000: directory {dir_mode:o}, file {file_mode:o}");
    assert_eq!((dir_mode, file_mode), (0o700, 0o600));
}

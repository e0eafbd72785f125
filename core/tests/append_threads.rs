//! The appenders' own threads (multi-thread runtimes): appends to many files share a
//! few threads, and each is still acknowledged only after its own file's fsync.
#![allow(clippy::unwrap_used)]

use std::{
    collections::HashSet,
    fs, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    thread::ThreadId,
    time::Duration,
};

use stayfast_core::{
    Policy,
    fs::{Durability, DurableAppend, FileOps, RealFs},
};

/// Files to append to at once: as many sessions as the transcripts bench.
const FILES: usize = 200;

/// A slow disk (each fsync takes 20 ms) that records which threads ran the fsyncs, and
/// which files were fsynced.
#[derive(Clone, Debug, Default)]
struct SlowSyncs {
    threads: Arc<Mutex<HashSet<ThreadId>>>,
    synced: Arc<Mutex<HashSet<PathBuf>>>,
}

impl FileOps for SlowSyncs {
    fn sync(&self, file: &fs::File, path: &Path) -> io::Result<()> {
        self.threads.lock().unwrap().insert(std::thread::current().id());
        std::thread::sleep(Duration::from_millis(20));
        RealFs.sync(file, path)?;
        self.synced.lock().unwrap().insert(path.to_path_buf());
        Ok(())
    }
}

/// 200 appends to 200 files at once on a slow disk: each is acknowledged `Synced` only
/// once its own file was fsynced, and the fsyncs ran on a few threads (one
/// `spawn_blocking` per append ran each on a thread of its own: 200 threads, 200
/// wake-ups).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_to_many_files_share_a_few_threads() {
    let dir = std::env::temp_dir().join(format!("stayfast-append-threads-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let seam = SlowSyncs::default();
    let log = DurableAppend::new(
        Policy::builder("fs.append")
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    )
    .with_ops(seam.clone());
    let appends = (0..FILES).map(|i| {
        let (log, path, seam) = (log.clone(), dir.join(format!("{i}.jsonl")), seam.clone());
        tokio::spawn(async move {
            let appended = log.append(&path, b"{\"seq\":1}".to_vec()).await.unwrap();
            assert_eq!(appended.durability, Durability::Synced);
            assert!(
                seam.synced.lock().unwrap().contains(&path),
                "{} acknowledged before its fsync returned",
                path.display()
            );
        })
    });
    for append in futures_util::future::join_all(appends).await {
        append.unwrap();
    }
    let threads = seam.threads.lock().unwrap().len();
    eprintln!("{FILES} appends at once: their fsyncs ran on {threads} threads");
    // 32 threads of the pool, and one more for each thread another test of this binary
    // keeps stuck: far below one per append.
    assert!(threads <= 64, "{threads} threads ran {FILES} fsyncs");
    for i in 0..FILES {
        assert_eq!(
            fs::read(dir.join(format!("{i}.jsonl"))).unwrap(),
            b"{\"seq\":1}\n"
        );
    }
    fs::remove_dir_all(&dir).unwrap();
}

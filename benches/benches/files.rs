//! Durable file replacement: stayfast's `AtomicFileWrite` against the same sequence
//! hand-written in one blocking hop, against six `tokio::fs` calls (one hop each), and
//! against a non-durable `tokio::fs::write` — on tmpfs (`/dev/shm`, where fsync is
//! free, so the cost is the machinery) and on the work disk (where fsync dominates).
//!
//! The sequences are `stayfast_benches::micro`'s, which the report times in paired
//! rounds.
//!
//! Run: `cargo bench -p stayfast-benches --bench files`.

use std::{
    hint::black_box,
    path::{Path, PathBuf},
};

use criterion::Criterion;
use stayfast_benches::micro::{PAYLOAD, file_writer, one_hop, one_hop_same_guarantees, six_calls};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let data: std::sync::Arc<[u8]> = vec![b'x'; PAYLOAD].into();
    let writer = file_writer(&rt);
    let mut places = vec![("disk", PathBuf::from("target/bench-files"))];
    if Path::new("/dev/shm").is_dir() {
        places.insert(
            0,
            (
                "tmpfs",
                PathBuf::from(format!("/dev/shm/stayfast-bench-{}", std::process::id())),
            ),
        );
    }
    for (place, dir) in places {
        std::fs::create_dir_all(&dir).expect("a bench directory");
        let target = dir.join("state.bin");
        let mut group = c.benchmark_group(format!("files/{place}"));
        if place == "disk" {
            // fsync latency on a disk varies from one journal commit to the next: measure
            // long enough that the comparison is not noise.
            group
                .sample_size(30)
                .measurement_time(std::time::Duration::from_secs(15));
        }
        group.bench_function("stayfast_atomic_write", |b| {
            b.to_async(&rt)
                .iter(|| writer.write(target.clone(), data.clone()))
        });
        group.bench_function("hand_written_one_hop", |b| {
            b.to_async(&rt).iter(|| {
                let (dir, target, data) = (dir.clone(), target.clone(), data.clone());
                async move { tokio::task::spawn_blocking(move || one_hop(&dir, &target, &data)).await }
            })
        });
        group.bench_function("hand_written_same_guarantees", |b| {
            b.to_async(&rt).iter(|| {
                let (dir, target, data) = (dir.clone(), target.clone(), data.clone());
                async move {
                    tokio::task::spawn_blocking(move || one_hop_same_guarantees(&dir, &target, &data)).await
                }
            })
        });
        group.bench_function("tokio_fs_six_calls", |b| {
            b.to_async(&rt).iter(|| six_calls(&dir, &target, &data))
        });
        group.bench_function("tokio_fs_write_not_durable", |b| {
            b.to_async(&rt)
                .iter(|| tokio::fs::write(target.clone(), black_box(data.clone())))
        });
        group.finish();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

// NOTE: `criterion_group!` generates an undocumented public function, which the
// workspace's `missing_docs` lint rejects, so `main` is spelled out.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}

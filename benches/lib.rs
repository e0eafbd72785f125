//! Benchmarks of stayfast against the raw call and its peer crates; see `benches/`.
//! Nothing here is published.

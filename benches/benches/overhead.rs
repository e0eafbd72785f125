//! Overhead of each stayfast wrapper against the bare future and the peer stack.

fn main() {}

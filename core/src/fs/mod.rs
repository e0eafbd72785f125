//! Files: atomic and durable writes through a seam that tests can observe and break.
//!
//! Every file-system call goes through [`FileOps`] ([`RealFs`] in production). See
//! [`AtomicFileWrite`] for the write guarantee.

mod atomic;
mod error;
mod locks;
mod ops;
mod temp;

pub use atomic::{AtomicFileWrite, DEFAULT_FILE_MODE};
pub use error::{FsError, Step};
pub use ops::{FileOps, RealFs};

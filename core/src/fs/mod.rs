//! Files: atomic and durable writes through a seam that tests can observe and break.
//!
//! Every file-system call goes through [`FileOps`] ([`RealFs`] in production). See
//! [`AtomicFileWrite`] for the write guarantee.

mod append;
mod atomic;
mod error;
mod flock;
mod io;
mod last;
mod locks;
mod log;
mod ops;
mod pending;
mod repair;
mod since;
mod tail;
mod temp;
mod writers;

pub use append::{Appended, Durability, DurableAppend, FsyncPolicy};
pub use atomic::AtomicFileWrite;
pub use error::{FsError, Step};
pub use io::DEFAULT_FILE_MODE;
pub use log::{Corruption, DEFAULT_MAX_RECORD, LogReader, ReadLogError, Recovered};
pub use ops::{FileOps, RealFs};
pub use repair::Repaired;
pub use since::{Decided, Decision, LogMark, Since};
pub use tail::TornTail;

//! The only code that talks to the kernel.
//!
//! Everything here issues system calls directly through `rustix` (linux_raw backend, no libc)
//! and maps every failure to [`Error`] in one place ([`error`]). Nothing here panics on a kernel
//! error.
//!
//! - [`uring`]: io_uring ring setup with feature probing, the mapped submission and completion
//!   queues, SQE builders, submit-and-wait, provided-buffer ring registration.
//! - [`epoll`]: the readiness backend.
//! - [`eventfd`]: the cross-thread wake.
//! - [`socket`]: TCP listeners and streams, IPv4 and IPv6; socket addresses in the kernel's
//!   encoding for io_uring connect/accept; the open-descriptor limit.
//! - [`clock`]: the monotonic clock (and the wall clock, for display).
//! - [`mem`]: large zeroed storage from fresh anonymous pages, not resident until used.
//! - [`process`]: facts about this process (resident memory), for monitoring.

pub mod clock;
pub mod driver;
pub mod epoll;
pub mod error;
pub mod eventfd;
pub mod mem;
pub mod process;
pub mod socket;
pub mod uring;

pub use error::{Error, Result};

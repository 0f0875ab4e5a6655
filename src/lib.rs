//! ringlet: a `#![no_std]`, single-threaded, allocation-free event loop for Linux.
//!
//! # Architecture
//!
//! The folders are the layers, and dependencies point downward only:
//!
//! - [`sys`] is the only code that talks to the kernel. It issues io_uring and epoll system
//!   calls directly through `rustix` (no libc), and turns every failure into a typed
//!   [`sys::Error`] in one place. It owns the io_uring submission and completion rings, the SQE
//!   builders, epoll, eventfd, sockets and the monotonic clock.
//! - [`pool`] is storage without allocation, in memory the embedding program provides: a
//!   [`pool::Slab`] with generational keys (a stale key is an error, never an alias), a
//!   two-tier receive-buffer pool whose [`pool::Lease`]s return their buffer exactly once, and
//!   [`pool::ByteRing`], the per-connection write slab. `pool` makes no system calls; it only
//!   knows the memory layout of io_uring's provided-buffer ring.
//! - [`sync`] is the one cross-thread mechanism: an atomics facade (`core`, or `loom` under
//!   `--cfg loom`, so loom checks this very code) and the wake protocol by which other threads
//!   hand the loop work without losing a wake-up ([`sync::WakeSignal`], [`sync::Wake`]). Buffers
//!   travel to other threads as [`pool::SendLease`]s and come back through a lock-free
//!   [`pool::ReturnQueue`]; `sys::eventfd::WakeFd` is the eventfd that wakes the loop.
//! - [`time`] is an OS-independent instant type, so protocol cores can take time as a value.
//! - [`reactor`] is the event loop: one thread, io_uring or epoll, callbacks through a
//!   [`reactor::Handler`].
//! - [`exec`] is the async face: a no-alloc executor of connection tasks that is itself a
//!   reactor handler, wakers that carry a task's slot and generation (woken from any thread
//!   through the same wake as returned buffers), and [`exec::Connection`] (read snapshots,
//!   write, flush to a position).
//! - [`pipe`] is a producer/consumer byte pipe over pool buffers with segmented, zero-copy
//!   read views and partial consumption, and a reader over a connection's receive leases.
//! - [`frame`] is framing over byte streams: sans-IO codecs for u16 length-prefixed frames
//!   (fragmentation above a chunk size, reassembly into one pool buffer, a per-connection
//!   throttle on frames pending processing) and for CRLF/LF lines, plus handler adapters
//!   ([`frame::Framed`], [`frame::Lines`]) that run them on reactor connections.
//! - [`broker`] is the NATS core protocol as a sans-IO core: the client-operation parser,
//!   subjects, the subscription index, CONNECT options and the server's protocol lines. It
//!   takes bytes and returns results; the network glue binds it to the reactor.
//! - [`stream`] is the byte-stream layer: the [`stream::ReadStream`] / [`stream::WriteStream`]
//!   traits (`async fn`, seed 001's contract: a read succeeds with at least one byte or fails
//!   with none, end of stream is [`stream::Error::Eof`]), their refinements
//!   [`stream::ReadSource`] / [`stream::WriteSink`], and composed algorithms written once over
//!   them (exact `read`, `read_until` into a bounded buffer, bounded `read_to_end`, `relay`).
//!   Memory and scripted streams, the contract as reusable conformance checks
//!   ([`stream::conformance`]) that every stream here passes, and (feature
//!   `embedded-io-async`) adapters to the embedded-io-async traits.
//!
//! # Memory
//!
//! Nothing here allocates: there is no `alloc` crate. Every container works over storage the
//! caller hands in (a `static`, or memory leaked once at start-up), sized by const generics on
//! the storage type only, so the containers themselves work on slices.
//!
//! # Unsafe code
//!
//! `unsafe` is denied crate-wide and allowed only in [`sys`], [`pool`] and [`exec`] (the
//! executor's task storage, its wakers, and the scope that lends a polled task the turn's
//! reactor context), where every block carries a `// SAFETY:` comment naming the invariant
//! it relies on.
#![no_std]
#![deny(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod broker;
#[allow(unsafe_code)]
pub mod exec;
pub mod frame;
pub mod pipe;
#[allow(unsafe_code)]
pub mod pool;
pub mod reactor;
pub mod stream;
pub mod sync;
#[allow(unsafe_code)]
pub mod sys;
pub mod time;

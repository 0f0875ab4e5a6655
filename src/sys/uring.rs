//! io_uring through rustix's `io_uring` module: ring setup with feature probing, the mapped
//! submission and completion queues, SQE builders, submit-and-wait, provided-buffer rings.
//!
//! # Lifecycle of an operation
//!
//! 1. Build an [`Sqe`] with one of its constructors and tag it with [`Sqe::user_data`]. Building
//!    is safe: an `Sqe` is only a description.
//! 2. [`Uring::push`] copies it into the submission queue. This is the `unsafe` step: from here
//!    until the operation's *final* completion, every memory region the SQE points at (send
//!    bytes, a `msghdr` and its iovecs, a socket address, a timespec, a read target) must stay
//!    valid and must not be moved, and memory the kernel writes into must not be read or
//!    written by anyone else. A multishot operation is in flight until a completion without
//!    [`Cqe::more`]. Closing a file descriptor does not end its operations: cancel them and wait.
//! 3. [`Uring::submit_and_wait`] publishes every queued SQE and waits, in one `io_uring_enter`.
//! 4. [`Uring::completions`] yields each [`Cqe`] once, copied out of the shared ring.
//!
//! Dropping a [`Uring`] closes the ring, which makes the kernel cancel what is still in flight,
//! but that teardown is asynchronous: memory lent to in-flight operations must outlive the ring
//! unless every final completion was reaped first. The event loop above does that.
//!
//! # Memory ordering
//!
//! The queues are shared with the kernel as single-producer single-consumer rings of `u32`
//! indices. For the submission queue we are the producer: SQE bytes are written first, then the
//! tail is stored with `Release`; the kernel's head is loaded with `Acquire` before a slot is
//! reused. For the completion queue we are the consumer: the kernel's tail is loaded with
//! `Acquire` before CQE bytes are read, and our head is stored with `Release` after they were
//! copied out, so the kernel never overwrites a CQE we are still reading.
//!
//! # Features and fallbacks
//!
//! [`Uring::new`] tries the setup flags from the best to the plainest and keeps the first the
//! kernel accepts (EINVAL means "unknown flag"; any other error, such as EPERM when io_uring is
//! disabled by policy or ENOSYS, is returned at once so the caller can fall back to epoll):
//!
//! 1. `SINGLE_ISSUER | DEFER_TASKRUN` (6.1): completions are produced only when this thread
//!    enters the kernel, so they never interrupt it. The ring must then be used only by the
//!    thread that created it (another thread's enter fails with EEXIST).
//! 2. `COOP_TASKRUN | TASKRUN_FLAG` (5.19): no interrupting IPIs; the kernel flags pending work.
//! 3. No optional flag.
//!
//! `CQSIZE` and `CLAMP` are always requested. The opcode probe (`IORING_REGISTER_PROBE`) then
//! tells which operations exist. Provided-buffer rings and multishot accept arrived with Linux
//! 5.19 together with `IORING_OP_SOCKET`, multishot receive with 6.0 together with
//! `IORING_OP_SEND_ZC`; [`Features`] infers them from those opcodes, and registering a buffer
//! ring still reports its own error if the inference is wrong.

use core::ffi::c_void;
use core::fmt;
use core::ptr::{self, NonNull, null_mut};
use core::sync::atomic::{AtomicU32, Ordering};
use core::time::Duration;

use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use rustix::io::Errno;
use rustix::io_uring::{
    IoringAcceptFlags, IoringAsyncCancelFlags, IoringCqeFlags, IoringEnterFlags,
    IoringFeatureFlags, IoringMsgringCmds, IoringOp, IoringPollFlags, IoringRecvFlags,
    IoringRegisterOp, IoringSendFlags, IoringSetupFlags, IoringSqFlags, IoringSqeFlags,
    IoringTimeoutFlags, MsgHdr, SendFlags, SocketAddrStorage, SocketFlags, Timespec,
    io_uring_buf_reg, io_uring_cqe, io_uring_getevents_arg, io_uring_params, io_uring_ptr,
    io_uring_sqe, iovec,
};
use rustix::mm::{MapFlags, ProtFlags};
use static_assertions::const_assert_eq;

use super::{Error, Result};

const_assert_eq!(core::mem::size_of::<io_uring_sqe>(), 64);
const_assert_eq!(core::mem::size_of::<io_uring_cqe>(), 16);
const_assert_eq!(core::mem::size_of::<Cqe>(), 16);

/// `user_data` reserved for the timeout SQE that [`Uring::submit_and_wait`] queues on kernels
/// without `IORING_FEAT_EXT_ARG`. Its completion is consumed internally, never yielded.
pub const INTERNAL_TIMEOUT_USER_DATA: u64 = u64::MAX;

// Opcodes by number, for reading the kernel's probe without going through rustix's enum (a
// value the enum cannot represent would be undefined behaviour).
const OP_MSG_RING: u8 = 40;
const OP_SOCKET: u8 = 45;
const OP_SEND_ZC: u8 = 47;
/// `IORING_FEAT_MIN_TIMEOUT` (rustix 1.1 has no name for it).
const FEAT_MIN_TIMEOUT: u32 = 1 << 15;

/// What to ask of [`Uring::new`].
#[derive(Clone, Copy, Debug)]
pub struct UringConfig {
    /// Submission queue entries (rounded up to a power of two by the kernel, clamped).
    pub sq_entries: u32,
    /// Completion queue entries; size it for the worst case of completions between two reaps
    /// (multishot operations post many completions per SQE).
    pub cq_entries: u32,
    /// Try `SINGLE_ISSUER | DEFER_TASKRUN` first. Turn it off if the ring is created on one
    /// thread and driven from another.
    pub single_issuer: bool,
}

impl Default for UringConfig {
    fn default() -> Self {
        UringConfig {
            sq_entries: 256,
            cq_entries: 4096,
            single_issuer: true,
        }
    }
}

/// What the running kernel offers, found at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// The ring was set up with `SINGLE_ISSUER`.
    pub single_issuer: bool,
    /// The ring was set up with `DEFER_TASKRUN`.
    pub defer_taskrun: bool,
    /// The ring was set up with `COOP_TASKRUN | TASKRUN_FLAG`.
    pub coop_taskrun: bool,
    /// `IORING_FEAT_EXT_ARG`: waits take a timeout directly (5.11).
    pub ext_arg: bool,
    /// `IORING_FEAT_NODROP`: completions that overflow the CQ are kept, not dropped (5.5).
    pub nodrop: bool,
    /// `IORING_FEAT_FAST_POLL`: socket operations poll internally instead of using workers.
    pub fast_poll: bool,
    /// `IORING_FEAT_MIN_TIMEOUT` (6.12): a wait can hold out for a batch of completions for a
    /// short minimum time before returning with fewer (see [`Uring::submit_and_wait_batch`]).
    pub min_timeout: bool,
    /// Provided-buffer rings (`IORING_REGISTER_PBUF_RING`, 5.19).
    pub provided_buf_ring: bool,
    /// Multishot accept (5.19).
    pub multishot_accept: bool,
    /// Multishot receive with buffer select (6.0).
    pub multishot_recv: bool,
    /// `IORING_OP_SEND_ZC` (6.0).
    pub send_zc: bool,
    /// `IORING_OP_MSG_RING` (5.18).
    pub msg_ring: bool,
    /// Submission queue entries granted.
    pub sq_entries: u32,
    /// Completion queue entries granted.
    pub cq_entries: u32,
    /// The raw `features` word the kernel reported.
    pub raw_features: u32,
    /// The highest opcode the kernel's probe lists.
    pub last_op: u8,
}

impl Features {
    /// True when this kernel has everything the io_uring backend needs (provided-buffer rings
    /// and multishot receive and accept); otherwise the loop falls back to epoll.
    pub fn supports_uring_backend(&self) -> bool {
        self.provided_buf_ring && self.multishot_recv && self.multishot_accept
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        writeln!(f, "sq entries          {}", self.sq_entries)?;
        writeln!(f, "cq entries          {}", self.cq_entries)?;
        writeln!(f, "SINGLE_ISSUER       {}", yes(self.single_issuer))?;
        writeln!(f, "DEFER_TASKRUN       {}", yes(self.defer_taskrun))?;
        writeln!(f, "COOP_TASKRUN        {}", yes(self.coop_taskrun))?;
        writeln!(f, "EXT_ARG waits       {}", yes(self.ext_arg))?;
        writeln!(f, "NODROP              {}", yes(self.nodrop))?;
        writeln!(f, "FAST_POLL           {}", yes(self.fast_poll))?;
        writeln!(f, "MIN_TIMEOUT waits   {}", yes(self.min_timeout))?;
        writeln!(f, "provided buf rings  {}", yes(self.provided_buf_ring))?;
        writeln!(f, "multishot accept    {}", yes(self.multishot_accept))?;
        writeln!(f, "multishot recv      {}", yes(self.multishot_recv))?;
        writeln!(f, "SEND_ZC             {}", yes(self.send_zc))?;
        writeln!(f, "MSG_RING            {}", yes(self.msg_ring))?;
        writeln!(f, "last opcode         {}", self.last_op)?;
        write!(f, "raw features        {:#x}", self.raw_features)
    }
}

/// One completion, copied out of the completion queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Cqe {
    /// The `user_data` of the SQE this completes.
    pub user_data: u64,
    /// The raw result: a count or a negated errno.
    pub res: i32,
    /// `IORING_CQE_F_*` flags.
    pub flags: u32,
}

impl Cqe {
    /// The result as a count, or the typed error.
    pub fn result(&self) -> Result<u32> {
        if self.res < 0 {
            Err(Error::from_raw_os_error(-self.res))
        } else {
            Ok(self.res as u32)
        }
    }

    /// `IORING_CQE_F_MORE`: the multishot operation stays armed. Any completion without it ends
    /// the operation, whatever its result.
    pub fn more(&self) -> bool {
        self.flags & IoringCqeFlags::MORE.bits() != 0
    }

    /// The provided buffer the kernel picked, if the completion carries one.
    pub fn buffer_id(&self) -> Option<u16> {
        if self.flags & IoringCqeFlags::BUFFER.bits() != 0 {
            Some((self.flags >> rustix::io_uring::IORING_CQE_BUFFER_SHIFT) as u16)
        } else {
            None
        }
    }

    /// `IORING_CQE_F_SOCK_NONEMPTY`: more data was waiting in the socket.
    pub fn sock_nonempty(&self) -> bool {
        self.flags & IoringCqeFlags::SOCK_NONEMPTY.bits() != 0
    }

    /// `IORING_CQE_F_NOTIF`: the zero-copy notification of a `SEND_ZC`; the send's memory may
    /// be reused now.
    pub fn is_notification(&self) -> bool {
        self.flags & IoringCqeFlags::NOTIF.bits() != 0
    }
}

/// A submission queue entry under construction. Building one is safe; pushing it is not (see
/// [`Uring::push`]).
#[derive(Clone, Copy)]
pub struct Sqe(io_uring_sqe);

impl fmt::Debug for Sqe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sqe")
            .field("opcode", &self.0.opcode)
            .field("fd", &self.0.fd)
            .field("user_data", &self.0.user_data.u64_())
            .finish_non_exhaustive()
    }
}

fn ptr_of<T>(p: *const T) -> io_uring_ptr {
    io_uring_ptr::new(p as *mut c_void)
}

impl Sqe {
    fn new(op: IoringOp, fd: RawFd) -> Sqe {
        Sqe(io_uring_sqe {
            opcode: op,
            fd,
            ..Default::default()
        })
    }

    /// Tag the operation; the tag comes back in its completions.
    #[must_use]
    pub fn user_data(mut self, user_data: u64) -> Sqe {
        self.0.user_data.u64_ = user_data;
        self
    }

    /// Post no completion when the operation succeeds (`IOSQE_CQE_SKIP_SUCCESS`).
    #[must_use]
    pub fn skip_success(mut self) -> Sqe {
        self.0.flags |= IoringSqeFlags::CQE_SKIP_SUCCESS;
        self
    }

    /// Name the file by its index in the ring's fixed-file table (`IOSQE_FIXED_FILE`, see
    /// [`Uring::register_files_sparse`]) instead of a descriptor: the kernel then skips the
    /// descriptor lookup and reference count of every operation.
    #[must_use]
    pub fn fixed_file(mut self, index: u32) -> Sqe {
        self.0.fd = index as RawFd;
        self.0.flags |= IoringSqeFlags::FIXED_FILE;
        self
    }

    /// The tag set with [`Sqe::user_data`].
    pub fn get_user_data(&self) -> u64 {
        self.0.user_data.u64_()
    }

    /// A no-op: completes at once with result 0.
    pub fn nop() -> Sqe {
        Sqe::new(IoringOp::Nop, -1)
    }

    /// Multishot accept on a listening socket: one completion per accepted connection (the new
    /// fd, non-blocking and close-on-exec), with [`Cqe::more`] while it stays armed.
    pub fn accept_multishot(listener: BorrowedFd<'_>) -> Sqe {
        let mut sqe = Sqe::new(IoringOp::Accept, listener.as_raw_fd());
        sqe.0.ioprio.accept_flags = IoringAcceptFlags::MULTISHOT;
        sqe.0.op_flags.accept_flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
        sqe
    }

    /// Single-shot accept (non-blocking, close-on-exec), for kernels without multishot accept.
    pub fn accept(listener: BorrowedFd<'_>) -> Sqe {
        let mut sqe = Sqe::new(IoringOp::Accept, listener.as_raw_fd());
        sqe.0.op_flags.accept_flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
        sqe
    }

    /// Connect `socket` to the address at `addr` (`len` bytes). The address must stay valid
    /// until the completion.
    pub fn connect(socket: BorrowedFd<'_>, addr: *const SocketAddrStorage, len: u32) -> Sqe {
        let mut sqe = Sqe::new(IoringOp::Connect, socket.as_raw_fd());
        sqe.0.addr_or_splice_off_in.addr = ptr_of(addr);
        sqe.0.off_or_addr2.off = u64::from(len);
        sqe
    }

    /// Multishot receive with buffer select: each completion names a buffer of group
    /// `buf_group` ([`Cqe::buffer_id`]) holding `res` bytes; `res == 0` is end of stream. When
    /// the group runs dry the operation ends with `ENOBUFS` and no [`Cqe::more`].
    pub fn recv_multishot(socket: BorrowedFd<'_>, buf_group: u16) -> Sqe {
        let mut sqe = Sqe::new(IoringOp::Recv, socket.as_raw_fd());
        sqe.0.ioprio.recv_flags = IoringRecvFlags::MULTISHOT;
        sqe.0.flags |= IoringSqeFlags::BUFFER_SELECT;
        sqe.0.buf.buf_group = buf_group;
        sqe
    }

    /// [`Sqe::recv_multishot`] that ends (without [`Cqe::more`]) once `max_bytes` in total
    /// were received, so one connection cannot take more than its share of a shared buffer
    /// group in one burst. `max_bytes == 0` means no cap. Kernels before the cap existed answer
    /// `EINVAL`: fall back to the uncapped form.
    pub fn recv_multishot_capped(socket: BorrowedFd<'_>, buf_group: u16, max_bytes: u32) -> Sqe {
        let mut sqe = Sqe::recv_multishot(socket, buf_group);
        // The total cap is `sqe->optlen`, the u32 at offset 44 that rustix names `file_index`
        // (a union with `splice_fd_in` and `addr_len`). `sqe->len` would cap each receive.
        sqe.0.splice_fd_in_or_file_index_or_addr_len.file_index = max_bytes;
        sqe
    }

    /// Single-shot receive with buffer select from group `buf_group`.
    pub fn recv_select(socket: BorrowedFd<'_>, buf_group: u16) -> Sqe {
        let mut sqe = Sqe::new(IoringOp::Recv, socket.as_raw_fd());
        sqe.0.flags |= IoringSqeFlags::BUFFER_SELECT;
        sqe.0.buf.buf_group = buf_group;
        sqe
    }

    /// Send `len` bytes at `buf` (`MSG_NOSIGNAL`: a closed peer is `EPIPE`, never `SIGPIPE`).
    pub fn send(socket: BorrowedFd<'_>, buf: *const u8, len: u32) -> Sqe {
        let mut sqe = Sqe::new(IoringOp::Send, socket.as_raw_fd());
        sqe.0.addr_or_splice_off_in.addr = ptr_of(buf);
        sqe.0.len.len = len;
        sqe.0.op_flags.send_flags = SendFlags::NOSIGNAL;
        sqe
    }

    /// Zero-copy send: two completions, the result (with [`Cqe::more`]) and later the
    /// notification ([`Cqe::is_notification`]) after which `buf` may be reused.
    pub fn send_zc(socket: BorrowedFd<'_>, buf: *const u8, len: u32) -> Sqe {
        let mut sqe = Sqe::new(IoringOp::SendZc, socket.as_raw_fd());
        sqe.0.addr_or_splice_off_in.addr = ptr_of(buf);
        sqe.0.len.len = len;
        sqe.0.op_flags.send_flags = SendFlags::NOSIGNAL;
        sqe.0.ioprio.send_flags = IoringSendFlags::empty();
        sqe
    }

    /// `sendmsg` with the header at `msg` (see [`MsgBuf`]), `MSG_NOSIGNAL`.
    pub fn sendmsg(socket: BorrowedFd<'_>, msg: *const MsgHdr) -> Sqe {
        let mut sqe = Sqe::new(IoringOp::Sendmsg, socket.as_raw_fd());
        sqe.0.addr_or_splice_off_in.addr = ptr_of(msg);
        sqe.0.len.len = 1;
        sqe.0.op_flags.send_flags = SendFlags::NOSIGNAL;
        sqe
    }

    /// Read `len` bytes into `buf` from `fd` (the eventfd wake reads its 8-byte counter).
    pub fn read(fd: BorrowedFd<'_>, buf: *mut u8, len: u32) -> Sqe {
        let mut sqe = Sqe::new(IoringOp::Read, fd.as_raw_fd());
        sqe.0.addr_or_splice_off_in.addr = ptr_of(buf);
        sqe.0.len.len = len;
        sqe.0.off_or_addr2.off = u64::MAX; // current position: required for non-seekable fds
        sqe
    }

    /// Multishot poll for readability (`POLLIN`) of `fd`: one completion per wake-up.
    pub fn poll_readable_multishot(fd: BorrowedFd<'_>) -> Sqe {
        let mut sqe = Sqe::new(IoringOp::PollAdd, fd.as_raw_fd());
        sqe.0.len.poll_flags = IoringPollFlags::ADD_MULTI;
        sqe.0.op_flags.poll32_events = 0x0001; // POLLIN
        sqe
    }

    /// Close `fd` asynchronously. The caller gives up the descriptor: wrap it with
    /// `into_raw_fd` first so it is not closed twice.
    pub fn close(fd: RawFd) -> Sqe {
        Sqe::new(IoringOp::Close, fd)
    }

    /// Shut down one or both directions of a socket (`how`: 0 read, 1 write, 2 both).
    pub fn shutdown(socket: BorrowedFd<'_>, how: u32) -> Sqe {
        let mut sqe = Sqe::new(IoringOp::Shutdown, socket.as_raw_fd());
        sqe.0.len.len = how;
        sqe
    }

    /// Cancel the operation tagged `target`. Result 0: cancelled (the operation still posts
    /// its own completion, `ECANCELED`); `ENOENT`: not found; `EALREADY`: running, wait for it.
    pub fn cancel(target: u64) -> Sqe {
        let mut sqe = Sqe::new(IoringOp::AsyncCancel, -1);
        sqe.0.addr_or_splice_off_in.user_data.u64_ = target;
        sqe
    }

    /// Cancel every operation on `fd`.
    pub fn cancel_fd(fd: BorrowedFd<'_>) -> Sqe {
        let mut sqe = Sqe::new(IoringOp::AsyncCancel, fd.as_raw_fd());
        sqe.0.op_flags.cancel_flags = IoringAsyncCancelFlags::FD | IoringAsyncCancelFlags::ALL;
        sqe
    }

    /// Cancel every operation in flight on this ring (`IORING_ASYNC_CANCEL_ANY | ALL`, Linux
    /// 5.19). The result is how many were found; each still posts its own final completion.
    pub fn cancel_any() -> Sqe {
        let mut sqe = Sqe::new(IoringOp::AsyncCancel, -1);
        sqe.0.op_flags.cancel_flags = IoringAsyncCancelFlags::ANY | IoringAsyncCancelFlags::ALL;
        sqe
    }

    /// A timeout that completes with `ETIME` after the relative time at `ts`, or earlier (with
    /// result 0) once `count` other completions were posted (`count == 0`: time only).
    pub fn timeout(ts: *const Timespec, count: u32) -> Sqe {
        let mut sqe = Sqe::new(IoringOp::Timeout, -1);
        sqe.0.addr_or_splice_off_in.addr = ptr_of(ts);
        sqe.0.len.len = 1;
        sqe.0.off_or_addr2.off = u64::from(count);
        sqe.0.op_flags.timeout_flags = IoringTimeoutFlags::empty();
        sqe
    }

    /// Remove the timeout tagged `target`.
    pub fn timeout_remove(target: u64) -> Sqe {
        let mut sqe = Sqe::new(IoringOp::TimeoutRemove, -1);
        sqe.0.addr_or_splice_off_in.user_data.u64_ = target;
        sqe
    }

    /// Post a completion with `user_data = data` and `res = res` on the ring `target`: a wake
    /// from one ring's thread to another's (`IORING_OP_MSG_RING`).
    pub fn msg_ring(target: BorrowedFd<'_>, data: u64, res: u32) -> Sqe {
        let mut sqe = Sqe::new(IoringOp::MsgRing, target.as_raw_fd());
        sqe.0.addr_or_splice_off_in.msgring_cmd = IoringMsgringCmds::Data;
        sqe.0.len.len = res;
        sqe.0.off_or_addr2.user_data.u64_ = data;
        sqe
    }
}

/// The `msghdr` and two iovecs of a `sendmsg` over a wrapped write slab. It must stay at one
/// address from [`MsgBuf::prepare`] until the send's completion (keep it in the connection's
/// slot, which does not move).
pub struct MsgBuf {
    hdr: MsgHdr,
    iov: [iovec; 2],
}

impl Default for MsgBuf {
    fn default() -> Self {
        MsgBuf::new()
    }
}

impl MsgBuf {
    /// An empty header.
    pub const fn new() -> MsgBuf {
        const EMPTY: iovec = iovec {
            iov_base: null_mut(),
            iov_len: 0,
        };
        MsgBuf {
            hdr: MsgHdr {
                msg_name: null_mut(),
                msg_namelen: 0,
                msg_iov: null_mut(),
                msg_iovlen: 0,
                msg_control: null_mut(),
                msg_controllen: 0,
                msg_flags: rustix::net::RecvFlags::empty(),
            },
            iov: [EMPTY; 2],
        }
    }

    /// Point the header at `parts` (empty parts are left out) and return it for
    /// [`Sqe::sendmsg`].
    pub fn prepare(&mut self, parts: [(*const u8, usize); 2]) -> *const MsgHdr {
        let mut n = 0;
        for (base, len) in parts {
            if len > 0 {
                self.iov[n] = iovec {
                    iov_base: base as *mut c_void,
                    iov_len: len,
                };
                n += 1;
            }
        }
        self.hdr.msg_iov = self.iov.as_mut_ptr();
        self.hdr.msg_iovlen = n;
        &self.hdr
    }
}

/// A region mapped from the ring fd; unmapped on drop.
struct Mmap {
    ptr: NonNull<c_void>,
    len: usize,
}

impl Mmap {
    fn new(fd: BorrowedFd<'_>, len: usize, offset: u64) -> Result<Mmap> {
        // SAFETY: a fresh shared mapping chosen by the kernel (null hint) aliases no Rust
        // memory; the ring fd defines what it contains.
        let ptr = unsafe {
            rustix::mm::mmap(
                null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::POPULATE,
                fd,
                offset,
            )
        }?;
        NonNull::new(ptr)
            .map(|ptr| Mmap { ptr, len })
            .ok_or(Error::OutOfMemory)
    }

    /// A pointer `offset` bytes into the mapping, typed.
    fn at<T>(&self, offset: u32) -> *mut T {
        // SAFETY: offsets come from the kernel's io_uring_params for this very mapping, whose
        // length was computed from them, so the result stays inside the mapping.
        unsafe {
            self.ptr
                .as_ptr()
                .cast::<u8>()
                .add(offset as usize)
                .cast::<T>()
        }
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `Mmap::new` with this length and is unmapped once;
        // the raw pointers into it die with the `Uring` that owns this `Mmap`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr(), self.len) };
    }
}

struct SubmissionQueue {
    khead: *const AtomicU32,
    ktail: *const AtomicU32,
    kflags: *const AtomicU32,
    mask: u32,
    entries: u32,
    sqes: *mut io_uring_sqe,
    /// Our tail: SQEs up to here are written; published to `ktail` by `publish`.
    tail: u32,
}

impl SubmissionQueue {
    fn head(&self) -> u32 {
        // SAFETY: khead points into the live SQ ring mapping; the kernel stores it with
        // release semantics after consuming entries, so Acquire orders our slot reuse after it.
        unsafe { (*self.khead).load(Ordering::Acquire) }
    }

    fn flags(&self) -> IoringSqFlags {
        // SAFETY: kflags points into the live SQ ring mapping.
        IoringSqFlags::from_bits_retain(unsafe { (*self.kflags).load(Ordering::Acquire) })
    }

    fn publish(&mut self) {
        // SAFETY: ktail points into the live SQ ring mapping; Release makes every SQE written
        // before this store visible to the kernel before it sees the new tail.
        unsafe { (*self.ktail).store(self.tail, Ordering::Release) }
    }
}

struct CompletionQueue {
    khead: *const AtomicU32,
    ktail: *const AtomicU32,
    koverflow: *const AtomicU32,
    mask: u32,
    cqes: *const io_uring_cqe,
}

/// An io_uring instance: the ring fd, its mapped queues and what the kernel supports.
///
/// `Uring` is neither `Send` nor `Sync`: with `SINGLE_ISSUER` only the creating thread may
/// drive it, and the queues have one producer and one consumer.
pub struct Uring {
    sq: SubmissionQueue,
    cq: CompletionQueue,
    features: Features,
    ops: [u64; 4],
    // Field order is drop order: unmap before closing the fd.
    _sq_ring: Mmap,
    _cq_ring: Option<Mmap>,
    _sqes: Mmap,
    fd: OwnedFd,
}

/// Storage for the kernel's opcode probe: a 16-byte header and 256 eight-byte entries.
#[repr(C, align(8))]
struct ProbeBuf([u8; 16 + 256 * 8]);

impl Uring {
    /// Set up a ring, trying the best setup flags first (see the module docs), map its queues
    /// and probe its opcodes.
    pub fn new(config: &UringConfig) -> Result<Uring> {
        let base = IoringSetupFlags::CQSIZE | IoringSetupFlags::CLAMP;
        let attempts: [(bool, IoringSetupFlags); 3] = [
            (
                config.single_issuer,
                base | IoringSetupFlags::SINGLE_ISSUER | IoringSetupFlags::DEFER_TASKRUN,
            ),
            (
                true,
                base | IoringSetupFlags::COOP_TASKRUN | IoringSetupFlags::TASKRUN_FLAG,
            ),
            (true, base),
        ];
        let mut last = Error::Unsupported;
        for (wanted, flags) in attempts {
            if !wanted {
                continue;
            }
            let mut params = io_uring_params::default();
            params.flags = flags;
            params.cq_entries = config.cq_entries.max(config.sq_entries);
            // SAFETY: ATTACH_WQ is not set, so `wq_fd` is not read.
            match unsafe { rustix::io_uring::io_uring_setup(config.sq_entries, &mut params) } {
                Ok(fd) => return Uring::map(fd, &params),
                Err(Errno::INVAL) => last = Error::InvalidInput,
                Err(e) => return Err(e.into()),
            }
        }
        Err(last)
    }

    fn map(fd: OwnedFd, p: &io_uring_params) -> Result<Uring> {
        let single_mmap = p.features.contains(IoringFeatureFlags::SINGLE_MMAP);
        let sq_len = p.sq_off.array as usize + p.sq_entries as usize * 4;
        let cq_len = p.cq_off.cqes as usize + p.cq_entries as usize * 16;
        let sq_ring_len = if single_mmap {
            sq_len.max(cq_len)
        } else {
            sq_len
        };
        let sq_ring = Mmap::new(
            fd.as_fd(),
            sq_ring_len,
            rustix::io_uring::IORING_OFF_SQ_RING,
        )?;
        let cq_ring = if single_mmap {
            None
        } else {
            Some(Mmap::new(
                fd.as_fd(),
                cq_len,
                rustix::io_uring::IORING_OFF_CQ_RING,
            )?)
        };
        let sqes = Mmap::new(
            fd.as_fd(),
            p.sq_entries as usize * core::mem::size_of::<io_uring_sqe>(),
            rustix::io_uring::IORING_OFF_SQES,
        )?;
        let cq_map = cq_ring.as_ref().unwrap_or(&sq_ring);

        // The SQ index array maps ring slots to SQE slots; use the identity once and for all.
        let array: *mut u32 = sq_ring.at(p.sq_off.array);
        for i in 0..p.sq_entries {
            // SAFETY: `array` has sq_entries u32 slots inside the SQ mapping (its length was
            // computed from exactly that), and the kernel reads it only after a submit.
            unsafe { array.add(i as usize).write(i) };
        }
        // SAFETY: ring_mask is a u32 inside the SQ mapping, written by the kernel at setup.
        let sq_mask = unsafe { sq_ring.at::<u32>(p.sq_off.ring_mask).read() };
        // SAFETY: as above, for the CQ mapping.
        let cq_mask = unsafe { cq_map.at::<u32>(p.cq_off.ring_mask).read() };
        let sq = SubmissionQueue {
            khead: sq_ring.at(p.sq_off.head),
            ktail: sq_ring.at(p.sq_off.tail),
            kflags: sq_ring.at(p.sq_off.flags),
            mask: sq_mask,
            entries: p.sq_entries,
            sqes: sqes.at(0),
            tail: 0,
        };
        let mut sq = sq;
        // SAFETY: ktail is inside the SQ mapping; nothing has been submitted yet.
        sq.tail = unsafe { (*sq.ktail).load(Ordering::Relaxed) };
        let cq = CompletionQueue {
            khead: cq_map.at(p.cq_off.head),
            ktail: cq_map.at(p.cq_off.tail),
            koverflow: cq_map.at(p.cq_off.overflow),
            mask: cq_mask,
            cqes: cq_map.at(p.cq_off.cqes),
        };

        let mut probe = ProbeBuf([0; 16 + 256 * 8]);
        // SAFETY: `probe` is writable storage for an io_uring_probe with 256 op entries, as
        // nr_args says; the kernel writes at most that much and nothing keeps the pointer.
        let probed = unsafe {
            rustix::io_uring::io_uring_register(
                fd.as_fd(),
                IoringRegisterOp::RegisterProbe,
                probe.0.as_mut_ptr().cast(),
                256,
            )
        };
        let mut ops = [0u64; 4];
        let mut last_op = 0;
        if probed.is_ok() {
            last_op = probe.0[0];
            let ops_len = probe.0[1] as usize;
            for i in 0..ops_len {
                let entry = &probe.0[16 + i * 8..16 + i * 8 + 8];
                let (op, flags) = (entry[0], u16::from_ne_bytes([entry[2], entry[3]]));
                if flags & 1 != 0 {
                    // IO_URING_OP_SUPPORTED
                    ops[op as usize / 64] |= 1 << (op % 64);
                }
            }
        }
        let has = |op: u8| ops[op as usize / 64] & (1 << (op % 64)) != 0;
        let features = Features {
            single_issuer: p.flags.contains(IoringSetupFlags::SINGLE_ISSUER),
            defer_taskrun: p.flags.contains(IoringSetupFlags::DEFER_TASKRUN),
            coop_taskrun: p.flags.contains(IoringSetupFlags::COOP_TASKRUN),
            ext_arg: p.features.contains(IoringFeatureFlags::EXT_ARG),
            nodrop: p.features.contains(IoringFeatureFlags::NODROP),
            fast_poll: p.features.contains(IoringFeatureFlags::FAST_POLL),
            min_timeout: p.features.bits() & FEAT_MIN_TIMEOUT != 0,
            provided_buf_ring: has(OP_SOCKET),
            multishot_accept: has(OP_SOCKET),
            multishot_recv: has(OP_SEND_ZC),
            send_zc: has(OP_SEND_ZC),
            msg_ring: has(OP_MSG_RING),
            sq_entries: p.sq_entries,
            cq_entries: p.cq_entries,
            raw_features: p.features.bits(),
            last_op,
        };
        Ok(Uring {
            sq,
            cq,
            features,
            ops,
            _sq_ring: sq_ring,
            _cq_ring: cq_ring,
            _sqes: sqes,
            fd,
        })
    }

    /// What this ring and kernel support.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// Wait with an internal TIMEOUT operation even where `IORING_FEAT_EXT_ARG` exists, as on
    /// kernels before 5.11. Exists so the fallback path can be tested on a new kernel.
    pub fn disable_ext_arg(&mut self) {
        self.features.ext_arg = false;
    }

    /// True when the kernel's probe lists opcode `op` as supported.
    pub fn supports_opcode(&self, op: u8) -> bool {
        self.ops[op as usize / 64] & (1 << (op % 64)) != 0
    }

    /// The ring's file descriptor (the target of [`Sqe::msg_ring`]).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Free submission slots.
    pub fn sq_space(&self) -> u32 {
        self.sq.entries - self.sq.tail.wrapping_sub(self.sq.head())
    }

    /// SQEs queued and not yet consumed by the kernel.
    pub fn sq_pending(&self) -> u32 {
        self.sq.tail.wrapping_sub(self.sq.head())
    }

    /// Queue `sqe` without entering the kernel; hands it back when the queue is full.
    ///
    /// # Safety
    ///
    /// Every memory region `sqe` points at must stay valid, unmoved and (for regions the
    /// kernel writes) untouched by anyone else until the operation's final completion has been
    /// reaped (for multishot operations: the completion without [`Cqe::more`]; for `SEND_ZC`:
    /// the notification). File descriptors it names must stay open until it was submitted.
    pub unsafe fn try_push(&mut self, sqe: &Sqe) -> core::result::Result<(), Sqe> {
        if self.sq_space() == 0 {
            return Err(*sqe);
        }
        let slot = (self.sq.tail & self.sq.mask) as usize;
        // SAFETY: slot < sq_entries, inside the SQE mapping; the kernel's head has passed this
        // slot (checked above with Acquire), so it no longer reads it.
        unsafe { self.sq.sqes.add(slot).write(sqe.0) };
        self.sq.tail = self.sq.tail.wrapping_add(1);
        Ok(())
    }

    /// Queue `sqe`; when the queue is full, submit what is queued first and retry, so an
    /// operation is never dropped. Fails with [`Error::Busy`] only if the kernel takes nothing
    /// (its completion queue overflowed: drain completions, then push again).
    ///
    /// # Safety
    ///
    /// As for [`Uring::try_push`].
    pub unsafe fn push(&mut self, sqe: &Sqe) -> Result<()> {
        // SAFETY: forwarded contract.
        if unsafe { self.try_push(sqe) }.is_ok() {
            return Ok(());
        }
        self.submit()?;
        // SAFETY: forwarded contract.
        unsafe { self.try_push(sqe) }.map_err(|_| Error::Busy)
    }

    /// Submit queued SQEs without waiting. Returns how many the kernel consumed.
    pub fn submit(&mut self) -> Result<u32> {
        self.enter(0, None, Duration::ZERO)
    }

    /// Submit queued SQEs and wait until at least `want` completions are available or
    /// `timeout` passes, in one `io_uring_enter`. `timeout: None` waits without limit (if
    /// `want > 0`). A timeout or a signal is not an error: it returns and the caller reaps
    /// whatever is there. Returns how many SQEs the kernel consumed.
    ///
    /// Without `IORING_FEAT_EXT_ARG` the timeout is an internal TIMEOUT operation tagged
    /// [`INTERNAL_TIMEOUT_USER_DATA`]; its completion is consumed by [`Uring::completions`].
    pub fn submit_and_wait(&mut self, want: u32, timeout: Option<Duration>) -> Result<u32> {
        self.enter(want, timeout, Duration::ZERO)
    }

    /// [`Uring::submit_and_wait`] that holds out for `want` completions for at most
    /// `min_wait`, then returns as soon as any completion is there (still bounded by
    /// `timeout`). A loop that just submitted `n` sends, which complete at once, can wait for
    /// `n + 1` and so collect the next receives in the same system call. Without
    /// [`Features::min_timeout`] this is [`Uring::submit_and_wait`] for one completion.
    pub fn submit_and_wait_batch(
        &mut self,
        want: u32,
        timeout: Option<Duration>,
        min_wait: Duration,
    ) -> Result<u32> {
        if !self.features.min_timeout || !self.features.ext_arg || min_wait.is_zero() {
            return self.enter(want.min(1), timeout, Duration::ZERO);
        }
        self.enter(want, timeout, min_wait)
    }

    fn enter(&mut self, want: u32, timeout: Option<Duration>, min_wait: Duration) -> Result<u32> {
        let mut flags = IoringEnterFlags::empty();
        // With DEFER_TASKRUN completions are only produced when we ask for events; with
        // TASKRUN_FLAG the kernel tells us it has work for us; an overflow is flushed on enter.
        let sq_flags = self.sq.flags();
        if want > 0
            || self.features.defer_taskrun
            || sq_flags.intersects(IoringSqFlags::TASKRUN | IoringSqFlags::CQ_OVERFLOW)
        {
            flags |= IoringEnterFlags::GETEVENTS;
        }
        let ts;
        let mut arg = io_uring_getevents_arg::default();
        let mut use_arg = false;
        if !min_wait.is_zero() && want > 0 {
            // Only reached with MIN_TIMEOUT and EXT_ARG (see submit_and_wait_batch).
            arg.min_wait_usec = u32::try_from(min_wait.as_micros())
                .unwrap_or(u32::MAX)
                .max(1);
            arg.sigmask_sz = 8;
            use_arg = true;
            flags |= IoringEnterFlags::EXT_ARG;
        }
        if let (Some(t), true) = (timeout, want > 0) {
            ts = Timespec {
                tv_sec: t.as_secs() as i64,
                tv_nsec: i64::from(t.subsec_nanos()),
            };
            if self.features.ext_arg {
                arg.ts = ptr_of(&ts);
                arg.sigmask_sz = 8;
                use_arg = true;
                flags |= IoringEnterFlags::EXT_ARG;
            } else {
                let sqe = Sqe::timeout(&ts, 0).user_data(INTERNAL_TIMEOUT_USER_DATA);
                // SAFETY: `ts` lives until this function returns, and the kernel copies the
                // timespec when it consumes the SQE inside the enter below (the queue is
                // flushed by this very call, so the SQE cannot outlive `ts` unsubmitted).
                unsafe { self.push(&sqe)? };
            }
        }
        self.sq.publish();
        let to_submit = self.sq_pending();
        if to_submit == 0 && !flags.contains(IoringEnterFlags::GETEVENTS) {
            return Ok(0);
        }
        // SAFETY: the SQEs being submitted obey `try_push`'s contract; `arg` and `ts` outlive
        // the call; EXT_ARG is set exactly when `arg` is passed.
        let r = unsafe {
            if use_arg {
                rustix::io_uring::io_uring_enter_arg(&self.fd, to_submit, want, flags, Some(&arg))
            } else {
                rustix::io_uring::io_uring_enter(&self.fd, to_submit, want, flags)
            }
        };
        match r {
            Ok(n) => Ok(n),
            // Timed out or interrupted: not failures of the loop; the caller reaps and goes on.
            Err(Errno::TIME) | Err(Errno::INTR) => Ok(to_submit - self.sq_pending()),
            Err(e) => Err(e.into()),
        }
    }

    /// Completions the kernel has posted and not yet dropped for lack of room
    /// (`IORING_FEAT_NODROP` keeps them; they show up after the next enter).
    pub fn cq_overflow(&self) -> u32 {
        // SAFETY: koverflow points into the live CQ mapping.
        unsafe { (*self.cq.koverflow).load(Ordering::Acquire) }
    }

    /// True when completions are waiting in the kernel's overflow list: enter again (any
    /// [`Uring::submit_and_wait`] does) after draining the queue.
    pub fn cq_overflow_pending(&self) -> bool {
        self.sq.flags().contains(IoringSqFlags::CQ_OVERFLOW)
    }

    /// Completions posted and not yet reaped (without taking any).
    pub fn cq_ready(&self) -> u32 {
        // SAFETY: khead is ours (we are its only writer); ktail is the kernel's, stored with
        // Release after its CQEs.
        unsafe {
            (*self.cq.ktail)
                .load(Ordering::Acquire)
                .wrapping_sub((*self.cq.khead).load(Ordering::Relaxed))
        }
    }

    /// The completions available now. Each is yielded once; the queue space is given back to
    /// the kernel when the iterator is dropped.
    pub fn completions(&mut self) -> Completions<'_> {
        // SAFETY: khead is ours to read (we are its only writer); ktail is stored by the
        // kernel with Release after writing CQEs, so Acquire makes those CQEs visible.
        let (head, tail) = unsafe {
            (
                (*self.cq.khead).load(Ordering::Relaxed),
                (*self.cq.ktail).load(Ordering::Acquire),
            )
        };
        Completions {
            cq: &self.cq,
            head,
            tail,
        }
    }

    /// Register a provided-buffer ring of `entries` entries (a power of two) at `ring`, as
    /// buffer group `group`.
    ///
    /// # Safety
    ///
    /// `ring` must point to `entries * 16` bytes, page-aligned, laid out as io_uring's
    /// `struct io_uring_buf_ring`, that stay valid and at that address until the group is
    /// unregistered or the ring is dropped (and every operation using it has completed). Every
    /// buffer published into it must likewise stay valid until the kernel hands it back.
    pub unsafe fn register_buf_ring(&self, ring: *mut u8, entries: u32, group: u16) -> Result<()> {
        let mut reg = io_uring_buf_reg::default();
        reg.ring_addr = io_uring_ptr::new(ring.cast());
        reg.ring_entries = entries;
        reg.bgid = group;
        // SAFETY: `reg` is a valid io_uring_buf_reg for the duration of the call (nr_args 1);
        // the ring memory contract is the caller's.
        unsafe {
            rustix::io_uring::io_uring_register(
                &self.fd,
                IoringRegisterOp::RegisterPbufRing,
                ptr::from_ref(&reg).cast(),
                1,
            )
        }?;
        Ok(())
    }

    /// Register an empty fixed-file table of `entries` slots (`IORING_REGISTER_FILES2` with
    /// `IORING_RSRC_REGISTER_SPARSE`, Linux 5.19), to be filled with [`Uring::update_file`].
    ///
    /// # Errors
    ///
    /// What the kernel says (e.g. `EMFILE` when `entries` passes the descriptor limit).
    pub fn register_files_sparse(&self, entries: u32) -> Result<()> {
        let mut reg = rustix::io_uring::io_uring_rsrc_register::default();
        reg.nr = entries;
        reg.flags = rustix::io_uring::IoringRsrcFlags::REGISTER_SPARSE;
        // SAFETY: `reg` is a valid io_uring_rsrc_register for the duration of the call, and
        // nr_args is its size, as IORING_REGISTER_FILES2 expects; a sparse table reads no
        // descriptor array.
        unsafe {
            rustix::io_uring::io_uring_register(
                &self.fd,
                IoringRegisterOp::RegisterFiles2,
                ptr::from_ref(&reg).cast(),
                core::mem::size_of::<rustix::io_uring::io_uring_rsrc_register>() as u32,
            )
        }?;
        Ok(())
    }

    /// Put `fd` into slot `index` of the fixed-file table (`None` empties the slot). The table
    /// holds its own reference to the file: a socket in it stays open after its descriptor is
    /// closed, until its slot is emptied (or the ring is closed).
    ///
    /// # Errors
    ///
    /// What the kernel says (`EINVAL` for an index past the table, `EBADF` for a bad `fd`).
    pub fn update_file(&self, index: u32, fd: Option<BorrowedFd<'_>>) -> Result<()> {
        let fds: [i32; 1] = [fd.map_or(-1, |f| f.as_raw_fd())];
        let mut up = rustix::io_uring::io_uring_files_update::default();
        up.offset = index;
        up.fds = io_uring_ptr::new(fds.as_ptr() as *mut c_void);
        // SAFETY: `up` and the one-entry array it points at are valid for the duration of the
        // call (nr_args 1); the kernel copies what it reads.
        unsafe {
            rustix::io_uring::io_uring_register(
                &self.fd,
                IoringRegisterOp::RegisterFilesUpdate,
                ptr::from_ref(&up).cast(),
                1,
            )
        }?;
        Ok(())
    }

    /// Unregister buffer group `group`. Receives still armed on it end with an error.
    pub fn unregister_buf_ring(&self, group: u16) -> Result<()> {
        let mut reg = io_uring_buf_reg::default();
        reg.bgid = group;
        // SAFETY: `reg` is a valid io_uring_buf_reg for the duration of the call.
        unsafe {
            rustix::io_uring::io_uring_register(
                &self.fd,
                IoringRegisterOp::UnregisterPbufRing,
                ptr::from_ref(&reg).cast(),
                1,
            )
        }?;
        Ok(())
    }
}

/// Iterator over available completions; see [`Uring::completions`].
pub struct Completions<'a> {
    cq: &'a CompletionQueue,
    head: u32,
    tail: u32,
}

impl Iterator for Completions<'_> {
    type Item = Cqe;

    fn next(&mut self) -> Option<Cqe> {
        while self.head != self.tail {
            let slot = (self.head & self.cq.mask) as usize;
            // SAFETY: slot <= mask, inside the CQ mapping; the CQE at `head` was published by
            // the Acquire load of the tail and is not overwritten before we move the head.
            let cqe = unsafe {
                let p = self.cq.cqes.add(slot);
                Cqe {
                    user_data: ptr::addr_of!((*p).user_data).read().u64_(),
                    res: ptr::addr_of!((*p).res).read(),
                    flags: ptr::addr_of!((*p).flags).read().bits(),
                }
            };
            self.head = self.head.wrapping_add(1);
            if cqe.user_data != INTERNAL_TIMEOUT_USER_DATA {
                return Some(cqe);
            }
        }
        None
    }
}

impl Drop for Completions<'_> {
    fn drop(&mut self) {
        // SAFETY: khead is inside the CQ mapping; Release orders our reads of the CQEs before
        // the kernel may reuse their slots.
        unsafe { (*self.cq.khead).store(self.head, Ordering::Release) }
    }
}

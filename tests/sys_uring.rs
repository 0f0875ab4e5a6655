//! sys::uring against the real kernel, on loopback.
//!
//! Where the kernel lacks a feature a test needs, the test says so on stderr and checks that
//! the feature report steers the loop to its fallback, instead of passing silently.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ringlet::sys::Error;
use ringlet::sys::uring::{Cqe, MsgBuf, Sqe, Uring, UringConfig};

fn ring() -> Uring {
    Uring::new(&UringConfig::default()).expect("io_uring setup")
}

/// Wait until `n` completions arrived (or panic after 5 s).
fn reap(ring: &mut Uring, n: usize) -> Vec<Cqe> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} completions: {out:?}",
            out.len()
        );
        ring.submit_and_wait(1, Some(Duration::from_millis(100)))
            .expect("enter");
        out.extend(ring.completions());
    }
    out
}

/// Push one SQE whose memory lives for the whole test.
fn push(ring: &mut Uring, sqe: Sqe) {
    // SAFETY: every test keeps the memory its SQEs point at alive (and the fds open) until it
    // has reaped their final completions, or until the ring is dropped first.
    unsafe { ring.push(&sqe) }.expect("push");
}

fn needs_backend_features(ring: &Uring, what: &str) -> bool {
    let f = ring.features();
    if f.supports_uring_backend() {
        return true;
    }
    eprintln!("kernel lacks {what}: checking the fallback decision instead\n{f}");
    assert!(
        !f.supports_uring_backend(),
        "Auto must fall back to epoll on this kernel"
    );
    false
}

#[test]
fn nop_round_trip() {
    let mut ring = ring();
    push(&mut ring, Sqe::nop().user_data(42));
    push(&mut ring, Sqe::nop().user_data(43));
    let cqes = reap(&mut ring, 2);
    assert_eq!(cqes.len(), 2);
    assert_eq!((cqes[0].user_data, cqes[0].res), (42, 0));
    assert_eq!((cqes[1].user_data, cqes[1].res), (43, 0));
    assert!(!cqes[0].more());
    // Each completion is yielded exactly once.
    assert_eq!(ring.completions().count(), 0);
}

#[test]
fn wait_times_out_without_error() {
    let mut ring = ring();
    let start = Instant::now();
    let submitted = ring
        .submit_and_wait(1, Some(Duration::from_millis(50)))
        .expect("enter");
    assert_eq!(submitted, 0);
    assert!(
        start.elapsed() >= Duration::from_millis(45),
        "returned after {:?}",
        start.elapsed()
    );
    assert_eq!(
        ring.completions().count(),
        0,
        "the internal timeout is never yielded"
    );
}

#[test]
fn wait_times_out_through_a_timeout_sqe_without_ext_arg() {
    let mut ring = ring();
    ring.disable_ext_arg();
    let start = Instant::now();
    ring.submit_and_wait(1, Some(Duration::from_millis(50)))
        .expect("enter");
    assert!(
        start.elapsed() >= Duration::from_millis(45),
        "returned after {:?}",
        start.elapsed()
    );
    assert_eq!(
        ring.completions().count(),
        0,
        "the internal timeout is never yielded"
    );
    // Real completions still come through alongside the internal timeout.
    push(&mut ring, Sqe::nop().user_data(5));
    ring.submit_and_wait(1, Some(Duration::from_secs(5)))
        .expect("enter");
    let c: Vec<Cqe> = ring.completions().collect();
    assert_eq!(c.iter().map(|c| c.user_data).collect::<Vec<_>>(), vec![5]);
}

#[test]
fn setup_without_single_issuer_falls_back_to_coop_taskrun() {
    let cfg = UringConfig {
        single_issuer: false,
        ..UringConfig::default()
    };
    let mut ring = Uring::new(&cfg).expect("setup");
    let f = *ring.features();
    assert!(!f.single_issuer && !f.defer_taskrun);
    eprintln!("coop_taskrun: {}", f.coop_taskrun);
    push(&mut ring, Sqe::nop().user_data(7));
    assert_eq!(reap(&mut ring, 1)[0].user_data, 7);
}

#[test]
fn features_are_reported() {
    let ring = ring();
    let f = ring.features();
    assert!(f.sq_entries >= 1 && f.sq_entries.is_power_of_two());
    assert!(f.cq_entries >= f.sq_entries);
    assert!(ring.supports_opcode(0), "NOP is always supported");
    let shown = format!("{f}");
    assert!(shown.contains("multishot recv"));
}

#[test]
fn timeout_op_completes_with_etime() {
    let mut ring = ring();
    let ts = rustix::io_uring::Timespec {
        tv_sec: 0,
        tv_nsec: 10_000_000,
    };
    push(&mut ring, Sqe::timeout(&ts, 0).user_data(9));
    let c = reap(&mut ring, 1)[0];
    assert_eq!(c.user_data, 9);
    assert_eq!(c.result(), Err(Error::TimedOut));
}

#[test]
fn submission_queue_full_submits_and_retries() {
    let cfg = UringConfig {
        sq_entries: 4,
        cq_entries: 64,
        single_issuer: true,
    };
    let mut ring = Uring::new(&cfg).expect("setup");
    assert_eq!(ring.features().sq_entries, 4);
    for i in 0..4 {
        // SAFETY: NOPs point at no memory.
        unsafe { ring.try_push(&Sqe::nop().user_data(i)) }.expect("room");
    }
    // SAFETY: as above.
    let full = unsafe { ring.try_push(&Sqe::nop().user_data(99)) };
    assert!(full.is_err(), "queue is full");
    // `push` submits the full queue and then queues the fifth: nothing is dropped.
    for i in 4..10 {
        push(&mut ring, Sqe::nop().user_data(i));
    }
    let mut seen: Vec<u64> = reap(&mut ring, 10).iter().map(|c| c.user_data).collect();
    seen.sort();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
}

fn listener() -> (TcpListener, std::net::SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

#[test]
fn multishot_accept() {
    let mut ring = ring();
    if !needs_backend_features(&ring, "multishot accept") {
        return;
    }
    let (l, addr) = listener();
    push(&mut ring, Sqe::accept_multishot(l.as_fd()).user_data(1));
    let clients: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let cqes = reap(&mut ring, 3);
    for c in &cqes {
        assert_eq!(c.user_data, 1);
        assert!(c.more(), "multishot accept stays armed: {c:?}");
        let fd = c.result().expect("accepted fd") as i32;
        // SAFETY: the kernel just installed this fd for us; nobody else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let fl = rustix::fs::fcntl_getfl(&fd).unwrap();
        assert!(
            fl.contains(rustix::fs::OFlags::NONBLOCK),
            "accepted fd is non-blocking"
        );
        let fdfl = rustix::io::fcntl_getfd(&fd).unwrap();
        assert!(
            fdfl.contains(rustix::io::FdFlags::CLOEXEC),
            "accepted fd is close-on-exec"
        );
    }
    drop(clients);
    // Cancel it: the cancel succeeds and the accept ends without F_MORE.
    push(&mut ring, Sqe::cancel(1).user_data(2));
    let cqes = reap(&mut ring, 2);
    let cancel = cqes.iter().find(|c| c.user_data == 2).unwrap();
    let accept = cqes.iter().find(|c| c.user_data == 1).unwrap();
    assert_eq!(cancel.res, 0);
    assert_eq!(accept.result(), Err(Error::Canceled));
    assert!(!accept.more());
}

/// A provided-buffer ring laid out by hand, to test sys/ on its own (the pool has its own).
#[repr(C, align(4096))]
struct TestBufRing {
    entries: [[u64; 2]; 8],
}

const BUF_SIZE: usize = 64;

struct Provided {
    ring: Box<TestBufRing>,
    bufs: Box<[[u8; BUF_SIZE]; 8]>,
    tail: u16,
}

impl Provided {
    fn new() -> Provided {
        Provided {
            ring: Box::new(TestBufRing {
                entries: [[0; 2]; 8],
            }),
            bufs: Box::new([[0; BUF_SIZE]; 8]),
            tail: 0,
        }
    }

    fn ring_ptr(&mut self) -> *mut u8 {
        self.ring.entries.as_mut_ptr().cast()
    }

    /// Publish buffer `bid`: write addr/len/bid of the entry (never its resv field, which
    /// overlaps the tail for entry 0), then store the tail with Release.
    fn publish(&mut self, bid: u16) {
        let base = self.ring_ptr();
        let slot = (self.tail & 7) as usize;
        let addr = self.bufs[bid as usize].as_mut_ptr() as u64;
        // SAFETY: slot < 8, inside the ring; offsets 0, 8 and 12 are addr, len and bid.
        unsafe {
            let e = base.add(slot * 16);
            e.cast::<u64>().write(addr);
            e.add(8).cast::<u32>().write(BUF_SIZE as u32);
            e.add(12).cast::<u16>().write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is the u16 at byte offset 14 of the page-aligned ring.
        let tail = unsafe { &*base.add(14).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }
}

#[test]
fn multishot_recv_through_provided_buffer_ring_until_dry() {
    // Declared before the ring, so it is dropped after it (also on a failed assertion).
    let mut p = Provided::new();
    let mut ring = ring();
    if !needs_backend_features(&ring, "provided buffer rings and multishot receive") {
        return;
    }
    // SAFETY: the ring and buffers are boxed (stable addresses) and outlive the ring.
    unsafe { ring.register_buf_ring(p.ring_ptr(), 8, 5) }.expect("register buf ring");
    for bid in 0..4 {
        p.publish(bid);
    }
    let (l, addr) = listener();
    let mut client = TcpStream::connect(addr).unwrap();
    let (server, _) = l.accept().unwrap();
    push(
        &mut ring,
        Sqe::recv_multishot(server.as_fd(), 5).user_data(3),
    );

    // 4 buffers of 64 bytes; 300 bytes arrive: the first 256 land, then the ring is dry.
    let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 1) as u8).collect();
    client.write_all(&data).unwrap();
    let mut got = Vec::new();
    let mut ended = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while ended.is_none() {
        assert!(
            Instant::now() < deadline,
            "receive never ran dry; got {} bytes",
            got.len()
        );
        for c in reap(&mut ring, 1) {
            assert_eq!(c.user_data, 3);
            match c.result() {
                Ok(n) => {
                    assert!(c.more(), "a successful multishot receive stays armed");
                    let bid = c.buffer_id().expect("a buffer was selected");
                    got.extend_from_slice(&p.bufs[bid as usize][..n as usize]);
                }
                Err(e) => ended = Some((e, c.more())),
            }
        }
    }
    assert_eq!(
        ended,
        Some((Error::NoBuffers, false)),
        "ENOBUFS ends the multishot receive"
    );
    assert_eq!(got, data[..got.len()], "bytes arrive in order");
    assert_eq!(
        got.len(),
        4 * BUF_SIZE,
        "every published buffer was filled before ENOBUFS"
    );

    // Give buffers back and re-arm: the rest arrives.
    for bid in 0..4 {
        p.publish(bid);
    }
    push(
        &mut ring,
        Sqe::recv_multishot(server.as_fd(), 5).user_data(4),
    );
    while got.len() < data.len() {
        for c in reap(&mut ring, 1) {
            let n = c.result().expect("receive") as usize;
            let bid = c.buffer_id().unwrap();
            got.extend_from_slice(&p.bufs[bid as usize][..n]);
        }
    }
    assert_eq!(got, data);

    // Peer closes: a zero-length completion.
    drop(client);
    let eof = reap(&mut ring, 1)[0];
    assert_eq!(eof.res, 0, "EOF is a zero-length receive");
    ring.unregister_buf_ring(5).expect("unregister");
}

#[test]
fn sendmsg_of_a_wrapped_slab() {
    let mut ring = ring();
    let (l, addr) = listener();
    let mut client = TcpStream::connect(addr).unwrap();
    let (server, _) = l.accept().unwrap();
    // A write slab whose staged bytes wrap: the tail part sits at the end, the rest at the
    // start.
    let slab: Vec<u8> = (0..=255u8).collect();
    let (tail_part, head_part) = (&slab[200..], &slab[..50]);
    let mut msg = Box::new(MsgBuf::new());
    let hdr = msg.prepare([
        (tail_part.as_ptr(), tail_part.len()),
        (head_part.as_ptr(), head_part.len()),
    ]);
    push(&mut ring, Sqe::sendmsg(server.as_fd(), hdr).user_data(11));
    let c = reap(&mut ring, 1)[0];
    assert_eq!(c.result(), Ok(106));
    let mut buf = [0u8; 106];
    client.read_exact(&mut buf).unwrap();
    let want: Vec<u8> = tail_part.iter().chain(head_part).copied().collect();
    assert_eq!(buf.to_vec(), want);

    // A plain send too.
    push(
        &mut ring,
        Sqe::send(server.as_fd(), slab.as_ptr(), 10).user_data(12),
    );
    assert_eq!(reap(&mut ring, 1)[0].result(), Ok(10));
    let mut buf = [0u8; 10];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, &slab[..10]);
}

#[test]
fn send_to_a_closed_peer_is_an_error_not_a_signal() {
    let mut ring = ring();
    let (l, addr) = listener();
    let client = TcpStream::connect(addr).unwrap();
    let (server, _) = l.accept().unwrap();
    // Reset the connection: SO_LINGER 0 then close.
    rustix::net::sockopt::set_socket_linger(&client, Some(Duration::ZERO)).unwrap();
    drop(client);
    thread::sleep(Duration::from_millis(20));
    let data = [1u8; 1024];
    let mut result = Ok(0);
    for _ in 0..10 {
        push(
            &mut ring,
            Sqe::send(server.as_fd(), data.as_ptr(), 1024).user_data(13),
        );
        result = reap(&mut ring, 1)[0].result();
        if result.is_err() {
            break;
        }
    }
    let e = result.expect_err("sending to a reset peer fails");
    assert!(
        e.is_disconnect(),
        "expected reset or broken pipe, got {e:?}"
    );
}

#[test]
fn eventfd_read_wakes_a_waiting_ring_from_another_thread() {
    let mut ring = ring();
    let efd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
    let mut counter = Box::new(0u64);
    push(
        &mut ring,
        Sqe::read(efd.as_fd(), (&mut *counter as *mut u64).cast(), 8).user_data(21),
    );
    let raw = efd.as_raw_fd();
    let waker = thread::spawn(move || {
        thread::sleep(Duration::from_millis(30));
        // SAFETY: the eventfd outlives this thread (joined below before it is dropped).
        let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(raw) };
        rustix::io::write(fd, &1u64.to_ne_bytes()).unwrap();
    });
    let start = Instant::now();
    ring.submit_and_wait(1, Some(Duration::from_secs(5)))
        .unwrap();
    let c: Vec<Cqe> = ring.completions().collect();
    waker.join().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "woken by the write, not the timeout"
    );
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].user_data, c[0].result()), (21, Ok(8)));
    assert_eq!(*counter, 1);
}

#[test]
fn msg_ring_wakes_another_threads_ring() {
    let mut ring = ring();
    if !ring.features().msg_ring {
        eprintln!("kernel lacks MSG_RING; the eventfd wake is the general path anyway");
        return;
    }
    let target = ring.fd().as_raw_fd();
    let sender = thread::spawn(move || {
        let mut other = Uring::new(&UringConfig::default()).unwrap();
        thread::sleep(Duration::from_millis(30));
        // SAFETY: the target ring fd stays open until this thread is joined.
        let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(target) };
        push(&mut other, Sqe::msg_ring(fd, 0xfeed, 77).user_data(1));
        let c = reap(&mut other, 1)[0];
        assert_eq!(c.result(), Ok(0));
    });
    let start = Instant::now();
    ring.submit_and_wait(1, Some(Duration::from_secs(5)))
        .unwrap();
    let c: Vec<Cqe> = ring.completions().collect();
    sender.join().unwrap();
    assert!(start.elapsed() < Duration::from_secs(4));
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].user_data, c[0].res), (0xfeed, 77));
}

#[test]
fn close_op_closes_the_fd() {
    let mut ring = ring();
    let (l, addr) = listener();
    let mut client = TcpStream::connect(addr).unwrap();
    let (server, _) = l.accept().unwrap();
    let fd = std::os::fd::IntoRawFd::into_raw_fd(server);
    push(&mut ring, Sqe::close(fd).user_data(31));
    assert_eq!(reap(&mut ring, 1)[0].result(), Ok(0));
    let mut b = [0u8; 1];
    assert_eq!(
        client.read(&mut b).unwrap(),
        0,
        "peer sees EOF after the async close"
    );
}

#[test]
fn shutdown_write_gives_the_peer_eof() {
    let mut ring = ring();
    let (l, addr) = listener();
    let mut client = TcpStream::connect(addr).unwrap();
    let (server, _) = l.accept().unwrap();
    push(&mut ring, Sqe::shutdown(server.as_fd(), 1).user_data(41));
    assert_eq!(reap(&mut ring, 1)[0].result(), Ok(0));
    let mut b = [0u8; 1];
    assert_eq!(client.read(&mut b).unwrap(), 0);
    // The other direction still works.
    client.write_all(b"x").unwrap();
    let mut s = &server;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"x");
}

#[test]
fn pool_and_ring_together_leases_return_to_the_kernel() {
    use ringlet::pool::{BufPool, BufPoolConfig, BufPoolStorage, RecvTier};
    // Declared before the ring so the storage outlives it.
    let storage: &'static mut BufPoolStorage<4, 32> = Box::leak(Box::new(BufPoolStorage::new()));
    let pool = BufPool::new(
        storage,
        BufPoolConfig {
            recv_tier: RecvTier::ProvidedRing,
            user_reserve: 1,
        },
    )
    .expect("pool");
    let mut ring = ring();
    if !needs_backend_features(&ring, "provided buffer rings and multishot receive") {
        return;
    }
    assert_eq!(pool.recv_available(), 3);
    // SAFETY: the storage is leaked ('static) and the pool outlives every completion we reap.
    unsafe { ring.register_buf_ring(pool.ring_addr().cast(), pool.ring_entries(), 1) }
        .expect("register");
    let (l, addr) = listener();
    let mut client = TcpStream::connect(addr).unwrap();
    let (server, _) = l.accept().unwrap();
    push(
        &mut ring,
        Sqe::recv_multishot(server.as_fd(), 1).user_data(8),
    );

    // 5 rounds of 32 bytes through 3 ring buffers: only possible if each dropped lease is
    // published back to the ring.
    for round in 0..5u8 {
        let msg = [round; 32];
        client.write_all(&msg).unwrap();
        let mut got = Vec::new();
        while got.len() < 32 {
            for c in reap(&mut ring, 1) {
                assert!(c.more(), "round {round}: receive ended: {c:?}");
                let n = c.result().unwrap();
                let bid = c.buffer_id().unwrap();
                // SAFETY: the id comes from this completion, once, for the group the pool's
                // ring is registered as.
                let lease = unsafe { pool.lease_received(bid, n) }.expect("lease");
                got.extend_from_slice(lease.as_slice());
                // The lease drops here: the buffer goes back to the ring (the user tier is
                // already at its reserve).
            }
        }
        assert_eq!(got, msg);
        assert_eq!(pool.leased(), 0);
        assert_eq!(pool.recv_available(), 3, "every buffer is back in the ring");
    }
    push(&mut ring, Sqe::cancel(8).user_data(9));
    let done = reap(&mut ring, 2);
    assert!(done.iter().any(|c| c.user_data == 8 && !c.more()));
    ring.unregister_buf_ring(1).expect("unregister");
}

//! Prints what this kernel's io_uring supports and which backend `Auto` would pick, and why.
//!
//! `cargo run --example probe`

use std::io::Write;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use ringlet::sys::uring::{Sqe, Uring, UringConfig};

/// One page: a provided-buffer ring of 4 entries, for the functional check.
#[repr(C, align(4096))]
struct RingPage([u8; 4096]);

fn main() {
    let mut ring = match Uring::new(&UringConfig::default()) {
        Ok(r) => r,
        Err(e) => {
            println!("io_uring: unavailable ({e})");
            println!("backend Auto would use: epoll (io_uring setup failed)");
            return;
        }
    };
    println!("io_uring features found:\n{}", ring.features());
    let f = *ring.features();

    // Functional check of the receive path the io_uring backend relies on: register a
    // provided-buffer ring, arm a multishot receive on a socket pair, send, and look at the
    // completion.
    let mut page = Box::new(RingPage([0; 4096]));
    let mut buf = Box::new([0u8; 64]);
    let ring_ptr = page.0.as_mut_ptr();
    // SAFETY: the page is page-aligned, boxed and outlives the ring (dropped after it below).
    let reg = unsafe { ring.register_buf_ring(ring_ptr, 4, 0) };
    let functional = match reg {
        Err(e) => {
            println!("check: provided-buffer ring registration failed: {e}");
            false
        }
        Ok(()) => {
            // SAFETY: entry 0 at the start of the page: addr, len, bid; then the tail at 14.
            unsafe {
                ring_ptr.cast::<u64>().write(buf.as_mut_ptr() as u64);
                ring_ptr.add(8).cast::<u32>().write(64);
                ring_ptr.add(12).cast::<u16>().write(0);
                (*ring_ptr.add(14).cast::<AtomicU16>()).store(1, Ordering::Release);
            }
            let (a, b) = rustix::net::socketpair(
                rustix::net::AddressFamily::UNIX,
                rustix::net::SocketType::STREAM,
                rustix::net::SocketFlags::CLOEXEC,
                None,
            )
            .expect("socketpair");
            // SAFETY: `a` stays open and the buffer ring stays registered until the
            // completion is reaped below (or the ring is dropped first).
            unsafe { ring.push(&Sqe::recv_multishot(a.as_fd(), 0).user_data(1)) }.expect("push");
            rustix::io::write(&b, b"probe").expect("write");
            let _ = ring.submit_and_wait(1, Some(Duration::from_secs(2)));
            let c = ring.completions().next();
            match c {
                Some(c) if c.res == 5 && c.more() && c.buffer_id() == Some(0) => {
                    println!("check: multishot receive through a provided-buffer ring works");
                    true
                }
                other => {
                    println!("check: multishot receive did not behave as needed: {other:?}");
                    false
                }
            }
        }
    };
    let backend = if f.supports_uring_backend() && functional {
        "io_uring".to_string()
    } else {
        let mut why = Vec::new();
        if !f.provided_buf_ring {
            why.push("no provided-buffer rings (Linux 5.19+)");
        }
        if !f.multishot_accept {
            why.push("no multishot accept (5.19+)");
        }
        if !f.multishot_recv {
            why.push("no multishot receive (6.0+)");
        }
        if !functional {
            why.push("functional check failed");
        }
        format!("epoll ({})", why.join(", "))
    };
    println!("backend Auto would use: {backend}");
    drop(ring);
    drop((page, buf));
    std::io::stdout().flush().ok();
}

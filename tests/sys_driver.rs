//! The I/O driver on its own: slot lifetimes against the real kernel.

mod reactor_util;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use reactor_util::leak;
use ringlet::pool::{BufPoolConfig, RecvTier};
use ringlet::sys::driver::{Driver, IoEvent, LoopStorage};
use ringlet::sys::socket::TcpStream as RawStream;
use ringlet::sys::uring::{Uring, UringConfig};

type Storage = LoopStorage<(), (), 4, 16, 512, 1024, 4>;

fn driver(uring: bool) -> Driver<'static> {
    let ring = uring.then(|| Uring::new(&UringConfig::default()).expect("ring"));
    let tier = if uring {
        RecvTier::ProvidedRing
    } else {
        RecvTier::FreeList
    };
    let parts = leak::<Storage>()
        .split(
            BufPoolConfig {
                recv_tier: tier,
                user_reserve: 0,
            },
            0,
        )
        .unwrap();
    Driver::new(ring, parts.pool, parts.slabs, parts.driver, true, 8).expect("driver")
}

/// A connected pair: the server side as a raw stream for the driver, the client as std.
fn pair() -> (RawStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    s.set_nonblocking(true).unwrap();
    (RawStream::from_fd(OwnedFd::from(s)), c)
}

/// Events until `done` says stop (bounded: 5 s).
fn events_until(
    d: &mut Driver<'static>,
    mut done: impl FnMut(&IoEvent<'static>) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "no end event; saw {seen:?}");
        d.wait(Some(Duration::from_millis(50))).unwrap();
        while let Some(ev) = d.next_event() {
            seen.push(format!("{ev:?}").split(' ').next().unwrap().to_string());
            if done(&ev) {
                return seen;
            }
        }
    }
}

#[test]
fn a_slot_is_released_only_after_its_last_completion() {
    for uring in [true, false] {
        let mut d = driver(uring);
        let (server, mut client) = pair();
        d.open(0, 7, server).unwrap();
        d.arm_recv(0).unwrap();
        client.write_all(b"hello").unwrap();
        let seen = events_until(&mut d, |ev| matches!(ev, IoEvent::Data { slot: 0, .. }));
        assert_eq!(seen.last().map(String::as_str), Some("Data"));
        // Close with the multishot receive still armed.
        d.close(0).unwrap();
        if uring {
            // The cancel and the receive's final completion have not been reaped yet: the
            // slot is still busy and must not be reused.
            assert!(
                d.is_busy(0),
                "io_uring: slot released before its receive completed"
            );
            assert!(
                d.open(0, 8, pair().0).is_err(),
                "a busy slot cannot be reopened"
            );
        }
        let seen = events_until(&mut d, |ev| matches!(ev, IoEvent::Released { slot: 0 }));
        assert!(!d.is_busy(0), "released");
        assert_eq!(
            seen.iter().filter(|e| *e == "Data").count(),
            0,
            "no bytes after the close"
        );
        // The slot can be used again, with a new generation.
        let (server, _client2) = pair();
        d.open(0, 8, server).unwrap();
        assert_eq!(d.generation(0), Some(8));
        assert_eq!(d.pool().leased(), 0, "every buffer back in the pool");
    }
}

#[test]
fn quiesce_ends_every_operation_and_closes_every_socket() {
    use std::io::{ErrorKind, Read};
    for uring in [true, false] {
        let mut d = driver(uring);
        let l = ringlet::sys::socket::TcpListener::bind(
            "127.0.0.1:0".parse().unwrap(),
            ringlet::sys::socket::ListenOptions::DEFAULT,
        )
        .unwrap();
        let li = d.add_listener(l).unwrap().unwrap();
        let laddr = d.listener_addr(li).unwrap();
        let mut clients = Vec::new();
        for slot in 0..3 {
            let (server, client) = pair();
            d.open(slot, 1, server).unwrap();
            d.arm_recv(slot).unwrap();
            clients.push(client);
        }
        // One receive has delivered data (its lease is dropped at once), one has data waiting.
        clients[0].write_all(b"first").unwrap();
        events_until(&mut d, |ev| matches!(ev, IoEvent::Data { slot: 0, .. }));
        clients[1].write_all(b"never read").unwrap();
        // Something staged and flushed, not yet submitted.
        d.slab(2).unwrap().append(b"staged").unwrap();
        d.flush(2);
        d.submit_flushes().unwrap();
        d.quiesce().expect("quiesce");
        for slot in 0..4 {
            assert!(!d.is_busy(slot), "slot {slot} still busy (uring: {uring})");
        }
        assert_eq!(d.pool().leased(), 0, "every buffer back in the pool");
        assert!(!d.has_listeners());
        // Every socket is really closed: nothing in flight holds a reference to it.
        for c in &mut clients {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 64];
            loop {
                match c.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => continue, // the staged bytes may have gone out first
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
                    Err(e) => panic!("client (uring: {uring}): {e}"),
                }
            }
        }
        match TcpStream::connect(laddr) {
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused),
            Ok(_) => panic!("listener still open after quiesce (uring: {uring})"),
        }
        // Again: nothing left to do.
        d.quiesce().expect("quiesce twice");
    }
}

/// io_uring: a connection's socket sits in the ring's fixed-file table while it is open, and
/// leaves it when the slot is released, so the close really closes it (the peer sees EOF).
#[test]
fn fixed_file_entry_is_dropped_on_release() {
    use std::io::Read;
    let mut d = driver(true);
    let (server, mut client) = pair();
    d.open(0, 1, server).unwrap();
    assert_eq!(
        d.kernel_calls().registers,
        1,
        "the socket went into the table"
    );
    d.arm_recv(0).unwrap();
    d.slab(0)
        .unwrap()
        .append(b"through the fixed file")
        .unwrap();
    d.flush(0);
    d.submit_flushes().unwrap();
    client.write_all(b"ping").unwrap();
    events_until(&mut d, |ev| matches!(ev, IoEvent::Data { slot: 0, .. }));
    let mut buf = [0u8; 22];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"through the fixed file");
    d.close(0).unwrap();
    events_until(&mut d, |ev| matches!(ev, IoEvent::Released { slot: 0 }));
    assert_eq!(d.kernel_calls().registers, 2, "and left it on release");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(
        client.read(&mut buf).unwrap(),
        0,
        "EOF: the socket is closed"
    );
}

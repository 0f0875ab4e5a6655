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
    driver_in(leak::<Storage>(), uring, 0)
}

/// A driver over `storage`, with a ring window of `window` buffers (io_uring; 0: all).
fn driver_in<const CONNS: usize, const BUFS: usize, const SIZE: usize, const SLAB: usize>(
    storage: &'static mut LoopStorage<(), (), CONNS, BUFS, SIZE, SLAB, 4>,
    uring: bool,
    window: u16,
) -> Driver<'static> {
    let ring = uring.then(|| Uring::new(&UringConfig::default()).expect("ring"));
    let tier = if uring {
        RecvTier::ProvidedRing
    } else {
        RecvTier::FreeList
    };
    let parts = storage
        .split(
            BufPoolConfig {
                recv_tier: tier,
                user_reserve: 0,
            },
            window,
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

/// io_uring: 32 connections each receive one message per round, all in the same round, against
/// a ring window of 2 buffers. Every connection has received before from the second round on,
/// so the receives that find the ring dry are steady demand, not a connection storm: the window
/// doubles until fewer than a quarter of the receives find it dry (the rule's threshold; how
/// many a window leaves dry also depends on how many receives the kernel completes per system
/// call). Nothing is lost either way, and epoll (no ring) delivers the same bytes.
#[test]
fn steady_demand_widens_the_ring_window() {
    const CONNS: usize = 32;
    const ROUNDS: usize = 24;
    for uring in [true, false] {
        let mut d = driver_in(
            leak::<LoopStorage<(), (), CONNS, 128, 512, 1024, 4>>(),
            uring,
            2,
        );
        let mut clients = Vec::new();
        for slot in 0..CONNS as u32 {
            let (server, client) = pair();
            d.open(slot, 1, server).unwrap();
            d.arm_recv(slot).unwrap();
            clients.push(client);
        }
        let mut got = vec![Vec::new(); CONNS];
        let mut pauses_before_last_rounds = 0;
        for round in 0..ROUNDS {
            if round == ROUNDS - 4 {
                pauses_before_last_rounds = d.starvation_pauses();
            }
            // Every message is in its socket before the next wait, so a round's receives
            // complete together (in as few system calls as the kernel runs them in).
            for (i, c) in clients.iter_mut().enumerate() {
                c.write_all(&[round as u8, i as u8, 0xA5]).unwrap();
            }
            let want = 3 * (round + 1);
            let deadline = Instant::now() + Duration::from_secs(5);
            while got.iter().any(|g| g.len() < want) {
                assert!(
                    Instant::now() < deadline,
                    "round {round} stuck (uring: {uring})"
                );
                d.wait(Some(Duration::from_millis(50))).unwrap();
                while let Some(ev) = d.next_event() {
                    if let IoEvent::Data { slot, lease } = ev {
                        got[slot as usize].extend_from_slice(lease.as_slice());
                    }
                }
                // As the reactor does after each round: starved receives get buffers again.
                d.rearm_starved(CONNS, 1).unwrap();
            }
        }
        for (i, g) in got.iter().enumerate() {
            let want: Vec<u8> = (0..ROUNDS).flat_map(|r| [r as u8, i as u8, 0xA5]).collect();
            assert_eq!(
                *g, want,
                "connection {i}: every byte, in order (uring: {uring})"
            );
        }
        if uring {
            // One message per connection per round: only the steady-demand rule widens here.
            let window = d.pool().ring_window();
            assert!(window >= 8, "window {window}: 2 -> 8 or more");
            assert_eq!(1 << d.ring_widenings(), window / 2, "each widening doubles");
            let dry = d.starvation_pauses() - pauses_before_last_rounds;
            assert!(
                dry * 4 < 4 * CONNS as u64,
                "the last 4 rounds: {dry} of {} receives found the ring dry",
                4 * CONNS
            );
        } else {
            assert_eq!(d.ring_widenings(), 0);
        }
    }
}

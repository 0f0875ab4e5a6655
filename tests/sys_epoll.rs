//! epoll readiness against the real kernel: eventfd, sockets, modify/delete, cross-thread
//! wake, timeouts and EINTR.

mod util;

use ringlet::sys::Error;
use ringlet::sys::epoll::{Epoll, Events, Interest};
use ringlet::sys::eventfd::EventFd;
use ringlet::sys::socket::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use util::*;

const SHORT: Duration = Duration::from_millis(50);

#[test]
fn eventfd_level_triggered() {
    let ep = Epoll::new().unwrap();
    let ev = EventFd::new().unwrap();
    ep.add(&ev, 1, Interest::READABLE).unwrap();

    expect_no_events(&ep, Duration::ZERO);
    ev.notify().unwrap();
    let e = expect_event(&ep, 1, |e| e.is_readable());
    assert!(!e.is_writable() && !e.is_error() && !e.is_hup() && !e.is_read_closed());
    // Level-triggered: still reported while the counter is non-zero.
    expect_event(&ep, 1, |e| e.is_readable());
    assert_eq!(ev.drain().unwrap(), 1);
    assert_eq!(ev.drain().unwrap(), 0);
    expect_no_events(&ep, SHORT);
}

#[test]
fn eventfd_edge_triggered_reports_only_new_edges() {
    let ep = Epoll::new().unwrap();
    let ev = EventFd::new().unwrap();
    ep.add(&ev, 2, Interest::READABLE.edge_triggered()).unwrap();

    ev.notify().unwrap();
    expect_event(&ep, 2, |e| e.is_readable());
    // Not drained, but no new edge: nothing to report.
    expect_no_events(&ep, SHORT);
    // A new notify is a new edge, even though the counter never went back to zero.
    ev.notify().unwrap();
    expect_event(&ep, 2, |e| e.is_readable());
    expect_no_events(&ep, Duration::ZERO);
    assert_eq!(ev.drain().unwrap(), 2);
    expect_no_events(&ep, Duration::ZERO);
}

#[test]
fn socket_writable_then_readable() {
    let (client, server) = pair_v4();
    let ep = Epoll::new().unwrap();
    ep.add(&server, 10, Interest::READABLE | Interest::WRITABLE)
        .unwrap();

    let e = expect_event(&ep, 10, |e| e.is_writable());
    assert!(!e.is_readable(), "nothing was sent yet: {e:?}");
    assert_would_block(server.read(&mut [0u8; 16]));

    write_all(&client, b"hello");
    let e = expect_event(&ep, 10, |e| e.is_readable());
    assert!(e.is_writable() && !e.is_read_closed() && !e.is_hup() && !e.is_error());
    assert_eq!(read_exact(&server, 5), b"hello");
}

#[test]
fn socket_read_closed_only_when_requested() {
    let (client, server) = pair_v4();
    let (client2, server2) = pair_v4();
    let ep = Epoll::new().unwrap();
    ep.add(&server, 1, Interest::READABLE.read_closed())
        .unwrap();
    ep.add(&server2, 2, Interest::READABLE).unwrap();

    client.shutdown(Shutdown::Write).unwrap();
    client2.shutdown(Shutdown::Write).unwrap();

    let e = expect_event(&ep, 1, |e| e.is_read_closed());
    assert!(e.is_readable(), "EOF is readable too: {e:?}");
    assert!(!e.is_hup(), "only one direction is closed: {e:?}");
    // Without READ_CLOSED the same state is only "readable".
    let e = expect_event(&ep, 2, |e| e.is_readable());
    assert!(!e.is_read_closed(), "RDHUP was not requested: {e:?}");

    assert_eq!(server.read(&mut [0u8; 8]), Ok(0));
    assert_eq!(server2.read(&mut [0u8; 8]), Ok(0));
}

#[test]
fn socket_reset_is_hup_and_error() {
    let (client, server) = pair_v4();
    let ep = Epoll::new().unwrap();
    // Readable only: ERR and HUP are reported whatever the interest, and HUP alone makes
    // the event read-closed (RDHUP was not requested).
    ep.add(&server, 3, Interest::READABLE).unwrap();
    // SO_LINGER 0 turns close into a reset.
    rustix::net::sockopt::set_socket_linger(&client, Some(Duration::ZERO)).unwrap();
    drop(client);

    let e = expect_event(&ep, 3, |e| e.is_hup());
    assert!(e.is_error() && e.is_read_closed(), "{e:?}");
    assert_eq!(server.read(&mut [0u8; 8]), Err(Error::ConnectionReset));
}

#[test]
fn modify_changes_token_and_interest() {
    let (client, server) = pair_v4();
    let ep = Epoll::new().unwrap();
    ep.add(&server, 1, Interest::READABLE).unwrap();
    expect_no_events(&ep, Duration::ZERO);

    // Writable interest under a new token: reported at once, under the new token only.
    ep.modify(&server, 2, Interest::WRITABLE).unwrap();
    let mut storage = [Events::EMPTY; 8];
    let mut events = Events::new(&mut storage);
    assert_eq!(ep.wait(&mut events, Some(util::TIMEOUT)), Ok(1));
    let e = events.get(0).unwrap();
    assert_eq!(e.token(), 2);
    assert!(e.is_writable() && !e.is_readable());

    // Back to readable only: data makes it readable, and writability is not reported.
    ep.modify(&server, 3, Interest::READABLE).unwrap();
    expect_no_events(&ep, Duration::ZERO);
    write_all(&client, b"x");
    let e = expect_event(&ep, 3, |e| e.is_readable());
    assert!(!e.is_writable());

    // Registering twice is an error; so is modifying an unregistered descriptor.
    assert_eq!(
        ep.add(&server, 4, Interest::READABLE),
        Err(Error::AlreadyExists)
    );
    assert_eq!(
        ep.modify(&client, 5, Interest::READABLE),
        Err(Error::NotFound)
    );
}

#[test]
fn delete_stops_events() {
    let (client, server) = pair_v4();
    let ep = Epoll::new().unwrap();
    ep.add(&server, 1, Interest::READABLE).unwrap();
    write_all(&client, b"data");
    expect_event(&ep, 1, |e| e.is_readable());

    ep.delete(&server).unwrap();
    // Still readable (nothing was read), but no longer watched.
    expect_no_events(&ep, SHORT);
    assert_eq!(ep.delete(&server), Err(Error::NotFound));
    assert_eq!(read_exact(&server, 4), b"data");
}

#[test]
fn events_capacity_limits_one_wait() {
    let ep = Epoll::new().unwrap();
    let fds: Vec<EventFd> = (0..5).map(|_| EventFd::new().unwrap()).collect();
    for (i, fd) in fds.iter().enumerate() {
        ep.add(fd, i as u64, Interest::READABLE).unwrap();
        fd.notify().unwrap();
    }
    let mut storage = [Events::EMPTY; 3];
    let mut events = Events::new(&mut storage);
    assert_eq!(ep.wait(&mut events, Some(util::TIMEOUT)), Ok(3));
    assert_eq!(events.len(), 3);
    assert_eq!(events.iter().count(), 3);
    assert!(events.get(3).is_none());
    let mut tokens: Vec<u64> = events.iter().map(|e| e.token()).collect();
    for t in &tokens {
        fds[*t as usize].drain().unwrap();
    }
    // The other two are still pending.
    assert_eq!(ep.wait(&mut events, Some(util::TIMEOUT)), Ok(2));
    tokens.extend(events.iter().map(|e| e.token()));
    tokens.sort_unstable();
    assert_eq!(tokens, [0, 1, 2, 3, 4]);
    events.clear();
    assert!(events.is_empty());
}

#[test]
fn notify_from_another_thread_wakes_a_blocked_wait() {
    let ep = Epoll::new().unwrap();
    let ev = EventFd::new().unwrap();
    ep.add(&ev, 42, Interest::READABLE).unwrap();
    let mut storage = [Events::EMPTY; 4];
    let mut events = Events::new(&mut storage);

    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            ev.notify().unwrap();
        });
        let start = Instant::now();
        // No timeout: only the notify can end this wait.
        let n = ep.wait(&mut events, None).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(90));
        assert_eq!(n, 1);
    });
    let e = events.get(0).unwrap();
    assert_eq!(e.token(), 42);
    assert!(e.is_readable());
    assert_eq!(ev.drain().unwrap(), 1);
}

#[test]
fn wait_timeout_returns_zero_events() {
    let ep = Epoll::new().unwrap();
    let ev = EventFd::new().unwrap();
    ep.add(&ev, 1, Interest::READABLE).unwrap();
    let mut storage = [Events::EMPTY; 4];
    let mut events = Events::new(&mut storage);

    let start = Instant::now();
    assert_eq!(ep.wait(&mut events, Some(Duration::from_millis(60))), Ok(0));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(60),
        "returned early: {waited:?}"
    );
    assert!(events.is_empty());

    // A sub-millisecond timeout is rounded up, not down to a busy poll.
    let start = Instant::now();
    assert_eq!(ep.wait(&mut events, Some(Duration::from_micros(10))), Ok(0));
    assert!(start.elapsed() >= Duration::from_millis(1));
}

extern "C" fn ignore_signal(_: libc::c_int) {}

#[test]
fn signal_during_wait_is_a_wake_with_no_events() {
    // A handler (not SIG_IGN) so the signal interrupts the wait; SA_RESTART would not
    // matter: epoll_wait is never restarted.
    // SAFETY: installing a handler that does nothing is async-signal-safe; SIGUSR1 is used
    // by no other test in this binary.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ignore_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    let ep = Epoll::new().unwrap();
    let ev = EventFd::new().unwrap();
    ep.add(&ev, 1, Interest::READABLE).unwrap();
    let done = AtomicBool::new(false);
    let waiter_tid = AtomicU64::new(0);

    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let mut storage = [Events::EMPTY; 4];
            let mut events = Events::new(&mut storage);
            // SAFETY: pthread_self has no preconditions.
            waiter_tid.store(unsafe { libc::pthread_self() } as u64, Ordering::SeqCst);
            let start = Instant::now();
            let r = ep.wait(&mut events, Some(util::TIMEOUT));
            let waited = start.elapsed();
            done.store(true, Ordering::SeqCst);
            (r, events.len(), waited)
        });
        let tid = loop {
            match waiter_tid.load(Ordering::SeqCst) {
                0 => std::thread::yield_now(),
                tid => break tid as libc::pthread_t,
            }
        };
        // Keep signalling until the waiter returns: a signal that lands before the thread
        // enters epoll_wait is handled and lost, the next one interrupts the wait.
        while !done.load(Ordering::SeqCst) {
            // SAFETY: `tid` names a thread that is not joined yet (pthread_kill on one that
            // has already exited returns ESRCH); the signal has a handler installed above.
            unsafe { libc::pthread_kill(tid, libc::SIGUSR1) };
            std::thread::sleep(Duration::from_millis(20));
        }
        let (r, len, waited) = waiter.join().unwrap();
        assert_eq!(r, Ok(0), "EINTR must be a wake with no events");
        assert_eq!(len, 0);
        assert!(
            waited < util::TIMEOUT,
            "the signal did not interrupt the wait"
        );
    });
    // The epoll is still usable.
    ev.notify().unwrap();
    expect_event(&ep, 1, |e| e.is_readable());
}

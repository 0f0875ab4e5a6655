//! TCP sockets against the real kernel on loopback, IPv4 and IPv6.

mod util;

use ringlet::sys::Error;
use ringlet::sys::epoll::{Epoll, Interest};
use ringlet::sys::socket::{
    Connect, ListenOptions, Shutdown, SockAddrBuf, TcpListener, TcpStream, raise_nofile_limit,
};
use rustix::fd::{FromRawFd, OwnedFd};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use util::*;

/// Bind, connect, accept and talk both ways; check every address the API reports.
fn round_trip(bind: SocketAddr) {
    let Some(listener) = listener_or_skip_v6(bind) else {
        return;
    };
    let laddr = listener.local_addr().unwrap();
    assert_eq!(laddr.ip(), bind.ip());
    assert_ne!(laddr.port(), 0, "port 0 must be replaced by the real port");

    let (client, state) = TcpStream::connect(laddr).unwrap();
    finish_connect(&client, state).unwrap();
    let (server, peer) = retry("accept", || listener.accept()).unwrap();

    assert_eq!(peer, client.local_addr().unwrap());
    assert_eq!(server.peer_addr().unwrap(), peer);
    assert_eq!(server.local_addr().unwrap(), laddr);
    assert_eq!(client.peer_addr().unwrap(), laddr);
    assert_eq!(peer.is_ipv6(), bind.is_ipv6());

    write_all(&client, b"ping");
    assert_eq!(read_exact(&server, 4), b"ping");
    write_all(&server, b"pong!");
    assert_eq!(read_exact(&client, 5), b"pong!");
}

#[test]
fn bind_connect_accept_v4() {
    round_trip(any_port_v4());
}

#[test]
fn bind_connect_accept_v6() {
    round_trip(any_port_v6());
}

#[test]
fn accept_would_block_when_nothing_pending() {
    let l = TcpListener::bind(any_port_v4(), ListenOptions::default()).unwrap();
    assert_would_block(l.accept());
    // And after one connection was taken, again.
    let _pair = pair_on(&l);
    assert_would_block(l.accept());
}

#[test]
fn listener_is_readable_when_a_connection_is_pending() {
    let l = TcpListener::bind(any_port_v4(), ListenOptions::default()).unwrap();
    let ep = Epoll::new().unwrap();
    ep.add(&l, 7, Interest::READABLE).unwrap();
    expect_no_events(&ep, Duration::from_millis(20));
    let (client, state) = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    finish_connect(&client, state).unwrap();
    expect_event(&ep, 7, |e| e.is_readable());
    let (_server, peer) = l.accept().expect("readable listener must accept");
    assert_eq!(peer, client.local_addr().unwrap());
}

#[test]
fn same_port_needs_reuse_port_on_both() {
    let opts = ListenOptions {
        reuse_port: true,
        ..ListenOptions::default()
    };
    let a = TcpListener::bind(any_port_v4(), opts).unwrap();
    let addr = a.local_addr().unwrap();
    let b = TcpListener::bind(addr, opts).expect("second SO_REUSEPORT listener");
    assert_eq!(b.local_addr().unwrap(), addr);
    // reuse_addr alone does not allow a second live listener.
    assert_eq!(
        TcpListener::bind(addr, ListenOptions::default()).map(|_| ()),
        Err(Error::AddrInUse)
    );

    // The kernel spreads connections over both listeners (by hash of the 4-tuple; with 64
    // connections the chance that one listener gets none is 2^-63).
    const N: usize = 64;
    let mut clients = Vec::new();
    for _ in 0..N {
        let (c, state) = TcpStream::connect(addr).unwrap();
        finish_connect(&c, state).unwrap();
        clients.push(c);
    }
    let mut accepted = [0usize; 2];
    let mut servers = Vec::new();
    let start = std::time::Instant::now();
    while accepted[0] + accepted[1] < N {
        assert!(
            start.elapsed() < TIMEOUT,
            "accepted only {accepted:?} of {N}"
        );
        for (i, l) in [&a, &b].into_iter().enumerate() {
            match l.accept() {
                Ok((s, _)) => {
                    accepted[i] += 1;
                    servers.push(s);
                }
                Err(Error::WouldBlock) => {}
                Err(e) => panic!("accept: {e:?}"),
            }
        }
    }
    assert!(accepted[0] > 0 && accepted[1] > 0, "{accepted:?}");
}

#[test]
fn without_reuse_addr_still_binds_a_fresh_port() {
    let opts = ListenOptions {
        reuse_addr: false,
        backlog: 1,
        ..ListenOptions::default()
    };
    let l = TcpListener::bind(any_port_v4(), opts).unwrap();
    let _pair = pair_on(&l);
}

#[test]
fn nonblocking_connect_completes() {
    let l = TcpListener::bind(any_port_v4(), ListenOptions::default()).unwrap();
    let (client, state) = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    if state == Connect::InProgress {
        let ep = Epoll::new().unwrap();
        ep.add(&client, 1, Interest::WRITABLE).unwrap();
        let e = expect_event(&ep, 1, |e| e.is_writable());
        assert!(!e.is_error() && !e.is_hup(), "{e:?}");
    }
    assert_eq!(client.take_error(), Ok(None));
    assert_eq!(client.peer_addr().unwrap(), l.local_addr().unwrap());
}

#[test]
fn connect_to_closed_port_is_refused() {
    // A socket bound to a port but not listening: connections to it are refused, and the
    // port stays ours, so no parallel test can start listening on it.
    let holder = TcpStream::socket_for(any_port_v4()).unwrap();
    rustix::net::bind(&holder, &any_port_v4()).unwrap();
    let closed = holder.local_addr().unwrap();

    match TcpStream::connect(closed) {
        Err(e) => assert_eq!(e, Error::ConnectionRefused),
        Ok((client, Connect::Connected)) => panic!("connected to a closed port: {client:?}"),
        Ok((client, Connect::InProgress)) => {
            let ep = Epoll::new().unwrap();
            ep.add(&client, 1, Interest::WRITABLE).unwrap();
            let e = expect_event(&ep, 1, |e| e.is_error() || e.is_hup() || e.is_writable());
            assert!(e.is_error(), "a refused connect reports EPOLLERR: {e:?}");
            assert_eq!(client.take_error(), Ok(Some(Error::ConnectionRefused)));
            // SO_ERROR is cleared by reading it.
            assert_eq!(client.take_error(), Ok(None));
            assert_eq!(client.peer_addr(), Err(Error::NotConnected));
            assert_eq!(finish_connect(&client, Connect::InProgress), Ok(()));
        }
    }
}

#[test]
fn nodelay_set_and_read_back() {
    let (client, server) = pair_v4();
    assert_eq!(client.nodelay(), Ok(false), "Linux default is Nagle on");
    client.set_nodelay(true).unwrap();
    assert_eq!(client.nodelay(), Ok(true));
    assert_eq!(server.nodelay(), Ok(false), "per socket");
    client.set_nodelay(false).unwrap();
    assert_eq!(client.nodelay(), Ok(false));
}

#[test]
fn shutdown_write_gives_peer_eof_and_keeps_reading() {
    let (client, server) = pair_v4();
    write_all(&client, b"last words");
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&server), b"last words");
    // EOF stays EOF.
    assert_eq!(server.read(&mut [0u8; 4]), Ok(0));
    // Half-close: the other direction still works.
    write_all(&server, b"reply");
    assert_eq!(read_exact(&client, 5), b"reply");
    // Writing after our own shutdown(Write) is a broken pipe, not a signal.
    assert_eq!(client.write(b"more"), Err(Error::BrokenPipe));
}

#[test]
fn shutdown_read_and_both() {
    let (client, server) = pair_v4();
    server.shutdown(Shutdown::Read).unwrap();
    assert_eq!(server.read(&mut [0u8; 4]), Ok(0));
    server.shutdown(Shutdown::Both).unwrap();
    assert_eq!(read_to_eof(&client), b"");
    // An empty buffer reads nothing and is not mistaken for an error.
    assert_eq!(client.read(&mut []), Ok(0));
    let unconnected = TcpStream::socket_for(any_port_v4()).unwrap();
    assert_eq!(
        unconnected.shutdown(Shutdown::Both),
        Err(Error::NotConnected)
    );
}

#[test]
fn write_vectored_sends_all_parts_in_order() {
    let (client, server) = pair_v4();
    let n = client.write_vectored(&[b"head-", b"tail"]).unwrap();
    assert_eq!(n, 9);
    assert_eq!(read_exact(&server, 9), b"head-tail");
    // Empty parts are fine.
    assert_eq!(client.write_vectored(&[b"", b"x", b""]), Ok(1));
    assert_eq!(read_exact(&server, 1), b"x");
}

#[test]
fn write_until_would_block_then_drain() {
    let (client, server) = pair_v4();
    let chunk = [0xabu8; 64 * 1024];
    let mut sent = 0usize;
    loop {
        match client.write(&chunk) {
            Ok(n) => sent += n,
            Err(Error::WouldBlock) => break,
            Err(e) => panic!("write: {e:?}"),
        }
        assert!(sent < 1 << 30, "send buffer never filled");
    }
    assert!(sent > 0);
    let got = read_exact(&server, sent);
    assert!(got.iter().all(|&b| b == 0xab));
    assert_would_block(server.read(&mut [0u8; 1]));
}

static SIGPIPES: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count_sigpipe(_: libc::c_int) {
    SIGPIPES.fetch_add(1, Ordering::SeqCst);
}

/// Installs a SIGPIPE handler that counts, for the duration of `f`. (The Rust runtime sets
/// SIGPIPE to SIG_IGN, under which a missing MSG_NOSIGNAL would go unnoticed.)
fn counting_sigpipes<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: `sigaction` is plain old data, valid when zeroed.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: the handler only touches an atomic (async-signal-safe); no other test in this
    // binary changes SIGPIPE; the previous action is restored below (if `f` panics, the
    // counting handler stays, which is harmless).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = count_sigpipe as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGPIPE, &sa, &mut old), 0);
    }
    let r = f();
    // SAFETY: restores the action saved above.
    unsafe {
        assert_eq!(
            libc::sigaction(libc::SIGPIPE, &old, std::ptr::null_mut()),
            0
        )
    };
    r
}

#[test]
fn writing_to_a_reset_peer_is_an_error_not_a_signal() {
    let (client, server) = pair_v4();
    // SO_LINGER 0: close sends a reset.
    rustix::net::sockopt::set_socket_linger(&server, Some(Duration::ZERO)).unwrap();
    drop(server);

    counting_sigpipes(|| {
        let before = SIGPIPES.load(Ordering::SeqCst);
        // The reset may take a moment to be processed; until then writes succeed.
        let first = retry("reset to arrive", || match client.write(b"data") {
            Ok(_) => Err(Error::WouldBlock),
            Err(e) => Ok(e),
        })
        .unwrap();
        assert!(
            first == Error::ConnectionReset || first == Error::BrokenPipe,
            "{first:?}"
        );
        assert!(first.is_disconnect());
        // Once the reset is consumed, writes fail with EPIPE: the case that raises SIGPIPE
        // without MSG_NOSIGNAL. Both write paths must stay silent.
        assert_eq!(client.write(b"again"), Err(Error::BrokenPipe));
        assert_eq!(client.write_vectored(&[b"a", b"b"]), Err(Error::BrokenPipe));
        assert_eq!(
            SIGPIPES.load(Ordering::SeqCst),
            before,
            "SIGPIPE was raised"
        );

        // Control: a plain write(2) on the same socket does raise SIGPIPE, so the counter
        // above would have seen one.
        // SAFETY: writing 1 byte from a valid buffer to a descriptor we own.
        let r = unsafe { libc::write(client.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        assert_eq!(r, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EPIPE)
        );
        assert_eq!(SIGPIPES.load(Ordering::SeqCst), before + 1);
    });
    assert_eq!(client.read(&mut [0u8; 4]), Ok(0));
}

#[test]
fn reading_from_a_reset_peer_is_connection_reset() {
    let (client, server) = pair_v4();
    rustix::net::sockopt::set_socket_linger(&server, Some(Duration::ZERO)).unwrap();
    drop(server);
    let r = retry::<()>("reset to arrive", || match client.read(&mut [0u8; 4]) {
        Ok(n) => panic!("read {n} bytes from a reset connection"),
        Err(e) => Err(e),
    });
    assert_eq!(r, Err(Error::ConnectionReset));
    // The error is reported once; then the connection reads as closed.
    assert_eq!(client.read(&mut [0u8; 4]), Ok(0));
}

#[test]
fn fd_round_trip_keeps_the_connection() {
    let (client, server) = pair_v4();
    let raw = server.as_raw_fd();
    let fd: OwnedFd = server.into_fd();
    let server = TcpStream::from_fd(fd);
    assert_eq!(server.as_raw_fd(), raw);
    let server = TcpStream::from(OwnedFd::from(server));
    write_all(&client, b"still here");
    assert_eq!(read_exact(&server, 10), b"still here");

    let l = TcpListener::bind(any_port_v4(), ListenOptions::default()).unwrap();
    let addr = l.local_addr().unwrap();
    let l = TcpListener::from_fd(l.into_fd());
    assert_eq!(l.local_addr().unwrap(), addr);
    let _pair = pair_on(&l);
}

/// Accepts with a raw `accept4` into a `SockAddrBuf`, exactly as an io_uring accept would
/// use it, and connects with a raw `connect` from a `SockAddrBuf`.
fn sockaddr_buf_with_the_kernel(bind: SocketAddr) {
    let Some(listener) = listener_or_skip_v6(bind) else {
        return;
    };
    let laddr = listener.local_addr().unwrap();

    // Connect: the kernel reads the encoded address.
    let client = TcpStream::socket_for(laddr).unwrap();
    let enc = SockAddrBuf::from(&laddr);
    assert_eq!(enc.to_socket_addr(), Ok(laddr));
    // SAFETY: `enc` is alive and unmoved for the call; `len` bytes of it are the address.
    let r = unsafe { libc::connect(client.as_raw_fd(), enc.as_ptr().cast(), enc.len()) };
    if r != 0 {
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EINPROGRESS)
        );
    }
    finish_connect(&client, Connect::InProgress).unwrap();

    // Accept: the kernel writes the peer address and its length.
    let mut buf = SockAddrBuf::new();
    let fd = retry("accept4", || {
        buf.reset();
        // SAFETY: `buf` is alive and unmoved for the call; the length pointer holds the
        // storage capacity, as accept4 requires.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len_mut_ptr(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd >= 0 {
            Ok(fd)
        } else {
            Err(Error::from_raw_os_error(
                std::io::Error::last_os_error().raw_os_error().unwrap(),
            ))
        }
    })
    .unwrap();
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    let server = TcpStream::from_fd(unsafe { OwnedFd::from_raw_fd(fd) });
    let peer = buf.to_socket_addr().unwrap();
    assert_eq!(peer, client.local_addr().unwrap());
    assert_eq!(
        buf.len() as usize,
        if bind.is_ipv6() { 28 } else { 16 },
        "sockaddr_in6 / sockaddr_in length"
    );
    assert_eq!(server.peer_addr().unwrap(), peer);
    write_all(&client, b"ok");
    assert_eq!(read_exact(&server, 2), b"ok");
}

#[test]
fn sockaddr_buf_with_the_kernel_v4() {
    sockaddr_buf_with_the_kernel(any_port_v4());
}

#[test]
fn sockaddr_buf_with_the_kernel_v6() {
    sockaddr_buf_with_the_kernel(any_port_v6());
}

#[test]
fn ipv6_unavailability_is_recognised_precisely() {
    // The skip path of the v6 tests accepts only these two errors; check that the helper
    // does not accept others (a bind conflict must fail a test, not skip it).
    assert!(is_ipv6_unavailable(Error::AddrNotAvailable));
    assert!(is_ipv6_unavailable(Error::from_raw_os_error(
        libc::EAFNOSUPPORT
    )));
    assert!(!is_ipv6_unavailable(Error::AddrInUse));
    assert!(!is_ipv6_unavailable(Error::PermissionDenied));
}

#[test]
fn raise_nofile_limit_up_to_the_hard_limit() {
    let orig = getrlimit(Resource::Nofile);
    let hard = orig.maximum.unwrap_or(u64::MAX);
    let soft = orig.current.unwrap_or(u64::MAX);
    // Other tests in this binary run in parallel and hold at most a few hundred
    // descriptors: stay well above that while the soft limit is lowered.
    let low = 2048.min(hard);
    if low < 1024 {
        eprintln!("NOTE: hard RLIMIT_NOFILE is {hard}; only the no-op paths are checked");
        assert!(soft <= hard);
        assert_eq!(raise_nofile_limit(hard), Ok(hard));
        return;
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(low),
            maximum: orig.maximum,
        },
    )
    .unwrap();

    let result = std::panic::catch_unwind(|| {
        // Raise to a value below the hard limit: exactly that.
        let want = (low + 100).min(hard);
        assert_eq!(raise_nofile_limit(want), Ok(want));
        assert_eq!(getrlimit(Resource::Nofile).current, Some(want));
        // Never lowers.
        assert_eq!(raise_nofile_limit(16), Ok(want));
        assert_eq!(getrlimit(Resource::Nofile).current, Some(want));
        // Asking for more than the hard limit gives the hard limit.
        assert_eq!(raise_nofile_limit(u64::MAX), Ok(hard));
        let now = getrlimit(Resource::Nofile);
        assert_eq!(now.current, orig.maximum);
        assert_eq!(now.maximum, orig.maximum, "the hard limit is untouched");
    });
    // Put the soft limit back as it was, whatever happened.
    setrlimit(Resource::Nofile, orig).unwrap();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn listen_options_defaults() {
    let d = ListenOptions::default();
    assert!(d.reuse_addr);
    assert!(!d.reuse_port);
    assert!(d.backlog > 0);
    assert_eq!(d, ListenOptions::DEFAULT);
}

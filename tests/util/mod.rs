//! Helpers shared by the `sys` integration tests (each test file uses a subset).
#![allow(dead_code)]

use ringlet::sys::epoll::{Epoll, Event, Events, Interest};
use ringlet::sys::socket::{Connect, ListenOptions, TcpListener, TcpStream};
use ringlet::sys::{Error, Result};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

/// How long any helper waits for something that should happen before failing the test.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// `127.0.0.1:0`.
pub fn any_port_v4() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// `[::1]:0`.
pub fn any_port_v6() -> SocketAddr {
    SocketAddr::from((Ipv6Addr::LOCALHOST, 0))
}

/// The error `bind` to `::1` may legitimately fail with on a host without IPv6 loopback:
/// `EADDRNOTAVAIL` (IPv6 on, no `::1`) or `EAFNOSUPPORT` (IPv6 off in the kernel).
pub fn is_ipv6_unavailable(e: Error) -> bool {
    e == Error::AddrNotAvailable || e == Error::from_raw_os_error(libc::EAFNOSUPPORT)
}

/// A listener on `addr` with default options, or `None` (with a note on stderr) when `addr`
/// is IPv6 and the host has no IPv6 loopback; any other failure fails the test.
pub fn listener_or_skip_v6(addr: SocketAddr) -> Option<TcpListener> {
    match TcpListener::bind(addr, ListenOptions::default()) {
        Ok(l) => Some(l),
        Err(e) if addr.is_ipv6() => {
            assert!(
                is_ipv6_unavailable(e),
                "binding {addr} failed with {e:?}, which does not mean \"no IPv6\""
            );
            eprintln!("NOTE: {addr} is unavailable on this host ({e}); IPv6 part skipped");
            None
        }
        Err(e) => panic!("binding {addr} failed: {e:?}"),
    }
}

/// Retries `f` while it reports `WouldBlock`, sleeping briefly; panics after [`TIMEOUT`].
pub fn retry<T>(what: &str, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        match f() {
            Err(Error::WouldBlock) if start.elapsed() < TIMEOUT => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(Error::WouldBlock) => panic!("{what}: still WouldBlock after {TIMEOUT:?}"),
            other => return other,
        }
    }
}

/// Asserts that `r` is `Err(Error::WouldBlock)`.
#[track_caller]
pub fn assert_would_block<T: std::fmt::Debug>(r: Result<T>) {
    match r {
        Err(Error::WouldBlock) => {}
        other => panic!("expected WouldBlock, got {other:?}"),
    }
}

/// Waits (up to [`TIMEOUT`]) for an event with `token` that satisfies `pred`, and returns it.
/// Events for other tokens, or that do not satisfy `pred`, are skipped.
#[track_caller]
pub fn expect_event(ep: &Epoll, token: u64, pred: impl Fn(&Event) -> bool) -> Event {
    let mut storage = [Events::EMPTY; 16];
    let mut events = Events::new(&mut storage);
    let start = Instant::now();
    let mut seen = Vec::new();
    while start.elapsed() < TIMEOUT {
        let left = TIMEOUT.saturating_sub(start.elapsed());
        ep.wait(&mut events, Some(left)).expect("epoll wait");
        for ev in &events {
            if ev.token() == token && pred(&ev) {
                return ev;
            }
            seen.push(ev);
        }
    }
    panic!("no matching event for token {token} within {TIMEOUT:?}; saw {seen:?}");
}

/// Asserts that a wait of `within` reports no events at all.
#[track_caller]
pub fn expect_no_events(ep: &Epoll, within: Duration) {
    let mut storage = [Events::EMPTY; 16];
    let mut events = Events::new(&mut storage);
    let n = ep.wait(&mut events, Some(within)).expect("epoll wait");
    assert_eq!(n, 0, "expected no events, got {events:?}");
    assert!(events.is_empty());
}

/// Finishes a non-blocking connect: waits until `stream` is writable and checks `SO_ERROR`.
pub fn finish_connect(stream: &TcpStream, state: Connect) -> Result<()> {
    if state == Connect::Connected {
        return Ok(());
    }
    let ep = Epoll::new().expect("epoll");
    ep.add(stream, 1, Interest::WRITABLE).expect("epoll add");
    // Writable, or an error/hang-up for a failed connect.
    expect_event(&ep, 1, |e| e.is_writable() || e.is_error() || e.is_hup());
    match stream.take_error()? {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// A connected pair over `listener`: (client, accepted server side).
pub fn pair_on(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().expect("local_addr");
    let (client, state) = TcpStream::connect(addr).expect("connect");
    finish_connect(&client, state).expect("finish connect");
    let (server, peer) = retry("accept", || listener.accept()).expect("accept");
    assert_eq!(peer, client.local_addr().unwrap());
    (client, server)
}

/// A connected pair on 127.0.0.1.
pub fn pair_v4() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind(any_port_v4(), ListenOptions::default()).expect("bind");
    pair_on(&l)
}

/// Writes all of `buf`, retrying on `WouldBlock`.
pub fn write_all(s: &TcpStream, mut buf: &[u8]) {
    while !buf.is_empty() {
        let n = retry("write", || s.write(buf)).expect("write");
        assert!(n > 0);
        buf = &buf[n..];
    }
}

/// Reads exactly `n` bytes, retrying on `WouldBlock`; panics on EOF.
pub fn read_exact(s: &TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let k = retry("read", || s.read(&mut out[got..])).expect("read");
        assert!(k > 0, "unexpected EOF after {got} of {n} bytes");
        got += k;
    }
    out
}

/// Reads until end of stream, retrying on `WouldBlock`.
pub fn read_to_eof(s: &TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match retry("read", || s.read(&mut buf)).expect("read") {
            0 => return out,
            k => out.extend_from_slice(&buf[..k]),
        }
    }
}

//! The broker's memory limits over real sockets, on both backends: max_pending (a per-client
//! limit on bytes staged and unsent), the reservation of receive buffers for large
//! messages, and the shared line buffers for control lines split across receives.

mod broker_util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::thread;
use std::time::{Duration, Instant};

use broker_util::{Options, Running, backends, server_config, start_opts};
use ringlet::broker::server::ServerConfig;
use ringlet::reactor::BackendChoice;
use serde_json::Value;

fn each(f: impl Fn(BackendChoice)) {
    for b in backends() {
        f(b);
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// A connection whose receive buffer is small (set before connecting, so the window stays
/// small): a consumer that stops reading backs up into the server quickly.
fn connect_small_rcvbuf(addr: SocketAddr) -> TcpStream {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only")
    };
    // SAFETY: plain socket calls on a descriptor this function owns; `size` and `sa` outlive
    // the calls that read them, and the fd is handed to TcpStream once, at the end.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 4096;
        let r = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(r, 0);
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(r, 0);
        let s = TcpStream::from_raw_fd(fd);
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }
}

fn expect(s: &mut TcpStream, want: &[u8]) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want.len() {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "EOF after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

fn info(s: &mut TcpStream) -> Value {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        assert_eq!(s.read(&mut b).expect("read"), 1, "EOF in INFO");
        line.push(b[0]);
    }
    let text = String::from_utf8(line).unwrap();
    serde_json::from_str(&text[5..text.len() - 3]).unwrap()
}

const QUIET: &str = r#"{"verbose":false,"pedantic":false}"#;

/// CONNECT and PING/PONG on `s`; returns its INFO.
fn handshake(s: &mut TcpStream) -> Value {
    let i = info(s);
    s.write_all(format!("CONNECT {QUIET}\r\nPING\r\n").as_bytes())
        .unwrap();
    expect(s, b"PONG\r\n");
    i
}

fn client(addr: SocketAddr) -> TcpStream {
    let mut s = connect(addr);
    handshake(&mut s);
    s
}

fn sync(s: &mut TcpStream) {
    s.write_all(b"PING\r\n").unwrap();
    expect(s, b"PONG\r\n");
}

fn msg(subject: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = format!("PUB {subject} {}\r\n", payload.len()).into_bytes();
    m.extend_from_slice(payload);
    m.extend_from_slice(b"\r\n");
    m
}

/// Reads on its own thread until `want` bytes or EOF; returns what it read.
fn reader(mut s: TcpStream, want: usize, pause: Option<Duration>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        while got.len() < want {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if let Some(p) = pause {
                thread::sleep(p);
            }
        }
        got
    })
}

fn http_json(addr: SocketAddr, path: &str) -> Value {
    let mut s = connect(addr);
    s.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let at = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    serde_json::from_slice(&all[at + 4..]).unwrap()
}

/// A consumer that stops reading: the fan-out never stages more than max_pending for it
/// (publishers are held instead, and /connz shows its pending bytes at the limit), and when
/// it stays there past the write deadline it is cut and counted; the publisher and a consumer
/// that reads get every message.
#[test]
fn max_pending_holds_publishers_then_cuts_a_stuck_consumer() {
    each(|b| {
        const MAX_PENDING: usize = 64 * 1024;
        let cfg = ServerConfig {
            max_pending: MAX_PENDING,
            write_deadline: Duration::from_millis(1500),
            ..server_config()
        };
        let srv = start_opts(
            b,
            cfg,
            Options {
                monitor: true,
                ..Options::default()
            },
        );
        let http = srv.http.unwrap();
        let mut stuck = connect_small_rcvbuf(srv.addr);
        let stuck_cid = handshake(&mut stuck)["client_id"].as_u64().unwrap();
        stuck.write_all(b"SUB s 1\r\n").unwrap();
        sync(&mut stuck);
        let mut fast = client(srv.addr);
        fast.write_all(b"SUB s 1\r\n").unwrap();
        sync(&mut fast);
        const N: usize = 3000;
        let one = msg("s", &[b'x'; 1024]);
        let per = b"MSG s 1 1024\r\n".len() + 1024 + 2;
        let fast = reader(fast, N * per, None);
        let mut p = client(srv.addr);
        let publisher = thread::spawn(move || {
            let batch: Vec<u8> = one.repeat(100);
            for _ in 0..N / 100 {
                p.write_all(&batch).unwrap();
            }
            sync(&mut p);
            p
        });
        // Watch the stuck consumer's pending bytes until it is cut.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut most = 0u64;
        loop {
            assert!(Instant::now() < deadline, "never cut; most pending {most}");
            let v = http_json(http, "/connz");
            let conns = v["connections"].as_array().unwrap();
            let Some(c) = conns.iter().find(|c| c["cid"] == stuck_cid) else {
                break;
            };
            let pending = c["pending_bytes"].as_u64().unwrap();
            assert!(
                pending <= MAX_PENDING as u64,
                "{pending} bytes pending, max_pending {MAX_PENDING}"
            );
            most = most.max(pending);
            thread::sleep(Duration::from_millis(5));
        }
        // It reached the limit (within one message) before it was cut.
        assert!(
            most + per as u64 > MAX_PENDING as u64,
            "pending peaked at {most}"
        );
        let _p = publisher.join().unwrap();
        let got = fast.join().unwrap();
        assert_eq!(got.len(), N * per, "the reading consumer got everything");
        let stats = srv.stop();
        assert_eq!(stats.slow_consumers, 1, "{stats:?}");
        assert_eq!(stats.in_msgs, N as u64, "{stats:?}");
        assert!(stats.publisher_pauses > 0, "{stats:?}");
    });
}

/// One message larger than max_pending can never be staged for a consumer: its pending bytes
/// would pass the limit, so that consumer is cut at once (no -ERR, counted); others go on.
#[test]
fn a_message_past_max_pending_cuts_its_consumer_at_once() {
    each(|b| {
        let cfg = ServerConfig {
            max_pending: 8 * 1024,
            ..server_config()
        };
        let srv = start_opts(b, cfg, Options::default());
        let mut big = client(srv.addr);
        big.write_all(b"SUB big 1\r\n").unwrap();
        sync(&mut big);
        let mut small = client(srv.addr);
        small
            .write_all(b"SUB small 1\r\nSUB big.not 2\r\n")
            .unwrap();
        sync(&mut small);
        let mut p = client(srv.addr);
        p.write_all(&msg("big", &[b'b'; 16 * 1024])).unwrap();
        p.write_all(&msg("small", b"hello")).unwrap();
        sync(&mut p);
        // The big subscriber is closed without a word.
        let mut rest = Vec::new();
        let _ = big.read_to_end(&mut rest);
        assert_eq!(rest, b"");
        expect(&mut small, b"MSG small 1 5\r\nhello\r\n");
        // A message within the limit still reaches it.
        p.write_all(&msg("small", &[b's'; 7000])).unwrap();
        sync(&mut p);
        let mut want = b"MSG small 1 7000\r\n".to_vec();
        want.extend_from_slice(&[b's'; 7000]);
        want.extend_from_slice(b"\r\n");
        expect(&mut small, &want);
        let stats = srv.stop();
        assert_eq!(stats.slow_consumers, 1, "{stats:?}");
        assert_eq!((stats.in_msgs, stats.out_msgs), (3, 2), "{stats:?}");
    });
}

/// A momentary burst never cuts a consumer that keeps reading: with max_pending far below the
/// burst, the publisher is held back (paused) as often as needed, and everything arrives.
#[test]
fn a_reading_consumer_under_a_small_max_pending_is_never_cut() {
    each(|b| {
        let cfg = ServerConfig {
            max_pending: 16 * 1024,
            ..server_config()
        };
        let srv = start_opts(b, cfg, Options::default());
        let mut c = client(srv.addr);
        c.write_all(b"SUB burst 1\r\n").unwrap();
        sync(&mut c);
        const N: usize = 2000;
        let per = b"MSG burst 1 1024\r\n".len() + 1024 + 2;
        // It reads in small pieces, pausing between them: slower than the publisher.
        let got = reader(c, N * per, Some(Duration::from_micros(200)));
        let mut p = client(srv.addr);
        let one = msg("burst", &[b'y'; 1024]);
        p.write_all(&one.repeat(N)).unwrap();
        sync(&mut p);
        assert_eq!(got.join().unwrap().len(), N * per);
        let stats = srv.stop();
        assert_eq!(stats.slow_consumers, 0, "{stats:?}");
        assert_eq!(stats.out_msgs, N as u64);
        assert!(stats.publisher_pauses > 0, "{stats:?}");
    });
}

const LARGE: usize = 48 * 1024;

/// Small buffers (128 of 4 KiB), a default lease quota of 8 (32 KiB: a 48 KiB payload needs a
/// reservation of 23 buffers, and cannot arrive whole without one) and 78 buffers kept in
/// reserve: a budget of 50, two large messages at a time.
fn reserving(b: BackendChoice) -> broker_util::Running {
    let cfg = ServerConfig {
        max_payload: LARGE as u32,
        buffer_reserve: Some(78),
        ..server_config()
    };
    assert_eq!(
        ServerConfig::buffers_for(LARGE as u64, broker_util::SMALL_BUF_SIZE),
        23
    );
    assert!(cfg.check_budget(broker_util::SMALL_BUF_SIZE, 128).is_ok());
    start_opts(
        b,
        cfg,
        Options {
            small: true,
            lease_quota: 8,
            ..Options::default()
        },
    )
}

fn large_payload(seed: u8) -> Vec<u8> {
    (0..LARGE)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

/// Several clients each send half of a large PUB; two get reservations, the others wait with
/// their receive paused, and meanwhile other clients keep being served. When they send the
/// rest, every message is delivered whole, two at a time.
#[test]
fn large_messages_reserve_buffers_and_others_are_served() {
    each(|b| {
        let srv = reserving(b);
        let mut sub = client(srv.addr);
        sub.write_all(b"SUB big 1\r\n").unwrap();
        sync(&mut sub);
        const K: usize = 6;
        let mut large: Vec<(TcpStream, Vec<u8>)> = Vec::new();
        for k in 0..K {
            let mut s = client(srv.addr);
            let payload = large_payload(k as u8);
            let m = msg("big", &payload);
            let half = m.len() / 2;
            s.write_all(&m[..half]).unwrap();
            large.push((s, m[half..].to_vec()));
        }
        // Everyone else is served meanwhile: a new client, pub/sub, PING/PONG.
        let mut other = client(srv.addr);
        other.write_all(b"SUB chat 1\r\n").unwrap();
        sync(&mut other);
        for i in 0..100 {
            other
                .write_all(&msg("chat", format!("{i}").as_bytes()))
                .unwrap();
        }
        other.write_all(b"PING\r\n").unwrap();
        let mut want = Vec::new();
        for i in 0..100 {
            want.extend_from_slice(
                format!("MSG chat 1 {}\r\n{i}\r\n", format!("{i}").len()).as_bytes(),
            );
        }
        want.extend_from_slice(b"PONG\r\n");
        expect(&mut other, &want);
        // The rest of each large message: all arrive whole.
        let per = format!("MSG big 1 {LARGE}\r\n").len() + LARGE + 2;
        let got = reader(sub, K * per, None);
        for (s, rest) in &mut large {
            s.write_all(rest).unwrap();
        }
        for (s, _) in &mut large {
            sync(s);
        }
        let got = got.join().unwrap();
        assert_eq!(got.len(), K * per);
        let mut seen = Vec::new();
        for m in got.chunks(per) {
            let head = format!("MSG big 1 {LARGE}\r\n");
            assert!(m.starts_with(head.as_bytes()));
            let body = &m[head.len()..head.len() + LARGE];
            let seed = body[0];
            assert_eq!(body, &large_payload(seed)[..], "message {seed} corrupted");
            seen.push(seed);
        }
        seen.sort();
        assert_eq!(seen, (0..K as u8).collect::<Vec<_>>());
        let stats = srv.stop();
        assert_eq!(stats.reservations, K as u64, "{stats:?}");
        assert!(stats.reservation_waits >= 1, "{stats:?}");
        assert_eq!(stats.reserved_high_water, 2 * 23, "{stats:?}");
        assert_eq!(stats.in_msgs, K as u64 + 100);
    });
}

/// A client that holds a reservation and goes away gives it back: the messages waiting
/// behind it go through.
#[test]
fn reservations_are_released_on_close() {
    each(|b| {
        let srv = reserving(b);
        let mut sub = client(srv.addr);
        sub.write_all(b"SUB big 1\r\n").unwrap();
        sync(&mut sub);
        // Two half-sent messages take the budget; they will never be finished.
        let mut holders = Vec::new();
        for k in 0..2 {
            let mut s = client(srv.addr);
            let m = msg("big", &large_payload(100 + k));
            s.write_all(&m[..m.len() / 2]).unwrap();
            holders.push(s);
        }
        // Two more, sent whole: they wait for the budget. (The holders' halves reached the
        // broker before these clients' handshakes were answered, so the holders have it.)
        let mut waiting = Vec::new();
        for k in 0..2u8 {
            let mut s = client(srv.addr);
            s.write_all(&msg("big", &large_payload(k))).unwrap();
            waiting.push(s);
        }
        // Nothing arrives while the holders keep the budget.
        sub.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 64];
        if let Ok(n) = sub.read(&mut buf) {
            let stats = srv.stop();
            panic!(
                "delivered before a release: {:?} {stats:?}",
                String::from_utf8_lossy(&buf[..n])
            );
        }
        sub.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        drop(holders);
        let per = format!("MSG big 1 {LARGE}\r\n").len() + LARGE + 2;
        let mut got = vec![0u8; 2 * per];
        sub.read_exact(&mut got).unwrap();
        let mut seeds: Vec<u8> = got
            .chunks(per)
            .map(|m| m[format!("MSG big 1 {LARGE}\r\n").len()])
            .collect();
        seeds.sort();
        assert_eq!(seeds, [0, 1]);
        for s in &mut waiting {
            sync(s);
        }
        let stats = srv.stop();
        assert_eq!(stats.reservations, 4, "{stats:?}");
        assert!(stats.reservation_waits >= 2, "{stats:?}");
        assert!(stats.reserved_high_water <= 2 * 23, "{stats:?}");
    });
}

/// A message that needs more than the whole budget can never be reserved: `Maximum Payload
/// Violation` and close, as for a payload above max_payload.
#[test]
fn a_message_larger_than_the_budget_is_refused() {
    each(|b| {
        let cfg = ServerConfig {
            max_payload: LARGE as u32,
            buffer_reserve: Some(110),
            ..server_config()
        };
        assert_eq!(
            cfg.check_budget(broker_util::SMALL_BUF_SIZE, 128),
            Err(8 * 4096 - 2)
        );
        let srv = start_opts(
            b,
            cfg,
            Options {
                small: true,
                lease_quota: 16,
                ..Options::default()
            },
        );
        let mut s = client(srv.addr);
        s.write_all(format!("PUB big {LARGE}\r\n").as_bytes())
            .unwrap();
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        assert_eq!(all, b"-ERR 'Maximum Payload Violation'\r\n");
        // A message the default quota holds needs no reservation (20 000 bytes: 15 buffers).
        assert_eq!(
            ServerConfig::buffers_for(20_000, broker_util::SMALL_BUF_SIZE),
            15
        );
        let mut s = client(srv.addr);
        s.write_all(b"SUB m 1\r\n").unwrap();
        s.write_all(&msg("m", &[b'm'; 20_000])).unwrap();
        let mut want = b"MSG m 1 20000\r\n".to_vec();
        want.extend_from_slice(&[b'm'; 20_000]);
        want.extend_from_slice(b"\r\n");
        expect(&mut s, &want);
        let stats = srv.stop();
        assert_eq!(stats.reservations, 0, "{stats:?}");
    });
}

/// A broker with one shared line buffer, and a client subscribed to `foo` (sid 1).
fn one_line_buffer_and_a_subscriber(b: BackendChoice) -> (Running, TcpStream) {
    let opts = Options {
        line_bufs: 1,
        ..Options::default()
    };
    let srv = start_opts(b, server_config(), opts);
    let mut sub = client(srv.addr);
    sub.write_all(b"SUB foo 1\r\n").unwrap();
    sync(&mut sub);
    (srv, sub)
}

/// A broker with one shared line buffer: clients whose control lines split while it is lent
/// wait for it (answering what came before the line, losing nothing, sending no error) and
/// go on in slot order as it comes back.
#[test]
fn split_lines_wait_for_the_line_buffer_and_lose_nothing() {
    each(|b| {
        let (srv, mut sub) = one_line_buffer_and_a_subscriber(b);
        let mut p1 = client(srv.addr);
        let mut p2 = client(srv.addr);
        let mut p3 = client(srv.addr);
        // p1's PUB line is split: it holds the only buffer.
        p1.write_all(b"PING\r\nPUB fo").unwrap();
        expect(&mut p1, b"PONG\r\n");
        // p2 and p3 get their PONG, then their split lines wait.
        p2.write_all(b"PING\r\nPUB fo").unwrap();
        expect(&mut p2, b"PONG\r\n");
        p3.write_all(b"PING\r\nSUB ba").unwrap();
        expect(&mut p3, b"PONG\r\n");
        p2.write_all(b"o 2\r\nyo\r\nPING\r\n").unwrap();
        p3.write_all(b"r 9\r\nPING\r\n").unwrap();
        // p1's line completes: the buffer goes to p2, then to p3.
        p1.write_all(b"o 2\r\nhi\r\nPING\r\n").unwrap();
        expect(&mut p1, b"PONG\r\n");
        expect(&mut p2, b"PONG\r\n");
        expect(&mut p3, b"PONG\r\n");
        expect(&mut sub, b"MSG foo 1 2\r\nhi\r\nMSG foo 1 2\r\nyo\r\n");
        // p3's subscription is in place.
        p1.write_all(&msg("bar", b"z")).unwrap();
        expect(&mut p3, b"MSG bar 9 1\r\nz\r\n");
        let stats = srv.stop();
        assert_eq!(stats.line_bufs_high_water, 1, "{b:?}");
        assert!(stats.line_waits >= 2, "{b:?}: {stats:?}");
        assert_eq!(stats.in_msgs, 3, "{b:?}");
    });
}

/// The lent line buffer comes back when its holder closes, and a waiting client goes on.
#[test]
fn a_closing_holder_gives_its_line_buffer_back() {
    each(|b| {
        let (srv, mut sub) = one_line_buffer_and_a_subscriber(b);
        let mut p1 = client(srv.addr);
        let mut p2 = client(srv.addr);
        p1.write_all(b"PING\r\nPUB foo 2\r").unwrap();
        expect(&mut p1, b"PONG\r\n");
        p2.write_all(b"PING\r\nPUB fo").unwrap();
        expect(&mut p2, b"PONG\r\n");
        drop(p1);
        p2.write_all(b"o 2\r\nyo\r\nPING\r\n").unwrap();
        expect(&mut p2, b"PONG\r\n");
        expect(&mut sub, b"MSG foo 1 2\r\nyo\r\n");
        let stats = srv.stop();
        assert_eq!(stats.line_bufs_high_water, 1, "{b:?}");
        assert!(stats.line_waits >= 1, "{b:?}: {stats:?}");
        assert_eq!(stats.in_msgs, 1, "{b:?}");
    });
}

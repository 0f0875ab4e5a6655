//! Black-box protocol tests of the broker over real sockets, on both backends.

mod broker_util;

use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use broker_util::{backends, server_config, start};
use ringlet::reactor::BackendChoice;

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Read until `want` has arrived (the whole stream so far must equal it at that point).
fn expect(s: &mut TcpStream, want: &[u8]) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want.len() {
        let n = s.read(&mut buf).expect("read");
        assert!(
            n > 0,
            "EOF after {:?}, wanted {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want)
        );
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

/// Read the INFO line.
fn info(s: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        assert_eq!(s.read(&mut b).expect("read"), 1, "EOF in INFO");
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

/// Connected client: INFO read, CONNECT sent, PONG seen.
fn client(addr: std::net::SocketAddr, connect_json: &str) -> TcpStream {
    let mut s = connect(addr);
    info(&mut s);
    s.write_all(format!("CONNECT {connect_json}\r\nPING\r\n").as_bytes())
        .unwrap();
    expect(&mut s, b"PONG\r\n");
    s
}

const QUIET: &str = r#"{"verbose":false,"pedantic":false}"#;
const QUIET_H: &str = r#"{"verbose":false,"pedantic":false,"headers":true,"no_responders":true}"#;

/// Sync: PING/PONG round trip so the server processed everything before.
fn sync(s: &mut TcpStream) {
    s.write_all(b"PING\r\n").unwrap();
    expect(s, b"PONG\r\n");
}

fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = s.read_to_end(&mut v);
    v
}

fn each(f: impl Fn(BackendChoice)) {
    for b in backends() {
        f(b);
    }
}

#[test]
fn info_shape() {
    each(|b| {
        let srv = start(b, server_config());
        let mut s = connect(srv.addr);
        let line = info(&mut s);
        assert!(line.starts_with("INFO {"), "{line}");
        assert!(line.ends_with("} \r\n"), "{line}");
        for field in [
            "\"server_id\":",
            "\"version\":\"2.9.10\"",
            "\"proto\":1",
            "\"headers\":true",
            "\"max_payload\":65536",
            "\"client_id\":1",
            "\"host\":",
        ] {
            assert!(line.contains(field), "{field} missing in {line}");
        }
        assert!(
            line.contains(&format!("\"port\":{}", srv.addr.port())),
            "{line}"
        );
        assert!(!line.contains("auth_required"), "{line}");
        srv.stop();
    });
}

#[test]
fn connect_ping_pong_and_verbose_ok() {
    each(|b| {
        let srv = start(b, server_config());
        let mut s = connect(srv.addr);
        info(&mut s);
        s.write_all(b"CONNECT {\"verbose\":true}\r\nPING\r\nSUB foo 1\r\nPUB foo 2\r\nhi\r\nUNSUB 1\r\nPING\r\n")
            .unwrap();
        // The PUB's +OK comes on its line, before the publisher's own copy (nats-server does
        // this; tests/broker_diff.rs compares).
        expect(
            &mut s,
            b"+OK\r\nPONG\r\n+OK\r\n+OK\r\nMSG foo 1 2\r\nhi\r\n+OK\r\nPONG\r\n",
        );
        srv.stop();
    });
}

#[test]
fn sub_pub_msg_byte_exact_and_wildcards() {
    each(|b| {
        let srv = start(b, server_config());
        let mut sub = client(srv.addr, QUIET);
        let mut publ = client(srv.addr, QUIET);
        sub.write_all(b"SUB foo.bar 1\r\nSUB foo.* 2\r\nSUB foo.> 3\r\nSUB bar 4\r\n")
            .unwrap();
        sync(&mut sub);
        publ.write_all(b"PUB foo.bar reply.to 5\r\nhello\r\nPUB foo.baz.qux 0\r\n\r\n")
            .unwrap();
        sync(&mut publ);
        // Plain subscribers come in the sublist's order: compare per message as a set.
        sub.write_all(b"PING\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"PONG\r\n") {
            let n = sub.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        got.truncate(got.len() - 6);
        let text = String::from_utf8(got).unwrap();
        for part in [
            "MSG foo.bar 1 reply.to 5\r\nhello\r\n",
            "MSG foo.bar 2 reply.to 5\r\nhello\r\n",
            "MSG foo.bar 3 reply.to 5\r\nhello\r\n",
        ] {
            assert!(text.contains(part), "{part:?} not in {text:?}");
        }
        assert!(text.ends_with("MSG foo.baz.qux 3 0\r\n\r\n"), "{text:?}");
        srv.stop();
    });
}

#[test]
fn queue_group_one_member_each() {
    each(|b| {
        let srv = start(b, server_config());
        let mut a = client(srv.addr, QUIET);
        let mut c = client(srv.addr, QUIET);
        a.write_all(b"SUB q.x workers 1\r\n").unwrap();
        c.write_all(b"SUB q.x workers 1\r\n").unwrap();
        sync(&mut a);
        sync(&mut c);
        let mut p = client(srv.addr, QUIET);
        for _ in 0..10 {
            p.write_all(b"PUB q.x 1\r\nx\r\n").unwrap();
        }
        sync(&mut p);
        let one = b"MSG q.x 1 1\r\nx\r\n".len();
        let count = |s: &mut TcpStream| {
            s.write_all(b"PING\r\n").unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.ends_with(b"PONG\r\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            (got.len() - 6) / one
        };
        let (na, nc) = (count(&mut a), count(&mut c));
        assert_eq!(na + nc, 10, "each message to exactly one member");
        srv.stop();
    });
}

#[test]
fn unsub_max() {
    each(|b| {
        let srv = start(b, server_config());
        let mut s = client(srv.addr, QUIET);
        s.write_all(
            b"SUB m 7\r\nUNSUB 7 2\r\nPUB m 1\r\na\r\nPUB m 1\r\nb\r\nPUB m 1\r\nc\r\nPING\r\n",
        )
        .unwrap();
        expect(&mut s, b"MSG m 7 1\r\na\r\nMSG m 7 1\r\nb\r\nPONG\r\n");
        srv.stop();
    });
}

#[test]
fn invalid_subject_stays_open() {
    each(|b| {
        let srv = start(b, server_config());
        let mut s = client(srv.addr, QUIET);
        s.write_all(b"SUB foo..bar 1\r\nPING\r\n").unwrap();
        expect(&mut s, b"-ERR 'Invalid Subject'\r\nPONG\r\n");
        srv.stop();
    });
}

#[test]
fn unknown_op_closes() {
    each(|b| {
        let srv = start(b, server_config());
        let mut s = client(srv.addr, QUIET);
        s.write_all(b"FOO bar\r\n").unwrap();
        assert_eq!(
            read_to_eof(&mut s),
            b"-ERR 'Unknown Protocol Operation'\r\n"
        );
        srv.stop();
    });
}

#[test]
fn max_payload_violation() {
    each(|b| {
        let srv = start(b, server_config());
        let mut s = client(srv.addr, QUIET);
        s.write_all(b"PUB foo 65537\r\n").unwrap();
        assert_eq!(read_to_eof(&mut s), b"-ERR 'Maximum Payload Violation'\r\n");
        srv.stop();
    });
}

#[test]
fn control_line_limit() {
    each(|b| {
        let srv = start(b, server_config());
        let mut s = client(srv.addr, QUIET);
        let mut line = b"SUB ".to_vec();
        line.extend(std::iter::repeat_n(b'a', 5000));
        s.write_all(&line).unwrap();
        assert_eq!(
            read_to_eof(&mut s),
            b"-ERR 'maximum control line exceeded'\r\n"
        );
        srv.stop();
    });
}

#[test]
fn headers_and_stripping() {
    each(|b| {
        let srv = start(b, server_config());
        let mut h = client(srv.addr, QUIET_H);
        let mut plain = client(srv.addr, QUIET);
        h.write_all(b"SUB hd 1\r\n").unwrap();
        plain.write_all(b"SUB hd 2\r\n").unwrap();
        sync(&mut h);
        sync(&mut plain);
        let hdr = "NATS/1.0\r\nA: b\r\n\r\n";
        let msg = format!("HPUB hd {} {}\r\n{hdr}body\r\n", hdr.len(), hdr.len() + 4);
        h.write_all(msg.as_bytes()).unwrap();
        expect(
            &mut h,
            format!("HMSG hd 1 {} {}\r\n{hdr}body\r\n", hdr.len(), hdr.len() + 4).as_bytes(),
        );
        expect(&mut plain, b"MSG hd 2 4\r\nbody\r\n");
        srv.stop();
    });
}

#[test]
fn no_responders_503() {
    each(|b| {
        let srv = start(b, server_config());
        let mut s = client(srv.addr, QUIET_H);
        s.write_all(b"SUB _INBOX.x 9\r\nPUB nobody _INBOX.x 2\r\nhi\r\nPING\r\n")
            .unwrap();
        expect(
            &mut s,
            b"HMSG _INBOX.x 9 16 16\r\nNATS/1.0 503\r\n\r\n\r\nPONG\r\n",
        );
        srv.stop();
    });
}

#[test]
fn echo_false() {
    each(|b| {
        let srv = start(b, server_config());
        let mut s = client(srv.addr, r#"{"verbose":false,"echo":false}"#);
        let mut other = client(srv.addr, QUIET);
        s.write_all(b"SUB e 1\r\nPUB e 1\r\nx\r\nPING\r\n").unwrap();
        expect(&mut s, b"PONG\r\n");
        other.write_all(b"PUB e 1\r\ny\r\n").unwrap();
        expect(&mut s, b"MSG e 1 1\r\ny\r\n");
        srv.stop();
    });
}

#[test]
fn connect_errors_close() {
    each(|b| {
        let srv = start(b, server_config());
        let mut s = connect(srv.addr);
        info(&mut s);
        s.write_all(b"CONNECT {\"protocol\":2}\r\n").unwrap();
        assert_eq!(read_to_eof(&mut s), b"-ERR 'invalid client protocol'\r\n");
        let mut s = connect(srv.addr);
        info(&mut s);
        s.write_all(b"CONNECT {\"no_responders\":true}\r\n")
            .unwrap();
        assert_eq!(
            read_to_eof(&mut s),
            b"-ERR 'no responders requires headers support'\r\n"
        );
        let mut s = connect(srv.addr);
        info(&mut s);
        s.write_all(b"CONNECT {bad\r\n").unwrap();
        assert_eq!(read_to_eof(&mut s), b"");
        srv.stop();
    });
}

#[test]
fn one_byte_at_a_time() {
    each(|b| {
        let srv = start(b, server_config());
        let mut s = connect(srv.addr);
        info(&mut s);
        let session = b"CONNECT {\"verbose\":false,\"headers\":true}\r\nSUB a.b 1\r\nPUB a.b r 3\r\nabc\r\nHPUB a.b 12 14\r\nNATS/1.0\r\n\r\nxy\r\nPING\r\n";
        for &byte in session.iter() {
            s.write_all(&[byte]).unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
        expect(
            &mut s,
            b"MSG a.b 1 r 3\r\nabc\r\nHMSG a.b 1 12 14\r\nNATS/1.0\r\n\r\nxy\r\nPONG\r\n",
        );
        srv.stop();
    });
}

#[test]
fn large_payload_and_subs_removed_on_close() {
    each(|b| {
        let srv = start(b, server_config());
        let mut sub = client(srv.addr, QUIET);
        sub.write_all(b"SUB big 1\r\n").unwrap();
        sync(&mut sub);
        let mut p = client(srv.addr, QUIET);
        let payload: Vec<u8> = (0..65536u32).map(|i| b'a' + (i % 26) as u8).collect();
        let mut msg = b"PUB big 65536\r\n".to_vec();
        msg.extend_from_slice(&payload);
        msg.extend_from_slice(b"\r\n");
        p.write_all(&msg).unwrap();
        let mut want = b"MSG big 1 65536\r\n".to_vec();
        want.extend_from_slice(&payload);
        want.extend_from_slice(b"\r\n");
        expect(&mut sub, &want);
        drop(sub);
        let deadline = Instant::now() + Duration::from_secs(5);
        // After the subscriber is gone, a request gets no-responders: proves the sub was removed.
        let mut r = client(srv.addr, QUIET_H);
        loop {
            r.write_all(b"SUB _I.1 1\r\nPUB big _I.1 0\r\n\r\nUNSUB 1\r\nPING\r\n")
                .unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.ends_with(b"PONG\r\n") {
                let n = r.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            if got.starts_with(b"HMSG _I.1 1 16 16") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "subscription not removed on close"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        srv.stop();
    });
}

/// How long a client may take to authenticate. A client thread must send its CONNECT within
/// this even on a loaded machine; the timeout test waits for it once.
const AUTH_TIMEOUT: Duration = Duration::from_secs(2);

fn auth_config(user: &str, pass: &str, token: &str) -> ringlet::broker::server::ServerConfig {
    let mut c = server_config();
    c.user.push_str(user).unwrap();
    c.pass.push_str(pass).unwrap();
    c.token.push_str(token).unwrap();
    c.auth_timeout = AUTH_TIMEOUT;
    c
}

#[test]
fn auth_user_pass() {
    each(|b| {
        let srv = start(b, auth_config("alice", "s3cret", ""));
        let mut s = connect(srv.addr);
        assert!(info(&mut s).contains("\"auth_required\":true"));
        s.write_all(
            b"CONNECT {\"verbose\":false,\"user\":\"alice\",\"pass\":\"s3cret\"}\r\nPING\r\n",
        )
        .unwrap();
        expect(&mut s, b"PONG\r\n");
        let mut s = connect(srv.addr);
        info(&mut s);
        s.write_all(b"CONNECT {\"user\":\"alice\",\"pass\":\"wrong\"}\r\nPING\r\n")
            .unwrap();
        assert_eq!(read_to_eof(&mut s), b"-ERR 'Authorization Violation'\r\n");
        let mut s = connect(srv.addr);
        info(&mut s);
        s.write_all(b"PING\r\n").unwrap();
        assert_eq!(read_to_eof(&mut s), b"-ERR 'Authorization Violation'\r\n");
        srv.stop();
    });
}

#[test]
fn auth_token_and_timeout() {
    each(|b| {
        let srv = start(b, auth_config("", "", "tok"));
        // `late` connects right after `s` and never authenticates: the broker accepts it
        // after `s`, so its auth deadline is not before the one `s` had, and timers fire in
        // deadline order. When `late` is timed out, the deadline of `s` has passed too.
        let mut s = connect(srv.addr);
        let t = Instant::now();
        let mut late = connect(srv.addr);
        s.write_all(b"CONNECT {\"verbose\":false,\"auth_token\":\"tok\"}\r\nPING\r\n")
            .unwrap();
        assert!(info(&mut s).contains("\"auth_required\":true"));
        expect(&mut s, b"PONG\r\n");
        let mut bad = connect(srv.addr);
        bad.write_all(b"CONNECT {\"auth_token\":\"nope\"}\r\n")
            .unwrap();
        info(&mut bad);
        assert_eq!(read_to_eof(&mut bad), b"-ERR 'Authorization Violation'\r\n");
        info(&mut late);
        assert_eq!(read_to_eof(&mut late), b"-ERR 'Authentication Timeout'\r\n");
        assert!(t.elapsed() >= AUTH_TIMEOUT, "{:?}", t.elapsed());
        // Authenticated: the auth timer no longer applies.
        sync(&mut s);
        srv.stop();
    });
}

#[test]
fn stale_connection() {
    each(|b| {
        let mut cfg = server_config();
        cfg.ping_interval = Duration::from_millis(100);
        cfg.ping_max = 2;
        let srv = start(b, cfg);
        // A client that never answers a PING gets ping_max of them, then the -ERR. Wherever
        // its CONNECT lands among the ticks (the tick after client activity is skipped; a
        // thread that is slow to send it may even find the connection closed already), that
        // is exactly two PINGs and the -ERR.
        let mut s = connect(srv.addr);
        s.write_all(format!("CONNECT {QUIET}\r\n").as_bytes())
            .unwrap();
        info(&mut s);
        assert_eq!(
            String::from_utf8(read_to_eof(&mut s)).unwrap(),
            "PING\r\nPING\r\n-ERR 'Stale Connection'\r\n"
        );
        srv.stop();
    });
}

#[test]
fn answered_pings_keep_the_connection_open() {
    each(|b| {
        // More answered PINGs than ping_max: each PONG resets the count. ping_max is high so
        // that a client thread slow to answer (a loaded machine) still answers in time: it has
        // ping_max intervals (1 s) per PING.
        const PING_MAX: u32 = 10;
        let mut cfg = server_config();
        cfg.ping_interval = Duration::from_millis(100);
        cfg.ping_max = PING_MAX;
        let srv = start(b, cfg);
        let mut s = connect(srv.addr);
        s.write_all(format!("CONNECT {QUIET}\r\n").as_bytes())
            .unwrap();
        let mut lines = std::io::BufReader::new(s.try_clone().unwrap());
        let mut next = || {
            let mut line = String::new();
            lines.read_line(&mut line).expect("read");
            line
        };
        assert!(next().starts_with("INFO "));
        for _ in 0..=PING_MAX {
            assert_eq!(next(), "PING\r\n");
            s.write_all(b"PONG\r\n").unwrap();
        }
        // Still open: our PING is answered (server PINGs meanwhile answered too).
        s.write_all(b"PING\r\n").unwrap();
        loop {
            match next().as_str() {
                "PONG\r\n" => break,
                "PING\r\n" => s.write_all(b"PONG\r\n").unwrap(),
                other => panic!("unexpected {other:?}"),
            }
        }
        srv.stop();
    });
}

#[test]
fn slow_consumer_is_cut_and_publisher_continues() {
    each(|b| {
        let mut cfg = server_config();
        // The stuck consumer holds the publisher back for this long, once. The reading
        // consumer must never stay behind that long: a deadline of a few hundred ms was
        // missed by its thread on a loaded machine, and it was cut too.
        cfg.write_deadline = Duration::from_secs(2);
        let srv = start(b, cfg);
        let mut stuck = client(srv.addr, QUIET);
        stuck.write_all(b"SUB s 1\r\n").unwrap();
        sync(&mut stuck);
        let mut fast = client(srv.addr, QUIET);
        fast.write_all(b"SUB s 1\r\n").unwrap();
        sync(&mut fast);
        // The fast consumer reads everything on its own thread.
        let reader = std::thread::spawn(move || {
            let mut n = 0usize;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match fast.read(&mut buf) {
                    Ok(0) | Err(_) => return n,
                    Ok(k) => n += k,
                }
            }
        });
        let mut p = client(srv.addr, QUIET);
        let one = {
            let mut m = b"PUB s 1024\r\n".to_vec();
            m.extend(std::iter::repeat_n(b'x', 1024));
            m.extend_from_slice(b"\r\n");
            m
        };
        let burst: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
        // 32 MiB: far more than the stuck consumer's slab and socket buffers.
        for _ in 0..32 {
            p.write_all(&burst).unwrap();
        }
        sync(&mut p);
        // The stuck consumer was cut (its read ends, not times out); the publisher and the
        // fast consumer carried on.
        let mut v = Vec::new();
        stuck
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        if let Err(e) = stuck.read_to_end(&mut v) {
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset,
                "not cut: {e}"
            );
        }
        drop(p);
        let stats = srv.stop();
        assert_eq!(
            stats.slow_consumers, 1,
            "only the stuck consumer: {stats:?}"
        );
        assert!(stats.in_msgs == 32_000, "{stats:?}");
        let got = reader.join().unwrap();
        let per = b"MSG s 1 1024\r\n".len() + 1024 + 2;
        assert!(got >= 32_000 * per, "fast consumer got {got} bytes");
    });
}

#[test]
fn max_connections_refused() {
    each(|b| {
        let mut cfg = server_config();
        cfg.max_connections = 2;
        let srv = start(b, cfg);
        let _a = client(srv.addr, QUIET);
        let _b = client(srv.addr, QUIET);
        let mut c = connect(srv.addr);
        // INFO first, as nats-server sends it, then the refusal.
        let line = info(&mut c);
        assert!(
            line.starts_with("INFO {") && line.contains("\"client_id\":3"),
            "{line}"
        );
        assert_eq!(
            read_to_eof(&mut c),
            b"-ERR 'maximum connections exceeded'\r\n"
        );
        srv.stop();
    });
}

#[test]
fn max_subscriptions_stays_open() {
    each(|b| {
        let srv = start(b, server_config());
        let mut s = client(srv.addr, QUIET);
        let mut subs = String::new();
        for i in 0..ringlet::broker::server::SUBS_PER_CLIENT {
            subs.push_str(&format!("SUB s.{i} {i}\r\n"));
        }
        subs.push_str("SUB one.more 9999\r\nPING\r\n");
        s.write_all(subs.as_bytes()).unwrap();
        expect(&mut s, b"-ERR 'maximum subscriptions exceeded'\r\nPONG\r\n");
        // A reused sid is ignored.
        s.write_all(b"SUB other 0\r\nPUB s.0 1\r\nx\r\nPUB other 1\r\ny\r\nPING\r\n")
            .unwrap();
        expect(&mut s, b"MSG s.0 0 1\r\nx\r\nPONG\r\n");
        srv.stop();
    });
}

#[test]
fn pedantic_and_client_errors() {
    each(|b| {
        let srv = start(b, server_config());
        let mut s = client(srv.addr, r#"{"verbose":false,"pedantic":true}"#);
        s.write_all(b"SUB a.* 1\r\nPUB a.* 1\r\nx\r\nPING\r\n")
            .unwrap();
        // Still processed after the -ERR, as nats-server does.
        expect(
            &mut s,
            b"-ERR 'Invalid Publish Subject'\r\nMSG a.* 1 1\r\nx\r\nPONG\r\n",
        );
        s.write_all(b"MSG a 1 1\r\n").unwrap();
        assert_eq!(
            read_to_eof(&mut s),
            b"-ERR 'Unknown Protocol Operation'\r\n"
        );
        let mut s = client(srv.addr, QUIET);
        s.write_all(b"-ERR 'bye'\r\n").unwrap();
        assert_eq!(read_to_eof(&mut s), b"");
        let mut s = client(srv.addr, QUIET);
        s.write_all(b"PUB foo 3\r\nabcd\r\n").unwrap();
        assert_eq!(
            read_to_eof(&mut s),
            b"-ERR 'Unknown Protocol Operation'\r\n"
        );
        srv.stop();
    });
}

#[test]
fn trickled_large_payload_is_held_whole() {
    each(|b| {
        let srv = start(b, server_config());
        let mut s = client(srv.addr, QUIET);
        s.write_all(b"SUB t 1\r\n").unwrap();
        sync(&mut s);
        let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
        let mut msg = b"PUB t 20000\r\n".to_vec();
        msg.extend_from_slice(&payload);
        msg.extend_from_slice(b"\r\nPING\r\n");
        // Many small receives: far more than the reader's lease quota.
        for chunk in msg.chunks(50) {
            s.write_all(chunk).unwrap();
            std::thread::sleep(Duration::from_micros(100));
        }
        let mut want = b"MSG t 1 20000\r\n".to_vec();
        want.extend_from_slice(&payload);
        want.extend_from_slice(b"\r\nPONG\r\n");
        expect(&mut s, &want);
        srv.stop();
    });
}

#[test]
fn several_matching_subscriptions_get_every_copy() {
    each(|b| {
        let srv = start(b, server_config());
        let mut s = client(srv.addr, QUIET);
        s.write_all(b"SUB w.x 1\r\nSUB w.* 2\r\nSUB w.> 3\r\n")
            .unwrap();
        sync(&mut s);
        let mut p = client(srv.addr, QUIET);
        // 3 copies of 60 KiB messages: more than half a 512 KiB slab after a few, so the
        // publisher is held and resumed many times; every copy must arrive.
        let payload = vec![b'z'; 60 * 1024];
        let mut msg = format!("PUB w.x {}\r\n", payload.len()).into_bytes();
        msg.extend_from_slice(&payload);
        msg.extend_from_slice(b"\r\n");
        let reader = std::thread::spawn(move || {
            let per = format!("MSG w.x 1 {}\r\n", 60 * 1024).len() + 60 * 1024 + 2;
            let mut n = 0usize;
            let mut buf = vec![0u8; 1 << 16];
            while n < 3 * 50 * per {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
            (n, 3 * 50 * per)
        });
        for _ in 0..50 {
            p.write_all(&msg).unwrap();
        }
        sync(&mut p);
        let (got, want) = reader.join().unwrap();
        assert_eq!(got, want);
        let stats = srv.stop();
        assert_eq!(
            (stats.out_msgs, stats.slow_consumers),
            (150, 0),
            "{stats:?}"
        );
    });
}

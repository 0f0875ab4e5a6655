//! The line codec on a real reactor through `frame::Lines`, on BOTH backends: a line echo
//! whose replies outgrow a small write slab (the handler waits for `on_flushed`), lines
//! trickled a byte at a time, LF lines up to a half close, and an over-long line answered
//! with an error that names the limit.

mod frame_util;
mod reactor_util;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use frame_util::*;
use ringlet::frame::{
    EncodeError, LineConfig, LineEnding, LineError, LineHandler, LineIo, LineNext, Lines,
    LinesStats, LinesStorage,
};
use ringlet::pipe::ReadBuf;
use ringlet::reactor::{BackendChoice, CloseReason, Config, ConnId, Reactor, Resources};

both!(
    line_echo_waits_for_room_and_answers_every_line,
    lf_lines_up_to_a_half_close,
    over_long_line_is_an_error_naming_the_limit,
    a_failed_connect_is_reported_then_closed,
);

const BUF: usize = 2048;
/// A small write slab, so replies to a burst outgrow it.
type Res = Resources<16, 256, BUF, 4096, 16>;

fn make(c: Config) -> Reactor<'static> {
    Reactor::new(leak::<Res>(), c).unwrap()
}

/// Answers each line with `<length>:<line>`; waits when the reply does not fit.
#[derive(Default)]
struct LineEcho {
    lines: u64,
    waits: u64,
    errors: Vec<LineError>,
}

impl LineHandler<'static> for LineEcho {
    fn on_line(
        &mut self,
        io: &mut LineIo<'_, '_, 'static>,
        conn: ConnId,
        line: ReadBuf<'_>,
    ) -> LineNext {
        let mut reply = format!("{}:", line.len()).into_bytes();
        reply.extend(line.bytes());
        reply.truncate(io.config().max_line);
        match io.send_line(conn, &reply) {
            Ok(_) => {
                self.lines += 1;
                // Queues a send at the end of the turn (once, however many lines).
                let _ = io.cx().flush(conn);
                LineNext::Continue
            }
            Err(EncodeError::WouldBlock { .. }) => {
                self.waits += 1;
                let _ = io.cx().flush(conn);
                LineNext::Wait
            }
            Err(e) => panic!("reply: {e}"),
        }
    }

    fn on_flushed(&mut self, io: &mut LineIo<'_, '_, 'static>, conn: ConnId) {
        let _ = io.cx().flush(conn);
    }

    fn on_error(&mut self, io: &mut LineIo<'_, '_, 'static>, conn: ConnId, error: LineError) {
        self.errors.push(error);
        // Raw bytes: the error text is longer than the line limit, which `send_line` keeps.
        let _ = io.cx().write(conn, format!("-ERR {error}\r\n").as_bytes());
        io.cx().close(conn); // graceful: the error line goes out first
    }
}

#[derive(Clone, Default, Debug)]
struct Snap {
    stats: LinesStats,
    lines: u64,
    waits: u64,
    errors: usize,
}

fn server(b: BackendChoice, lc: LineConfig) -> Srv<Snap, ()> {
    let rc = Config {
        lease_quota: 16,
        ..config(b)
    };
    serve(
        rc,
        make,
        move |r| {
            let mem = Box::leak(Box::new(LinesStorage::<'static, 16>::new())).mem();
            Lines::new(LineEcho::default(), lc, mem, r.pool().buf_size(), 16).unwrap()
        },
        |l: &Lines<'static, 'static, LineEcho>, _| Snap {
            stats: l.stats(),
            lines: l.handler().lines,
            waits: l.handler().waits,
            errors: l.handler().errors.len(),
        },
        |_, ()| {},
    )
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// The reply to `line`: `<length>:<line>`, cut to the line limit, and the line ending.
fn reply(line: &[u8], max: usize, ending: &[u8]) -> Vec<u8> {
    let mut r = format!("{}:", line.len()).into_bytes();
    r.extend_from_slice(line);
    r.truncate(max);
    r.extend_from_slice(ending);
    r
}

fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    s.read_exact(&mut v).unwrap();
    v
}

fn line_echo_waits_for_room_and_answers_every_line(b: BackendChoice) {
    let lc = LineConfig {
        ending: LineEnding::CrLf,
        max_line: 1000,
    };
    let srv = server(b, lc);
    // A burst of 3000 lines (up to 1000 bytes, with lone CRs and LFs inside) in one write,
    // read back by another thread: the replies outgrow the 4 KiB slab many times over.
    let mut rng = Rng(0x11e5);
    let lines: Vec<Vec<u8>> = (0..3000)
        .map(|i| {
            let n = if i % 100 == 0 {
                1000
            } else {
                rng.below(120) as usize
            };
            (0..n)
                .map(|_| b"abc \r\nxyz"[rng.below(9) as usize])
                .collect::<Vec<u8>>()
        })
        .map(|mut l| {
            // No CRLF inside a line.
            while let Some(i) = l.windows(2).position(|w| w == b"\r\n") {
                l[i] = b'-';
            }
            l
        })
        .collect();
    let wire: Vec<u8> = lines
        .iter()
        .flat_map(|l| l.iter().copied().chain(*b"\r\n"))
        .collect();
    let want: Vec<u8> = lines.iter().flat_map(|l| reply(l, 1000, b"\r\n")).collect();
    let mut c = connect(srv.addr);
    let mut r = c.try_clone().unwrap();
    let n = want.len();
    let reader = thread::spawn(move || read_n(&mut r, n));
    c.write_all(&wire).unwrap();
    assert!(
        reader.join().unwrap() == want,
        "every line answered, in order"
    );

    // One byte at a time.
    let short: [&[u8]; 4] = [b"PING", b"", b"a\rb", b"last"];
    for l in short {
        for byte in l.iter().chain(b"\r\n") {
            c.write_all(&[*byte]).unwrap();
            thread::sleep(Duration::from_millis(1));
        }
    }
    let want: Vec<u8> = short.iter().flat_map(|l| reply(l, 1000, b"\r\n")).collect();
    assert_eq!(read_n(&mut c, want.len()), want);
    drop(c);
    let s = srv.wait("the connection closed", |s| s.stats.lines == 3004);
    assert_eq!(s.lines, 3004);
    assert!(s.waits > 0, "the slab filled and the handler waited");
    assert_eq!(s.stats.protocol_errors, 0);
    let end = srv.stop();
    assert_eq!(end.connections_left, 0);
    assert_eq!(end.leased_after_drop, 0);
}

fn lf_lines_up_to_a_half_close(b: BackendChoice) {
    let lc = LineConfig {
        ending: LineEnding::Lf,
        max_line: 300,
    };
    let srv = server(b, lc);
    let mut rng = Rng(7);
    // Enough replies to fill the slab when the half close arrives: the end of input is
    // reported to the handler only after every line before it was answered.
    let lines: Vec<Vec<u8>> = (0..400)
        .map(|_| {
            let n = rng.below(301) as usize;
            (0..n).map(|_| b"xy\r z"[rng.below(5) as usize]).collect()
        })
        .collect();
    let mut wire: Vec<u8> = lines
        .iter()
        .flat_map(|l| l.iter().copied().chain(*b"\n"))
        .collect();
    wire.extend_from_slice(b"unterminated tail");
    let mut c = connect(srv.addr);
    c.write_all(&wire).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    let want: Vec<u8> = lines.iter().flat_map(|l| reply(l, 300, b"\n")).collect();
    assert!(got == want, "every complete line answered before the close");
    let s = srv.wait("the lines", |s| s.lines == 400);
    assert!(s.waits > 0, "the slab filled and the handler waited");
    assert_eq!(s.stats.protocol_errors, 0);
    let end = srv.stop();
    assert_eq!(end.leased_after_drop, 0);
}

fn over_long_line_is_an_error_naming_the_limit(b: BackendChoice) {
    let lc = LineConfig {
        ending: LineEnding::CrLf,
        max_line: 64,
    };
    let srv = server(b, lc);
    let mut ok = connect(srv.addr);
    let mut bad = connect(srv.addr);
    bad.write_all(b"fine\r\n").unwrap();
    bad.write_all(&[b'x'; 100]).unwrap();
    let mut got = Vec::new();
    bad.read_to_end(&mut got).unwrap();
    assert_eq!(
        String::from_utf8(got).unwrap(),
        "4:fine\r\n-ERR line longer than the limit of 64 bytes (LineConfig::max_line)\r\n"
    );
    // A line of exactly the limit is fine, on another connection that stayed open.
    let max = [b'm'; 64];
    ok.write_all(&max).unwrap();
    ok.write_all(b"\r\n").unwrap();
    let want = reply(&max, 64, b"\r\n");
    assert_eq!(read_n(&mut ok, want.len()), want);
    let s = srv.wait("the error counted", |s| s.errors == 1);
    assert_eq!(s.stats.protocol_errors, 1);
    drop(ok);
    let end = srv.stop();
    assert_eq!(end.leased_after_drop, 0);
}

#[test]
fn a_line_limit_the_lease_quota_cannot_hold_is_refused() {
    let lc = LineConfig {
        ending: LineEnding::CrLf,
        max_line: 6 * 2048 - 2,
    };
    // Quota 16: 6 buffers of 2 KiB beyond the reader's unpacked 8 and a spare 2.
    let mem = Box::leak(Box::new(LinesStorage::<'static, 4>::new())).mem();
    assert!(Lines::new(LineEcho::default(), lc, mem, 2048, 16).is_ok());
    let mem = Box::leak(Box::new(LinesStorage::<'static, 4>::new())).mem();
    let too_long = LineConfig {
        max_line: 6 * 2048 - 1,
        ..lc
    };
    let e = Lines::new(LineEcho::default(), too_long, mem, 2048, 16).unwrap_err();
    assert!(e.to_string().contains("max_line"), "{e}");
}

/// Records the outcome of connects and the closes.
#[derive(Default)]
struct Dialer {
    connected: Vec<(ConnId, bool)>,
    closed: Vec<(ConnId, CloseReason)>,
}

impl LineHandler<'static> for Dialer {
    fn on_line(&mut self, _: &mut LineIo<'_, '_, 'static>, _: ConnId, _: ReadBuf<'_>) -> LineNext {
        LineNext::Continue
    }
    fn on_connect(
        &mut self,
        _: &mut LineIo<'_, '_, 'static>,
        conn: ConnId,
        result: Result<(), ringlet::sys::Error>,
    ) {
        self.connected.push((conn, result.is_ok()));
    }
    fn on_close(&mut self, _: &mut LineIo<'_, '_, 'static>, conn: ConnId, reason: CloseReason) {
        self.closed.push((conn, reason));
    }
}

/// A connect that fails reaches the handler as `on_connect(Err)` and then, as for a plain
/// `Handler`, as `on_close` with `ConnectFailed`.
fn a_failed_connect_is_reported_then_closed(b: BackendChoice) {
    // A port nobody listens on: bind one, then let it go.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut r = make(config(b));
    let storage = Box::leak(Box::new(LinesStorage::<'static, 16>::new()));
    let mut lines = Lines::new(
        Dialer::default(),
        LineConfig::default(),
        storage.mem(),
        BUF,
        usize::from(r.config().lease_quota),
    )
    .unwrap();
    let conn = r.context().connect(addr).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while r.connections() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the connect never ended"
        );
        r.turn(&mut lines, Some(Duration::from_millis(10))).unwrap();
    }
    let h = lines.handler();
    assert_eq!(h.connected, [(conn, false)]);
    assert!(
        matches!(h.closed[..], [(c, CloseReason::ConnectFailed(_))] if c == conn),
        "{:?}",
        h.closed
    );
    assert_eq!(lines.stats().refused, 0);
}

//! Per-connection reactor facts on both backends: the peer's address, and a per-connection
//! lease quota that lets one connection hold more receive buffers than the default.

mod reactor_util;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use reactor_util::*;
use ringlet::pool::Lease;
use ringlet::reactor::{
    BackendChoice, CloseReason, Config, ConnError, ConnId, Context, Handler, ListenerId, Reactor,
    Resources,
};

type Res = Resources<8, 64, 2048, 65536, 16>;

fn reactor(config: Config) -> Reactor<'static> {
    Reactor::new(leak::<Res>(), config).expect("reactor")
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $(#[test] fn $name() { super::$name(ringlet::reactor::BackendChoice::Uring) })*
        }
        mod epoll {
            $(#[test] fn $name() { super::$name(ringlet::reactor::BackendChoice::Epoll) })*
        }
    };
}

both!(
    peer_addr_is_the_clients_address,
    per_connection_lease_quota_raises_and_lowers,
);

/// Answers every accepted connection with its peer address as text, then closes it; after
/// the close, the id is stale for `peer_addr` too.
#[derive(Default)]
struct Peer {
    closed: Vec<ConnId>,
    stale_ok: usize,
}

impl<'r> Handler<'r> for Peer {
    fn on_accept(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, _: ListenerId) {
        for old in &self.closed {
            if cx.peer_addr(*old) == Err(ConnError::Stale) {
                self.stale_ok += 1;
            }
        }
        let text = match cx.peer_addr(conn) {
            Ok(a) => format!("{a}\n"),
            Err(e) => format!("error {e:?}\n"),
        };
        cx.write(conn, text.as_bytes()).unwrap();
        cx.close(conn);
    }

    fn on_data(&mut self, _: &mut Context<'_, 'r>, _: ConnId, _: Lease<'r>) {}

    fn on_close(&mut self, _: &mut Context<'_, 'r>, conn: ConnId, _: CloseReason) {
        self.closed.push(conn);
    }
}

fn peer_addr_is_the_clients_address(backend: BackendChoice) {
    let srv = serve(config(backend), reactor, Peer::default, |h| h.stale_ok);
    for _ in 0..3 {
        let mut c = connect(srv.addr);
        let me = c.local_addr().unwrap();
        let got = String::from_utf8(read_to_eof(&mut c)).unwrap();
        assert_eq!(got, format!("{me}\n"));
    }
    let stale_ok = srv.stop().handler;
    // The second accept saw one closed id, the third two: all stale.
    assert_eq!(stale_ok, 1 + 2);
}

/// Holds every lease of the first connection (the "bulk" one). A line from a second
/// connection changes the bulk connection's quota: `raise\n` to 64, `lower\n` back to the
/// default (and drops the leases held).
struct Holder<'r> {
    bulk: Option<ConnId>,
    held: Vec<Lease<'r>>,
    bytes: Arc<AtomicUsize>,
    quota_seen: Arc<AtomicUsize>,
    max_held: Arc<AtomicUsize>,
}

impl<'r> Handler<'r> for Holder<'r> {
    fn on_accept(&mut self, _: &mut Context<'_, 'r>, conn: ConnId, _: ListenerId) {
        if self.bulk.is_none() {
            self.bulk = Some(conn);
        }
    }

    fn on_data(&mut self, cx: &mut Context<'_, 'r>, conn: ConnId, lease: Lease<'r>) {
        if Some(conn) == self.bulk {
            self.bytes.fetch_add(lease.len(), Ordering::SeqCst);
            self.held.push(lease);
            let n = usize::from(cx.leases_held(conn));
            self.max_held.fetch_max(n, Ordering::SeqCst);
            return;
        }
        let bulk = self.bulk.unwrap();
        match lease.as_slice() {
            b"raise\n" => {
                assert_eq!(cx.set_lease_quota(bulk, Some(0)), Err(ConnError::TooLarge));
                cx.set_lease_quota(bulk, Some(64)).unwrap();
            }
            b"lower\n" => {
                cx.set_lease_quota(bulk, None).unwrap();
                self.held.clear();
            }
            other => panic!("unexpected {other:?}"),
        }
        self.quota_seen
            .store(usize::from(cx.lease_quota(bulk)), Ordering::SeqCst);
        cx.write(conn, b"ok\n").unwrap();
        cx.flush(conn).unwrap();
    }
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

fn per_connection_lease_quota_raises_and_lowers(backend: BackendChoice) {
    const QUOTA: u16 = 4;
    let bytes = Arc::new(AtomicUsize::new(0));
    let quota_seen = Arc::new(AtomicUsize::new(0));
    let max_held = Arc::new(AtomicUsize::new(0));
    let (b2, q2, m2) = (bytes.clone(), quota_seen.clone(), max_held.clone());
    let cfg = Config {
        lease_quota: QUOTA,
        ..config(backend)
    };
    let srv = serve(
        cfg,
        reactor,
        move || Holder {
            bulk: None,
            held: Vec::new(),
            bytes: b2,
            quota_seen: q2,
            max_held: m2,
        },
        |_| (),
    );
    let mut bulk = connect(srv.addr);
    // 96 KiB: 48 buffers of 2 KiB, far past the default quota of 4.
    let total = 96 * 1024;
    bulk.write_all(&vec![7u8; total]).unwrap();
    // At the default quota the connection pauses: the handler holds at most the quota's
    // worth (plus what io_uring had in flight before the pause landed).
    wait_until("the first leases", || bytes.load(Ordering::SeqCst) >= 2048);
    thread::sleep(Duration::from_millis(100));
    let before = bytes.load(Ordering::SeqCst);
    assert!(
        before < total,
        "{before} bytes arrived past a quota of {QUOTA}"
    );
    assert!(max_held.load(Ordering::SeqCst) <= 2 * usize::from(QUOTA));
    // Raised to 64 leases: the rest arrives (48 buffers fit).
    let mut ctl = connect(srv.addr);
    ctl.write_all(b"raise\n").unwrap();
    let mut ok = [0u8; 3];
    ctl.read_exact(&mut ok).unwrap();
    assert_eq!(quota_seen.load(Ordering::SeqCst), 64);
    wait_until("all bytes under the raised quota", || {
        bytes.load(Ordering::SeqCst) == total
    });
    let held = max_held.load(Ordering::SeqCst);
    assert!(
        held > usize::from(QUOTA) && held <= 64,
        "held {held} leases"
    );
    // Back to the default.
    ctl.write_all(b"lower\n").unwrap();
    ctl.read_exact(&mut ok).unwrap();
    assert_eq!(quota_seen.load(Ordering::SeqCst), usize::from(QUOTA));
    drop(bulk);
    drop(ctl);
    let report = srv.stop();
    assert_eq!(report.pool_leased, 0);
}

//! EMFILE on accept: the loop backs off instead of spinning (also when the program holds every
//! timer), keeps serving, and accepts again once descriptors are available. Its own test
//! binary: it lowers the process's descriptor limit, which would disturb tests running beside
//! it.

mod reactor_util;

use std::time::Duration;

use reactor_util::*;
use ringlet::reactor::{BackendChoice, Reactor, Resources};
use ringlet::sys::socket::TcpStream as RawStream;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

mod echo {
    use ringlet::pool::Lease;
    use ringlet::reactor::{ConnId, Context, Handler};

    pub struct Echo;
    impl Handler<'static> for Echo {
        fn on_data(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, lease: Lease<'static>) {
            cx.write(conn, lease.as_slice()).unwrap();
            cx.flush(conn).unwrap();
        }
    }
}

/// Fill every hole in the descriptor table (new descriptors take the lowest free number) and
/// return the holders and the number one past the highest open descriptor: with the limit set
/// there, no new descriptor can be made.
fn fill_descriptor_table() -> (Vec<std::fs::File>, u64) {
    let open = || -> Vec<u64> {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    };
    let top = open().into_iter().max().unwrap();
    let mut holders = Vec::new();
    while (open().len() as u64) < top + 1 {
        holders.push(std::fs::File::open("/dev/null").unwrap());
    }
    (holders, open().into_iter().max().unwrap() + 1)
}

/// With `hold_timers`, the program holds every timer of the reactor (the back-off cannot take
/// one) and must still not spin.
fn emfile(b: BackendChoice, hold_timers: bool) {
    let make = move |c| {
        let mut r = Reactor::new(leak::<Resources<64, 64, 1024, 4096, 1>>(), c).unwrap();
        if hold_timers {
            let mut cx = r.context();
            cx.set_timer(Duration::from_secs(3600), None, 0).unwrap();
            assert!(cx.set_timer(Duration::from_secs(3600), None, 1).is_err());
        }
        r
    };
    let mut cfg = config(b);
    cfg.accept_backoff = Duration::from_millis(50);
    // How many descriptors a server needs for itself (ring or epoll, listener): a dry run.
    let (holders, before) = fill_descriptor_table();
    let dry = serve(cfg, make, || echo::Echo, |_| ());
    let (more, after) = fill_descriptor_table();
    let own = after - before;
    dry.stop();
    drop((holders, more));

    // Sockets made now, connected later: connecting needs no new descriptor.
    let target = "127.0.0.1:0".parse().unwrap();
    let pending: Vec<RawStream> = (0..3)
        .map(|_| RawStream::socket_for(target).unwrap())
        .collect();
    // Room for the server's own descriptors and nothing more. The limit must be in force
    // before the server arms its accept: io_uring takes the limit when an accept is prepared.
    let orig = getrlimit(Resource::Nofile);
    let (holders, top) = fill_descriptor_table();
    let limit = Rlimit {
        current: Some(top + own),
        maximum: orig.maximum,
    };
    setrlimit(Resource::Nofile, limit).unwrap();
    let server = serve(cfg, make, || echo::Echo, |_| ());
    for s in &pending {
        let _ = rustix::net::connect(s, &server.addr);
    }
    // EMFILE is seen (however late the loop gets to its accept), then lasts a while.
    server.wait_stats("an accept to fail with EMFILE", |s| s.accept_errors >= 1);
    std::thread::sleep(Duration::from_millis(300));
    setrlimit(Resource::Nofile, orig).unwrap();
    drop(holders);
    // The backlog is accepted once descriptors are back, and served.
    let mut c = connect(server.addr);
    send(&mut c, b"after");
    assert_eq!(read_n(&mut c, 5), b"after");
    server.wait_connections(4);
    drop(c);
    drop(pending);
    let r = server.stop();
    assert!(r.stats.accept_errors >= 1, "EMFILE was seen: {:?}", r.stats);
    // 300 ms of EMFILE with a 50 ms back-off and 20 ms turns: a few dozen turns, not a spin.
    assert!(
        r.stats.turns < 500,
        "the loop spun: {} turns",
        r.stats.turns
    );
    assert_eq!(r.stats.accepted, 4);
}

/// The descriptor limit is process-wide: one scenario at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn emfile_on_accept_backs_off_and_recovers() {
    // Both backends in turn: the descriptor limit is process-wide.
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for b in backends() {
        emfile(b, false);
    }
}

#[test]
fn emfile_backs_off_when_every_timer_is_in_use() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for b in backends() {
        emfile(b, true);
    }
}

//! EMFILE on accept: the loop backs off instead of spinning, keeps serving, and accepts again
//! once descriptors are available. Its own test binary: it lowers the process's descriptor
//! limit, which would disturb tests running beside it.

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

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

fn emfile(b: BackendChoice) {
    let make = |c| Reactor::new(leak::<Resources<64, 64, 1024, 4096, 8>>(), c).unwrap();
    let mut cfg = config(b);
    cfg.accept_backoff = Duration::from_millis(50);
    let server = serve(cfg, make, || echo::Echo, |_| ());
    // Sockets made now, connected later: connecting needs no new descriptor.
    let pending: Vec<RawStream> = (0..3)
        .map(|_| RawStream::socket_for(server.addr).unwrap())
        .collect();
    let orig = getrlimit(Resource::Nofile);
    // No descriptor to spare: the server's accepts fail with EMFILE.
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(open_fds()),
            maximum: orig.maximum,
        },
    )
    .unwrap();
    for s in &pending {
        let _ = rustix::net::connect(s, &server.addr);
    }
    std::thread::sleep(Duration::from_millis(300));
    setrlimit(Resource::Nofile, orig).unwrap();
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

#[test]
fn emfile_on_accept_backs_off_and_recovers() {
    // One test, both backends in turn: the descriptor limit is process-wide.
    for b in backends() {
        emfile(b);
    }
}

//! Buffers handed to other threads come back: every lease of an echo server goes to worker
//! threads as a `SendLease`, is checksummed and dropped there, while the loop keeps serving.
//! Both backends; bounded in size and time.

mod reactor_util;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use reactor_util::*;
use ringlet::pool::{Lease, SendLease};
use ringlet::reactor::{BackendChoice, ConnId, Context, Handler, Reactor, Resources};

struct Offload {
    workers: Vec<mpsc::Sender<SendLease<'static>>>,
    next: usize,
    handed: Arc<AtomicUsize>,
}

impl Handler<'static> for Offload {
    fn on_data(&mut self, cx: &mut Context<'_, 'static>, conn: ConnId, lease: Lease<'static>) {
        cx.write(conn, lease.as_slice()).expect("slab has room");
        cx.flush(conn).unwrap();
        let travelling = cx.send_lease(lease).expect("a lease of this loop");
        self.handed.fetch_add(1, Ordering::SeqCst);
        self.next = (self.next + 1) % self.workers.len();
        self.workers[self.next].send(travelling).unwrap();
    }
}

fn offload(b: BackendChoice) {
    let handed = Arc::new(AtomicUsize::new(0));
    let processed = Arc::new(AtomicUsize::new(0));
    let (h2, p2) = (handed.clone(), processed.clone());
    let make = |c| Reactor::new(leak::<Resources<32, 128, 2048, 65536, 8>>(), c).unwrap();
    let handler = move || {
        let workers = (0..3)
            .map(|_| {
                let (tx, rx) = mpsc::channel::<SendLease<'static>>();
                let p = p2.clone();
                thread::spawn(move || {
                    for lease in rx {
                        // Checksum on this thread, then drop: the buffer goes home from here.
                        let sum = lease
                            .as_slice()
                            .iter()
                            .fold(0u32, |a, &x| a.rotate_left(5) ^ u32::from(x));
                        std::hint::black_box(sum);
                        p.fetch_add(1, Ordering::SeqCst);
                    }
                });
                tx
            })
            .collect();
        Offload {
            workers,
            next: 0,
            handed: h2,
        }
    };
    let server = serve(config(b), make, handler, |_| ());
    let addr = server.addr;
    let clients: Vec<_> = (0..16u64)
        .map(|i| {
            thread::spawn(move || {
                let mut rng = Rng(i + 11);
                let mut c = connect(addr);
                for _ in 0..100 {
                    let len = 1 + rng.below(3000) as usize;
                    let m = rng.bytes(len);
                    send(&mut c, &m);
                    assert_eq!(read_n(&mut c, m.len()), m);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    // Every lease handed out is processed and dropped on a worker...
    let deadline = Instant::now() + Duration::from_secs(10);
    while processed.load(Ordering::SeqCst) < handed.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "workers did not finish");
        thread::sleep(Duration::from_millis(5));
    }
    // ...and the loop takes each buffer back on a following turn.
    let n = handed.load(Ordering::SeqCst) as u64;
    server.wait_stats("the loop to take every buffer back", |s| s.returned >= n);
    let r = server.stop();
    assert!(n > 0);
    assert_eq!(r.stats.returned, n, "every buffer came back exactly once");
    assert_eq!(r.pool_leased, 0, "pool counters back at full");
}

#[test]
fn leases_dropped_on_other_threads_come_back_uring() {
    offload(BackendChoice::Uring);
}

#[test]
fn leases_dropped_on_other_threads_come_back_epoll() {
    offload(BackendChoice::Epoll);
}

//! Shared helpers for executor and connection-stream tests: a reactor thread whose handler
//! is built once the reactor exists (an `Executor` needs it).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ringlet::exec::TaskStorage;
use ringlet::reactor::{BackendChoice, Config, Handler, Reactor, Resources};

use super::reactor_util::leak;

pub type Small = Resources<64, 256, 2048, 65536, 64>;
/// Task slots of 4 KiB: room for every handler in the tests (`Executor::new` says otherwise).
pub type Tasks<const N: usize> = TaskStorage<N, 4096>;

pub fn config(backend: BackendChoice) -> Config {
    Config {
        backend,
        ..Config::default()
    }
}

pub fn reactor(backend: BackendChoice) -> Reactor<'static> {
    Reactor::new(leak::<Small>(), config(backend)).expect("reactor")
}

/// A reactor thread: `build` makes the handler (and state the thread keeps) once the reactor
/// exists; the loop runs until `stop`; `finish` reports.
pub struct Server<R> {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<R>>,
}

impl<R> Server<R> {
    pub fn stop(mut self) -> R {
        self.stop.store(true, Ordering::SeqCst);
        let join = self.join.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !join.is_finished() {
            assert!(Instant::now() < deadline, "server did not stop within 10 s");
            thread::sleep(Duration::from_millis(5));
        }
        join.join().expect("server thread panicked")
    }
}

impl<R> Drop for Server<R> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

pub fn server<H, X, R, B, F>(backend: BackendChoice, build: B, finish: F) -> Server<R>
where
    H: Handler<'static>,
    R: Send + 'static,
    B: FnOnce(&mut Reactor<'static>) -> (H, X) + Send + 'static,
    F: FnOnce(H, X, &Reactor<'static>) -> R + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let (tx, rx) = mpsc::channel();
    let join = thread::spawn(move || {
        let mut reactor = reactor(backend);
        let l = reactor.listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let (mut handler, extra) = build(&mut reactor);
        tx.send(reactor.listener_addr(l).unwrap()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !reactor.is_stopped() {
            assert!(Instant::now() < deadline, "server ran for 60 s: test hung");
            if stop2.load(Ordering::SeqCst) {
                reactor.stop();
            }
            reactor
                .turn(&mut handler, Some(Duration::from_millis(20)))
                .expect("turn");
        }
        finish(handler, extra, &reactor)
    });
    let addr = rx.recv_timeout(Duration::from_secs(10)).expect("started");
    Server {
        addr,
        stop,
        join: Some(join),
    }
}

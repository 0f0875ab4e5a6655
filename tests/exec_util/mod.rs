//! Shared helpers for executor and connection-stream tests: a reactor thread whose handler
//! is built once the reactor exists (an `Executor` needs it).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use ringlet::exec::TaskStorage;
use ringlet::reactor::{BackendChoice, Config, Handler, Reactor, Resources};

use super::reactor_util::{ServerThread, leak, spawn_server};

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
    thread: ServerThread<R>,
}

impl<R> Server<R> {
    pub fn stop(mut self) -> R {
        self.thread.stop()
    }
}

pub fn server<H, X, R, B, F>(backend: BackendChoice, build: B, finish: F) -> Server<R>
where
    H: Handler<'static>,
    R: Send + 'static,
    B: FnOnce(&mut Reactor<'static>) -> (H, X) + Send + 'static,
    F: FnOnce(H, X, &Reactor<'static>) -> R + Send + 'static,
{
    let (addr, thread) = spawn_server(move |ctl| {
        let mut reactor = reactor(backend);
        ctl.listen(&mut reactor);
        let (mut handler, extra) = build(&mut reactor);
        ctl.run(
            &mut reactor,
            &mut handler,
            Duration::from_millis(20),
            |_, _| {},
        );
        finish(handler, extra, &reactor)
    });
    Server { addr, thread }
}

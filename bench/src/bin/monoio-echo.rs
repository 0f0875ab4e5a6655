//! Echo server on monoio with its io_uring driver: the second peer that `make bench` compares
//! ringlet with. Same shape as `tokio-echo`: one task per connection reads into an owned buffer
//! and writes it back with `write_all`; TCP_NODELAY on every connection.
//!
//! `monoio-echo --addr 127.0.0.1:PORT` prints `listening on ADDR` when ready and exits with status
//! 0 on SIGINT or SIGTERM.

use std::net::SocketAddr;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use ringlet_bench::{SERVER_BUF, announce_listening, exit_on_sigint_sigterm, raise_nofile_limit};

fn main() {
    exit_on_sigint_sigterm();
    let addr = ringlet_bench::server_addr_from_args("monoio-echo");
    if let Err(e) = raise_nofile_limit() {
        eprintln!("monoio-echo: cannot raise RLIMIT_NOFILE: {e}");
    }
    let mut rt = match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("monoio-echo: io_uring runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(serve(addr)) {
        eprintln!("monoio-echo: {e}");
        std::process::exit(1);
    }
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    announce_listening(listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("monoio-echo: accept: {e}");
                continue;
            }
        };
        monoio::spawn(echo(stream));
    }
}

async fn echo(mut stream: TcpStream) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let mut buf: Vec<u8> = Vec::with_capacity(SERVER_BUF);
    loop {
        // monoio reads into the vector's spare capacity and writes its initialised part.
        let (res, b) = stream.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let (res, b) = stream.write_all(buf).await;
        buf = b;
        if res.is_err() {
            return;
        }
        buf.clear();
    }
}

//! Echo server on tokio's current-thread runtime: the peer that `make bench` compares ringlet
//! with. One task per connection reads into a buffer and writes it back with `write_all`;
//! TCP_NODELAY on every connection.
//!
//! `tokio-echo --addr 127.0.0.1:PORT` prints `listening on ADDR` when ready and exits with status
//! 0 on SIGINT or SIGTERM.

use std::net::SocketAddr;

use ringlet_bench::{SERVER_BUF, announce_listening, exit_on_sigint_sigterm, raise_nofile_limit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    exit_on_sigint_sigterm();
    let addr = ringlet_bench::server_addr_from_args("tokio-echo");
    if let Err(e) = raise_nofile_limit() {
        eprintln!("tokio-echo: cannot raise RLIMIT_NOFILE: {e}");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(serve(addr)) {
        eprintln!("tokio-echo: {e}");
        std::process::exit(1);
    }
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    announce_listening(listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            // Out of descriptors and the like: keep serving the connections we have.
            Err(e) => {
                eprintln!("tokio-echo: accept: {e}");
                continue;
            }
        };
        tokio::spawn(echo(stream));
    }
}

async fn echo(mut stream: TcpStream) {
    if stream.set_nodelay(true).is_err() {
        return;
    }
    let mut buf = vec![0u8; SERVER_BUF];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

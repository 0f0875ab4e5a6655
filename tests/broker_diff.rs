//! Differential test: the same byte scripts sent to ringlet's broker (both backends) and to the
//! real nats-server (Debian's package, 2.9), and the replies compared after normalising what
//! legitimately differs (INFO's identity fields). Also: the same configuration files given to
//! `ringlet::broker::config` and to `nats-server -t`.
//!
//! Ignored by default so that `make test` needs only the Rust toolchain; `make test-interop`
//! runs it (`.ci/run` installs nats-server first). The server binary is `$NATS_SERVER`, or
//! `nats-server` on the PATH, or `/usr/sbin/nats-server`; when none exists the test fails.
//!
//! # How a script runs
//!
//! Each client connects on its first step and its INFO line is recorded (normalised). `Send`
//! writes bytes; `Sync` sends `PING` and reads until every PONG owed so far has arrived (or
//! the server closed), so each step's effects are in place before the next; `Eof` reads
//! until the server closes. At the end every open client is synced once more. The
//! transcript of a client is every byte it received, with `<closed>` appended when the server
//! closed it. Nothing is timed: waits end on bytes or on EOF, with a 10 s bound per read so a
//! hung server fails the test instead of hanging it. `RINGLET_DIFF_SHOW=1` prints every
//! nats-server transcript.

mod broker_util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use broker_util::{server_config, start};
use ringlet::broker::config::FileConfig;
use ringlet::broker::server::ServerConfig;
use ringlet::reactor::BackendChoice;

// ---------------------------------------------------------------------------------------------
// The reference server

fn nats_server_path() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return p.into();
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join("nats-server");
            if p.is_file() {
                return p;
            }
        }
    }
    let p = PathBuf::from("/usr/sbin/nats-server");
    assert!(
        p.is_file(),
        "nats-server not found (set NATS_SERVER, or apt-get install nats-server)"
    );
    p
}

/// A nats-server process on a random port of 127.0.0.1, killed on drop.
struct Nats {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Nats {
    fn start(conf: &str) -> Nats {
        let dir = TempDir::new("nats");
        let file = dir.0.join("nats.conf");
        std::fs::write(&file, conf).unwrap();
        let mut child = Command::new(nats_server_path())
            .args(["-a", "127.0.0.1", "-p", "-1", "-c"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start nats-server");
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        // Drain stderr for the server's whole life: a Go program dies of SIGPIPE when it logs
        // to a closed pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("nats-server did not start:\n{}", seen.join("\n")));
            if let Some(rest) = line.split("Listening for client connections on ").nth(1) {
                break rest.trim().parse().expect("listen address");
            }
            seen.push(line);
        };
        Nats {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringlet-diff-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Scripts

#[derive(Clone, Debug)]
enum Step {
    /// Write bytes that the server answers with `pongs` PONGs.
    Send(usize, Vec<u8>, usize),
    /// PING, then read until all PONGs owed have arrived (or the server closed).
    Sync(usize),
    /// Read until the server closes.
    Eof(usize),
}

use Step::{Eof, Sync};

fn send(c: usize, bytes: impl AsRef<[u8]>) -> Step {
    Step::Send(c, bytes.as_ref().to_vec(), 0)
}

/// Bytes that contain one PING of their own.
fn send_ping(c: usize, bytes: impl AsRef<[u8]>) -> Step {
    Step::Send(c, bytes.as_ref().to_vec(), 1)
}

struct Script {
    name: &'static str,
    steps: Vec<Step>,
    /// Clients whose transcripts are compared as one sorted multiset of lines (queue groups:
    /// which member gets a message is random by design, in both servers).
    merge: &'static [usize],
}

fn script(name: &'static str, steps: Vec<Step>) -> Script {
    Script {
        name,
        steps,
        merge: &[],
    }
}

/// `HPUB subject [reply] hdr_len total_len` with its headers and payload.
fn hpub(subject: &str, reply: Option<&str>, headers: &str, payload: &str) -> String {
    let reply = reply.map(|r| format!("{r} ")).unwrap_or_default();
    format!(
        "HPUB {subject} {reply}{} {}\r\n{headers}{payload}\r\n",
        headers.len(),
        headers.len() + payload.len()
    )
}

const QUIET: &str = "CONNECT {\"verbose\":false,\"pedantic\":false}\r\n";
const QUIET_H: &str =
    "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true}\r\n";

struct Client {
    stream: Option<TcpStream>,
    got: Vec<u8>,
    pongs_owed: usize,
    closed: bool,
}

impl Client {
    fn read_some(&mut self) -> bool {
        let s = self.stream.as_mut().unwrap();
        let mut buf = [0u8; 65536];
        match s.read(&mut buf) {
            Ok(0) => {
                self.closed = true;
                false
            }
            Ok(n) => {
                self.got.extend_from_slice(&buf[..n]);
                true
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionReset
                    || e.kind() == std::io::ErrorKind::BrokenPipe =>
            {
                self.closed = true;
                false
            }
            Err(e) => panic!(
                "read: {e}; received so far: {:?}",
                String::from_utf8_lossy(&self.got)
            ),
        }
    }

    fn pongs(&self) -> usize {
        self.got.windows(6).filter(|w| w == b"PONG\r\n").count()
    }
}

/// Runs `script` against `addr`: one transcript per client.
fn play(addr: SocketAddr, script: &Script) -> Vec<String> {
    let n = script
        .steps
        .iter()
        .map(|s| match s {
            Step::Send(c, ..) | Sync(c) | Eof(c) => *c + 1,
        })
        .max()
        .unwrap_or(0);
    let mut clients: Vec<Client> = (0..n)
        .map(|_| Client {
            stream: None,
            got: Vec::new(),
            pongs_owed: 0,
            closed: false,
        })
        .collect();
    let connect = |cl: &mut Client| {
        if cl.stream.is_some() {
            return;
        }
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        cl.stream = Some(s);
        // The INFO line (or, refused, whatever comes before the close).
        while !cl.closed && !cl.got.ends_with(b"\r\n") {
            cl.read_some();
        }
    };
    let steps = script.steps.iter().cloned().chain((0..n).map(Sync));
    for step in steps {
        match step {
            Step::Send(c, bytes, pongs) => {
                let cl = &mut clients[c];
                connect(cl);
                if cl.closed {
                    continue;
                }
                cl.pongs_owed += pongs;
                // A server that already closed makes this fail: that shows in the transcript.
                let _ = cl.stream.as_mut().unwrap().write_all(&bytes);
            }
            Sync(c) => {
                let cl = &mut clients[c];
                connect(cl);
                if cl.closed {
                    continue;
                }
                cl.pongs_owed += 1;
                let _ = cl.stream.as_mut().unwrap().write_all(b"PING\r\n");
                while !cl.closed && cl.pongs() < cl.pongs_owed {
                    cl.read_some();
                }
            }
            Eof(c) => {
                let cl = &mut clients[c];
                connect(cl);
                while !cl.closed {
                    cl.read_some();
                }
            }
        }
    }
    let mut out: Vec<String> = clients
        .iter()
        .map(|cl| {
            let mut t = normalise(&cl.got);
            if cl.closed {
                t.push_str("<closed>");
            }
            t
        })
        .collect();
    if !script.merge.is_empty() {
        let mut lines: Vec<String> = Vec::new();
        for &c in script.merge {
            // MSG lines and their payload lines together, so a message stays whole.
            let t = std::mem::take(&mut out[c]);
            let mut it = t.split_inclusive("\r\n").peekable();
            while let Some(line) = it.next() {
                if line.starts_with("MSG ") {
                    lines.push(format!("{line}{}", it.next().unwrap_or("")));
                } else {
                    lines.push(line.to_string());
                }
            }
        }
        lines.sort();
        out[script.merge[0]] = lines.concat();
    }
    out
}

/// What legitimately differs between the two servers, made equal:
///
/// - INFO's identity fields (server_id, server_name, version, go, host, port, client_id, ...)
///   are replaced by `*`: they differ between any two servers. The field order is
///   nats-server's (Go's struct order) in both, so the rest is compared as written.
/// - When one published message reaches several subscriptions of the same client, the order
///   of those copies is the servers' sublist order, which the protocol leaves open (clients
///   dispatch by sid; the order *within* one subscription is kept, and compared). Such a run
///   of copies (same subject, reply and payload, consecutive) is sorted by sid.
fn normalise(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let mut records: Vec<String> = Vec::new();
    let mut lines = text.split_inclusive("\r\n");
    while let Some(line) = lines.next() {
        if let Some(json) = line
            .strip_prefix("INFO ")
            .and_then(|l| l.strip_suffix(" \r\n"))
        {
            records.push(format!("INFO {} \r\n", normalise_info(json)));
        } else if line.starts_with("MSG ") || line.starts_with("HMSG ") {
            // The message with its payload (which may itself contain CRLFs).
            let size: usize = line
                .trim_end()
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let mut rec = line.to_string();
            let mut body = String::new();
            while body.len() < size + 2 {
                match lines.next() {
                    Some(l) => body.push_str(l),
                    None => break,
                }
            }
            rec.push_str(&body);
            records.push(rec);
        } else {
            records.push(line.to_string());
        }
    }
    // Sort runs of copies of one message (same line but for the sid, same payload) by sid.
    let key = |rec: &str| -> Option<(String, String)> {
        let (line, body) = rec.split_once("\r\n")?;
        let mut words: Vec<&str> = line.split(' ').collect();
        if !(words[0] == "MSG" || words[0] == "HMSG") || words.len() < 4 {
            return None;
        }
        let sid = words.remove(2).to_string();
        Some((format!("{} {body}", words.join(" ")), sid))
    };
    let mut i = 0;
    while i < records.len() {
        let Some((k, _)) = key(&records[i]) else {
            i += 1;
            continue;
        };
        let mut j = i + 1;
        while j < records.len() && key(&records[j]).is_some_and(|(k2, _)| k2 == k) {
            j += 1;
        }
        records[i..j].sort_by_key(|r| key(r).map(|(_, sid)| sid));
        i = j;
    }
    records.concat()
}

/// A flat JSON object with its volatile values replaced.
fn normalise_info(json: &str) -> String {
    const VOLATILE: &[&str] = &[
        "server_id",
        "server_name",
        "version",
        "go",
        "host",
        "port",
        "client_id",
        "client_ip",
        "nonce",
        "git_commit",
    ];
    let Some(body) = json.strip_prefix('{').and_then(|j| j.strip_suffix('}')) else {
        return json.to_string();
    };
    let mut fields = Vec::new();
    // Values in INFO are strings without commas, numbers and booleans.
    for field in body.split(',') {
        let Some((key, value)) = field.split_once(':') else {
            return json.to_string();
        };
        let name = key.trim_matches('"');
        if VOLATILE.contains(&name) {
            fields.push(format!("{key}:*"));
        } else {
            fields.push(format!("{key}:{value}"));
        }
    }
    format!("{{{}}}", fields.join(","))
}

/// The rules of NATS-NOTES.md, as scripts.
fn scripts() -> Vec<Script> {
    let long_subject = |n: usize| "s".repeat(n);
    let mut s = vec![
        // Framing.
        script(
            "ping-pong",
            vec![
                send_ping(0, "PING\r\n"),
                send_ping(0, "ping\r\n"),
                send_ping(0, "PiNg\r\n"),
                send_ping(0, "PING\n"),
                send_ping(0, "PING with text\r\n"),
                send(0, "PONG\r\n"),
                send(0, "pong and text\r\n"),
            ],
        ),
        script(
            "verbose-by-default",
            vec![
                send(0, "CONNECT {}\r\n"),
                send(0, "SUB foo 1\r\nPUB foo 2\r\nhi\r\nUNSUB 1\r\n"),
                Sync(0),
            ],
        ),
        script(
            "verbose-explicit",
            vec![
                send(0, "CONNECT {\"verbose\":true}\r\nSUB a 1\r\nUNSUB 9\r\n"),
                Sync(0),
            ],
        ),
        script(
            "whitespace-and-case",
            vec![
                send(0, QUIET),
                send(0, "sub  foo\t 1 \r\n"),
                send(0, "pub   foo  \t 2\r\nhi\r\n"),
                send(0, "Pub foo 3\nabc\r\n"),
                Sync(0),
            ],
        ),
        script(
            "pub-before-connect",
            vec![send(0, "SUB a 1\r\nPUB a 1\r\nx\r\n"), Sync(0)],
        ),
        script(
            "second-connect",
            vec![
                send(0, QUIET),
                send(0, "CONNECT {\"verbose\":true}\r\n"),
                Sync(0),
            ],
        ),
        // Delivery.
        script(
            "pub-sub-reply",
            vec![
                send(0, QUIET),
                send(0, "SUB foo 1\r\nSUB foo 2\r\n"),
                Sync(0),
                send(1, QUIET),
                send(1, "PUB foo reply.to 5\r\nhello\r\nPUB foo 0\r\n\r\n"),
                Sync(1),
                Sync(0),
            ],
        ),
        script(
            "payload-with-crlf",
            vec![
                send(0, QUIET),
                send(0, "SUB x 1\r\nPUB x 6\r\na\r\nb\r\n\r\n"),
                Sync(0),
            ],
        ),
        script(
            "wildcards",
            vec![
                send(0, QUIET),
                send(
                    0,
                    "SUB a.* 1\r\nSUB a.> 2\r\nSUB > 3\r\nSUB a.b 4\r\nSUB *.b 5\r\nSUB a.*.c 6\r\nSUB foo* 7\r\n",
                ),
                Sync(0),
                send(1, QUIET),
                send(
                    1,
                    "PUB a.b 1\r\n1\r\nPUB a.b.c 1\r\n2\r\nPUB a 1\r\n3\r\nPUB b.b 1\r\n4\r\nPUB foo* 1\r\n5\r\nPUB foox 1\r\n6\r\n",
                ),
                Sync(1),
                Sync(0),
            ],
        ),
        script(
            "sid-reuse-ignored",
            vec![
                send(0, QUIET),
                send(0, "SUB a 1\r\nSUB b 1\r\n"),
                Sync(0),
                send(1, QUIET),
                send(1, "PUB a 1\r\nA\r\nPUB b 1\r\nB\r\n"),
                Sync(1),
                Sync(0),
            ],
        ),
        script(
            "echo-off",
            vec![
                send(
                    0,
                    "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false}\r\n",
                ),
                send(0, "SUB e 1\r\nPUB e 2\r\nno\r\n"),
                Sync(0),
                send(1, QUIET),
                send(1, "PUB e 3\r\nyes\r\n"),
                Sync(1),
                Sync(0),
            ],
        ),
        // Queue groups: one member per group gets each message, plain subscribers all.
        script(
            "queue-groups-deterministic",
            vec![
                send(0, QUIET),
                send(0, "SUB q g1 1\r\nSUB q 2\r\nSUB q g2 3\r\n"),
                Sync(0),
                send(1, QUIET),
                send(1, "PUB q 1\r\nA\r\nPUB q 1\r\nB\r\n"),
                Sync(1),
                Sync(0),
            ],
        ),
        Script {
            name: "queue-group-random-member",
            steps: vec![
                send(0, QUIET),
                send(0, "SUB q g 1\r\n"),
                Sync(0),
                send(1, QUIET),
                send(1, "SUB q g 1\r\n"),
                Sync(1),
                send(2, QUIET),
                send(
                    2,
                    (0..20)
                        .map(|i| format!("PUB q 2\r\n{i:02}\r\n"))
                        .collect::<String>(),
                ),
                Sync(2),
                Sync(0),
                Sync(1),
            ],
            merge: &[0, 1],
        },
        // UNSUB with max.
        script(
            "unsub-max",
            vec![
                send(0, QUIET),
                send(0, "SUB u 1\r\nUNSUB 1 2\r\nSUB v 2\r\n"),
                Sync(0),
                send(1, QUIET),
                send(1, "PUB u 1\r\n1\r\nPUB u 1\r\n2\r\nPUB u 1\r\n3\r\n"),
                Sync(1),
                Sync(0),
                send(0, "UNSUB 2 0\r\nUNSUB 77\r\nUNSUB 77 3\r\n"),
                Sync(0),
                send(1, "PUB v 1\r\n4\r\n"),
                Sync(1),
                Sync(0),
            ],
        ),
        script(
            "unsub-max-already-reached",
            vec![
                send(0, QUIET),
                send(0, "SUB u 1\r\n"),
                Sync(0),
                send(1, QUIET),
                send(1, "PUB u 1\r\n1\r\nPUB u 1\r\n2\r\n"),
                Sync(1),
                Sync(0),
                send(0, "UNSUB 1 1\r\n"),
                Sync(0),
                send(1, "PUB u 1\r\n3\r\n"),
                Sync(1),
                Sync(0),
            ],
        ),
        // Subjects.
        script(
            "invalid-subjects",
            vec![
                send(0, QUIET),
                send(0, "SUB foo..bar 1\r\n"),
                Sync(0),
                send(0, "SUB foo.>.bar 2\r\n"),
                Sync(0),
                send(0, "SUB .foo 3\r\n"),
                Sync(0),
                send(0, "SUB foo. 4\r\n"),
                Sync(0),
                send(0, "SUB foo.*bar 5\r\nSUB > 6\r\nSUB * 7\r\n"),
                Sync(0),
            ],
        ),
        script(
            "pedantic",
            vec![
                send(0, "CONNECT {\"verbose\":false,\"pedantic\":true}\r\n"),
                send(0, "SUB foo.* 1\r\n"),
                Sync(0),
                send(0, "PUB foo.* 1\r\nx\r\n"),
                Sync(0),
                send(
                    0,
                    "PUB foo.> 1\r\ny\r\nPUB foo..b 1\r\nz\r\nPUB foo.b 1\r\nw\r\n",
                ),
                Sync(0),
            ],
        ),
        script(
            "pedantic-verbose",
            vec![
                send(0, "CONNECT {\"verbose\":true,\"pedantic\":true}\r\n"),
                send(0, "PUB a.* 1\r\nx\r\n"),
                Sync(0),
            ],
        ),
        // Headers.
        script(
            "headers",
            vec![
                send(0, QUIET_H),
                send(0, "SUB h 1\r\n"),
                Sync(0),
                send(1, QUIET),
                send(1, "SUB h 2\r\n"),
                Sync(1),
                send(2, QUIET_H),
                send(
                    2,
                    [
                        hpub("h", Some("reply"), "NATS/1.0\r\nA: b\r\n\r\n", "hi"),
                        hpub("h", None, "NATS/1.0\r\n\r\n", ""),
                        hpub("h", None, "", "hello"),
                        hpub("h", None, "NATS/1.0 503\r\n\r\n", "x"),
                    ]
                    .concat(),
                ),
                Sync(2),
                Sync(0),
                Sync(1),
            ],
        ),
        script(
            "hpub-without-headers",
            vec![
                send(0, QUIET),
                send(0, hpub("h", None, "NATS/1.0\r\n\r\n", "")),
                Eof(0),
            ],
        ),
        script(
            "no-responders",
            vec![
                send(0, QUIET_H),
                send(0, "SUB reply.x 1\r\n"),
                Sync(0),
                send(0, "PUB nobody reply.x 2\r\nhi\r\n"),
                Sync(0),
                send(0, "SUB somebody 2\r\nPUB somebody reply.x 2\r\nhi\r\n"),
                Sync(0),
            ],
        ),
        script(
            "no-responders-needs-headers",
            vec![send(0, "CONNECT {\"no_responders\":true}\r\n"), Eof(0)],
        ),
        // Errors that close.
        script(
            "unknown-op",
            vec![send(0, QUIET), send(0, "FOO bar\r\n"), Eof(0)],
        ),
        script(
            "msg-from-client",
            vec![send(0, QUIET), send(0, "MSG foo 1 0\r\n\r\n"), Eof(0)],
        ),
        script(
            "client-err",
            vec![send(0, QUIET), send(0, "-ERR 'x'\r\n"), Eof(0)],
        ),
        script(
            "client-ok-and-info",
            vec![send(0, QUIET), send(0, "+OK\r\nINFO {}\r\n"), Sync(0)],
        ),
        script(
            "max-payload",
            vec![send(0, QUIET), send(0, "PUB foo 65537\r\n"), Eof(0)],
        ),
        script(
            "max-payload-exact",
            vec![
                send(0, QUIET),
                send(0, "SUB big 1\r\n"),
                Sync(0),
                send(0, {
                    let mut v = b"PUB big 65536\r\n".to_vec();
                    v.extend(std::iter::repeat_n(b'p', 65536));
                    v.extend_from_slice(b"\r\n");
                    v
                }),
                Sync(0),
            ],
        ),
        script(
            "size-mismatch",
            vec![send(0, QUIET), send(0, "PUB foo 2\r\nhello\r\n"), Eof(0)],
        ),
        script(
            "pub-no-size",
            vec![send(0, QUIET), send(0, "PUB foo\r\n"), Eof(0)],
        ),
        script(
            "pub-bad-size",
            vec![send(0, QUIET), send(0, "PUB foo bar\r\n"), Eof(0)],
        ),
        script(
            "pub-too-many-args",
            vec![send(0, QUIET), send(0, "PUB a b c 1\r\nx\r\n"), Eof(0)],
        ),
        script(
            "sub-no-sid",
            vec![send(0, QUIET), send(0, "SUB foo\r\n"), Eof(0)],
        ),
        script(
            "sub-too-many-args",
            vec![send(0, QUIET), send(0, "SUB a b c d\r\n"), Eof(0)],
        ),
        script(
            "unsub-no-sid",
            vec![send(0, QUIET), send(0, "UNSUB\r\n"), Eof(0)],
        ),
        script(
            "hpub-hdr-gt-total",
            vec![send(0, QUIET_H), send(0, "HPUB foo 10 5\r\n"), Eof(0)],
        ),
        script(
            "control-line-4096",
            vec![
                send(0, QUIET),
                send(0, format!("PUB {} 0\r\n\r\n", long_subject(4094))),
                Sync(0),
            ],
        ),
        script(
            "control-line-4097",
            vec![
                send(0, QUIET),
                send(0, format!("PUB {} 0\r\n\r\n", long_subject(4095))),
                Eof(0),
            ],
        ),
        script(
            "connect-bad-json",
            vec![send(0, "CONNECT {\"verbose\":tru}\r\n"), Eof(0)],
        ),
        script(
            "connect-nulls",
            vec![
                send(
                    0,
                    "CONNECT {\"verbose\":false,\"name\":null,\"user\":null,\"auth_token\":null,\"pedantic\":null,\"extra\":{\"a\":[1,2]}}\r\n",
                ),
                Sync(0),
            ],
        ),
        script(
            "connect-protocol-2",
            vec![send(0, "CONNECT {\"protocol\":2}\r\n"), Eof(0)],
        ),
    ];
    // A payload split across writes, one byte at a time for the PUB line.
    let mut steps = vec![send(0, QUIET), send(0, "SUB split 1\r\n"), Sync(0)];
    for b in b"PUB split 5\r\nhel" {
        steps.push(send(0, [*b]));
    }
    steps.push(send(0, "lo\r\n"));
    steps.push(Sync(0));
    s.push(script("split-writes", steps));
    s
}

// ---------------------------------------------------------------------------------------------
// The comparison

/// Settings both servers run with: nats-server's file and the same for ringlet.
struct Setup {
    name: &'static str,
    nats_conf: &'static str,
    ringlet: ServerConfig,
    scripts: Vec<Script>,
}

fn with_auth(user: &str, pass: &str, token: &str) -> ServerConfig {
    let mut c = server_config();
    c.user.push_str(user).unwrap();
    c.pass.push_str(pass).unwrap();
    c.token.push_str(token).unwrap();
    c
}

fn setups() -> Vec<Setup> {
    vec![
        Setup {
            name: "default",
            nats_conf: "max_payload: 65536\n",
            ringlet: server_config(),
            scripts: scripts(),
        },
        Setup {
            name: "user-pass",
            nats_conf: "max_payload: 65536\nauthorization { user: u, password: p }\n",
            ringlet: with_auth("u", "p", ""),
            scripts: vec![
                script(
                    "auth-ok",
                    vec![
                        send(
                            0,
                            "CONNECT {\"verbose\":true,\"user\":\"u\",\"pass\":\"p\"}\r\n",
                        ),
                        Sync(0),
                    ],
                ),
                script(
                    "auth-wrong-pass",
                    vec![
                        send(
                            0,
                            "CONNECT {\"verbose\":true,\"user\":\"u\",\"pass\":\"x\"}\r\n",
                        ),
                        Eof(0),
                    ],
                ),
                script(
                    "auth-no-credentials",
                    vec![send(0, "CONNECT {\"verbose\":false}\r\n"), Eof(0)],
                ),
                script("auth-ping-first", vec![send(0, "PING\r\n"), Eof(0)]),
                script("auth-sub-first", vec![send(0, "SUB a 1\r\n"), Eof(0)]),
                script(
                    "auth-token-instead",
                    vec![send(0, "CONNECT {\"auth_token\":\"p\"}\r\n"), Eof(0)],
                ),
            ],
        },
        Setup {
            name: "token",
            nats_conf: "max_payload: 65536\nauthorization { token: s3cr3t }\n",
            ringlet: with_auth("", "", "s3cr3t"),
            scripts: vec![
                script(
                    "token-ok",
                    vec![
                        send(
                            0,
                            "CONNECT {\"verbose\":false,\"auth_token\":\"s3cr3t\"}\r\n",
                        ),
                        Sync(0),
                    ],
                ),
                script(
                    "token-wrong",
                    vec![send(0, "CONNECT {\"auth_token\":\"s3cr3\"}\r\n"), Eof(0)],
                ),
                script(
                    "token-as-user",
                    vec![
                        send(0, "CONNECT {\"user\":\"s3cr3t\",\"pass\":\"s3cr3t\"}\r\n"),
                        Eof(0),
                    ],
                ),
            ],
        },
        Setup {
            name: "auth-timeout",
            nats_conf: "max_payload: 65536\nauthorization { token: t, timeout: 0.3 }\n",
            ringlet: ServerConfig {
                auth_timeout: Duration::from_millis(300),
                ..with_auth("", "", "t")
            },
            scripts: vec![script("auth-timeout", vec![Eof(0)])],
        },
        Setup {
            name: "max-connections",
            nats_conf: "max_payload: 65536\nmax_connections: 1\n",
            ringlet: ServerConfig {
                max_connections: 1,
                ..server_config()
            },
            scripts: vec![script(
                "max-connections",
                vec![send(0, QUIET), Sync(0), Eof(1), Sync(0)],
            )],
        },
        Setup {
            name: "stale",
            nats_conf: "max_payload: 65536\nping_interval: \"300ms\"\nping_max: 2\n",
            ringlet: ServerConfig {
                ping_interval: Duration::from_millis(300),
                ping_max: 2,
                ..server_config()
            },
            // Connects and never answers a PING.
            scripts: vec![script("stale-connection", vec![Eof(0)])],
        },
    ]
}

/// The first differing line of each differing client, with a little context.
fn explain(theirs: &[String], mine: &[String]) -> String {
    let short = |l: &str| {
        let l = format!("{l:?}");
        if l.len() > 100 {
            format!("{}...({} bytes)", &l[..100], l.len())
        } else {
            l
        }
    };
    let mut out = String::new();
    for (c, (t, m)) in theirs.iter().zip(mine).enumerate() {
        if t == m {
            continue;
        }
        let tl: Vec<&str> = t.split_inclusive("\r\n").collect();
        let ml: Vec<&str> = m.split_inclusive("\r\n").collect();
        let i = tl.iter().zip(&ml).take_while(|(a, b)| a == b).count();
        out.push_str(&format!("  client {c}, from line {i}:\n"));
        for (name, lines) in [("nats-server", &tl), ("ringlet    ", &ml)] {
            let shown: Vec<String> = lines[i.min(lines.len())..]
                .iter()
                .take(4)
                .map(|l| short(l))
                .collect();
            out.push_str(&format!("    {name}: {}\n", shown.join(" ")));
        }
    }
    out
}

#[test]
#[ignore = "needs nats-server (Debian package): make test-interop"]
fn same_replies_as_nats_server() {
    let mut failures = Vec::new();
    let mut compared = 0;
    for setup in setups() {
        let nats = Nats::start(setup.nats_conf);
        for backend in [BackendChoice::Uring, BackendChoice::Epoll] {
            let ours = start(backend, setup.ringlet.clone());
            for script in &setup.scripts {
                let theirs = play(nats.addr, script);
                let mine = play(ours.addr, script);
                compared += 1;
                if std::env::var_os("RINGLET_DIFF_SHOW").is_some() {
                    eprintln!("[{}/{}/{backend:?}] {theirs:?}", setup.name, script.name);
                }
                if theirs != mine {
                    failures.push(format!(
                        "[{}/{}/{backend:?}]\n{}",
                        setup.name,
                        script.name,
                        explain(&theirs, &mine)
                    ));
                }
            }
            ours.stop();
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {compared} transcripts differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration files

/// What `nats-server -t -c FILE` says: Ok (valid, maybe with a "should be converted to a
/// duration" warning) or Err(message).
fn nats_accepts(conf: &str) -> Result<(), String> {
    let dir = TempDir::new("conf");
    let file = dir.0.join("c.conf");
    std::fs::write(&file, conf).unwrap();
    let out = Command::new(nats_server_path())
        .arg("-t")
        .arg("-c")
        .arg(&file)
        .output()
        .expect("run nats-server -t");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let warnings_only = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .all(|l| l.contains("should be converted to a duration") || l.contains("is valid"));
    if out.status.success() || warnings_only {
        Ok(())
    } else {
        Err(text.trim().to_string())
    }
}

#[test]
#[ignore = "needs nats-server (Debian package): make test-interop"]
fn config_files_accepted_like_nats_server() {
    // Both accept.
    let same_ok = [
        "port: 4333\n",
        "PORT = 4333 # c\n// c\nhttp 8222\n",
        "port: 4333; http: 8222, max_payload: 1k\n",
        "{ port: 4333 }",
        "\"port\": 4333",
        "'port' 4333",
        "listen: 127.0.0.1:4444",
        "listen: 4444",
        "listen: \":4444\"",
        "listen: \"[::1]:4444\"",
        "listen: 127.0.0.1:-1",
        "http: 127.0.0.1:8222",
        "http_port: 8222",
        "monitor_port: 8222",
        "host: 127.0.0.1\nnet: 127.0.0.1",
        "server_name: \"node-1\"",
        "max_payload: 1MB",
        "max_payload: 1KiB",
        "max_payload: 1mi",
        "max_payload: 007",
        "max_pending: 1k",
        "max_connections: 100\nmax_conn: 5",
        "ping_interval: \"2s\"",
        "ping_interval: 2s",
        "ping_interval: 1h",
        "ping_interval: \"1m30s\"",
        "ping_interval: \"1.5s\"",
        "ping_interval: \"500ms\"",
        "ping_interval: 2",
        "write_deadline: \"2µs\"",
        "write_deadline: 3",
        "ping_max: 5",
        "authorization { user: a, password: b }",
        "authorization { username: a, pass: b }",
        "authorization { user: a }",
        "authorization: { token: c, timeout: 5 }",
        "authorization = { token: \"c d\", timeout: 0.5 }",
        "authorization {\n  user: a\n  password: 'x#y'\n}",
        "authorization { token: c }\nauthorization { user: a, password: b }",
        "debug: true\ntrace: yes\nlogtime: off",
        "log_file: \"/tmp/x.log\"\npid_file: /tmp/x.pid\nports_file_dir: /tmp",
        "server_name: \"a\\tb\"",
        "server_name: \"a b\"",
        "port: 4222\nport: 4223",
        "",
        "# only a comment",
    ];
    // Both refuse.
    let same_err = [
        "foo: bar",
        "authorization { user: a, foo: 1 }",
        "authorization { user: a, password: b, token: c }",
        "port: 4333 foo",
        "port:\n4333",
        "port: \"abc\"",
        "port: 1.5",
        "port: 4_333",
        "max_payload: 1kx",
        "max_payload: 2.5",
        "max_payload: 1.5k",
        "max_payload: \"1MB\"",
        "max_payload: 1t",
        "max_payload: 9223372036854775808",
        "ping_interval: \"2\"",
        "ping_interval: \"abc\"",
        "listen: \"127.0.0.1\"",
        "server_name: foo bar",
        "authorization: 5",
        "include other.conf",
        "port: $NOPE",
        "debug: \"true\"",
    ];
    // Where ringlet refuses what nats-server 2.9 accepts, and why (see broker::config's docs).
    let stricter = [
        // An unknown size suffix: nats-server silently keeps the default.
        "max_payload: 1kbb",
        // Nonsense limits nats-server keeps and then misbehaves with.
        "max_payload: -1",
        "max_connections: -1",
        "ping_max: -1",
        "max_pending: 2MB\nmax_payload: -5",
        "ping_interval: \"-1s\"",
        "port: 70000",
        // Settings ringlet does not implement: refusing beats running without them.
        "cluster { port: 6222 }",
        "tls { }",
        "jetstream: enabled",
        // Variables (nats-server resolves them; not supported here).
        "x = 4222\nport: $x",
    ];
    let mut failures = Vec::new();
    for conf in same_ok {
        let ours = FileConfig::parse(conf.as_bytes());
        let theirs = nats_accepts(conf);
        if ours.is_err() || theirs.is_err() {
            failures.push(format!(
                "{conf:?}: both should accept; ringlet {:?}, nats-server {theirs:?}",
                ours.err().map(|e| e.to_string())
            ));
        }
    }
    for conf in same_err {
        let ours = FileConfig::parse(conf.as_bytes());
        let theirs = nats_accepts(conf);
        if ours.is_ok() || theirs.is_ok() {
            failures.push(format!(
                "{conf:?}: both should refuse; ringlet {:?}, nats-server {theirs:?}",
                ours.map(|_| ())
            ));
        }
    }
    for conf in stricter {
        let ours = FileConfig::parse(conf.as_bytes());
        let theirs = nats_accepts(conf);
        if ours.is_ok() || theirs.is_err() {
            failures.push(format!(
                "{conf:?}: ringlet should refuse what nats-server accepts; ringlet {:?}, nats-server {theirs:?}",
                ours.map(|_| ())
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

//! The static_broker example: its flag and config-file handling as code (`cli.rs`, compiled
//! into this test), and the built binary as a black box (log lines, pid and ports files,
//! `-c`, `-l`, `-t`, a clean stop on SIGTERM).
//!
//! The binary is `target/<profile>/examples/static_broker`, which `cargo test` builds with the
//! other targets; when a narrower command (`cargo test --test broker_cli`) did not, the test
//! builds it with the same cargo and profile first.

#[path = "../examples/static_broker/cli.rs"]
mod cli;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cli::{Command, Options};
use ringlet::reactor::BackendChoice;

// ---------------------------------------------------------------------------------------------
// Flags and files, as code

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Parses `flags` with `file` as the text of any `-c` file.
fn run(flags: &[&str], file: &str) -> Result<Options, String> {
    let text = file.as_bytes().to_vec();
    match cli::parse(args(flags), move |_| Ok(text))? {
        Command::Run(o) => Ok(*o),
        other => panic!("not a run: {other:?}"),
    }
}

fn opts(flags: &[&str], file: &str) -> Options {
    run(flags, file).unwrap_or_else(|e| panic!("{flags:?}: {e}"))
}

#[test]
fn defaults_are_nats_servers() {
    let o = opts(&[], "");
    assert_eq!((o.host.as_str(), o.port), ("0.0.0.0", 4222));
    assert_eq!(o.http_port, None);
    assert_eq!(o.server.max_payload, 1024 * 1024);
    assert_eq!(o.server.max_connections, 65536);
    assert_eq!(o.server.max_pending, 64 * 1024 * 1024);
    assert_eq!(o.server.ping_interval, Duration::from_secs(120));
    assert_eq!(o.server.ping_max, 2);
    assert_eq!(o.server.write_deadline, Duration::from_secs(10));
    assert!(!o.server.auth_required());
    assert!(o.logtime && !o.debug && !o.trace);
    assert_eq!(o.backend, BackendChoice::Auto);
    assert!(o.config_file.is_none() && o.pid_file.is_none() && o.log_file.is_none());
}

#[test]
fn every_flag() {
    let o = opts(
        &[
            "-a",
            "127.0.0.1",
            "-p",
            "-1",
            "-n",
            "node1",
            "-m",
            "8222",
            "-P",
            "/tmp/x.pid",
            "--ports_file_dir",
            "/tmp",
            "-l",
            "/tmp/x.log",
            "-DV",
            "-T=false",
            "--user",
            "u",
            "--pass",
            "p",
            "--backend",
            "epoll",
            "--max_payload",
            "64KB",
            "--max_connections=10",
            "--max_pending",
            "1MB",
            "--ping_interval",
            "1m",
            "--ping_max",
            "5",
            "--write_deadline",
            "3",
        ],
        "",
    );
    assert_eq!((o.host.as_str(), o.port), ("127.0.0.1", -1));
    assert_eq!(o.server.server_name.as_str(), "node1");
    assert_eq!(o.http_port, Some(8222));
    assert_eq!(o.pid_file.as_deref(), Some(Path::new("/tmp/x.pid")));
    assert_eq!(o.ports_file_dir.as_deref(), Some(Path::new("/tmp")));
    assert_eq!(o.log_file.as_deref(), Some(Path::new("/tmp/x.log")));
    assert!(o.debug && o.trace && !o.logtime);
    assert_eq!((o.server.user.as_str(), o.server.pass.as_str()), ("u", "p"));
    assert_eq!(o.backend, BackendChoice::Epoll);
    assert_eq!(o.server.max_payload, 64 * 1024);
    assert_eq!(o.server.max_connections, 10);
    assert_eq!(o.server.max_pending, 1 << 20);
    // On the command line a duration is Go's syntax (1m is a minute) or plain seconds.
    assert_eq!(o.server.ping_interval, Duration::from_secs(60));
    assert_eq!(o.server.ping_max, 5);
    assert_eq!(o.server.write_deadline, Duration::from_secs(3));
    // Long and single-dash spellings, as Go's flag package takes them.
    let o = opts(
        &[
            "--addr=::1",
            "-port",
            "5000",
            "--server_name",
            "x",
            "--auth",
            "t",
            "-D",
        ],
        "",
    );
    assert_eq!((o.host.as_str(), o.port), ("::1", 5000));
    assert_eq!(o.server.token.as_str(), "t");
    assert!(o.debug && !o.trace);
}

#[test]
fn zero_means_default() {
    let o = opts(
        &[
            "-p",
            "0",
            "-m",
            "0",
            "--max_payload",
            "0",
            "--ping_interval",
            "0",
        ],
        "",
    );
    assert_eq!(
        o.port, 4222,
        "-p 0 is nats-server's default port (random is -1)"
    );
    assert_eq!(o.http_port, None, "-m 0 is no monitoring");
    assert_eq!(o.server.max_payload, 1024 * 1024);
    assert_eq!(o.server.ping_interval, Duration::from_secs(120));
    let o = opts(&[], "port: 0\nmax_connections: 0\nwrite_deadline: \"0s\"");
    assert_eq!(o.port, 4222);
    assert_eq!(o.server.max_connections, 65536);
    assert_eq!(o.server.write_deadline, Duration::from_secs(10));
}

const FILE: &str = r#"
listen: 127.0.0.1:4333
http: 127.0.0.2:8333
server_name: from_file
max_payload: 512KB
max_connections: 100
max_pending: 32MB
ping_interval: "30s"
ping_max: 4
write_deadline: "2s"
debug: true
log_file: /tmp/file.log
pid_file: /tmp/file.pid
ports_file_dir: /tmp/files
authorization { token: "file-token", timeout: 1.5 }
"#;

#[test]
fn the_file_sets_everything() {
    let o = opts(&["-c", "ringlet.conf"], FILE);
    assert_eq!(o.config_file.as_deref(), Some(Path::new("ringlet.conf")));
    assert_eq!((o.host.as_str(), o.port), ("127.0.0.1", 4333));
    assert_eq!(
        (o.http_host.as_deref(), o.http_port),
        (Some("127.0.0.2"), Some(8333))
    );
    assert_eq!(o.server.server_name.as_str(), "from_file");
    assert_eq!(o.server.max_payload, 512 * 1024);
    assert_eq!(o.server.max_connections, 100);
    assert_eq!(o.server.max_pending, 32 << 20);
    assert_eq!(o.server.ping_interval, Duration::from_secs(30));
    assert_eq!(o.server.ping_max, 4);
    assert_eq!(o.server.write_deadline, Duration::from_secs(2));
    assert!(o.debug);
    assert_eq!(o.log_file.as_deref(), Some(Path::new("/tmp/file.log")));
    assert_eq!(o.pid_file.as_deref(), Some(Path::new("/tmp/file.pid")));
    assert_eq!(o.ports_file_dir.as_deref(), Some(Path::new("/tmp/files")));
    assert_eq!(o.server.token.as_str(), "file-token");
    assert_eq!(o.server.auth_timeout, Duration::from_millis(1500));
    assert!(o.config_warnings.is_empty());
}

#[test]
fn flags_override_the_file() {
    let o = opts(
        &[
            "-p",
            "-1",
            "-a",
            "0.0.0.0",
            "-m",
            "9000",
            "-n",
            "flag",
            "--max_payload",
            "1k",
            "--ping_max",
            "9",
            "-l",
            "/tmp/flag.log",
            "--user",
            "u",
            "--pass",
            "p",
            "-c",
            "x.conf",
            "-D=false",
        ],
        FILE,
    );
    assert_eq!((o.host.as_str(), o.port), ("0.0.0.0", -1));
    // `-m` sets the port; the file's monitoring host stays.
    assert_eq!(
        (o.http_host.as_deref(), o.http_port),
        (Some("127.0.0.2"), Some(9000))
    );
    assert_eq!(o.server.server_name.as_str(), "flag");
    assert_eq!(o.server.max_payload, 1000);
    assert_eq!(o.server.ping_max, 9);
    assert!(!o.debug);
    assert_eq!(o.log_file.as_deref(), Some(Path::new("/tmp/flag.log")));
    // Auth flags replace the file's authorization as a whole (no token left next to a user).
    assert_eq!(
        (
            o.server.user.as_str(),
            o.server.pass.as_str(),
            o.server.token.as_str()
        ),
        ("u", "p", "")
    );
    // What no flag overrides comes from the file.
    assert_eq!(o.server.max_connections, 100);
    assert_eq!(o.server.write_deadline, Duration::from_secs(2));
    // The order of -c among the flags does not matter.
    let o = opts(&["-c", "x.conf", "-p", "7000"], FILE);
    assert_eq!(o.port, 7000);
}

#[test]
fn file_warnings_are_reported_with_the_file_name() {
    let o = opts(&["-c", "w.conf"], "\nping_interval: 5");
    assert_eq!(o.server.ping_interval, Duration::from_secs(5));
    assert_eq!(
        o.config_warnings,
        ["w.conf:line 2: ping_interval should be converted to a duration (taken as seconds)"]
    );
}

#[test]
fn errors_say_what_and_where() {
    let e = run(&["-c", "bad.conf"], "port: 4222\nfoo: 1\n").unwrap_err();
    assert_eq!(e, "bad.conf:2:1: unknown field \"foo\"");
    let e = run(&["-c", "bad.conf"], "authorization { user: a\n token: b }").unwrap_err();
    assert_eq!(
        e,
        "bad.conf:1:1: authorization: cannot have a user/pass and a token"
    );
    let e = cli::parse(args(&["-c", "/nope/x.conf"]), |p| std::fs::read(p)).unwrap_err();
    assert!(
        e.starts_with("error opening config file /nope/x.conf:"),
        "{e}"
    );
    for (flags, want) in [
        (&["-p", "70000"][..], "-p: expected a port"),
        (&["-p", "x"], "-p: expected a port"),
        (&["-p"], "-p needs a value"),
        (&["--max_payload", "1kbb"], "--max_payload: not a number"),
        (
            &["--max_payload", "-1"],
            "--max_payload: max_payload: out of range",
        ),
        (
            &["--max_payload", "1\nfoo: 2"],
            "--max_payload: not a number",
        ),
        (
            &["--ping_interval", "2x"],
            "--ping_interval: expected a duration",
        ),
        (
            &["--ping_interval", "-1s"],
            "--ping_interval: must not be negative",
        ),
        (&["--backend", "kqueue"], "--backend: auto, uring or epoll"),
        (&["-D=maybe"], "-D: expected true or false"),
        (&["--bogus"], "unknown flag --bogus"),
        (&["stray"], "unexpected argument \"stray\""),
        (
            &["--user", "u", "--auth", "t"],
            "cannot have a user/pass and a token",
        ),
        (&["--pass", "p"], "a password needs a user"),
        (
            &["--max_payload", "2MB", "--max_pending", "1MB"],
            "max_payload (2097152) cannot be higher than max_pending (1048576)",
        ),
    ] {
        let e = run(flags, "").unwrap_err();
        assert!(e.starts_with(want), "{flags:?}: {e}");
    }
    let long = "x".repeat(129);
    assert_eq!(
        run(&["--user", &long], "").unwrap_err(),
        "--user: at most 128 bytes"
    );
}

#[test]
fn help_and_version() {
    assert!(matches!(
        cli::parse(args(&["-p", "1", "-h"]), |_| unreachable!()),
        Ok(Command::Help)
    ));
    assert!(matches!(
        cli::parse(args(&["--version"]), |_| unreachable!()),
        Ok(Command::Version)
    ));
    assert!(cli::usage().contains("--ports_file_dir"));
}

#[test]
fn ports_file_format() {
    let a: SocketAddr = "127.0.0.1:4222".parse().unwrap();
    let b: SocketAddr = "[::1]:4222".parse().unwrap();
    let m: SocketAddr = "127.0.0.1:8222".parse().unwrap();
    // Byte for byte what nats-server 2.9 writes.
    assert_eq!(
        cli::ports_json(&[a, b], &[m]),
        r#"{"nats":["nats://127.0.0.1:4222","nats://[::1]:4222"],"monitoring":["http://127.0.0.1:8222"]}"#
    );
    assert_eq!(
        cli::ports_json(&[a], &[]),
        r#"{"nats":["nats://127.0.0.1:4222"]}"#
    );
}

// ---------------------------------------------------------------------------------------------
// The binary, as a black box

/// The example binary, built on first use if `cargo test` did not build it.
fn binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test executable");
            // target/<profile>/deps/broker_cli-<hash>
            let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
            let bin = profile_dir.join("examples").join("static_broker");
            let release = profile_dir.file_name().is_some_and(|n| n == "release");
            let mut cmd = Process::new(env!("CARGO"));
            cmd.args(["build", "--example", "static_broker"])
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            // Not the variables cargo sets for this test process: build scripts that watch one
            // (ring watches CARGO_MANIFEST_DIR) would rerun here and again in the next
            // `cargo test`, rebuilding their crates every time.
            for (key, _) in std::env::vars_os() {
                let key = key.to_string_lossy();
                if key.starts_with("CARGO_PKG_")
                    || key.starts_with("CARGO_MANIFEST_")
                    || key.starts_with("CARGO_CRATE_")
                    || key.starts_with("CARGO_BIN_")
                    || key == "CARGO_PRIMARY_PACKAGE"
                    || key == "CARGO_TARGET_TMPDIR"
                    || key == "OUT_DIR"
                {
                    cmd.env_remove(&*key);
                }
            }
            if release {
                cmd.arg("--release");
            }
            // Always ask cargo: it rebuilds only when the sources changed, so the test never
            // runs a stale binary.
            let status = cmd.status().expect("run cargo");
            assert!(
                status.success(),
                "cargo build --example static_broker failed"
            );
            assert!(bin.exists(), "{} not built", bin.display());
            bin
        })
        .clone()
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: Mutex<u32> = Mutex::new(0);
        let n = {
            let mut n = N.lock().unwrap();
            *n += 1;
            *n
        };
        let dir =
            std::env::temp_dir().join(format!("ringlet-cli-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running broker: its stderr lines arrive on `lines`.
struct Broker {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Broker {
    fn spawn(flags: &[&str]) -> Broker {
        let mut child = Process::new(binary())
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn static_broker");
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Broker {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (at most 60 s, a safety bound) for a stderr line containing `text`.
    fn wait_line(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {text:?}; stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The client port from the `Listening for client connections on HOST:PORT` line.
    fn port(&mut self) -> u16 {
        let line = self.wait_line("Listening for client connections on ");
        let port = line.rsplit(':').next().unwrap().trim().parse().unwrap();
        self.wait_line("Server is ready");
        port
    }

    fn signal(&mut self, sig: rustix::process::Signal) {
        rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), sig)
            .expect("kill");
    }

    fn terminate(&mut self) {
        self.signal(rustix::process::Signal::TERM);
    }

    /// Waits (at most 60 s) for the exit; returns its code and the rest of stderr.
    fn wait_exit(mut self) -> (i32, Vec<String>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
                    self.seen.push(line);
                }
                return (status.code().unwrap_or(-1), std::mem::take(&mut self.seen));
            }
            assert!(Instant::now() < deadline, "static_broker did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion (for commands that exit at once).
fn run_binary(flags: &[&str]) -> (i32, String, String) {
    let out = Process::new(binary())
        .args(flags)
        .stdin(Stdio::null())
        .output()
        .expect("run static_broker");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn read_until(s: &mut TcpStream, end: &[u8]) -> String {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(end) {
        assert_eq!(
            s.read(&mut b).expect("read"),
            1,
            "EOF after {:?}",
            String::from_utf8_lossy(&got)
        );
        got.push(b[0]);
    }
    String::from_utf8(got).unwrap()
}

fn connect(port: u16) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let info = read_until(&mut s, b"\r\n");
    (s, info)
}

#[test]
fn binary_with_config_file_pid_and_ports_files() {
    let dir = TempDir::new("run");
    let conf = dir.path("ringlet.conf");
    std::fs::write(
        &conf,
        "# as nats-server reads it\nserver_name: cfg-node\nmax_payload: 64KB\n\
         authorization {\n  token: \"s3cr3t\"\n}\nport: 1 // the flag wins\n",
    )
    .unwrap();
    let pid_file = dir.path("broker.pid");
    let dir_arg = dir.0.to_str().unwrap().to_string();
    let mut b = Broker::spawn(&[
        "-c",
        conf.to_str().unwrap(),
        "-a",
        "127.0.0.1",
        "-p",
        "-1",
        "-m",
        "-1",
        "-P",
        pid_file.to_str().unwrap(),
        "--ports_file_dir",
        &dir_arg,
        "--backend",
        "epoll",
    ]);
    b.wait_line(&format!("Using configuration file: {}", conf.display()));
    let monitor_line = b.wait_line("Starting http monitor on 127.0.0.1:");
    let monitor_port: u16 = monitor_line.rsplit(':').next().unwrap().parse().unwrap();
    let port = b.port();
    assert_ne!(port, 1);
    let pid = b.child.id();
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), pid.to_string());
    let ports_file = dir.path(&format!("static_broker_{pid}.ports"));
    assert_eq!(
        std::fs::read_to_string(&ports_file).unwrap(),
        format!(
            r#"{{"nats":["nats://127.0.0.1:{port}"],"monitoring":["http://127.0.0.1:{monitor_port}"]}}"#
        )
    );
    // Monitoring answers on its port, with the file's settings.
    let mut m = TcpStream::connect(("127.0.0.1", monitor_port)).expect("monitor");
    m.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    m.write_all(b"GET /varz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut varz = String::new();
    m.read_to_string(&mut varz).unwrap();
    assert!(varz.starts_with("HTTP/1.1 200"), "{varz}");
    assert!(varz.contains(r#""server_name": "cfg-node""#), "{varz}");
    assert!(varz.contains(r#""max_payload": 65536"#), "{varz}");

    // The settings reached the broker.
    let (mut s, info) = connect(port);
    assert!(
        info.starts_with("INFO {") && info.ends_with("} \r\n"),
        "{info}"
    );
    for field in [
        r#""server_name":"cfg-node""#,
        r#""max_payload":65536"#,
        r#""auth_required":true"#,
        r#""host":"127.0.0.1""#,
        &format!(r#""port":{port}"#),
    ] {
        assert!(info.contains(field), "{field} not in {info}");
    }
    s.write_all(b"CONNECT {\"verbose\":false,\"auth_token\":\"s3cr3t\"}\r\nPING\r\n")
        .unwrap();
    assert_eq!(read_until(&mut s, b"\r\n"), "PONG\r\n");
    let (mut bad, _) = connect(port);
    bad.write_all(b"CONNECT {\"verbose\":false,\"auth_token\":\"wrong\"}\r\n")
        .unwrap();
    assert_eq!(
        read_until(&mut bad, b"\r\n"),
        "-ERR 'Authorization Violation'\r\n"
    );

    b.terminate();
    let (code, lines) = b.wait_exit();
    assert_eq!(code, 0, "{lines:?}");
    let text = lines.join("\n");
    assert!(text.contains("[INF] Initiating Shutdown..."), "{text}");
    assert!(text.ends_with("[INF] Server Exiting.."), "{text}");
    assert!(!ports_file.exists(), "the ports file is removed at exit");
    assert!(
        pid_file.exists(),
        "the pid file stays, as nats-server leaves it"
    );
    // Log lines look like nats-server's: [pid] yyyy/mm/dd hh:mm:ss.uuuuuu [INF] ...
    let first = &text[..text.find('\n').unwrap()];
    let prefix = format!("[{pid}] ");
    assert!(first.starts_with(&prefix), "{first}");
    let stamp = &first[prefix.len()..];
    let bytes = stamp.as_bytes();
    assert!(
        bytes.len() > 27
            && bytes[4] == b'/'
            && bytes[7] == b'/'
            && bytes[10] == b' '
            && bytes[13] == b':'
            && bytes[19] == b'.'
            && &stamp[26..33] == " [INF] ",
        "{first}"
    );
}

#[test]
fn binary_logs_to_a_file_with_l() {
    let dir = TempDir::new("log");
    let log = dir.path("broker.log");
    let mut b = Broker::spawn(&[
        "-a",
        "127.0.0.1",
        "-p",
        "-1",
        "-l",
        log.to_str().unwrap(),
        "-D",
    ]);
    // Nothing on stderr; the file fills up.
    let deadline = Instant::now() + Duration::from_secs(60);
    let port = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("Server is ready") {
            let line = text
                .lines()
                .find(|l| l.contains("Listening for client connections on 127.0.0.1:"))
                .expect("listening line");
            assert!(
                text.contains("[DBG] max_payload"),
                "-D adds debug lines: {text}"
            );
            break line.rsplit(':').next().unwrap().parse::<u16>().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no 'Server is ready' in {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let (mut s, _) = connect(port);
    s.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_until(&mut s, b"\r\n"), "PONG\r\n");
    // Ctrl-C stops it cleanly too.
    b.signal(rustix::process::Signal::INT);
    let (code, stderr) = b.wait_exit();
    assert_eq!(code, 0);
    assert!(
        stderr.is_empty(),
        "with -l nothing goes to stderr: {stderr:?}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("[DBG] Trapped \"interrupt\" signal"),
        "{text}"
    );
    assert!(
        text.trim_end().ends_with("[INF] Server Exiting.."),
        "{text}"
    );
}

#[test]
fn binary_rejects_bad_config_and_flags() {
    let dir = TempDir::new("bad");
    let conf = dir.path("bad.conf");
    std::fs::write(&conf, "port: 4222\n  cluster { port: 6222 }\n").unwrap();
    let (code, out, err) = run_binary(&["-c", conf.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!(
            "static_broker: {}:2:3: \"cluster\" is a nats-server setting ringlet does not support\n",
            conf.display()
        )
    );
    let (code, _, err) = run_binary(&["--max_payload", "100MB"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot be higher than max_pending"), "{err}");
    let (code, _, err) = run_binary(&["--max_payload", "8MB", "--max_pending", "8MB"]);
    assert_eq!(code, 1);
    assert!(err.contains("too large"), "capacity of this build: {err}");
    let (code, _, err) = run_binary(&["--nope"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("static_broker: unknown flag --nope"),
        "{err}"
    );
}

#[test]
fn binary_test_help_version() {
    let dir = TempDir::new("t");
    let conf = dir.path("ok.conf");
    std::fs::write(&conf, "listen: 127.0.0.1:4222\nping_interval: \"1m\"\n").unwrap();
    let (code, out, _) = run_binary(&["-t", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!(
            "static_broker: configuration file {} is valid\n",
            conf.display()
        )
    );
    let (code, out, _) = run_binary(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("Usage: static_broker"), "{out}");
    let (code, out, _) = run_binary(&["-v"]);
    assert_eq!(code, 0);
    assert!(out.contains("nats-server v2.9.10 protocol"), "{out}");
}

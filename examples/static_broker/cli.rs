//! static_broker's command line and configuration file, merged as nats-server merges them:
//! built-in defaults, then the file given with `-c`, then the flags (a flag always wins).
//!
//! Kept apart from `main.rs` (and free of I/O but for the file reader passed in) so that
//! `tests/broker_cli.rs` tests it as plain code.

// Compiled into the example and into tests/broker_cli.rs; each uses a different part.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use ringlet::broker::config::{FileConfig, parse_go_duration};
use ringlet::broker::server::ServerConfig;
use ringlet::reactor::BackendChoice;

/// nats-server's default client port.
pub const DEFAULT_PORT: i32 = 4222;

/// Everything the broker binary runs with.
#[derive(Clone, Debug)]
pub struct Options {
    /// Client listen host (`-a`, `listen`, `host`).
    pub host: String,
    /// Client port (`-p`, `listen`, `port`); -1: random.
    pub port: i32,
    /// Monitoring host (`http: host:port`); `None`: the client host.
    pub http_host: Option<String>,
    /// Monitoring port (`-m`, `http`, `http_port`); `None`: no monitoring; -1: random.
    pub http_port: Option<i32>,
    /// Event loop backend.
    pub backend: BackendChoice,
    /// `-D`: debug log lines.
    pub debug: bool,
    /// `-V`: protocol trace log lines.
    pub trace: bool,
    /// `-T`: time stamps on log lines (default on).
    pub logtime: bool,
    /// `-l`: log to this file instead of stderr.
    pub log_file: Option<PathBuf>,
    /// `-P`: write the process id here.
    pub pid_file: Option<PathBuf>,
    /// `--ports_file_dir`: write `<exe>_<pid>.ports` here.
    pub ports_file_dir: Option<PathBuf>,
    /// Identity, limits and authentication for the broker.
    pub server: ServerConfig,
    /// The `-c` file, if any.
    pub config_file: Option<PathBuf>,
    /// The file's warnings, as log lines.
    pub config_warnings: Vec<String>,
    /// `-t`: check the configuration and exit.
    pub test_config: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            host: "0.0.0.0".into(),
            port: DEFAULT_PORT,
            http_host: None,
            http_port: None,
            backend: BackendChoice::Auto,
            debug: false,
            trace: false,
            logtime: true,
            log_file: None,
            pid_file: None,
            ports_file_dir: None,
            server: ServerConfig::default(),
            config_file: None,
            config_warnings: Vec::new(),
            test_config: false,
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run (or, with `-t`, check) with these options.
    Run(Box<Options>),
    /// `-h`: print [`usage`].
    Help,
    /// `-v`: print the version.
    Version,
}

/// The help text.
pub fn usage() -> &'static str {
    "Usage: static_broker [options]

Server options (nats-server's names):
    -a, --addr, --net <host>         Bind to host address (default: 0.0.0.0)
    -p, --port <port>                Use port for clients (default: 4222, -1: random)
    -n, --name, --server_name <name> Server name (default: the server id)
    -P, --pid <file>                 File to store the process id
    -m, --http_port <port>           Port for HTTP monitoring (-1: random)
    -c, --config <file>              Configuration file (nats-server format)
    -t                               Test the configuration and exit
        --ports_file_dir <dir>       Write <executable>_<pid>.ports there
        --backend auto|uring|epoll   Event loop backend (default: auto)

Logging:
    -l, --log <file>                 Log to this file instead of stderr
    -T, --logtime[=false]            Time stamps on log lines (default: true)
    -D, --debug    -V, --trace    -DV

Authorization:
        --user <user>   --pass <password>   --auth <token>

Limits (also settable in the file):
        --max_payload <size>         e.g. 1MB (default: 1MB)
        --max_connections <n>        (default: 65536)
        --max_pending <size>         (default: 64MB)
        --ping_interval <duration>   e.g. 2m, or seconds (default: 2m)
        --ping_max <n>               (default: 2)
        --write_deadline <duration>  (default: 10s)

    -h, --help    -v, --version"
}

/// Flags as given; `None`: not on the command line.
#[derive(Default)]
struct Flags {
    host: Option<String>,
    port: Option<i32>,
    http_port: Option<i32>,
    name: Option<String>,
    pid_file: Option<PathBuf>,
    ports_file_dir: Option<PathBuf>,
    log_file: Option<PathBuf>,
    config: Option<PathBuf>,
    test_config: bool,
    logtime: Option<bool>,
    debug: Option<bool>,
    trace: Option<bool>,
    user: Option<String>,
    pass: Option<String>,
    token: Option<String>,
    backend: Option<BackendChoice>,
    max_payload: Option<u32>,
    max_connections: Option<u64>,
    max_pending: Option<u64>,
    ping_interval: Option<Duration>,
    ping_max: Option<u32>,
    write_deadline: Option<Duration>,
}

fn hstring<const N: usize>(v: &str, what: &str) -> Result<heapless::String<N>, String> {
    let mut s = heapless::String::new();
    s.push_str(v)
        .map_err(|_| format!("{what}: at most {N} bytes"))?;
    Ok(s)
}

/// A port flag: -1 (random) or 0..=65535.
fn port_flag(flag: &str, v: &str) -> Result<i32, String> {
    match v.parse::<i32>() {
        Ok(n) if (-1..=65535).contains(&n) => Ok(n),
        _ => Err(format!(
            "{flag}: expected a port (0..65535, or -1 for random), got {v:?}"
        )),
    }
}

/// A limit flag, read as the same setting in a configuration file would be (size suffixes,
/// ranges), so flags and files accept the same values.
fn limit_flag(flag: &str, key: &str, v: &str) -> Result<FileConfig, String> {
    if v.contains(['"', '\'', '\n', '\r', '#', ';', ',', '{', '}', '$']) {
        return Err(format!("{flag}: not a number: {v:?}"));
    }
    FileConfig::parse(format!("{key}: {v}").as_bytes()).map_err(|e| format!("{flag}: {}", e.kind))
}

/// A duration flag: Go's duration syntax (`2s`, `1m30s`), or a plain number of seconds.
fn duration_flag(flag: &str, v: &str) -> Result<Duration, String> {
    let nanos = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        v.parse::<u64>()
            .ok()
            .and_then(|s| i128::from(s).checked_mul(1_000_000_000))
    } else {
        parse_go_duration(v.as_bytes())
    };
    match nanos.map(u64::try_from) {
        Some(Ok(n)) => Ok(Duration::from_nanos(n)),
        Some(Err(_)) => Err(format!("{flag}: must not be negative: {v:?}")),
        None => Err(format!(
            "{flag}: expected a duration (2s, 1m30s, 500ms) or seconds, got {v:?}"
        )),
    }
}

fn bool_value(flag: &str, v: &str) -> Result<bool, String> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{flag}: expected true or false, got {v:?}")),
    }
}

fn parse_flags<I: IntoIterator<Item = String>>(args: I) -> Result<Result<Flags, Command>, String> {
    let mut f = Flags::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        if arg == "--" {
            if let Some(extra) = it.next() {
                return Err(format!("unexpected argument {extra:?}\n\n{}", usage()));
            }
            break;
        }
        if !arg.starts_with('-') || arg == "-" {
            return Err(format!("unexpected argument {arg:?}\n\n{}", usage()));
        }
        // Go's flag package: `-flag`, `--flag`, `-flag=value`, `-flag value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let name = flag.trim_start_matches('-');
        let mut value = || -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it.next().ok_or_else(|| format!("{flag} needs a value")),
            }
        };
        let boolean = |inline: &Option<String>| -> Result<bool, String> {
            inline.as_deref().map_or(Ok(true), |v| bool_value(&flag, v))
        };
        match name {
            "a" | "addr" | "net" => f.host = Some(value()?),
            "p" | "port" => f.port = Some(port_flag(&flag, &value()?)?),
            "m" | "http_port" => f.http_port = Some(port_flag(&flag, &value()?)?),
            "n" | "name" | "server_name" => f.name = Some(value()?),
            "P" | "pid" => f.pid_file = Some(value()?.into()),
            "ports_file_dir" => f.ports_file_dir = Some(value()?.into()),
            "l" | "log" => f.log_file = Some(value()?.into()),
            "c" | "config" => f.config = Some(value()?.into()),
            "t" => f.test_config = boolean(&inline)?,
            "T" | "logtime" => f.logtime = Some(boolean(&inline)?),
            "D" | "debug" => f.debug = Some(boolean(&inline)?),
            "V" | "trace" => f.trace = Some(boolean(&inline)?),
            "DV" => {
                let on = boolean(&inline)?;
                f.debug = Some(on);
                f.trace = Some(on);
            }
            "user" => f.user = Some(value()?),
            "pass" => f.pass = Some(value()?),
            "auth" => f.token = Some(value()?),
            "backend" => {
                f.backend = Some(match value()?.as_str() {
                    "auto" => BackendChoice::Auto,
                    "uring" => BackendChoice::Uring,
                    "epoll" => BackendChoice::Epoll,
                    other => return Err(format!("{flag}: auto, uring or epoll, not {other:?}")),
                })
            }
            "max_payload" => {
                f.max_payload = limit_flag(&flag, "max_payload", &value()?)?.max_payload;
                f.max_payload
                    .get_or_insert(ServerConfig::default().max_payload);
            }
            "max_connections" => {
                f.max_connections =
                    limit_flag(&flag, "max_connections", &value()?)?.max_connections;
                f.max_connections
                    .get_or_insert(ServerConfig::default().max_connections as u64);
            }
            "max_pending" => {
                f.max_pending = limit_flag(&flag, "max_pending", &value()?)?.max_pending;
                f.max_pending
                    .get_or_insert(ServerConfig::default().max_pending as u64);
            }
            "ping_max" => {
                f.ping_max = limit_flag(&flag, "ping_max", &value()?)?.ping_max;
                f.ping_max.get_or_insert(ServerConfig::default().ping_max);
            }
            "ping_interval" => {
                let d = duration_flag(&flag, &value()?)?;
                f.ping_interval = Some(if d.is_zero() {
                    ServerConfig::default().ping_interval
                } else {
                    d
                });
            }
            "write_deadline" => {
                let d = duration_flag(&flag, &value()?)?;
                f.write_deadline = Some(if d.is_zero() {
                    ServerConfig::default().write_deadline
                } else {
                    d
                });
            }
            "h" | "help" => return Ok(Err(Command::Help)),
            "v" | "version" => return Ok(Err(Command::Version)),
            _ => return Err(format!("unknown flag {flag}\n\n{}", usage())),
        }
    }
    Ok(Ok(f))
}

/// Parses the command line (without the program name), reading the `-c` file through
/// `read_file`, and merges defaults, file and flags.
///
/// # Errors
///
/// A message for the user: a bad flag, or the file's first error as `FILE:LINE:COLUMN: what`.
pub fn parse<I, R>(args: I, read_file: R) -> Result<Command, String>
where
    I: IntoIterator<Item = String>,
    R: FnOnce(&Path) -> std::io::Result<Vec<u8>>,
{
    let f = match parse_flags(args)? {
        Ok(f) => f,
        Err(cmd) => return Ok(cmd),
    };
    // Zero, in the file or in a flag, means the default, as in nats-server.
    let mut o = Options::default();
    if let Some(path) = &f.config {
        let text = read_file(path)
            .map_err(|e| format!("error opening config file {}: {e}", path.display()))?;
        let file = FileConfig::parse(&text)
            .map_err(|e| format!("{}:{}:{}: {}", path.display(), e.line, e.column, e.kind))?;
        for w in file.warnings() {
            o.config_warnings.push(format!("{}:{w}", path.display()));
        }
        if file.warnings_dropped > 0 {
            o.config_warnings.push(format!(
                "{}: {} more warnings",
                path.display(),
                file.warnings_dropped
            ));
        }
        apply_file(&mut o, &file)?;
        o.config_file = Some(path.clone());
    }
    apply_flags(&mut o, f)?;
    if o.server.user.is_empty() && !o.server.pass.is_empty() {
        return Err("a password needs a user (--user or authorization.user)".into());
    }
    if !o.server.user.is_empty() && !o.server.token.is_empty() {
        return Err("cannot have a user/pass and a token".into());
    }
    if o.server.max_payload as usize > o.server.max_pending {
        return Err(format!(
            "max_payload ({}) cannot be higher than max_pending ({})",
            o.server.max_payload, o.server.max_pending
        ));
    }
    Ok(Command::Run(Box::new(o)))
}

fn apply_file(o: &mut Options, file: &FileConfig) -> Result<(), String> {
    if let Some(h) = &file.host {
        o.host = h.as_str().into();
    }
    if let Some(p) = file.port {
        o.port = p;
    }
    if let Some(h) = &file.http_host {
        o.http_host = Some(h.as_str().into());
    }
    if file.http_port.is_some() {
        o.http_port = file.http_port;
    }
    if let Some(n) = &file.server_name {
        o.server.server_name = hstring(n, "server_name")?;
    }
    let s = &mut o.server;
    if let Some(v) = file.max_payload {
        s.max_payload = v;
    }
    if let Some(v) = file.max_connections {
        s.max_connections = usize::try_from(v).unwrap_or(usize::MAX);
    }
    if let Some(v) = file.max_pending {
        s.max_pending = usize::try_from(v).unwrap_or(usize::MAX);
    }
    if let Some(v) = file.ping_interval {
        s.ping_interval = v;
    }
    if let Some(v) = file.ping_max {
        s.ping_max = v;
    }
    if let Some(v) = file.write_deadline {
        s.write_deadline = v;
    }
    if let Some(v) = &file.user {
        s.user = hstring(v, "authorization.user")?;
    }
    if let Some(v) = &file.pass {
        s.pass = hstring(v, "authorization.password")?;
    }
    if let Some(v) = &file.token {
        s.token = hstring(v, "authorization.token")?;
    }
    if let Some(v) = file.auth_timeout {
        s.auth_timeout = v;
    }
    if let Some(v) = file.debug {
        o.debug = v;
    }
    if let Some(v) = file.trace {
        o.trace = v;
    }
    if let Some(v) = file.logtime {
        o.logtime = v;
    }
    if let Some(v) = &file.log_file {
        o.log_file = Some(v.as_str().into());
    }
    if let Some(v) = &file.pid_file {
        o.pid_file = Some(v.as_str().into());
    }
    if let Some(v) = &file.ports_file_dir {
        o.ports_file_dir = Some(v.as_str().into());
    }
    Ok(())
}

fn apply_flags(o: &mut Options, f: Flags) -> Result<(), String> {
    if let Some(h) = f.host {
        o.host = h;
    }
    if let Some(p) = f.port {
        // `-p 0` is nats-server's default port, not a random one (that is -1).
        o.port = if p == 0 { DEFAULT_PORT } else { p };
    }
    if let Some(p) = f.http_port {
        // `-m 0`: no monitoring.
        o.http_port = if p == 0 { None } else { Some(p) };
    }
    if let Some(n) = f.name {
        o.server.server_name = hstring(&n, "--name")?;
    }
    if f.pid_file.is_some() {
        o.pid_file = f.pid_file;
    }
    if f.ports_file_dir.is_some() {
        o.ports_file_dir = f.ports_file_dir;
    }
    if f.log_file.is_some() {
        o.log_file = f.log_file;
    }
    o.test_config = f.test_config;
    if let Some(v) = f.logtime {
        o.logtime = v;
    }
    if let Some(v) = f.debug {
        o.debug = v;
    }
    if let Some(v) = f.trace {
        o.trace = v;
    }
    // Authentication flags replace the file's authorization as a whole: a `--user` on the
    // command line next to a token in the file would otherwise leave both.
    if f.user.is_some() || f.pass.is_some() || f.token.is_some() {
        let s = &mut o.server;
        s.user = hstring(f.user.as_deref().unwrap_or(""), "--user")?;
        s.pass = hstring(f.pass.as_deref().unwrap_or(""), "--pass")?;
        s.token = hstring(f.token.as_deref().unwrap_or(""), "--auth")?;
    }
    if let Some(b) = f.backend {
        o.backend = b;
    }
    let s = &mut o.server;
    if let Some(v) = f.max_payload {
        s.max_payload = v;
    }
    if let Some(v) = f.max_connections {
        s.max_connections = usize::try_from(v).unwrap_or(usize::MAX);
    }
    if let Some(v) = f.max_pending {
        s.max_pending = usize::try_from(v).unwrap_or(usize::MAX);
    }
    if let Some(v) = f.ping_interval {
        s.ping_interval = v;
    }
    if let Some(v) = f.ping_max {
        s.ping_max = v;
    }
    if let Some(v) = f.write_deadline {
        s.write_deadline = v;
    }
    Ok(())
}

/// nats-server's ports file: `{"nats":["nats://H:P",..],"monitoring":["http://H:P",..]}`
/// (no `monitoring` when there is no monitoring port), no trailing new line.
pub fn ports_json(nats: &[std::net::SocketAddr], monitoring: &[std::net::SocketAddr]) -> String {
    let list = |scheme: &str, addrs: &[std::net::SocketAddr]| -> String {
        let items: Vec<String> = addrs
            .iter()
            .map(|a| format!("\"{scheme}://{a}\""))
            .collect();
        format!("[{}]", items.join(","))
    };
    let mut s = format!("{{\"nats\":{}", list("nats", nats));
    if !monitoring.is_empty() {
        s.push_str(&format!(",\"monitoring\":{}", list("http", monitoring)));
    }
    s.push('}');
    s
}

//! HTTP monitoring of the broker over real sockets, on both backends: the endpoints answer in
//! nats-server's field names and shapes, with values that match what the broker did.

mod broker_util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use broker_util::{Options, Running, backends, server_config, start_opts};
use ringlet::broker::monitor::{MONITOR_CONNS, REQUEST_TIMEOUT};
use ringlet::reactor::BackendChoice;
use serde_json::Value;

fn each(f: impl Fn(BackendChoice)) {
    for b in backends() {
        f(b);
    }
}

fn monitored(b: BackendChoice) -> Running {
    start_opts(
        b,
        server_config(),
        Options {
            monitor: true,
            ..Options::default()
        },
    )
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn expect(s: &mut TcpStream, want: &[u8]) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < want.len() {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "EOF after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

fn info(s: &mut TcpStream) -> Value {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        assert_eq!(s.read(&mut b).expect("read"), 1, "EOF in INFO");
        line.push(b[0]);
    }
    let text = String::from_utf8(line).unwrap();
    let json = text
        .strip_prefix("INFO ")
        .and_then(|t| t.strip_suffix(" \r\n"))
        .unwrap();
    serde_json::from_str(json).unwrap()
}

/// A NATS client: CONNECT with `json`, PONG seen. Returns the stream and its INFO.
fn client(addr: SocketAddr, json: &str) -> (TcpStream, Value) {
    let mut s = connect(addr);
    let i = info(&mut s);
    s.write_all(format!("CONNECT {json}\r\nPING\r\n").as_bytes())
        .unwrap();
    expect(&mut s, b"PONG\r\n");
    (s, i)
}

fn sync(s: &mut TcpStream) {
    s.write_all(b"PING\r\n").unwrap();
    expect(s, b"PONG\r\n");
}

struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Sends `request` as is and reads the answer to EOF.
fn raw(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut s = connect(addr);
    s.write_all(request).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("read to EOF");
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&all)));
    let head = String::from_utf8(all[..split].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Answer {
        status,
        head,
        body: all[split + 4..].to_vec(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Answer {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nUser-Agent: ringlet-test\r\n\r\n").as_bytes(),
    )
}

/// The keys of the top-level object (or of the objects at `indent`), in the order written.
fn keys_at(body: &[u8], indent: usize) -> Vec<String> {
    let text = String::from_utf8(body.to_vec()).unwrap();
    let prefix = " ".repeat(indent) + "\"";
    text.lines()
        .filter(|l| l.starts_with(&prefix) && !l[indent + 1..].starts_with(' '))
        .filter_map(|l| l[indent + 1..].split('"').next().map(str::to_string))
        .collect()
}

/// RFC 3339 as Go writes it: `YYYY-MM-DDTHH:MM:SS[.frac]Z`.
fn is_rfc3339(v: &Value) -> bool {
    let s = v.as_str().unwrap_or("");
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && s.ends_with('Z')
        && s[..4].parse::<u32>().is_ok_and(|y| y >= 2020)
}

#[test]
fn healthz_and_errors() {
    each(|b| {
        let srv = monitored(b);
        let http = srv.http.unwrap();
        let a = get(http, "/healthz");
        assert_eq!(a.status, 200);
        assert_eq!(a.text(), r#"{"status":"ok"}"#);
        assert_eq!(
            a.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(a.header("connection").as_deref(), Some("close"));
        let date = a.header("date").unwrap();
        assert!(date.ends_with(" GMT") && date.len() == 29, "{date}");
        // HEAD: the head of the same answer, no body.
        let h = raw(http, b"HEAD /varz HTTP/1.1\r\n\r\n");
        assert_eq!((h.status, h.body.len()), (200, 0));
        assert_eq!(
            h.header("content-type").as_deref(),
            Some("application/json")
        );
        // Unknown path, other methods, bad parameters, bad heads.
        let nf = get(http, "/nothing");
        assert_eq!(
            (nf.status, nf.text().as_str()),
            (404, "404 page not found\n")
        );
        let post = raw(http, b"POST /varz HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(post.status, 405);
        assert_eq!(post.header("allow").as_deref(), Some("GET, HEAD"));
        let bad = get(http, "/connz?offset=abc");
        assert_eq!(bad.status, 400);
        assert_eq!(
            bad.text(),
            "Error decoding int for 'offset': strconv.Atoi: parsing \"abc\": invalid syntax\n"
        );
        let bad = get(http, "/subsz?subs=xyz");
        assert_eq!(
            (bad.status, bad.text().as_str()),
            (
                400,
                "Error decoding boolean for 'subs': strconv.ParseBool: parsing \"xyz\": invalid \
                 syntax\n"
            )
        );
        assert_eq!(raw(http, b"GET /varz HTTP/2.0\r\n\r\n").status, 505);
        assert_eq!(raw(http, b"garbage\r\n\r\n").status, 400);
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', 600));
        long.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        assert_eq!(raw(http, &long).status, 414);
        let mut huge = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..400 {
            huge.extend_from_slice(format!("X-Header-{i}: some value here\r\n").as_bytes());
        }
        huge.extend_from_slice(b"\r\n");
        assert_eq!(raw(http, &huge).status, 431);
        // The root page links the endpoints.
        let root = get(http, "/");
        assert_eq!(root.status, 200);
        assert!(root.text().contains("href=\"./connz\""));
        // A request sent a byte at a time, the peer closing its side after it.
        let mut s = connect(http);
        for byte in b"GET /healthz HTTP/1.0\n\n" {
            s.write_all(&[*byte]).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut all = String::new();
        s.read_to_string(&mut all).unwrap();
        assert!(all.starts_with("HTTP/1.1 200 OK\r\n"), "{all}");
        assert!(all.ends_with("\r\n\r\n{\"status\":\"ok\"}"), "{all}");
        // The NATS port is unaffected.
        let (mut c, _) = client(srv.addr, r#"{"verbose":false}"#);
        sync(&mut c);
        srv.stop();
    });
}

/// nats-server 2.9.10's /varz keys, in its order, without those ringlet documents as absent.
const VARZ_KEYS: &[&str] = &[
    "server_id",
    "server_name",
    "version",
    "proto",
    "go",
    "host",
    "port",
    "max_connections",
    "ping_interval",
    "ping_max",
    "http_host",
    "http_port",
    "http_base_path",
    "https_port",
    "auth_timeout",
    "max_control_line",
    "max_payload",
    "max_pending",
    "cluster",
    "gateway",
    "leaf",
    "mqtt",
    "websocket",
    "jetstream",
    "write_deadline",
    "start",
    "now",
    "uptime",
    "mem",
    "connections",
    "total_connections",
    "routes",
    "remotes",
    "leafnodes",
    "in_msgs",
    "out_msgs",
    "in_bytes",
    "out_bytes",
    "slow_consumers",
    "subscriptions",
    "http_req_stats",
];

#[test]
fn varz_counts_what_the_broker_did() {
    each(|b| {
        let srv = monitored(b);
        let http = srv.http.unwrap();
        let (mut sub, _) = client(srv.addr, r#"{"verbose":false}"#);
        sub.write_all(b"SUB v.* 1\r\nSUB v.x 2\r\n").unwrap();
        sync(&mut sub);
        let (mut publ, _) = client(srv.addr, r#"{"verbose":false}"#);
        // 5 messages of 10 bytes to v.x (2 copies each), 3 of 4 bytes to nobody.
        for _ in 0..5 {
            publ.write_all(b"PUB v.x 10\r\n0123456789\r\n").unwrap();
        }
        for _ in 0..3 {
            publ.write_all(b"PUB none 4\r\nabcd\r\n").unwrap();
        }
        sync(&mut publ);
        let want = 5 * 2 * (b"MSG v.x 1 10\r\n".len() + 12);
        let mut got = vec![0u8; want];
        sub.read_exact(&mut got).unwrap();
        // A third connection that closed before.
        drop(connect(srv.addr));
        let a = get(http, "/varz");
        assert_eq!(a.status, 200);
        assert_eq!(keys_at(&a.body, 2), VARZ_KEYS);
        let mut v = a.json();
        let mut asked = 1;
        // Connection counts: a closed connection may take a turn to be counted as gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        while v["connections"] != 2 {
            assert!(Instant::now() < deadline, "{v}");
            std::thread::sleep(Duration::from_millis(10));
            v = get(http, "/varz").json();
            asked += 1;
        }
        assert_eq!(v["total_connections"], 3);
        assert_eq!(v["in_msgs"], 8);
        assert_eq!(v["in_bytes"], 5 * 10 + 3 * 4);
        assert_eq!(v["out_msgs"], 10);
        assert_eq!(v["out_bytes"], 100);
        assert_eq!(v["subscriptions"], 2);
        assert_eq!(v["slow_consumers"], 0);
        assert_eq!(v["port"], srv.addr.port());
        assert_eq!(v["http_port"], http.port());
        assert_eq!(v["max_payload"], 64 * 1024);
        assert_eq!(v["max_pending"], 64 * 1024 * 1024);
        assert_eq!(v["ping_interval"], 120_000_000_000u64);
        assert_eq!(v["write_deadline"], 10_000_000_000u64);
        assert_eq!(v["auth_timeout"], 2);
        assert_eq!(v["ping_max"], 2);
        assert_eq!(v["max_control_line"], 4096);
        assert_eq!(v["version"], "2.9.10");
        assert_eq!(v["cluster"], serde_json::json!({}));
        assert!(is_rfc3339(&v["start"]) && is_rfc3339(&v["now"]), "{v}");
        assert!(v["start"].as_str() <= v["now"].as_str());
        assert!(v["uptime"].as_str().unwrap().ends_with('s'));
        assert!(v["mem"].as_u64().unwrap() > 1 << 20, "{v}");
        // Every /varz asked so far, this one included.
        assert_eq!(v["http_req_stats"]["/varz"], asked, "{v}");
        assert_eq!(
            v["http_req_stats"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["/varz"]
        );
        srv.stop();
    });
}

const CONN_KEYS: &[&str] = &[
    "cid",
    "kind",
    "type",
    "ip",
    "port",
    "start",
    "last_activity",
    "rtt",
    "uptime",
    "idle",
    "pending_bytes",
    "in_msgs",
    "out_msgs",
    "in_bytes",
    "out_bytes",
    "subscriptions",
];

#[test]
fn connz_lists_clients_with_subscriptions_and_pages() {
    each(|b| {
        let srv = monitored(b);
        let http = srv.http.unwrap();
        let (mut a, ia) = client(
            srv.addr,
            r#"{"verbose":false,"name":"alpha","lang":"rust","version":"1.2.3"}"#,
        );
        a.write_all(b"SUB foo 1\r\nSUB bar.* q 2\r\nUNSUB 2 7\r\n")
            .unwrap();
        sync(&mut a);
        let (mut p, ip) = client(srv.addr, r#"{"verbose":false}"#);
        p.write_all(b"PUB foo 3\r\nabc\r\n").unwrap();
        sync(&mut p);
        expect(&mut a, b"MSG foo 1 3\r\nabc\r\n");
        let (_c, ic) = client(srv.addr, r#"{"verbose":false,"name":"gamma"}"#);
        // client_ip in INFO, as nats-server sends it.
        for i in [&ia, &ip, &ic] {
            assert_eq!(i["client_ip"], "127.0.0.1", "{i}");
        }
        let cids: Vec<u64> = [&ia, &ip, &ic]
            .iter()
            .map(|i| i["client_id"].as_u64().unwrap())
            .collect();
        let ans = get(http, "/connz");
        assert_eq!(ans.status, 200);
        assert_eq!(
            keys_at(&ans.body, 2),
            [
                "server_id",
                "now",
                "num_connections",
                "total",
                "offset",
                "limit",
                "connections"
            ]
        );
        let v = ans.json();
        assert_eq!(
            (
                &v["num_connections"],
                &v["total"],
                &v["offset"],
                &v["limit"]
            ),
            (&3.into(), &3.into(), &0.into(), &1024.into())
        );
        let conns = v["connections"].as_array().unwrap();
        let by_cid = |cid: u64| {
            conns
                .iter()
                .find(|c| c["cid"] == cid)
                .unwrap_or_else(|| panic!("cid {cid} missing in {v}"))
        };
        let ca = by_cid(cids[0]);
        let mut keys: Vec<&str> = CONN_KEYS.to_vec();
        keys.extend(["name", "lang", "version"]);
        let got: Vec<String> = ca.as_object().unwrap().keys().cloned().collect();
        let mut want: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let mut got_sorted = got.clone();
        got_sorted.sort();
        want.sort();
        assert_eq!(got_sorted, want);
        assert_eq!(ca["ip"], "127.0.0.1");
        assert_eq!(ca["port"], a.local_addr().unwrap().port());
        assert_eq!(ca["kind"], "Client");
        assert_eq!(ca["type"], "nats");
        assert_eq!(
            (&ca["name"], &ca["lang"], &ca["version"]),
            (&"alpha".into(), &"rust".into(), &"1.2.3".into())
        );
        assert_eq!(
            (&ca["subscriptions"], &ca["out_msgs"], &ca["out_bytes"]),
            (&2.into(), &1.into(), &3.into())
        );
        assert_eq!(
            (&ca["in_msgs"], &ca["pending_bytes"]),
            (&0.into(), &0.into())
        );
        assert_eq!(ca["rtt"], "0s");
        assert!(is_rfc3339(&ca["start"]) && is_rfc3339(&ca["last_activity"]));
        assert!(ca.get("subscriptions_list").is_none());
        let cp = by_cid(cids[1]);
        assert_eq!(
            (&cp["in_msgs"], &cp["in_bytes"], &cp["subscriptions"]),
            (&1.into(), &3.into(), &0.into())
        );
        assert_eq!(cp["port"], p.local_addr().unwrap().port());
        assert!(cp.get("name").is_none(), "empty name is left out: {cp}");
        assert_eq!(by_cid(cids[2])["name"], "gamma");
        // subs=1: subject list; subs=detail: objects.
        let v = get(http, "/connz?subs=1").json();
        let list = &v["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["cid"] == cids[0])
            .unwrap()["subscriptions_list"];
        assert_eq!(list, &serde_json::json!(["foo", "bar.*"]));
        let with_none = v["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["cid"] == cids[1])
            .unwrap();
        assert!(with_none.get("subscriptions_list").is_none());
        let v = get(http, "/connz?subs=detail").json();
        let detail = &v["connections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["cid"] == cids[0])
            .unwrap()["subscriptions_list_detail"];
        assert_eq!(
            detail,
            &serde_json::json!([
                {"subject": "foo", "sid": "1", "msgs": 1, "cid": cids[0]},
                {"subject": "bar.*", "qgroup": "q", "sid": "2", "msgs": 0, "max": 7, "cid": cids[0]},
            ])
        );
        // Paging: offset 1, limit 1 gives the second connection of the first page.
        let all: Vec<Value> = get(http, "/connz").json()["connections"]
            .as_array()
            .unwrap()
            .clone();
        let v = get(http, "/connz?offset=1&limit=1").json();
        assert_eq!(
            (
                &v["num_connections"],
                &v["total"],
                &v["offset"],
                &v["limit"]
            ),
            (&1.into(), &3.into(), &1.into(), &1.into())
        );
        assert_eq!(v["connections"].as_array().unwrap().len(), 1);
        assert_eq!(v["connections"][0]["cid"], all[1]["cid"]);
        let v = get(http, "/connz?offset=5").json();
        assert_eq!(
            (&v["num_connections"], &v["connections"]),
            (&0.into(), &serde_json::json!([]))
        );
        srv.stop();
    });
}

#[test]
fn subsz_counts_and_lists() {
    each(|b| {
        let srv = monitored(b);
        let http = srv.http.unwrap();
        let (mut a, ia) = client(srv.addr, r#"{"verbose":false}"#);
        a.write_all(b"SUB s.1 1\r\nSUB s.* g 2\r\nSUB gone 3\r\nUNSUB 3\r\n")
            .unwrap();
        sync(&mut a);
        let (mut p, _) = client(srv.addr, r#"{"verbose":false}"#);
        p.write_all(b"PUB s.1 1\r\nx\r\nPUB s.2 1\r\ny\r\n")
            .unwrap();
        sync(&mut p);
        expect(
            &mut a,
            b"MSG s.1 1 1\r\nx\r\nMSG s.1 2 1\r\nx\r\nMSG s.2 2 1\r\ny\r\n",
        );
        let ans = get(http, "/subsz");
        assert_eq!(
            keys_at(&ans.body, 2),
            [
                "num_subscriptions",
                "num_cache",
                "num_inserts",
                "num_removes",
                "num_matches",
                "cache_hit_rate",
                "max_fanout",
                "avg_fanout"
            ]
        );
        let v = ans.json();
        assert_eq!(
            (
                &v["num_subscriptions"],
                &v["num_inserts"],
                &v["num_removes"]
            ),
            (&2.into(), &3.into(), &1.into())
        );
        assert_eq!(
            (&v["num_matches"], &v["max_fanout"]),
            (&2.into(), &2.into())
        );
        assert_eq!(v["avg_fanout"], 1.5);
        let cid = ia["client_id"].as_u64().unwrap();
        let v = get(http, "/subsz?subs=1").json();
        assert_eq!(
            (&v["total"], &v["offset"], &v["limit"]),
            (&2.into(), &0.into(), &1024.into())
        );
        assert_eq!(
            v["subscriptions_list"],
            serde_json::json!([
                {"account": "$G", "subject": "s.1", "sid": "1", "msgs": 1, "cid": cid},
                {"account": "$G", "subject": "s.*", "qgroup": "g", "sid": "2", "msgs": 2, "cid": cid},
            ])
        );
        let v = get(http, "/subscriptionsz?subs=1&offset=1&limit=5").json();
        assert_eq!(v["subscriptions_list"].as_array().unwrap().len(), 1);
        assert_eq!(v["subscriptions_list"][0]["sid"], "2");
        srv.stop();
    });
}

/// Answers longer than the 64 KiB write slab go out in pieces, whole and valid.
#[test]
fn answers_larger_than_the_slab_are_written_in_pieces() {
    each(|b| {
        let srv = start_opts(
            b,
            server_config(),
            Options {
                monitor: true,
                small: true,
                ..Options::default()
            },
        );
        let http = srv.http.unwrap();
        let mut clients = Vec::new();
        for c in 0..16 {
            let (mut s, _) = client(srv.addr, r#"{"verbose":false}"#);
            let mut subs = String::new();
            for i in 0..62 {
                subs.push_str(&format!("SUB big.subject.number.{c}x{i} {i}\r\n"));
            }
            s.write_all(subs.as_bytes()).unwrap();
            sync(&mut s);
            clients.push(s);
        }
        let slab = broker_util::SMALL_SLAB;
        let ans = get(http, "/subsz?subs=1");
        assert!(
            ans.body.len() > slab * 3 / 2,
            "only {} bytes",
            ans.body.len()
        );
        let v = ans.json();
        let list = v["subscriptions_list"].as_array().unwrap();
        assert_eq!(list.len(), 16 * 62);
        assert_eq!(v["total"], 16 * 62);
        let mut subjects: Vec<&str> = list
            .iter()
            .map(|s| s["subject"].as_str().unwrap())
            .collect();
        subjects.sort();
        subjects.dedup();
        assert_eq!(subjects.len(), 16 * 62);
        let ans = get(http, "/connz?subs=detail");
        assert!(
            ans.body.len() > slab * 3 / 2,
            "only {} bytes",
            ans.body.len()
        );
        let v = ans.json();
        let conns = v["connections"].as_array().unwrap();
        assert_eq!(conns.len(), 16);
        for c in conns {
            assert_eq!(c["subscriptions_list_detail"].as_array().unwrap().len(), 62);
        }
        // The clients were served all along.
        for s in &mut clients {
            sync(s);
        }
        srv.stop();
    });
}

#[test]
fn monitoring_connection_limit_and_request_timeout() {
    each(|b| {
        let srv = monitored(b);
        let http = srv.http.unwrap();
        // MONITOR_CONNS idle connections take every entry; the next is refused with 503.
        let idle: Vec<TcpStream> = (0..MONITOR_CONNS).map(|_| connect(http)).collect();
        // Let the broker accept them (an answered request proves it went past them).
        let deadline = Instant::now() + Duration::from_secs(5);
        let refused = loop {
            let a = get(http, "/healthz");
            if a.status == 503 {
                break a;
            }
            assert!(Instant::now() < deadline, "never refused");
        };
        assert_eq!(refused.text(), "503 Service Unavailable\n");
        // Idle connections get 408 after the request timeout, and their entries free up.
        let t = Instant::now();
        for mut s in idle {
            let mut all = String::new();
            s.read_to_string(&mut all).unwrap();
            assert!(all.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{all}");
        }
        assert!(t.elapsed() < REQUEST_TIMEOUT + Duration::from_secs(5));
        assert_eq!(get(http, "/healthz").status, 200);
        srv.stop();
    });
}

//! Interop: async-nats 0.51 (a real client) against the broker, on both backends.

#[path = "../../tests/broker_util/mod.rs"]
mod broker_util;

use std::time::Duration;

use async_nats::client::RequestErrorKind;
use broker_util::{backends, server_config, start};
use futures_util::StreamExt;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(5);

type TestFn = fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

fn run(test: TestFn) {
    run_with(server_config(), test);
}

fn run_with(cfg: ringlet::broker::server::ServerConfig, test: TestFn) {
    for b in backends() {
        let srv = start(b, cfg.clone());
        let url = format!("nats://{}", srv.addr);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(test(url));
        drop(rt);
        srv.stop();
    }
}

#[test]
fn pub_sub_wildcard_flush() {
    run(|url| {
        Box::pin(async move {
            let c = async_nats::connect(url).await.expect("connect");
            let mut exact = c.subscribe("a.b").await.unwrap();
            let mut star = c.subscribe("a.*").await.unwrap();
            let mut gt = c.subscribe("a.>").await.unwrap();
            c.flush().await.unwrap();
            c.publish("a.b", "one".into()).await.unwrap();
            c.publish("a.b.c", "two".into()).await.unwrap();
            c.flush().await.unwrap();
            let m = timeout(T, exact.next()).await.unwrap().unwrap();
            assert_eq!((m.subject.as_str(), &m.payload[..]), ("a.b", &b"one"[..]));
            let m = timeout(T, star.next()).await.unwrap().unwrap();
            assert_eq!(&m.payload[..], b"one");
            let m = timeout(T, gt.next()).await.unwrap().unwrap();
            assert_eq!(&m.payload[..], b"one");
            let m = timeout(T, gt.next()).await.unwrap().unwrap();
            assert_eq!((m.subject.as_str(), &m.payload[..]), ("a.b.c", &b"two"[..]));
        })
    });
}

#[test]
fn queue_group() {
    run(|url| {
        Box::pin(async move {
            let c = async_nats::connect(url.clone()).await.unwrap();
            let d = async_nats::connect(url).await.unwrap();
            let mut q1 = c.queue_subscribe("work", "g".into()).await.unwrap();
            let mut q2 = d.queue_subscribe("work", "g".into()).await.unwrap();
            c.flush().await.unwrap();
            d.flush().await.unwrap();
            for i in 0..20 {
                c.publish("work", format!("{i}").into()).await.unwrap();
            }
            c.flush().await.unwrap();
            let mut got = 0;
            while got < 20 {
                tokio::select! {
                    m = q1.next() => { m.unwrap(); got += 1; }
                    m = q2.next() => { m.unwrap(); got += 1; }
                    _ = tokio::time::sleep(T) => panic!("only {got} of 20 delivered"),
                }
            }
            // Exactly 20: nothing more arrives on either.
            let extra = timeout(Duration::from_millis(200), async {
                tokio::select! { m = q1.next() => m, m = q2.next() => m }
            })
            .await;
            assert!(extra.is_err(), "a message was delivered twice");
        })
    });
}

#[test]
fn request_reply_and_no_responders() {
    run(|url| {
        Box::pin(async move {
            let c = async_nats::connect(url.clone()).await.unwrap();
            let responder = async_nats::connect(url).await.unwrap();
            let mut svc = responder.subscribe("svc").await.unwrap();
            responder.flush().await.unwrap();
            let r2 = responder.clone();
            tokio::spawn(async move {
                while let Some(m) = svc.next().await {
                    if let Some(reply) = m.reply {
                        let mut out = b"re:".to_vec();
                        out.extend_from_slice(&m.payload);
                        r2.publish(reply, out.into()).await.unwrap();
                    }
                }
            });
            let m = timeout(T, c.request("svc", "ping".into()))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&m.payload[..], b"re:ping");
            let e = timeout(T, c.request("nobody.home", "x".into()))
                .await
                .unwrap()
                .unwrap_err();
            assert_eq!(e.kind(), RequestErrorKind::NoResponders);
        })
    });
}

#[test]
fn headers_round_trip() {
    run(|url| {
        Box::pin(async move {
            let c = async_nats::connect(url).await.unwrap();
            let mut s = c.subscribe("h").await.unwrap();
            c.flush().await.unwrap();
            let mut h = async_nats::HeaderMap::new();
            h.insert("X-Test", "yes");
            c.publish_with_headers("h", h, "body".into()).await.unwrap();
            let m = timeout(T, s.next()).await.unwrap().unwrap();
            assert_eq!(&m.payload[..], b"body");
            let got = m.headers.expect("headers");
            assert_eq!(got.get("X-Test").map(|v| v.as_str()), Some("yes"));
        })
    });
}

#[test]
fn unsubscribe_after_n() {
    run(|url| {
        Box::pin(async move {
            let c = async_nats::connect(url).await.unwrap();
            let mut s = c.subscribe("n").await.unwrap();
            s.unsubscribe_after(3).await.unwrap();
            c.flush().await.unwrap();
            for i in 0..5 {
                c.publish("n", format!("{i}").into()).await.unwrap();
            }
            c.flush().await.unwrap();
            let mut got = Vec::new();
            while let Ok(Some(m)) = timeout(Duration::from_secs(1), s.next()).await {
                got.push(String::from_utf8(m.payload.to_vec()).unwrap());
            }
            assert_eq!(got, ["0", "1", "2"]);
        })
    });
}

#[test]
fn payload_at_max_payload() {
    run(|url| {
        Box::pin(async move {
            let c = async_nats::connect(url).await.unwrap();
            let max = c.server_info().max_payload;
            assert_eq!(max, 64 * 1024);
            let mut s = c.subscribe("big").await.unwrap();
            c.flush().await.unwrap();
            let payload: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
            c.publish("big", payload.clone().into()).await.unwrap();
            c.flush().await.unwrap();
            let m = timeout(T, s.next()).await.unwrap().unwrap();
            assert_eq!(m.payload.len(), max);
            assert!(m.payload[..] == payload[..]);
            // One byte more is refused by the client itself, before sending.
            let too_big: Vec<u8> = vec![0; max + 1];
            assert!(c.publish("big", too_big.into()).await.is_err());
        })
    });
}

#[test]
fn auth_user_pass_and_token() {
    let mut cfg = server_config();
    cfg.user.push_str("bob").unwrap();
    cfg.pass.push_str("pw").unwrap();
    run_with(cfg, |url| {
        Box::pin(async move {
            let c = async_nats::ConnectOptions::with_user_and_password("bob".into(), "pw".into())
                .connect(url.clone())
                .await
                .expect("right credentials");
            c.flush().await.unwrap();
            let bad = async_nats::ConnectOptions::with_user_and_password("bob".into(), "x".into())
                .connect(url)
                .await;
            let e = bad.expect_err("wrong password refused");
            assert!(
                e.to_string().to_lowercase().contains("authorization"),
                "{e}"
            );
        })
    });
    let mut cfg = server_config();
    cfg.token.push_str("t0k").unwrap();
    run_with(cfg, |url| {
        Box::pin(async move {
            let c = async_nats::ConnectOptions::with_token("t0k".into())
                .connect(url)
                .await
                .expect("right token");
            let mut s = c.subscribe("x").await.unwrap();
            c.publish("x", "y".into()).await.unwrap();
            let m = timeout(T, s.next()).await.unwrap().unwrap();
            assert_eq!(&m.payload[..], b"y");
        })
    });
}

#[test]
fn echo_off() {
    run(|url| {
        Box::pin(async move {
            let c = async_nats::ConnectOptions::new()
                .no_echo()
                .connect(url.clone())
                .await
                .unwrap();
            let other = async_nats::connect(url).await.unwrap();
            let mut s = c.subscribe("e").await.unwrap();
            c.flush().await.unwrap();
            c.publish("e", "mine".into()).await.unwrap();
            c.flush().await.unwrap();
            other.publish("e", "theirs".into()).await.unwrap();
            other.flush().await.unwrap();
            let m = timeout(T, s.next()).await.unwrap().unwrap();
            assert_eq!(&m.payload[..], b"theirs");
        })
    });
}

/// A client that stops reading (its runtime is not driven) is cut as a slow consumer after
/// the write deadline, while a subscriber that reads gets every message and the publisher goes
/// on.
#[test]
fn slow_consumer_is_cut_while_others_keep_receiving() {
    const N: usize = 20_000;
    for b in backends() {
        let mut cfg = server_config();
        cfg.write_deadline = Duration::from_millis(500);
        cfg.max_pending = 256 * 1024;
        let srv = start(b, cfg);
        let url = format!("nats://{}", srv.addr);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let stuck_url = url.clone();
        let stuck = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let held = rt.block_on(async move {
                let c = async_nats::connect(stuck_url).await.unwrap();
                let s = c.subscribe("firehose").await.unwrap();
                c.flush().await.unwrap();
                (c, s)
            });
            ready_tx.send(()).unwrap();
            // Nothing drives this runtime now: the client's socket is not read.
            release_rx.recv().unwrap();
            drop(held);
        });
        ready_rx.recv().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let good = async_nats::connect(url.clone()).await.unwrap();
            let mut s = good.subscribe("firehose").await.unwrap();
            good.flush().await.unwrap();
            let p = async_nats::connect(url).await.unwrap();
            let payload: Vec<u8> = (0..1024).map(|i| i as u8).collect();
            let publish = async {
                for _ in 0..N {
                    p.publish("firehose", payload.clone().into()).await.unwrap();
                }
                p.flush().await.unwrap();
            };
            let receive = async {
                for i in 0..N {
                    let m = timeout(Duration::from_secs(20), s.next())
                        .await
                        .unwrap_or_else(|_| panic!("only {i} of {N} received"))
                        .unwrap();
                    assert_eq!(m.payload.len(), 1024);
                }
            };
            tokio::join!(publish, receive);
        });
        drop(rt);
        release_tx.send(()).unwrap();
        stuck.join().unwrap();
        let stats = srv.stop();
        assert_eq!(stats.slow_consumers, 1, "{stats:?}");
        assert_eq!(stats.in_msgs, N as u64, "{stats:?}");
    }
}

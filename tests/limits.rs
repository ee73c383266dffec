//! Hardening limits end to end: slow-loris header timeout, header size, connection cap, per-client rate limit
//! on /v1, and the cap on buffered upstream answers.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{closed_within, GatewayBuilder, MockServer};

const T1: &str = "tok-limits-aaaaaaaaaaaaaaaa";

fn hello() -> serde_json::Value {
    json!({"model": "grok-4-fast", "messages": [{"role": "user", "content": "hi"}]})
}

/// Sends a keep-alive `GET /health` and reads the answer's head; `None` when none came within `timeout`.
fn health(s: &mut TcpStream, timeout: Duration) -> Option<String> {
    s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    read_head(s, timeout)
}

fn read_head(s: &mut TcpStream, timeout: Duration) -> Option<String> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn slow_header_client_is_disconnected() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .global("header_read_timeout = 1.0")
        .start()
        .await;
    let addr = format!("127.0.0.1:{}", gw.port);
    let started = Instant::now();
    let closed = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        // Half a request head, then silence.
        s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: ")
            .unwrap();
        closed_within(&mut s, Duration::from_secs(20))
    })
    .await
    .unwrap();
    assert!(
        closed,
        "a client that never finished its headers kept its connection"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the timeout: {:?}",
        started.elapsed()
    );
    // A well-behaved client is still served. On a new connection: the one `gw.http` kept from start-up has
    // been idle as long as the slow client and is closed by the same timeout in the same millisecond.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let r = fresh.get(gw.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn oversized_header_gets_431() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .global("max_header_bytes = 4096")
        .start()
        .await;
    let r = gw
        .http
        .get(gw.url("/health"))
        .header("x-filler", "a".repeat(8000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let r = gw
        .http
        .get(gw.url("/health"))
        .header("x-filler", "a".repeat(1000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .global("max_connections = 2")
        .no_keepalive()
        .start()
        .await;
    let addr = format!("127.0.0.1:{}", gw.port);
    tokio::task::spawn_blocking(move || {
        // (The readiness probe closed its connection: `no_keepalive`.)
        let mut a = TcpStream::connect(&addr).unwrap();
        let mut b = TcpStream::connect(&addr).unwrap();
        assert!(health(&mut a, Duration::from_secs(15))
            .unwrap()
            .contains(" 200 "));
        assert!(health(&mut b, Duration::from_secs(15))
            .unwrap()
            .contains(" 200 "));
        // Both slots are held by open keep-alive connections: a third is not served...
        let mut c = TcpStream::connect(&addr).unwrap();
        assert!(
            health(&mut c, Duration::from_millis(1500)).is_none(),
            "a third connection was served while two were open with max_connections = 2"
        );
        // ...until one closes; then it is, without having been refused.
        drop(a);
        let head = read_head(&mut c, Duration::from_secs(15)).expect("served after a slot freed");
        assert!(head.contains(" 200 "), "{head}");
        assert!(health(&mut b, Duration::from_secs(15)).is_some());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn per_client_rate_limit_answers_429_then_recovers() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .tokens(&[T1])
        .global("rate_limit_per_minute = 60")
        .global("rate_limit_burst = 2")
        .start()
        .await;
    let models = || {
        gw.http
            .get(gw.url("/v1/models"))
            .bearer_auth(support::API_KEY)
            .send()
    };
    assert_eq!(models().await.unwrap().status(), 200);
    assert_eq!(models().await.unwrap().status(), 200);
    let r = models().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    // Only /v1 is limited.
    assert_eq!(
        gw.http
            .get(gw.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(models().await.unwrap().status(), 200);
    // The limited request never reached the upstream.
    assert_eq!(mock.stats().requests, 3);
}

#[tokio::test]
async fn oversized_upstream_answer_is_a_502_and_logged() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .tokens(&[T1])
        .global("max_upstream_body_bytes = 100000")
        .start()
        .await;
    let mut body = hello();
    body["mock"] = json!({"size": 400000});
    let r = gw.chat(body).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "upstream_answer_too_large", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_upstream_body_bytes"),
        "{e}"
    );
    // Small answers and streams (not buffered, so not capped) still pass.
    assert_eq!(gw.chat(hello()).send().await.unwrap().status(), 200);
    let mut body = hello();
    body["stream"] = json!(true);
    body["mock"] = json!({"chunks": 50, "content": "x".repeat(150_000)});
    let r = gw.chat(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let streamed = r.bytes().await.unwrap().len();
    assert!(streamed > 150_000, "{streamed}");

    let session = gw.admin_token().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = gw.admin_get(&session, "/api/logs?status_code=502").await;
        if logs["total"] == 1 {
            let entry = &logs["data"][0];
            assert!(
                entry["error_message"]
                    .as_str()
                    .unwrap()
                    .contains("larger than 100000 bytes"),
                "{entry}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no 502 call-log entry: {logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

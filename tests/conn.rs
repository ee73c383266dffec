//! The connection loop end to end, over raw sockets: plain `/v1` requests answered by the server's own loop,
//! everything else handed to hyper mid-connection, and what both must keep (order, keep-alive, close,
//! timeouts, a refused request's body).

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{GatewayBuilder, MockServer, API_KEY};

const T1: &str = "tok-conn-aaaaaaaaaaaaaaaa";

/// One answer read off the socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// A blocking client that keeps what it read past one answer for the next.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Conn { s, buf: Vec::new() }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.s.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    fn take_line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return line;
            }
            assert!(self.fill(), "connection closed mid-line: {:?}", self.buf);
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill(), "connection closed mid-body");
        }
        self.buf.drain(..n).collect()
    }

    /// The next answer: its head, then its body by `Content-Length` or chunked.
    fn answer(&mut self) -> Answer {
        let status_line = self.take_line();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = HashMap::new();
        loop {
            let line = self.take_line();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':').expect("header line");
            headers.insert(k.to_ascii_lowercase(), v.trim().to_string());
        }
        let body = if status == 100 || status == 204 || status == 304 {
            Vec::new()
        } else if let Some(n) = headers.get("content-length") {
            self.take(n.parse().unwrap())
        } else {
            assert_eq!(
                headers.get("transfer-encoding").map(String::as_str),
                Some("chunked"),
                "{headers:?}"
            );
            let mut body = Vec::new();
            loop {
                let size = usize::from_str_radix(&self.take_line(), 16).unwrap();
                if size == 0 {
                    assert_eq!(self.take_line(), "");
                    break body;
                }
                body.extend(self.take(size));
                assert_eq!(self.take_line(), "");
            }
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// Whether the gateway closes the connection within `within` (reading and dropping what comes).
    fn closes_within(&mut self, within: Duration) -> bool {
        support::closed_within(&mut self.s, within)
    }
}

fn chat(content: &str, extra_headers: &str) -> Vec<u8> {
    let body = json!({"model": "grok-4-fast", "messages": [{"role": "user", "content": content}]})
        .to_string();
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn echoed(a: &Answer) -> String {
    assert_eq!(a.status, 200, "{a:?}");
    a.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn setup(global: &str) -> (MockServer, support::Gateway) {
    let mock = MockServer::start().await.unwrap();
    let mut b = GatewayBuilder::new(&mock.base_url()).tokens(&[T1]);
    if !global.is_empty() {
        b = b.global(global);
    }
    (mock, b.start().await)
}

/// Runs blocking socket code off the test's runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// The upstream's own headers reached the client: its content type and the mock's peer header, with the
/// body's length and never its connection header.
fn upstream_headers_passed(a: &Answer) {
    assert_eq!(a.headers["content-type"], "application/json", "{a:?}");
    assert_eq!(a.headers["x-mock-peer"], "127.0.0.1", "{a:?}");
    assert_eq!(
        a.headers["content-length"],
        a.body.len().to_string(),
        "{a:?}"
    );
    assert!(!a.headers.contains_key("connection"), "{a:?}");
}

#[tokio::test]
async fn v1_and_other_routes_share_one_connection() {
    let (mock, gw) = setup("").await;
    let port = gw.port;
    blocking(move || {
        let mut c = Conn::open(port);
        c.send(&chat("one", ""));
        let a = c.answer();
        assert_eq!(echoed(&a), "echo: one");
        for h in ["x-request-id", "date", "content-type"] {
            assert!(a.headers.contains_key(h), "{h} missing: {a:?}");
        }
        upstream_headers_passed(&a);
        // Not `/v1`: from here on hyper serves the connection, with what was read.
        c.send(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
        let h = c.answer();
        assert_eq!(h.status, 200);
        assert_eq!(h.json()["status"], "healthy");
        c.send(&chat("two", ""));
        assert_eq!(echoed(&c.answer()), "echo: two");
    })
    .await;
    assert_eq!(mock.stats().requests, 2);
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let (mock, gw) = setup("").await;
    let port = gw.port;
    blocking(move || {
        let mut c = Conn::open(port);
        let mut all = chat("first", "");
        all.extend(chat("second", "X-Request-Id: pipelined-2\r\n"));
        all.extend(
            format!(
                "GET /v1/models HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {API_KEY}\r\n\r\n"
            )
            .bytes(),
        );
        all.extend(chat("third", ""));
        // One write: the gateway finds the later heads already read.
        c.send(&all);
        assert_eq!(echoed(&c.answer()), "echo: first");
        let second = c.answer();
        assert_eq!(echoed(&second), "echo: second");
        assert_eq!(second.headers["x-request-id"], "pipelined-2");
        let models = c.answer();
        assert_eq!(models.status, 200);
        assert_eq!(models.json()["object"], "list");
        assert_eq!(echoed(&c.answer()), "echo: third");
    })
    .await;
    assert_eq!(mock.stats().requests, 4);
}

#[tokio::test]
async fn chunked_bodies_expect_and_http10_go_to_hyper() {
    let (_mock, gw) = setup("").await;
    let port = gw.port;
    blocking(move || {
        let body = json!({"model": "grok-4-fast", "messages": [{"role": "user", "content": "chunked"}]})
            .to_string();
        let (a, b) = body.split_at(10);
        let mut c = Conn::open(port);
        c.send(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {API_KEY}\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                a.len(),
                b.len()
            )
            .as_bytes(),
        );
        let a = c.answer();
        assert_eq!(echoed(&a), "echo: chunked");
        // hyper writes the upstream's headers too (`upstream::head::Reply::into_response`).
        upstream_headers_passed(&a);

        let mut c = Conn::open(port);
        let body = json!({"model": "grok-4-fast", "messages": [{"role": "user", "content": "expect"}]})
            .to_string();
        c.send(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {API_KEY}\r\n\
                 Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        // hyper asks for the body only once the handler reads it.
        assert_eq!(c.answer().status, 100);
        c.send(body.as_bytes());
        assert_eq!(echoed(&c.answer()), "echo: expect");

        let mut c = Conn::open(port);
        c.send(
            format!("GET /v1/models HTTP/1.0\r\nAuthorization: Bearer {API_KEY}\r\n\r\n").as_bytes(),
        );
        let a = c.answer();
        assert_eq!(a.status, 200);
        assert_eq!(a.json()["object"], "list");
        assert!(c.closes_within(Duration::from_secs(5)), "HTTP/1.0 without keep-alive stays open");

        // A query string: routed by its path, as before.
        let mut c = Conn::open(port);
        c.send(format!("GET /v1/models?limit=5 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {API_KEY}\r\n\r\n").as_bytes());
        assert_eq!(c.answer().status, 200);
    })
    .await;
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let (_mock, gw) = setup("").await;
    let port = gw.port;
    blocking(move || {
        let mut c = Conn::open(port);
        c.send(&chat("bye", "Connection: close\r\n"));
        let a = c.answer();
        assert_eq!(echoed(&a), "echo: bye");
        assert_eq!(a.headers["connection"], "close");
        assert!(c.closes_within(Duration::from_secs(5)));
    })
    .await;
}

#[tokio::test]
async fn a_refused_request_keeps_the_connection_only_when_its_body_came() {
    let (mock, gw) = setup("").await;
    let port = gw.port;
    blocking(move || {
        let mut c = Conn::open(port);
        let wrong = String::from_utf8(chat("x", ""))
            .unwrap()
            .replace(API_KEY, "sk-wrong");
        c.send(wrong.as_bytes());
        let a = c.answer();
        assert_eq!(a.status, 401, "{a:?}");
        assert_eq!(a.json()["error"]["code"], "invalid_api_key");
        // The body was there and skipped: the next request on the connection is read from its first byte.
        c.send(&chat("after", ""));
        assert_eq!(echoed(&c.answer()), "echo: after");

        // Refused before its body arrived: answered, then closed (the body is never read).
        let mut c = Conn::open(port);
        c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n");
        let a = c.answer();
        assert_eq!(a.status, 401);
        assert_eq!(a.headers["connection"], "close");
        assert!(c.closes_within(Duration::from_secs(5)));
    })
    .await;
    assert_eq!(mock.stats().requests, 1);
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_after_the_header_timeout() {
    let (_mock, gw) = setup("header_read_timeout = 1.0").await;
    let port = gw.port;
    blocking(move || {
        // Half a `/v1` head, then silence.
        let mut c = Conn::open(port);
        let started = Instant::now();
        c.send(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nX-Slow: ");
        assert!(c.closes_within(Duration::from_secs(10)));
        assert!(started.elapsed() >= Duration::from_millis(900));

        // Idle after an answer: the timeout runs from the end of the last answer.
        let mut c = Conn::open(port);
        c.send(&chat("idle", ""));
        assert_eq!(echoed(&c.answer()), "echo: idle");
        let answered = Instant::now();
        assert!(c.closes_within(Duration::from_secs(10)));
        assert!(answered.elapsed() >= Duration::from_millis(900));
    })
    .await;
}

/// Draining (SIGTERM) closes a connection waiting for its next request at once, after any number of answers:
/// the connection watches the drain signal with one wait for its whole life (`server::conn`).
#[tokio::test]
async fn draining_closes_idle_connections_at_once() {
    let (_mock, gw) = setup("").await;
    let port = gw.port;
    let (mut one, mut three) = blocking(move || {
        let mut one = Conn::open(port);
        one.send(&chat("only", ""));
        assert_eq!(echoed(&one.answer()), "echo: only");
        let mut three = Conn::open(port);
        for i in 0..3 {
            three.send(&chat(&format!("d{i}"), ""));
            assert_eq!(echoed(&three.answer()), format!("echo: d{i}"));
        }
        (one, three)
    })
    .await;
    let started = Instant::now();
    gw.signal(libc::SIGTERM);
    blocking(move || {
        // The header timeout is 30 s: a close within a few is the drain's.
        assert!(one.closes_within(Duration::from_secs(10)));
        assert!(three.closes_within(Duration::from_secs(10)));
        let waited = started.elapsed();
        assert!(waited < Duration::from_secs(3), "closed after {waited:?}");
    })
    .await;
}

/// The header timer is set again only when it would fire too late (`server::conn`): a connection whose
/// requests keep coming for longer than the timeout stays open, and once they stop it closes a timeout after
/// the last answer, not after the first.
#[tokio::test]
async fn a_busy_connection_outlives_the_header_timeout_and_closes_a_timeout_after_its_last_answer()
{
    let (_mock, gw) = setup("header_read_timeout = 1.0").await;
    let port = gw.port;
    blocking(move || {
        let mut c = Conn::open(port);
        let started = Instant::now();
        let mut n = 0;
        let mut answered = started;
        while started.elapsed() < Duration::from_millis(2600) {
            if n > 0 {
                std::thread::sleep(Duration::from_millis(150));
            }
            c.send(&chat(&format!("busy {n}"), ""));
            assert_eq!(echoed(&c.answer()), format!("echo: busy {n}"));
            answered = Instant::now();
            n += 1;
        }
        assert!(c.closes_within(Duration::from_secs(10)));
        let waited = answered.elapsed();
        assert!(
            waited >= Duration::from_millis(900),
            "closed {waited:?} after the last answer"
        );
    })
    .await;
}

/// A connection idle for a second lets its handler's slot go (`server::conn`, `KEEP_SLOT`) with the timer that
/// also closes it: it still serves its next request, and the header timeout still runs from the last answer.
#[tokio::test]
async fn a_connection_idle_past_its_slot_still_serves_and_times_out_on_time() {
    let (_mock, gw) = setup("header_read_timeout = 2.5").await;
    let port = gw.port;
    blocking(move || {
        let mut c = Conn::open(port);
        c.send(&chat("one", ""));
        assert_eq!(echoed(&c.answer()), "echo: one");
        std::thread::sleep(Duration::from_millis(1500));
        c.send(&chat("two", ""));
        assert_eq!(echoed(&c.answer()), "echo: two");
        let answered = Instant::now();
        assert!(c.closes_within(Duration::from_secs(10)));
        let waited = answered.elapsed();
        assert!(
            waited >= Duration::from_millis(2300),
            "closed after {waited:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_streamed_answer_is_chunked_and_the_connection_stays_usable() {
    let (_mock, gw) = setup("").await;
    let port = gw.port;
    blocking(move || {
        let body = json!({"model": "grok-4-fast", "stream": true, "mock": {"chunks": 5},
            "messages": [{"role": "user", "content": "s"}]})
        .to_string();
        let mut c = Conn::open(port);
        c.send(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {API_KEY}\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        let a = c.answer();
        assert_eq!(a.status, 200);
        assert_eq!(a.headers["transfer-encoding"], "chunked");
        let text = String::from_utf8(a.body).unwrap();
        let deltas: Vec<usize> = (0..5).map(|i| text.find(&format!("tok{i} ")).expect(&text)).collect();
        assert!(deltas.is_sorted(), "{text}");
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        c.send(&chat("next", ""));
        assert_eq!(echoed(&c.answer()), "echo: next");
    })
    .await;
}

use std::time::Duration;

use futures_util::StreamExt;
use mock_upstream::{Action, MockServer, Rule, Stats};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn chat(body: Value) -> Value {
    let mut base = json!({"model": "grok-4", "messages": [{"role": "user", "content": "hello"}]});
    if let (Value::Object(b), Value::Object(extra)) = (&mut base, body) {
        b.extend(extra);
    }
    base
}

/// Polls until `check` holds, so counters updated on another task settle.
async fn wait_for(server: &MockServer, check: impl Fn(&Stats) -> bool) -> Stats {
    for _ in 0..200 {
        let s = server.stats();
        if check(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition never held; last stats {:?}", server.stats());
}

fn sse_events(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").expect("event starts with data: "))
        .collect()
}

#[tokio::test]
async fn models_and_credential_echo() {
    let server = MockServer::start().await.unwrap();
    let c = client();
    let url = format!("{}/models", server.base_url());

    let r = c.get(&url).bearer_auth("key-a").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-mock-credential"], "key-a");
    let v: Value = r.json().await.unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "grok-4-fast",
            "grok-4",
            "grok-4-heavy",
            "grok-3-fast",
            "grok-2-image"
        ]
    );
    assert_eq!(v["data"][0]["owned_by"], "xai");

    let r = c
        .get(&url)
        .header("cookie", "sso=abc; x=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-mock-credential"], "sso=abc; x=1");

    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-mock-credential"], "");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");

    let r = c
        .get(format!("{url}/grok-4-heavy"))
        .bearer_auth("key-a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["id"], "grok-4-heavy");
    let r = c
        .get(format!("{url}/nope"))
        .bearer_auth("key-a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "model_not_found"
    );

    let s = server.stats();
    assert_eq!(s.requests, 5);
    assert_eq!(s.by_credential["key-a"], 3);
    assert_eq!(s.by_credential["sso=abc; x=1"], 1);
    server.reset_stats();
    assert_eq!(server.stats(), Stats::default());
}

#[tokio::test]
async fn chat_non_stream() {
    let server = MockServer::start().await.unwrap();
    let c = client();
    let url = format!("{}/chat/completions", server.base_url());

    let v: Value = c
        .post(&url)
        .bearer_auth("k")
        .json(&chat(json!({})))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "grok-4");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hello");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let parts = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "please draw "}, {"type": "text", "text": "a cat"}]}]});
    let v: Value = c
        .post(&url)
        .bearer_auth("k")
        .json(&chat(parts))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.starts_with("echo: please draw a cat"));
    let prefix = format!("![image](http://{}/media/", server.addr());
    assert!(content.contains(&prefix), "{content}");

    let v: Value = c
        .post(&url)
        .bearer_auth("k")
        .json(&chat(json!({"mock": {"content": "hi", "size": 4096}})))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.starts_with("hi"));
    assert_eq!(content.len(), 4096);

    let r = c
        .post(&url)
        .bearer_auth("k")
        .json(&json!({"model": "grok-4", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );

    let r = c
        .post(&url)
        .bearer_auth("k")
        .json(&chat(json!({"mock": {"status": 503}})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.json::<Value>().await.unwrap()["error"]["message"].is_string());
}

#[tokio::test]
async fn chat_stream_chunks_and_done() {
    let server = MockServer::start().await.unwrap();
    let c = client();
    let r = c
        .post(format!("{}/chat/completions", server.base_url()))
        .bearer_auth("k")
        .json(&chat(json!({
            "stream": true,
            "stream_options": {"include_usage": true},
            "mock": {"chunks": 7, "delay_ms": 1},
        })))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(r.headers()["cache-control"], "no-cache");
    let text = r.text().await.unwrap();
    let events = sse_events(&text);
    // role + 7 content + finish + usage + [DONE]
    assert_eq!(events.len(), 11, "{text}");
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let parsed: Vec<Value> = events[..10]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(parsed[0]["choices"][0]["delta"]["role"], "assistant");
    for (i, chunk) in parsed[1..8].iter().enumerate() {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["choices"][0]["delta"]["content"], format!("tok{i} "));
        assert!(chunk["choices"][0]["finish_reason"].is_null());
    }
    assert_eq!(parsed[8]["choices"][0]["finish_reason"], "stop");
    assert_eq!(parsed[9]["choices"], json!([]));
    assert!(parsed[9]["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let s = wait_for(&server, |s| s.streams_completed == 1).await;
    assert_eq!(s.streams_started, 1);
    assert_eq!(s.streams_cancelled, 0);
    assert_eq!(s.in_flight, 0);
}

#[tokio::test]
async fn stream_draw_carries_image() {
    let server = MockServer::start().await.unwrap();
    let text = client()
        .post(format!("{}/chat/completions", server.base_url()))
        .bearer_auth("k")
        .json(&chat(json!({
            "stream": true,
            "messages": [{"role": "user", "content": "Draw a fox"}],
        })))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = sse_events(&text);
    assert_eq!(events.len(), 8);
    let with_image = events.iter().filter(|e| e.contains("![image](")).count();
    assert_eq!(with_image, 1);
}

#[tokio::test]
async fn status_rule_applies_once() {
    let server = MockServer::start().await.unwrap();
    server.add_rule(Rule {
        credential: Some("limited".into()),
        path: Some("/v1/chat/completions".into()),
        action: Action::Status {
            status: 429,
            retry_after: Some("7".into()),
            body: None,
        },
        times: Some(1),
    });
    let c = client();
    let url = format!("{}/chat/completions", server.base_url());

    // Other credentials and paths are unaffected.
    let r = c
        .post(&url)
        .bearer_auth("other")
        .json(&chat(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{}/models", server.base_url()))
        .bearer_auth("limited")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = c
        .post(&url)
        .bearer_auth("limited")
        .json(&chat(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(r.headers()["x-mock-credential"], "limited");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");

    let r = c
        .post(&url)
        .bearer_auth("limited")
        .json(&chat(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn custom_body_and_clear_rules() {
    let server = MockServer::start().await.unwrap();
    server.add_rule(Rule {
        action: Action::Status {
            status: 502,
            retry_after: None,
            body: Some("bad gateway".into()),
        },
        ..Rule::default()
    });
    let c = client();
    let url = format!("{}/models", server.base_url());
    for _ in 0..2 {
        let r = c.get(&url).bearer_auth("k").send().await.unwrap();
        assert_eq!(r.status(), 502);
        assert_eq!(r.text().await.unwrap(), "bad gateway");
    }
    server.clear_rules();
    let r = c.get(&url).bearer_auth("k").send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn reset_breaks_the_connection() {
    let server = MockServer::start().await.unwrap();
    server.add_rule(Rule {
        action: Action::Reset,
        times: Some(1),
        ..Rule::default()
    });
    let c = client();
    let url = format!("{}/models", server.base_url());
    let err = c.get(&url).bearer_auth("k").send().await.unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    let r = c.get(&url).bearer_auth("k").send().await.unwrap();
    assert_eq!(r.status(), 200);
    wait_for(&server, |s| s.in_flight == 0).await;
}

#[tokio::test]
async fn hang_counts_in_flight_until_client_leaves() {
    let server = MockServer::start().await.unwrap();
    server.add_rule(Rule {
        action: Action::Hang,
        path: Some("/v1/models".into()),
        ..Rule::default()
    });
    let url = format!("{}/models", server.base_url());
    let pending = tokio::spawn(async move { client().get(url).bearer_auth("k").send().await });
    wait_for(&server, |s| s.in_flight == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!pending.is_finished());
    pending.abort();
    wait_for(&server, |s| s.in_flight == 0).await;
}

#[tokio::test]
async fn delay_rule_waits() {
    let server = MockServer::start().await.unwrap();
    server.add_rule(Rule {
        action: Action::Delay { ms: 150 },
        times: Some(1),
        ..Rule::default()
    });
    let started = std::time::Instant::now();
    let r = client()
        .get(format!("{}/models", server.base_url()))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn dropped_stream_is_counted_cancelled() {
    let server = MockServer::start().await.unwrap();
    let r = client()
        .post(format!("{}/chat/completions", server.base_url()))
        .bearer_auth("k")
        .json(&chat(
            json!({"stream": true, "mock": {"chunks": 100, "delay_ms": 20}}),
        ))
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    wait_for(&server, |s| s.streams_started == 1 && s.in_flight == 1).await;
    drop(body);
    let s = wait_for(&server, |s| s.streams_cancelled == 1).await;
    assert_eq!(s.streams_completed, 0);
    wait_for(&server, |s| s.in_flight == 0).await;
}

#[tokio::test]
async fn fail_after_breaks_mid_stream() {
    let server = MockServer::start().await.unwrap();
    let r = client()
        .post(format!("{}/chat/completions", server.base_url()))
        .bearer_auth("k")
        .json(&chat(
            json!({"stream": true, "mock": {"chunks": 5, "fail_after": 2}}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut received = Vec::new();
    let mut failed = false;
    while let Some(item) = body.next().await {
        match item {
            Ok(b) => received.extend_from_slice(&b),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "body ended cleanly");
    let text = String::from_utf8(received).unwrap();
    assert!(text.contains("tok1 "));
    assert!(!text.contains("tok2 "));
    assert!(!text.contains("[DONE]"));
    wait_for(&server, |s| s.streams_cancelled == 1 && s.in_flight == 0).await;
}

#[tokio::test]
async fn first_delay_before_first_chunk() {
    let server = MockServer::start().await.unwrap();
    let started = std::time::Instant::now();
    let r = client()
        .post(format!("{}/chat/completions", server.base_url()))
        .bearer_auth("k")
        .json(&chat(
            json!({"stream": true, "mock": {"chunks": 1, "first_delay_ms": 200}}),
        ))
        .send()
        .await
        .unwrap();
    // Headers come right away; the first event waits.
    assert!(started.elapsed() < Duration::from_millis(200));
    let mut body = r.bytes_stream();
    body.next().await.unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn images_and_media() {
    let server = MockServer::start().await.unwrap();
    let c = client();
    let v: Value = c
        .post(format!("{}/images/generations", server.base_url()))
        .bearer_auth("k")
        .json(&json!({"prompt": "a cat", "n": 2, "model": "grok-2-image"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["revised_prompt"], "a cat");
    let url = data[0]["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("http://{}/media/img-", server.addr())));

    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert!(r.bytes().await.unwrap().starts_with(b"\x89PNG"));

    let r = c
        .post(format!("{}/images/generations", server.base_url()))
        .bearer_auth("k")
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn http_control_api() {
    let server = MockServer::start().await.unwrap();
    let c = client();
    let root = format!("http://{}", server.addr());

    let r = c
        .post(format!("{root}/__mock/rules"))
        .json(
            &json!({"path": "/v1/models", "action": {"kind": "status", "status": 418}, "times": 1}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{root}/v1/models"))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 418);

    c.post(format!("{root}/__mock/rules"))
        .json(&json!({"action": {"kind": "status", "status": 500}}))
        .send()
        .await
        .unwrap();
    let r = c
        .delete(format!("{root}/__mock/rules"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{root}/v1/models"))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let s: Stats = c
        .get(format!("{root}/__mock/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s.requests, 2);
    assert_eq!(s.by_credential["k"], 2);
    let r = c
        .post(format!("{root}/__mock/stats/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(server.stats(), Stats::default());

    let r = c
        .post(format!("{root}/__mock/rules"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// Reads one HTTP/1.1 response with a content-length body off a raw socket.
async fn read_response(sock: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(sock.read(&mut byte).await.unwrap(), 1, "connection closed");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0u8; len];
    sock.read_exact(&mut body).await.unwrap();
    head
}

#[tokio::test]
async fn keep_alive_serves_several_requests() {
    let server = MockServer::start().await.unwrap();
    let mut sock = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    for _ in 0..3 {
        sock.write_all(b"GET /v1/models HTTP/1.1\r\nhost: x\r\nauthorization: Bearer k\r\n\r\n")
            .await
            .unwrap();
        let head = read_response(&mut sock).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    assert_eq!(server.stats().requests, 3);
}

#[tokio::test]
async fn stop_closes_listener() {
    let server = MockServer::start().await.unwrap();
    let addr = server.addr();
    server.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn peer_address_is_echoed_and_counted() {
    let server = MockServer::start().await.unwrap();
    // Connect from 127.0.0.2 so the peer differs from the listening address.
    let c = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let r = c
        .get(format!("{}/models", server.base_url()))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-mock-peer"], "127.0.0.2");
    let s = wait_for(&server, |s| s.requests == 1).await;
    assert_eq!(s.by_peer.get("127.0.0.2"), Some(&1));
    server.reset_stats();
    assert!(server.stats().by_peer.is_empty());
}

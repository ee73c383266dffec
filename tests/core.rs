//! End-to-end tests of the core gateway: the real binary against the mock upstream.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::*;

const T1: &str = "tok-aaaaaaaaaaaaaaaa-1";
const T2: &str = "tok-bbbbbbbbbbbbbbbb-2";
const T3: &str = "tok-cccccccccccccccc-3";

fn hello() -> Value {
    json!({"model": "grok-4-fast", "messages": [{"role": "user", "content": "hello"}]})
}

async fn setup(tokens: &[&str]) -> (MockServer, Gateway) {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .tokens(tokens)
        .start()
        .await;
    (mock, gw)
}

#[tokio::test]
async fn non_streaming_completion_is_passed_through() {
    let (mock, gw) = setup(&[T1]).await;
    let resp = gw.chat(hello()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(credential(&resp), T1);
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "echo: hello");
    assert_eq!(body["model"], "grok-4-fast");
    assert_eq!(mock.stats().requests, 1);
}

#[tokio::test]
async fn streaming_passes_chunks_as_they_arrive() {
    // One worker: the single-threaded runtime, where the stream's hand-over turns run differently.
    let _mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&_mock.base_url())
        .tokens(&[T1])
        .env("WORKERS", "1")
        .start()
        .await;
    let mut body = hello();
    body["stream"] = json!(true);
    body["mock"] = json!({"chunks": 4, "delay_ms": 300});
    let start = Instant::now();
    let resp = gw.chat(body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    let mut arrivals = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        let s = String::from_utf8_lossy(&chunk).to_string();
        if s.contains("tok") {
            arrivals.push(start.elapsed());
        }
        text.push_str(&s);
    }
    assert!(text.contains("data: [DONE]"), "{text}");
    assert_eq!(text.matches("\"content\":\"tok").count(), 4, "{text}");
    // Chunks 300 ms apart upstream must arrive spread out, not all at the end.
    assert!(arrivals.len() >= 3, "{arrivals:?}");
    let spread = *arrivals.last().unwrap() - arrivals[0];
    assert!(
        spread >= Duration::from_millis(600),
        "chunks were buffered: {arrivals:?}"
    );
}

#[tokio::test]
async fn load_rotates_across_three_tokens() {
    let (_mock, gw) = setup(&[T1, T2, T3]).await;
    let mut seen: HashMap<String, u32> = HashMap::new();
    for _ in 0..30 {
        let resp = gw.chat(hello()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        *seen.entry(credential(&resp)).or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|&n| n >= 7), "uneven spread: {seen:?}");
}

#[tokio::test]
async fn rate_limited_token_cools_down_then_returns() {
    let (mock, gw) = setup(&[T1, T2]).await;
    mock.add_rule(Rule {
        credential: Some(T1.into()),
        path: None,
        action: Action::Status {
            status: 429,
            retry_after: Some("2".into()),
            body: None,
        },
        times: Some(1),
    });
    // Whichever token goes first, every request succeeds: a 429 moves the request to the other token.
    let mut used = Vec::new();
    for _ in 0..6 {
        let resp = gw.chat(hello()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        used.push(credential(&resp));
    }
    assert_eq!(
        mock.stats().by_credential.get(T1).copied(),
        Some(1),
        "T1 must rest after its 429"
    );
    assert!(used.iter().all(|c| c == T2), "{used:?}");
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let mut back = false;
    for _ in 0..4 {
        let resp = gw.chat(hello()).send().await.unwrap();
        back |= credential(&resp) == T1;
    }
    assert!(back, "T1 did not return after its cooldown");
    assert!(gw.logs().contains("429"), "retry not visible in logs");
}

#[tokio::test]
async fn three_auth_failures_expire_a_token() {
    let (mock, gw) = setup(&[T1, T2]).await;
    mock.add_rule(Rule {
        credential: Some(T1.into()),
        path: None,
        action: Action::Status {
            status: 401,
            retry_after: None,
            body: None,
        },
        times: None,
    });
    for _ in 0..12 {
        let resp = gw.chat(hello()).send().await.unwrap();
        assert_eq!(
            resp.status(),
            200,
            "401 on one token must fall over to the other"
        );
        assert_eq!(credential(&resp), T2);
    }
    assert_eq!(mock.stats().by_credential.get(T1).copied(), Some(3));
    let session = gw.admin_token().await;
    let list = gw.admin_get(&session, "/api/tokens").await;
    let rows = list["data"].as_array().unwrap();
    let t1 = rows
        .iter()
        .find(|r| r["failed_count"] == 3)
        .expect("T1 listed");
    assert_eq!(t1["status"], "失效");
    // Answers never carry the secret.
    assert!(!list.to_string().contains(T1));
}

#[tokio::test]
async fn server_error_retries_on_another_token() {
    let (mock, gw) = setup(&[T1, T2]).await;
    mock.add_rule(Rule {
        credential: Some(T1.into()),
        path: None,
        action: Action::Status {
            status: 500,
            retry_after: None,
            body: None,
        },
        times: None,
    });
    for _ in 0..4 {
        let resp = gw.chat(hello()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(credential(&resp), T2);
    }
    assert!(mock.stats().by_credential.get(T1).copied().unwrap_or(0) >= 1);
    let logs = gw.logs();
    assert!(logs.contains(": 500"), "retry not in the log line:\n{logs}");
}

#[tokio::test]
async fn exhausted_retries_answer_502_and_503() {
    let (mock, gw) = setup(&[T1]).await;
    mock.add_rule(Rule {
        credential: None,
        path: None,
        action: Action::Status {
            status: 503,
            retry_after: None,
            body: None,
        },
        times: None,
    });
    let resp = gw.chat(hello()).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_error");

    let (_mock, empty) = setup(&[]).await;
    let resp = empty.chat(hello()).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_available_token");
    assert!(body["error"]["message"].is_string());
}

#[tokio::test]
async fn client_errors_are_passed_through_without_retry() {
    let (mock, gw) = setup(&[T1, T2]).await;
    // The mock answers 400 to a chat without messages.
    let resp = gw
        .chat(json!({"model": "grok-4-fast", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(mock.stats().requests, 1);
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_stream() {
    let (mock, gw) = setup(&[T1]).await;
    let mut body = hello();
    body["stream"] = json!(true);
    body["mock"] = json!({"chunks": 100, "delay_ms": 100});
    let resp = gw.chat(body).send().await.unwrap();
    let mut stream = resp.bytes_stream();
    let _ = stream.next().await.unwrap().unwrap();
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = mock.stats();
        if s.streams_cancelled == 1 && s.in_flight == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "upstream stream not cancelled: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mock.stats().streams_completed, 0);
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let mock = MockServer::start().await.unwrap();
    // A small limit, so the whole oversize body fits in socket buffers and the client reads the 413.
    let gw = GatewayBuilder::new(&mock.base_url())
        .global("max_body_bytes = 4096")
        .tokens(&[T1])
        .start()
        .await;
    let url = gw.url("/v1/chat/completions");
    let bad_json = gw
        .http
        .post(&url)
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), 400);
    let b: Value = bad_json.json().await.unwrap();
    assert_eq!(b["error"]["code"], "invalid_json");
    assert!(b["error"]["message"].as_str().unwrap().contains("JSON"));
    // Bytes that are not UTF-8, in a string and outside one: not JSON either.
    for body in [
        &b"{\"model\":\"grok-4-fast\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}"[..],
        b"{\"model\":\"grok-4-fast\"}\xc3",
    ] {
        let r = gw
            .http
            .post(&url)
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let b: Value = r.json().await.unwrap();
        assert_eq!(b["error"]["code"], "invalid_json");
    }

    let no_model = gw.chat(json!({"messages": []})).send().await.unwrap();
    assert_eq!(no_model.status(), 400);

    let big = "x".repeat(64 * 1024);
    let oversize = gw
        .http
        .post(&url)
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body(format!("{{\"model\":\"grok-4-fast\",\"pad\":\"{big}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(oversize.status(), 413);
    let b: Value = oversize.json().await.unwrap();
    assert_eq!(b["error"]["code"], "request_too_large");

    let wrong_key = gw
        .http
        .post(&url)
        .bearer_auth("sk-wrong")
        .json(&hello())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_key.status(), 401);
    let b: Value = wrong_key.json().await.unwrap();
    assert_eq!(b["error"]["type"], "invalid_request_error");
    assert_eq!(b["error"]["code"], "invalid_api_key");

    let no_key = gw.http.post(&url).json(&hello()).send().await.unwrap();
    assert_eq!(no_key.status(), 401);
    let b: Value = no_key.json().await.unwrap();
    assert_eq!(b["error"]["code"], "missing_api_key");

    // Bytes that are not UTF-8 after the scheme are a wrong key.
    let not_utf8 = [&b"Bearer "[..], API_KEY.as_bytes(), b"\xff"].concat();
    let r = gw
        .http
        .post(&url)
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(&not_utf8).unwrap(),
        )
        .json(&hello())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"]["code"], "invalid_api_key");

    // Another method on a `/v1` route: 405 naming the allowed one; an unknown `/v1` path: 404. Both as
    // OpenAI errors, both before the key is checked.
    let wrong_method = gw.http.get(&url).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(wrong_method.headers()["allow"], "POST");
    let b: Value = wrong_method.json().await.unwrap();
    assert_eq!(b["error"]["code"], "method_not_allowed");
    let unknown = gw
        .http
        .post(gw.url("/v1/embeddings"))
        .json(&hello())
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    assert!(unknown.headers().contains_key("x-request-id"));
    let b: Value = unknown.json().await.unwrap();
    assert_eq!(b["error"]["code"], "not_found");
    // None of these reached the upstream.
    assert_eq!(mock.stats().requests, 0);

    // The scheme in either case, the key with spaces around it: accepted.
    for value in [format!("bearer {API_KEY}"), format!("Bearer  {API_KEY} ")] {
        let r = gw
            .http
            .post(&url)
            .header("authorization", &value)
            .json(&hello())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{value:?}");
    }
    assert_eq!(mock.stats().requests, 2);
}

#[tokio::test]
async fn hanging_upstream_times_out_with_504() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .grok("stream_first_response_timeout = 1\nstream_total_timeout = 2\nmax_retries = 0")
        .tokens(&[T1])
        .start()
        .await;
    mock.add_rule(Rule {
        credential: None,
        path: None,
        action: Action::Hang,
        times: None,
    });
    let mut body = hello();
    body["stream"] = json!(true);
    let started = Instant::now();
    let resp = gw.chat(body).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(3));
    let resp = gw.chat(hello()).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(b["error"]["code"], "upstream_timeout");
}

#[tokio::test]
async fn stalled_stream_ends_with_an_error_event() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .grok("stream_chunk_timeout = 1")
        .tokens(&[T1])
        .env("WORKERS", "1")
        .start()
        .await;
    let mut body = hello();
    body["stream"] = json!(true);
    body["mock"] = json!({"chunks": 3, "delay_ms": 3000});
    let resp = gw.chat(body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("stream_timeout"), "{text}");
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn models_and_images_are_forwarded() {
    let (_mock, gw) = setup(&[T1]).await;
    let models: Value = gw
        .http
        .get(gw.url("/v1/models"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "grok-4-fast"));
    let one = gw
        .http
        .get(gw.url("/v1/models/grok-4-fast"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    // The id is percent-decoded from the path, and encoded again for the upstream.
    let encoded = gw
        .http
        .get(gw.url("/v1/models/grok%2D4-fast"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(encoded.status(), 200);
    let missing = gw
        .http
        .get(gw.url("/v1/models/nope"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let images: Value = gw
        .http
        .post(gw.url("/v1/images/generations"))
        .bearer_auth(API_KEY)
        .json(&json!({"model": "grok-2-image", "prompt": "a cat", "n": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(images["data"].as_array().unwrap().len(), 2);
    assert!(images["data"][0]["url"]
        .as_str()
        .unwrap()
        .starts_with("http"));
}

#[tokio::test]
async fn super_models_use_super_tokens_only() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .token_file(&token_json(&[T1], &[T2]))
        .start()
        .await;
    for _ in 0..3 {
        let resp = gw
            .chat(json!({"model": "grok-4-heavy", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(credential(&resp), T2);
    }
    for _ in 0..3 {
        let resp = gw.chat(hello()).send().await.unwrap();
        assert_eq!(credential(&resp), T1);
    }
}

#[tokio::test]
async fn corrupt_token_file_is_moved_aside_and_kept() {
    let mock = MockServer::start().await.unwrap();
    let garbage = "{\"ssoNormal\": {\"tok\": ";
    let gw = GatewayBuilder::new(&mock.base_url())
        .token_file(garbage)
        .start()
        .await;
    let aside: Vec<_> = std::fs::read_dir(&gw.dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("token.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "corrupt file not set aside");
    assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), garbage);
    assert!(gw.logs().contains("moved aside"));
    // The gateway runs with an empty pool and new tokens are saved beside the kept file.
    let session = gw.admin_token().await;
    let r = gw
        .admin_post(
            &session,
            "/api/tokens/add",
            json!({"tokens": [T1], "token_type": "sso"}),
        )
        .await;
    assert_eq!(r["count"], 1);
    assert!(gw.token_file()["ssoNormal"].get(T1).is_some());
    assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), garbage);
}

#[tokio::test]
async fn sigterm_flushes_token_state() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .global("batch_save_interval = 3600")
        .tokens(&[T1])
        .start()
        .await;
    mock.add_rule(Rule {
        credential: Some(T1.into()),
        path: None,
        action: Action::Status {
            status: 401,
            retry_after: None,
            body: None,
        },
        times: None,
    });
    let resp = gw.chat(hello()).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    // Not saved yet: the batch interval is an hour.
    assert_eq!(gw.token_file()["ssoNormal"][T1]["failedCount"], 0);
    let stopped = gw.terminate().await;
    assert!(
        stopped.status.success(),
        "exit: {:?}\n{}",
        stopped.status,
        stopped.logs
    );
    let saved = stopped.token_file();
    assert_eq!(saved["ssoNormal"][T1]["failedCount"], 1);
    assert!(saved["ssoNormal"][T1]["lastFailureReason"]
        .as_str()
        .unwrap()
        .starts_with("401"));
}

#[tokio::test]
async fn sigterm_lets_in_flight_streams_finish() {
    let (_mock, gw) = setup(&[T1]).await;
    let mut body = hello();
    body["stream"] = json!(true);
    body["mock"] = json!({"chunks": 5, "delay_ms": 200});
    let resp = gw.chat(body).send().await.unwrap();
    gw.signal(libc::SIGTERM);
    let text = resp.text().await.unwrap();
    assert!(text.contains("[DONE]"), "in-flight stream was cut: {text}");
}

#[tokio::test]
async fn admin_auth_sessions_and_throttling() {
    let (_mock, gw) = setup(&[T1]).await;
    let unauth = gw.http.get(gw.url("/api/tokens")).send().await.unwrap();
    assert_eq!(unauth.status(), 401);
    let b: Value = unauth.json().await.unwrap();
    assert_eq!(b["error"]["code"], "UNAUTHORIZED");
    let bogus = gw
        .http
        .get(gw.url("/api/tokens"))
        .bearer_auth("not-a-session")
        .send()
        .await
        .unwrap();
    assert_eq!(bogus.status(), 401);

    let session = gw.admin_token().await;
    let stats = gw.admin_get(&session, "/api/stats").await;
    assert_eq!(stats["data"]["normal"]["total"], 1);
    assert_eq!(stats["data"]["normal"]["unused"], 1);

    // Tags and note by public id; the secret never comes back.
    let list = gw.admin_get(&session, "/api/tokens").await;
    let id = list["data"][0]["token_id"].as_str().unwrap().to_string();
    assert!(!list.to_string().contains(T1));
    let r = gw
        .admin_post(
            &session,
            "/api/tokens/tags",
            json!({"token": id, "tags": [" vip ", "", "vip", "eu"]}),
        )
        .await;
    assert_eq!(r["tags"], json!(["vip", "eu"]));
    let r = gw
        .admin_post(
            &session,
            "/api/tokens/note",
            json!({"token": id, "note": " main "}),
        )
        .await;
    assert_eq!(r["note"], "main");
    let tags = gw.admin_get(&session, "/api/tokens/tags/all").await;
    assert_eq!(tags["data"], json!(["eu", "vip"]));
    let filtered = gw.admin_get(&session, "/api/tokens?tag=vip").await;
    assert_eq!(filtered["total"], 1);
    let test = gw
        .admin_post(&session, "/api/tokens/test", json!({"token": id}))
        .await;
    assert_eq!(test["success"], true, "{test}");
    let bad_type = gw
        .http
        .get(gw.url("/api/tokens?token_type=bogus"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(bad_type.status(), 400);

    // Five wrong passwords lock the client out.
    for _ in 0..5 {
        let r: Value = gw
            .http
            .post(gw.url("/api/login"))
            .json(&json!({"username": "admin", "password": "wrong"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["success"], false);
    }
    let locked = gw
        .http
        .post(gw.url("/api/login"))
        .json(&json!({"username": "admin", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(locked.status(), 429);

    let logout = gw.admin_post(&session, "/api/logout", json!({})).await;
    assert_eq!(logout["success"], true);
    let after = gw
        .http
        .get(gw.url("/api/stats"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    // Neither the admin password nor a token secret was ever logged.
    let logs = gw.logs();
    assert!(
        !logs.contains(ADMIN_PASSWORD) && !logs.contains(T1),
        "secret in logs"
    );
}

#[tokio::test]
async fn bad_settings_stop_startup_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("setting.toml"),
        "[grok]\nstream_chunk_timeout = \"soon\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_grok2api"))
        .env("DATA_DIR", dir.path())
        .env("PORT", free_port().to_string())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("setting.toml") && err.contains("stream_chunk_timeout"),
        "{err}"
    );
}

#[tokio::test]
async fn health_reports_version_and_mode() {
    let (_mock, gw) = setup(&[T1]).await;
    let h: Value = gw
        .http
        .get(gw.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["storage_mode"], "file");
    assert!(h["version"].is_string());
}

/// A chat (plain and streamed) whose every attempt fails to reach the upstream: the error the client gets.
async fn unreachable_answers(gw: &Gateway) -> Vec<Value> {
    let mut out = Vec::new();
    for stream in [false, true] {
        let mut body = hello();
        body["stream"] = json!(stream);
        let resp = gw.chat(body).send().await.unwrap();
        assert_eq!(resp.status(), 502, "stream={stream}");
        out.push(resp.json().await.unwrap());
    }
    out
}

#[tokio::test]
async fn closed_upstream_port_answers_502_with_the_cause() {
    let closed = free_port();
    let gw = GatewayBuilder::new(&format!("http://127.0.0.1:{closed}/v1"))
        .grok("max_retries = 1")
        .tokens(&[T1, T2])
        .start()
        .await;
    for b in unreachable_answers(&gw).await {
        assert_eq!(b["error"]["code"], "upstream_unreachable", "{b}");
        let msg = b["error"]["message"].as_str().unwrap().to_lowercase();
        assert!(
            msg.starts_with("upstream unreachable: ") && msg.contains("connection refused"),
            "the cause is not readable: {msg}"
        );
    }
}

/// Direct https goes through TLS with verified certificates: a self-signed upstream is refused at the
/// handshake with a certificate error, never accepted and never spoken to in plain HTTP.
#[tokio::test]
async fn https_upstream_verifies_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = (dir.path().join("k.pem"), dir.path().join("c.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (Debian package openssl)");
    assert!(ok.success());
    let port = free_port();
    let mut server = Some(
        std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
            .arg("-key")
            .arg(&key)
            .arg("-cert")
            .arg(&cert)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gw = GatewayBuilder::new(&format!("https://127.0.0.1:{port}/v1"))
        .grok("max_retries = 0")
        .tokens(&[T1])
        .start()
        .await;
    let answers = unreachable_answers(&gw).await;
    kill(&mut server);
    for b in answers {
        assert_eq!(b["error"]["code"], "upstream_unreachable", "{b}");
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("invalid peer certificate"),
            "not a TLS refusal: {msg}"
        );
    }
}

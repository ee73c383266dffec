//! End-to-end tests of the call log: the real binary, the mock upstream, the files on disk.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use support::*;

const T1: &str = "log-token-aaaaaaaaaaaaaaaa";
const T2: &str = "log-token-bbbbbbbbbbbbbbbb";

fn hello(text: &str) -> Value {
    json!({"model": "grok-4-fast", "messages": [{"role": "user", "content": text}]})
}

/// Polls `/api/logs` until `want` entries match `query` (the writer is asynchronous).
async fn logs_eventually(gw: &Gateway, session: &str, query: &str, want: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = gw.admin_get(session, &format!("/api/logs?{query}")).await;
        if r["total"].as_u64() == Some(want as u64) || Instant::now() > deadline {
            assert_eq!(r["total"], want, "{r}");
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn failed_call_logs_its_real_status() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .tokens(&[T1, T2])
        .start()
        .await;
    mock.add_rule(Rule {
        credential: None,
        path: None,
        action: Action::Status {
            status: 500,
            retry_after: None,
            body: None,
        },
        times: None,
    });
    let resp = gw.chat(hello("x")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let session = gw.admin_token().await;
    let r = logs_eventually(&gw, &session, "success=false", 1).await;
    let e = &r["data"][0];
    assert_eq!(e["status_code"], 500);
    assert_eq!(e["success"], false);
    assert_eq!(e["retries"], 1, "{e}");
    assert!(e["error_message"].as_str().unwrap().contains("500"));
    assert_eq!(e["model"], "grok-4-fast");
    assert_eq!(e["client_ip"], "127.0.0.1");
    assert!(e["token_id"].as_str().unwrap().len() == 12);
    assert!(!r.to_string().contains(T1) && !r.to_string().contains(T2));

    // No token at all: the status the client got.
    mock.clear_rules();
    let (_m2, empty) = {
        let m = MockServer::start().await.unwrap();
        let g = GatewayBuilder::new(&m.base_url()).start().await;
        (m, g)
    };
    assert_eq!(empty.chat(hello("x")).send().await.unwrap().status(), 503);
    let s2 = empty.admin_token().await;
    let r = logs_eventually(&empty, &s2, "", 1).await;
    assert_eq!(r["data"][0]["status_code"], 503);
}

#[tokio::test]
async fn streamed_call_is_logged_at_its_end_with_media_and_usage() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .tokens(&[T1])
        .start()
        .await;
    let session = gw.admin_token().await;
    let mut body = hello("please draw a cat");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body["mock"] = json!({"chunks": 3, "delay_ms": 400});
    let resp = gw.chat(body).send().await.unwrap();
    let mut stream = resp.bytes_stream();
    let _first = stream.next().await.unwrap().unwrap();
    // Mid-stream the call is not logged yet: it has no outcome.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = gw.admin_get(&session, "/api/logs").await;
    assert_eq!(r["total"], 0, "logged before the stream ended: {r}");
    while let Some(c) = stream.next().await {
        c.unwrap();
    }
    let r = logs_eventually(&gw, &session, "", 1).await;
    let e = &r["data"][0];
    assert_eq!(e["success"], true, "{e}");
    assert_eq!(e["stream"], true);
    assert_eq!(e["status_code"], 200);
    assert!(e["response_time"].as_f64().unwrap() >= 1.0, "{e}");
    assert!(e["first_byte_ms"].as_u64().unwrap() < 1000, "{e}");
    let media = e["media_urls"].as_array().unwrap();
    assert_eq!(media.len(), 1, "{e}");
    assert!(media[0].as_str().unwrap().contains("/media/"));
    assert!(e["completion_tokens"].as_u64().is_some(), "{e}");

    // Images: data[].url.
    let _ = gw
        .http
        .post(gw.url("/v1/images/generations"))
        .bearer_auth(API_KEY)
        .json(&json!({"model": "grok-2-image", "prompt": "a cat", "n": 2}))
        .send()
        .await
        .unwrap()
        .text()
        .await;
    let r = logs_eventually(&gw, &session, "model=image", 1).await;
    assert_eq!(r["data"][0]["media_urls"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn stream_outcomes_say_what_happened() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .tokens(&[T1])
        .start()
        .await;
    let session = gw.admin_token().await;
    // Client gone mid-stream.
    let mut body = hello("a");
    body["stream"] = json!(true);
    body["mock"] = json!({"chunks": 50, "delay_ms": 100});
    let resp = gw.chat(body).send().await.unwrap();
    let mut s = resp.bytes_stream();
    let _ = s.next().await;
    drop(s);
    let r = logs_eventually(&gw, &session, "", 1).await;
    assert_eq!(r["data"][0]["success"], false);
    assert!(r["data"][0]["error_message"]
        .as_str()
        .unwrap()
        .contains("client disconnected"));
    // Upstream breaks mid-stream.
    let mut body = hello("b");
    body["stream"] = json!(true);
    body["mock"] = json!({"chunks": 5, "fail_after": 2});
    let _ = gw.chat(body).send().await.unwrap().text().await;
    let r = logs_eventually(&gw, &session, "", 2).await;
    let e = &r["data"][0];
    assert_eq!(e["success"], false, "{e}");
    assert!(
        e["error_message"].as_str().unwrap().contains("mid-stream"),
        "{e}"
    );
}

#[tokio::test]
async fn admin_queries_filters_stats_delete_and_export() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .tokens(&[T1])
        .start()
        .await;
    let session = gw.admin_token().await;
    let t0 = support::now_ms();
    for i in 0..6 {
        let model = if i % 2 == 0 {
            "grok-4-fast"
        } else {
            "Grok-3-Fast"
        };
        let _ = gw
            .chat(json!({"model": model, "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap()
            .text()
            .await;
    }
    let _ = gw
        .chat(json!({"model": "grok-4-fast", "messages": []}))
        .send()
        .await
        .unwrap();
    logs_eventually(&gw, &session, "", 7).await;
    let r = gw
        .admin_get(&session, "/api/logs?model=grok-3&page_size=2&page=1")
        .await;
    assert_eq!(r["total"], 3);
    assert_eq!(r["data"].as_array().unwrap().len(), 2);
    let r = gw.admin_get(&session, "/api/logs?status_code=400").await;
    assert_eq!(r["total"], 1);
    let r = gw
        .admin_get(
            &session,
            &format!("/api/logs?start_time={t0}&end_time={}", support::now_ms()),
        )
        .await;
    assert_eq!(r["total"], 7);
    let ts: Vec<i64> = r["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["timestamp"].as_i64().unwrap())
        .collect();
    assert!(
        ts.windows(2).all(|w| w[0] >= w[1]),
        "not newest first: {ts:?}"
    );
    let id = r["data"][0]["token_id"].as_str().unwrap().to_string();
    assert_eq!(
        gw.admin_get(&session, &format!("/api/logs?token_id={id}"))
            .await["total"],
        7
    );
    assert_eq!(
        gw.admin_get(&session, &format!("/api/logs?sso={}", &id[..5]))
            .await["total"],
        7
    );

    for bad in [
        "page=0",
        "page_size=5000",
        "success=maybe",
        "start_time=yesterday",
        "status_code=-1",
    ] {
        let resp = gw
            .http
            .get(gw.url(&format!("/api/logs?{bad}")))
            .bearer_auth(&session)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let b: Value = resp.json().await.unwrap();
        let param = bad.split('=').next().unwrap();
        assert_eq!(b["error"]["param"], param, "{b}");
    }

    let st = gw.admin_get(&session, "/api/logs/stats").await["data"].clone();
    assert_eq!(st["total"], 7);
    assert_eq!(st["success"], 6);
    assert_eq!(st["failed"], 1);
    assert_eq!(st["success_rate"], 85.71);
    assert_eq!(st["today_total"], 7);
    assert!(st["p95_response_time"].as_f64().unwrap() >= st["p50_response_time"].as_f64().unwrap());
    assert_eq!(st["dropped"], 0);
    let models = gw.admin_get(&session, "/api/logs/models").await;
    assert_eq!(models["data"], json!(["Grok-3-Fast", "grok-4-fast"]));

    let csv = gw
        .http
        .get(gw.url("/api/logs/export?format=csv&success=true"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    assert_eq!(text.lines().count(), 7, "{text}");
    assert!(text.starts_with("id,timestamp,token_id"));
    let nd = gw
        .http
        .get(gw.url("/api/logs/export"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(nd.lines().count(), 7);
    assert!(nd.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()));
    let bad = gw
        .http
        .get(gw.url("/api/logs/export?format=xml"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    for bad in ["-1", "two"] {
        let r = gw
            .http
            .delete(gw.url(&format!("/api/logs?max_count={bad}")))
            .bearer_auth(&session)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
    }
    let r: Value = gw
        .http
        .delete(gw.url("/api/logs?max_count=2"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["deleted_count"], 5);
    assert_eq!(gw.admin_get(&session, "/api/logs").await["total"], 2);
    let r: Value = gw
        .http
        .delete(gw.url("/api/logs?max_count=0"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["deleted_count"], 2);
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(gw.dir.join("call_logs.json")).unwrap())
            .unwrap();
    assert_eq!(
        file["logs"].as_array().unwrap().len(),
        0,
        "clear not persisted"
    );
}

#[tokio::test]
async fn sigterm_under_load_loses_nothing() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .global("log_flush_interval = 60")
        .tokens(&[T1, T2])
        .start()
        .await;
    let url = gw.url("/v1/chat/completions");
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut answered = 0u32;
            for j in 0..1000 {
                let mut body = hello(&format!("{i}-{j}"));
                if j % 3 == 0 {
                    body["stream"] = json!(true);
                    body["mock"] = json!({"chunks": 3, "delay_ms": 20});
                }
                match client
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) => {
                        // Only a whole answer counts; a cut one may still have been logged as such.
                        if r.text().await.is_ok() {
                            answered += 1;
                        }
                    }
                    Err(_) => break,
                }
            }
            answered
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopped = gw.terminate().await;
    assert!(stopped.status.success(), "{}", stopped.logs);
    let mut answered = 0;
    for t in tasks {
        answered += t.await.unwrap();
    }
    assert!(answered > 50, "too little load: {answered}");
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(stopped.dir.join("call_logs.json")).unwrap())
            .unwrap();
    let logged = file["logs"].as_array().unwrap().len() as u32;
    // Every answered call is logged (a request cut at shutdown may add an entry with no answer).
    assert!(
        logged >= answered,
        "lost entries: answered {answered}, logged {logged}"
    );
    assert!(
        logged <= answered + 16,
        "answered {answered}, logged {logged}"
    );
    assert!(
        stopped.logs.contains("dropped=0"),
        "entries dropped:\n{}",
        stopped.logs
    );
}

#[tokio::test]
async fn kill_9_leaves_readable_files_and_keeps_flushed_entries() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .global("log_flush_interval = 0.2")
        .tokens(&[T1])
        .start()
        .await;
    for i in 0..20 {
        let _ = gw
            .chat(hello(&format!("{i}")))
            .send()
            .await
            .unwrap()
            .text()
            .await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let dir = gw.dir.clone();
    let stopped = gw.kill9();
    // Restart on the same files: it starts, and the 20 flushed entries are there.
    let gw = GatewayBuilder::new(&mock.base_url())
        .dir(&dir)
        .tokens(&[T1])
        .start()
        .await;
    let session = gw.admin_token().await;
    logs_eventually(&gw, &session, "", 20).await;
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("call_logs.json")).unwrap())
            .unwrap();
    assert_eq!(file["logs"].as_array().unwrap().len(), 20);
    drop(stopped);
}

#[tokio::test]
async fn grok2api_log_file_is_imported_without_secrets() {
    let mock = MockServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("call_logs.json"),
        json!({"logs": [{"id": "old-1", "timestamp": 1737500000000i64, "sso": "log-token-****",
            "sso_full": T1, "model": "grok-4-fast", "success": true, "status_code": 200,
            "token_consumed": 1, "response_time": 2.5, "error_message": "", "proxy_used": "",
            "media_urls": []}], "meta": {"total_count": 1, "last_save": 1}})
        .to_string(),
    )
    .unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .dir(dir.path())
        .tokens(&[T1])
        .start()
        .await;
    let session = gw.admin_token().await;
    let r = logs_eventually(&gw, &session, "", 1).await;
    let e = &r["data"][0];
    assert_eq!(e["id"], "old-1");
    assert_eq!(e["token_id"].as_str().unwrap().len(), 12);
    assert!(e.get("sso_full").is_none());
    // The rewritten file no longer holds the secret.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(dir.path().join("call_logs.json"))
        .unwrap()
        .contains(T1)
    {
        assert!(Instant::now() < deadline, "secret still in call_logs.json");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! Call-log webhooks end to end: the real gateway, a real HTTP receiver in the test, the mock upstream. The
//! built-in JSON webhook and the chat-webhook plugin deliver; a receiver outage and a gateway restart lose
//! nothing (outbox, retries); the destination policy refuses what it must, for webhooks and the pool API.

#[macro_use]
mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// Quick retries so outages end within the test's patience, and no attempt limit (quick retries would reach
/// the default during an outage of a few seconds).
const FAST_RETRY: &str =
    "webhook_backoff_base = 0.1\nwebhook_backoff_max = 0.5\nwebhook_max_attempts = 0";

/// One request the receiver got: path, JSON body, and the status it answered.
#[derive(Clone, Debug)]
struct Hit {
    path: String,
    body: Value,
    status: u16,
}

/// A webhook receiver on a fixed loopback port that can answer any status, or be down altogether.
struct Receiver {
    port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
    status: Arc<AtomicU16>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    /// A receiver that is not listening yet (its port is reserved by number only).
    fn down() -> Receiver {
        Receiver {
            port: free_port(),
            hits: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
            stop: None,
            task: None,
        }
    }

    async fn start() -> Receiver {
        let mut r = Receiver::down();
        r.up().await;
        r
    }

    async fn up(&mut self) {
        let hits = self.hits.clone();
        let status = self.status.clone();
        let app = axum::Router::new().fallback(move |uri: http::Uri, body: bytes::Bytes| {
            let hits = hits.clone();
            let status = status.load(Ordering::SeqCst);
            async move {
                hits.lock().unwrap().push(Hit {
                    path: uri.path().to_string(),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    status,
                });
                http::StatusCode::from_u16(status).unwrap()
            }
        });
        // The port was free a moment ago; after a stop it may take a moment to be bindable again.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("receiver bind: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("receiver cannot bind {}: {e}", self.port),
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        }));
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Request ids in the built-in webhook's posts that were accepted (2xx).
    fn delivered_ids(&self) -> HashSet<String> {
        self.hits()
            .iter()
            .filter(|h| h.status < 300)
            .flat_map(|h| h.body["entries"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e["request_id"].as_str().map(str::to_string))
            .collect()
    }

    /// Waits until every id was delivered; panics with what arrived otherwise.
    async fn wait_for_ids(&self, ids: &[String], within: Duration, gw: Option<&Gateway>) {
        let deadline = Instant::now() + within;
        loop {
            let got = self.delivered_ids();
            if ids.iter().all(|i| got.contains(i)) {
                return;
            }
            if Instant::now() > deadline {
                let missing: Vec<_> = ids.iter().filter(|i| !got.contains(*i)).collect();
                panic!(
                    "missing request ids {missing:?}; hits: {:?}\nlogs:\n{}",
                    self.hits()
                        .iter()
                        .map(|h| (h.path.clone(), h.status))
                        .collect::<Vec<_>>(),
                    gw.map(|g| g.logs()).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn hello() -> Value {
    json!({"model": "grok-4-fast", "messages": [{"role": "user", "content": "hello"}]})
}

/// Sends `n` chat requests with request ids `{prefix}-{i}`; all must succeed.
async fn send_calls(gw: &Gateway, prefix: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let r = gw
            .chat(hello())
            .header("x-request-id", &id)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.unwrap();
        ids.push(id);
    }
    ids
}

/// The `/api/webhooks` row of one sink.
async fn sink(gw: &Gateway, session: &str, name: &str) -> Value {
    let v = gw.admin_get(session, "/api/webhooks").await;
    v["data"]["sinks"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no webhook {name} in {v}"))
}

/// Polls a sink's row until `pred` holds.
async fn wait_sink(
    gw: &Gateway,
    session: &str,
    name: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = sink(gw, session, name).await;
        if pred(&row) {
            return row;
        }
        if Instant::now() > deadline {
            panic!("{what}: webhook {name} is {row}\nlogs:\n{}", gw.logs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metrics_text(gw: &Gateway) -> String {
    gw.http
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A counter's value in Prometheus text (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test]
async fn builtin_json_webhook_delivers_entries_with_request_ids() {
    let mock = MockServer::start().await.unwrap();
    let rx = Receiver::start().await;
    // The query is the receiver's secret: it must never show in the admin API, the metrics or the logs.
    let hook = rx.url("/hook?key=hook-secret-123");
    let gw = GatewayBuilder::new(&mock.base_url())
        .tokens(&["tok-a"])
        .global(&format!("log_webhook_url = \"{hook}\""))
        .global("webhook_allow = [\"127.0.0.1\"]")
        .global(FAST_RETRY)
        .start()
        .await;
    let ids = send_calls(&gw, "wh-builtin", 5).await;
    rx.wait_for_ids(&ids, Duration::from_secs(20), Some(&gw))
        .await;

    let hits = rx.hits();
    assert!(hits.iter().all(|h| h.path == "/hook"), "{hits:?}");
    let first = hits.iter().find(|h| h.status == 200).unwrap();
    assert_eq!(first.body["source"], "grok2api");
    let entry = &first.body["entries"][0];
    assert_eq!(entry["model"], "grok-4-fast");
    assert_eq!(entry["status_code"], 200);
    // The token appears masked, never in full.
    let all: String = hits.iter().map(|h| h.body.to_string()).collect();
    assert!(!all.contains("tok-a\""), "unmasked token in {all}");

    let session = gw.admin_token().await;
    let row = wait_sink(&gw, &session, "builtin", "delivered", |r| {
        r["delivered"].as_u64() >= Some(1) && r["pending"] == 0
    })
    .await;
    assert_eq!(row["kind"], "builtin");
    assert_eq!(
        row["destination"],
        format!("http://127.0.0.1:{}/****", rx.port)
    );
    assert_eq!(row["failed"], 0);
    let status = gw.admin_get(&session, "/api/webhooks").await;
    assert_eq!(status["data"]["enabled"], true);
    let m = metrics_text(&gw).await;
    assert!(
        metric(&m, "grok2api_webhook_delivered_total{sink=\"builtin\"}") >= 1.0,
        "{m}"
    );
    assert!(m.contains("grok2api_webhook_outbox_depth"), "{m}");
    for text in [status.to_string(), m, gw.logs()] {
        assert!(!text.contains("hook-secret-123"), "secret leaked: {text}");
    }
}

#[tokio::test]
async fn chat_webhook_plugin_posts_slack_messages() {
    let wasm = need!("chat-webhook");
    let mock = MockServer::start().await.unwrap();
    let rx = Receiver::start().await;
    let data = tempfile::tempdir().unwrap();
    let plugins = data.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    support::plugins::install(&wasm, &plugins, "chat");
    let gw = GatewayBuilder::new(&mock.base_url())
        .dir(data.path())
        .tokens(&["tok-a"])
        .global("webhook_allow = [\"127.0.0.1\"]")
        .global(FAST_RETRY)
        .section(&format!(
            "[plugins]\nwebhooks = [\"chat\"]\n[plugins.config.chat]\nformat = \"slack\"\n\
             url = \"{}\"\ntitle = \"test-gateway\"\n",
            rx.url("/slack/T000/B000/XXXX")
        ))
        .start()
        .await;
    send_calls(&gw, "wh-chat", 4).await;
    // Each Slack message summarises some calls: "grok2api: N calls, M failed" plus one line per call.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let hits = rx.hits();
        let calls: usize = hits
            .iter()
            .filter(|h| h.status == 200)
            .map(|h| {
                let text = h.body["text"].as_str().unwrap_or_default();
                text.lines()
                    .filter(|l| l.contains("grok-4-fast 200"))
                    .count()
            })
            .sum();
        if calls >= 4 {
            let h = &hits[0];
            assert_eq!(h.path, "/slack/T000/B000/XXXX");
            let text = h.body["text"].as_str().unwrap();
            assert!(text.starts_with("test-gateway\ngrok2api: "), "{text}");
            assert_eq!(calls, 4, "{hits:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "slack posts: {hits:?}\nlogs:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let session = gw.admin_token().await;
    let row = wait_sink(&gw, &session, "chat", "delivered", |r| {
        r["delivered"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(row["kind"], "plugin");
    assert!(row["destination"].is_null(), "{row}");
}

#[tokio::test]
async fn receiver_outage_loses_nothing() {
    let mock = MockServer::start().await.unwrap();
    let mut rx = Receiver::start().await;
    rx.status.store(503, Ordering::SeqCst);
    let gw = GatewayBuilder::new(&mock.base_url())
        .tokens(&["tok-a"])
        .global(&format!("log_webhook_url = \"{}\"", rx.url("/hook")))
        .global("webhook_allow = [\"127.0.0.1\"]")
        .global(FAST_RETRY)
        .start()
        .await;
    let session = gw.admin_token().await;
    let mut ids = send_calls(&gw, "wh-outage-a", 8).await;
    // The receiver answers 503 a few times: retried, not given up.
    let deadline = Instant::now() + Duration::from_secs(20);
    while rx.hits().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "no retries; logs:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rx.delivered_ids().is_empty());
    // Then it is down altogether (connection refused) while more calls come in.
    rx.stop().await;
    ids.extend(send_calls(&gw, "wh-outage-b", 7).await);
    let row = wait_sink(&gw, &session, "builtin", "retrying", |r| {
        r["retried"].as_u64() >= Some(3) && r["pending"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(row["failed"], 0, "{row}");
    assert!(row["last_error"].is_string(), "{row}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Back: everything arrives.
    rx.status.store(200, Ordering::SeqCst);
    rx.up().await;
    rx.wait_for_ids(&ids, Duration::from_secs(30), Some(&gw))
        .await;
    let row = wait_sink(&gw, &session, "builtin", "drained", |r| r["pending"] == 0).await;
    assert_eq!(row["failed"], 0, "{row}");
    assert_eq!(row["dropped"], 0, "{row}");
    let m = metrics_text(&gw).await;
    assert!(
        metric(&m, "grok2api_webhook_retried_total{sink=\"builtin\"}") >= 3.0,
        "{m}"
    );
}

#[tokio::test]
async fn undelivered_requests_survive_a_restart() {
    let mock = MockServer::start().await.unwrap();
    let mut rx = Receiver::down();
    let hook = rx.url("/hook");
    let build = |b: GatewayBuilder| {
        b.tokens(&["tok-a"])
            .global(&format!("log_webhook_url = \"{hook}\""))
            .global("webhook_allow = [\"127.0.0.1\"]")
            .global(FAST_RETRY)
    };
    let gw = build(GatewayBuilder::new(&mock.base_url())).start().await;
    let session = gw.admin_token().await;
    let ids = send_calls(&gw, "wh-restart", 6).await;
    wait_sink(&gw, &session, "builtin", "waiting in the outbox", |r| {
        r["retried"].as_u64() >= Some(1) && r["pending"].as_u64() >= Some(1)
    })
    .await;
    let stopped = gw.terminate().await;
    assert!(stopped.status.success(), "{}", stopped.logs);
    let outbox = stopped.dir.join("webhook_outbox");
    let files = std::fs::read_dir(&outbox).unwrap().count();
    assert!(files >= 1, "nothing persisted in {}", outbox.display());

    // Start again on the same data directory, then bring the receiver up.
    let gw = build(GatewayBuilder::new(&mock.base_url()).dir(&stopped.dir))
        .start()
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    rx.up().await;
    rx.wait_for_ids(&ids, Duration::from_secs(30), Some(&gw))
        .await;
    let session = gw.admin_token().await;
    wait_sink(&gw, &session, "builtin", "drained", |r| r["pending"] == 0).await;
    // Delivered requests' files are removed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&outbox).unwrap().count() > 0 {
        assert!(Instant::now() < deadline, "outbox files left behind");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn denied_destinations_get_nothing() {
    let mock = MockServer::start().await.unwrap();
    let rx = Receiver::start().await;
    // (1) A deny-listed host name, although loopback as such is allowed.
    let gw = GatewayBuilder::new(&mock.base_url())
        .tokens(&["tok-a"])
        .global(&format!(
            "log_webhook_url = \"http://localhost:{}/hook\"",
            rx.port
        ))
        .global("webhook_allow = [\"loopback\"]\nwebhook_deny = [\"localhost\"]")
        .global(FAST_RETRY)
        .start()
        .await;
    let session = gw.admin_token().await;
    send_calls(&gw, "wh-deny", 3).await;
    let row = wait_sink(&gw, &session, "builtin", "denied", |r| {
        r["denied"].as_u64() >= Some(1)
    })
    .await;
    assert!(row["failed"].as_u64() >= Some(1), "{row}");
    assert!(
        row["last_error"]
            .as_str()
            .unwrap()
            .contains("on the deny list"),
        "{row}"
    );
    let m = metrics_text(&gw).await;
    assert!(
        metric(&m, "grok2api_netpolicy_denied_total{use=\"webhook\"}") >= 1.0,
        "{m}"
    );
    drop(gw);

    // (2) The default policy: a loopback receiver not allowed explicitly.
    let gw = GatewayBuilder::new(&mock.base_url())
        .tokens(&["tok-a"])
        .global(&format!("log_webhook_url = \"{}\"", rx.url("/hook")))
        .global(FAST_RETRY)
        .start()
        .await;
    let session = gw.admin_token().await;
    send_calls(&gw, "wh-default", 2).await;
    let row = wait_sink(&gw, &session, "builtin", "denied", |r| {
        r["denied"].as_u64() >= Some(1)
    })
    .await;
    assert!(
        row["last_error"].as_str().unwrap().contains("loopback"),
        "{row}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.hits().is_empty(), "denied webhook reached the receiver");
}

#[tokio::test]
async fn pool_api_policy_and_redirects() {
    let mock = MockServer::start().await.unwrap();
    // A pool API on loopback (allowed by default) that answers one proxy, or redirects to a metadata address.
    let app = axum::Router::new()
        .route("/ok", axum::routing::get(|| async { "127.0.0.1:3128\n" }))
        .route(
            "/moved",
            axum::routing::get(|| async {
                axum::response::Redirect::temporary("http://169.254.169.254/latest/meta-data")
            }),
        )
        .route(
            "/hop",
            axum::routing::get(|| async { axum::response::Redirect::temporary("/ok") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let refresh = |gw: &Gateway, session: String| {
        let req = gw
            .http
            .post(gw.url("/api/proxies/refresh"))
            .bearer_auth(session);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    for (path, deny, want_ok, want_text) in [
        ("/hop", "", true, ""),
        ("/moved", "", false, "metadata"),
        (
            "/ok",
            "proxy_pool_deny = [\"loopback\"]",
            false,
            "deny list",
        ),
    ] {
        let mut b = GatewayBuilder::new(&mock.base_url())
            .tokens(&["tok-a"])
            .grok(&format!(
                "proxy_pool_url = \"http://127.0.0.1:{port}{path}\"\nproxy_pool_interval = 3600"
            ));
        if !deny.is_empty() {
            b = b.grok(deny);
        }
        let gw = b.start().await;
        let session = gw.admin_token().await;
        let r = refresh(&gw, session).await;
        assert_eq!(r["success"], want_ok, "{path}: {r}");
        if !want_ok {
            let msg = r["message"].as_str().unwrap_or_default();
            assert!(msg.contains(want_text), "{path}: {msg}");
            let m = metrics_text(&gw).await;
            assert!(
                metric(&m, "grok2api_netpolicy_denied_total{use=\"pool_api\"}") >= 1.0,
                "{m}"
            );
        }
    }
}

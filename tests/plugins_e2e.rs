//! Plugins end to end: the real gateway binary, real components built from `plugins/` (by `plugins/build.sh`,
//! which `scripts/test` runs first), real forward proxies on their own loopback addresses. The mock upstream's
//! `x-mock-peer` tells which proxy carried each request, so the tests check the proxy a plugin chose.
//!
//! Components are looked up in `$GROK2API_PLUGINS_DIR` (default `target/plugins`); a missing component or
//! proxy binary skips a test, or fails it when `GROK2API_REQUIRE_ALL=1`.

#[macro_use]
mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::plugins::install;
use support::proxies::{self, ForwardProxy, Kind};
use support::*;

/// A data directory with a `plugins/` directory in it.
fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let data = tempfile::tempdir().unwrap();
    let plugins = data.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    (data, plugins)
}

fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

fn toml_list(urls: &[String]) -> String {
    let quoted: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// One plugin's row from `GET /api/plugins`.
async fn plugin_row(gw: &Gateway, session: &str, name: &str) -> Value {
    let v = gw.admin_get(session, "/api/plugins").await;
    v["data"]["plugins"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no plugin {name} in {v}"))
}

/// Sends one chat request; the status and the peer the mock upstream saw.
/// A transport error is status 0 with the error as the peer.
async fn send(gw: &Gateway, model: &str) -> (u16, String) {
    let r = match gw.chat(chat_body(model)).send().await {
        Ok(r) => r,
        Err(e) => return (0, format!("send: {e}")),
    };
    let p = peer(&r);
    let status = r.status().as_u16();
    match r.bytes().await {
        Ok(_) => (status, p),
        Err(e) => (0, format!("body: {e}")),
    }
}

/// Whether the gateway retried this request (its log line lists failed attempts): a retry avoids the proxy
/// that failed, so it may leave through the other one whatever the plugin chose.
async fn retried(gw: &Gateway, request_id: &str) -> bool {
    let key = format!("request_id={request_id} ");
    for _ in 0..50 {
        if let Some(line) = gw
            .logs()
            .lines()
            .find(|l| l.contains(&key) && l.contains("request done"))
        {
            return !line.contains("retries= ");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Like `send`, but `None` for a request the gateway had to retry.
async fn send_unretried(gw: &Gateway, model: &str) -> Option<(u16, String)> {
    let id = uuid_like();
    let r = gw
        .chat(chat_body(model))
        .header("x-request-id", &id)
        .send()
        .await;
    let r = match r {
        Ok(r) => r,
        Err(e) => return Some((0, format!("send: {e}"))),
    };
    let p = peer(&r);
    let status = r.status().as_u16();
    if let Err(e) = r.bytes().await {
        return Some((0, format!("body: {e}")));
    }
    if retried(gw, &id).await {
        eprintln!("request {id} was retried through another proxy; not counted");
        return None;
    }
    Some((status, p))
}

fn uuid_like() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "e2e-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The gateway's last log lines, for failure messages.
fn tail(gw: &Gateway) -> String {
    let logs = gw.logs();
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

const TOKENS: [&str; 3] = ["tok-e2e-aaaa-1", "tok-e2e-bbbb-2", "tok-e2e-cccc-3"];

#[tokio::test]
async fn selector_plugin_chooses_the_proxy_that_carries_the_request() {
    let wasm = need!("model-route");
    if !proxies::available() {
        return;
    }
    let a = ForwardProxy::start(Kind::Http, "127.0.0.2", None);
    let b = ForwardProxy::start(Kind::Http, "127.0.0.3", None);
    let mock = MockServer::start().await.unwrap();
    let (data, plugins) = data_dir();
    install(&wasm, &plugins, "route");
    // grok-3 → proxy A, grok-4* → proxy B, anything else → the built-in.
    let gw = GatewayBuilder::new(&mock.base_url())
        .grok(&format!("proxy_urls = {}", toml_list(&[a.url(), b.url()])))
        .tokens(&TOKENS)
        .dir(data.path())
        .section(&format!(
            "[plugins]\nselector = \"route\"\n[plugins.config.route]\nroutes = [\
             {{ model = \"grok-3\", host = \"127.0.0.1:{}\" }}, \
             {{ model = \"grok-4*\", host = \"127.0.0.1:{}\" }}]\n",
            a.port, b.port
        ))
        .start()
        .await;
    let session = gw.admin_token().await;
    assert_eq!(plugin_row(&gw, &session, "route").await["state"], "loaded");

    // The same tokens alternate models: a token's binding never overrides the plugin's choice.
    for round in 0..6 {
        for model in ["grok-3", "grok-4-fast"] {
            let (status, p) = send(&gw, model).await;
            assert_eq!(status, 200, "round {round} {model}");
            let want = if model == "grok-3" {
                "127.0.0.2"
            } else {
                "127.0.0.3"
            };
            assert_eq!(
                p, want,
                "round {round}: {model} went through the wrong proxy"
            );
        }
    }
    // A model no route matches: the plugin answers `default` and the built-in serves through a proxy.
    let (status, p) = send(&gw, "other-model").await;
    assert_eq!(status, 200);
    assert!(p == "127.0.0.2" || p == "127.0.0.3", "peer {p}");

    let row = plugin_row(&gw, &session, "route").await;
    assert!(row["calls"].as_u64().unwrap() >= 13, "{row}");
    assert_eq!(row["errors"], 0, "{row}");
    gw.terminate().await;
}

/// A pool API answering a vendor format the built-in parser does not know.
struct VendorPool {
    port: u16,
    hits: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl VendorPool {
    async fn start(body: String) -> VendorPool {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let app = axum::Router::new().route(
            "/nodes",
            axum::routing::get(move || {
                let body = body.clone();
                let h = h.clone();
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    ([(http::header::CONTENT_TYPE, "application/json")], body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        VendorPool {
            port,
            hits,
            _task: task,
        }
    }
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/nodes", self.port)
    }
}

async fn pool_total(gw: &Gateway, session: &str) -> u64 {
    let v = gw.admin_get(session, "/api/proxies").await;
    v["data"]["total"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn pool_parser_plugin_understands_what_the_built_in_does_not() {
    let wasm = need!("json-pool");
    if !proxies::available() {
        return;
    }
    let a = ForwardProxy::start(Kind::Http, "127.0.0.2", None);
    let b = ForwardProxy::start(Kind::Http, "127.0.0.3", None);
    let body = json!({"status": "ok", "payload": {"nodes": [
        {"addr": "127.0.0.1", "p": a.port, "tag": "node-a"},
        {"addr": "127.0.0.1", "p": b.port, "tag": "node-b"},
    ]}})
    .to_string();
    let api = VendorPool::start(body).await;
    let mock = MockServer::start().await.unwrap();

    // Without the plugin: the fetch happens, nothing enters the pool, and requests get no proxy.
    let builtin = GatewayBuilder::new(&mock.base_url())
        .grok(&format!("proxy_pool_url = \"{}\"", api.url()))
        .grok("proxy_pool_interval = 3600")
        .tokens(&TOKENS[..1])
        .start()
        .await;
    let session = builtin.admin_token().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.hits.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the built-in never fetched");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = send(&builtin, "grok-3").await;
    assert_eq!(
        status, 503,
        "the built-in must not understand the vendor format"
    );
    assert_eq!(pool_total(&builtin, &session).await, 0);
    builtin.terminate().await;

    // With json-pool told where the list and fields are: both proxies enter the pool and carry requests.
    let (data, plugins) = data_dir();
    install(&wasm, &plugins, "jp");
    let gw = GatewayBuilder::new(&mock.base_url())
        .grok(&format!("proxy_pool_url = \"{}\"", api.url()))
        .grok("proxy_pool_interval = 3600")
        .tokens(&TOKENS)
        .dir(data.path())
        .section(
            "[plugins]\npool_parser = \"jp\"\n[plugins.config.jp]\nlist = \"payload.nodes\"\n\
             host_field = \"addr\"\nport_field = \"p\"\nlabel_field = \"tag\"\n",
        )
        .start()
        .await;
    let session = gw.admin_token().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool_total(&gw, &session).await != 2 {
        assert!(
            Instant::now() < deadline,
            "the plugin's proxies never entered the pool: {}",
            gw.admin_get(&session, "/api/proxies").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = gw.admin_get(&session, "/api/proxies").await;
    let urls: Vec<String> = listed["data"]["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["url"].as_str().unwrap_or_default().to_string())
        .collect();
    for port in [a.port, b.port] {
        assert!(
            urls.iter().any(|u| u.ends_with(&format!(":{port}"))),
            "{port} not in {urls:?}"
        );
    }
    let mut peers = std::collections::HashSet::new();
    for _ in 0..6 {
        let (status, p) = send(&gw, "grok-3").await;
        assert_eq!(status, 200);
        peers.insert(p);
    }
    assert!(
        peers.iter().all(|p| p == "127.0.0.2" || p == "127.0.0.3"),
        "{peers:?}"
    );
    let row = plugin_row(&gw, &session, "jp").await;
    assert!(row["calls"].as_u64().unwrap() >= 1, "{row}");
    assert_eq!(row["errors"], 0, "{row}");
    gw.terminate().await;
}

#[tokio::test]
async fn misbehaving_selector_never_costs_a_request_and_gets_disabled() {
    let wasm = need!("tg-sandbox");
    if !proxies::available() {
        return;
    }
    let a = ForwardProxy::start(Kind::Http, "127.0.0.2", None);
    let b = ForwardProxy::start(Kind::Http, "127.0.0.3", None);
    let mock = MockServer::start().await.unwrap();
    const MAX: u64 = 4;
    for mode in ["panic", "oob", "loop"] {
        let (data, plugins) = data_dir();
        install(&wasm, &plugins, "sb");
        let gw = GatewayBuilder::new(&mock.base_url())
            .grok(&format!("proxy_urls = {}", toml_list(&[a.url(), b.url()])))
            .tokens(&TOKENS)
            .dir(data.path())
            .section(&format!(
                "[plugins]\nselector = \"sb\"\nmax_consecutive_errors = {MAX}\n\
                 [plugins.config.sb]\nmode = \"{mode}\"\n"
            ))
            .start()
            .await;
        let session = gw.admin_token().await;
        assert_eq!(plugin_row(&gw, &session, "sb").await["state"], "loaded");
        for i in 0..(MAX + 6) {
            let (status, p) = send(&gw, "grok-3").await;
            assert_eq!(
                status,
                200,
                "{mode}: request {i} failed: {p}\n{}",
                tail(&gw)
            );
            assert!(
                p == "127.0.0.2" || p == "127.0.0.3",
                "{mode}: request {i} did not go through a proxy: {p}"
            );
            if i + 1 == MAX / 2 {
                let row = plugin_row(&gw, &session, "sb").await;
                assert_eq!(row["errors"], MAX / 2, "{mode}: {row}");
                assert_eq!(row["state"], "loaded", "{mode}: {row}");
            }
        }
        // Disabled after MAX errors in a row, and not called again afterwards.
        let row = plugin_row(&gw, &session, "sb").await;
        assert_eq!(row["state"], "disabled", "{mode}: {row}");
        assert_eq!(row["errors"], MAX, "{mode}: {row}");
        assert!(row["last_error"].is_string(), "{mode}: {row}");
        gw.terminate().await;
    }
}

/// What the load loops saw: (status, peer) per request.
type Seen = Arc<Mutex<Vec<(u16, String)>>>;

#[tokio::test]
async fn hot_swapping_the_selector_under_load_loses_no_request() {
    let sandbox = need!("tg-sandbox");
    let route = need!("model-route");
    if !proxies::available() {
        return;
    }
    let a = ForwardProxy::start(Kind::Http, "127.0.0.2", None);
    let b = ForwardProxy::start(Kind::Http, "127.0.0.3", None);
    let mock = MockServer::start().await.unwrap();
    let (data, plugins) = data_dir();
    install(&sandbox, &plugins, "sel");
    // Listed but not called: compiles both components once, so every swap below hits the compile cache.
    install(&sandbox, &plugins, "warm-sandbox");
    install(&route, &plugins, "warm-route");
    // A generous per-call deadline: a timed-out call falls back to the built-in, which could pass for the other
    // plugin's choice. One config for both: the sandbox guest reads `mode` (first candidate: proxy A), model-route reads
    // `routes` (everything to proxy B).
    let gw = GatewayBuilder::new(&mock.base_url())
        .grok(&format!("proxy_urls = {}", toml_list(&[a.url(), b.url()])))
        // Loopback tinyproxy now and then refuses a connection under this load; that must not mark a proxy
        // unhealthy (the plugin would then decline and the built-in choose).
        .grok("proxy_max_fails = 1000")
        .tokens(&TOKENS)
        .dir(data.path())
        .section(&format!(
            "[plugins]\nselector = \"sel\"\ntimeout_ms = 1000\n[plugins.config.sel]\nmode = \"first\"\n\
             routes = [{{ model = \"*\", host = \"127.0.0.1:{}\" }}]\n",
            b.port
        ))
        .start()
        .await;
    let session = gw.admin_token().await;
    for name in ["sel", "warm-sandbox", "warm-route"] {
        assert_eq!(plugin_row(&gw, &session, name).await["state"], "loaded");
    }
    let (status, p) = send(&gw, "grok-3").await;
    assert_eq!((status, p.as_str()), (200, "127.0.0.2"));

    let stop = Arc::new(AtomicBool::new(false));
    let seen: Seen = Arc::default();
    let mut loops = Vec::new();
    for _ in 0..8 {
        let (http, url, stop, seen) = (
            gw.http.clone(),
            gw.url("/v1/chat/completions"),
            stop.clone(),
            seen.clone(),
        );
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .json(&chat_body("grok-3"))
                    .send()
                    .await;
                let row = match r {
                    Ok(r) => {
                        let p = peer(&r);
                        let s = r.status().as_u16();
                        match r.bytes().await {
                            Ok(_) => (s, p),
                            Err(e) => (0, format!("body: {e}")),
                        }
                    }
                    Err(e) => (0, format!("send: {e}")),
                };
                seen.lock().unwrap().push(row);
            }
        }));
    }

    const SWAPS: usize = 30;
    let mut took = Vec::with_capacity(SWAPS);
    for i in 0..SWAPS {
        // Odd swaps publish model-route (→ B), even ones the sandbox guest (→ A).
        let (src, want) = if i % 2 == 0 {
            (&route, "127.0.0.3")
        } else {
            (&sandbox, "127.0.0.2")
        };
        let start = Instant::now();
        install(src, &plugins, "sel");
        loop {
            // A retried request left through whichever proxy had not failed: no evidence either way.
            if let Some((status, p)) = send_unretried(&gw, "grok-3").await {
                assert_eq!(status, 200, "swap {i}: {p}");
                if p == want {
                    break;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "swap {i}: still not serving through {want} after 1 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        took.push(start.elapsed());
        // The new behaviour is steady, not a fluke: the next few answers agree.
        for _ in 0..3 {
            if let Some(got) = send_unretried(&gw, "grok-3").await {
                assert_eq!(got, (200, want.to_string()), "swap {i}\n{}", tail(&gw));
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let failed: Vec<_> = seen.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        seen.len(),
        &failed[..failed.len().min(5)]
    );
    let through_a = seen.iter().filter(|(_, p)| p == "127.0.0.2").count();
    let through_b = seen.iter().filter(|(_, p)| p == "127.0.0.3").count();
    assert_eq!(
        through_a + through_b,
        seen.len(),
        "a request skipped both proxies"
    );
    assert!(through_a > 0 && through_b > 0, "{through_a} / {through_b}");
    let row = plugin_row(&gw, &session, "sel").await;
    assert_eq!(row["errors"], 0, "{row}");
    assert_eq!(row["state"], "loaded", "{row}");
    took.sort();
    eprintln!(
        "{SWAPS} swaps under load: {} requests, 0 failed; swap to new behaviour p50 {:?}, max {:?}",
        seen.len(),
        took[SWAPS / 2],
        took[SWAPS - 1]
    );
    gw.terminate().await;
}

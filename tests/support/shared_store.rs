//! The shared-storage scenarios, run by `storage_redis.rs` and `storage_mysql.rs` against their real
//! servers: two gateway instances on one store, a restart of the store's server mid-load, start-up errors,
//! export/import.

use std::collections::HashMap;
use std::future::Future;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::proxies::{self, ForwardProxy, Kind};
use super::*;

/// A store server a test started.
pub trait Store {
    /// Its `STORAGE_MODE`.
    const MODE: &'static str;
    fn url(&self) -> String;
    /// Stops the server (the data stays).
    fn stop(&mut self);
    /// Starts it again on the same port with the same data.
    fn spawn(&mut self);
}

impl Store for super::redis::RedisServer {
    const MODE: &'static str = "redis";
    fn url(&self) -> String {
        super::redis::RedisServer::url(self)
    }
    fn stop(&mut self) {
        super::redis::RedisServer::stop(self)
    }
    fn spawn(&mut self) {
        super::redis::RedisServer::spawn(self)
    }
}

impl Store for super::mysql::MysqlServer {
    const MODE: &'static str = "mysql";
    fn url(&self) -> String {
        super::mysql::MysqlServer::url(self)
    }
    fn stop(&mut self) {
        super::mysql::MysqlServer::stop(self)
    }
    fn spawn(&mut self) {
        super::mysql::MysqlServer::spawn(self)
    }
}

pub const TOKENS: [&str; 2] = ["tok-shared-aaaaaaaa-1", "tok-shared-bbbbbbbb-2"];

pub fn hello() -> Value {
    json!({"model": "grok-4-fast", "messages": [{"role": "user", "content": "hello"}]})
}

pub fn toml_list(urls: &[String]) -> String {
    let quoted: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A gateway on `store`.
pub fn on_store<S: Store>(mock: &MockServer, store: &S) -> GatewayBuilder {
    GatewayBuilder::new(&mock.base_url())
        .env("STORAGE_MODE", S::MODE)
        .env("DATABASE_URL", &store.url())
}

/// Polls `check` until it returns `Some`, or fails with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn assignments(gw: &Gateway, session: &str) -> Value {
    gw.admin_get(session, "/api/proxies").await["data"]["assignments"].clone()
}

pub async fn proxy_healthy(gw: &Gateway, session: &str, port: u16) -> bool {
    let d = gw.admin_get(session, "/api/proxies").await;
    d["data"]["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["url"].as_str().unwrap().ends_with(&format!(":{port}")))
        .map(|p| p["healthy"] == true)
        .unwrap_or(false)
}

pub async fn log_total(gw: &Gateway, session: &str) -> u64 {
    gw.admin_get(session, "/api/logs?page_size=1").await["total"]
        .as_u64()
        .unwrap()
}

/// Two instances share tokens (imported by the first start), sessions, bindings, proxy health and logs.
pub async fn two_instances_share_everything<S: Store>(store: &S) {
    if !proxies::available() {
        return;
    }
    let mut p1 = ForwardProxy::start(Kind::Http, "127.0.0.2", None);
    let p2 = ForwardProxy::start(Kind::Http, "127.0.0.3", None);
    let urls = vec![p1.url(), p2.url()];
    let mock = MockServer::start().await.unwrap();
    let build = || {
        on_store(&mock, store)
            .grok(&format!("proxy_urls = {}", toml_list(&urls)))
            .grok("proxy_max_fails = 1")
            .grok("proxy_check_base_secs = 300")
            .grok("proxy_check_max_secs = 600")
    };
    // A starts on the empty store with a token.json: it is imported. B has no files at all.
    let a = build().tokens(&TOKENS).start().await;
    let b = build().start().await;
    assert!(
        a.logs().contains("imported the data directory"),
        "{}",
        a.logs()
    );
    assert!(!b.logs().contains("imported the data directory"));

    // A session from A's login works on B; a logout on B ends it on A.
    let session = a.admin_token().await;
    let listed = b.admin_get(&session, "/api/tokens?page_size=100").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2, "{listed}");
    let other = b.admin_token().await;
    let r = b
        .http
        .post(b.url("/api/logout"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = a
        .http
        .get(a.url("/api/tokens"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A binding made by A is seen by B.
    let mut sent = 0u64;
    for _ in 0..4 {
        assert_eq!(a.chat(hello()).send().await.unwrap().status(), 200);
        sent += 1;
    }
    let on_a = assignments(&a, &session).await;
    assert_eq!(on_a.as_object().unwrap().len(), 2, "{on_a}");
    eventually(Duration::from_secs(5), "B sees A's bindings", || async {
        (assignments(&b, &session).await == on_a).then_some(())
    })
    .await;

    // A proxy A finds dead is avoided by B, even once it is back (B never tried it itself).
    p1.kill();
    for _ in 0..4 {
        a.chat(hello()).send().await.unwrap();
        sent += 1;
    }
    assert!(!proxy_healthy(&a, &session, p1.port).await);
    p1.restart();
    eventually(
        Duration::from_secs(5),
        "B sees the proxy unhealthy",
        || async { (!proxy_healthy(&b, &session, p1.port).await).then_some(()) },
    )
    .await;
    for _ in 0..6 {
        let r = b.chat(hello()).send().await.unwrap();
        let from = peer(&r);
        // The error's text says which ran out (token or egress) if this fails.
        let status = r.status();
        assert_eq!(
            status,
            200,
            "B's request failed: {}",
            r.text().await.unwrap_or_default()
        );
        assert!(
            from.starts_with("127.0.0.3"),
            "B used the unhealthy proxy: {from}"
        );
        sent += 1;
    }

    // Logs written by both instances appear in one query, on either of them.
    for gw in [&a, &b] {
        eventually(Duration::from_secs(10), "all call-log entries", || async {
            (log_total(gw, &session).await == sent).then_some(())
        })
        .await;
    }
    let stats = a.admin_get(&session, "/api/logs/stats").await;
    assert_eq!(stats["data"]["dropped"], 0, "{stats}");
}

/// Concurrent first requests for one unbound token on two instances end with one binding.
pub async fn concurrent_first_requests_end_with_one_binding<S: Store>(store: &S) {
    if !proxies::available() {
        return;
    }
    let p1 = ForwardProxy::start(Kind::Http, "127.0.0.2", None);
    let p2 = ForwardProxy::start(Kind::Http, "127.0.0.3", None);
    let mock = MockServer::start().await.unwrap();
    // Opposite proxy orders, so each instance's first choice differs: a real race.
    let a = on_store(&mock, store)
        .grok(&format!(
            "proxy_urls = {}",
            toml_list(&[p1.url(), p2.url()])
        ))
        .tokens(&TOKENS[..1])
        .start()
        .await;
    let b = on_store(&mock, store)
        .grok(&format!(
            "proxy_urls = {}",
            toml_list(&[p2.url(), p1.url()])
        ))
        .start()
        .await;
    let session = a.admin_token().await;
    eventually(Duration::from_secs(5), "B has the token", || async {
        let l = b.admin_get(&session, "/api/tokens").await;
        (l["data"].as_array().unwrap().len() == 1).then_some(())
    })
    .await;

    let mut calls = Vec::new();
    for i in 0..16 {
        let gw = if i % 2 == 0 { &a } else { &b };
        calls.push(gw.chat(hello()).send());
    }
    let mut first = std::collections::HashSet::new();
    for r in futures_util::future::join_all(calls).await {
        let r = r.unwrap();
        assert_eq!(r.status(), 200);
        first.insert(peer(&r));
    }
    let one = eventually(Duration::from_secs(5), "one binding on both", || async {
        let (x, y) = (
            assignments(&a, &session).await,
            assignments(&b, &session).await,
        );
        (x == y && x.as_object().unwrap().len() == 1).then_some(x)
    })
    .await;
    // And from now on both route the token through that proxy.
    let mut peers = HashMap::new();
    for gw in [&a, &b, &a, &b] {
        let r = gw.chat(hello()).send().await.unwrap();
        *peers.entry(peer(&r)).or_insert(0) += 1;
    }
    assert_eq!(peers.len(), 1, "{peers:?} for binding {one}");
    // Both first choices were used: the two instances raced, and one of them lost its claim in the store and
    // adopted the winner's binding (not just converged to whichever wrote last).
    assert_eq!(first.len(), 2, "no race happened: {first:?}");
    // The loser usually finds out at its push (a failed compare-and-set, logged); when its poll read the
    // winner's binding first, it adopts it there without a claim. Never may both lose.
    tokio::time::sleep(Duration::from_millis(300)).await; // log lines go through a writer thread
    let lost = [&a, &b]
        .iter()
        .filter(|gw| gw.logs().contains("binding claimed by another instance"))
        .count();
    assert!(lost <= 1, "both instances lost the claim");
}

/// Stopping the store's server mid-load for `away` and starting it again loses no call-log entry and fails
/// no request; returns how many calls were sent. `away` must outlast the backend's own retrying, so that
/// writes really fail in between.
pub async fn restart_under_load_loses_no_call_log_entry<S: Store>(
    store: &mut S,
    away: Duration,
) -> u64 {
    let mock = MockServer::start().await.unwrap();
    let gw = on_store(&mock, store)
        .tokens(&TOKENS)
        .global("log_flush_interval = 0.2")
        // Above anything the load can send in its few seconds: retention must not trim what is counted.
        .global("log_max_count = 1000000")
        .start()
        .await;
    let session = gw.admin_token().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (c, url, stop) = (
            gw.http.clone(),
            gw.url("/v1/chat/completions"),
            stop.clone(),
        );
        workers.push(tokio::spawn(async move {
            let (mut ok, mut other) = (0u64, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = c
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .json(&hello())
                    .send()
                    .await;
                match r.map(|r| r.status().as_u16()) {
                    Ok(200) => ok += 1,
                    _ => other += 1,
                }
            }
            (ok, other)
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    store.stop();
    // The request path does not touch the store: requests go on while it is away.
    tokio::time::sleep(away).await;
    let health = gw.http.get(gw.url("/health")).send().await.unwrap();
    assert!(health.status().is_success());
    store.spawn();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut sent, mut failed) = (0, 0);
    for w in workers {
        let (ok, other) = w.await.unwrap();
        sent += ok;
        failed += other;
    }
    assert_eq!(failed, 0, "requests failed while the store was away");
    assert!(sent > 20, "too little load: {sent}");
    // Entries are in the instance's memory at once; `pending` says when the store has them too.
    let stored = eventually(Duration::from_secs(20), "every entry stored", || async {
        let r = gw
            .http
            .get(gw.url("/api/logs/stats"))
            .bearer_auth(&session)
            .send()
            .await
            .ok()?;
        let stats = r.json::<Value>().await.ok()?;
        let total = stats["data"]["total"].as_u64()?;
        let pending = stats["data"]["pending"].as_u64()?;
        (total >= sent && pending == 0).then_some(total)
    })
    .await;
    assert_eq!(stored, sent, "duplicates in the shared log");
    let stats = gw.admin_get(&session, "/api/logs/stats").await;
    assert_eq!(stats["data"]["dropped"], 0, "{stats}");
    assert!(gw.logs().contains("persisting call-log entries failed"));
    sent
}

pub fn run_cli(
    args: &[&str],
    envs: &[(&str, &str)],
    dir: &std::path::Path,
) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_grok2api"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", dir)
        .env("PORT", free_port().to_string())
        .envs(envs.iter().copied())
        .output()
        .unwrap()
}

/// `(environment, exit code, part of the message)`.
pub type StartCase<'a> = (&'a [(&'a str, &'a str)], i32, &'a str);

/// `grok2api serve` stops with each case's exit code and message, and never shows `s3cretPass`.
pub fn start_fails_with_masked_message(cases: &[StartCase]) {
    let dir = tempfile::tempdir().unwrap();
    for &(env, code, msg) in cases {
        let out = run_cli(&["serve"], env, dir.path());
        let err = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{env:?}: {err}");
        assert!(err.contains(msg), "{env:?}: {err}");
        assert!(
            !err.contains("s3cretPass"),
            "password in the message: {err}"
        );
    }
}

/// `import` from files, `export` back, and a gateway on the imported store does not import over it.
pub async fn export_import_round_trip_converts_secret_keys<S: Store>(store: &S) {
    let src = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("token.json"), token_json(&TOKENS, &[])).unwrap();
    let proxy = "http://u:pw@127.0.0.1:3128";
    std::fs::write(
        src.path().join("proxy_state.json"),
        json!({"proxies": {proxy: {"url": proxy, "healthy": false, "fail_count": 2}},
               "assignments": {TOKENS[0]: proxy}})
        .to_string(),
    )
    .unwrap();
    let logs: Vec<Value> = (0..3)
        .map(|i| json!({"id": format!("l{i}"), "timestamp": 1000 + i, "model": "m", "sso_full": TOKENS[1]}))
        .collect();
    std::fs::write(
        src.path().join("call_logs.json"),
        json!({"logs": logs}).to_string(),
    )
    .unwrap();
    let far = now_ms() + 3_600_000;
    std::fs::write(
        src.path().join("admin_sessions.json"),
        json!([{"token_hash": "ab12", "expires_at_ms": far}]).to_string(),
    )
    .unwrap();
    let url = store.url();
    let env = [("STORAGE_MODE", S::MODE), ("DATABASE_URL", url.as_str())];
    let from = src.path().to_str().unwrap();
    let r = run_cli(&["import", "--from", from], &env, data.path());
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let said = String::from_utf8_lossy(&r.stdout);
    assert!(
        said.contains("2 tokens, 1 proxies, 1 bindings, 1 admin sessions, 3 call-log entries"),
        "{said}"
    );
    let to = out.path().to_str().unwrap();
    let r = run_cli(&["export", "--out", to], &env, data.path());
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(out.path().join(name)).unwrap()).unwrap()
    };
    let tokens = read("token.json");
    assert_eq!(tokens["ssoNormal"].as_object().unwrap().len(), 2);
    let state = read("proxy_state.json");
    assert_eq!(state["proxies"][proxy]["healthy"], false);
    assert_eq!(state["proxies"][proxy]["fail_count"], 2);
    let assigned = state["assignments"].as_object().unwrap();
    assert_eq!(assigned.len(), 1);
    assert!(
        !assigned.contains_key(TOKENS[0]),
        "binding keyed by the secret: {state}"
    );
    let logs = read("call_logs.json");
    assert_eq!(logs["logs"].as_array().unwrap().len(), 3);
    let text = logs.to_string();
    assert!(!text.contains(TOKENS[1]), "secret in the exported log");
    assert_eq!(read("admin_sessions.json").as_array().unwrap().len(), 1);
    // A gateway on the imported store does not import its (empty) data directory over it.
    let mock = MockServer::start().await.unwrap();
    let gw = on_store(&mock, store).dir(data.path()).start().await;
    let session = gw.admin_token().await;
    let listed = gw.admin_get(&session, "/api/tokens").await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
}

/// The shared call log's contract, on two storage handles (two processes' worth) of one store: an instance's
/// own entries reach the others but are not read back by itself, a retried batch is written once, and
/// `append_own_log` moves the cursor past its entries only when nothing else came in between (a store may
/// never move it: `moves_cursor` false).
pub async fn own_log_contract(
    a: &dyn grok2api::storage::shared::SharedState,
    b: &dyn grok2api::storage::shared::SharedState,
    moves_cursor: bool,
) {
    use grok2api::storage::shared::LogCursor;
    use grok2api::storage::CallLogEntry;
    use std::sync::Arc;
    let entry = |i: i64| {
        Arc::new(CallLogEntry {
            id: format!("contract-{i}"),
            timestamp: 1_700_000_000_000 + i,
            model: "grok-4-fast".into(),
            success: true,
            status_code: 200,
            ..Default::default()
        })
    };
    let ids = |t: &grok2api::storage::shared::LogTail| -> Vec<String> {
        t.entries.iter().map(|e| e.id.clone()).collect()
    };
    let batch: Vec<_> = (1..=3).map(|i| (i as u64, entry(i))).collect();
    let moved = a
        .append_own_log(&batch, &LogCursor::default())
        .await
        .unwrap();
    // A lost reply: the same batch again, plus one more.
    let mut retry = batch.clone();
    retry.push((4, entry(4)));
    a.append_own_log(&retry, &LogCursor::default())
        .await
        .unwrap();

    let all = b.tail_log(&LogCursor::default(), 100, false).await.unwrap();
    assert_eq!(
        ids(&all),
        ["contract-1", "contract-2", "contract-3", "contract-4"],
        "another instance reads each entry once"
    );
    let own = a.tail_log(&LogCursor::default(), 100, false).await.unwrap();
    assert!(
        own.entries.is_empty(),
        "own entries read back: {:?}",
        ids(&own)
    );
    assert_eq!(
        own.cursor, all.cursor,
        "skipped entries still move the cursor"
    );
    let with_own = a.tail_log(&LogCursor::default(), 100, true).await.unwrap();
    assert_eq!(ids(&with_own), ids(&all));
    match moved {
        Some(c) => {
            assert!(moves_cursor);
            // Moved past the first batch only: the retry's new entry lies beyond it.
            let rest = a.tail_log(&c, 100, true).await.unwrap();
            assert_eq!(ids(&rest), ["contract-4"]);
        }
        None => assert!(
            !moves_cursor,
            "nothing else was appended: the cursor should move"
        ),
    }

    // B appends; A's next append must not jump over B's entry.
    b.append_own_log(&[(1, entry(5))], &all.cursor)
        .await
        .unwrap();
    let moved = a
        .append_own_log(&[(5, entry(6))], &all.cursor)
        .await
        .unwrap();
    assert_eq!(moved, None, "jumped over another instance's entry");
    let next = a.tail_log(&all.cursor, 100, false).await.unwrap();
    assert_eq!(ids(&next), ["contract-5"]);
    let next = b.tail_log(&all.cursor, 100, false).await.unwrap();
    assert_eq!(ids(&next), ["contract-6"]);
}

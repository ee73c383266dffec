//! Secret hygiene: a full scenario with every kind of secret (pool tokens from token.json and the admin API,
//! proxy credentials from the settings and the admin API, the admin password, the API key, the metrics token,
//! an admin session), successes, upstream errors, streams, refused proxies and bad input; then every captured
//! log line (debug level for all crates), every file in the data directory, /metrics and every admin answer
//! are searched for each secret. Secrets may only be where they are stored on purpose: the settings file,
//! token.json's keys and the proxy URLs in proxy_state.json.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use support::proxies::{self, dead_port, ForwardProxy, Kind};
use support::*;

const TOK_FILE: &str = "tok-hyg-file-Q7ZP3XK9WBVM2A";
const TOK_ADMIN: &str = "tok-hyg-admin-H4JD8RTN6YCL5E";
const TOK_BAD: &str = "tok-hyg-bad-K2MX9QW7ZT4P8N";
const HTTP_PW: &str = "PxPw-Http-S3cr3t-77";
const SOCKS_PW: &str = "PxPw-Socks-S3cr3t-88";
const WRONG_PW: &str = "PxPw-Wrong-S3cr3t-99";
const DEAD_PW: &str = "PxPw-Dead-S3cr3t-11";
const BAD_URL_PW: &str = "PxPw-BadScheme-S3cr3t-22";
const METRICS_TOKEN: &str = "metrics-S3cr3t-tok-33";
const WRONG_API_KEY: &str = "sk-wrong-guess-S3cr3t-44";
const WRONG_ADMIN_PW: &str = "admin-wrong-S3cr3t-55";

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello"}]})
}

/// Every file under `dir`, recursively, with its relative path.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// What of a state file may not hold secrets: token.json without its keys, proxy_state.json without the proxy
/// URLs (the credential store of admin-added proxies, also the values of the token bindings). Other files are
/// scanned whole.
fn scannable(name: &str, bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).into_owned();
    match name {
        "token.json" => {
            let v: Value = serde_json::from_str(&text).unwrap();
            let records: Vec<&Value> = ["ssoNormal", "ssoSuper"]
                .iter()
                .filter_map(|p| v[*p].as_object())
                .flat_map(|m| m.values())
                .collect();
            serde_json::to_string(&records).unwrap()
        }
        "proxy_state.json" => {
            let mut v: Value = serde_json::from_str(&text).unwrap();
            let mut rest = Vec::new();
            if let Some(m) = v["proxies"].as_object_mut() {
                for rec in m.values_mut() {
                    if let Some(o) = rec.as_object_mut() {
                        o.remove("url");
                    }
                    rest.push(rec.clone());
                }
            }
            // Bindings map token ids to proxy URLs: the keys only.
            if let Some(m) = v["assignments"].as_object() {
                rest.push(json!(m.keys().collect::<Vec<_>>()));
            }
            serde_json::to_string(&rest).unwrap()
        }
        _ => text,
    }
}

#[tokio::test]
async fn no_secret_leaks_into_logs_files_metrics_or_answers() {
    if !proxies::available() {
        return;
    }
    let mock = MockServer::start().await.unwrap();
    let http_px = ForwardProxy::start(Kind::Http, "127.0.0.2", Some(("hyguser", HTTP_PW)));
    let socks_px = ForwardProxy::start(Kind::Socks, "127.0.0.3", Some(("hygsocks", SOCKS_PW)));
    let wrong_px = http_px.url().replace(HTTP_PW, WRONG_PW);
    let dead_px = format!("http://deaduser:{DEAD_PW}@127.0.0.1:{}", dead_port());
    let gw = GatewayBuilder::new(&mock.base_url())
        .tokens(&[TOK_FILE, TOK_BAD])
        .grok(&format!(
            "proxy_urls = [\"{}\", \"{wrong_px}\", \"{dead_px}\"]",
            http_px.url()
        ))
        .grok("proxy_max_fails = 1")
        .global(&format!("metrics_token = \"{METRICS_TOKEN}\""))
        .env("RUST_LOG", "debug")
        .start()
        .await;
    let mut answers: Vec<(String, String)> = Vec::new();
    let mut keep = |what: &str, body: String| answers.push((what.to_string(), body));

    // Admin: a failed login, a session, tokens and proxies added, bad input echoed back?
    let r = gw
        .http
        .post(gw.url("/api/login"))
        .json(&json!({"username": "admin", "password": WRONG_ADMIN_PW}))
        .send()
        .await
        .unwrap();
    keep("failed login", r.text().await.unwrap());
    let session = gw.admin_token().await;
    let r = gw
        .admin_post(
            &session,
            "/api/tokens/add",
            json!({"tokens": [TOK_ADMIN], "token_type": "sso"}),
        )
        .await;
    keep("tokens/add", r.to_string());
    let r = gw
        .admin_post(&session, "/api/proxies", json!({"url": socks_px.url()}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    keep("proxies add", r.to_string());
    let r = gw
        .admin_post(
            &session,
            "/api/proxies",
            json!({"url": format!("ftp://u:{BAD_URL_PW}@h:1")}),
        )
        .await;
    keep("proxies add bad scheme", r.to_string());
    let r = gw
        .admin_post(
            &session,
            "/api/proxies/test",
            json!({"url": dead_px.clone()}),
        )
        .await;
    keep("proxies test dead", r.to_string());

    // The upstream refuses one token and fails once.
    mock.add_rule(Rule {
        credential: Some(TOK_BAD.into()),
        path: None,
        action: Action::Status {
            status: 401,
            retry_after: None,
            body: None,
        },
        times: None,
    });
    mock.add_rule(Rule {
        credential: None,
        path: Some("/v1/chat/completions".into()),
        action: Action::default(),
        times: Some(1),
    });
    for i in 0..12 {
        let mut body = chat("grok-4-fast");
        if i % 3 == 0 {
            body["stream"] = json!(true);
        }
        let r = gw.chat(body).send().await.unwrap();
        keep("chat", r.text().await.unwrap());
    }
    let r = gw
        .http
        .get(gw.url("/v1/models"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    keep("models", r.text().await.unwrap());
    let r = gw
        .http
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(WRONG_API_KEY)
        .json(&chat("grok-4-fast"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    keep("wrong key", r.text().await.unwrap());

    let list = gw.admin_get(&session, "/api/tokens?page_size=100").await;
    for t in list["data"].as_array().unwrap() {
        let r = gw
            .admin_post(
                &session,
                "/api/tokens/test",
                json!({"token": t["token_id"]}),
            )
            .await;
        keep("tokens/test", r.to_string());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for path in [
        "/api/tokens?page_size=100",
        "/api/tokens/tags/all",
        "/api/proxies",
        "/api/logs?page_size=100",
        "/api/logs/stats",
        "/api/logs/models",
        "/api/logs/timeline",
        "/api/plugins",
        "/api/stats",
        "/api/storage/mode",
    ] {
        keep(path, gw.admin_get(&session, path).await.to_string());
    }
    for path in ["/api/logs/export", "/api/logs/export?format=csv", "/health"] {
        let r = gw
            .http
            .get(gw.url(path))
            .bearer_auth(&session)
            .send()
            .await
            .unwrap();
        keep(path, r.text().await.unwrap());
    }
    let metrics = gw
        .http
        .get(gw.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    keep("/metrics", metrics.text().await.unwrap());
    let logs_answer = gw.admin_get(&session, "/api/logs?page_size=100").await;
    assert!(
        logs_answer["total"].as_u64().unwrap() >= 10,
        "the scenario made calls: {logs_answer}"
    );

    let stopped = gw.terminate().await;
    assert!(stopped.status.success(), "{}", stopped.logs);

    let secrets = [
        TOK_FILE,
        TOK_ADMIN,
        TOK_BAD,
        HTTP_PW,
        SOCKS_PW,
        WRONG_PW,
        DEAD_PW,
        BAD_URL_PW,
        METRICS_TOKEN,
        WRONG_API_KEY,
        WRONG_ADMIN_PW,
        API_KEY,
        ADMIN_PASSWORD,
        session.as_str(),
    ];
    let mut leaks = Vec::new();
    let mut check = |place: &str, text: &str| {
        for s in secrets {
            if let Some(at) = text.find(s) {
                let from = text[..at]
                    .char_indices()
                    .rev()
                    .nth(80)
                    .map_or(0, |(i, _)| i);
                let to = (at + s.len() + 40).min(text.len());
                let to = (to..=text.len())
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(text.len());
                leaks.push(format!("{place}: `{s}` in …{}…", &text[from..to]));
            }
        }
    };
    // The capture works at debug level for every crate: the scenario gives about 60 lines, among them one per
    // new upstream connection with its proxy (egress.rs). The bound is loose: how many connections the pools
    // open depends on timing.
    assert!(
        stopped.logs.lines().count() > 30,
        "too few log lines captured: {}",
        stopped.logs.lines().count()
    );
    for (i, line) in stopped.logs.lines().enumerate() {
        check(&format!("log line {}", i + 1), line);
    }
    let mut scanned = Vec::new();
    for (name, bytes) in files(&stopped.dir) {
        if name == "setting.toml" {
            continue;
        }
        check(&name, &scannable(&name, &bytes));
        scanned.push(name);
    }
    for must in ["token.json", "proxy_state.json", "call_logs"] {
        assert!(
            scanned.iter().any(|n| n.starts_with(must)),
            "{must} not written: {scanned:?}"
        );
    }
    for (what, body) in &answers {
        check(what, body);
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}

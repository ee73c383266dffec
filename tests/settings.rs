//! Live settings end to end: `GET/POST /api/settings` against the real binary, and edits of `setting.toml`
//! on disk, applied without a restart.

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::proxies::{self, ForwardProxy, Kind};
use support::*;

const NOTE: &str = "# operator note: keep me";

fn hello() -> Value {
    json!({"model": "grok-4-fast", "messages": [{"role": "user", "content": "hi"}]})
}

async fn settings_post(gw: &Gateway, session: &str, body: Value) -> (u16, Value) {
    let r = gw
        .http
        .post(gw.url("/api/settings"))
        .bearer_auth(session)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn chat_with_key(gw: &Gateway, key: &str) -> u16 {
    gw.http
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&hello())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Replaces the settings file the way editors do: a temp file renamed over it.
fn edit_file(gw: &Gateway, f: impl Fn(&str) -> String) {
    let path = gw.dir.join("setting.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let tmp = gw.dir.join(".setting.toml.edit");
    std::fs::write(&tmp, f(&text)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

async fn wait_for(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn get_masks_every_secret_and_flags_restart_keys() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .grok("proxy_url = \"http://alice:proxyPw9981@127.0.0.1:9\"")
        .grok("proxy_urls = [\"socks5://bob:socksPw7723@127.0.0.1:8\"]")
        .grok("proxy_pool_url = \"http://127.0.0.1:7/get?apikey=poolKey5519\"")
        .global("metrics_token = \"metricsTok4410\"")
        .section("[plugins.config.audit]\nurl = \"https://hooks.example/x?key=hookKey3307\"\ntoken = \"hookTok2290\"")
        .start()
        .await;
    let r = gw.http.get(gw.url("/api/settings")).send().await.unwrap();
    assert_eq!(r.status(), 401, "admin session required");

    let session = gw.admin_token().await;
    let r = gw
        .http
        .get(gw.url("/api/settings"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    for secret in [
        API_KEY,
        ADMIN_PASSWORD,
        "proxyPw9981",
        "socksPw7723",
        "poolKey5519",
        "metricsTok4410",
        "hookKey3307",
        "hookTok2290",
    ] {
        assert!(
            !text.contains(secret),
            "{secret} in GET /api/settings: {text}"
        );
    }
    let v: Value = serde_json::from_str(&text).unwrap();
    let d = &v["data"];
    assert_eq!(d["grok"]["api_key"], json!({"set": true}));
    assert_eq!(d["global"]["admin_password"], json!({"set": true}));
    assert_eq!(d["grok"]["proxy_url"], "http://alice:****@127.0.0.1:9");
    assert_eq!(d["grok"]["max_retries"], 2);
    assert_eq!(d["grok"]["retry_status_codes"], json!([401, 403, 429]));
    let k = &v["keys"];
    assert_eq!(k["grok"]["max_retries"]["live"], true);
    assert_eq!(k["grok"]["api_key"]["secret"], true);
    for restart in ["host", "port", "log_format"] {
        assert_eq!(k["global"][restart]["live"], false, "global.{restart}");
    }
    assert_eq!(k["grok"]["connect_timeout"]["live"], false);
    assert_eq!(k["plugins"]["dir"]["live"], false);
    // PORT and LOG_LEVEL come from the test's environment.
    assert_eq!(k["global"]["port"]["env"], "PORT");
    assert_eq!(k["global"]["log_level"]["env"], "LOG_LEVEL");
}

#[tokio::test]
async fn bad_updates_are_rejected_whole_naming_the_key() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url()).start().await;
    let session = gw.admin_token().await;
    let path = gw.dir.join("setting.toml");
    let before = std::fs::read(&path).unwrap();
    for (body, key) in [
        // One good key and one bad: nothing is applied.
        (
            json!({"grok": {"max_retries": 5, "retry_status_codes": [42]}}),
            "grok.retry_status_codes",
        ),
        (json!({"grok": {"max_retries": "two"}}), "grok.max_retries"),
        (json!({"grok": {"max_retries": 99}}), "grok.max_retries"),
        (json!({"grok": {"no_such_key": 1}}), "grok.no_such_key"),
        (
            json!({"grok_config": {"proxy_url": "ftp://nope:1"}}),
            "grok.proxy_url",
        ),
        (json!({"global": {"port": 1}}), "global.port"),
        (json!({"plugins": {"selector": "../x"}}), "plugins.selector"),
    ] {
        let (status, v) = settings_post(&gw, &session, body.clone()).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["param"], key, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(key),
            "{body}: {v}"
        );
    }
    assert_eq!(std::fs::read(&path).unwrap(), before, "file unchanged");
    let v = gw.admin_get(&session, "/api/settings").await;
    assert_eq!(v["data"]["grok"]["max_retries"], 2, "nothing applied");
    // The environment decides PORT: the answer says so.
    let (_, v) = settings_post(&gw, &session, json!({"global": {"port": 1}})).await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("PORT"),
        "{v}"
    );
}

#[tokio::test]
async fn valid_updates_apply_without_restart_and_keep_comments() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .tokens(&["token-aaaaaaaaaaaaaaaa", "token-bbbbbbbbbbbbbbbb"])
        .section(&format!("{NOTE}\n[custom]\nanswer = 42"))
        .start()
        .await;
    let session = gw.admin_token().await;
    // Token a answers 418, which is not retried by default: some calls fail.
    mock.add_rule(Rule {
        credential: Some("token-aaaaaaaaaaaaaaaa".into()),
        path: None,
        action: Action::Status {
            status: 418,
            retry_after: None,
            body: None,
        },
        times: None,
    });
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(gw.chat(hello()).send().await.unwrap().status().as_u16());
    }
    assert!(statuses.contains(&418), "{statuses:?}");

    // Retry codes, API key and retention in one update.
    let new_key = "sk-rotated-key-0123456789";
    let (status, v) = settings_post(
        &gw,
        &session,
        json!({"grok": {"retry_status_codes": [418, 429], "api_key": new_key},
               "global": {"log_max_count": 3}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let changed = v["data"]["changed"].as_array().unwrap();
    for key in [
        "grok.retry_status_codes",
        "grok.api_key",
        "global.log_max_count",
    ] {
        assert!(changed.contains(&json!(key)), "{key}: {v}");
    }
    assert_eq!(v["data"]["restart_required"], json!([]));

    assert_eq!(chat_with_key(&gw, API_KEY).await, 401, "old key rejected");
    for _ in 0..6 {
        assert_eq!(chat_with_key(&gw, new_key).await, 200, "418 now retried");
    }
    // Retention: at most 3 entries kept.
    wait_for("the call log trimmed to 3", async || {
        let v = gw.admin_get(&session, "/api/logs?page_size=100").await;
        v["total"].as_u64().unwrap() <= 3
    })
    .await;

    // The file got the new values and kept its comments and unknown sections.
    let text = std::fs::read_to_string(gw.dir.join("setting.toml")).unwrap();
    assert!(text.contains(NOTE), "{text}");
    assert!(text.contains("[custom]\nanswer = 42"), "{text}");
    assert!(text.contains("retry_status_codes = [418, 429]"), "{text}");
    assert!(text.contains(&format!("api_key = \"{new_key}\"")), "{text}");
    assert!(text.contains("log_max_count = 3"), "{text}");

    // The new key never comes back; sending the shown form back changes nothing.
    let v = gw.admin_get(&session, "/api/settings").await;
    assert!(!v.to_string().contains(new_key));
    let (status, v) = settings_post(
        &gw,
        &session,
        json!({"grok": {"api_key": {"set": true}, "max_retries": 2}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["changed"], json!([]), "{v}");
    assert_eq!(chat_with_key(&gw, new_key).await, 200);

    // Our own save is applied once, not again by the file watcher.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let logs = gw.logs();
    assert_eq!(logs.matches("settings applied").count(), 1, "{logs}");
    assert!(
        !logs.contains("no setting differs"),
        "the watcher re-read our own save: {logs}"
    );
    assert!(!logs.contains(new_key), "secret value in the logs");

    // A restart-only key is saved, reported and not applied.
    let (status, v) = settings_post(&gw, &session, json!({"global": {"log_format": "json"}})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["restart_required"], json!(["global.log_format"]));
    let v = gw.admin_get(&session, "/api/settings").await;
    assert_eq!(
        v["data"]["global"]["log_format"], "human",
        "running value kept"
    );
    let text = std::fs::read_to_string(gw.dir.join("setting.toml")).unwrap();
    assert!(text.contains("log_format = \"json\""), "{text}");
}

#[tokio::test]
async fn a_static_proxy_set_at_run_time_carries_the_next_request() {
    if !proxies::available() {
        return;
    }
    let proxy = ForwardProxy::start(Kind::Http, "127.0.0.2", Some(("carol", "carolPw5521")));
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .tokens(&["token-cccccccccccccccc"])
        .start()
        .await;
    let session = gw.admin_token().await;
    let r = gw.chat(hello()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(peer(&r), "127.0.0.1", "direct before");

    let (status, v) = settings_post(
        &gw,
        &session,
        json!({"grok": {"proxy_url": proxy.url(), "allow_direct": false}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let r = gw.chat(hello()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(peer(&r), "127.0.0.2", "through the new proxy");
    let v = gw.admin_get(&session, "/api/settings").await;
    assert!(!v.to_string().contains("carolPw5521"), "{v}");
    let listing = gw.admin_get(&session, "/api/proxies").await;
    assert_eq!(listing["data"]["total"], 1, "{listing}");

    // Removing it again: the proxy leaves the pool and requests go direct.
    let (status, v) = settings_post(
        &gw,
        &session,
        json!({"grok": {"proxy_url": "", "allow_direct": "auto"}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let r = gw.chat(hello()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(peer(&r), "127.0.0.1", "direct again");
    assert!(!gw.logs().contains("carolPw5521"));
}

#[tokio::test]
async fn edits_on_disk_apply_live_and_invalid_ones_are_rejected() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .tokens(&["token-dddddddddddddddd"])
        .start()
        .await;
    let session = gw.admin_token().await;
    assert_eq!(chat_with_key(&gw, API_KEY).await, 200);

    let edited = "sk-edited-on-disk-98765";
    edit_file(&gw, |t| {
        t.replace(
            &format!("api_key = \"{API_KEY}\""),
            &format!("api_key = \"{edited}\""),
        )
        .replace("[grok]\n", "[grok]\nmax_retries = 4\n")
    });
    wait_for("the edited API key", async || {
        chat_with_key(&gw, edited).await == 200
    })
    .await;
    assert_eq!(chat_with_key(&gw, API_KEY).await, 401);
    let v = gw.admin_get(&session, "/api/settings").await;
    assert_eq!(v["data"]["grok"]["max_retries"], 4);
    let logs = gw.logs();
    assert!(logs.contains("settings applied"), "{logs}");
    assert!(logs.contains("grok.api_key"), "changed key named");
    assert!(!logs.contains(edited), "secret value in the logs");

    // An invalid edit: logged with the key, the running settings stay.
    edit_file(&gw, |t| {
        t.replace(
            "max_retries = 4",
            "max_retries = 5\nretry_status_codes = [42]",
        )
    });
    wait_for("the rejection in the log", async || {
        gw.logs().contains("settings file edit rejected")
    })
    .await;
    let logs = gw.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("settings file edit rejected"))
        .unwrap();
    assert!(line.contains("grok.retry_status_codes"), "{line}");
    let v = gw.admin_get(&session, "/api/settings").await;
    assert_eq!(v["data"]["grok"]["max_retries"], 4, "running settings kept");
    assert_eq!(chat_with_key(&gw, edited).await, 200);

    // A broken file (not TOML at all) is rejected too.
    edit_file(&gw, |t| format!("{t}\n[grok\n"));
    wait_for("the second rejection", async || {
        gw.logs().matches("settings file edit rejected").count() >= 2
    })
    .await;
    assert_eq!(chat_with_key(&gw, edited).await, 200);
}

#[tokio::test]
async fn a_pool_api_url_set_at_run_time_is_fetched() {
    if !proxies::available() {
        return;
    }
    let proxy = ForwardProxy::start(Kind::Http, "127.0.0.3", None);
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let answer = format!("127.0.0.1:{}\n", proxy.port);
    let app = {
        let hits = hits.clone();
        axum::Router::new().route(
            "/pool",
            axum::routing::get(move || {
                hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = answer.clone();
                async move { answer }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .tokens(&["token-eeeeeeeeeeeeeeee"])
        .start()
        .await;
    let session = gw.admin_token().await;
    let (status, v) = settings_post(
        &gw,
        &session,
        json!({"grok": {"proxy_pool_url": format!("http://127.0.0.1:{api_port}/pool?key=poolSecret77"),
                        "proxy_pool_interval": 3600}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    wait_for("the pool API fetch", async || {
        let v = gw.admin_get(&session, "/api/proxies").await;
        v["data"]["total"] == 1
    })
    .await;
    assert!(hits.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let r = gw.chat(hello()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(peer(&r), "127.0.0.3", "through the fetched proxy");
    let v = gw.admin_get(&session, "/api/settings").await;
    assert!(!v.to_string().contains("poolSecret77"), "{v}");
}

#[tokio::test]
async fn a_plugin_chosen_at_run_time_fills_its_hook() {
    let wasm = need!("least-latency");
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url()).start().await;
    let session = gw.admin_token().await;
    let dir = gw.dir.join("plugins");
    support::plugins::install(&wasm, &dir, "least-latency");
    wait_for("the plugin to load", async || {
        let v = gw.admin_get(&session, "/api/plugins").await;
        v["data"]["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "least-latency" && p["state"] == "loaded")
    })
    .await;
    let v = gw.admin_get(&session, "/api/plugins").await;
    assert_eq!(v["data"]["hooks"]["selector"], Value::Null, "{v}");

    let (status, v) = settings_post(
        &gw,
        &session,
        json!({"plugins": {"selector": "least-latency", "timeout_ms": 40}}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let v = gw.admin_get(&session, "/api/plugins").await;
    assert_eq!(v["data"]["hooks"]["selector"], "least-latency", "{v}");
    assert_eq!(v["data"]["limits"]["timeout_ms"], 40, "{v}");
    let p = v["data"]["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "least-latency")
        .cloned()
        .unwrap();
    assert_eq!(p["hook"], "selector", "{p}");
    assert_eq!(p["state"], "loaded", "{p}");

    // A plugin that fills another hook cannot also be the pool parser: rejected, nothing changes.
    let (status, v) = settings_post(
        &gw,
        &session,
        json!({"plugins": {"pool_parser": "least-latency"}}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "plugins.pool_parser");
}

#[tokio::test]
async fn the_log_level_changes_at_run_time() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .tokens(&["token-ffffffffffffffff"])
        .unset_env("LOG_LEVEL")
        .unset_env("RUST_LOG")
        .global("log_level = \"INFO\"")
        .start()
        .await;
    let session = gw.admin_token().await;
    let call = async |id: &str| {
        let r = gw
            .chat(hello())
            .header("x-request-id", id)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    // Successful calls are logged at INFO.
    call("rid-at-info-1").await;
    wait_for("the INFO call line", async || {
        gw.logs().contains("rid-at-info-1")
    })
    .await;

    let (status, v) =
        settings_post(&gw, &session, json!({"global": {"log_level": "WARNING"}})).await;
    assert_eq!(status, 200, "{v}");
    call("rid-at-warn-2").await;
    let (status, v) = settings_post(&gw, &session, json!({"global": {"log_level": "INFO"}})).await;
    assert_eq!(status, 200, "{v}");
    call("rid-at-info-3").await;
    wait_for("the INFO call line again", async || {
        gw.logs().contains("rid-at-info-3")
    })
    .await;
    assert!(
        !gw.logs().contains("rid-at-warn-2"),
        "an INFO line was written while the level was WARNING"
    );
}

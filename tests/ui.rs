//! The admin console: pages and assets served by the binary (content types, caching, redirect), the
//! timeline route, and the browser scenario in headless Chromium (tests/browser/ui.mjs, Playwright).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

fn no_redirect() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn pages_and_assets_are_served_with_their_types() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url()).start().await;
    let http = no_redirect();

    let r = http.get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(header(&r, "location"), "/manage");

    let mut version = String::new();
    for path in ["/login", "/manage"] {
        let r = http.get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
        assert_eq!(header(&r, "cache-control"), "no-cache");
        assert!(header(&r, "content-security-policy").contains("script-src 'self'"));
        let html = r.text().await.unwrap();
        assert!(!html.contains("__V__"), "version placeholder replaced");
        // No outside host: every script and stylesheet is local.
        assert!(
            !html.contains("https://") && !html.contains("//cdn"),
            "{path}"
        );
        let at = html.find("/ui/common.js?v=").expect("versioned asset link") + 16;
        version = html[at..at + 12].to_string();
    }

    for (name, ctype) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("common.js", "text/javascript; charset=utf-8"),
        ("i18n.js", "text/javascript; charset=utf-8"),
        ("login.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let r = http
            .get(gw.url(&format!("/ui/{name}?v={version}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(header(&r, "content-type"), ctype, "{name}");
        assert_eq!(
            header(&r, "cache-control"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(header(&r, "x-content-type-options"), "nosniff");
        let etag = header(&r, "etag");
        assert!(!r.bytes().await.unwrap().is_empty());
        // Unversioned links revalidate; a matching ETag answers 304 without a body.
        let r = http
            .get(gw.url(&format!("/ui/{name}")))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304, "{name}");
        assert_eq!(header(&r, "cache-control"), "no-cache");
    }
    let r = http.get(gw.url("/ui/nope.js")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = http.get(gw.url("/ui/..%2Fsecret")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn timeline_counts_calls_per_minute_behind_the_session() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .tokens(&["timeline-token-aaaaaaaaaaaa"])
        .start()
        .await;
    let r = gw
        .http
        .get(gw.url("/api/logs/timeline"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "UNAUTHORIZED");

    let session = gw.admin_token().await;
    for _ in 0..3 {
        let r = gw
            .chat(json!({"model": "grok-4-fast", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let v = gw
            .admin_get(&session, "/api/logs/timeline?minutes=60")
            .await;
        if v["data"]["total"] == 3 || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let d = &v["data"];
    assert_eq!(d["total"], 3, "{v}");
    assert_eq!(d["success"], 3);
    let buckets = d["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 60);
    assert_eq!(d["bucket_ms"], 60_000);
    let sum: u64 = buckets.iter().map(|b| b["total"].as_u64().unwrap()).sum();
    assert_eq!(sum, 3);
    assert!(
        buckets.last().unwrap()["total"].as_u64().unwrap() > 0
            || buckets[58]["total"].as_u64().unwrap() > 0
    );
    assert!(d["p95_response_time"].as_f64().unwrap() >= d["p50_response_time"].as_f64().unwrap());

    let day = gw
        .admin_get(&session, "/api/logs/timeline?minutes=1440&bucket=300")
        .await;
    assert_eq!(day["data"]["buckets"].as_array().unwrap().len(), 288);
    for bad in [
        "minutes=0",
        "minutes=abc",
        "bucket=30",
        "minutes=10080&bucket=60",
    ] {
        let r = gw
            .http
            .get(gw.url(&format!("/api/logs/timeline?{bad}")))
            .bearer_auth(&session)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Node, Chromium and playwright-core, or why not.
fn browser_tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!("no Chromium at {}", chromium.display()));
    }
    let ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        return Err("no node on PATH".into());
    }
    let dir = repo_root().join("tests/browser");
    if !dir.join("node_modules/playwright-core").exists() {
        return Err("tests/browser/node_modules missing (run `npm ci` in tests/browser)".into());
    }
    Ok((chromium, dir))
}

#[tokio::test]
async fn browser_scenario_in_headless_chromium() {
    let (chromium, dir) = match browser_tools() {
        Ok(t) => t,
        Err(why) if std::env::var("GROK2API_REQUIRE_ALL").as_deref() == Ok("1") => {
            panic!("browser test needs its tools: {why}")
        }
        Err(why) => {
            eprintln!("skipping the browser test: {why}");
            return;
        }
    };
    // The plugin page must list a real plugin: a built one is published into the gateway's plugin directory.
    let Some(plugin) = support::plugins::built("least-latency") else {
        eprintln!("skipping the browser test: the least-latency plugin is not built");
        return;
    };
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url()).start().await;
    support::plugins::install(&plugin, &gw.dir.join("plugins"), "least-latency");
    let session = gw.admin_token().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = gw.admin_get(&session, "/api/plugins").await;
        let loaded = v["data"]["plugins"].as_array().is_some_and(|l| {
            l.iter()
                .any(|p| p["name"] == "least-latency" && p["state"] == "loaded")
        });
        if loaded {
            break;
        }
        assert!(Instant::now() < deadline, "plugin not loaded: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shots = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("ui-screenshots");
    let url = gw.url("");
    let media_origin = mock.base_url().trim_end_matches("/v1").to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg("ui.mjs")
            .current_dir(&dir)
            .env("GATEWAY_URL", url)
            .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("API_KEY", API_KEY)
            .env("MEDIA_ORIGIN", media_origin)
            .env("SCREENSHOT_DIR", &shots)
            .env("CHROMIUM", chromium)
            .env("EXPECT_PLUGIN", "least-latency")
            .output()
            .expect("run node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser scenario failed ({}):\n{stdout}\n{stderr}\ngateway logs (tail):\n{}",
        out.status,
        gw.logs()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

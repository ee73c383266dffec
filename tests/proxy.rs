//! End-to-end tests of the proxy pool: the real binary, real forward proxies (tinyproxy, microsocks) bound to
//! their own loopback addresses, the mock upstream telling which address each request came from.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::proxies::{self, dead_port, ForwardProxy, Kind};
use support::*;

const TOKENS: [&str; 4] = [
    "tok-proxy-aaaaaaaa-1",
    "tok-proxy-bbbbbbbb-2",
    "tok-proxy-cccccccc-3",
    "tok-proxy-dddddddd-4",
];

fn hello() -> Value {
    json!({"model": "grok-4-fast", "messages": [{"role": "user", "content": "hello"}]})
}

fn toml_list(urls: &[String]) -> String {
    let quoted: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Token id as the gateway computes it (first 12 hex chars of the secret's SHA-256).
async fn token_ids(gw: &Gateway, session: &str) -> HashMap<String, String> {
    let list = gw.admin_get(session, "/api/tokens?page_size=100").await;
    let mut ids = HashMap::new();
    for t in list["data"].as_array().unwrap() {
        let masked = t["token"].as_str().unwrap();
        for secret in TOKENS {
            if masked.starts_with(&secret[..4]) && masked.ends_with(&secret[secret.len() - 4..]) {
                ids.insert(
                    secret.to_string(),
                    t["token_id"].as_str().unwrap().to_string(),
                );
            }
        }
    }
    ids
}

async fn proxies_of(gw: &Gateway, session: &str) -> Value {
    let v = gw.admin_get(session, "/api/proxies").await;
    assert_eq!(v["success"], true, "{v}");
    v["data"].clone()
}

fn proxy_by_port(data: &Value, port: u16) -> &Value {
    data["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["url"].as_str().unwrap().ends_with(&format!(":{port}")))
        .unwrap_or_else(|| panic!("no proxy on port {port} in {data}"))
}

#[tokio::test]
async fn tokens_stick_to_their_proxies_and_credentials_never_leak() {
    if !proxies::available() {
        return;
    }
    let http_a = ForwardProxy::start(Kind::Http, "127.0.0.2", Some(("alice", "httpSecret123")));
    let http_b = ForwardProxy::start(Kind::Http, "127.0.0.3", None);
    let socks_c = ForwardProxy::start(Kind::Socks, "127.0.0.4", Some(("bob", "socksSecret456")));
    let socks_d = ForwardProxy::start(Kind::Socks, "127.0.0.5", None);
    let urls: Vec<String> = [&http_a, &http_b, &socks_c, &socks_d]
        .iter()
        .map(|p| p.url())
        .collect();
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .grok(&format!("proxy_urls = {}", toml_list(&urls)))
        .tokens(&TOKENS)
        .start()
        .await;

    let mut seen: HashMap<String, HashSet<String>> = HashMap::new();
    for _ in 0..24 {
        let resp = gw.chat(hello()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        seen.entry(credential(&resp))
            .or_default()
            .insert(peer(&resp));
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    for (token, peers) in &seen {
        assert_eq!(peers.len(), 1, "{token} moved between proxies: {peers:?}");
    }
    // Fewest bindings first: four tokens over four proxies, one each.
    let peers: HashSet<&String> = seen.values().flatten().collect();
    assert_eq!(peers.len(), 4, "{seen:?}");

    let session = gw.admin_token().await;
    let data = proxies_of(&gw, &session).await;
    let text = data.to_string();
    assert!(
        !text.contains("httpSecret123") && !text.contains("socksSecret456"),
        "{text}"
    );
    assert!(
        text.contains("alice:****@127.0.0.1") && text.contains("bob:****@127.0.0.1"),
        "{text}"
    );
    assert_eq!(data["total"], 4);
    assert_eq!(data["assignments"].as_object().unwrap().len(), 4, "{data}");
    for p in data["proxies"].as_array().unwrap() {
        assert_eq!(p["assigned_sso"].as_array().unwrap().len(), 1, "{p}");
        assert_eq!(p["healthy"], true);
        assert!(p["total_requests"].as_u64().unwrap() >= 1);
        assert!(p["ewma_latency_ms"].as_f64().unwrap() > 0.0);
    }
    let before: Value = data["assignments"].clone();

    // Bindings are persisted (by token id) and survive a restart.
    let stopped = gw.terminate().await;
    assert!(stopped.status.success());
    for secret in ["httpSecret123", "socksSecret456"] {
        assert!(!stopped.logs.contains(secret), "proxy password in the logs");
    }
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(stopped.dir.join("proxy_state.json")).unwrap(),
    )
    .unwrap();
    let assignments = state["assignments"].as_object().unwrap();
    assert_eq!(assignments.len(), 4, "{state}");
    for t in TOKENS {
        assert!(
            !assignments.contains_key(t),
            "state keyed by secret: {state}"
        );
    }
    let gw = GatewayBuilder::new(&mock.base_url())
        .grok(&format!("proxy_urls = {}", toml_list(&urls)))
        .dir(&stopped.dir)
        .start()
        .await;
    let session = gw.admin_token().await;
    assert_eq!(proxies_of(&gw, &session).await["assignments"], before);
    for _ in 0..8 {
        let resp = gw.chat(hello()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let peers = &seen[&credential(&resp)];
        assert!(peers.contains(&peer(&resp)), "binding lost across restart");
    }
    assert!(!gw.logs().contains("httpSecret123") && !gw.logs().contains("socksSecret456"));
}

#[tokio::test]
async fn killed_proxy_hands_its_tokens_over_without_client_errors_and_recovers() {
    if !proxies::available() {
        return;
    }
    let mut a = ForwardProxy::start(Kind::Http, "127.0.0.2", None);
    let b = ForwardProxy::start(Kind::Socks, "127.0.0.3", None);
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .grok(&format!("proxy_urls = {}", toml_list(&[a.url(), b.url()])))
        .grok("proxy_check_base_secs = 1")
        .grok("proxy_check_max_secs = 2")
        .tokens(&TOKENS)
        .start()
        .await;
    for _ in 0..8 {
        assert_eq!(gw.chat(hello()).send().await.unwrap().status(), 200);
    }
    assert_eq!(mock.stats().by_peer.len(), 2, "{:?}", mock.stats());

    // Load from six clients; proxy A dies a few requests in.
    let done = Arc::new(AtomicUsize::new(0));
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let gw = Arc::new(gw);
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (gw, done, statuses) = (gw.clone(), done.clone(), statuses.clone());
        workers.push(tokio::spawn(async move {
            while done.load(Ordering::SeqCst) < 60 {
                let mut body = hello();
                body["mock"] = json!({"delay_ms": 20});
                let resp = gw.chat(body).send().await.unwrap();
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                statuses.lock().unwrap().push((status, text));
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    while done.load(Ordering::SeqCst) < 12 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill();
    for w in workers {
        w.await.unwrap();
    }
    let failed: Vec<(u16, String)> = statuses
        .lock()
        .unwrap()
        .iter()
        .filter(|(s, _)| *s != 200)
        .cloned()
        .collect();
    assert!(failed.is_empty(), "client-visible failures: {failed:?}");

    let session = gw.admin_token().await;
    let data = proxies_of(&gw, &session).await;
    let dead = proxy_by_port(&data, a.port);
    assert_eq!(dead["healthy"], false, "{data}");
    assert!(dead["assigned_sso"].as_array().unwrap().is_empty());
    assert!(dead["last_error"].as_str().is_some());
    let alive = proxy_by_port(&data, b.port);
    assert_eq!(alive["assigned_sso"].as_array().unwrap().len(), 4, "{data}");
    mock.reset_stats();
    for _ in 0..8 {
        let resp = gw.chat(hello()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(peer(&resp), "127.0.0.3");
    }

    // Back up: the background re-check (1 s, doubling to 2 s) finds it.
    a.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let data = proxies_of(&gw, &session).await;
        if proxy_by_port(&data, a.port)["healthy"] == true {
            assert_eq!(proxy_by_port(&data, a.port)["fail_count"], 0);
            break;
        }
        assert!(Instant::now() < deadline, "proxy never came back: {data}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A new token goes to the recovered proxy: it has the fewest bindings.
    let r = gw
        .admin_post(
            &session,
            "/api/tokens/add",
            json!({"tokens": ["tok-proxy-new-5"]}),
        )
        .await;
    assert_eq!(r["count"], 1);
    let mut peers = HashSet::new();
    for _ in 0..10 {
        let resp = gw.chat(hello()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        if credential(&resp) == "tok-proxy-new-5" {
            peers.insert(peer(&resp));
        }
    }
    assert_eq!(peers, HashSet::from(["127.0.0.2".to_string()]));
}

type Answer = Arc<Mutex<(u16, String)>>;

/// A pool API whose answer the test sets; counts its hits.
struct PoolApi {
    port: u16,
    answer: Arc<Mutex<(u16, String)>>,
    hits: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl PoolApi {
    async fn start(status: u16, body: &str) -> PoolApi {
        use axum::extract::State;
        let answer = Arc::new(Mutex::new((status, body.to_string())));
        let hits = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new()
            .route(
                "/pool",
                axum::routing::get(
                    |State((answer, hits)): State<(Answer, Arc<AtomicUsize>)>| async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        let (status, body) = answer.lock().unwrap().clone();
                        (http::StatusCode::from_u16(status).unwrap(), body)
                    },
                ),
            )
            .with_state((answer.clone(), hits.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        PoolApi {
            port,
            answer,
            hits,
            _task: task,
        }
    }
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/pool?apikey=poolApiKey789", self.port)
    }
    fn set(&self, status: u16, body: &str) {
        *self.answer.lock().unwrap() = (status, body.to_string());
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn pool_api_answers_in_every_shape_and_error_answers_are_rejected() {
    if !proxies::available() {
        return;
    }
    let a = ForwardProxy::start(Kind::Http, "127.0.0.2", None);
    let s = ForwardProxy::start(Kind::Socks, "127.0.0.4", Some(("carol", "poolSocksPw")));
    let (ap, sp) = (a.port, s.port);
    let api = PoolApi::start(200, &format!("127.0.0.1:{ap}\n")).await;
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .grok(&format!("proxy_pool_url = \"{}\"", api.url()))
        .grok("proxy_pool_interval = 3600")
        .tokens(&TOKENS[..1])
        .start()
        .await;
    let session = gw.admin_token().await;
    // The start-up fetch.
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxies_of(&gw, &session).await["total"] != 1 {
        assert!(Instant::now() < deadline, "start-up fetch did not happen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = gw.chat(hello()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(peer(&resp), "127.0.0.2");

    let socks = format!("socks5://carol:poolSocksPw@127.0.0.1:{sp}");
    let shapes = [
        format!("127.0.0.1:{ap}\n{socks}\n"),
        json!([format!("127.0.0.1:{ap}"), socks]).to_string(),
        json!([{"ip": "127.0.0.1", "port": ap.to_string()},
               {"host": "127.0.0.1", "port": sp, "protocol": "socks5", "username": "carol", "password": "poolSocksPw"}])
        .to_string(),
        json!({"code": 0, "data": {"proxy_list": [format!("127.0.0.1:{ap}"), socks]}}).to_string(),
        json!({"data": {"list": [{"proxy": format!("127.0.0.1:{ap}")}, {"url": socks}]}}).to_string(),
        json!({"data": [{"ip": "127.0.0.1", "port": ap, "type": "http"},
                        {"ip": "127.0.0.1", "port": sp, "type": "sock5", "user": "carol", "password": "poolSocksPw"}]})
        .to_string(),
        json!({"results": [format!("127.0.0.1:{ap}"), socks]}).to_string(),
        json!({"proxies": [format!("127.0.0.1:{ap}"), socks]}).to_string(),
        json!({"list": [format!("127.0.0.1:{ap}"), socks]}).to_string(),
    ];
    for body in &shapes {
        api.set(200, body);
        let r = gw
            .admin_post(&session, "/api/proxies/refresh", json!({}))
            .await;
        assert_eq!(r["success"], true, "{body}: {r}");
        assert_eq!(r["data"]["returned"], 2, "{body}: {r}");
        assert_eq!(r["data"]["total"], 2, "{body}: {r}");
    }
    // One JSON string is one proxy.
    api.set(200, &json!(format!("127.0.0.1:{ap}")).to_string());
    let r = gw
        .admin_post(&session, "/api/proxies/refresh", json!({}))
        .await;
    assert_eq!(r["data"]["returned"], 1, "{r}");

    // Error-shaped 200s (and a 500) are errors, not proxies; the pool is unchanged.
    for (status, body, why) in [
        (200, r#"{"code": 0, "src": "no proxy"}"#, "no proxy"),
        (
            200,
            r#"{"success": false, "msg": "balance exhausted"}"#,
            "balance exhausted",
        ),
        (200, "", "empty"),
        (200, "no proxy available now", "no valid proxy"),
        (500, "127.0.0.1:1", "500"),
    ] {
        api.set(status, body);
        let r = gw
            .admin_post(&session, "/api/proxies/refresh", json!({}))
            .await;
        assert_eq!(r["success"], false, "{body}: {r}");
        assert!(r["message"].as_str().unwrap().contains(why), "{body}: {r}");
        assert_eq!(proxies_of(&gw, &session).await["total"], 2);
    }

    // Requests use both fetched proxies (a second token binds to the other one).
    let r = gw
        .admin_post(&session, "/api/tokens/add", json!({"tokens": [TOKENS[1]]}))
        .await;
    assert_eq!(r["count"], 1);
    let mut peers = HashSet::new();
    for _ in 0..6 {
        let resp = gw.chat(hello()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        peers.insert(peer(&resp));
    }
    assert_eq!(peers.len(), 2, "{peers:?}");
    let data = proxies_of(&gw, &session).await;
    assert!(data.to_string().contains("carol:****@"), "{data}");
    let logs = gw.logs();
    assert!(!logs.contains("poolSocksPw"), "proxy password in the logs");
    assert!(!logs.contains("poolApiKey789"), "pool API key in the logs");
}

#[tokio::test]
async fn pool_api_is_fetched_every_interval_and_stale_proxies_expire() {
    if !proxies::available() {
        return;
    }
    let a = ForwardProxy::start(Kind::Http, "127.0.0.2", None);
    let b = ForwardProxy::start(Kind::Http, "127.0.0.3", None);
    let api = PoolApi::start(200, &format!("127.0.0.1:{}", a.port)).await;
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .grok(&format!("proxy_pool_url = \"{}\"", api.url()))
        .grok("proxy_pool_interval = 1")
        .grok("proxy_pool_ttl = 2")
        .tokens(&TOKENS[..1])
        .start()
        .await;
    let session = gw.admin_token().await;
    let wait_for = |want: Vec<u16>| {
        let gw = &gw;
        let session = &session;
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let data = proxies_of(gw, session).await;
                let ports: Vec<u16> = data["proxies"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| {
                        p["url"]
                            .as_str()
                            .unwrap()
                            .rsplit(':')
                            .next()
                            .unwrap()
                            .parse()
                            .unwrap()
                    })
                    .collect();
                if ports == want {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "wanted {want:?}, pool has {data}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_for(vec![a.port]).await;
    // The API now returns only B: B appears on the next interval, A (no token bound) expires after the TTL.
    api.set(200, &format!("127.0.0.1:{}", b.port));
    wait_for(vec![b.port]).await;
    assert!(api.hits() >= 3, "hits: {}", api.hits());
    let resp = gw.chat(hello()).send().await.unwrap();
    assert_eq!(peer(&resp), "127.0.0.3");
    // A proxy a token is bound to is kept past its TTL.
    api.set(200, &format!("127.0.0.1:{}", a.port));
    wait_for(vec![b.port, a.port]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let data = proxies_of(&gw, &session).await;
    assert_eq!(data["total"], 2, "bound proxy was dropped: {data}");
}

#[tokio::test]
async fn no_healthy_proxy_and_no_direct_gives_503_without_a_direct_connection() {
    let api = PoolApi::start(200, &format!("127.0.0.1:{}", dead_port())).await;
    let mock = MockServer::start().await.unwrap();
    // allow_direct is left at its default: proxies are configured, so direct is not allowed.
    let gw = GatewayBuilder::new(&mock.base_url())
        .grok(&format!("proxy_url = \"http://127.0.0.1:{}\"", dead_port()))
        .grok(&format!(
            "proxy_urls = [\"http://127.0.0.1:{}\", \"socks5://u:deadPw@127.0.0.1:{}\"]",
            dead_port(),
            dead_port()
        ))
        .grok(&format!("proxy_pool_url = \"{}\"", api.url()))
        .grok("proxy_pool_interval = 3600")
        .grok("proxy_max_fails = 1")
        .tokens(&TOKENS)
        .start()
        .await;
    // Let the start-up fetch pass so the next fetch is an on-demand one.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let hits_before = api.hits();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let resp = gw.chat(hello()).send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        statuses.push((status, body));
    }
    assert!(
        statuses.iter().all(|(s, _)| *s == 502 || *s == 503),
        "{statuses:?}"
    );
    // Once every proxy is known dead: 503, a clear OpenAI-shaped error, for every concurrent client.
    let mut all = Vec::new();
    for _ in 0..8 {
        all.push(gw.chat(hello()).send());
    }
    for r in futures_util::future::join_all(all).await {
        let r = r.unwrap();
        assert_eq!(r.status(), 503);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "no_available_proxy", "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("allow_direct"));
    }
    // The pool API was asked again when nothing was healthy, once for all the waiting requests.
    let on_demand = api.hits() - hits_before;
    assert!(
        (1..=2).contains(&on_demand),
        "on-demand fetches: {on_demand}"
    );
    // Never a direct connection: the upstream saw nothing at all.
    assert_eq!(mock.stats().requests, 0, "{:?}", mock.stats());
    assert!(!gw.logs().contains("deadPw"));
}

#[tokio::test]
async fn allow_direct_true_falls_back_to_a_direct_connection() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .grok(&format!(
            "proxy_urls = [\"http://127.0.0.1:{}\"]",
            dead_port()
        ))
        .grok("allow_direct = true")
        .grok("proxy_max_fails = 1")
        .tokens(&TOKENS[..2])
        .start()
        .await;
    let resp = gw.chat(hello()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(peer(&resp), "127.0.0.1");
}

#[tokio::test]
async fn grok2api_state_file_loads_and_admin_api_manages_proxies() {
    if !proxies::available() {
        return;
    }
    let a = ForwardProxy::start(Kind::Http, "127.0.0.2", Some(("dave", "adminHttpPw")));
    let b = ForwardProxy::start(Kind::Socks, "127.0.0.3", None);
    let mut dead = ForwardProxy::start(Kind::Http, "127.0.0.6", None);
    dead.kill();
    let mock = MockServer::start().await.unwrap();
    // Grok2API Pro's file: assignments keyed by the full token, socks5:// spelling, no source field.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("proxy_state.json"),
        json!({
            "proxies": {
                b.url(): {"url": b.url(), "healthy": true, "fail_count": 0, "last_used": 0,
                          "assigned_sso": [TOKENS[0]], "total_requests": 2, "success_requests": 2}
            },
            "assignments": {TOKENS[0]: b.url()}
        })
        .to_string(),
    )
    .unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .dir(dir.path())
        .tokens(&TOKENS[..2])
        .start()
        .await;
    let session = gw.admin_token().await;
    let ids = token_ids(&gw, &session).await;
    let id0 = ids[TOKENS[0]].clone();
    let id1 = ids[TOKENS[1]].clone();
    let data = proxies_of(&gw, &session).await;
    assert_eq!(
        data["assignments"],
        json!({id0.clone(): b.normalized_url()}),
        "{data}"
    );
    assert_eq!(proxy_by_port(&data, b.port)["source"], "admin");

    // Add: invalid → a reason; valid (twice) → success.
    let r = gw
        .admin_post(&session, "/api/proxies", json!({"url": "socks4://h:1"}))
        .await;
    assert_eq!(r["success"], false);
    assert!(r["message"].as_str().unwrap().contains("socks4"), "{r}");
    for _ in 0..2 {
        let r = gw
            .admin_post(&session, "/api/proxies", json!({"url": a.url()}))
            .await;
        assert_eq!(r["success"], true, "{r}");
        assert_eq!(
            r["data"]["url"],
            format!("http://dave:****@127.0.0.1:{}", a.port)
        );
    }
    let r = gw
        .admin_post(
            &session,
            "/api/proxies",
            json!({"url": format!("127.0.0.1:{}", dead.port)}),
        )
        .await;
    assert_eq!(r["success"], true);

    // Assign: unknown proxy or token → reasons; by id or by secret → bound, and requests follow.
    let r = gw
        .admin_post(
            &session,
            "/api/proxies/assign",
            json!({"proxy_url": "http://127.0.0.1:1", "sso": id1}),
        )
        .await;
    assert_eq!(
        (r["success"].clone(), r["message"].clone()),
        (json!(false), json!("代理不存在"))
    );
    let r = gw
        .admin_post(
            &session,
            "/api/proxies/assign",
            json!({"proxy_url": a.url(), "sso": "no-such-token"}),
        )
        .await;
    assert_eq!(
        (r["success"].clone(), r["message"].clone()),
        (json!(false), json!("Token不存在"))
    );
    for sso in [TOKENS[0], id1.as_str()] {
        let r = gw
            .admin_post(
                &session,
                "/api/proxies/assign",
                json!({"proxy_url": a.url(), "sso": sso}),
            )
            .await;
        assert_eq!(r["success"], true, "{r}");
    }
    for _ in 0..4 {
        let resp = gw.chat(hello()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(peer(&resp), "127.0.0.2");
    }
    let r = gw
        .admin_post(&session, "/api/proxies/unassign", json!({"sso": id1}))
        .await;
    assert_eq!(r["success"], true);
    let r = gw
        .admin_post(&session, "/api/proxies/unassign", json!({"sso": id1}))
        .await;
    assert_eq!(
        (r["success"].clone(), r["message"].clone()),
        (json!(false), json!("SSO未绑定代理"))
    );

    // Test: through a live proxy the mock's origin answers 404 = reachable; a dead one is not. No health change
    // without apply=true.
    let r = gw
        .admin_post(&session, "/api/proxies/test", json!({"url": a.url()}))
        .await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["data"]["status_code"], 404);
    assert!(r["data"]["response_time"].as_f64().is_some());
    let dead_url = format!("http://127.0.0.1:{}", dead.port);
    let r = gw
        .admin_post(&session, "/api/proxies/test", json!({"url": dead_url}))
        .await;
    assert_eq!(r["success"], false, "{r}");
    assert_eq!(
        proxy_by_port(&proxies_of(&gw, &session).await, dead.port)["fail_count"],
        0
    );
    for _ in 0..3 {
        let r = gw
            .admin_post(
                &session,
                "/api/proxies/test?apply=true",
                json!({"url": dead_url}),
            )
            .await;
        assert_eq!(r["data"]["applied"], true);
    }
    let data = proxies_of(&gw, &session).await;
    assert_eq!(proxy_by_port(&data, dead.port)["healthy"], false, "{data}");

    // Health reset: unknown URL → failure; known → healthy again.
    let r = gw
        .admin_post(
            &session,
            "/api/proxies/health/reset",
            json!({"url": "http://127.0.0.1:1"}),
        )
        .await;
    assert_eq!(r["success"], false);
    let r = gw
        .admin_post(
            &session,
            "/api/proxies/health/reset",
            json!({"url": dead_url}),
        )
        .await;
    assert_eq!(r["success"], true);
    let data = proxies_of(&gw, &session).await;
    assert_eq!(proxy_by_port(&data, dead.port)["healthy"], true);
    assert_eq!(proxy_by_port(&data, dead.port)["fail_count"], 0);

    // Refresh without a pool API: a clear failure.
    let r = gw
        .admin_post(&session, "/api/proxies/refresh", json!({}))
        .await;
    assert_eq!(r["success"], false);
    assert!(r["message"].as_str().unwrap().contains("proxy_pool_url"));

    // Delete: unbinds; unknown → failure. Deleting a token drops its binding too.
    let del = |url: String| {
        gw.http
            .delete(gw.url("/api/proxies"))
            .bearer_auth(&session)
            .json(&json!({"url": url}))
            .send()
    };
    let r: Value = del(dead_url.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(r["success"], true);
    let r: Value = del(dead_url.clone()).await.unwrap().json().await.unwrap();
    assert_eq!(
        (r["success"].clone(), r["message"].clone()),
        (json!(false), json!("代理不存在"))
    );
    let r = gw
        .admin_post(
            &session,
            "/api/tokens/delete",
            json!({"tokens": [TOKENS[0]]}),
        )
        .await;
    assert_eq!(r["count"], 1);
    let data = proxies_of(&gw, &session).await;
    assert!(data["assignments"].get(&id0).is_none(), "{data}");
    assert!(!data.to_string().contains("adminHttpPw"));

    let stopped = gw.terminate().await;
    assert!(!stopped.logs.contains("adminHttpPw"));
    let state = std::fs::read_to_string(stopped.dir.join("proxy_state.json")).unwrap();
    assert!(
        !state.contains(TOKENS[0]) && !state.contains(TOKENS[1]),
        "{state}"
    );
    drop(dir);
}

//! Starting and stopping the real `grok2api` binary for end-to-end tests: a private data directory, a free
//! port, readiness, captured logs and signals.

#![allow(dead_code, unused_imports, unused_macros)]

pub mod plugins;

/// The path of a built component, or return from the test (skip) when it is missing; see `plugins::built`.
macro_rules! need {
    ($name:expr) => {
        match crate::support::plugins::built($name) {
            Some(p) => p,
            None => return,
        }
    };
}
pub mod mysql;
pub mod proxies;
pub mod redis;
pub mod shared_store;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use mock_upstream::{Action, MockServer, Rule};

pub const API_KEY: &str = "sk-test-key";
pub const ADMIN_PASSWORD: &str = "admin-test-pw";

/// Stops a helper server the tests started (redis-server, mariadbd): SIGTERM and wait, a clean shutdown.
pub fn terminate(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let _ = c.wait();
    }
}

/// Kills a helper server outright (when its owner is dropped, e.g. by a failing test).
pub fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Reads (and drops) what comes until the peer closes the connection or `timeout` passes; `true` when it
/// closed (EOF or reset).
pub fn closed_within(s: &mut std::net::TcpStream, timeout: Duration) -> bool {
    use std::io::Read;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return true,
        }
    }
    false
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `token.json` in Grok2API's format with these normal tokens.
pub fn token_json(normal: &[&str], super_: &[&str]) -> String {
    let rec = |t: &&str| {
        (
            t.to_string(),
            serde_json::json!({"createdTime": 1737500000000i64, "remainingQueries": -1,
                "heavyremainingQueries": -1, "status": "active", "failedCount": 0,
                "lastFailureTime": null, "lastFailureReason": null, "tags": [], "note": ""}),
        )
    };
    let n: serde_json::Map<_, _> = normal.iter().map(rec).collect();
    let s: serde_json::Map<_, _> = super_.iter().map(rec).collect();
    serde_json::to_string_pretty(&serde_json::json!({"ssoNormal": n, "ssoSuper": s})).unwrap()
}

pub struct Gateway {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    logs: Arc<Mutex<String>>,
    pub http: reqwest::Client,
}

pub struct GatewayBuilder {
    settings: String,
    tokens: Option<String>,
    env: Vec<(String, String)>,
    unset: Vec<String>,
    dir: Option<PathBuf>,
    keepalive: bool,
}

impl GatewayBuilder {
    /// `[grok]` and `[global]` lines beyond the test defaults (base URL, keys, loopback, quick saves).
    pub fn new(mock_base_url: &str) -> GatewayBuilder {
        GatewayBuilder {
            settings: format!("[grok]\nbase_url = \"{mock_base_url}\"\napi_key = \"{API_KEY}\"\n"),
            tokens: None,
            env: Vec::new(),
            unset: Vec::new(),
            dir: None,
            keepalive: true,
        }
    }
    pub fn grok(mut self, line: &str) -> Self {
        self.settings = self
            .settings
            .replacen("[grok]\n", &format!("[grok]\n{line}\n"), 1);
        self
    }
    pub fn global(mut self, line: &str) -> Self {
        if !self.settings.contains("[global]\n") {
            self.settings.push_str("[global]\n");
        }
        self.settings = self
            .settings
            .replacen("[global]\n", &format!("[global]\n{line}\n"), 1);
        self
    }
    /// Raw TOML appended to the settings file (e.g. a `[plugins]` section).
    pub fn section(mut self, toml: &str) -> Self {
        self.settings.push('\n');
        self.settings.push_str(toml);
        self.settings.push('\n');
        self
    }
    pub fn tokens(mut self, normal: &[&str]) -> Self {
        self.tokens = Some(token_json(normal, &[]));
        self
    }
    pub fn token_file(mut self, content: &str) -> Self {
        self.tokens = Some(content.to_string());
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    /// Leave out a variable the builder sets by default (e.g. `LOG_LEVEL`, `RUST_LOG`).
    pub fn unset_env(mut self, k: &str) -> Self {
        self.unset.push(k.into());
        self
    }
    /// The test client closes every connection after its answer (for tests counting server connections).
    pub fn no_keepalive(mut self) -> Self {
        self.keepalive = false;
        self
    }
    /// Reuse a data directory (to restart a gateway on the same state).
    pub fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }

    pub async fn start(self) -> Gateway {
        let (tmp, dir) = match self.dir {
            Some(d) => (None, d),
            None => {
                let t = tempfile::tempdir().unwrap();
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        let mut settings = self.settings;
        if !settings.contains("[global]\n") {
            settings.push_str("[global]\n");
        }
        settings = settings.replacen(
            "[global]\n",
            &format!("[global]\nhost = \"127.0.0.1\"\nadmin_password = \"{ADMIN_PASSWORD}\"\n"),
            1,
        );
        std::fs::write(dir.join("setting.toml"), settings).unwrap();
        if let Some(t) = self.tokens {
            std::fs::write(dir.join("token.json"), t).unwrap();
        }
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_grok2api"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATA_DIR", &dir)
            .env("PORT", port.to_string())
            .env("LOG_LEVEL", "debug")
            .env("RUST_LOG", "info,grok2api=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for k in &self.unset {
            cmd.env_remove(k);
        }
        let mut child = cmd.spawn().expect("start grok2api");
        let logs = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut l = logs.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let gw = Gateway {
            child,
            port,
            dir,
            _tmp: tmp,
            logs,
            http: if self.keepalive {
                reqwest::Client::new()
            } else {
                reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .build()
                    .unwrap()
            },
        };
        gw.wait_ready().await;
        gw
    }
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(self.url("/health")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gateway did not become ready; logs:\n{}", self.logs());
    }

    /// A chat completion request with the test API key.
    pub fn chat(&self, body: serde_json::Value) -> reqwest::RequestBuilder {
        self.http
            .post(self.url("/v1/chat/completions"))
            .bearer_auth(API_KEY)
            .json(&body)
    }

    pub async fn admin_token(&self) -> String {
        let r: serde_json::Value = self
            .http
            .post(self.url("/api/login"))
            .json(&serde_json::json!({"username": "admin", "password": ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["success"], true, "{r}");
        r["token"].as_str().unwrap().to_string()
    }

    pub async fn admin_get(&self, session: &str, path: &str) -> serde_json::Value {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(session)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    pub async fn admin_post(
        &self,
        session: &str,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(session)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "POST {path}: {}", r.status());
        r.json().await.unwrap()
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Sends SIGTERM and waits for the exit status. The data directory outlives the process.
    pub async fn terminate(mut self) -> Stopped {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Stopped {
                    status: st,
                    logs: self.logs(),
                    dir: self.dir.clone(),
                    _tmp: self._tmp.take(),
                };
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("gateway did not exit after SIGTERM; logs:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn kill9(mut self) -> Stopped {
        let _ = self.child.kill();
        let status = self.child.wait().unwrap();
        Stopped {
            status,
            logs: self.logs(),
            dir: self.dir.clone(),
            _tmp: self._tmp.take(),
        }
    }

    pub fn token_file(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join("token.json")).unwrap())
            .unwrap()
    }
}

/// A stopped gateway: how it ended, what it logged, and its data directory (kept until this is dropped).
pub struct Stopped {
    pub status: std::process::ExitStatus,
    pub logs: String,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Stopped {
    pub fn token_file(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join("token.json")).unwrap())
            .unwrap()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The credential the mock saw, from its echo header.
pub fn credential(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-mock-credential")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The peer address the mock saw, from its echo header: which egress carried the request.
pub fn peer(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-mock-peer")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

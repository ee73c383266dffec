//! The plugin platform with real components built from `plugins/` (by `plugins/build.sh`, which
//! `scripts/test` runs first): each example through its hook adapter, the sandbox guests, hot reload, the
//! compile cache, and the admin API of the real gateway.
//!
//! Components are looked up in `$GROK2API_PLUGINS_DIR` (default `target/plugins`). A missing one skips the
//! test, or fails it when `GROK2API_REQUIRE_ALL=1`.

#[macro_use]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use grok2api::config::Settings;
use grok2api::hooks::{Candidate, HookError, ProxySource, SelectRequest, Selection};
use grok2api::plugins::{CompileSource, Kind, LoadOutcome, Registry, State, Watcher};
use grok2api::storage::CallLogEntry;
use support::plugins::install;
use support::{GatewayBuilder, MockServer};

fn registry(dir: &Path, plugins_toml: &str) -> Registry {
    let text = format!("[plugins]\ndir = \"{}\"\n{plugins_toml}", dir.display());
    let (s, warnings) = Settings::from_toml(&text, Path::new("test.toml")).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    s.validate("test").unwrap();
    Registry::new(&s.plugins, dir).unwrap()
}

fn cand(id: u32, host: &str, healthy: bool, failures: u32, latency: Option<u32>) -> Candidate<'_> {
    Candidate {
        id,
        scheme: "http",
        host,
        source: ProxySource::List,
        healthy,
        consecutive_failures: failures,
        requests: 100,
        successes: 90,
        ewma_latency_ms: latency,
        bound_tokens: 1,
        idle_ms: 500,
    }
}

fn req<'a>(model: &'a str, bound: Option<u32>) -> SelectRequest<'a> {
    SelectRequest {
        token_id: "tok-1",
        model,
        route: "/v1/chat/completions",
        stream: false,
        bound,
    }
}

/// Candidates borrow their hosts; a test's few strings live for the whole process.
fn twenty() -> Vec<Candidate<'static>> {
    (0..20)
        .map(|i| {
            cand(
                i,
                format!("10.0.{}.{}:8080", i % 2, i).leak(),
                true,
                0,
                Some(500 - i * 7),
            )
        })
        .collect()
}

fn status(r: &Registry, name: &str) -> grok2api::plugins::PluginStatus {
    r.status(name)
        .unwrap_or_else(|| panic!("no plugin {name}: {:?}", r.list()))
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn least_latency_picks_the_fastest_healthy_proxy_and_sticks() {
    let wasm = need!("least-latency");
    let dir = tempfile::tempdir().unwrap();
    install(&wasm, dir.path(), "ll");
    let r = registry(dir.path(), "selector = \"ll\"\n");
    let loaded = r.load_all();
    assert!(
        matches!(loaded[0].1, LoadOutcome::Loaded { .. }),
        "{loaded:?}"
    );
    let st = status(&r, "ll");
    assert_eq!(st.state, State::Loaded);
    assert_eq!(st.kind, Some(Kind::Selector));
    assert_eq!(st.version.as_deref(), Some("0.1.0"));
    assert_eq!(st.sha256.as_ref().map(|s| s.len()), Some(64));

    let sel = r.selector().unwrap();
    assert_eq!(sel.name(), "ll");
    let c = vec![
        cand(0, "a:1", true, 0, Some(300)),
        cand(1, "b:1", false, 0, Some(50)), // unhealthy
        cand(2, "c:1", true, 0, Some(100)),
        cand(3, "d:1", true, 5, Some(60)), // failing
        cand(4, "e:1", true, 0, Some(150)),
    ];
    assert_eq!(sel.select(&req("m", None), &c), Ok(Selection::Use(2)));
    // Bound to a proxy within 2x of the best: sticky.
    assert_eq!(sel.select(&req("m", Some(4)), &c), Ok(Selection::Use(4)));
    // Bound to one more than 2x slower, or failing: moves.
    assert_eq!(sel.select(&req("m", Some(0)), &c), Ok(Selection::Use(2)));
    assert_eq!(sel.select(&req("m", Some(3)), &c), Ok(Selection::Use(2)));
    // Nothing usable: the built-in decides.
    assert_eq!(
        sel.select(&req("m", None), &[cand(0, "a:1", false, 0, Some(1))]),
        Ok(Selection::Default)
    );
    assert_eq!(
        sel.select(&req("m", None), &twenty()),
        Ok(Selection::Use(19))
    );
    let st = status(&r, "ll");
    assert_eq!(st.calls, 6);
    assert_eq!(st.errors, 0);
    assert!(st.p50_us.unwrap() > 0.0 && st.p99_us.unwrap() >= st.p50_us.unwrap());
}

#[test]
fn least_latency_rejects_a_bad_config() {
    let wasm = need!("least-latency");
    let dir = tempfile::tempdir().unwrap();
    install(&wasm, dir.path(), "ll");
    let r = registry(
        dir.path(),
        "selector = \"ll\"\n[plugins.config.ll]\nslower_factor = 0.5\n",
    );
    r.load_all();
    let st = status(&r, "ll");
    assert_eq!(st.state, State::Failed);
    assert!(
        st.load_error.as_deref().unwrap().contains("slower_factor"),
        "{st:?}"
    );
    assert!(matches!(
        r.selector().unwrap().select(&req("m", None), &twenty()),
        Err(HookError::Unavailable(_))
    ));
}

#[test]
fn json_pool_parses_by_config_and_reports_api_errors() {
    let wasm = need!("json-pool");
    let dir = tempfile::tempdir().unwrap();
    install(&wasm, dir.path(), "jp");
    let r = registry(
        dir.path(),
        "pool_parser = \"jp\"\n[plugins.config.jp]\nlist = \"data.list\"\nhost_field = \"ip\"\n\
         port_field = \"port\"\nusername_field = \"user\"\npassword_field = \"pass\"\n\
         expires_field = \"expire\"\ncode_field = \"code\"\nmessage_field = \"msg\"\nlabel_field = \"city\"\n",
    );
    r.load_all();
    assert_eq!(status(&r, "jp").state, State::Loaded);
    let p = r.pool_parser().unwrap();
    let body = br#"{"code": 0, "data": {"list": [
        {"ip": "1.2.3.4", "port": "8080", "user": "u", "pass": "p", "expire": 1700000000, "city": "sh"},
        {"ip": "5.6.7.8", "port": 3128},
        "socks5://9.9.9.9:1080"
    ]}}"#;
    let specs = p
        .parse("http://pool/api", 200, Some("application/json"), body)
        .unwrap();
    assert_eq!(specs.len(), 3);
    assert_eq!(specs[0].host.as_deref(), Some("1.2.3.4"));
    assert_eq!(specs[0].port, Some(8080));
    assert_eq!(specs[0].scheme.as_deref(), Some("http"));
    assert_eq!(specs[0].username.as_deref(), Some("u"));
    assert_eq!(specs[0].password.as_deref(), Some("p"));
    assert_eq!(specs[0].expires_at_ms, Some(1_700_000_000_000));
    assert_eq!(specs[0].label.as_deref(), Some("sh"));
    assert_eq!(specs[1].port, Some(3128));
    assert_eq!(specs[2].url.as_deref(), Some("socks5://9.9.9.9:1080"));

    // The API's own error: Err for the caller, but not the plugin's fault.
    let err = p
        .parse(
            "http://pool/api",
            200,
            None,
            br#"{"code": 1001, "msg": "quota used up"}"#,
        )
        .unwrap_err();
    assert!(
        matches!(&err, HookError::BadAnswer(m) if m.contains("quota used up")),
        "{err:?}"
    );
    assert!(p.parse("http://pool/api", 502, None, b"").is_err());
    assert!(p.parse("http://pool/api", 200, None, b"<html>").is_err());
    let st = status(&r, "jp");
    assert_eq!(st.errors, 0, "{st:?}");
    assert_eq!(st.state, State::Loaded);
}

fn log_entry(n: u32, success: bool) -> CallLogEntry {
    CallLogEntry {
        id: format!("id-{n}"),
        timestamp: 1_700_000_000_000 + n as i64,
        model: "grok-4".into(),
        success,
        status_code: if success { 200 } else { 502 },
        response_time: 1.25,
        error_message: if success {
            String::new()
        } else {
            "upstream failed".into()
        },
        proxy_used: "http://***@10.0.0.1:8080".into(),
        token_id: format!("tok-{n}"),
        ..CallLogEntry::default()
    }
}

#[test]
fn chat_webhook_formats_batches_and_filters() {
    let wasm = need!("chat-webhook");
    let batch: Vec<CallLogEntry> = (0..5).map(|n| log_entry(n, n % 2 == 0)).collect();
    for (format, only_failures, per_message, expect_requests, text_at) in [
        ("slack", false, 2, 3, "/text"),
        ("discord", true, 20, 1, "/content"),
        ("feishu", false, 20, 1, "/content/text"),
        ("dingtalk", true, 1, 2, "/text/content"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        install(&wasm, dir.path(), "chat");
        let r = registry(
            dir.path(),
            &format!(
                "webhooks = [\"chat\"]\n[plugins.config.chat]\nformat = \"{format}\"\n\
                 url = \"https://chat.example/hook\"\nonly_failures = {only_failures}\n\
                 max_per_message = {per_message}\n"
            ),
        );
        r.load_all();
        assert_eq!(status(&r, "chat").state, State::Loaded, "{format}");
        let hooks = r.webhooks();
        assert_eq!(hooks.len(), 1);
        let out = hooks[0].deliver(&batch).unwrap();
        assert_eq!(out.len(), expect_requests, "{format}");
        for o in &out {
            assert_eq!(o.method, "POST");
            assert_eq!(o.url, "https://chat.example/hook");
            let body: serde_json::Value = serde_json::from_slice(&o.body).unwrap();
            let text = body.pointer(text_at).and_then(|t| t.as_str()).unwrap();
            assert!(text.contains("grok2api:"), "{format}: {text}");
            if only_failures {
                assert!(!text.contains('✅'), "{format}: {text}");
                assert!(text.contains("upstream failed"), "{format}: {text}");
            }
        }
        assert!(hooks[0].deliver(&[]).unwrap().is_empty() || !only_failures);
    }
}

#[test]
fn model_route_js_routes_models_to_proxy_groups() {
    let wasm = need!("model-route");
    let dir = tempfile::tempdir().unwrap();
    install(&wasm, dir.path(), "route");
    let r = registry(
        dir.path(),
        "selector = \"route\"\n[plugins.config.route]\n\
         routes = [{ model = \"grok-4*\", host = \"10.0.1.*\" }, { model = \"grok-3\", host = \"10.0.0.*\" }]\n",
    );
    r.load_all();
    let st = status(&r, "route");
    assert_eq!(st.state, State::Loaded, "{st:?}");
    assert_eq!(st.version.as_deref(), Some("0.1.0"));
    let sel = r.selector().unwrap();
    let c = twenty();
    // Odd ids are 10.0.1.x; the fastest of them is 19, of the even ones 18.
    assert_eq!(
        sel.select(&req("grok-4-fast", None), &c),
        Ok(Selection::Use(19))
    );
    assert_eq!(sel.select(&req("grok-3", None), &c), Ok(Selection::Use(18)));
    assert_eq!(sel.select(&req("other", None), &c), Ok(Selection::Default));
    assert_eq!(status(&r, "route").errors, 0);
}

#[test]
fn text_pool_python_parses_plain_lists() {
    let wasm = need!("text-pool");
    let dir = tempfile::tempdir().unwrap();
    install(&wasm, dir.path(), "tp");
    let r = registry(
        dir.path(),
        "pool_parser = \"tp\"\n[plugins.config.tp]\nlabel = \"list\"\n",
    );
    r.load_all();
    let st = status(&r, "tp");
    assert_eq!(st.state, State::Loaded, "{st:?}");
    let p = r.pool_parser().unwrap();
    let body = b"# proxies\n1.2.3.4:8080\n\nuser:pw@5.6.7.8:3128\n9.9.9.9:1080:u2:p2\nsocks5://7.7.7.7:1080\n";
    let specs = p
        .parse("http://pool", 200, Some("text/plain"), body)
        .unwrap();
    assert_eq!(specs.len(), 4);
    assert_eq!(specs[0].host.as_deref(), Some("1.2.3.4"));
    assert_eq!(specs[0].port, Some(8080));
    assert_eq!(specs[1].username.as_deref(), Some("user"));
    assert_eq!(specs[1].password.as_deref(), Some("pw"));
    assert_eq!(specs[2].password.as_deref(), Some("p2"));
    assert_eq!(specs[3].url.as_deref(), Some("socks5://7.7.7.7:1080"));
    assert!(specs.iter().all(|s| s.label.as_deref() == Some("list")));
    let err = p
        .parse(
            "http://pool",
            200,
            None,
            br#"{"code": 7, "msg": "no balance"}"#,
        )
        .unwrap_err();
    assert!(err.to_string().contains("no balance"), "{err}");
    assert!(p
        .parse("http://pool", 200, None, b"1.2.3.4:notaport")
        .is_err());
    assert_eq!(status(&r, "tp").errors, 0);
}

#[test]
fn sandbox_guests_fail_open_count_errors_and_get_disabled() {
    let wasm = need!("tg-sandbox");
    let dir = tempfile::tempdir().unwrap();
    let c = twenty();
    for (mode, check) in [
        (
            "loop",
            (|e: &HookError| matches!(e, HookError::Timeout)) as fn(&HookError) -> bool,
        ),
        ("alloc", |e| matches!(e, HookError::OutOfMemory)),
        ("panic", |e| matches!(e, HookError::Trap(_))),
        (
            "oob",
            |e| matches!(e, HookError::BadAnswer(m) if m.contains("does not exist")),
        ),
        (
            "direct",
            |e| matches!(e, HookError::BadAnswer(m) if m.contains("direct")),
        ),
    ] {
        let d = dir.path().join(mode);
        std::fs::create_dir_all(&d).unwrap();
        install(&wasm, &d, "bad");
        let r = registry(
            &d,
            &format!(
                "selector = \"bad\"\nmax_consecutive_errors = 3\n[plugins.config.bad]\nmode = \"{mode}\"\n"
            ),
        );
        r.load_all();
        assert_eq!(status(&r, "bad").state, State::Loaded, "{mode}");
        let sel = r.selector().unwrap();
        if mode == "loop" {
            // Past the load-time calls' 2 s deadline: the deadline watchdog has nothing left to time and parks.
            // The looping call must wake it, or it would spin for ever.
            std::thread::sleep(Duration::from_millis(2300));
        }
        for i in 0..3 {
            let start = Instant::now();
            let e = sel.select(&req("m", None), &c).unwrap_err();
            assert!(check(&e), "{mode} call {i}: {e:?}");
            // The 20 ms deadline holds (with slack for a loaded machine), and a loop is not cut short of it.
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "{mode}: {:?}",
                start.elapsed()
            );
            if mode == "loop" {
                assert!(
                    start.elapsed() >= Duration::from_millis(20),
                    "{:?}",
                    start.elapsed()
                );
            }
        }
        let st = status(&r, "bad");
        assert_eq!(st.state, State::Disabled, "{mode}: {st:?}");
        assert_eq!(st.errors, 3);
        assert!(st.last_error.is_some());
        // Disabled: answered at once without calling the plugin; the caller uses the built-in.
        assert!(matches!(
            sel.select(&req("m", None), &c),
            Err(HookError::Unavailable(_))
        ));
        assert_eq!(status(&r, "bad").calls, 3);
        // An admin re-enables it; the plugin answers again (the trial-model path behaves).
        let st = r.enable("bad").unwrap();
        assert_eq!(st.state, State::Loaded);
        assert_eq!(st.consecutive_errors, 0);
        assert_eq!(sel.select(&req("trial", None), &c), Ok(Selection::Use(19)));
    }
}

/// The same component with a custom section appended: still valid, but a different file (and hash).
fn variant_of(src: &Path, dir: &Path, tag: &str) -> PathBuf {
    let mut bytes = std::fs::read(src).unwrap();
    let name = b"grok2api-test";
    let payload = tag.as_bytes();
    let len = 1 + name.len() + payload.len();
    assert!(len < 128 && name.len() < 128);
    bytes.extend_from_slice(&[0, len as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    let out = dir.join(format!("variant-{tag}.bin"));
    std::fs::write(&out, bytes).unwrap();
    out
}

#[test]
fn a_disabled_plugin_stays_disabled_until_its_file_changes() {
    let bad = need!("tg-sandbox");
    let good = need!("least-latency");
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    install(&bad, dir.path(), "sel");
    let r = registry(
        dir.path(),
        "selector = \"sel\"\nmax_consecutive_errors = 2\n[plugins.config.sel]\nmode = \"panic\"\n",
    );
    r.load_all();
    let sel = r.selector().unwrap();
    for _ in 0..2 {
        assert!(sel.select(&req("m", None), &twenty()).is_err());
    }
    assert_eq!(status(&r, "sel").state, State::Disabled);
    // The same file again: stays disabled.
    install(&bad, dir.path(), "sel");
    assert_eq!(r.sync_file("sel", false), LoadOutcome::Unchanged);
    assert_eq!(status(&r, "sel").state, State::Disabled);
    // A new file that fails to load (least-latency refuses the unknown `mode` key) changes nothing.
    install(&good, dir.path(), "sel");
    assert!(matches!(
        r.sync_file("sel", false),
        LoadOutcome::Failed { .. }
    ));
    assert_eq!(status(&r, "sel").state, State::Disabled);
    // A new file that loads: enabled again, counting errors from zero.
    install(&variant_of(&bad, scratch.path(), "v2"), dir.path(), "sel");
    assert!(matches!(
        r.sync_file("sel", false),
        LoadOutcome::Loaded { .. }
    ));
    let st = status(&r, "sel");
    assert_eq!(st.state, State::Loaded);
    assert_eq!(st.consecutive_errors, 0);
    assert!(matches!(
        sel.select(&req("m", None), &twenty()),
        Err(HookError::Trap(_))
    ));
    assert_eq!(status(&r, "sel").errors, 3);
}

#[test]
fn components_that_do_not_fit_are_reported_not_loaded() {
    let bad_import = need!("tg-bad-import");
    let no_world = need!("tg-no-world");
    let webhook = need!("chat-webhook");
    let dir = tempfile::tempdir().unwrap();
    install(&bad_import, dir.path(), "imports");
    install(&no_world, dir.path(), "noworld");
    install(&webhook, dir.path(), "hook");
    std::fs::write(dir.path().join("garbage.wasm"), b"\0asm this is not wasm").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();
    let r = registry(dir.path(), "selector = \"hook\"\n");
    let outcomes = r.load_all();
    let names: Vec<&str> = outcomes.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["garbage", "hook", "imports", "noworld"]);
    let err = |n: &str| {
        let st = status(&r, n);
        assert_eq!(st.state, State::Failed, "{n}: {st:?}");
        st.load_error.unwrap()
    };
    assert!(
        err("imports").contains("test:extra/missing"),
        "{}",
        err("imports")
    );
    assert!(
        err("noworld").contains("matches no plugin world"),
        "{}",
        err("noworld")
    );
    assert!(
        err("garbage").contains("not a valid component"),
        "{}",
        err("garbage")
    );
    // A webhook named as the selector: reported, and the built-in keeps selecting.
    assert!(
        err("hook").contains("log-webhook plugin"),
        "{}",
        err("hook")
    );
    assert!(matches!(
        r.selector().unwrap().select(&req("m", None), &twenty()),
        Err(HookError::Unavailable(_))
    ));
}

#[test]
fn hot_reload_swaps_versions_and_never_takes_a_bad_file() {
    let ll = need!("least-latency");
    let sandbox = need!("tg-sandbox");
    let dir = tempfile::tempdir().unwrap();
    // A generous deadline: this test is about swapping, and a 20 ms call can time out on a loaded CI machine.
    let r = registry(dir.path(), "selector = \"sel\"\ntimeout_ms = 500\n");
    r.load_all();
    assert_eq!(status(&r, "sel").state, State::Missing);
    let _w = Watcher::start(r.clone()).unwrap();
    let sel = r.selector().unwrap();
    // least-latency picks the fastest (3 here); the sandbox guest with no config picks the last (19).
    let mut c = twenty();
    c[3].ewma_latency_ms = Some(1);
    let answer = || sel.select(&req("m", None), &c);

    install(&ll, dir.path(), "sel");
    wait_until("least-latency serves", Duration::from_secs(20), || {
        answer() == Ok(Selection::Use(3))
    });
    for round in 0..3 {
        install(&sandbox, dir.path(), "sel");
        wait_until("sandbox serves", Duration::from_secs(20), || {
            answer() == Ok(Selection::Use(19))
        });
        install(&ll, dir.path(), "sel");
        wait_until(
            "least-latency serves again",
            Duration::from_secs(20),
            || answer() == Ok(Selection::Use(3)),
        );
        assert_eq!(status(&r, "sel").errors, 0, "round {round}");
    }

    // A half-written file (closed after a partial write) and garbage never replace the serving version.
    let bytes = std::fs::read(&sandbox).unwrap();
    std::fs::write(dir.path().join("sel.wasm"), &bytes[..bytes.len() / 2]).unwrap();
    wait_until(
        "the truncated file is rejected",
        Duration::from_secs(20),
        || status(&r, "sel").load_error.is_some(),
    );
    assert_eq!(answer(), Ok(Selection::Use(3)));
    std::fs::write(dir.path().join("sel.wasm"), b"garbage").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(answer(), Ok(Selection::Use(3)));
    assert_eq!(status(&r, "sel").state, State::Loaded);

    // Removing the file unloads it: the built-in serves.
    std::fs::remove_file(dir.path().join("sel.wasm")).unwrap();
    wait_until("unloaded", Duration::from_secs(20), || {
        matches!(answer(), Err(HookError::Unavailable(_)))
    });
    assert_eq!(status(&r, "sel").state, State::Missing);
}

#[test]
fn compiled_components_are_cached_across_restarts() {
    let wasm = need!("least-latency");
    let dir = tempfile::tempdir().unwrap();
    install(&wasm, dir.path(), "ll");
    let first = registry(dir.path(), "selector = \"ll\"\n");
    assert!(matches!(
        first.load_all()[0].1,
        LoadOutcome::Loaded {
            source: CompileSource::Compiled,
            ..
        }
    ));
    drop(first);
    let cached: Vec<_> = std::fs::read_dir(dir.path().join(".cache"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(cached.len(), 1);
    let second = registry(dir.path(), "selector = \"ll\"\n");
    assert!(matches!(
        second.load_all()[0].1,
        LoadOutcome::Loaded {
            source: CompileSource::Cache,
            ..
        }
    ));
    assert_eq!(
        second
            .selector()
            .unwrap()
            .select(&req("m", None), &twenty()),
        Ok(Selection::Use(19))
    );
    drop(second);
    // A corrupt cache entry is recompiled, not trusted.
    std::fs::write(cached[0].path(), b"corrupt").unwrap();
    let third = registry(dir.path(), "selector = \"ll\"\n");
    assert!(matches!(
        third.load_all()[0].1,
        LoadOutcome::Loaded {
            source: CompileSource::Compiled,
            ..
        }
    ));
}

/// The gateway compiles a plugin in a child process (`grok2api __compile-plugin`, the component on stdin), so
/// compiling leaves nothing behind in its own memory; what the child writes must be what the registry loads.
#[test]
fn the_compiler_process_writes_the_cache_entry_the_registry_loads() {
    let wasm = need!("least-latency");
    let dir = tempfile::tempdir().unwrap();
    install(&wasm, dir.path(), "ll");
    // The entry's name (hash and engine tag) as the registry makes it; then it is gone again.
    drop(registry(dir.path(), "selector = \"ll\"\n").load_all());
    let entry = std::fs::read_dir(dir.path().join(".cache"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    std::fs::remove_file(&entry).unwrap();

    let compile = |input: &[u8], out: &Path| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_grok2api"))
            .args([
                "__compile-plugin",
                "--memory-bytes",
                &(32usize << 20).to_string(),
            ])
            .arg(out)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = compile(&std::fs::read(&wasm).unwrap(), &entry);
    assert_eq!(code, Some(0), "{err}");
    let r = registry(dir.path(), "selector = \"ll\"\n");
    assert!(matches!(
        r.load_all()[0].1,
        LoadOutcome::Loaded {
            source: CompileSource::Cache,
            ..
        }
    ));
    assert_eq!(
        r.selector().unwrap().select(&req("m", None), &twenty()),
        Ok(Selection::Use(19))
    );

    // Not a component: exit 1 and wasmtime's message (the registry reports it as "not a valid component: …"),
    // nothing written.
    let bad = dir.path().join(".cache").join("bad.cwasm");
    let (code, err) = compile(b"\0asm this is not wasm", &bad);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("failed to parse WebAssembly"), "{err}");
    assert!(!bad.exists());
}

#[tokio::test]
async fn gateway_lists_reloads_and_enables_plugins() {
    let wasm = need!("least-latency");
    let mock = MockServer::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let plugins = data.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    install(&wasm, &plugins, "ll");
    let gw = GatewayBuilder::new(&mock.base_url())
        .tokens(&["tok-a"])
        .dir(data.path())
        .section("[plugins]\nselector = \"ll\"\nwebhooks = [\"chat\"]\n")
        .start()
        .await;

    // Session-protected like every other /api route.
    let r = gw.http.get(gw.url("/api/plugins")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let session = gw.admin_token().await;
    let v = gw.admin_get(&session, "/api/plugins").await;
    assert_eq!(v["success"], true, "{v}");
    assert_eq!(v["data"]["hooks"]["selector"], "ll");
    assert_eq!(v["data"]["limits"]["timeout_ms"], 20);
    let list = v["data"]["plugins"].as_array().unwrap();
    let ll = list.iter().find(|p| p["name"] == "ll").unwrap();
    assert_eq!(ll["state"], "loaded", "{v}");
    assert_eq!(ll["kind"], "selector");
    assert_eq!(ll["hook"], "selector");
    assert_eq!(ll["version"], "0.1.0");
    let chat = list.iter().find(|p| p["name"] == "chat").unwrap();
    assert_eq!(chat["state"], "missing", "{v}");

    // A new file appears; reload picks it up without waiting for the watcher.
    install(&wasm, &plugins, "extra");
    let v = gw
        .admin_post(&session, "/api/plugins/reload", serde_json::json!({}))
        .await;
    let extra = v["data"]["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "extra")
        .cloned()
        .unwrap();
    assert_eq!(extra["state"], "loaded", "{v}");
    assert_eq!(extra["hook"], serde_json::Value::Null);

    let v = gw
        .admin_post(&session, "/api/plugins/ll/enable", serde_json::json!({}))
        .await;
    assert_eq!(v["data"]["state"], "loaded", "{v}");
    let r = gw
        .http
        .post(gw.url("/api/plugins/nope/enable"))
        .bearer_auth(&session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The gateway still serves a chat with the plugin host running (selection through it: plugins_e2e.rs).
    let r = gw
        .chat(
            serde_json::json!({"model": "grok-3", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(gw.logs().contains("plugin loaded"), "{}", gw.logs());
    gw.terminate().await;
}

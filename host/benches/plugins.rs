//! Per-call cost of each example plugin through its hook adapter (warm, reused instance), and the time from a
//! file rename to the new version serving. Needs the components from `plugins/build.sh`
//! (`$GROK2API_PLUGINS_DIR`, default `target/plugins`); missing ones are skipped.
//!
//! `cargo bench -p grok2api --bench plugins`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{black_box, Criterion};
use grok2api::config::Settings;
use grok2api::hooks::{Candidate, ProxySource, SelectRequest};
use grok2api::plugins::{Registry, Watcher};
use grok2api::storage::CallLogEntry;

fn built(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("GROK2API_PLUGINS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
    let p = dir.join(format!("{name}.wasm"));
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("skipping {name}: {} not built", p.display());
        None
    }
}

fn install(src: &Path, dir: &Path, name: &str) {
    let tmp = dir.join(format!(".{name}.wasm.part"));
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).unwrap();
}

fn registry(dir: &Path, toml: &str) -> Registry {
    let text = format!("[plugins]\ndir = \"{}\"\n{toml}", dir.display());
    let (s, _) = Settings::from_toml(&text, Path::new("bench.toml")).unwrap();
    let r = Registry::new(&s.plugins, dir).unwrap();
    r.load_all();
    r
}

fn candidates(n: u32) -> Vec<Candidate<'static>> {
    (0..n)
        .map(|i| Candidate {
            id: i,
            scheme: "http",
            host: format!("10.0.{}.{}:8080", i % 2, i).leak(),
            source: ProxySource::List,
            healthy: i % 7 != 3,
            consecutive_failures: i % 3,
            requests: 1000 + i as u64,
            successes: 900,
            ewma_latency_ms: Some(100 + (i * 37) % 400),
            bound_tokens: i % 4,
            idle_ms: 1000 * i as u64,
        })
        .collect()
}

fn req() -> SelectRequest<'static> {
    SelectRequest {
        token_id: "tok-1",
        model: "grok-4-fast",
        route: "/v1/chat/completions",
        stream: true,
        bound: Some(4),
    }
}

fn benches(c: &mut Criterion, tmp: &Path) {
    let cands = candidates(20);
    for (name, file, cfg) in [
        ("selector/least-latency (Rust)", "least-latency", ""),
        (
            "selector/model-route (JS, QuickJS)",
            "model-route",
            "[plugins.config.sel]\nroutes = [{ model = \"grok-4*\", host = \"10.0.1.*\" }]\n",
        ),
    ] {
        let Some(wasm) = built(file) else { continue };
        let dir = tmp.join(file);
        std::fs::create_dir_all(&dir).unwrap();
        install(&wasm, &dir, "sel");
        let r = registry(&dir, &format!("selector = \"sel\"\n{cfg}"));
        let sel = r.selector().unwrap();
        sel.select(&req(), &cands).unwrap();
        c.bench_function(&format!("{name}, 20 candidates"), |b| {
            b.iter(|| black_box(sel.select(black_box(&req()), black_box(&cands))))
        });
    }

    let json_body = serde_json::to_vec(&serde_json::json!({"code": 0, "data": {"list":
        (0..10).map(|i| serde_json::json!({"ip": format!("1.2.3.{i}"), "port": 8080 + i})).collect::<Vec<_>>()}}))
    .unwrap();
    let text_body: String = (0..10)
        .map(|i| format!("1.2.3.{i}:{}\n", 8080 + i))
        .collect();
    for (name, file, cfg, body) in [
        (
            "pool-parser/json-pool (Rust), 10 proxies",
            "json-pool",
            "[plugins.config.pp]\nlist = \"data.list\"\n",
            json_body.clone(),
        ),
        (
            "pool-parser/text-pool (Python), 10 proxies",
            "text-pool",
            "",
            text_body.into_bytes(),
        ),
    ] {
        let Some(wasm) = built(file) else { continue };
        let dir = tmp.join(file);
        std::fs::create_dir_all(&dir).unwrap();
        install(&wasm, &dir, "pp");
        let r = registry(&dir, &format!("pool_parser = \"pp\"\n{cfg}"));
        let p = r.pool_parser().unwrap();
        assert_eq!(p.parse("http://pool", 200, None, &body).unwrap().len(), 10);
        c.bench_function(name, |b| {
            b.iter(|| black_box(p.parse("http://pool", 200, None, black_box(&body))))
        });
    }

    if let Some(wasm) = built("chat-webhook") {
        let dir = tmp.join("chat-webhook");
        std::fs::create_dir_all(&dir).unwrap();
        install(&wasm, &dir, "chat");
        let r = registry(
            &dir,
            "webhooks = [\"chat\"]\n[plugins.config.chat]\nformat = \"slack\"\nurl = \"https://chat.example/x\"\n",
        );
        let w = r.webhooks().remove(0);
        let batch: Vec<CallLogEntry> = (0..10)
            .map(|i| CallLogEntry {
                id: format!("id-{i}"),
                model: "grok-4".into(),
                success: i % 3 != 0,
                status_code: 200,
                token_id: format!("tok-{i}"),
                ..CallLogEntry::default()
            })
            .collect();
        assert_eq!(w.deliver(&batch).unwrap().len(), 1);
        c.bench_function("log-webhook/chat-webhook (Rust), 10 calls", |b| {
            b.iter(|| black_box(w.deliver(black_box(&batch))))
        });
    }
}

/// Time from `rename` into the watched directory to the new version answering, alternating two versions.
fn swap_latency(tmp: &Path, rounds: usize, all: bool) {
    let pairs = [
        ("least-latency", "tg-sandbox"),
        ("model-route", "least-latency"),
        ("text-pool", "json-pool"),
    ];
    // As a test (`cargo test --all-targets`) only the quick Rust pair runs.
    for (a, b) in pairs.into_iter().take(if all { 3 } else { 1 }) {
        let (Some(wa), Some(wb)) = (built(a), built(b)) else {
            continue;
        };
        let dir = tmp.join(format!("swap-{a}"));
        std::fs::create_dir_all(&dir).unwrap();
        let r = registry(&dir, "");
        let _w = Watcher::start(r.clone()).unwrap();
        let mut times = Vec::new();
        let mut cold = None;
        for i in 0..rounds * 2 {
            let src = if i % 2 == 0 { &wa } else { &wb };
            let want = std::fs::read(src).unwrap();
            let want = grok2api::util::sha256_hex(&want);
            let start = Instant::now();
            install(src, &dir, "p");
            while r.status("p").and_then(|s| s.sha256) != Some(want.clone()) {
                assert!(
                    start.elapsed() < Duration::from_secs(120),
                    "{a}/{b} swap stuck"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            let t = start.elapsed();
            // The first load of each file compiles; later ones come from the cache.
            if i < 2 {
                if i == 0 {
                    cold = Some(t);
                }
            } else {
                times.push(t);
            }
        }
        times.sort();
        println!(
            "swap {a} <-> {b}: first (compiling {a}) {:?}; cached: median {:?}, max {:?} over {} swaps",
            cold.unwrap_or_default(),
            times.get(times.len() / 2).copied().unwrap_or_default(),
            times.last().copied().unwrap_or_default(),
            times.len()
        );
    }
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    benches(&mut c, tmp.path());
    c.final_summary();
    swap_latency(tmp.path(), if bench_mode { 5 } else { 1 }, bench_mode);
}

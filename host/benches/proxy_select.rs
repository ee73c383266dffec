//! Cost of choosing the egress for a request: 500 proxies, 10 000 tokens.
//! `cargo bench -p grok2api --bench proxy_select`; the target is a median under 2 µs.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use grok2api::config::GrokSettings;
use grok2api::proxy::{PoolOptions, ProxyPool, RequestInfo};
use grok2api::storage::FileStorage;

const PROXIES: usize = 500;
const TOKENS: usize = 10_000;

fn info(token: &str) -> RequestInfo<'_> {
    RequestInfo {
        token_id: token,
        model: "grok-4-fast",
        route: "/v1/chat/completions",
        stream: true,
    }
}

fn pool() -> (tempfile::TempDir, ProxyPool, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let opts = PoolOptions::from_settings(&GrokSettings::default()).unwrap();
    let pool = ProxyPool::new(opts, Arc::new(FileStorage::new(dir.path()).unwrap())).unwrap();
    for i in 0..PROXIES {
        let url = format!("http://user{i}:pw@10.{}.{}.1:3128", i / 250, i % 250);
        pool.add_admin(&url).unwrap();
    }
    let tokens: Vec<String> = (0..TOKENS).map(|i| format!("{i:012x}")).collect();
    for t in &tokens {
        pool.select_ready(&info(t), &[]).unwrap();
    }
    (dir, pool, tokens)
}

fn bench(c: &mut Criterion) {
    let (_dir, pool, tokens) = pool();
    let mut i = 0usize;
    c.bench_function("select: bound token (steady state)", |b| {
        b.iter(|| {
            i = (i + 7919) % TOKENS;
            std::hint::black_box(pool.select_ready(&info(&tokens[i]), &[]))
        })
    });
    let mut i = 0usize;
    c.bench_function("select: unbound token (first use: scan 500, bind)", |b| {
        b.iter(|| {
            i = (i + 7919) % TOKENS;
            pool.unassign(&tokens[i]);
            std::hint::black_box(pool.select_ready(&info(&tokens[i]), &[]))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

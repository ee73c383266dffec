//! Call-log costs: recording on the request path, and admin queries over a full log.
//! `cargo bench -p grok2api --bench calllog`

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use grok2api::calllog::{CallLog, CallLogOptions, CallRecord, LogFilter, LogStore};
use grok2api::storage::{CallLogEntry, FileStorage, Storage};
use grok2api::tokens::TokenPool;

fn record_cost(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = rt.block_on(async {
        let storage: Arc<dyn Storage> = Arc::new(FileStorage::new(dir.path()).unwrap());
        let tokens = TokenPool::load(storage.clone()).await.unwrap();
        CallLog::start(
            storage,
            &tokens,
            CallLogOptions {
                max_count: 10_000,
                flush_interval: Duration::from_secs(2),
                log_models_calls: false,
                metrics_per_token: false,
                webhooks: None,
            },
        )
        .await
        .unwrap()
    });
    let template = {
        let mut r = CallRecord::new(
            "req-0123456789".into(),
            "/v1/chat/completions",
            "grok-4-fast".into(),
            true,
        );
        r.token_id = Some("0123456789ab".into());
        r.token_masked = Some("eyJ0eX****abcd".into());
        r.status_code = 200;
        r.success = true;
        r
    };
    // Logging goes nowhere so only the call log's own work is measured.
    let _g = tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
    c.bench_function("calllog/record (request path)", |b| {
        b.iter_batched(
            || template.clone(),
            |r| log.finish(r),
            criterion::BatchSize::SmallInput,
        )
    });
}

fn query_cost(c: &mut Criterion) {
    let mut store = LogStore::new(100_000);
    let models = ["grok-4-fast", "grok-3-fast", "grok-4-heavy", "grok-2-image"];
    for i in 0..100_000i64 {
        store.insert(Arc::new(CallLogEntry {
            id: format!("id-{i}"),
            timestamp: 1_700_000_000_000 + i * 1000,
            model: models[(i % 4) as usize].into(),
            success: i % 7 != 0,
            status_code: if i % 7 != 0 { 200 } else { 502 },
            token_id: format!("{:012x}", i % 50),
            sso: "eyJ0eX****abcd".into(),
            response_time: (i % 100) as f64 / 10.0,
            ..CallLogEntry::default()
        }));
    }
    c.bench_function("calllog/query 100k, model+success filter, page 1", |b| {
        let f = LogFilter {
            model: Some("GROK-4".into()),
            success: Some(false),
            ..LogFilter::default()
        };
        b.iter(|| store.query(&f, 1, 50))
    });
    c.bench_function("calllog/query 100k, token + time range, page 20", |b| {
        let f = LogFilter {
            token_id: Some(format!("{:012x}", 7)),
            start_time: Some(1_700_000_000_000 + 20_000_000),
            end_time: Some(1_700_000_000_000 + 80_000_000),
            ..LogFilter::default()
        };
        b.iter(|| store.query(&f, 20, 50))
    });
    c.bench_function("calllog/stats 100k", |b| {
        b.iter(|| store.stats(&LogFilter::default(), 0))
    });
}

criterion_group!(benches, record_cost, query_cost);
criterion_main!(benches);

//! `STORAGE_MODE=redis` end to end: real `redis-server` processes (one per test, own port and data dir), real
//! forward proxies, two gateway instances on one store. The scenarios live in `support/shared_store.rs`.

mod support;

use std::time::Duration;

use support::redis::{self as redis_support, RedisServer};
use support::shared_store::*;
use support::*;

/// The tests here each run a Redis server and two gateways; run in parallel on two cores they starve each other
/// into timeouts, so they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn two_instances_share_tokens_sessions_bindings_proxy_health_and_logs() {
    let _turn = SERIAL.lock().await;
    if !redis_support::available() {
        return;
    }
    two_instances_share_everything(&RedisServer::start()).await;
}

#[tokio::test]
async fn concurrent_first_requests_on_two_instances_end_with_one_binding() {
    let _turn = SERIAL.lock().await;
    if !redis_support::available() {
        return;
    }
    concurrent_first_requests_end_with_one_binding(&RedisServer::start()).await;
}

#[tokio::test]
async fn redis_restart_under_load_loses_no_call_log_entry() {
    let _turn = SERIAL.lock().await;
    if !redis_support::available() {
        return;
    }
    restart_under_load_loses_no_call_log_entry(&mut RedisServer::start(), Duration::from_secs(2))
        .await;
}

#[test]
fn bad_url_or_unreachable_server_stops_with_a_clear_masked_message() {
    let dead = format!("redis://admin:s3cretPass@127.0.0.1:{}/0", free_port());
    start_fails_with_masked_message(&[
        (&[("STORAGE_MODE", "redis")], 2, "needs DATABASE_URL"),
        (
            &[
                ("STORAGE_MODE", "redis"),
                ("DATABASE_URL", "http://s3cretPass@x"),
            ],
            2,
            "not a valid Redis URL",
        ),
        (
            &[("STORAGE_MODE", "redis"), ("DATABASE_URL", &dead)],
            1,
            "cannot reach Redis at redis://admin:****@127.0.0.1:",
        ),
    ]);
}

#[tokio::test]
async fn export_import_round_trip_converts_secret_keys() {
    let _turn = SERIAL.lock().await;
    if !redis_support::available() {
        return;
    }
    support::shared_store::export_import_round_trip_converts_secret_keys(&RedisServer::start())
        .await;
}

#[tokio::test]
async fn own_log_entries_are_shared_once_and_not_read_back() {
    let _turn = SERIAL.lock().await;
    if !redis_support::available() {
        return;
    }
    let server = RedisServer::start();
    let url = server.url();
    let connect = || grok2api::storage::redis::RedisStorage::connect(&url, 0);
    let (a, b) = (connect().await.unwrap(), connect().await.unwrap());
    own_log_contract(&a, &b, true).await;
}

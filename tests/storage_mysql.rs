//! `STORAGE_MODE=mysql` end to end: real MariaDB servers (one per test, own data dir and port, a user with a
//! password), real forward proxies, two gateway instances on one database. The scenarios shared with Redis
//! live in `support/shared_store.rs`; the checks here look into the tables too.

mod support;

use std::time::Duration;

use support::mysql::{self as mysql_support, MysqlServer};
use support::shared_store::*;
use support::*;

/// Each test runs a MariaDB server and gateways; on two cores they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn two_instances_share_tokens_sessions_bindings_proxy_health_and_logs() {
    let _turn = SERIAL.lock().await;
    if !mysql_support::available() {
        return;
    }
    let db = MysqlServer::start();
    two_instances_share_everything(&db).await;
    // The store holds it all: the imported tokens, both proxies, the bindings and one version of the schema.
    assert_eq!(db.count("SELECT COUNT(*) FROM g2a_rows WHERE tbl = 0"), 2);
    assert_eq!(db.count("SELECT COUNT(*) FROM g2a_rows WHERE tbl = 1"), 2);
    assert_eq!(db.count("SELECT COUNT(*) FROM g2a_bindings"), 2);
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/mysql"))
        .unwrap()
        .count() as u64;
    assert_eq!(
        db.count("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = 1"),
        migrations
    );
}

#[tokio::test]
async fn concurrent_first_requests_on_two_instances_end_with_one_binding() {
    let _turn = SERIAL.lock().await;
    if !mysql_support::available() {
        return;
    }
    let db = MysqlServer::start();
    concurrent_first_requests_end_with_one_binding(&db).await;
    assert_eq!(db.count("SELECT COUNT(*) FROM g2a_bindings"), 1);
}

#[tokio::test]
async fn mariadb_restart_under_load_loses_no_call_log_entry() {
    let _turn = SERIAL.lock().await;
    if !mysql_support::available() {
        return;
    }
    let mut db = MysqlServer::start();
    // Longer than the pool's 3 s wait for a connection, so appends really fail meanwhile.
    let sent = restart_under_load_loses_no_call_log_entry(&mut db, Duration::from_secs(5)).await;
    // Counted in the table itself: every call once, none twice.
    assert_eq!(db.count("SELECT COUNT(*) FROM g2a_call_logs"), sent);
    assert_eq!(
        db.count("SELECT COUNT(DISTINCT entry_id) FROM g2a_call_logs"),
        sent
    );
}

#[test]
fn bad_url_or_unreachable_server_stops_with_a_clear_masked_message() {
    let dead = format!("mysql://admin:s3cretPass@127.0.0.1:{}/db", free_port());
    start_fails_with_masked_message(&[
        (&[("STORAGE_MODE", "mysql")], 2, "needs DATABASE_URL"),
        (
            &[
                ("STORAGE_MODE", "mysql"),
                ("DATABASE_URL", "http://s3cretPass@x"),
            ],
            2,
            "not a valid MySQL URL",
        ),
        (
            &[
                ("STORAGE_MODE", "mysql"),
                ("DATABASE_URL", "mysql://admin:s3cretPass@127.0.0.1:1"),
            ],
            2,
            "no database name",
        ),
        (
            &[("STORAGE_MODE", "mysql"), ("DATABASE_URL", &dead)],
            1,
            "cannot reach MySQL at mysql://admin:****@127.0.0.1:",
        ),
    ]);
}

#[tokio::test]
async fn wrong_password_stops_with_a_clear_masked_message() {
    let _turn = SERIAL.lock().await;
    if !mysql_support::available() {
        return;
    }
    let db = MysqlServer::start();
    let url = db.url().replace(mysql_support::PASSWORD, "s3cretPass");
    start_fails_with_masked_message(&[(
        &[("STORAGE_MODE", "mysql"), ("DATABASE_URL", &url)],
        1,
        "cannot reach MySQL at mysql://g2a:****@127.0.0.1:",
    )]);
}

#[tokio::test]
async fn export_import_round_trip_converts_secret_keys() {
    let _turn = SERIAL.lock().await;
    if !mysql_support::available() {
        return;
    }
    let db = MysqlServer::start();
    support::shared_store::export_import_round_trip_converts_secret_keys(&db).await;
    assert_eq!(db.count("SELECT COUNT(*) FROM g2a_call_logs"), 3);
    // The log's secret was mapped to a token id on the way in.
    assert_eq!(
        db.count(&format!(
            "SELECT COUNT(*) FROM g2a_call_logs WHERE entry LIKE '%{}%'",
            TOKENS[1]
        )),
        0
    );
}

#[tokio::test]
async fn mode_shared_login_throttling_and_retention_in_batches() {
    let _turn = SERIAL.lock().await;
    if !mysql_support::available() {
        return;
    }
    let db = MysqlServer::start();
    let mock = MockServer::start().await.unwrap();
    let gw = on_store(&mock, &db)
        .tokens(&TOKENS)
        .global("log_max_count = 10")
        .start()
        .await;
    let session = gw.admin_token().await;
    let mode = gw.admin_get(&session, "/api/storage/mode").await;
    assert_eq!(mode["data"]["mode"], "MYSQL", "{mode}");

    // Failed logins on one instance lock the client out on the other too.
    let other = on_store(&mock, &db).start().await;
    let login = |g: &Gateway, pw: &str| {
        g.http
            .post(g.url("/api/login"))
            .json(&serde_json::json!({"username": "admin", "password": pw}))
            .send()
    };
    for _ in 0..5 {
        let r: serde_json::Value = login(&gw, "wrong").await.unwrap().json().await.unwrap();
        assert_eq!(r["success"], false, "{r}");
    }
    let r = login(&other, ADMIN_PASSWORD).await.unwrap();
    assert_eq!(r.status(), 429, "{:?}", r.text().await);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM g2a_login WHERE locked_until_ms > 0"),
        1
    );
    for _ in 0..25 {
        assert_eq!(gw.chat(hello()).send().await.unwrap().status(), 200);
    }
    let newest = eventually(Duration::from_secs(10), "25 rows written", || async {
        let n = db.count("SELECT COALESCE(MAX(seq), 0) FROM g2a_call_logs");
        (n >= 25).then_some(n)
    })
    .await;
    // Retention runs at most every few seconds per instance, on the next append after that.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(gw.chat(hello()).send().await.unwrap().status(), 200);
    // Trimmed to the newest 10, the call after the pause among them (an earlier trim may already have
    // left 10 before it was written: wait for both).
    eventually(
        Duration::from_secs(10),
        "trimmed to the newest 10 rows",
        || async {
            let n = db.count("SELECT COUNT(*) FROM g2a_call_logs");
            let max = db.count("SELECT COALESCE(MAX(seq), 0) FROM g2a_call_logs");
            let min = db.count("SELECT COALESCE(MIN(seq), 0) FROM g2a_call_logs");
            (n == 10 && max > newest && min == max - 9).then_some(())
        },
    )
    .await;
    assert_eq!(log_total(&gw, &session).await, 10);
}

#[tokio::test]
async fn own_log_entries_are_shared_once_and_not_read_back() {
    let _turn = SERIAL.lock().await;
    if !mysql_support::available() {
        return;
    }
    let db = MysqlServer::start();
    let url = db.url();
    let connect = || grok2api::storage::mysql::MysqlStorage::connect(&url, 0);
    let (a, b) = (connect().await.unwrap(), connect().await.unwrap());
    own_log_contract(&a, &b, false).await;
}

//! The official OpenAI Python SDK against the real gateway. Needs a Python with `openai` installed:
//! `GROK2API_TEST_PYTHON` names it (the test script makes a venv and sets it). Without one the test is
//! skipped with a message, unless `GROK2API_REQUIRE_ALL=1` (set by the test script and CI), where it fails.

mod support;

use support::*;

#[tokio::test]
async fn openai_python_sdk_streaming_and_not() {
    let python = std::env::var("GROK2API_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_sdk = std::process::Command::new(&python)
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_sdk {
        assert!(
            std::env::var("GROK2API_REQUIRE_ALL").as_deref() != Ok("1"),
            "`{python}` cannot import openai; run scripts/test, which sets up the venv"
        );
        eprintln!("skipped: `{python}` cannot import openai (scripts/test sets it up)");
        return;
    }
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .tokens(&["sdk-token-aaaaaaaaaaaa"])
        .start()
        .await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/openai_sdk.py");
    let out = tokio::process::Command::new(&python)
        .arg(script)
        .env("GATEWAY_URL", gw.url(""))
        .env("API_KEY", API_KEY)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "sdk script failed\nstdout:\n{stdout}\nstderr:\n{stderr}\ngateway logs:\n{}",
        gw.logs()
    );
    assert!(stdout.contains("openai sdk: ok"));
    // Four calls reached the upstream; the one with a wrong key did not.
    assert_eq!(mock.stats().requests, 4);
}

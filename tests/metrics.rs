//! `/metrics`: Prometheus text that `promtool check metrics` accepts, with request, token and call-log series.

mod support;

use serde_json::json;
use support::*;

#[tokio::test]
async fn metrics_are_valid_prometheus_and_count_requests() {
    let mock = MockServer::start().await.unwrap();
    let gw = GatewayBuilder::new(&mock.base_url())
        .global("metrics_token = \"scrape-secret-123\"")
        .tokens(&["metrics-token-aaaaaaaaaaaa"])
        .start()
        .await;
    for _ in 0..3 {
        let r = gw
            .chat(json!({"model": "grok-4-fast", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap();
    }
    let unauth = gw.http.get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(unauth.status(), 401);
    let resp = gw
        .http
        .get(gw.url("/metrics"))
        .bearer_auth("scrape-secret-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(r#"grok2api_requests_total{route="/v1/chat/completions",model="grok-4-fast",status="200"} 3"#),
        "{text}"
    );
    assert!(
        text.contains("grok2api_gateway_overhead_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains("grok2api_upstream_latency_seconds_count"),
        "{text}"
    );
    assert!(
        text.contains(r#"grok2api_tokens{state="active"} 1"#),
        "{text}"
    );
    assert!(text.contains("grok2api_calllog_dropped_total 0"), "{text}");
    assert!(!text.contains("metrics-token-aaaa"), "secret in metrics");

    let promtool = which("promtool");
    let Some(promtool) = promtool else {
        assert!(
            std::env::var("GROK2API_REQUIRE_ALL").as_deref() != Ok("1"),
            "promtool missing (Debian package prometheus; scripts/test installs it)"
        );
        eprintln!("skipped promtool check: promtool not installed");
        return;
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool rejected the metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}

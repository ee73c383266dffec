//! Sending one webhook request and deciding what its answer means: delivered, retry later, or give up.

use std::time::Duration;

use rand::Rng;

use crate::hooks::OutboundRequest;
use crate::netpolicy::{CheckError, NetPolicy};

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Delivered,
    /// 5xx, 408, 429, connect errors, timeouts: try again after the backoff (or the answer's `Retry-After`).
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Other 4xx, redirects, a denied destination, a malformed request: sending again would not help.
    GiveUp {
        error: String,
        reason: &'static str,
    },
}

/// The webhook client: no redirects (a redirect could lead past the destination policy), no proxy, the
/// policy's resolver, the per-request timeout.
pub fn client(policy: &std::sync::Arc<NetPolicy>, timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(policy.resolver())
        .build()
        .unwrap_or_default()
}

pub async fn send(client: &reqwest::Client, policy: &NetPolicy, req: &OutboundRequest) -> Outcome {
    let give_up = |error: String, reason| Outcome::GiveUp { error, reason };
    let Ok(url) = reqwest::Url::parse(&req.url) else {
        return give_up("not a valid URL".into(), "invalid");
    };
    match policy.check_url(&url).await {
        Ok(()) => {}
        Err(CheckError::Denied(d)) => return give_up(d.to_string(), "denied"),
        Err(e @ CheckError::Resolve(_)) => {
            return Outcome::Retry {
                error: e.to_string(),
                retry_after: None,
            }
        }
    }
    let Ok(method) = http::Method::from_bytes(req.method.as_bytes()) else {
        return give_up(format!("method `{}` is not valid", req.method), "invalid");
    };
    let mut rb = client.request(method, url).body(req.body.clone());
    for (k, v) in &req.headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) => {
            // Without the URL: it may carry the webhook's secret.
            let e = e.without_url();
            let text = crate::proxy::error_chain(&e);
            if text.contains("destination denied") {
                return give_up(text, "denied");
            }
            return Outcome::Retry {
                error: if e.is_timeout() {
                    "timed out".into()
                } else {
                    text
                },
                retry_after: None,
            };
        }
    };
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // Read (a bounded part of) the body so the connection can be reused.
    let _ = tokio::time::timeout(Duration::from_secs(2), resp.bytes()).await;
    let code = status.as_u16();
    if status.is_success() {
        Outcome::Delivered
    } else if code == 408 || code == 429 || status.is_server_error() {
        Outcome::Retry {
            error: format!("HTTP {code}"),
            retry_after,
        }
    } else if status.is_redirection() {
        give_up(
            format!("HTTP {code}: redirects are not followed"),
            "rejected",
        )
    } else {
        give_up(format!("HTTP {code}"), "rejected")
    }
}

/// The wait before retry number `failures` (1 = first retry): `base · 2^(failures-1)`, capped at `max`, with
/// "equal jitter" (a uniformly random half of it added to the other half), so senders that failed together
/// do not retry together.
pub fn backoff(failures: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let d = exp.min(max);
    let half = d / 2;
    half + half.mul_f64(rand::thread_rng().gen::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        for _ in 0..200 {
            let b1 = backoff(1, base, max);
            assert!(b1 >= Duration::from_millis(50) && b1 <= base, "{b1:?}");
            let b4 = backoff(4, base, max);
            assert!(
                b4 >= Duration::from_millis(400) && b4 <= Duration::from_millis(800),
                "{b4:?}"
            );
            let big = backoff(40, base, max);
            assert!(big >= max / 2 && big <= max, "{big:?}");
        }
        // Jitter: not always the same value.
        let samples: std::collections::HashSet<_> =
            (0..50).map(|_| backoff(3, base, max)).collect();
        assert!(samples.len() > 10);
    }

    #[tokio::test]
    async fn answers_are_classified() {
        use axum::routing::post;
        let app = axum::Router::new()
            .route("/ok", post(|| async { "ok" }))
            .route(
                "/busy",
                post(|| async {
                    (
                        http::StatusCode::TOO_MANY_REQUESTS,
                        [(http::header::RETRY_AFTER, "7")],
                        "slow down",
                    )
                }),
            )
            .route(
                "/down",
                post(|| async { http::StatusCode::SERVICE_UNAVAILABLE }),
            )
            .route("/bad", post(|| async { http::StatusCode::BAD_REQUEST }))
            .route(
                "/moved",
                post(|| async { axum::response::Redirect::temporary("http://169.254.169.254/") }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let allow =
            std::sync::Arc::new(NetPolicy::new(&["127.0.0.1".to_string()], &[], &[]).unwrap());
        let c = client(&allow, Duration::from_secs(5));
        let req = |path: &str| OutboundRequest {
            method: "POST".into(),
            url: format!("http://127.0.0.1:{port}{path}?token=s3cret"),
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{}".to_vec(),
        };
        assert_eq!(send(&c, &allow, &req("/ok")).await, Outcome::Delivered);
        assert_eq!(
            send(&c, &allow, &req("/busy")).await,
            Outcome::Retry {
                error: "HTTP 429".into(),
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert!(matches!(
            send(&c, &allow, &req("/down")).await,
            Outcome::Retry { .. }
        ));
        assert!(matches!(
            send(&c, &allow, &req("/bad")).await,
            Outcome::GiveUp {
                reason: "rejected",
                ..
            }
        ));
        assert!(matches!(
            send(&c, &allow, &req("/moved")).await,
            Outcome::GiveUp {
                reason: "rejected",
                ..
            }
        ));
        // Nothing listens on port 9: a connect error, retried; its text has no URL (no secret).
        let mut down = req("/x");
        down.url = "http://127.0.0.1:9/x?token=s3cret".into();
        match send(&c, &allow, &down).await {
            Outcome::Retry { error, .. } => assert!(!error.contains("s3cret"), "{error}"),
            o => panic!("{o:?}"),
        }
        // The default policy refuses loopback: nothing is sent.
        let strict = std::sync::Arc::new(NetPolicy::default());
        let c2 = client(&strict, Duration::from_secs(5));
        assert!(matches!(
            send(&c2, &strict, &req("/ok")).await,
            Outcome::GiveUp {
                reason: "denied",
                ..
            }
        ));
    }
}

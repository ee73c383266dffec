//! The admin console: `/login`, `/manage` and their assets under `/ui/`, embedded in the binary at compile
//! time (no build step, no outside host). Pages and assets are public; the data APIs they call need a session.
//! Also mounts the console's own data route, `/api/logs/timeline`, behind the session check.

use std::sync::LazyLock;

use axum::extract::{Path, Query, Request};
use axum::middleware;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::AppState;

struct Asset {
    name: &'static str,
    ctype: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $ctype:literal) => {
        Asset {
            name: $name,
            ctype: $ctype,
            body: include_bytes!(concat!("../../ui/", $name)),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("common.js", "text/javascript; charset=utf-8"),
    asset!("i18n.js", "text/javascript; charset=utf-8"),
    asset!("login.js", "text/javascript; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

const LOGIN_HTML: &str = include_str!("../../ui/login.html");
const MANAGE_HTML: &str = include_str!("../../ui/manage.html");

/// One hash over every asset: pages link `/ui/NAME?v=HASH`, so a new binary busts browser caches while an
/// unchanged one lets them keep assets for a year.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut h = Sha256::new();
    for a in ASSETS {
        h.update(a.name.as_bytes());
        h.update(a.body);
    }
    hex::encode(&h.finalize()[..6])
});

static PAGES: LazyLock<(String, String)> = LazyLock::new(|| {
    (
        LOGIN_HTML.replace("__V__", &VERSION),
        MANAGE_HTML.replace("__V__", &VERSION),
    )
});

/// Scripts and styles only from this origin; media previews in the call log may show upstream image/video
/// URLs, so images and media may come from anywhere over http(s).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: http: https:; \
media-src 'self' blob: http: https:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/manage") }))
        .route("/login", get(|| async { page(&PAGES.0) }))
        .route("/manage", get(|| async { page(&PAGES.1) }))
        .route("/ui/{file}", get(asset))
        .merge(
            super::timeline::router().route_layer(middleware::from_fn_with_state(
                state,
                super::admin::require_session,
            )),
        )
}

fn page(html: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct AssetQuery {
    v: Option<String>,
}

async fn asset(Path(file): Path<String>, Query(q): Query<AssetQuery>, req: Request) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.name == file) else {
        return ApiError::not_found(format!("no asset named `{file}`")).into_response();
    };
    let etag = format!("\"{}\"", *VERSION);
    let cache = if q.v.as_deref() == Some(VERSION.as_str()) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.ctype));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, a.body).into_response()
}

#[cfg(test)]
mod tests {
    /// The Settings page labels each key from `i18n.js`; a key added to the settings without a label in both
    /// languages would show its raw name.
    #[test]
    fn every_setting_has_a_label_in_both_languages() {
        let i18n = include_str!("../../ui/i18n.js");
        let settings = serde_json::to_value(crate::config::Settings::default()).unwrap();
        let mut missing = Vec::new();
        for (section, keys) in settings.as_object().unwrap() {
            for key in keys.as_object().unwrap().keys() {
                let label = format!("'set.k.{section}.{key}'");
                if i18n.matches(&label).count() != 2 {
                    missing.push(label);
                }
            }
        }
        assert!(
            missing.is_empty(),
            "labels missing in zh or en: {missing:?}"
        );
    }
}

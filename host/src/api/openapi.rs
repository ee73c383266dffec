//! The OpenAPI 3 document served at `GET /openapi.json`, generated from the code: each handler carries a
//! `#[utoipa::path]` annotation next to it, request and answer bodies derive `ToSchema`, and [`ApiDoc`] lists
//! the handlers. To document a new route: annotate its handler (path, tag, `operation_id`, security, every
//! status it answers, with `ErrorBody` for errors) and add it to `paths(...)` below. The test at the bottom
//! reads every `.route(...)` in `src/api/` and fails for a route and method the document lacks.

use std::sync::LazyLock;

use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{admin, logs, openai, plugins, proxies, settings, timeline, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "grok2api",
        description = "OpenAI-compatible gateway in front of Grok. `/v1/*` takes the API key \
            (`grok.api_key`) as a bearer token; `/api/*` takes the admin session from `POST /api/login` as a \
            bearer token. Errors answer `{\"error\": {\"message\", \"type\", \"code\"}}`; admin business \
            failures answer HTTP 200 with `{\"success\": false, \"message\"}`."
    ),
    paths(
        super::health,
        super::metrics,
        serve,
        openai::chat_completions,
        openai::images_generations,
        openai::list_models,
        openai::get_model,
        admin::login,
        admin::logout,
        admin::list_tokens,
        admin::add_tokens,
        admin::delete_tokens,
        admin::set_tags,
        admin::set_note,
        admin::test_token,
        admin::all_tags,
        admin::stats,
        admin::storage_mode,
        logs::list,
        logs::clear,
        logs::stats,
        logs::models,
        logs::export,
        timeline::timeline,
        plugins::list,
        plugins::reload,
        plugins::enable,
        proxies::list,
        proxies::add,
        proxies::remove,
        proxies::assign,
        proxies::unassign,
        proxies::test,
        proxies::health_reset,
        proxies::refresh,
        settings::read,
        settings::update,
        webhooks::status,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "openai", description = "OpenAI-compatible routes"),
        (name = "admin", description = "Admin session and gateway facts"),
        (name = "tokens", description = "The token pool"),
        (name = "logs", description = "The call log"),
        (name = "proxies", description = "The egress proxy pool"),
        (name = "plugins", description = "WASM plugins"),
        (name = "settings", description = "Live settings"),
        (name = "webhooks", description = "Call-log webhook delivery"),
        (name = "service", description = "Health, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// The bearer schemes the annotations name in `security(...)`.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(description))
                    .build(),
            )
        };
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            bearer("The API key, `grok.api_key` (routes are open when it is empty)"),
        );
        components.add_security_scheme(
            "admin_session",
            bearer("An admin session token from `POST /api/login`"),
        );
        components.add_security_scheme("metrics_token", bearer("`global.metrics_token`, when set"));
    }
}

/// Built once: the document only changes with the binary.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"could not render the document: {e}\"}}"))
});

/// This document; no auth.
#[utoipa::path(get, path = "/openapi.json", tag = "service", operation_id = "openapi", responses(
    (status = 200, description = "The OpenAPI 3 document", content_type = "application/json", body = serde_json::Value),
))]
pub(super) async fn serve() -> Response {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The admin console's HTML pages and assets: not an API, so not in the document.
    const CONSOLE: &[&str] = &["/", "/login", "/manage", "/ui/{file}"];

    const METHODS: &[&str] = &["get", "post", "put", "delete", "patch", "head", "options"];

    /// `(path, method)` for every `.route("PATH", get(..).post(..))` in the given source.
    fn routes_in(src: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut rest = src;
        while let Some(i) = rest.find(".route(") {
            rest = &rest[i + ".route(".len()..];
            let Some(q) = rest.trim_start().strip_prefix('"') else {
                continue;
            };
            let Some(end) = q.find('"') else { break };
            let path = q[..end].to_string();
            // The method router: up to the parenthesis that closes `.route(`.
            let args = &q[end + 1..];
            let mut depth = 1;
            let mut close = args.len();
            for (k, c) in args.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            close = k;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let args = &args[..close];
            let bytes = args.as_bytes();
            for m in METHODS {
                let pat = format!("{m}(");
                let mut from = 0;
                while let Some(j) = args[from..].find(&pat) {
                    let at = from + j;
                    let before = at.checked_sub(1).map(|b| bytes[b]);
                    if !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
                        out.push((path.clone(), m.to_string()));
                    }
                    from = at + pat.len();
                }
            }
        }
        out
    }

    fn served_routes() -> BTreeSet<(String, String)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/api");
        let mut all = BTreeSet::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let src = std::fs::read_to_string(&path).unwrap();
                // Code only: no tests, no comments.
                let code = src.split("#[cfg(test)]").next().unwrap_or("");
                let code: Vec<&str> = code
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("//"))
                    .collect();
                all.extend(routes_in(&code.join("\n")));
            }
        }
        // `/v1` is matched by hand, not by an axum router (see `openai::serve`).
        all.extend(
            crate::api::openai::ROUTES
                .iter()
                .map(|(p, m)| (p.to_string(), m.to_string())),
        );
        all
    }

    fn document() -> serde_json::Value {
        serde_json::from_str(&DOCUMENT).unwrap()
    }

    #[test]
    fn the_route_scanner_reads_method_routers() {
        let src = r#"
            Router::new()
                .route("/a", get(list).delete(clear))
                .route(
                    "/b/{id}",
                    post(|| async { page(&X) }),
                )
                .route_layer(x)
        "#;
        assert_eq!(
            routes_in(src),
            vec![
                ("/a".into(), "get".into()),
                ("/a".into(), "delete".into()),
                ("/b/{id}".into(), "post".into()),
            ]
        );
    }

    #[test]
    fn every_served_route_is_documented() {
        let served = served_routes();
        // The scan must see the routers, or this test would pass on nothing.
        assert!(served.len() > 30, "only {} routes found", served.len());
        let doc = document();
        let missing: Vec<_> = served
            .iter()
            .filter(|(p, _)| !CONSOLE.contains(&p.as_str()))
            .filter(|(p, m)| doc["paths"][p][m].is_null())
            .collect();
        assert!(
            missing.is_empty(),
            "routes without an OpenAPI description (annotate the handler and add it to ApiDoc): {missing:?}"
        );
        // And nothing documented that is not served.
        for (p, item) in doc["paths"].as_object().unwrap() {
            for m in item.as_object().unwrap().keys() {
                assert!(
                    served.contains(&(p.clone(), m.clone())),
                    "documented but not served: {m} {p}"
                );
            }
        }
    }

    #[test]
    fn operations_have_unique_ids_and_known_security() {
        let doc = document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
        let mut ids = BTreeSet::new();
        for (p, item) in doc["paths"].as_object().unwrap() {
            for (m, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap().to_string();
                assert!(ids.insert(id.clone()), "duplicate operationId {id}");
                let security: Vec<String> = op["security"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .flat_map(|r| r.as_object().unwrap().keys().cloned())
                            .collect()
                    })
                    .unwrap_or_default();
                for s in &security {
                    assert!(schemes.contains_key(s), "{m} {p}: unknown scheme {s}");
                }
                let want = if p.starts_with("/v1/") {
                    Some("api_key")
                } else if p.starts_with("/api/") && p != "/api/login" {
                    Some("admin_session")
                } else {
                    None
                };
                if let Some(want) = want {
                    assert_eq!(security, vec![want.to_string()], "{m} {p}");
                }
            }
        }
    }

    #[test]
    fn bodies_are_derived_from_the_rust_types() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        // The error body every route shares, from `ErrorBody`.
        let detail = &schemas["ErrorDetail"];
        assert_eq!(
            detail["required"],
            serde_json::json!(["message", "type", "code"])
        );
        // The chat request names what the gateway reads and lets the rest through.
        let chat = &schemas["ChatCompletionRequest"];
        assert_eq!(chat["required"], serde_json::json!(["model"]));
        assert!(
            !chat["additionalProperties"].is_null() && chat["additionalProperties"] != false,
            "{chat}"
        );
        // The call-log entry never documents the secret it drops.
        assert!(schemas["CallLogEntry"]["properties"]["sso_full"].is_null());
    }
}

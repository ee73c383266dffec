//! The persisted shapes, in Grok2API's formats where one exists.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

/// `token.json`: `{"ssoNormal": {TOKEN: record}, "ssoSuper": {...}}`; a legacy `"sso"` key is merged into
/// `ssoNormal` on load.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TokenFile {
    #[serde(rename = "ssoNormal", default)]
    pub sso_normal: IndexMap<String, TokenRecord>,
    #[serde(rename = "ssoSuper", default)]
    pub sso_super: IndexMap<String, TokenRecord>,
    #[serde(rename = "sso", default, skip_serializing)]
    pub legacy_sso: IndexMap<String, TokenRecord>,
}

impl TokenFile {
    /// Folds the legacy `sso` pool into `ssoNormal` (records already in `ssoNormal` win).
    pub fn migrate_legacy(&mut self) -> usize {
        let legacy = std::mem::take(&mut self.legacy_sso);
        let n = legacy.len();
        for (k, v) in legacy {
            self.sso_normal.entry(k).or_insert(v);
        }
        n
    }
}

fn minus_one() -> i64 {
    -1
}
fn active() -> String {
    "active".into()
}

/// One token's record, with Grok2API's camelCase names (and its odd `heavyremainingQueries`).
/// Unknown keys are kept so a file written by another tool survives a load/save round trip.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    #[serde(default)]
    pub created_time: Option<i64>,
    #[serde(default = "minus_one")]
    pub remaining_queries: i64,
    #[serde(rename = "heavyremainingQueries", default = "minus_one")]
    pub heavy_remaining_queries: i64,
    #[serde(default = "active")]
    pub status: String,
    #[serde(default)]
    pub failed_count: u32,
    #[serde(default)]
    pub last_failure_time: Option<i64>,
    #[serde(default)]
    pub last_failure_reason: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub note: String,
    /// Until when (ms) the token rests after a 429; absent when not cooling down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_until: Option<i64>,
    /// Last successful use (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_time: Option<i64>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for TokenRecord {
    fn default() -> Self {
        TokenRecord {
            created_time: None,
            remaining_queries: -1,
            heavy_remaining_queries: -1,
            status: active(),
            failed_count: 0,
            last_failure_time: None,
            last_failure_reason: None,
            tags: Vec::new(),
            note: String::new(),
            cooldown_until: None,
            last_used_time: None,
            extra: serde_json::Map::new(),
        }
    }
}

/// An admin session. Only a hash of the session token is stored, so a copy of the store cannot log anyone in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionRecord {
    pub token_hash: String,
    pub expires_at_ms: i64,
}

/// One call-log entry: Grok2API's fields (so existing tools keep working) plus ours. Never holds a secret:
/// `sso` is masked and Grok2API's `sso_full` is read only to find the token id, then dropped.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(default)]
pub struct CallLogEntry {
    pub id: String,
    /// Unix ms when the request started.
    pub timestamp: i64,
    /// Masked token.
    pub sso: String,
    pub model: String,
    pub success: bool,
    pub status_code: u16,
    pub token_consumed: u32,
    /// Seconds, whole call.
    pub response_time: f64,
    pub error_message: String,
    /// Egress proxy, credentials masked; empty when direct.
    pub proxy_used: String,
    pub media_urls: Vec<String>,
    pub token_id: String,
    pub stream: bool,
    pub first_byte_ms: Option<u64>,
    /// Other token/proxy attempts made before the last one.
    pub retries: u32,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub client_ip: String,
    pub request_id: String,
    pub route: String,
    /// Grok2API's full secret, read from old files only to map it to `token_id`; never written.
    #[serde(skip_serializing)]
    pub sso_full: Option<String>,
}

impl Default for CallLogEntry {
    fn default() -> Self {
        CallLogEntry {
            id: String::new(),
            timestamp: 0,
            sso: String::new(),
            model: String::new(),
            success: true,
            status_code: 0,
            token_consumed: 1,
            response_time: 0.0,
            error_message: String::new(),
            proxy_used: String::new(),
            media_urls: Vec::new(),
            token_id: String::new(),
            stream: false,
            first_byte_ms: None,
            retries: 0,
            prompt_tokens: None,
            completion_tokens: None,
            client_ip: String::new(),
            request_id: String::new(),
            route: String::new(),
            sso_full: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grok2api_token_file_loads_and_keeps_unknown_keys() {
        let text = r#"{
          "ssoNormal": {"tokA": {"createdTime": 1737500000000, "remainingQueries": -1,
            "heavyremainingQueries": -1, "videoRemaining": -1, "videoLimit": -1, "status": "active",
            "failedCount": 0, "zeroCount": 0, "lastFailureTime": null, "lastFailureReason": null,
            "tags": ["a"], "note": "n"}},
          "sso": {"tokB": {"status": "expired"}, "tokA": {"note": "legacy"}}
        }"#;
        let mut f: TokenFile = serde_json::from_str(text).unwrap();
        assert_eq!(f.migrate_legacy(), 2);
        assert_eq!(f.sso_normal.len(), 2);
        assert_eq!(f.sso_normal["tokA"].note, "n");
        assert_eq!(f.sso_normal["tokB"].status, "expired");
        let a = &f.sso_normal["tokA"];
        assert_eq!(a.extra["zeroCount"], 0);
        let out = serde_json::to_value(&f).unwrap();
        assert_eq!(out["ssoNormal"]["tokA"]["videoLimit"], -1);
        assert_eq!(out["ssoNormal"]["tokA"]["heavyremainingQueries"], -1);
        assert!(out.get("sso").is_none());
    }
}

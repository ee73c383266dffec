//! The built-in generic JSON webhook (`global.log_webhook_url`): POSTs call-log entries as JSON, exactly as
//! they are stored (token masked, no secrets), at most [`MAX_PER_REQUEST`] per request.

use crate::hooks::{HookError, LogWebhook, OutboundRequest};
use crate::secret::Secret;
use crate::storage::CallLogEntry;

/// Entries per request: keeps bodies well under a megabyte.
pub const MAX_PER_REQUEST: usize = 200;

pub struct JsonWebhook {
    url: Secret,
}

impl JsonWebhook {
    pub fn new(url: Secret) -> JsonWebhook {
        JsonWebhook { url }
    }
}

impl LogWebhook for JsonWebhook {
    fn name(&self) -> &str {
        super::BUILTIN_SINK
    }

    fn deliver(&self, batch: &[CallLogEntry]) -> Result<Vec<OutboundRequest>, HookError> {
        batch
            .chunks(MAX_PER_REQUEST)
            .map(|chunk| {
                let body = serde_json::to_vec(&serde_json::json!({
                    "source": "grok2api",
                    "count": chunk.len(),
                    "entries": chunk,
                }))
                .map_err(|e| HookError::BadAnswer(e.to_string()))?;
                Ok(OutboundRequest {
                    method: "POST".into(),
                    url: self.url.expose().to_string(),
                    headers: vec![("content-type".into(), "application/json".into())],
                    body,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_entries_in_chunks_without_secrets() {
        let w = JsonWebhook::new(Secret::new("http://127.0.0.1:9/hook"));
        let entries: Vec<CallLogEntry> = (0..450)
            .map(|i| CallLogEntry {
                id: format!("e{i}"),
                request_id: format!("req-{i}"),
                sso: "abcdef****wxyz".into(),
                sso_full: Some("the-full-secret".into()),
                ..CallLogEntry::default()
            })
            .collect();
        let reqs = w.deliver(&entries).unwrap();
        assert_eq!(reqs.len(), 3);
        assert!(reqs
            .iter()
            .all(|r| r.method == "POST" && r.url.ends_with("/hook")));
        let v: serde_json::Value = serde_json::from_slice(&reqs[2].body).unwrap();
        assert_eq!(v["count"], 50);
        assert_eq!(v["entries"][0]["request_id"], "req-400");
        let all = String::from_utf8(reqs.iter().flat_map(|r| r.body.clone()).collect()).unwrap();
        assert!(!all.contains("the-full-secret"));
        assert!(w.deliver(&[]).unwrap().is_empty());
    }
}

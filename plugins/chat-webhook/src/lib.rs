//! Log webhook: posts call summaries to a chat (Slack, Discord, Feishu/Lark or DingTalk incoming webhooks),
//! several calls per message, optionally only the failed ones.

use std::fmt::Write;
use std::sync::OnceLock;

use grok2api_plugin_sdk::prelude::*;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize, Clone, Copy, PartialEq, Debug)]
#[serde(rename_all = "lowercase")]
enum Format {
    Slack,
    Discord,
    Feishu,
    Lark,
    Dingtalk,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    format: Format,
    /// The chat's incoming-webhook URL (the gateway's `global.webhook_deny` must not refuse it; a non-empty
    /// `global.webhook_allow` must list it).
    url: String,
    #[serde(default)]
    only_failures: bool,
    /// Calls per message; a batch with more becomes several messages.
    #[serde(default = "default_per_message")]
    max_per_message: usize,
    /// Optional first line of every message.
    #[serde(default)]
    title: Option<String>,
}

fn default_per_message() -> usize {
    20
}

static CONFIG: OnceLock<Config> = OnceLock::new();

struct ChatWebhook;

impl Plugin for ChatWebhook {
    fn info() -> PluginInfo {
        PluginInfo::new("chat-webhook", env!("CARGO_PKG_VERSION"), "call summaries to Slack, Discord, Feishu/Lark or DingTalk")
    }

    fn init(config: String) -> Result<(), String> {
        let c: Config = parse_config(&config)?;
        if !(c.url.starts_with("https://") || c.url.starts_with("http://")) {
            return Err("url must be an http(s) URL".into());
        }
        if c.max_per_message == 0 {
            return Err("max_per_message must be at least 1".into());
        }
        let _ = CONFIG.set(c);
        Ok(())
    }
}

fn line(c: &CallLog) -> String {
    let mut s = String::new();
    let mark = if c.success { "✅" } else { "❌" };
    let _ = write!(s, "{mark} {} {} {} ms", c.model, c.status_code, c.response_ms);
    if c.retries > 0 {
        let _ = write!(s, ", {} retries", c.retries);
    }
    let _ = write!(s, " (token {}", c.token_id);
    if let Some(p) = &c.proxy {
        let _ = write!(s, ", via {p}");
    }
    s.push(')');
    if let Some(e) = c.error.as_deref().filter(|e| !e.is_empty()) {
        let e: String = e.chars().take(200).collect();
        let _ = write!(s, ": {e}");
    }
    s
}

fn message(cfg: &Config, calls: &[&CallLog]) -> String {
    let failed = calls.iter().filter(|c| !c.success).count();
    let mut text = String::new();
    if let Some(t) = &cfg.title {
        text.push_str(t);
        text.push('\n');
    }
    let _ = writeln!(text, "grok2api: {} calls, {} failed", calls.len(), failed);
    for c in calls {
        text.push_str(&line(c));
        text.push('\n');
    }
    text.truncate(text.trim_end().len());
    text
}

fn body(format: Format, text: String) -> Value {
    match format {
        Format::Slack => json!({ "text": text }),
        // Discord rejects content over 2000 characters.
        Format::Discord => json!({ "content": text.chars().take(2000).collect::<String>() }),
        Format::Feishu | Format::Lark => json!({ "msg_type": "text", "content": { "text": text } }),
        Format::Dingtalk => json!({ "msgtype": "text", "text": { "content": text } }),
    }
}

impl LogWebhookPlugin for ChatWebhook {
    fn deliver(batch: Vec<CallLog>) -> Vec<OutboundRequest> {
        let Some(cfg) = CONFIG.get() else {
            return Vec::new();
        };
        let calls: Vec<&CallLog> = batch.iter().filter(|c| !cfg.only_failures || !c.success).collect();
        calls
            .chunks(cfg.max_per_message)
            .map(|chunk| OutboundRequest::post_json(&cfg.url, &body(cfg.format, message(cfg, chunk))))
            .collect()
    }
}

export_log_webhook!(ChatWebhook);

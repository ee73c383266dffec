//! Reading what the call log wants from an answer — media URLs and token usage — without changing it.
//! Non-streamed answers are parsed once; streamed ones are scanned event by event as they pass.

use std::sync::LazyLock;

use memchr::memmem::{Finder, FinderRev};
use serde::Deserialize;

/// What was found in an answer.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Findings {
    pub media_urls: Vec<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Stream only: an error event the upstream sent instead of (or after) content.
    pub stream_error: Option<String>,
    /// Stream only: a `finish_reason` or `[DONE]` was seen, i.e. the answer is complete.
    pub stream_complete: bool,
}

/// The most answer text a stream scan keeps to look for image links in.
const MAX_SCANNED_TEXT: usize = 1 << 20;

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

/// A whole answer. `C` is how a message's content is read: borrowed raw JSON, scanned where it lies in the
/// body, or skipped (`IgnoredAny`) when it cannot hold media; either way the answer must have this shape.
#[derive(Deserialize)]
#[serde(bound(deserialize = "C: Deserialize<'de>"))]
struct Answer<C> {
    #[serde(default)]
    choices: Vec<Choice<C>>,
    #[serde(default)]
    data: Vec<ImageData>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "C: Deserialize<'de>"))]
struct Choice<C> {
    message: Option<Message<C>>,
}

#[derive(Deserialize)]
#[serde(bound(deserialize = "C: Deserialize<'de>"))]
struct Message<C> {
    content: Option<C>,
}

#[derive(Deserialize)]
struct ImageData {
    url: Option<String>,
}

impl Findings {
    fn take_usage(&mut self, u: Option<Usage>) {
        if let Some(u) = u {
            self.prompt_tokens = u.prompt_tokens.or(self.prompt_tokens);
            self.completion_tokens = u.completion_tokens.or(self.completion_tokens);
        }
    }

    fn push_url(&mut self, url: &str) {
        let url = url.trim();
        if !url.is_empty() && !self.media_urls.iter().any(|u| u == url) {
            self.media_urls.push(url.to_string());
        }
    }
}

static MARKDOWN_IMAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"!["));
static URL_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"url\""));
static UNICODE_ESCAPE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\\u"));

/// Scans a whole JSON answer (chat completion or image generation).
///
/// Most answers hold no media: no `![` (a markdown image), no `"url"` key (image data, `image_url` parts) and
/// no `\u` escape (the only escape that could spell either). Those are searched for first; without them only
/// the top-level `usage` is read, and the text is not parsed at all. Parsing it was 13.6 k of 59.3 k
/// instructions per chat request with the call log on (three passes: raw JSON, UTF-8, unescaping), and
/// still 9.4 k with serde skipping it (~3 instructions a byte).
///
/// On a well-formed answer both ways find the same (the fuzz target `sse_scanner` compares them). On a body
/// that is not one (malformed JSON, text that is not UTF-8, a duplicate key, a field of the wrong type) the
/// full parse gives up, while the shortcut may still read a usage.
pub fn scan_json(body: &[u8]) -> Findings {
    if MARKDOWN_IMAGE.find(body).is_some()
        || URL_KEY.find(body).is_some()
        || UNICODE_ESCAPE.find(body).is_some()
    {
        return scan_json_parsed(body);
    }
    let mut f = Findings::default();
    if let Some(value) = top_level_value(body, b"usage") {
        let mut de = serde_json::Deserializer::from_slice(value);
        if let Ok(u) = Option::<Usage>::deserialize(&mut de) {
            f.take_usage(u);
        }
    }
    f
}

/// Where the value of the top-level object's key `key` starts (the rest of the body from there), found
/// without parsing: strings are skipped with `memchr2`, and the few bytes between them are stepped through
/// to track nesting and keys. `None`: no object, no such key at its top level, or the body ends first. A key
/// is compared as written (escapes are not decoded).
fn top_level_value<'a>(body: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut i = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[i] != b'{' {
        return None;
    }
    let mut depth = 0usize;
    // At depth 1: the next string is a key (after `{` or `,`), not a value.
    let mut key_next = false;
    while let Some(&b) = body.get(i) {
        match b {
            b'"' => {
                let end = string_end(body, i + 1)?;
                if depth == 1 && key_next {
                    let colon = end
                        + 1
                        + body
                            .get(end + 1..)?
                            .iter()
                            .position(|b| !b.is_ascii_whitespace())?;
                    if body[colon] != b':' {
                        return None;
                    }
                    if &body[i + 1..end] == key {
                        return body.get(colon + 1..);
                    }
                    key_next = false;
                    i = colon;
                } else {
                    i = end;
                }
            }
            b'{' | b'[' => {
                depth += 1;
                key_next = depth == 1;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1).filter(|&d| d > 0)?;
            }
            b',' if depth == 1 => key_next = true,
            _ => {}
        }
        i += 1;
    }
    None
}

/// The index of the quote that ends the string whose text starts at `i`.
fn string_end(body: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i += memchr::memchr2(b'"', b'\\', body.get(i..)?)?;
        if body[i] == b'"' {
            return Some(i);
        }
        // The escaped byte is skipped; the hex digits of `\u` are plain bytes.
        i += 2;
    }
}

/// Whether `body` is a well-formed answer: UTF-8 JSON of the shape both ways of [`scan_json`] read (serde
/// does not check the UTF-8 of strings it skips).
#[doc(hidden)]
pub fn is_answer(body: &[u8]) -> bool {
    std::str::from_utf8(body).is_ok()
        && serde_json::from_slice::<Answer<serde::de::IgnoredAny>>(body).is_ok()
}

/// [`scan_json`] without its shortcut: the whole answer is parsed.
#[doc(hidden)]
pub fn scan_json_parsed(body: &[u8]) -> Findings {
    let mut f = Findings::default();
    let Ok(a) = serde_json::from_slice::<Answer<&serde_json::value::RawValue>>(body) else {
        return f;
    };
    f.take_usage(a.usage);
    for d in a.data {
        if let Some(u) = d.url {
            f.push_url(&u);
        }
    }
    for c in a.choices {
        let Some(raw) = c.message.and_then(|m| m.content) else {
            continue;
        };
        // Text (the usual case): searched in place, unescaped only when it has escapes. Parts: as a tree.
        if raw.get().starts_with('"') {
            if let Ok(text) = serde_json::from_str::<std::borrow::Cow<str>>(raw.get()) {
                for u in markdown_images(&text) {
                    f.push_url(u);
                }
            }
        } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(raw.get()) {
            scan_content(&v, &mut f, &mut String::new());
        }
    }
    f
}

/// Text content is searched for markdown images; `image_url` parts give their URL directly.
fn scan_content(content: &serde_json::Value, f: &mut Findings, text: &mut String) {
    match content {
        serde_json::Value::String(s) => {
            for u in markdown_images(s) {
                f.push_url(u);
            }
            if text.len() < MAX_SCANNED_TEXT {
                text.push_str(s);
            }
        }
        serde_json::Value::Array(parts) => {
            for p in parts {
                if let Some(u) = p.pointer("/image_url/url").and_then(|u| u.as_str()) {
                    f.push_url(u);
                } else if let Some(t) = p.get("text").and_then(|t| t.as_str()) {
                    for u in markdown_images(t) {
                        f.push_url(u);
                    }
                }
            }
        }
        _ => {}
    }
}

/// URLs of `![alt](url)` and `![alt](url "title")`.
pub fn markdown_images(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = s;
    // memchr's finder, not `str::find`: this runs over every answer while the call log is on, and the
    // std two-way search cost ~7 k instructions per 1 KB answer.
    while let Some(i) = memchr::memmem::find(rest.as_bytes(), b"![") {
        rest = &rest[i + 2..];
        let Some(close) = rest.find("](") else { break };
        let after = &rest[close + 2..];
        let Some(end) = after.find(')') else { break };
        let inner = after[..end].trim();
        let url = inner.split_whitespace().next().unwrap_or("");
        let url = url.trim_start_matches('<').trim_end_matches('>');
        if url.starts_with("http://") || url.starts_with("https://") || url.starts_with("data:") {
            out.push(url);
        }
        rest = &after[end..];
    }
    out
}

/// One SSE event, read with borrowed strings: a stream has many, so no `Value` trees are built.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(default, borrow)]
    choices: Vec<EventChoice<'a>>,
    usage: Option<Usage>,
    #[serde(borrow)]
    error: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize)]
struct EventChoice<'a> {
    #[serde(borrow)]
    delta: Option<EventContent<'a>>,
    #[serde(borrow)]
    message: Option<EventContent<'a>>,
    #[serde(borrow)]
    finish_reason: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct EventContent<'a> {
    #[serde(borrow)]
    content: Option<&'a serde_json::value::RawValue>,
}

/// Scans an SSE stream as it passes: splits events across chunk boundaries, collects the streamed text and
/// the usage chunk, and finds image links at the end (a link may be split over several deltas).
#[derive(Default)]
pub struct SseScanner {
    line: Vec<u8>,
    text: String,
    findings: Findings,
    /// Only whether the stream completed or failed (the call log is off, so media and usage go nowhere).
    outcome_only: bool,
}

// Finders are built once: building one per event cost more than the search.
static ERROR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\""));
static FINISH: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"finish_reason\""));
/// The data of the line that ends an OpenAI stream (`data: [DONE]`).
const END_MARKER: &[u8] = b"[DONE]";
static DONE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(END_MARKER));
static DONE_REV: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(END_MARKER));

/// An event line's data: what follows `data:`, without the whitespace around it (`None`: another field).
fn line_data(line: &[u8]) -> Option<&[u8]> {
    line.strip_prefix(b"data:").map(<[u8]>::trim_ascii)
}

/// Whether an event can end the stream or carry an error: an `"error"` key, or a `finish_reason` that is not
/// `null`. Parsing every event was most of a streamed call's instructions with the call log off.
fn may_end_stream(data: &[u8]) -> bool {
    ERROR.find(data).is_some() || finish_set(data)
}

/// A `finish_reason` key in the event whose value is not `null`.
fn finish_set(data: &[u8]) -> bool {
    FINISH
        .find_iter(data)
        .any(|i| finish_is_set(&data[i + FINISH.needle().len()..]))
}

/// What follows a `"finish_reason"` key (up to the end of its line) gives it a value other than `null`.
fn finish_is_set(after_key: &[u8]) -> bool {
    let rest = after_key.trim_ascii_start();
    let value = rest.strip_prefix(b":").unwrap_or(rest).trim_ascii_start();
    !value.starts_with(b"null")
}

/// Where, in `block` (whole lines), the first line starts that [`SseScanner::line_done`] would act on in
/// outcome-only mode: one with `"error"`, a set `finish_reason` or `[DONE]` (`None`: no such line). Three
/// searches over the block instead of two per event: the upstream's events mostly arrive many per read,
/// and a stream's outcome is in its last ones. It may name a line too early, never too late.
///
/// When the block's last `[DONE]` is a `data: [DONE]` line, the `finish_reason`s before it are not looked
/// at: the stream is complete whatever they say, and only an `"error"` (found by its own search) could still
/// change the outcome. A whole stream read at once has 20 `"finish_reason": null` to step through otherwise
/// (7 % of a streamed request's instructions at c=64). `[DONE]` is searched from the end, where it is.
fn first_line_that_may_end(block: &[u8]) -> Option<usize> {
    // Otherwise the first `[DONE]` counts, whatever it is: an end marker before a text `[DONE]` must not be
    // skipped.
    let (done, complete) = match DONE_REV.rfind(block) {
        Some(at) if is_done_line(block, at) => (Some(at), true),
        Some(_) => (DONE.find(block), false),
        None => (None, false),
    };
    let mut hit = match (ERROR.find(block), done) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let before = match complete {
        true => &[][..],
        false => &block[..hit.unwrap_or(block.len())],
    };
    for i in FINISH.find_iter(before) {
        let after = &block[i + FINISH.needle().len()..];
        let line_end = memchr::memchr(b'\n', after).unwrap_or(after.len());
        if finish_is_set(&after[..line_end]) {
            hit = Some(i);
            break;
        }
    }
    hit.map(|h| memchr::memrchr(b'\n', &block[..h]).map_or(0, |j| j + 1))
}

/// Whether the `[DONE]` at `at` in `block` is the stream's end marker, not text inside an event.
fn is_done_line(block: &[u8], at: usize) -> bool {
    let start = memchr::memrchr(b'\n', &block[..at]).map_or(0, |j| j + 1);
    let end = memchr::memchr(b'\n', &block[at..]).map_or(block.len(), |j| at + j);
    line_data(&block[start..end]) == Some(END_MARKER)
}

/// The text of an event that is nothing but a text delta — one `"content": "<string>"`, no usage, no error,
/// no finish — read without parsing the event (`None`: parse it). Parsing every event with serde was about
/// half of a streamed call's instructions with the call log on; most events are such deltas. The pattern
/// cannot match inside a JSON string (a quote there is escaped), so it is a key; an event with two `content`
/// keys (several choices, logprobs) or a non-string content is parsed in full.
fn plain_text_delta(data: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    static CONTENT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"content\":"));
    static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
    let at = CONTENT.find(data)?;
    let rest = &data[at + CONTENT.needle().len()..];
    if CONTENT.find(rest).is_some() || USAGE.find(data).is_some() || may_end_stream(data) {
        return None;
    }
    let rest = rest.trim_ascii_start();
    if rest.first() != Some(&b'"') {
        return None;
    }
    // The closing quote: the first one not escaped by a backslash.
    let mut i = 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', rest.get(i..)?)?;
        if rest[i] == b'"' {
            break;
        }
        i += 2;
    }
    serde_json::from_slice(&rest[..=i]).ok()
}

impl SseScanner {
    /// A scanner that reads only how the stream ended ([`Findings::stream_complete`] and `stream_error`).
    pub fn outcome_only() -> SseScanner {
        SseScanner {
            outcome_only: true,
            ..SseScanner::default()
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        // Outcome only, at a line boundary: the whole lines before the first that can matter are skipped.
        if self.outcome_only && self.line.is_empty() {
            if let Some(last) = memchr::memrchr(b'\n', chunk) {
                let block = &chunk[..=last];
                rest = &chunk[first_line_that_may_end(block).unwrap_or(block.len())..];
            }
        }
        while let Some(i) = memchr::memchr(b'\n', rest) {
            let (part, tail) = rest.split_at(i + 1);
            rest = tail;
            if self.line.is_empty() {
                self.line_done(part);
            } else {
                self.line.extend_from_slice(part);
                let line = std::mem::take(&mut self.line);
                self.line_done(&line);
            }
        }
        // Incomplete line: keep it (bounded) until the rest arrives.
        if !rest.is_empty() && self.line.len() + rest.len() <= MAX_SCANNED_TEXT {
            self.line.extend_from_slice(rest);
        }
    }

    fn line_done(&mut self, line: &[u8]) {
        let Some(data) = line_data(line) else {
            return;
        };
        if data == END_MARKER {
            self.findings.stream_complete = true;
            return;
        }
        if data.is_empty() {
            return;
        }
        if self.outcome_only {
            // Without an `"error"` key only a set `finish_reason` matters, and finding it is enough: parsing
            // the event to read it again was most of the scan's cost at a stream's end.
            if ERROR.find(data).is_none() {
                self.findings.stream_complete |= finish_set(data);
                return;
            }
        }
        if !self.outcome_only {
            if let Some(text) = plain_text_delta(data) {
                self.push_text(&text);
                return;
            }
        }
        let Ok(ev) = serde_json::from_slice::<Event>(data) else {
            return;
        };
        if !self.outcome_only {
            self.findings.take_usage(ev.usage);
        }
        if let Some(err) = ev.error {
            let v: serde_json::Value = serde_json::from_str(err.get()).unwrap_or_default();
            let msg = v
                .get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            self.findings.stream_error = Some(msg.chars().take(300).collect());
        }
        for c in ev.choices {
            if c.finish_reason.is_some() {
                self.findings.stream_complete = true;
            }
            if self.outcome_only {
                continue;
            }
            let Some(raw) = c.delta.or(c.message).and_then(|m| m.content) else {
                continue;
            };
            if raw.get().starts_with('"') {
                if let Ok(text) = serde_json::from_str::<std::borrow::Cow<str>>(raw.get()) {
                    self.push_text(&text);
                }
            } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(raw.get()) {
                scan_content(&v, &mut self.findings, &mut self.text);
            }
        }
    }

    /// Answer text is kept (bounded) to look for image links that span several deltas.
    fn push_text(&mut self, text: &str) {
        if self.text.len() < MAX_SCANNED_TEXT {
            self.text.push_str(text);
        }
    }

    pub fn finish(mut self) -> Findings {
        let text = std::mem::take(&mut self.text);
        for u in markdown_images(&text) {
            self.findings.push_url(u);
        }
        self.findings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_answer() {
        let f = scan_json(
            br#"{"created":1,"data":[{"url":"https://x/a.png"},{"url":"https://x/b.png"}]}"#,
        );
        assert_eq!(f.media_urls, vec!["https://x/a.png", "https://x/b.png"]);
    }

    #[test]
    fn chat_answer_with_markdown_and_usage() {
        let body = br#"{"choices":[{"message":{"role":"assistant","content":"here ![cat](https://m/cat.png \"t\") and ![x](not-a-url)"}}],
            "usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;
        let f = scan_json(body);
        assert_eq!(f.media_urls, vec!["https://m/cat.png"]);
        assert_eq!((f.prompt_tokens, f.completion_tokens), (Some(5), Some(7)));
        // Without escapes the text is read in place; a message with null content is skipped.
        let body = br#"{"choices":[{"message":{"content":null}},{"message":{"content":"![a](https://m/b.png)"}}]}"#;
        assert_eq!(scan_json(body).media_urls, vec!["https://m/b.png"]);
    }

    /// The shortcut for answers without media finds what the full parse finds, and does not take answers whose
    /// media are spelled with `\u` escapes.
    #[test]
    fn shortcut_agrees_with_the_full_parse() {
        let usage = r#""usage":{"prompt_tokens":3,"completion_tokens":4}"#;
        let answers: Vec<(String, Vec<&str>)> = vec![
            (
                format!(r#"{{"choices":[{{"message":{{"content":"plain text"}}}}],{usage}}}"#),
                vec![],
            ),
            (
                format!(
                    r#"{{"choices":[{{"message":{{"content":"![a](https://m/a.png)"}}}}],{usage}}}"#
                ),
                vec!["https://m/a.png"],
            ),
            (
                format!(
                    r#"{{"choices":[{{"message":{{"content":"\u0021[a](https://m/b.png)"}}}}],{usage}}}"#
                ),
                vec!["https://m/b.png"],
            ),
            (
                format!(
                    r#"{{"choices":[{{"message":{{"content":"!\u005ba](https://m/c.png)"}}}}],{usage}}}"#
                ),
                vec!["https://m/c.png"],
            ),
            (
                format!(r#"{{"data":[{{"ur\u006c":"https://m/d.png"}}],{usage}}}"#),
                vec!["https://m/d.png"],
            ),
            (
                format!(r#"{{"data":[{{"url":"https://m/e.png"}}],{usage}}}"#),
                vec!["https://m/e.png"],
            ),
            (
                format!(r#"{{"choices":[{{"message":{{"content":{{"not":"text"}}}}}}],{usage}}}"#),
                vec![],
            ),
            (
                format!(r#"{{"choices":[{{"message":null}}, {{}}],"data":[],{usage}}}"#),
                vec![],
            ),
            // Not an answer's shape, or not JSON: nothing, either way.
            (format!(r#"{{"choices":5,{usage}}}"#), vec![]),
            (format!(r#"{{"data":[1],{usage}}}"#), vec![]),
            (format!(r#"{{{usage},{usage}}}"#), vec![]),
            (format!(r#"{{"choices":[],{usage}"#), vec![]),
        ];
        for (body, urls) in &answers {
            let (quick, full) = (
                scan_json(body.as_bytes()),
                scan_json_parsed(body.as_bytes()),
            );
            assert_eq!(quick.media_urls, *urls, "{body}");
            if is_answer(body.as_bytes()) {
                assert_eq!(quick, full, "{body}");
                assert_eq!(quick.prompt_tokens, Some(3), "{body}");
            }
        }
        // Only the top level's usage counts, wherever it is and however the text around it is written.
        let usage_of = |body: &str| scan_json(body.as_bytes()).prompt_tokens;
        let cases = [
            (r#"{"usage":{"prompt_tokens":1}}"#, Some(1)),
            (
                r#" { "a" : "x\"usage\":{}" , "b":[{"usage":{"prompt_tokens":2}}], "usage" :{"prompt_tokens":3} } "#,
                Some(3),
            ),
            (
                r#"{"a":{"usage":{"prompt_tokens":2}},"c":"\\","usage":{"prompt_tokens":4}}"#,
                Some(4),
            ),
            (r#"{"a":"usage","b":["usage",{"usage":1}]}"#, None),
            (r#"{"usage":null}"#, None),
            (r#"[{"usage":{"prompt_tokens":1}}]"#, None),
            (r#"{"a":"unterminated, "usage":{"prompt_tokens":1}}"#, None),
            (r#"{"a":1}}, "usage":{"prompt_tokens":1}}"#, None),
            (r#"{"usage""#, None),
            ("", None),
        ];
        // Text that is not UTF-8 (found by the fuzz target): not a well-formed answer, so the two may differ.
        let body = b"{\"choices\":[{\"message\":{\"content\":\"te\x88\"}}],\"usage\":{\"prompt_tokens\":1}}";
        assert!(!is_answer(body));
        assert_eq!(scan_json(body).prompt_tokens, Some(1));
        assert_eq!(scan_json_parsed(body).prompt_tokens, None);
        for (body, want) in cases {
            assert_eq!(usage_of(body), want, "{body}");
            if is_answer(body.as_bytes()) {
                assert_eq!(
                    usage_of(body),
                    scan_json_parsed(body.as_bytes()).prompt_tokens
                );
            }
        }
    }

    #[test]
    fn image_url_parts() {
        let body = br#"{"choices":[{"message":{"content":[{"type":"image_url","image_url":{"url":"https://m/p.jpg"}},{"type":"text","text":"![a](https://m/q.jpg)"}]}}]}"#;
        assert_eq!(
            scan_json(body).media_urls,
            vec!["https://m/p.jpg", "https://m/q.jpg"]
        );
    }

    #[test]
    fn stream_with_split_events_and_split_link() {
        let events = [
            "data: {\"choices\":[{\"delta\":{\"content\":\"look ![im\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"g](https://m/d\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"raw.png) done\"}}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n",
        ]
        .concat();
        // Feed in awkward pieces to cross every boundary.
        let mut s = SseScanner::default();
        for piece in events.as_bytes().chunks(7) {
            s.feed(piece);
        }
        let f = s.finish();
        assert!(f.stream_complete && f.stream_error.is_none());
        assert_eq!(f.media_urls, vec!["https://m/draw.png"]);
        assert_eq!((f.prompt_tokens, f.completion_tokens), (Some(3), Some(4)));
    }

    #[test]
    fn outcome_only_sees_the_end_and_errors_but_skips_content() {
        let events = "data: {\"choices\":[{\"delta\":{\"content\":\"![a](https://m/a.png)\"},\"finish_reason\": null}]}\n\n";
        let mut s = SseScanner::outcome_only();
        s.feed(events.as_bytes());
        let f = s.finish();
        assert!(!f.stream_complete && f.media_urls.is_empty());

        let mut s = SseScanner::outcome_only();
        s.feed(events.as_bytes());
        s.feed(b"data: {\"choices\":[{\"delta\":{},\"finish_reason\" : \"stop\"}]}\n\n");
        assert!(s.finish().stream_complete);

        let mut s = SseScanner::outcome_only();
        s.feed(b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n");
        let f = s.finish();
        assert_eq!(f.stream_error.as_deref(), Some("overloaded"));
        assert!(!f.stream_complete);

        let mut s = SseScanner::outcome_only();
        s.feed(b"data: [DONE]\n\n");
        assert!(s.finish().stream_complete);
    }

    /// Skipping whole lines in a block decides exactly as reading each line does, wherever reads split.
    #[test]
    fn outcome_only_skips_lines_without_changing_the_outcome() {
        let delta =
            "data: {\"choices\":[{\"delta\":{\"content\":\"x\"},\"finish_reason\":null}]}\n\n";
        let streams = [
            format!("{delta}{delta}data: {{\"choices\":[{{\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\n{delta}"),
            format!("{delta}{delta}data: [DONE]\n\n"),
            format!("{delta}data: {{\"error\":{{\"message\":\"first\"}}}}\n\n{delta}data: {{\"error\":{{\"message\":\"last\"}}}}\n\n"),
            format!("{delta}{delta}"),
            // A key at a line's end: set as far as the line tells, whatever the next line holds.
            format!("{delta}data: {{\"finish_reason\"\nnull\n\n{delta}"),
            format!(": comment [DONE]\n{delta}data: {{\"finish_reason\" : null, \"finish_reason\": \"length\"}}\r\n\r\n"),
        ];
        for stream in &streams {
            let line_by_line = {
                let mut s = SseScanner::outcome_only();
                for line in stream.split_inclusive('\n') {
                    s.line_done(line.as_bytes());
                }
                s.finish()
            };
            for step in 1..=stream.len() {
                let mut s = SseScanner::outcome_only();
                for piece in stream.as_bytes().chunks(step) {
                    s.feed(piece);
                }
                let f = s.finish();
                assert_eq!(
                    (f.stream_complete, &f.stream_error),
                    (line_by_line.stream_complete, &line_by_line.stream_error),
                    "{stream:?} in pieces of {step}"
                );
            }
        }
    }

    /// On well-formed events, outcome-only mode (which finds a set `finish_reason` without parsing the event)
    /// ends where a full scan does.
    #[test]
    fn outcome_only_agrees_with_the_full_scan() {
        let delta = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"},\"finish_reason\":null}]}\n\n";
        let stop =
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\": \"stop\"}]}\n\n";
        let error = "data: {\"error\":{\"message\":\"overloaded\",\"finish_reason\":\"x\"}}\n\n";
        let said_done =
            "data: {\"choices\":[{\"delta\":{\"content\":\"[DONE]\"},\"finish_reason\":null}]}\n\n";
        for stream in [
            format!("{delta}{delta}{stop}data: [DONE]\n\n"),
            format!("{delta}{stop}"),
            format!("{delta}{delta}"),
            format!("{delta}{error}"),
            format!("{delta}{stop}{error}"),
            format!("{delta}data: [DONE]\n\n"),
            // An error and a [DONE] in one read, either way round: the finish_reasons are skipped.
            format!("{delta}{error}{stop}data: [DONE]\n\n"),
            format!("{delta}{stop}data: [DONE]\n\n{error}"),
            // "[DONE]" as text is no end marker: the finish_reason before it still counts.
            format!("{delta}{stop}{said_done}"),
            format!("{said_done}{delta}"),
            // The end marker, then "[DONE]" as text (found by the fuzz target sse_scanner).
            format!("{delta}data: [DONE]\n\n{said_done}"),
            format!("{delta}data: [DONE]\n\nada: [DONE]\n\n"),
        ] {
            let mut full = SseScanner::default();
            full.feed(stream.as_bytes());
            let full = full.finish();
            // Whole, and cut at every byte (a [DONE] then lands in one read or the next).
            for cut in 0..=stream.len() {
                let mut outcome = SseScanner::outcome_only();
                outcome.feed(&stream.as_bytes()[..cut]);
                outcome.feed(&stream.as_bytes()[cut..]);
                let outcome = outcome.finish();
                assert_eq!(
                    (outcome.stream_complete, &outcome.stream_error),
                    (full.stream_complete, &full.stream_error),
                    "{stream} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn stream_error_event_and_early_end() {
        let mut s = SseScanner::default();
        s.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"error\":{\"message\":\"overloaded\"}}\n\n");
        let f = s.finish();
        assert_eq!(f.stream_error.as_deref(), Some("overloaded"));
        assert!(!f.stream_complete);
    }

    /// The shortcut reads exactly the text a full parse of the event reads, or leaves the event to it.
    #[test]
    fn plain_text_deltas_read_as_a_full_parse_does() {
        let full = |data: &str| -> Option<String> {
            let ev: Event = serde_json::from_str(data).ok()?;
            let raw = ev.choices.into_iter().next()?.delta?.content?;
            serde_json::from_str::<String>(raw.get()).ok()
        };
        let taken = [
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"tok0 "},"finish_reason":null}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"delta":{"content":"say \"hi\" \\ back\\"}}]}"#,
            r#"{"choices":[{"delta":{"content": "caf\u00e9 ![a](https://m/a.png)\n"}}]}"#,
            r#"{"choices":[{"delta":{"reasoning_content":"hmm","content":"x"}}]}"#,
            r#"{"choices":[{"delta":{"content":"\\\\"}}]}"#,
        ];
        for data in taken {
            let fast = plain_text_delta(data.as_bytes());
            assert!(fast.is_some(), "{data}");
            assert_eq!(fast.map(|t| t.into_owned()), full(data), "{data}");
        }
        let parsed = [
            // Usage, error, finish: the full parse decides.
            r#"{"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":1}}"#,
            r#"{"choices":[{"delta":{"content":"a"},"finish_reason":"stop"}]}"#,
            r#"{"error":{"message":"x"},"choices":[{"delta":{"content":"a"}}]}"#,
            // Two choices, logprobs, content parts, null, no content.
            r#"{"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}}]}"#,
            r#"{"choices":[{"delta":{"content":"a"},"logprobs":{"content":[]}}]}"#,
            r#"{"choices":[{"delta":{"content":[{"type":"text","text":"a"}]}}]}"#,
            r#"{"choices":[{"delta":{"content":null}}]}"#,
            r#"{"choices":[{"delta":{"role":"assistant"}}]}"#,
            // Unterminated string.
            r#"{"choices":[{"delta":{"content":"abc\"#,
        ];
        for data in parsed {
            assert_eq!(plain_text_delta(data.as_bytes()), None, "{data}");
        }
    }

    #[test]
    fn garbage_is_ignored() {
        assert_eq!(scan_json(b"not json"), Findings::default());
        let mut s = SseScanner::default();
        s.feed(b"data: {broken\n\n: comment\n");
        assert_eq!(s.finish(), Findings::default());
    }
}

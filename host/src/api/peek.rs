//! What the gateway reads from a `/v1` request body: `model` and `stream`, with the whole body checked to be
//! JSON (a body that is not gets a 400, never a trip to the upstream).
//!
//! `serde_json` does this at about 9 instructions a byte, a tenth of a chat request's instructions: it goes
//! over every string a byte or a word at a time. [`quick`] reads the usual body at a fraction of that (strings
//! found with `memchr`, then checked for control characters in a loop the compiler vectorises), and answers
//! only when it is sure: for a body that it accepts, `serde_json` accepts it too and reads the same two
//! values. Anything else (an error, escapes in a key or in the model, a repeated field, a non-object, deep
//! nesting) goes to `serde_json`, which gives the answer and its error message. The fuzz target `peek`
//! holds the two to that.

use serde::Deserialize;

/// The two fields, as `serde_json` reads them into [`Peek`].
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Peek {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
}

/// `serde_json` for the body, unless [`quick`] is sure of it.
pub fn peek(body: &[u8]) -> Result<Peek, serde_json::Error> {
    match quick(body) {
        Some(p) => Ok(p),
        None => serde_json::from_slice(body),
    }
}

/// Deeper values go to `serde_json` (which has no limit for values it skips).
const MAX_DEPTH: usize = 64;

/// The body's two fields when it is a JSON object this scan is sure about; `None`: ask `serde_json`.
pub fn quick(body: &[u8]) -> Option<Peek> {
    let mut s = Scan { b: body, i: 0 };
    let mut peek = Peek::default();
    let (mut seen_model, mut seen_stream) = (false, false);
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        s.i += 1;
    } else {
        loop {
            s.eat(b'"')?;
            let key = s.string()?;
            // A key serde_json would unescape or check as UTF-8 is left to it.
            if key.has_escape || !key.text.is_ascii() {
                return None;
            }
            s.ws();
            s.eat(b':')?;
            s.ws();
            match key.text {
                b"model" => {
                    if std::mem::replace(&mut seen_model, true) {
                        return None;
                    }
                    peek.model = match s.peek()? {
                        b'"' => {
                            s.i += 1;
                            let v = s.string()?;
                            if v.has_escape {
                                return None;
                            }
                            Some(std::str::from_utf8(v.text).ok()?.to_string())
                        }
                        _ => {
                            s.literal(b"null")?;
                            None
                        }
                    };
                }
                b"stream" => {
                    if std::mem::replace(&mut seen_stream, true) {
                        return None;
                    }
                    peek.stream = match s.peek()? {
                        b't' => s.literal(b"true").map(|()| Some(true))?,
                        b'f' => s.literal(b"false").map(|()| Some(false))?,
                        _ => s.literal(b"null").map(|()| None)?,
                    };
                }
                _ => s.value()?,
            }
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.ws();
    (s.i == body.len()).then_some(peek)
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

/// A string's bytes between its quotes, as written.
struct Text<'a> {
    text: &'a [u8],
    has_escape: bool,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// The rest of a string whose opening quote was read: no control character, valid escapes.
    fn string(&mut self) -> Option<Text<'a>> {
        let start = self.i;
        let mut has_escape = false;
        loop {
            let at = self.i + memchr::memchr2(b'"', b'\\', &self.b[self.i..])?;
            // One pass over the piece, which the compiler turns into vector compares.
            if self.b[self.i..at]
                .iter()
                .fold(false, |bad, &c| bad | (c < 0x20))
            {
                return None;
            }
            self.i = at + 1;
            if self.b[at] == b'"' {
                return Some(Text {
                    text: &self.b[start..at],
                    has_escape,
                });
            }
            has_escape = true;
            match self.next()? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                b'u' => {
                    let hex = self.b.get(self.i..self.i + 4)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    self.i += 4;
                }
                _ => return None,
            }
        }
    }

    /// One JSON value, nested ones included (up to [`MAX_DEPTH`]).
    fn value(&mut self) -> Option<()> {
        // The closing bracket of each open array or object.
        let mut open = [0u8; MAX_DEPTH];
        let mut depth = 0;
        loop {
            // A value.
            match self.next()? {
                b'"' => {
                    self.string()?;
                }
                b't' => self.rest_of(b"rue")?,
                b'f' => self.rest_of(b"alse")?,
                b'n' => self.rest_of(b"ull")?,
                b'-' => self.number()?,
                b'0'..=b'9' => {
                    self.i -= 1;
                    self.number()?;
                }
                c @ (b'[' | b'{') => {
                    let close = if c == b'[' { b']' } else { b'}' };
                    *open.get_mut(depth)? = close;
                    depth += 1;
                    self.ws();
                    if self.peek()? == close {
                        self.i += 1;
                        depth -= 1;
                    } else {
                        if close == b'}' {
                            self.key()?;
                        }
                        self.ws();
                        continue;
                    }
                }
                _ => return None,
            }
            // After a value: the end, or a comma and the next, or closing brackets.
            loop {
                if depth == 0 {
                    return Some(());
                }
                self.ws();
                match self.next()? {
                    b',' => {
                        self.ws();
                        if open[depth - 1] == b'}' {
                            self.key()?;
                            self.ws();
                        }
                        break;
                    }
                    c if c == open[depth - 1] => depth -= 1,
                    _ => return None,
                }
            }
        }
    }

    /// An object's key and its colon, inside a skipped value (`serde_json` skips such keys as strings).
    fn key(&mut self) -> Option<()> {
        self.eat(b'"')?;
        self.string()?;
        self.ws();
        self.eat(b':')?;
        self.ws();
        Some(())
    }

    fn rest_of(&mut self, word: &[u8]) -> Option<()> {
        self.literal(word)
    }

    /// A number after its optional minus: `0` or digits not starting with `0`, then an optional fraction and
    /// exponent, as `serde_json` checks the numbers it skips.
    fn number(&mut self) -> Option<()> {
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde(body: &str) -> Option<Peek> {
        serde_json::from_slice(body.as_bytes()).ok()
    }

    #[test]
    fn usual_bodies_are_read_quickly_and_alike() {
        for body in [
            r#"{"model":"grok-4","messages":[{"role":"user","content":"hi \"there\" \u00e9\n"}]}"#,
            r#" { "model" : "m" , "stream" : true , "n": -0.5e+10, "x": [1, 2.0, 3E4, {}, [], null, false] } "#,
            r#"{"stream":false,"model":null,"tools":[{"a":{"b":{"c":[[[]]]}}}]}"#,
            r#"{"model":"é-ü","temperature":0,"stop":["\\","\/"]}"#,
            r#"{}"#,
        ] {
            let quick = quick(body.as_bytes()).unwrap_or_else(|| panic!("not quick: {body}"));
            assert_eq!(Some(quick), serde(body), "{body}");
        }
    }

    /// What the scan leaves to serde_json: it never answers where serde_json would not, or differently.
    #[test]
    fn anything_unusual_goes_to_serde_json() {
        for body in [
            r#"{"model":"m""#,              // cut
            r#"{"model":"m",}"#,            // trailing comma
            r#"{"model":"m"} x"#,           // trailing bytes
            r#"{"model":"a\u0062c"}"#,      // escape in the model
            r#"{"mod\u0065l":"m"}"#,        // escape in a key
            r#"{"model":"m","model":"n"}"#, // repeated field
            r#"{"stream":1}"#,              // wrong type
            r#"{"model":5}"#,               // wrong type
            "{\"x\":\"a\u{1}b\"}",          // control character
            r#"{"x":01}"#,                  // leading zero
            r#"{"x":1.}"#,                  // no fraction digits
            r#"{"x":-}"#,                   // no digits
            r#"{"x":"\q"}"#,                // bad escape
            r#"{"x":"\u12"}"#,              // short \u escape
            r#"["m", true]"#,               // a sequence (serde_json reads it as the struct)
            r#"{"x":tru}"#,                 // bad literal
            r#"{"x":[1 2]}"#,               // missing comma
            r#"{"x":{"a" 1}}"#,             // missing colon
            r#"{"x":{1:2}}"#,               // key not a string
        ] {
            assert_eq!(quick(body.as_bytes()), None, "{body}");
        }
        let deep = format!(
            "{{\"x\":{}{}}}",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(quick(deep.as_bytes()), None);
        assert!(
            serde(&deep).is_some(),
            "serde_json reads it: the scan only stepped aside"
        );
        // Not UTF-8 in a skipped string: serde_json does not check it, so neither does the scan.
        let mut bytes = br#"{"model":"m","x":""#.to_vec();
        bytes.extend_from_slice(&[0xff, b'"', b'}']);
        assert_eq!(quick(&bytes), serde_json::from_slice(&bytes).ok());
    }

    #[test]
    fn peek_gives_serde_json_errors() {
        assert!(peek(b"not json").is_err());
        assert!(peek(br#"{"model":"m","model":"n"}"#).is_err());
        assert_eq!(
            peek(br#"{"mod\u0065l":"m"}"#).unwrap().model.as_deref(),
            Some("m")
        );
    }
}

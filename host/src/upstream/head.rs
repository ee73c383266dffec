//! An upstream answer's headers on their way to the client.
//!
//! Answers read by our HTTP/1.1 client (`h1.rs`) keep their header lines as the bytes they arrived in
//! ([`RawHeaders`]; the answer's `HeaderMap` stays empty). They travel with the answer's body
//! (`UpstreamBody::take_raw`) to the forwarder, then beside the client's response in a [`Reply`], and the
//! connection loop (`server::conn`) writes the lines that pass [`passes`] straight to the client. Building a
//! `HeaderMap` of an answer only to write it out again was the largest piece of the gateway's own work on a
//! chat request (about 4.5 k of 38 k instructions); carrying the lines in the responses' `Extensions` cost
//! three allocations and a hash insert per answer, and a lookup per read. Answers from the other clients
//! (HTTP/2, reqwest) carry a `HeaderMap` as before.
//!
//! Whoever reads an upstream answer's header uses [`get`], which looks in both places; whoever hands a reply
//! to a writer other than our own (hyper) calls [`Reply::into_response`].

use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// The header lines of an HTTP/1.1 answer, checked by httparse: the head's bytes and where each name and
/// value lies in them (values without surrounding whitespace).
#[derive(Clone, Debug)]
pub struct RawHeaders {
    head: Bytes,
    spans: Spans,
}

/// One allocation, sized to the header count; `RawHeaders` stays small to move with a body or a reply.
pub(super) type Spans = Box<[Span]>;

/// Offsets into the head: name start, name length, value start, value length.
pub(super) type Span = [u32; 4];

impl RawHeaders {
    pub(super) fn new(head: Bytes, spans: Spans) -> RawHeaders {
        RawHeaders { head, spans }
    }

    /// Every header as sent: (name, value), names in the upstream's own case.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans.iter().map(|&[n, nl, v, vl]| {
            let (n, nl, v, vl) = (n as usize, nl as usize, v as usize, vl as usize);
            (&self.head[n..n + nl], &self.head[v..v + vl])
        })
    }

    /// The first value of `name` (lowercase).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let name = name.as_bytes();
        // Exact bytes first: upstreams mostly send lowercase names, and a compare byte by byte in either case
        // costs several times a plain one.
        self.iter()
            .find(|(n, _)| *n == name || n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Raw headers as an upstream would send `lines`, for tests.
    #[cfg(test)]
    pub(crate) fn from_lines(lines: &[(&str, &str)]) -> RawHeaders {
        let mut head = Vec::new();
        let mut spans = Vec::new();
        head.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        for (n, v) in lines {
            let at = head.len() as u32;
            head.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
            spans.push([at, n.len() as u32, at + n.len() as u32 + 2, v.len() as u32]);
        }
        RawHeaders::new(Bytes::from(head), spans.into())
    }

    /// The headers that go on to the client (see [`passes`]).
    pub fn passed(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.iter().filter(|(n, _)| passes(n))
    }
}

/// Headers of an upstream answer the client must not get: hop-by-hop ones, and cookies meant for our credential.
pub const DROPPED: [&str; 9] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
    "proxy-connection",
    "set-cookie",
];

/// Whether a raw header goes on to the client: not one of [`DROPPED`], and not `Content-Length`, which the
/// writer sets from the body it sends (a stream's answer has none).
pub fn passes(name: &[u8]) -> bool {
    // By length first: most names have no dropped name's length. Comparing each header with all ten names was
    // about 200 instructions a request. (The test below holds this to `DROPPED`.)
    let candidates: &[&str] = match name.len() {
        2 => &["te"],
        7 => &["trailer", "upgrade"],
        10 => &["connection", "keep-alive", "set-cookie"],
        14 => &["content-length"],
        16 => &["proxy-connection"],
        17 => &["transfer-encoding"],
        18 => &["proxy-authenticate"],
        _ => return true,
    };
    !candidates
        .iter()
        .any(|d| name.eq_ignore_ascii_case(d.as_bytes()))
}

/// Removes [`DROPPED`] from an upstream answer's `HeaderMap`. Finds them before removing: most answers carry
/// none or one (a stream's `transfer-encoding`), and a scan of the names is cheaper than nine removals by name.
pub fn strip(h: &mut HeaderMap) {
    while let Some(name) = h.keys().find(|n| DROPPED.contains(&n.as_str())).cloned() {
        h.remove(&name);
    }
}

/// The first value of `name` in an upstream answer, wherever its client put the headers.
pub fn get<'a>(
    headers: &'a HeaderMap,
    raw: Option<&'a RawHeaders>,
    name: &HeaderName,
) -> Option<&'a [u8]> {
    match raw {
        Some(raw) => raw.get(name.as_str()),
        None => headers.get(name).map(HeaderValue::as_bytes),
    }
}

/// What goes back to the client: the response, and the upstream's raw header lines when our HTTP/1.1 client
/// read them (written before the response's own headers).
pub struct Reply {
    pub response: Response,
    pub raw: Option<RawHeaders>,
}

impl From<Response> for Reply {
    fn from(response: Response) -> Reply {
        Reply {
            response,
            raw: None,
        }
    }
}

impl Reply {
    /// The response with the raw lines that pass moved into its `HeaderMap`, for a writer that knows only the
    /// map (hyper). A line the map cannot hold (httparse and `http` agree on what is valid, so none is
    /// expected) is left out.
    pub fn into_response(self) -> Response {
        let Reply { mut response, raw } = self;
        if let Some(raw) = raw {
            let headers = response.headers_mut();
            for (n, v) in raw.passed() {
                if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v)) {
                    headers.append(n, v);
                }
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(lines: &[(&str, &str)]) -> RawHeaders {
        RawHeaders::from_lines(lines)
    }

    #[test]
    fn hop_by_hop_headers_cookies_and_length_do_not_pass() {
        let r = raw(&[
            ("Content-Type", "application/json"),
            ("Content-Length", "12"),
            ("Connection", "keep-alive"),
            ("Set-Cookie", "a=b"),
            ("X-A", "1"),
            ("x-a", "2"),
            ("Transfer-Encoding", "chunked"),
        ]);
        let passed: Vec<_> = r.passed().collect();
        assert_eq!(
            passed,
            [
                (&b"Content-Type"[..], &b"application/json"[..]),
                (b"X-A", b"1"),
                (b"x-a", b"2")
            ]
        );
        assert_eq!(r.get("x-a"), Some(&b"1"[..]));
        assert_eq!(r.get("content-length"), Some(&b"12"[..]));
        assert_eq!(r.get("x-b"), None);
    }

    #[test]
    fn into_response_moves_what_passes_into_the_map() {
        let mut resp = http::Response::new(axum::body::Body::empty());
        resp.headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
        let raw = raw(&[
            ("Content-Type", "text/event-stream"),
            ("Content-Length", "5"),
            ("Set-Cookie", "a=b"),
            ("X-A", "1"),
            ("X-A", "2"),
        ]);
        let empty = HeaderMap::new();
        assert_eq!(
            get(&empty, Some(&raw), &http::header::CONTENT_TYPE),
            Some(&b"text/event-stream"[..])
        );
        assert_eq!(get(resp.headers(), None, &http::header::CONTENT_TYPE), None);
        let resp = Reply {
            response: resp,
            raw: Some(raw),
        }
        .into_response();
        let h = resp.headers();
        assert_eq!(h["content-type"], "text/event-stream");
        assert_eq!(h.get_all("x-a").iter().count(), 2);
        assert_eq!(h["x-accel-buffering"], "no");
        assert!(h.get("content-length").is_none() && h.get("set-cookie").is_none());
        assert_eq!(h.len(), 4);
    }

    #[test]
    fn exactly_the_dropped_names_and_the_length_do_not_pass() {
        for name in DROPPED.iter().chain(&["content-length"]) {
            assert!(!passes(name.as_bytes()), "{name}");
            assert!(!passes(name.to_ascii_uppercase().as_bytes()), "{name}");
        }
        for name in [
            "content-type",
            "x-request-id",
            "date",
            "tee",
            "trailers",
            "x-connection",
            "keep-alivx",
            "set-cookies",
            "trailex",
            "",
        ] {
            assert!(passes(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn strip_drops_hop_by_hop_headers_and_cookies() {
        let mut h = HeaderMap::new();
        for name in DROPPED {
            h.insert(name, HeaderValue::from_static("x"));
        }
        h.insert("content-type", HeaderValue::from_static("application/json"));
        strip(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
        let mut clean = HeaderMap::new();
        clean.insert("x-a", HeaderValue::from_static("1"));
        strip(&mut clean);
        assert_eq!(clean.len(), 1);
    }
}

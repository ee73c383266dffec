//! HTTP/1.1 on one upstream connection, for the direct egress: the request written in one piece, the answer's
//! head parsed with `httparse`, its body decoded (by length, chunked, or up to the close) by whoever reads it,
//! in that reader's task.
//!
//! hyper's client connection did the same job with a request channel, a callback channel and a dispatcher
//! state machine between the request and the socket, and its chunked decoder reads each chunk-size line a
//! byte at a time. Here the head is parsed in place (header values share the read buffer) and a chunk's data
//! is split off the read buffer without a copy. What it does not do, because the gateway never needs it:
//! pipelining, `Expect: 100-continue`, upgrades, request bodies that stream.
//!
//! Framing follows RFC 9112 §6.3: no body for 1xx/204/304 answers; `Transfer-Encoding` ending in `chunked`;
//! any other transfer coding is read up to the close; a `Content-Length` must be one number (repeats must
//! agree); with neither, the body ends at the close. A connection goes back to the pool only when the answer
//! ended by its framing, the upstream did not say `Connection: close` (or HTTP/1.0 without keep-alive) and
//! no byte beyond the answer arrived.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderValue, Method, Request, StatusCode, Version};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::head::{RawHeaders, Spans};

/// An answer's head may not be larger (hyper's default limit is of the same order).
const MAX_HEAD: usize = 64 * 1024;
/// Headers an answer may have.
const MAX_HEADERS: usize = 100;
/// A chunk-size line (size, extensions) may not be longer.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Trailers after the last chunk are skipped, up to this many bytes.
const MAX_TRAILERS: usize = 16 * 1024;
/// Free space kept in the read buffer before each read.
const READ_SPACE: usize = 8 * 1024;

/// What went wrong on an HTTP/1 connection.
#[derive(Debug, Error)]
pub enum Error {
    /// No byte of the answer arrived: the write failed, or the upstream closed or reset the connection
    /// first. On a connection taken from the pool this is the upstream closing it while idle.
    #[error("the upstream closed the connection without answering")]
    Unanswered(#[source] Option<io::Error>),
    #[error("the upstream closed the connection in the middle of the answer's head")]
    HeadCut,
    #[error("the upstream closed the connection before the answer's body ended")]
    BodyCut,
    #[error("reading the answer failed")]
    Read(#[source] io::Error),
    #[error("the answer's head is not valid HTTP/1.1: {0}")]
    Head(String),
    #[error("the answer's head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("the answer's chunked body is malformed: {0}")]
    Chunk(&'static str),
}

/// One connection, what it has read ahead, and the buffer its requests are written from (kept: one
/// allocation fewer per request).
pub struct Conn<T> {
    io: T,
    buf: BytesMut,
    wire: Vec<u8>,
}

/// How the answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunked),
    /// Everything up to the close.
    Close,
    Done,
}

/// Where the chunked decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes to go.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one; the bytes skipped so far.
    Trailers(usize),
}

impl<T: AsyncRead + AsyncWrite + Unpin> Conn<T> {
    pub fn new(io: T) -> Conn<T> {
        Conn {
            io,
            buf: BytesMut::new(),
            wire: Vec::new(),
        }
    }

    /// Whether the connection can take a request: reads, without waiting, what arrived while it sat idle. A
    /// close (or any byte: nothing was asked) means no. When nothing arrived no system call is made: tokio
    /// knows the socket is not readable.
    pub fn usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.poll_fill(&mut cx) {
            Poll::Pending => self.buf.is_empty(),
            Poll::Ready(_) => false,
        }
    }

    /// Reads what the socket has into the buffer; `Ok(0)` is the close.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SPACE / 4 {
            self.buf.reserve(READ_SPACE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Writes the request `encode` puts into the connection's buffer (see [`Wire`]) and reads the answer's
    /// head. The body is then read through [`Body`], which owns the connection. `head_only`: the request was
    /// a HEAD.
    pub async fn send(
        mut self: Box<Self>,
        encode: impl FnOnce(&mut Vec<u8>),
        head_only: bool,
    ) -> Result<Answer<T>, Error> {
        let mut wire = std::mem::take(&mut self.wire);
        encode(&mut wire);
        let written = self.write(&wire).await;
        self.wire = wire;
        if let Err(e) = written {
            return Err(Error::Unanswered(Some(e)));
        }
        // Whether any byte came back: an interim (1xx) answer is consumed, but it was an answer.
        let mut answered = false;
        let (parts, raw, framing, keep_alive) =
            poll_fn(|cx| self.poll_head(cx, head_only, &mut answered)).await?;
        let body = Body {
            conn: Some(self),
            framing,
            keep_alive,
            raw: Some(raw),
        };
        Ok(http::Response::from_parts(parts, body))
    }

    async fn write(&mut self, wire: &[u8]) -> io::Result<()> {
        self.io.write_all(wire).await?;
        // A no-op on TCP; TLS holds written records until flushed.
        self.io.flush().await
    }

    #[allow(clippy::type_complexity)]
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head_only: bool,
        answered: &mut bool,
    ) -> Poll<Result<Head, Error>> {
        loop {
            if !self.buf.is_empty() {
                if let Some(head) = parse_head(&mut self.buf, head_only)? {
                    return Poll::Ready(Ok(head));
                }
                if self.buf.len() > MAX_HEAD {
                    return Poll::Ready(Err(Error::HeadTooLarge));
                }
            }
            match self.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if !*answered => {
                    return Poll::Ready(Err(Error::Unanswered(None)))
                }
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(Error::HeadCut)),
                Poll::Ready(Ok(_)) => *answered = true,
                Poll::Ready(Err(e)) if !*answered => {
                    return Poll::Ready(Err(Error::Unanswered(Some(e))))
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Read(e))),
            }
        }
    }
}

pub type Answer<T> = http::Response<Body<T>>;

/// What a request's head needs besides the request: the connection's, not the request's.
#[derive(Clone)]
pub struct Target {
    /// `Host`, unless the request has one.
    pub host: HeaderValue,
    /// Through an HTTP forward proxy: `http://authority`, written before the path (absolute form, RFC 9112
    /// §3.2.2), and the proxy's `Proxy-Authorization`.
    pub forward: Option<(Bytes, Option<HeaderValue>)>,
}

/// A request's bytes, written in order: [`Wire::start`] (request line in origin form, or absolute form to a
/// forward proxy; `Host`; `Proxy-Authorization`), the request's headers, then [`Wire::finish`]
/// (`Content-Length`, body).
pub struct Wire<'a>(&'a mut Vec<u8>);

impl Wire<'_> {
    /// Writes into `out` (emptied first; a connection reuses its buffer). `pq`: the URI's path and query.
    /// `host`: write `Host` (not when the request has its own).
    pub fn start<'a>(
        out: &'a mut Vec<u8>,
        method: &Method,
        pq: &str,
        target: &Target,
        host: bool,
        body_len: usize,
    ) -> Wire<'a> {
        out.clear();
        out.reserve(256 + body_len);
        let w = out;
        w.extend_from_slice(method.as_str().as_bytes());
        w.push(b' ');
        if let Some((origin, _)) = &target.forward {
            w.extend_from_slice(origin);
        }
        w.extend_from_slice(if pq.is_empty() { b"/" } else { pq.as_bytes() });
        w.extend_from_slice(b" HTTP/1.1\r\n");
        let mut wire = Wire(w);
        if host {
            wire.header(b"host", target.host.as_bytes());
        }
        if let Some((_, Some(auth))) = &target.forward {
            wire.header(b"proxy-authorization", auth.as_bytes());
        }
        wire
    }

    pub fn header(&mut self, name: &[u8], value: &[u8]) {
        self.header_with(name, |w| w.extend_from_slice(value));
    }

    /// A header whose value `value` appends (a valid header value).
    pub fn header_with(&mut self, name: &[u8], value: impl FnOnce(&mut Vec<u8>)) {
        let w = &mut *self.0;
        w.extend_from_slice(name);
        w.extend_from_slice(b": ");
        value(w);
        w.extend_from_slice(b"\r\n");
    }

    /// The length is the body's, whatever the caller said: a request's own `Content-Length` and
    /// `Transfer-Encoding` are never written.
    pub fn finish(mut self, method: &Method, body: &[u8]) {
        let has_body_semantics = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
        if !body.is_empty() || has_body_semantics {
            let mut n = itoa::Buffer::new();
            self.header(b"content-length", n.format(body.len()).as_bytes());
        }
        self.0.extend_from_slice(b"\r\n");
        self.0.extend_from_slice(body);
    }
}

/// `req`'s bytes into `out`, see [`Wire`].
pub fn encode(req: &Request<Bytes>, target: &Target, out: &mut Vec<u8>) {
    let body = req.body();
    let headers = req.headers();
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut w = Wire::start(
        out,
        req.method(),
        pq,
        target,
        !headers.contains_key(HOST),
        body.len(),
    );
    for (name, value) in headers {
        if name != CONTENT_LENGTH && name != TRANSFER_ENCODING {
            w.header(name.as_str().as_bytes(), value.as_bytes());
        }
    }
    w.finish(req.method(), body)
}

/// An answer's head: its parts (with an empty `HeaderMap`), its header lines as they came, its body's framing,
/// and whether the connection can be kept.
type Head = (http::response::Parts, RawHeaders, Framing, bool);

/// Parses the answer's head off the front of `buf`, skipping interim (1xx) answers. `None`: not all of it
/// arrived yet. The headers stay in the head's bytes ([`RawHeaders`], which the body carries: see
/// [`Body::take_raw`]).
fn parse_head(buf: &mut BytesMut, head_only: bool) -> Result<Option<Head>, Error> {
    loop {
        // Offsets of names and values in the head, which the raw headers keep. The header slots stay
        // uninitialised: zeroing 100 of them was 6 % of a chat request.
        let (len, status, version, spans, framing, keep_alive) = {
            let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default()
                .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
            let len = match parsed {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(e) => return Err(Error::Head(e.to_string())),
            };
            let code = resp.code.unwrap_or(0);
            let status =
                StatusCode::from_u16(code).map_err(|_| Error::Head(format!("status {code}")))?;
            let version = match resp.version {
                Some(1) => Version::HTTP_11,
                _ => Version::HTTP_10,
            };
            let base = buf.as_ptr() as usize;
            let spans: Spans = resp
                .headers
                .iter()
                .map(|h| {
                    let n = h.name.as_ptr() as usize - base;
                    let v = h.value.as_ptr() as usize - base;
                    // Within MAX_HEAD (a longer head is refused before it completes).
                    [
                        n as u32,
                        h.name.len() as u32,
                        v as u32,
                        h.value.len() as u32,
                    ]
                })
                .collect();
            let (framing, keep_alive) = if status.is_informational() {
                (Framing::Done, true)
            } else {
                let (framing, mut keep_alive) = framing(resp.headers, status, head_only)?;
                keep_alive &= match version {
                    Version::HTTP_11 => !has_token(resp.headers, "connection", "close"),
                    _ => has_token(resp.headers, "connection", "keep-alive"),
                };
                (framing, keep_alive)
            };
            (len, status, version, spans, framing, keep_alive)
        };
        let head = buf.split_to(len).freeze();
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err(Error::Head(
                    "101 Switching Protocols was not asked for".into(),
                ));
            }
            continue;
        }
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = status;
        parts.version = version;
        return Ok(Some((
            parts,
            RawHeaders::new(head, spans),
            framing,
            keep_alive,
        )));
    }
}

/// The values of header `name` (lowercase), in order.
fn values<'h>(
    headers: &'h [httparse::Header<'_>],
    name: &'static str,
) -> impl Iterator<Item = &'h [u8]> {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The body's framing, and whether it leaves the connection reusable as far as framing goes.
fn framing(
    headers: &[httparse::Header<'_>],
    status: StatusCode,
    head_only: bool,
) -> Result<(Framing, bool), Error> {
    if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Done, true));
    }
    if let Some(last) = values(headers, "transfer-encoding").last() {
        let chunked = last
            .rsplit(|&b| b == b',')
            .next()
            .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        // With a Content-Length as well, the sender may be confused: read this answer, keep no connection.
        let clean = chunked && values(headers, "content-length").next().is_none();
        return Ok(match chunked {
            true => (Framing::Chunked(Chunked::Size), clean),
            false => (Framing::Close, false),
        });
    }
    let mut length = None;
    for v in values(headers, "content-length") {
        for part in v.split(|&b| b == b',') {
            let n = parse_decimal(part.trim_ascii())
                .ok_or_else(|| Error::Head("Content-Length is not a number".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Head("Content-Length values disagree".into()));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(0) => (Framing::Done, true),
        Some(n) => (Framing::Length(n), true),
        None => (Framing::Close, false),
    })
}

fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

fn has_token(headers: &[httparse::Header<'_>], name: &'static str, token: &str) -> bool {
    values(headers, name)
        .flat_map(|v| v.split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// An answer's body; it owns the connection until the body ended.
pub struct Body<T> {
    conn: Option<Box<Conn<T>>>,
    framing: Framing,
    keep_alive: bool,
    /// The answer's header lines, until the reader takes them.
    raw: Option<RawHeaders>,
}

impl<T> Body<T> {
    /// The answer's header lines as they came (once: later calls give `None`).
    pub fn take_raw(&mut self) -> Option<RawHeaders> {
        self.raw.take()
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Body<T> {
    /// The next piece of the body, `None` at its end.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Error>>> {
        loop {
            let Some(conn) = &mut self.conn else {
                return Poll::Ready(None);
            };
            if !conn.buf.is_empty() {
                match decode(&mut self.framing, &mut conn.buf) {
                    Ok(Some(data)) => return Poll::Ready(Some(Ok(data))),
                    Ok(None) => {}
                    Err(e) => {
                        self.conn = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
            if self.framing == Framing::Done {
                return Poll::Ready(None);
            }
            match conn.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) if self.framing == Framing::Close => {
                    self.framing = Framing::Done;
                    self.keep_alive = false;
                }
                Poll::Ready(Ok(0)) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(Error::BodyCut)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(Error::Read(e))));
                }
            }
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    /// Bytes still to come, when the length says.
    pub fn remaining(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            Framing::Done => Some(0),
            _ => None,
        }
    }

    /// The connection, once the body ended and it can take another request.
    pub fn into_conn(mut self) -> Option<Box<Conn<T>>> {
        let conn = self.conn.take()?;
        (self.framing == Framing::Done && self.keep_alive && conn.buf.is_empty()).then_some(conn)
    }
}

/// Takes the next piece of body data off `buf`, or advances the framing as far as `buf` allows (`None`: more
/// bytes are needed, or the body ended: see `framing`).
fn decode(framing: &mut Framing, buf: &mut BytesMut) -> Result<Option<Bytes>, Error> {
    match framing {
        Framing::Done => Ok(None),
        Framing::Close => Ok(Some(buf.split().freeze())),
        Framing::Length(left) => {
            let take = (*left).min(buf.len() as u64);
            *left -= take;
            if *left == 0 {
                *framing = Framing::Done;
            }
            Ok(Some(buf.split_to(take as usize).freeze()))
        }
        Framing::Chunked(state) => {
            // Every chunk already read comes out as one piece: a lone chunk as it lies in the buffer, several
            // copied together. Passing them up one by one cost more per chunk (three body layers, a handle
            // each) than the copy, and the stream's reader joined them anyway.
            let mut out = Pieces::None;
            loop {
                match state {
                    Chunked::Size => {
                        let Some(eol) = memchr::memchr(b'\n', buf) else {
                            if buf.len() > MAX_CHUNK_LINE {
                                return out.or_err(Error::Chunk("chunk-size line too long"));
                            }
                            return Ok(out.take());
                        };
                        let size = match chunk_size(&buf[..eol]) {
                            Ok(n) => n,
                            Err(e) => return out.or_err(e),
                        };
                        // `advance`, not `split_to`: framing bytes need no handle of their own.
                        buf.advance(eol + 1);
                        *state = match size {
                            0 => Chunked::Trailers(0),
                            n => Chunked::Data(n),
                        };
                    }
                    Chunked::Data(left) => {
                        if buf.is_empty() {
                            return Ok(out.take());
                        }
                        let take = (*left).min(buf.len() as u64) as usize;
                        *left -= take as u64;
                        if *left == 0 {
                            *state = Chunked::DataEnd;
                        }
                        out.add(buf, take);
                    }
                    Chunked::DataEnd => match buf.first() {
                        None => return Ok(out.take()),
                        Some(b'\n') => {
                            buf.advance(1);
                            *state = Chunked::Size;
                        }
                        Some(b'\r') if buf.len() < 2 => return Ok(out.take()),
                        Some(b'\r') if buf[1] == b'\n' => {
                            buf.advance(2);
                            *state = Chunked::Size;
                        }
                        Some(_) => {
                            return out.or_err(Error::Chunk("chunk data not followed by CRLF"))
                        }
                    },
                    Chunked::Trailers(skipped) => {
                        let Some(eol) = memchr::memchr(b'\n', buf) else {
                            if *skipped + buf.len() > MAX_TRAILERS {
                                return out.or_err(Error::Chunk("trailers too long"));
                            }
                            return Ok(out.take());
                        };
                        let blank = eol <= 1 && buf[..=eol].trim_ascii().is_empty();
                        if !blank && *skipped + eol + 1 > MAX_TRAILERS {
                            return out.or_err(Error::Chunk("trailers too long"));
                        }
                        buf.advance(eol + 1);
                        if blank {
                            *framing = Framing::Done;
                            return Ok(out.take());
                        }
                        *skipped += eol + 1;
                    }
                }
            }
        }
    }
}

/// The chunk data one `decode` call found.
enum Pieces {
    None,
    /// One piece, split off the read buffer (no copy).
    One(Bytes),
    /// Several, copied together.
    Joined(BytesMut),
}

impl Pieces {
    /// Takes the next `n` bytes of `buf` as chunk data.
    fn add(&mut self, buf: &mut BytesMut, n: usize) {
        match self {
            Pieces::None => *self = Pieces::One(buf.split_to(n).freeze()),
            Pieces::One(first) => {
                let mut joined =
                    BytesMut::with_capacity(first.len() + n + buf.len().min(READ_SPACE));
                joined.extend_from_slice(first);
                joined.extend_from_slice(&buf[..n]);
                buf.advance(n);
                *self = Pieces::Joined(joined);
            }
            Pieces::Joined(joined) => {
                joined.extend_from_slice(&buf[..n]);
                buf.advance(n);
            }
        }
    }

    fn take(&mut self) -> Option<Bytes> {
        match std::mem::replace(self, Pieces::None) {
            Pieces::None => None,
            Pieces::One(b) => Some(b),
            Pieces::Joined(b) => Some(b.freeze()),
        }
    }

    /// The data found before a malformed part, or the error when there is none: the state is left at the
    /// malformed part, so the next call reports it.
    fn or_err(mut self, e: Error) -> Result<Option<Bytes>, Error> {
        match self.take() {
            Some(data) => Ok(Some(data)),
            None => Err(e),
        }
    }
}

/// A chunk-size line without its `\n`: hex digits, then optional extensions after `;`, then `\r`.
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(Error::Chunk("chunk size is not a hex number"));
    }
    let mut n = 0u64;
    for &b in digits {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return Err(Error::Chunk("chunk size is not a hex number")),
        };
        n = n * 16 + u64::from(d);
    }
    Ok(n)
}

/// Reads `wire` as an answer (head, then body) arriving in pieces of `step` bytes, as reads would bring it;
/// the body's bytes, or `None` when the pieces end before the head does. For the fuzz target and tests: what
/// an upstream sends is untrusted input.
#[doc(hidden)]
pub fn read_answer_in_steps(wire: &[u8], step: usize) -> Result<Option<Vec<u8>>, Error> {
    let mut buf = BytesMut::new();
    let mut pieces = wire.chunks(step.max(1));
    let mut framing = loop {
        if let Some((_, _, framing, _)) = parse_head(&mut buf, false)? {
            break framing;
        }
        match pieces.next() {
            Some(p) => buf.extend_from_slice(p),
            None => return Ok(None),
        }
    };
    let mut body = Vec::new();
    loop {
        while !buf.is_empty() {
            match decode(&mut framing, &mut buf)? {
                Some(data) => body.extend_from_slice(&data),
                None => break,
            }
        }
        match pieces.next() {
            Some(p) if framing != Framing::Done => buf.extend_from_slice(p),
            _ => return Ok(Some(body)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `wire` fed in pieces of `step` bytes; the body's bytes and whether it ended.
    fn decode_in_steps(
        mut framing: Framing,
        wire: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, bool, usize), Error> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(data) = decode(&mut framing, &mut buf)? {
                if data.is_empty() {
                    break;
                }
                out.extend_from_slice(&data);
            }
        }
        Ok((out, framing == Framing::Done, buf.len()))
    }

    #[test]
    fn chunked_bodies_decode_alike_however_the_bytes_arrive() {
        let wire =
            b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for step in 1..=wire.len() {
            let (body, ended, left) =
                decode_in_steps(Framing::Chunked(Chunked::Size), wire, step).unwrap();
            assert_eq!(body, b"hello 0123456789", "step {step}");
            assert!(ended, "step {step}");
            assert_eq!(
                left, 4,
                "the next answer's bytes stay in the buffer (step {step})"
            );
        }
    }

    #[test]
    fn chunks_already_read_come_out_as_one_piece_and_an_error_after_the_data() {
        let mut framing = Framing::Chunked(Chunked::Size);
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n2\r\nde\r\n1\r\nf"[..]);
        let data = decode(&mut framing, &mut buf).unwrap();
        assert_eq!(data.as_deref(), Some(&b"abcdef"[..]));
        assert!(buf.is_empty());
        assert_eq!(framing, Framing::Chunked(Chunked::DataEnd));
        // A lone chunk is not copied: it is the buffer's own bytes.
        buf.extend_from_slice(b"\r\n4\r\nghij\r\n");
        let at = buf.as_ptr() as usize + 5;
        let data = decode(&mut framing, &mut buf).unwrap().unwrap();
        assert_eq!((&data[..], data.as_ptr() as usize), (&b"ghij"[..], at));
        // Data before a malformed part comes first; the error at the next call.
        buf.extend_from_slice(b"2\r\nkl\r\nzz\r\n");
        assert_eq!(
            decode(&mut framing, &mut buf).unwrap().as_deref(),
            Some(&b"kl"[..])
        );
        assert!(matches!(
            decode(&mut framing, &mut buf),
            Err(Error::Chunk(_))
        ));
        // The last chunk and the trailers end the body along with the data before them.
        let mut framing = Framing::Chunked(Chunked::Size);
        let mut buf = BytesMut::from(&b"1\r\na\r\n1\r\nb\r\n0\r\nx-t: 1\r\n\r\nNEXT"[..]);
        assert_eq!(
            decode(&mut framing, &mut buf).unwrap().as_deref(),
            Some(&b"ab"[..])
        );
        assert_eq!((framing, &buf[..]), (Framing::Done, &b"NEXT"[..]));
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for wire in [
            &b"zz\r\nhello\r\n"[..],
            b"5\r\nhelloXX",
            b"\r\n",
            b"1000000000000000\r\n",
        ] {
            let r = decode_in_steps(Framing::Chunked(Chunked::Size), wire, wire.len());
            assert!(
                matches!(r, Err(Error::Chunk(_))),
                "{:?}: {r:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 1];
        assert!(decode_in_steps(Framing::Chunked(Chunked::Size), &long, 512).is_err());
    }

    #[test]
    fn answers_read_alike_however_the_bytes_arrive() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        for step in 1..=wire.len() {
            let body = read_answer_in_steps(wire, step).unwrap();
            assert_eq!(body.as_deref(), Some(&b"abcde"[..]), "step {step}");
        }
        let cut = &wire[..10];
        assert_eq!(read_answer_in_steps(cut, 3).unwrap(), None);
    }

    #[test]
    fn a_length_body_stops_at_its_length() {
        let (body, ended, left) = decode_in_steps(Framing::Length(5), b"helloHTTP/1.1", 3).unwrap();
        assert_eq!(body, b"hello");
        assert!(ended);
        assert_eq!(left, 8);
    }

    fn head(wire: &[u8]) -> Result<Option<Head>, Error> {
        parse_head(&mut BytesMut::from(wire), false)
    }

    #[test]
    fn heads_give_status_headers_framing_and_reuse() {
        let (p, raw, f, keep) = head(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\nX-A: 1\r\nX-A: 2\r\n\r\n").unwrap().unwrap();
        assert_eq!(p.status, 200);
        assert!(p.headers.is_empty());
        assert_eq!(raw.get("content-type"), Some(&b"application/json"[..]));
        let all: Vec<_> = raw.iter().collect();
        assert_eq!(
            all,
            [
                (&b"Content-Type"[..], &b"application/json"[..]),
                (b"Content-Length", b"12"),
                (b"X-A", b"1"),
                (b"X-A", b"2")
            ]
        );
        assert_eq!((f, keep), (Framing::Length(12), true));

        let (_, _, f, keep) = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((f, keep), (Framing::Chunked(Chunked::Size), true));
        let (_, _, f, keep) = head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((f, keep), (Framing::Close, false));
        let (_, _, f, keep) = head(b"HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!((f, keep), (Framing::Close, false));
        let (_, _, _, keep) =
            head(b"HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 1\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(!keep);
        let (_, _, _, keep) = head(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!keep);
        let (p, _, f, _) = head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((p.status.as_u16(), f), (204, Framing::Done));
        let (_, _, f, _) = head(b"HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(f, Framing::Length(7));
        assert!(head(b"HTTP/1.1 200 OK\r\nContent-Le").unwrap().is_none());
        // Values without their surrounding whitespace, bare LF line ends, an interim answer's headers gone.
        let (_, raw, _, _) = head(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\nX-B:  two words \t\nContent-Length: 0\n\n")
            .unwrap()
            .unwrap();
        let all: Vec<_> = raw.iter().collect();
        assert_eq!(
            all,
            [(&b"X-B"[..], &b"two words"[..]), (b"Content-Length", b"0")]
        );
    }

    #[test]
    fn bad_heads_are_errors() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"SMTP ready\r\n\r\n",
        ] {
            assert!(head(wire).is_err(), "{}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn requests_go_out_in_origin_form_with_host_and_length() {
        let req = Request::post("http://up.example:8080/v1/chat?x=1")
            .header("authorization", "Bearer t")
            .header("content-length", "999")
            .body(Bytes::from_static(b"{}"))
            .unwrap();
        let wire = encoded(&req, &origin("up.example:8080"));
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "POST /v1/chat?x=1 HTTP/1.1\r\nhost: up.example:8080\r\nauthorization: Bearer t\r\ncontent-length: 2\r\n\r\n{}"
        );
        let get = Request::get("http://up/").body(Bytes::new()).unwrap();
        let wire = encoded(&get, &origin("up"));
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "GET / HTTP/1.1\r\nhost: up\r\n\r\n"
        );
    }

    fn encoded(req: &Request<Bytes>, target: &Target) -> Vec<u8> {
        let mut out = Vec::new();
        encode(req, target, &mut out);
        out
    }

    fn origin(host: &'static str) -> Target {
        Target {
            host: HeaderValue::from_static(host),
            forward: None,
        }
    }

    #[test]
    fn requests_to_a_forward_proxy_go_out_in_absolute_form_with_its_credentials() {
        let req = Request::post("http://up.example:8080/v1/chat?x=1")
            .body(Bytes::from_static(b"{}"))
            .unwrap();
        let mut auth = HeaderValue::from_static("Basic dTpw");
        auth.set_sensitive(true);
        let target = Target {
            host: HeaderValue::from_static("up.example:8080"),
            forward: Some((Bytes::from_static(b"http://up.example:8080"), Some(auth))),
        };
        assert_eq!(
            String::from_utf8(encoded(&req, &target)).unwrap(),
            "POST http://up.example:8080/v1/chat?x=1 HTTP/1.1\r\nhost: up.example:8080\r\n\
             proxy-authorization: Basic dTpw\r\ncontent-length: 2\r\n\r\n{}"
        );
        let anonymous = Target {
            forward: Some((Bytes::from_static(b"http://up"), None)),
            ..origin("up")
        };
        let get = Request::get("http://up/").body(Bytes::new()).unwrap();
        assert_eq!(
            String::from_utf8(encoded(&get, &anonymous)).unwrap(),
            "GET http://up/ HTTP/1.1\r\nhost: up\r\n\r\n"
        );
    }
}

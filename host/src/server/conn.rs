//! One client connection. Plain `/v1` requests (HTTP/1.1, `GET` or `POST`, no body or a `Content-Length`
//! one, origin-form path without a query) are read and answered here; at the first request that is anything
//! else (another path, `Transfer-Encoding`, `Expect`, an upgrade, HTTP/1.0, a head hyper would refuse) the
//! connection goes to hyper for the rest of its life, with the bytes already read. hyper's server costs a
//! third of a chat request's instructions (its dispatcher, the request body's channel, the header map), and
//! these requests are what the gateway serves all day (see bench/README.md, ninth pass).
//!
//! What this loop keeps from hyper: the header read timeout (an idle or slow client is closed), the head size
//! limit (a larger head goes to hyper, which answers 431), `Connection: close`, pipelined requests in order,
//! a client that goes away cancels its request, graceful drain (the request in flight finishes with
//! `Connection: close`), and answers framed by `Content-Length` or chunked, with `Date` and `X-Request-Id`.

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{Method, StatusCode};
use http_body::Body as _;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::ConnLimits;
use crate::api::{App, RequestId};
use crate::upstream::head::{RawHeaders, Reply};
use crate::util::monotonic_ms_coarse;

/// hyper's default, so a head with more headers goes to hyper and gets its answer.
const MAX_HEADERS: usize = 100;
/// Room made in the read buffer before each read.
const READ_SIZE: usize = 8 * 1024;
/// While a request is answered, bytes of the next ones are read ahead up to this much, then left in the
/// socket.
const READ_AHEAD: usize = 64 * 1024;
/// Bodies up to this size are copied out of the read buffer, which then stays ours to reuse; larger ones
/// are split off without a copy.
const COPY_BODY: usize = 4 * 1024;

/// A request head this loop answers itself; spans are offsets into the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    len: usize,
    method: Method,
    path: (usize, usize),
    authorization: Option<(usize, usize)>,
    request_id: Option<(usize, usize)>,
    content_length: usize,
    close: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// More bytes are needed.
    Partial,
    Mine(Head),
    /// hyper serves this request and the rest of the connection.
    Hyper,
}

/// Reads the request head at the start of `buf`.
fn parse(buf: &[u8], max_head: usize, max_body: usize) -> Parsed {
    let mut slots = [const { MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) if n <= max_head => n,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Parsed::Partial,
        // Too large, too many headers or malformed: hyper gives the answer it always gave.
        _ => return Parsed::Hyper,
    };
    if req.version != Some(1) {
        return Parsed::Hyper;
    }
    let method = match req.method {
        Some("POST") => Method::POST,
        Some("GET") => Method::GET,
        _ => return Parsed::Hyper,
    };
    let path = req.path.unwrap_or_default();
    if !path.starts_with("/v1/") || !path.bytes().all(is_path_byte) {
        return Parsed::Hyper;
    }
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        (start, start + s.len())
    };
    let mut head = Head {
        len,
        method,
        path: span(path.as_bytes()),
        authorization: None,
        request_id: None,
        content_length: 0,
        close: false,
    };
    let mut has_length = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        // By length first: most headers are none of these.
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                match parse_length(h.value) {
                    Some(n) if !has_length && n <= max_body => head.content_length = n,
                    // Repeated, invalid or over the limit: hyper's reading and 400 or 413.
                    _ => return Parsed::Hyper,
                }
                has_length = true;
            }
            13 if name.eq_ignore_ascii_case(b"authorization") => {
                head.authorization.get_or_insert(span(h.value));
            }
            12 if name.eq_ignore_ascii_case(b"x-request-id") => {
                head.request_id.get_or_insert(span(h.value));
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for token in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        head.close = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        return Parsed::Hyper;
                    }
                }
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => return Parsed::Hyper,
            6 if name.eq_ignore_ascii_case(b"expect") => return Parsed::Hyper,
            7 if name.eq_ignore_ascii_case(b"upgrade") => return Parsed::Hyper,
            _ => {}
        }
    }
    Parsed::Mine(head)
}

/// Reads `data` as a request head and checks what the loop relies on, panicking where it does not hold. For
/// the fuzz target `server_head`: what a client sends is untrusted input.
#[doc(hidden)]
pub fn check_request_head(data: &[u8], max_head: usize, max_body: usize) {
    let Parsed::Mine(h) = parse(data, max_head, max_body) else {
        return;
    };
    assert!(h.len <= data.len() && h.len <= max_head);
    assert!(h.content_length <= max_body);
    for (a, b) in [Some(h.path), h.authorization, h.request_id]
        .into_iter()
        .flatten()
    {
        assert!(a <= b && b <= h.len, "a span outside the head");
    }
    assert!(data[h.path.0..h.path.1].starts_with(b"/v1/"));
    // The head alone says the same, and no shorter prefix looks complete.
    assert_eq!(
        parse(&data[..h.len], max_head, max_body),
        Parsed::Mine(h.clone())
    );
    for cut in 0..h.len {
        assert_ne!(
            std::mem::discriminant(&parse(&data[..cut], max_head, max_body)),
            std::mem::discriminant(&Parsed::Mine(h.clone())),
            "a head seen complete at {cut} of {}",
            h.len
        );
    }
}

/// RFC 3986 path characters: a query, a fragment or anything hyper's URI parser might refuse goes to hyper.
fn is_path_byte(b: u8) -> bool {
    // A table: searching the punctuation list per byte was 1.5 % of a chat request's instructions.
    const TABLE: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 256 {
            let c = b as u8;
            t[b] = c.is_ascii_alphanumeric();
            b += 1;
        }
        let punct = b"-._~!$&'()*+,;=:@/%";
        let mut i = 0;
        while i < punct.len() {
            t[punct[i] as usize] = true;
            i += 1;
        }
        t
    };
    TABLE[usize::from(b)]
}

/// A `Content-Length` value: digits only, no sign, no list.
fn parse_length(v: &[u8]) -> Option<usize> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    // Digits only, at most 18: below 10^18, no overflow in a u64 (`str::parse` would check them again).
    let n = v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    usize::try_from(n).ok()
}

fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        buf.reserve(READ_SIZE);
    }
}

/// Serves the connection until it closes: see the module's documentation.
pub(super) async fn serve(
    mut tcp: TcpStream,
    addr: SocketAddr,
    app: App,
    http: Arc<hyper::server::conn::http1::Builder>,
    limits: ConnLimits,
    drain: watch::Receiver<()>,
) {
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    // Grows with the first answer; a connection handed to hyper at once never allocates it.
    let mut out = Vec::new();
    // The header timer moves only when it would fire too late; when it fires early it is set again to the
    // deadline then due. Setting it for every request re-registered it in tokio's timer wheel each time (a
    // lock, two list updates and a clock read; with the drain wait below, 1.3 % of a chat request's
    // instructions). Deadlines are milliseconds on the coarse monotonic clock: a tick late is nothing
    // against timeouts of seconds.
    let mut timer = pin!(tokio::time::sleep(limits.header_read_timeout));
    let mut timer_at = monotonic_ms_coarse().saturating_add(millis(limits.header_read_timeout));
    // Where the handler's future runs: about 10 KB, too large to sit inline in the connection's task, which
    // lives as long as the connection. One allocation serves the connection's requests while it is busy (an
    // allocation per request was 2 % of a chat request's instructions); a connection idle for `KEEP_SLOT`
    // lets it go.
    let mut slot = None;
    // One wait for the drain signal for the connection's life: a fresh one per request registered with the
    // signal and unregistered again, each under the signal's lock, which every connection shares.
    let mut drain_wait = drain.clone();
    let mut drained = pin!(drain_wait.changed());
    loop {
        // The next head: pipelined behind the last one, or read within the header timeout, which also bounds
        // how long an idle connection stays open (as with hyper).
        let mut waiting: Option<HeadWait> = None;
        let head = loop {
            // Nothing read yet (the usual case after an answer): nothing to parse.
            if !buf.is_empty() {
                match parse(&buf, limits.max_header_bytes, app.max_body_bytes()) {
                    Parsed::Mine(h) => break h,
                    // Behind a vtable (`util::cold`): inline, hyper's server made this loop's machine code
                    // twice as large (46 KB against 22 KB).
                    Parsed::Hyper => {
                        return crate::util::cold(hand_over(tcp, buf, app, addr, &http, drain))
                            .await
                    }
                    Parsed::Partial => {}
                }
            }
            let wait = match &mut waiting {
                Some(w) => w,
                None => {
                    let now = monotonic_ms_coarse();
                    // The same timer first lets the slot go, then closes the connection.
                    let keep_slot = slot.is_some() && KEEP_SLOT < limits.header_read_timeout;
                    let w = waiting.insert(HeadWait {
                        slot_until: keep_slot.then(|| now.saturating_add(millis(KEEP_SLOT))),
                        head_until: now.saturating_add(millis(limits.header_read_timeout)),
                    });
                    if timer_at > w.next() {
                        timer_at = w.next();
                        set_timer(timer.as_mut(), now, timer_at);
                    }
                    w
                }
            };
            make_room(&mut buf);
            tokio::select! {
                biased;
                r = tcp.read_buf(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                () = timer.as_mut() => {
                    let now = monotonic_ms_coarse();
                    if wait.slot_until.is_some_and(|t| now >= t) {
                        slot = None;
                        wait.slot_until = None;
                    }
                    if wait.slot_until.is_none() && now >= wait.head_until {
                        tracing::debug!(peer = %addr, "no complete request head in time; closing");
                        return;
                    }
                    // Early: set for an earlier request's deadline, or for the slot's.
                    timer_at = wait.next();
                    set_timer(timer.as_mut(), now, timer_at);
                }
                _ = drained.as_mut() => return,
            }
        };

        let id = crate::api::request_id_from(head.request_id.map(|(a, b)| &buf[a..b]));
        let id_header = IdCopy::of(&id);
        let admitted = {
            // Checked by `is_path_byte`: ASCII.
            let path = std::str::from_utf8(&buf[head.path.0..head.path.1]).unwrap_or_default();
            let auth = head.authorization.map(|(a, b)| &buf[a..b]);
            app.admit_v1(&head.method, path, addr.ip(), auth)
        };
        let whole = head.len + head.content_length;
        let mut close = head.close;
        let answer = match admitted {
            Err(refused) => {
                // A refused request's body is not read: the connection stays open only when the body has
                // already arrived and can be skipped.
                if buf.len() >= whole {
                    buf.advance(whole);
                } else {
                    close = true;
                }
                Reply::from(*refused)
            }
            Ok(route) => {
                while buf.len() < whole {
                    buf.reserve(whole - buf.len());
                    match tcp.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
                buf.advance(head.len);
                let body = if head.content_length <= COPY_BODY {
                    let b = Bytes::copy_from_slice(&buf[..head.content_length]);
                    buf.advance(head.content_length);
                    b
                } else {
                    buf.split_to(head.content_length).freeze()
                };
                // A finished future holds nothing: it is replaced in place.
                let call = app.clone().serve_v1(addr, id, route, body);
                let running = match slot.take() {
                    None => slot.insert(Box::pin(call)),
                    Some(mut s) => {
                        s.as_mut().set(call);
                        slot.insert(s)
                    }
                };
                match until_answered(&mut tcp, &mut buf, running.as_mut()).await {
                    Some(a) => a,
                    None => return,
                }
            }
        };
        // Draining: this answer is the connection's last.
        close |= drain.has_changed().unwrap_or(true);
        let sent = write_answer(&mut tcp, &mut buf, &mut out, answer, id_header, close).await;
        if let Err(e) = sent {
            tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
            return;
        }
        if close {
            let _ = tcp.shutdown().await;
            return;
        }
    }
}

/// An idle connection keeps the handler's slot this long (see `serve`).
const KEEP_SLOT: std::time::Duration = std::time::Duration::from_secs(1);

/// The deadlines of one wait for a request head, in milliseconds of `util::monotonic_ms_coarse`.
struct HeadWait {
    /// Until then the connection keeps the handler's slot (`None`: let go, or none was kept).
    slot_until: Option<u64>,
    /// Until then the head may take to arrive; then the connection closes.
    head_until: u64,
}

impl HeadWait {
    fn next(&self) -> u64 {
        self.slot_until.unwrap_or(self.head_until)
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Sets `timer` for `at` (ms on the coarse clock, read as `now`); saturating, as the deadlines are.
fn set_timer(timer: Pin<&mut tokio::time::Sleep>, now: u64, at: u64) {
    let after = std::time::Duration::from_millis(at.saturating_sub(now));
    let t = tokio::time::Instant::now();
    // Beyond what an `Instant` holds: in effect never (a day apart is as good).
    timer.reset(
        t.checked_add(after)
            .unwrap_or(t + std::time::Duration::from_secs(86_400)),
    );
}

/// Waits for `call`'s answer while watching the socket: a close from the client drops the call (and with it
/// the upstream request); bytes of a next request are read ahead.
async fn until_answered(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
    call: impl Future<Output = Reply>,
) -> Option<Reply> {
    let mut call = pin!(call);
    loop {
        tokio::select! {
            biased;
            a = call.as_mut() => return Some(a),
            r = tcp.readable(), if buf.len() < READ_AHEAD => {
                r.ok()?;
                if !read_ahead(tcp, buf)? {
                    return None;
                }
            }
        }
    }
}

/// One read that does not wait, after the socket said it is readable. `None`: the client is gone.
fn read_ahead(tcp: &TcpStream, buf: &mut BytesMut) -> Option<bool> {
    make_room(buf);
    match tcp.try_read_buf(buf) {
        Ok(0) => Some(false),
        Ok(_) => Some(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(true),
        Err(_) => None,
    }
}

/// The request id, kept for the answer's head while the handler owns the `RequestId`, whose bytes are already
/// a valid header value that fits here: no allocation, no second check.
struct IdCopy {
    bytes: [u8; RequestId::MAX_LEN],
    len: u8,
}

impl IdCopy {
    fn of(id: &RequestId) -> IdCopy {
        let id = id.as_str().as_bytes();
        let mut bytes = [0; RequestId::MAX_LEN];
        bytes[..id.len()].copy_from_slice(id);
        IdCopy {
            bytes,
            len: id.len() as u8,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Writes the answer's head and body: `Content-Length` when its length is known, chunked otherwise, each
/// piece of body as soon as it is there (server-sent events must not wait).
async fn write_answer(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
    out: &mut Vec<u8>,
    answer: Reply,
    request_id: IdCopy,
    close: bool,
) -> io::Result<()> {
    let (parts, mut body) = answer.response.into_parts();
    let bodiless = parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    let length = match parts.headers.get(CONTENT_LENGTH) {
        Some(v) => Some(parse_length(v.as_bytes()).ok_or_else(|| bad("invalid Content-Length"))?),
        None => body.size_hint().exact().map(|n| n as usize),
    };
    out.clear();
    encode_head(
        out,
        &parts,
        answer.raw.as_ref(),
        Some(request_id.as_bytes()),
        length,
        close,
        bodiless,
    );
    if bodiless {
        return tcp.write_all(out).await;
    }
    let mut framing = match length {
        Some(n) => Framing::Length(n),
        None => Framing::Chunked,
    };
    loop {
        let more = tokio::select! {
            biased;
            r = poll_fn(|cx| gather(Pin::new(&mut body), cx, out, &mut framing)) => r?,
            // Nothing to send yet: a client that leaves mid-stream is noticed now, not at the next event.
            r = tcp.readable(), if out.is_empty() && buf.len() < READ_AHEAD => {
                r?;
                if read_ahead(tcp, buf) != Some(true) {
                    return Err(io::ErrorKind::ConnectionAborted.into());
                }
                continue;
            }
        };
        tcp.write_all(out).await?;
        out.clear();
        if !more {
            return Ok(());
        }
    }
}

enum Framing {
    /// Bytes still to come.
    Length(usize),
    Chunked,
}

/// Appends every frame of `body` that is ready to `out`. Ready with `true` when there is something to write
/// and the body may go on, `false` at its end (with the last chunk written); pending when nothing came.
fn gather(
    mut body: Pin<&mut axum::body::Body>,
    cx: &mut Context<'_>,
    out: &mut Vec<u8>,
    framing: &mut Framing,
) -> Poll<io::Result<bool>> {
    loop {
        match body.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers: not sent
                };
                match framing {
                    Framing::Length(left) => {
                        *left = left
                            .checked_sub(data.len())
                            .ok_or_else(|| bad("body longer than its Content-Length"))?;
                        out.extend_from_slice(&data);
                    }
                    Framing::Chunked if data.is_empty() => {}
                    Framing::Chunked => {
                        put_hex(out, data.len());
                        out.extend_from_slice(b"\r\n");
                        out.extend_from_slice(&data);
                        out.extend_from_slice(b"\r\n");
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io::Error::other(e))),
            Poll::Ready(None) => {
                return Poll::Ready(match framing {
                    Framing::Length(0) => Ok(false),
                    Framing::Length(_) => Err(bad("body shorter than its Content-Length")),
                    Framing::Chunked => {
                        out.extend_from_slice(b"0\r\n\r\n");
                        Ok(false)
                    }
                });
            }
            Poll::Pending if out.is_empty() => return Poll::Pending,
            Poll::Pending => return Poll::Ready(Ok(true)),
        }
    }
}

/// `n` in lowercase hexadecimal, the chunk-size of chunked encoding.
fn put_hex(out: &mut Vec<u8>, n: usize) {
    let digits = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(b"0123456789abcdef"[(n >> (i * 4)) & 0xf]);
    }
}

fn bad(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// The status line and headers: the answer's own, then the framing, `X-Request-Id`, `Connection: close` and
/// `Date` as hyper would add them.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    raw: Option<&RawHeaders>,
    request_id: Option<&[u8]>,
    length: Option<usize>,
    close: bool,
    bodiless: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    // An upstream answer's own header lines, as they came (`upstream::head`).
    if let Some(raw) = raw {
        for (name, value) in raw.passed() {
            if request_id.is_some() && name.eq_ignore_ascii_case(b"x-request-id") {
                continue;
            }
            has_date |= name.eq_ignore_ascii_case(b"date");
            put(out, name, value);
        }
    }
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH
            || name == TRANSFER_ENCODING
            || name == CONNECTION
            || (request_id.is_some() && name.as_str() == "x-request-id")
        {
            continue;
        }
        has_date |= name == DATE;
        put(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(id) = request_id {
        put(out, b"x-request-id", id);
    }
    if !bodiless {
        match length {
            Some(n) => put(
                out,
                b"content-length",
                itoa::Buffer::new().format(n).as_bytes(),
            ),
            None => put(out, b"transfer-encoding", b"chunked"),
        }
    }
    if close {
        put(out, b"connection", b"close");
    }
    if !has_date {
        put_date(out);
    }
    out.extend_from_slice(b"\r\n");
}

fn put(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `date: <IMF-fixdate>`, formatted once a second per thread.
fn put_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            *at = secs;
            *text = httpdate::fmt_http_date(now);
        }
        put(out, b"date", text.as_bytes());
    });
}

/// Hands the connection to hyper, the bytes read so far first.
async fn hand_over(
    tcp: TcpStream,
    read: BytesMut,
    app: App,
    addr: SocketAddr,
    http: &hyper::server::conn::http1::Builder,
    mut drain: watch::Receiver<()>,
) {
    let io = Rewind {
        read: read.freeze(),
        io: tcp,
    };
    let conn = http.serve_connection(TokioIo::new(io), super::service(app, addr));
    let mut conn = pin!(conn);
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = drain.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A socket whose first reads return bytes already read from it.
struct Rewind {
    read: Bytes,
    io: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(dst.remaining());
            dst.put_slice(&self.read[..n]);
            self.read.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, dst)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        src: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, src)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_bytes_are_rfc_3986_path_characters() {
        for b in 0..=255u8 {
            let expected = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b);
            assert_eq!(is_path_byte(b), expected, "byte {b}");
        }
    }

    #[test]
    fn content_lengths_are_plain_decimal_digits() {
        for (v, n) in [
            (&b"0"[..], Some(0)),
            (b"0012", Some(12)),
            (b"1279", Some(1279)),
            (b"999999999999999999", Some(999_999_999_999_999_999)),
            (b"1000000000000000000", None),
            (b"", None),
            (b"+5", None),
            (b"-1", None),
            (b" 5", None),
            (b"5,5", None),
            (b"1e3", None),
        ] {
            assert_eq!(parse_length(v), n, "{:?}", String::from_utf8_lossy(v));
        }
    }

    fn head(buf: &[u8]) -> Head {
        match parse(buf, 8192, 1 << 20) {
            Parsed::Mine(h) => h,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn span(buf: &[u8], s: Option<(usize, usize)>) -> Option<&[u8]> {
        s.map(|(a, b)| &buf[a..b])
    }

    #[test]
    fn plain_v1_requests_are_read_here() {
        let req = b"POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nauthorization: Bearer k\r\n\
            X-Request-ID: r-1\r\nContent-Length: 12\r\nConnection: keep-alive, Close\r\n\r\n{\"a\":1}";
        let h = head(req);
        assert_eq!(h.method, Method::POST);
        assert_eq!(&req[h.path.0..h.path.1], b"/v1/chat/completions");
        assert_eq!(span(req, h.authorization), Some(&b"Bearer k"[..]));
        assert_eq!(span(req, h.request_id), Some(&b"r-1"[..]));
        assert_eq!(h.content_length, 12);
        assert!(h.close);
        assert_eq!(&req[h.len..], b"{\"a\":1}");

        let h = head(b"GET /v1/models/grok%2D4 HTTP/1.1\r\n\r\n");
        assert_eq!(
            (h.method, h.content_length, h.close),
            (Method::GET, 0, false)
        );
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for req in [
            &b"GET /health HTTP/1.1\r\n\r\n"[..],
            b"GET /v1/models?limit=1 HTTP/1.1\r\n\r\n",
            b"GET /v1/models HTTP/1.0\r\n\r\n",
            b"HEAD /v1/models HTTP/1.1\r\n\r\n",
            b"PUT /v1/chat/completions HTTP/1.1\r\n\r\n",
            b"GET http://g/v1/models HTTP/1.1\r\n\r\n",
            b"POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n",
            b"POST /v1/chat/completions HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET /v1/models HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET /v1/models HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            b"GET /v1/mo\"dels HTTP/1.1\r\n\r\n",
            b"GET /v1/models HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            assert_eq!(
                parse(req, 8192, 1 << 20),
                Parsed::Hyper,
                "{:?}",
                String::from_utf8_lossy(req)
            );
        }
    }

    #[test]
    fn a_head_is_partial_until_complete_and_too_large_goes_to_hyper() {
        let req = b"POST /v1/chat/completions HTTP/1.1\r\nHost: g\r\nContent-Length: 2\r\n\r\n{}";
        let end = req.len() - 2;
        for cut in 0..end {
            assert_eq!(
                parse(&req[..cut], 8192, 1024),
                Parsed::Partial,
                "cut at {cut}"
            );
        }
        assert!(matches!(parse(&req[..end], 8192, 1024), Parsed::Mine(_)));
        // The head limit: hyper answers 431 for what is over it, complete or not.
        assert_eq!(parse(req, 40, 1024), Parsed::Hyper);
        assert_eq!(parse(&req[..50], 40, 1024), Parsed::Hyper);
        let mut many = b"GET /v1/models HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend(format!("x-{i}: v\r\n").bytes());
        }
        many.extend(b"\r\n");
        assert_eq!(parse(&many, 1 << 20, 1024), Parsed::Hyper);
    }

    #[test]
    fn chunk_sizes_are_lowercase_hex() {
        for (n, want) in [
            (0, "0"),
            (9, "9"),
            (10, "a"),
            (255, "ff"),
            (4096, "1000"),
            (0xabcdef, "abcdef"),
        ] {
            let mut out = Vec::new();
            put_hex(&mut out, n);
            assert_eq!(out, want.as_bytes(), "{n}");
        }
    }

    #[test]
    fn the_head_gets_framing_id_close_and_date_once() {
        let resp = http::Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header("content-type", "application/json")
            .header("content-length", "999")
            .header("x-request-id", "theirs")
            .header("connection", "keep-alive")
            .body(())
            .unwrap();
        let (parts, ()) = resp.into_parts();
        let mut out = Vec::new();
        encode_head(&mut out, &parts, None, Some(b"ours"), Some(17), true, false);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines[0], "HTTP/1.1 429 Too Many Requests");
        assert!(text.ends_with("\r\n\r\n"));
        for want in [
            "content-type: application/json",
            "x-request-id: ours",
            "content-length: 17",
            "connection: close",
        ] {
            assert_eq!(
                lines.iter().filter(|l| **l == want).count(),
                1,
                "{want} in {text}"
            );
        }
        assert_eq!(
            lines.iter().filter(|l| l.starts_with("date: ")).count(),
            1,
            "{text}"
        );
        assert!(!text.contains("theirs") && !text.contains("999") && !text.contains("keep-alive"));

        let (parts, ()) = http::Response::new(()).into_parts();
        let mut out = Vec::new();
        encode_head(&mut out, &parts, None, None, None, false, false);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("\r\ntransfer-encoding: chunked\r\n"),
            "{text}"
        );
        assert!(!text.contains("connection"));
    }

    #[test]
    fn an_upstream_answers_raw_headers_pass_once_without_hop_by_hop_ones() {
        let mut resp = http::Response::new(());
        resp.headers_mut()
            .insert("x-accel-buffering", http::HeaderValue::from_static("no"));
        let raw = RawHeaders::from_lines(&[
            ("Content-Type", "text/event-stream"),
            ("Content-Length", "999"),
            ("Transfer-Encoding", "chunked"),
            ("Connection", "keep-alive"),
            ("Set-Cookie", "session=1"),
            ("X-Request-Id", "theirs"),
            ("Date", "Fri, 27 Nov 2026 12:00:00 GMT"),
            ("x-ratelimit-remaining-requests", "9"),
        ]);
        let (parts, ()) = resp.into_parts();
        let mut out = Vec::new();
        encode_head(
            &mut out,
            &parts,
            Some(&raw),
            Some(b"ours"),
            None,
            false,
            false,
        );
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split("\r\n").collect();
        for want in [
            "Content-Type: text/event-stream",
            "x-accel-buffering: no",
            "x-request-id: ours",
            "transfer-encoding: chunked",
            "Date: Fri, 27 Nov 2026 12:00:00 GMT",
            "x-ratelimit-remaining-requests: 9",
        ] {
            assert_eq!(
                lines.iter().filter(|l| **l == want).count(),
                1,
                "{want} in {text}"
            );
        }
        let lower = text.to_ascii_lowercase();
        assert_eq!(lower.matches("date:").count(), 1, "{text}");
        for gone in ["999", "keep-alive", "session", "theirs", "connection"] {
            assert!(!lower.contains(gone), "{gone} in {text}");
        }
    }

    /// The connection's task is allocated for as long as the connection is open, idle keep-alive included:
    /// the handler's future (about 10 KB) must stay out of it.
    #[test]
    fn an_idle_connection_holds_a_small_task() {
        fn future_size<A, B, C, D, E, G, F>(_: fn(A, B, C, D, E, G) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let size = future_size(serve);
        assert!(size < 4096, "the connection's future is {size} bytes");
    }
}

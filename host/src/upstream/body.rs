//! A streamed upstream body passed to the client chunk by chunk, under the first-chunk, between-chunk and total
//! timeouts. It finishes the call record when the stream really ends: completed, failed mid-stream, timed out,
//! or dropped because the client went away (dropping it also drops the upstream response, which cancels it).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};

use crate::calllog::scan::SseScanner;
use crate::calllog::{CallLog, CallRecord};
use crate::tokens::TokenLease;

use super::client::{BoxError, UpstreamBody};

pub struct Timeouts {
    /// When the answer's head arrived (a clock read the forwarder made): the stream's time counts from here.
    pub answered_at: std::time::Instant,
    pub first_chunk_deadline: std::time::Instant,
    pub chunk: Duration,
    pub total_deadline: Option<std::time::Instant>,
}

pub struct TimedBody {
    inner: UpstreamBody,
    sleep: Pin<Box<Sleep>>,
    chunk_timeout: Duration,
    total_deadline: Option<Instant>,
    sse: bool,
    record: Option<Box<CallRecord>>,
    calllog: CallLog,
    done: bool,
    /// Reads media links and usage off SSE events as they pass (SSE only).
    scanner: Option<SseScanner>,
    /// Keeps the token counted as in flight while the stream lasts.
    _lease: TokenLease,
    /// The whole stream counts as time waiting on the upstream.
    streaming_since: std::time::Instant,
    /// How the upstream ended while chunks were being joined; acted on at the next poll.
    deferred: Option<Deferred>,
    /// Chunks received and not yet passed on, while the upstream connection gets one turn to hand over
    /// what it has already read.
    held: Held,
    /// Turns given since the last chunk arrived.
    yielded: u8,
    /// Turns to give before passing on held chunks: none when polling the body drives its connection.
    handover_turns: u8,
}

enum Deferred {
    End,
    Error(String),
}

/// Held chunks: a lone chunk passes on as it came; only a second one is copied to join it.
#[derive(Default)]
enum Held {
    #[default]
    Nothing,
    One(Bytes),
    Joined(bytes::BytesMut),
}

impl Held {
    fn is_empty(&self) -> bool {
        matches!(self, Held::Nothing)
    }

    /// Adds `chunk`; the bytes held after it.
    fn push(&mut self, chunk: Bytes) -> usize {
        *self = match std::mem::take(self) {
            Held::Nothing => Held::One(chunk),
            Held::One(first) => {
                let mut joined = bytes::BytesMut::with_capacity(first.len() + chunk.len());
                joined.extend_from_slice(&first);
                joined.extend_from_slice(&chunk);
                Held::Joined(joined)
            }
            Held::Joined(mut joined) => {
                joined.extend_from_slice(&chunk);
                Held::Joined(joined)
            }
        };
        match self {
            Held::Nothing => 0,
            Held::One(b) => b.len(),
            Held::Joined(b) => b.len(),
        }
    }

    fn take(&mut self) -> Bytes {
        match std::mem::take(self) {
            Held::Nothing => Bytes::new(),
            Held::One(b) => b,
            Held::Joined(b) => b.freeze(),
        }
    }
}

/// Chunks already waiting are joined into one frame up to this size: one write (and one wakeup of the
/// client's side) instead of one per upstream chunk.
///
/// A direct HTTP/1 body drives its connection when polled, so polling until `Pending` collects every chunk
/// already received. A connection with its own task (HTTP/2, proxies) decodes one chunk at a time into a
/// channel of one slot, so "already waiting" needs turns of that task: after each chunk the body yields
/// (wakes itself, returns Pending) up to `HANDOVER_TURNS` times before passing on what it holds. When the
/// upstream sent 20 events in one segment they leave in one write, not 20; a lone chunk waits that many
/// scheduler turns (microseconds).
const COALESCE_MAX: usize = 64 * 1024;
/// Measured: the next chunk of a segment already read shows up after the second turn (the client
/// connection's task and the body channel's wake-up each take one).
const HANDOVER_TURNS: u8 = 2;

impl TimedBody {
    pub fn new(
        body: UpstreamBody,
        t: Timeouts,
        sse: bool,
        record: Box<CallRecord>,
        calllog: CallLog,
        lease: TokenLease,
    ) -> TimedBody {
        let full_scan = calllog.enabled();
        let handover_turns = if body.drives_its_connection() {
            0
        } else {
            HANDOVER_TURNS
        };
        let total_deadline = t.total_deadline.map(Instant::from_std);
        let first = Instant::from_std(t.first_chunk_deadline);
        let first = total_deadline.map_or(first, |d| d.min(first));
        TimedBody {
            inner: body,
            sleep: Box::pin(tokio::time::sleep_until(first)),
            chunk_timeout: t.chunk,
            total_deadline,
            sse,
            record: Some(record),
            calllog,
            done: false,
            scanner: sse.then(|| match full_scan {
                true => SseScanner::default(),
                false => SseScanner::outcome_only(),
            }),
            _lease: lease,
            streaming_since: t.answered_at,
            deferred: None,
            held: Held::Nothing,
            yielded: 0,
            handover_turns,
        }
    }

    fn finish(&mut self, success: bool, error: &str) {
        if let Some(mut r) = self.record.take() {
            // One clock read ends both the upstream's time and the call's.
            let end = std::time::Instant::now();
            r.upstream_wait += end - self.streaming_since;
            let mut success = success;
            let mut error = error.to_string();
            if let Some(scanner) = self.scanner.take() {
                r.findings = scanner.finish();
                // A clean end of the byte stream is not yet a complete answer.
                if success {
                    if let Some(e) = &r.findings.stream_error {
                        success = false;
                        error = format!("upstream error mid-stream: {e}");
                    } else if !r.findings.stream_complete {
                        success = false;
                        error = "upstream ended the stream before the answer was complete".into();
                    }
                }
            }
            r.success = success;
            if !success {
                r.error_message = error;
            }
            self.calllog.finish_at(r, end);
        }
    }

    /// Ends the stream after a failure. SSE clients get a final error event they can read; other clients get a
    /// broken body, which is the only honest signal left once the status line has been sent.
    fn fail(&mut self, code: &str, message: &str) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        self.finish(false, message);
        self.done = true;
        if self.sse {
            let event = serde_json::json!({
                "error": {"message": message, "type": "api_error", "code": code}
            });
            Poll::Ready(Some(Ok(Bytes::from(format!("data: {event}\n\n")))))
        } else {
            Poll::Ready(Some(Err(std::io::Error::other(message.to_string()))))
        }
    }
}

/// The next data chunk of the upstream body (trailers are skipped: nothing to pass on).
fn poll_data(
    inner: &mut UpstreamBody,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Bytes, BoxError>>> {
    loop {
        return match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => Poll::Ready(Some(Ok(data))),
                Err(_) => continue,
            },
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        };
    }
}

/// A body rather than a `Stream` so the server polls it directly: no stream-to-body adapter per chunk.
impl Body for TimedBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.poll_chunk(cx).map(|c| c.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

impl TimedBody {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        let this = self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.deferred.take() {
            Some(Deferred::End) => {
                this.done = true;
                this.finish(true, "");
                return Poll::Ready(None);
            }
            Some(Deferred::Error(msg)) => return this.fail("upstream_stream_error", &msg),
            None => {}
        }
        loop {
            match poll_data(&mut this.inner, cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.yielded = 0;
                    if this.held.push(chunk) >= COALESCE_MAX {
                        return this.pass_on();
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    let msg = format!("upstream error mid-stream: {}", super::error_chain(&*e));
                    if this.held.is_empty() {
                        return this.fail("upstream_stream_error", &msg);
                    }
                    this.deferred = Some(Deferred::Error(msg));
                    return this.pass_on();
                }
                Poll::Ready(None) => {
                    if this.held.is_empty() {
                        this.done = true;
                        this.finish(true, "");
                        return Poll::Ready(None);
                    }
                    this.deferred = Some(Deferred::End);
                    return this.pass_on();
                }
                Poll::Pending if !this.held.is_empty() => {
                    if this.yielded >= this.handover_turns {
                        return this.pass_on();
                    }
                    // A turn for the upstream connection to hand over chunks it has already read.
                    this.yielded += 1;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Pending => {
                    return match this.sleep.as_mut().poll(cx) {
                        Poll::Ready(()) => {
                            let total_hit =
                                this.total_deadline.is_some_and(|d| Instant::now() >= d);
                            let msg = if total_hit {
                                "timeout: stream exceeded the total time limit"
                            } else {
                                "timeout: no data from upstream within the chunk timeout"
                            };
                            this.fail("stream_timeout", msg)
                        }
                        Poll::Pending => Poll::Pending,
                    }
                }
            }
        }
    }

    /// Passes on the held chunks as one frame and restarts the between-chunk timer.
    fn pass_on(&mut self) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        let chunk = self.held.take();
        self.yielded = 0;
        let mut next = Instant::now() + self.chunk_timeout;
        if let Some(total) = self.total_deadline {
            next = next.min(total);
        }
        self.sleep.as_mut().reset(next);
        if let Some(scanner) = &mut self.scanner {
            scanner.feed(&chunk);
        }
        Poll::Ready(Some(Ok(chunk)))
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        // Still holding the record means the client went away before the stream ended.
        self.finish(false, "client disconnected before the stream ended");
    }
}

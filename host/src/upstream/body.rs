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
    record: Option<CallRecord>,
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
}

enum Deferred {
    End,
    Error(String),
}

/// Chunks already waiting are joined into one frame up to this size: one write (and one wakeup of the
/// client's side) instead of one per upstream chunk, with no added delay.
const COALESCE_MAX: usize = 64 * 1024;

impl TimedBody {
    pub fn new(
        body: UpstreamBody,
        t: Timeouts,
        sse: bool,
        record: CallRecord,
        calllog: CallLog,
        lease: TokenLease,
    ) -> TimedBody {
        let full_scan = calllog.enabled();
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
            streaming_since: std::time::Instant::now(),
            deferred: None,
        }
    }

    fn finish(&mut self, success: bool, error: &str) {
        if let Some(mut r) = self.record.take() {
            r.upstream_wait += self.streaming_since.elapsed();
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
            self.calllog.finish(r);
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
        match poll_data(&mut this.inner, cx) {
            Poll::Ready(Some(Ok(first))) => {
                let mut joined: Option<bytes::BytesMut> = None;
                while joined.as_ref().map_or(first.len(), |b| b.len()) < COALESCE_MAX {
                    match poll_data(&mut this.inner, cx) {
                        Poll::Ready(Some(Ok(more))) => joined
                            .get_or_insert_with(|| bytes::BytesMut::from(&first[..]))
                            .extend_from_slice(&more),
                        Poll::Ready(Some(Err(e))) => {
                            this.deferred = Some(Deferred::Error(format!(
                                "upstream error mid-stream: {}",
                                super::error_chain(&*e)
                            )));
                            break;
                        }
                        Poll::Ready(None) => {
                            this.deferred = Some(Deferred::End);
                            break;
                        }
                        Poll::Pending => break,
                    }
                }
                let chunk = joined.map_or(first, |b| b.freeze());
                let mut next = Instant::now() + this.chunk_timeout;
                if let Some(total) = this.total_deadline {
                    next = next.min(total);
                }
                this.sleep.as_mut().reset(next);
                if let Some(scanner) = &mut this.scanner {
                    scanner.feed(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                let msg = format!("upstream error mid-stream: {}", super::error_chain(&*e));
                this.fail("upstream_stream_error", &msg)
            }
            Poll::Ready(None) => {
                this.done = true;
                this.finish(true, "");
                Poll::Ready(None)
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let total_hit = this.total_deadline.is_some_and(|d| Instant::now() >= d);
                    let msg = if total_hit {
                        "timeout: stream exceeded the total time limit"
                    } else {
                        "timeout: no data from upstream within the chunk timeout"
                    };
                    this.fail("stream_timeout", msg)
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        // Still holding the record means the client went away before the stream ended.
        self.finish(false, "client disconnected before the stream ended");
    }
}

//! The Server-Sent Events of a log stream (`GET /api/v1/jobs/{id}/logs/stream`): each event's
//! frame, and [`frames`], the whole stream of a follower with its heartbeats.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Serialize;

use super::{ErrorBody, Job};
use crate::log::LogRecord;
use crate::state::FollowEvent;
use crate::{Error, Result};

/// Server-Sent Events of `GET /api/v1/jobs/{id}/logs/stream`: event `log` carries a
/// [`LogRecord`] with the event id set to its sequence number; event `end` carries the final
/// [`Job`] and closes the stream.
pub const SSE_EVENT_LOG: &str = "log";
pub const SSE_EVENT_END: &str = "end";
/// The event that ends a log stream the server could not go on with: an [`ErrorBody`].
pub const SSE_EVENT_ERROR: &str = "error";
/// A comment line: what the server sends on a quiet log stream to keep it open.
pub const SSE_HEARTBEAT: &[u8] = b":\n\n";

/// One Server-Sent Event: `event:`, one `data:` line of `data` as JSON, then `id:` if given.
pub fn sse_event(event: &str, id: Option<u64>, data: &impl Serialize) -> Result<Bytes> {
    let json = serde_json::to_string(data)
        .map_err(|e| Error::backend("json", format!("encoding a {event} event: {e}")))?;
    // JSON has no raw line break, so the data fits on one `data:` line.
    let mut frame = format!("event:{event}\ndata:{json}\n");
    if let Some(id) = id {
        frame.push_str(&format!("id:{id}\n"));
    }
    frame.push('\n');
    Ok(frame.into())
}

/// The `log` event of a record, its sequence number as the event id.
pub fn sse_log_event(record: &LogRecord) -> Result<Bytes> {
    sse_event(SSE_EVENT_LOG, Some(record.seq), record)
}

/// The frames of a log follower's `events`: `log` events with the record's seq as event id,
/// then one `end` event with the final job. A store error ends the stream with an `error`
/// event. A record's event is encoded once for all of its job's followers
/// ([`SharedRecord`](crate::state::SharedRecord)).
///
/// A comment ([`SSE_HEARTBEAT`]) goes out at a `heartbeat` tick when nothing was written since
/// the tick before, so a quiet stream gets one at least every two ticks and a busy one none: it
/// keeps proxies from closing a quiet stream, and finds a client that has left (the write
/// fails).
pub fn frames(
    events: impl Stream<Item = Result<FollowEvent>> + Send + 'static,
    heartbeat: Duration,
) -> impl Stream<Item = Bytes> + Send + 'static {
    struct Sse<S> {
        events: std::pin::Pin<Box<S>>,
        tick: tokio::time::Interval,
        wrote: bool,
        ended: bool,
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = Sse {
        events: Box::pin(events),
        tick,
        wrote: false,
        ended: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.ended {
            return None; // the events ended while their last frames were joined
        }
        loop {
            tokio::select! {
                event = st.events.next() => {
                    st.wrote = true;
                    let first = frame(event?);
                    let (chunk, ended) = with_ready_frames(first, &mut st.events);
                    st.ended = ended;
                    return Some((chunk, st));
                }
                _ = st.tick.tick() => {
                    if !std::mem::take(&mut st.wrote) {
                        return Some((Bytes::from_static(SSE_HEARTBEAT), st));
                    }
                }
            }
        }
    })
}

/// Most frames [`frames`] joins into one chunk.
const MAX_JOINED: usize = 64;

/// `first` and the frames of the events `events` has ready now, as one chunk: a follower
/// woken for a batch of records writes it at once (one chunk for hyper to frame and send).
/// Also whether `events` ended.
fn with_ready_frames<S>(first: Bytes, events: &mut std::pin::Pin<Box<S>>) -> (Bytes, bool)
where
    S: Stream<Item = Result<FollowEvent>>,
{
    use futures::FutureExt;
    let mut joined: Option<bytes::BytesMut> = None;
    let mut ended = false;
    for _ in 1..MAX_JOINED {
        // A `next()` that is not ready is dropped: nothing is lost, and the next real poll
        // registers the task's waker.
        match events.next().now_or_never() {
            Some(Some(event)) => {
                let out = joined.get_or_insert_with(|| bytes::BytesMut::from(&first[..]));
                out.extend_from_slice(&frame(event));
            }
            Some(None) => {
                ended = true;
                break;
            }
            None => break,
        }
    }
    (joined.map_or(first, bytes::BytesMut::freeze), ended)
}

/// The SSE frame of one follower event; a comment if it cannot be encoded (logged).
pub fn frame(event: Result<FollowEvent>) -> Bytes {
    let frame = match event {
        Ok(FollowEvent::Record(record)) => {
            let mut failed = None;
            let frame = record.encoded(|r| {
                sse_log_event(r).unwrap_or_else(|e| {
                    failed = Some(e);
                    Bytes::new()
                })
            });
            failed.map_or(Ok(frame), Err)
        }
        Ok(FollowEvent::End(job)) => sse_event(SSE_EVENT_END, None, &Job::from(*job)),
        Err(e) => {
            tracing::error!("log stream failed: {e}");
            let body = ErrorBody::new("internal", "reading the log failed");
            sse_event(SSE_EVENT_ERROR, None, &body)
        }
    };
    frame.unwrap_or_else(|e| {
        tracing::error!("encoding a log stream event failed: {e}");
        Bytes::from_static(b":unserialisable\n\n")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::sample_job;

    fn end() -> Result<FollowEvent> {
        Ok(FollowEvent::End(Box::new(sample_job())))
    }

    /// Events ready at once go out as one chunk, in order; the stream ends after the last.
    #[tokio::test(start_paused = true)]
    async fn ready_events_are_joined_into_one_chunk() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut out = Box::pin(frames(rx, Duration::from_secs(5)));
        for _ in 0..3 {
            tx.unbounded_send(Err(Error::invalid("x"))).unwrap();
        }
        tx.unbounded_send(end()).unwrap();
        drop(tx);
        let chunk = out.next().await.unwrap();
        let text = String::from_utf8(chunk.to_vec()).unwrap();
        let events: Vec<&str> = text.lines().filter(|l| l.starts_with("event:")).collect();
        assert_eq!(
            events,
            ["event:error", "event:error", "event:error", "event:end"],
            "{text}"
        );
        assert!(text.ends_with("\n\n"), "{text:?}");
        assert_eq!(out.next().await, None);
    }

    /// A heartbeat only after a whole quiet tick: none on a busy stream, one per tick (at
    /// least every two) on a quiet one, and the `end` event last.
    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_gets_heartbeats_and_a_busy_one_none() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut out = Box::pin(frames(rx, Duration::from_secs(5)));
        macro_rules! next {
            () => {
                tokio::time::timeout(Duration::from_secs(60), out.next())
                    .await
                    .expect("a frame or the end")
            };
        }
        // Busy: an event every second for 12 s, no heartbeat in between.
        for _ in 0..12 {
            tx.unbounded_send(Err(Error::invalid("x"))).unwrap();
            let got = next!().unwrap();
            assert!(got.starts_with(b"event:error\n"), "{got:?}");
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        // Quiet: the first heartbeat within two ticks, then one per tick.
        let quiet = tokio::time::Instant::now();
        assert_eq!(next!().unwrap(), SSE_HEARTBEAT);
        assert!(quiet.elapsed() <= Duration::from_secs(10));
        let first = tokio::time::Instant::now();
        assert_eq!(next!().unwrap(), SSE_HEARTBEAT);
        assert_eq!(first.elapsed(), Duration::from_secs(5));
        tx.unbounded_send(end()).unwrap();
        let got = next!().unwrap();
        assert!(got.starts_with(b"event:end\ndata:{"), "{got:?}");
        drop(tx);
        assert_eq!(next!(), None, "the stream ends with its events");
    }
}

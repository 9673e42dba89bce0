//! Wake-ups of followed jobs from Firestore: one `Listen` stream per watched job, whose target
//! is the job's two documents that change when a follower has something to read: its record
//! (`<p>jobs/<id>`, every status change) and its log head (`<p>log_heads/<id>`, rewritten by
//! every append).
//!
//! - The streams go over a connection of their own, opened at the first watch (a job process,
//!   which only writes, never opens it): Google's front ends take about 100 concurrent
//!   streams per HTTP/2 connection, and the store's own requests must not queue behind them.
//!   For the same reason a store has at most [`MAX_WATCHES`] watches; past that
//!   [`Listener::watch`] returns `None` and those jobs are polled.
//! - A watch is [live](JobWatch::is_live) from the target's first `CURRENT` (Firestore has
//!   sent the documents as they are; the watch wakes then, so what changed while it connected
//!   is read) until the stream fails. Then it is not live, its reader polls, and the stream is
//!   opened again after a pause (100 ms, doubling up to 30 s while it keeps failing before
//!   `CURRENT`).
//! - Once live, any document change, delete or removal, an existence filter or a `RESET` wakes
//!   the watch; `NO_CHANGE` and `ADD` do not (nor the initial snapshot: becoming live wakes).
//!   A target removed by the server (its `cause`) counts as a failed stream.
//! - Dropping the [`JobWatch`] ends its task, which drops the stream (the server sees it
//!   cancelled).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use firestore::FirestoreDb;
use futures::StreamExt;
use gcloud_sdk::google::firestore::v1::{
    listen_request, listen_response, target, target_change, ListenRequest, Target,
};
use gcloud_sdk::tonic::{Code, Request, Status};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::firestore::{open, rpc};
use crate::state::{JobWaker, JobWatch};
use crate::Result;

/// Watches (Listen streams) a store keeps at most: Google's front ends take about 100
/// concurrent streams per connection.
pub const MAX_WATCHES: usize = 100;
/// The one target of each stream.
const TARGET: i32 = 1;
/// The pause before listening again after the first failure; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// The Listen side of a [`GcpStore`](super::GcpStore).
#[derive(Debug)]
pub(super) struct Listener {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    project: String,
    emulator: Option<String>,
    /// The listening connection and the database's name, opened at the first watch.
    connection: OnceCell<(FirestoreDb, String)>,
    /// Watches whose task runs now (at most [`MAX_WATCHES`]).
    watches: AtomicUsize,
    /// Listen streams open now.
    streams: AtomicUsize,
}

impl Listener {
    pub(super) fn new(project: &str, emulator: Option<&str>) -> Self {
        Listener {
            shared: Arc::new(Shared {
                project: project.to_owned(),
                emulator: emulator.map(str::to_owned),
                connection: OnceCell::new(),
                watches: AtomicUsize::new(0),
                streams: AtomicUsize::new(0),
            }),
        }
    }

    /// A watch woken by a Listen stream on `documents` (full names); `None` outside a tokio
    /// runtime or when the store has [`MAX_WATCHES`] already.
    pub(super) fn watch(&self, documents: Vec<String>) -> Option<JobWatch> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let slot = Slot::take(&self.shared)?;
        let (watch, waker) = JobWatch::with_waker();
        runtime.spawn(run(self.shared.clone(), documents, waker, slot));
        Some(watch)
    }

    /// Listen streams open now.
    pub(super) fn streams(&self) -> usize {
        self.shared.streams.load(Ordering::Relaxed)
    }
}

/// One of the [`MAX_WATCHES`] places, given back when dropped.
struct Slot(Arc<Shared>);

impl Slot {
    fn take(shared: &Arc<Shared>) -> Option<Slot> {
        let taken = shared
            .watches
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_WATCHES).then_some(n + 1)
            });
        match taken {
            Ok(_) => Some(Slot(shared.clone())),
            Err(_) => {
                tracing::warn!(
                    "{MAX_WATCHES} jobs are followed through Firestore Listen streams already; \
                     this one is polled"
                );
                None
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.watches.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts an open stream while it lives.
struct OpenStream<'a>(&'a AtomicUsize);

impl<'a> OpenStream<'a> {
    fn new(streams: &'a AtomicUsize) -> Self {
        streams.fetch_add(1, Ordering::Relaxed);
        OpenStream(streams)
    }
}

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The watch's task: listens, and listens again after a pause when the stream fails, until
/// the watch is dropped.
async fn run(shared: Arc<Shared>, documents: Vec<String>, waker: JobWaker, _slot: Slot) {
    let mut failures = 0u32;
    loop {
        let mut current = false;
        let ended = tokio::select! {
            _ = waker.dropped() => return,
            ended = listen(&shared, &documents, &waker, &mut current) => ended,
        };
        waker.set_live(false);
        if current {
            failures = 0;
        }
        failures += 1;
        let pause = pause(failures);
        let why = match ended {
            Ok(()) => "the server ended the stream".to_owned(),
            Err(e) => e.to_string(),
        };
        if failures == 1 {
            tracing::debug!(
                ?documents,
                "Firestore Listen stream ended ({why}); again in {pause:?}"
            );
        } else {
            tracing::warn!(
                ?documents,
                "Firestore Listen stream failed {failures} times ({why}); polling, again in {pause:?}"
            );
        }
        tokio::select! {
            _ = waker.dropped() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// One Listen stream, until it ends; sets `current` once the target is.
async fn listen(
    shared: &Shared,
    documents: &[String],
    waker: &JobWaker,
    current: &mut bool,
) -> Result<()> {
    let (db, database) = shared
        .connection
        .get_or_try_init(|| open(&shared.project, shared.emulator.as_deref()))
        .await?;
    let request = ListenRequest {
        database: database.clone(),
        target_change: Some(listen_request::TargetChange::AddTarget(Target {
            target_id: TARGET,
            target_type: Some(target::TargetType::Documents(target::DocumentsTarget {
                documents: documents.to_vec(),
            })),
            ..Default::default()
        })),
        ..Default::default()
    };
    // The request side stays open while this stream is wanted (closing it ends the stream),
    // and closes when this future ends or is dropped: the HTTP/2 stream is then released
    // (hyper keeps sending a request body that never ends, and the stream with it).
    let wanted = CancellationToken::new();
    let _unwanted_on_drop = wanted.clone().drop_guard();
    let requests = futures::stream::iter([Some(request)])
        .chain(futures::stream::once(async move {
            wanted.cancelled().await;
            None
        }))
        .filter_map(std::future::ready);
    let mut responses = db
        .client()
        .get()
        .listen(Request::new(requests))
        .await
        .map_err(|s| rpc("Listen", s))?
        .into_inner();
    let _open = OpenStream::new(&shared.streams);
    while let Some(response) = responses.message().await.map_err(|s| rpc("Listen", s))? {
        use listen_response::ResponseType;
        use target_change::TargetChangeType;
        match response.response_type {
            Some(ResponseType::TargetChange(change)) => {
                match TargetChangeType::try_from(change.target_change_type) {
                    Ok(TargetChangeType::Current) => {
                        *current = true;
                        waker.set_live(true);
                    }
                    Ok(TargetChangeType::Reset) if *current => waker.wake(),
                    Ok(TargetChangeType::Remove) => {
                        let status = match change.cause {
                            Some(cause) => Status::new(Code::from(cause.code), cause.message),
                            None => Status::cancelled("the server removed the target"),
                        };
                        return Err(rpc("Listen", status));
                    }
                    // NO_CHANGE, ADD, a RESET before CURRENT.
                    _ => {}
                }
            }
            // A document changed, was deleted or left the target, or a count to check; before
            // `CURRENT`, the initial snapshot, which becoming live wakes for.
            Some(_) if *current => waker.wake(),
            Some(_) | None => {}
        }
    }
    Ok(())
}

/// The pause after `failures` failures in a row: doubling from [`FIRST_PAUSE`] up to
/// [`MAX_PAUSE`], stretched by up to a tenth so that the streams of a connection that broke do
/// not all come back at once.
fn pause(failures: u32) -> Duration {
    let base = FIRST_PAUSE
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(MAX_PAUSE);
    let spread = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 100)
        .unwrap_or(0);
    base + base * spread / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_up_to_thirty_seconds() {
        let within = |failures, low: Duration| {
            let p = pause(failures);
            assert!(p >= low && p <= low + low / 10, "{failures}: {p:?}");
        };
        within(1, Duration::from_millis(100));
        within(2, Duration::from_millis(200));
        within(5, Duration::from_millis(1600));
        within(20, Duration::from_secs(30));
        within(u32::MAX, Duration::from_secs(30));
    }
}

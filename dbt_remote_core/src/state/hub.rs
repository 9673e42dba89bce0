//! One reader per followed job: the [`LogHub`] reads a job's new records from the store once,
//! whoever follows the job, and fans them out to all of its followers.
//!
//! Each followed job has a *feed*: a task that reads the job's status, then its records after
//! the last one it read, and publishes how far the log goes (and, at the end, the final record)
//! on a watch channel, keeping the most recent records in memory. It reads again when the store
//! says the job changed ([`StateStore::watch_job`]: inotify on the local store, a notification
//! in memory, a Firestore Listen stream on GCP), at the latest after the safety poll; a store
//! that cannot tell, or whose watch is not [live](super::JobWatch::is_live) (a Listen stream
//! reconnecting), is read every `poll`, once per job instead of once per follower. The feed
//! ends when its job has ended or nobody follows it any more.
//!
//! A follower keeps its own cursor: it takes the records after it from the feed's memory when
//! they are there, else from the store (a follower that starts far behind, or falls behind), so
//! each follower gets every record exactly once, in order, then the end, as with
//! [`follow_logs`](super::follow_logs). The store stays the durable source: a follower that
//! reconnects resumes from its `Last-Event-ID` like any other.
//!
//! Records reach followers as [`SharedRecord`]s: read once, and encoded once for the wire
//! whoever sends them. With many followers (more than [`DEFAULT_BATCH_FOLLOWERS`]), a feed
//! publishes at most one page every [`DEFAULT_BATCH_INTERVAL`]: each follower then wakes and
//! writes once per batch instead of once per record, which is what 1,000 followers cost.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::{FollowEvent, StateStore};
use crate::job::{JobId, JobRecord};
use crate::log::LogRecord;
use crate::{Error, Result};

/// Records a feed keeps in memory for its followers.
const RECENT: usize = 4096;
/// Records read from the store at once.
const PAGE: usize = 1000;
/// Default longest wait of a feed between two reads when its store wakes it.
pub const DEFAULT_SAFETY_POLL: Duration = Duration::from_secs(1);
/// Default number of followers of one job above which its feed publishes in batches.
pub const DEFAULT_BATCH_FOLLOWERS: usize = 100;
/// Default shortest time between two pages a feed publishes to many followers.
pub const DEFAULT_BATCH_INTERVAL: Duration = Duration::from_millis(250);

/// A log record as the followers of a job share it: one copy in memory for all of them, and
/// its wire encoding made once, by the first follower that sends it.
#[derive(Debug, Clone)]
pub struct SharedRecord(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    record: LogRecord,
    encoded: OnceLock<Bytes>,
}

impl SharedRecord {
    pub fn new(record: LogRecord) -> Self {
        SharedRecord(Arc::new(Shared {
            record,
            encoded: OnceLock::new(),
        }))
    }

    /// The record's wire encoding: `encode`d by the first caller, the same bytes for the rest.
    /// Every caller must pass the same encoding (the server has one: an SSE event).
    pub fn encoded(&self, encode: impl FnOnce(&LogRecord) -> Bytes) -> Bytes {
        self.0
            .encoded
            .get_or_init(|| encode(&self.0.record))
            .clone()
    }
}

impl std::ops::Deref for SharedRecord {
    type Target = LogRecord;

    fn deref(&self) -> &LogRecord {
        &self.0.record
    }
}

impl PartialEq for SharedRecord {
    fn eq(&self, other: &Self) -> bool {
        self.0.record == other.0.record
    }
}

impl From<LogRecord> for SharedRecord {
    fn from(record: LogRecord) -> Self {
        SharedRecord::new(record)
    }
}

/// When a feed publishes in batches: above `followers` followers, at most one page every
/// `interval`.
#[derive(Debug, Clone, Copy)]
struct Batching {
    followers: usize,
    interval: Duration,
}

/// The feeds of the jobs being followed; cheap to clone (clones share the feeds).
#[derive(Debug, Clone)]
pub struct LogHub {
    store: Arc<dyn StateStore>,
    feeds: Arc<Mutex<HashMap<JobId, Arc<Feed>>>>,
    safety_poll: Duration,
    batching: Batching,
}

/// How far a feed has read, as its followers see it.
#[derive(Debug, Clone, Default)]
struct Head {
    /// The last record read (0: none).
    seq: u64,
    /// The job's final record, once every record has been read.
    end: Option<Box<JobRecord>>,
    /// Why the feed stopped without an end (a store error).
    failed: Option<String>,
}

#[derive(Debug)]
struct Feed {
    head: watch::Sender<Head>,
    /// The most recent records, with consecutive sequence numbers.
    recent: RwLock<VecDeque<SharedRecord>>,
}

impl Feed {
    /// Up to `limit` records after `after`, when the feed still holds the next one.
    fn after(&self, after: u64, limit: usize) -> Option<Vec<SharedRecord>> {
        let recent = self.recent.read().unwrap();
        let first = recent.front()?.seq;
        if after + 1 < first || after >= recent.back()?.seq {
            return None;
        }
        let skip = (after + 1 - first) as usize;
        let end = recent.len().min(skip + limit);
        Some(recent.range(skip..end).cloned().collect())
    }

    fn keep(&self, page: Vec<LogRecord>) {
        let mut recent = self.recent.write().unwrap();
        recent.extend(page.into_iter().map(SharedRecord::new));
        let excess = recent.len().saturating_sub(RECENT);
        recent.drain(..excess);
    }
}

impl LogHub {
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        LogHub {
            store,
            feeds: Arc::default(),
            safety_poll: DEFAULT_SAFETY_POLL,
            batching: Batching {
                followers: DEFAULT_BATCH_FOLLOWERS,
                interval: DEFAULT_BATCH_INTERVAL,
            },
        }
    }

    /// Above `followers` followers of one job, its feed publishes at most one page every
    /// `interval` (defaults [`DEFAULT_BATCH_FOLLOWERS`], [`DEFAULT_BATCH_INTERVAL`]): a record
    /// then waits up to `interval` longer, and each follower writes once per batch.
    pub fn with_batching(mut self, followers: usize, interval: Duration) -> Self {
        self.batching = Batching {
            followers,
            interval,
        };
        self
    }

    /// The longest a feed waits between two reads on a store that wakes it (default
    /// [`DEFAULT_SAFETY_POLL`]): a missed wake-up costs at most this.
    pub fn with_safety_poll(mut self, safety_poll: Duration) -> Self {
        self.safety_poll = safety_poll;
        self
    }

    /// Jobs with a feed now (for tests and metrics).
    pub fn feeds(&self) -> usize {
        self.feeds.lock().unwrap().len()
    }

    /// Follows job `id`'s log from `after` until the job ends: every record exactly once, in
    /// order, then [`FollowEvent::End`]. `poll` is how often the job's feed reads a store
    /// that cannot wake it.
    pub fn follow(
        &self,
        id: JobId,
        after: u64,
        poll: Duration,
    ) -> impl futures::Stream<Item = Result<FollowEvent>> + Send + 'static {
        let follower = Follower {
            hub: self.clone(),
            id,
            poll,
            cursor: after,
            rx: None,
            buffered: VecDeque::new(),
            done: false,
        };
        futures::stream::try_unfold(follower, |mut f| async move {
            let event = f.next().await?;
            Ok(event.map(|e| (e, f)))
        })
    }

    /// A receiver of job `id`'s feed, starting the feed (from `after`) when there is none.
    fn subscribe(
        &self,
        id: JobId,
        after: u64,
        poll: Duration,
    ) -> (Arc<Feed>, watch::Receiver<Head>) {
        let mut feeds = self.feeds.lock().unwrap();
        if let Some(feed) = feeds.get(&id) {
            return (feed.clone(), feed.head.subscribe());
        }
        let (head, rx) = watch::channel(Head {
            seq: after,
            ..Head::default()
        });
        let feed = Arc::new(Feed {
            head,
            recent: RwLock::default(),
        });
        feeds.insert(id, feed.clone());
        tokio::spawn(read_feed(self.clone(), id, feed.clone(), after, poll));
        (feed, rx)
    }

    /// Forgets job `id`'s feed (when it is `feed`), unless someone still follows it and it is
    /// not `ended`; says whether it was forgotten.
    fn retire(&self, id: JobId, feed: &Arc<Feed>, ended: bool) -> bool {
        let mut feeds = self.feeds.lock().unwrap();
        if !ended && feed.head.receiver_count() > 0 {
            return false;
        }
        if feeds.get(&id).is_some_and(|f| Arc::ptr_eq(f, feed)) {
            feeds.remove(&id);
        }
        true
    }
}

/// The feed's task: reads the job's status, then its new records, until the job has ended
/// and every record is read, or nobody follows it.
async fn read_feed(hub: LogHub, id: JobId, feed: Arc<Feed>, mut after: u64, poll: Duration) {
    let watch = hub.store.watch_job(id);
    loop {
        // The status first: the runner writes every record before the final status, so the
        // records read after seeing a final status are the last ones.
        let read = async {
            let job = hub.store.get_job(id).await?;
            let page = hub.store.read_logs(id, after, PAGE).await?;
            Ok::<_, Error>((job, page))
        };
        let (job, page) = match read.await {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(job = %id, "reading the log of a followed job failed: {e}");
                feed.head.send_modify(|h| h.failed = Some(e.to_string()));
                hub.retire(id, &feed, true);
                return;
            }
        };
        if let Some(last) = page.last() {
            after = last.seq;
            feed.keep(page);
            feed.head.send_modify(|h| h.seq = after);
            // Many followers: let records gather, so that each follower wakes (and writes to
            // its connection) once per batch rather than once per record.
            if feed.head.receiver_count() > hub.batching.followers {
                tokio::time::sleep(hub.batching.interval).await;
            }
            continue;
        }
        if job.status.is_final() {
            feed.head.send_modify(|h| h.end = Some(Box::new(job)));
            hub.retire(id, &feed, true);
            return;
        }
        // A watch that is not live (a Listen stream reconnecting) may miss changes: poll.
        let wait = match &watch {
            Some(w) if w.is_live() => hub.safety_poll,
            _ => poll,
        };
        let changed = async {
            match &watch {
                Some(w) => w.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = changed => {}
            _ = tokio::time::sleep(wait) => {}
            _ = feed.head.closed() => {
                if hub.retire(id, &feed, false) {
                    return;
                }
            }
        }
    }
}

/// One follower's place in a job's log.
struct Follower {
    hub: LogHub,
    id: JobId,
    poll: Duration,
    /// The last record given to this follower.
    cursor: u64,
    rx: Option<(Arc<Feed>, watch::Receiver<Head>)>,
    buffered: VecDeque<SharedRecord>,
    done: bool,
}

impl Follower {
    async fn next(&mut self) -> Result<Option<FollowEvent>> {
        loop {
            if let Some(record) = self.buffered.pop_front() {
                self.cursor = record.seq;
                return Ok(Some(FollowEvent::Record(record)));
            }
            if self.done {
                return Ok(None);
            }
            let (feed, rx) = match &mut self.rx {
                Some(sub) => sub,
                None => self
                    .rx
                    .insert(self.hub.subscribe(self.id, self.cursor, self.poll)),
            };
            let (seq, end, failed) = {
                let head = rx.borrow_and_update();
                (head.seq, head.end.clone(), head.failed.clone())
            };
            if let Some(reason) = failed {
                self.done = true;
                return Err(Error::backend("log follower", reason));
            }
            if self.cursor < seq {
                let page = match feed.after(self.cursor, PAGE) {
                    Some(page) => page,
                    None => {
                        let page = self.hub.store.read_logs(self.id, self.cursor, PAGE).await?;
                        page.into_iter().map(SharedRecord::new).collect()
                    }
                };
                // Only what the feed had read: the end comes after the last record it saw.
                self.buffered.extend(
                    page.into_iter()
                        .filter(|r| r.seq > self.cursor && r.seq <= seq),
                );
                continue;
            }
            if let Some(job) = end {
                self.done = true;
                return Ok(Some(FollowEvent::End(job)));
            }
            if rx.changed().await.is_err() {
                // The feed stopped (nobody followed it for a moment): start a new one.
                self.rx = None;
            }
        }
    }
}

#[cfg(test)]
mod tests;

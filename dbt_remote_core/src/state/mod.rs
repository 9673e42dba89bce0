//! Where jobs live: the [`StateStore`] trait, its contract, and its implementations.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::blob::BlobHash;
use crate::job::{JobId, JobRecord, JobStatus};
use crate::log::{LogEntry, LogRecord};
use crate::paths::RelPath;
use crate::{Error, Result};

pub mod cache;
mod echo;
#[cfg(feature = "gcp")]
pub mod gcp;
mod hub;
mod inotify;
mod local;
mod memory;
mod wake;

pub use cache::{CacheKey, CacheKind, DEFAULT_MAX_CACHE_ENTRY_BYTES};
pub use echo::{cloud_logging_line, EchoLogs};
#[cfg(feature = "gcp")]
pub use gcp::{GcpStore, GcpStoreBuilder, GcpWritten};
pub use hub::{LogHub, SharedRecord, DEFAULT_SAFETY_POLL};
pub use local::{LocalStore, DEFAULT_LOCK_TIMEOUT};
pub use memory::MemoryStore;
pub use wake::{JobWaker, JobWakeups, JobWatch};

/// A page of [`StateStore::list_jobs`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobQuery {
    /// Only jobs with this status.
    pub status: Option<JobStatus>,
    /// Only jobs created before this one (the `next` of the previous page).
    pub before: Option<JobId>,
    /// At most this many jobs (at least 1 is returned when any match).
    pub limit: usize,
}

/// One page of jobs, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    pub jobs: Vec<JobRecord>,
    /// Pass as [`JobQuery::before`] to get the next page; `None` on the last page.
    pub next: Option<JobId>,
}

/// A stored artifact's name and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    pub name: RelPath,
    pub size: u64,
}

/// Durable state of jobs: records, input blobs, logs and artifacts.
///
/// # Contract
/// - **Job records.** [`create_job`](Self::create_job) is create-only: it fails with
///   [`Error::AlreadyExists`] when the id exists, and stores the record with `version = 1`.
///   [`update_job`](Self::update_job) is a compare-and-set: it replaces the record only if the
///   stored version equals the given record's `version`, stores it with `version + 1` and returns
///   it; otherwise [`Error::Precondition`] and nothing changes. Two concurrent updates of the same
///   version: exactly one wins. Records are deleted only by [`delete_job`](Self::delete_job).
/// - **Listing** is newest first (job ids are UUID v7, so by id), paged by
///   [`JobQuery::before`]; a record being updated concurrently appears once, in some version.
/// - **Blobs** are content-addressed by SHA-256. [`put_blob`](Self::put_blob) checks the hash
///   (else [`Error::InvalidInput`]) and is idempotent; a blob is visible whole or not at all.
///   [`get_blob`](Self::get_blob) checks the stored content against its hash: a damaged blob
///   is refused with [`Error::NotFound`] (saying it is damaged), and a `put_blob` of the right
///   content replaces it.
/// - **Log records** longer than the store's record cap (default
///   [`DEFAULT_MAX_LOG_RECORD_BYTES`]) are stored cut, ending with the marker of
///   [`cap_log_entry`].
/// - **Logs** are append-only per job. [`append_logs`](Self::append_logs) gives the entries the
///   next sequence numbers (the first record of a job is 1, no gaps), atomically for the batch
///   and safely against concurrent appenders (also from other processes, for stores that are
///   shared between processes). Its cost depends on the batch, not on the length of the log.
///   [`read_logs`](Self::read_logs) returns records with `seq > after`, in order; it never
///   changes state, so any number of readers each see every record.
/// - **Artifacts** are files a job produced, by relative name; a put replaces the previous one
///   atomically.
/// - **Watching** is optional: [`watch_job`](Self::watch_job) returns a [`JobWatch`] that wakes
///   after the job's record or log may have changed, also by another process for stores
///   shared between processes (the local store, by inotify). It may wake spuriously or
///   coalesce changes, and may miss none that happen after it returned. A watch fed by a
///   connection (Firestore's Listen) is not [live](JobWatch::is_live) while it connects or
///   reconnects, and wakes when it becomes live and when it stops being live; readers poll
///   while it is not. A store that cannot tell returns `None` (the default), and readers poll.
/// - Logs and artifacts of an unknown job fail with [`Error::NotFound`].
/// - **Deleting** (what [`retention`](crate::retention) calls): [`delete_job`](Self::delete_job)
///   removes the record, its log and its artifacts; the record goes first, so a job is never
///   listed without its record, and a delete that fails half-way is finished by the next one.
///   It is idempotent and says whether there was a record. It does not look at the status: the
///   caller deletes only final jobs. [`list_blobs`](Self::list_blobs) lists every blob with the
///   time it was stored (a blob stored while the list is made may or may not appear);
///   [`delete_blob`](Self::delete_blob) is idempotent and says whether there was one.
/// - **Cache entries** ([`cache`]) are keyed by [`CacheKey`] (kind + SHA-256); two kinds with
///   the same hash are two entries. [`put_cache`](Self::put_cache) replaces the entry
///   atomically (a reader sees the old or the new content whole; of two concurrent puts, the
///   last writer wins) and refuses, with [`Error::TooLarge`] and nothing stored, an entry past
///   the store's bound (default [`DEFAULT_MAX_CACHE_ENTRY_BYTES`]).
///   [`get_cache`](Self::get_cache) returns `None` for a missing entry. Cache entries belong to
///   no job: deleting jobs and blobs leaves them.
#[async_trait]
pub trait StateStore: fmt::Debug + Send + Sync + 'static {
    /// Stores a new job record (create-only); returns it as stored.
    async fn create_job(&self, job: &JobRecord) -> Result<JobRecord>;
    /// The job's current record.
    async fn get_job(&self, id: JobId) -> Result<JobRecord>;
    /// Compare-and-set on `job.version`; returns the record as stored (version bumped).
    async fn update_job(&self, job: &JobRecord) -> Result<JobRecord>;
    /// Jobs, newest first.
    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage>;

    /// Stores a blob under its hash; fails if `content` does not hash to `hash`.
    async fn put_blob(&self, hash: &BlobHash, content: Bytes) -> Result<()>;
    /// The hashes of `hashes` that the store does not hold, in the given order.
    async fn missing_blobs(&self, hashes: &[BlobHash]) -> Result<Vec<BlobHash>>;
    /// A blob's content.
    async fn get_blob(&self, hash: &BlobHash) -> Result<Bytes>;
    /// A stored blob's size in bytes ([`Error::NotFound`] when it is not stored). The default
    /// reads the blob; stores that know sizes without reading override it.
    async fn blob_size(&self, hash: &BlobHash) -> Result<u64> {
        Ok(self.get_blob(hash).await?.len() as u64)
    }

    /// Appends log entries; returns the sequence number of the last one (of the log, if
    /// `entries` is empty).
    async fn append_logs(&self, id: JobId, entries: &[LogEntry]) -> Result<u64>;
    /// Whether a writer should gather a job's log entries over a short window before each
    /// append: a store whose every append writes the same document (Firestore's log head, with
    /// its ~1 write/s sustained rate per document). Default `false`: append at once.
    fn batches_log_appends(&self) -> bool {
        false
    }
    /// A wake-up for changes of job `id`'s record or log, when the store can give one.
    fn watch_job(&self, id: JobId) -> Option<JobWatch> {
        let _ = id;
        None
    }
    /// Up to `limit` records with `seq > after`, in order.
    async fn read_logs(&self, id: JobId, after: u64, limit: usize) -> Result<Vec<LogRecord>>;

    /// Stores (or replaces) an artifact of a job.
    async fn put_artifact(&self, id: JobId, name: &RelPath, content: Bytes) -> Result<()>;
    /// The job's artifacts, by name.
    async fn list_artifacts(&self, id: JobId) -> Result<Vec<ArtifactInfo>>;
    /// One artifact's content.
    async fn get_artifact(&self, id: JobId, name: &RelPath) -> Result<Bytes>;

    /// Deletes the job's record, log and artifacts; `false` when it had no record.
    async fn delete_job(&self, id: JobId) -> Result<bool>;
    /// Every stored blob and when it was stored.
    async fn list_blobs(&self) -> Result<Vec<BlobInfo>>;
    /// Deletes a blob; `false` when there was none.
    async fn delete_blob(&self, hash: &BlobHash) -> Result<bool>;

    /// Stores (or replaces, atomically) a cache entry; [`Error::TooLarge`] past the bound.
    async fn put_cache(&self, key: &CacheKey, content: Bytes) -> Result<()>;
    /// A cache entry's content; `None` when there is none.
    async fn get_cache(&self, key: &CacheKey) -> Result<Option<Bytes>>;
}

/// A stored blob, as [`StateStore::list_blobs`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub hash: BlobHash,
    /// When the blob was stored (its file's or object's modification time).
    pub stored_at: chrono::DateTime<chrono::Utc>,
}

/// What a [`StateStoreExt::modify_job`] closure decides.
pub enum Modify {
    /// Store the modified record.
    Write,
    /// Leave the record as it is.
    Keep,
}

/// Conveniences over every [`StateStore`].
#[async_trait]
pub trait StateStoreExt: StateStore {
    /// Reads the job, lets `f` change it, and writes it back with compare-and-set, retrying on
    /// a concurrent write. Returns the record as stored (or as read, if `f` kept it).
    async fn modify_job<F>(&self, id: JobId, mut f: F) -> Result<JobRecord>
    where
        F: FnMut(&mut JobRecord) -> Modify + Send,
    {
        loop {
            let mut job = self.get_job(id).await?;
            match f(&mut job) {
                Modify::Keep => return Ok(job),
                Modify::Write => match self.update_job(&job).await {
                    Err(Error::Precondition { .. }) => continue,
                    other => return other,
                },
            }
        }
    }

    /// Appends one entry.
    async fn log(&self, id: JobId, entry: LogEntry) -> Result<u64> {
        self.append_logs(id, std::slice::from_ref(&entry)).await
    }

    /// Every log record after `after`, reading in pages.
    async fn read_all_logs(&self, id: JobId, mut after: u64) -> Result<Vec<LogRecord>> {
        let mut all = Vec::new();
        loop {
            let page = self.read_logs(id, after, 1000).await?;
            match page.last() {
                None => return Ok(all),
                Some(last) => after = last.seq,
            }
            all.extend(page);
        }
    }
}

impl<T: StateStore + ?Sized> StateStoreExt for T {}

/// One step of [`follow_logs`].
#[derive(Debug, Clone, PartialEq)]
pub enum FollowEvent {
    /// A log record, in order (shared with the job's other followers).
    Record(SharedRecord),
    /// The job has ended and every record has been returned.
    End(Box<JobRecord>),
}

/// Follows a job's log from `after` until the job ends: every record exactly once, in order,
/// then [`FollowEvent::End`]. Polls the store every `poll`: one follower's reader (the server
/// shares one reader among a job's followers, [`LogHub`]).
pub fn follow_logs(
    store: Arc<dyn StateStore>,
    id: JobId,
    after: u64,
    poll: Duration,
) -> impl futures::Stream<Item = Result<FollowEvent>> + Send {
    struct State {
        store: Arc<dyn StateStore>,
        after: u64,
        buffered: std::collections::VecDeque<LogRecord>,
        ended: bool,
    }
    let state = State {
        store,
        after,
        buffered: Default::default(),
        ended: false,
    };
    futures::stream::try_unfold(state, move |mut st| async move {
        loop {
            if let Some(rec) = st.buffered.pop_front() {
                return Ok(Some((FollowEvent::Record(rec.into()), st)));
            }
            if st.ended {
                return Ok(None);
            }
            // Read the status first: the runner writes every record before the final status,
            // so records read after seeing a final status are the last ones.
            let job = st.store.get_job(id).await?;
            let page = st.store.read_logs(id, st.after, 1000).await?;
            if let Some(last) = page.last() {
                st.after = last.seq;
                st.buffered.extend(page);
                continue;
            }
            if job.status.is_final() {
                st.ended = true;
                return Ok(Some((FollowEvent::End(Box::new(job)), st)));
            }
            tokio::time::sleep(poll).await;
        }
    })
}

/// Default longest message of one stored log record (64 KiB): longer ones are cut.
pub const DEFAULT_MAX_LOG_RECORD_BYTES: usize = 64 * 1024;

/// The entry as a store keeps it: a message longer than `max` bytes is cut (at a character
/// boundary) and ends with `… [cut: N bytes]`, N being the bytes left out. Every store calls it
/// in `append_logs`.
pub fn cap_log_entry(entry: &LogEntry, max: usize) -> std::borrow::Cow<'_, LogEntry> {
    if entry.message.len() <= max {
        return std::borrow::Cow::Borrowed(entry);
    }
    let mut cut = max;
    while !entry.message.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut entry = entry.clone();
    let dropped = entry.message.len() - cut;
    entry.message.truncate(cut);
    entry.message.push_str(&format!("… [cut: {dropped} bytes]"));
    std::borrow::Cow::Owned(entry)
}

/// The error of a blob whose stored content no longer matches its hash.
fn damaged_blob(hash: &BlobHash) -> Error {
    Error::not_found(format!(
        "blob {hash} (the stored copy is damaged; upload it again)"
    ))
}

/// Takes up to `limit` of `jobs` (already filtered, newest first) as one page.
fn page(jobs: impl Iterator<Item = JobRecord>, limit: usize) -> JobPage {
    let mut jobs: Vec<JobRecord> = jobs.take(limit + 1).collect();
    let next = if jobs.len() > limit {
        jobs.truncate(limit);
        jobs.last().map(|j| j.id)
    } else {
        None
    };
    JobPage { jobs, next }
}

/// Fails unless `content` hashes to `hash`.
fn check_blob(hash: &BlobHash, content: &[u8]) -> Result<()> {
    let actual = BlobHash::of(content);
    if &actual != hash {
        return Err(Error::invalid(format!(
            "blob content does not match its hash: expected {hash}, got {actual}"
        )));
    }
    Ok(())
}

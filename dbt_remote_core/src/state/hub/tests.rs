use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::*;
use crate::blob::BlobHash;
use crate::job::{JobSpec, JobStatus};
use crate::log::{LogEntry, LogLevel};
use crate::paths::RelPath;
use crate::state::{
    ArtifactInfo, BlobInfo, CacheKey, JobPage, JobQuery, JobWaker, JobWatch, LocalStore,
    MemoryStore, Modify, StateStoreExt,
};

async fn new_job(store: &dyn StateStore) -> JobId {
    let spec = JobSpec {
        args: vec!["build".into()],
        ..Default::default()
    };
    store.create_job(&JobRecord::new(spec)).await.unwrap().id
}

async fn set_status(store: &dyn StateStore, id: JobId, status: JobStatus) {
    store
        .modify_job(id, |j| {
            j.status = status;
            Modify::Write
        })
        .await
        .unwrap();
}

async fn append(store: &dyn StateStore, id: JobId, from: usize, n: usize) {
    let entries: Vec<LogEntry> = (from..from + n)
        .map(|i| LogEntry::remote(LogLevel::Info, format!("line {i}")))
        .collect();
    store.append_logs(id, &entries).await.unwrap();
}

/// Everything a follower gets: the records' seqs, and whether it ended.
async fn drain(
    events: impl futures::Stream<Item = Result<FollowEvent>>,
) -> (Vec<u64>, Option<JobStatus>) {
    let mut seqs = Vec::new();
    let mut end = None;
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event.unwrap() {
            FollowEvent::Record(r) => seqs.push(r.seq),
            FollowEvent::End(job) => end = Some(job.status),
        }
    }
    (seqs, end)
}

/// A store that counts reads of logs and may hide its wake-ups, or give watches that only
/// the test wakes (as a Listen stream would, or not when it is down).
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn StateStore>,
    reads: AtomicUsize,
    watches: bool,
    wakers: Option<Mutex<Vec<JobWaker>>>,
}

#[async_trait]
impl StateStore for Counting {
    async fn create_job(&self, job: &JobRecord) -> Result<JobRecord> {
        self.inner.create_job(job).await
    }
    async fn get_job(&self, id: JobId) -> Result<JobRecord> {
        self.inner.get_job(id).await
    }
    async fn update_job(&self, job: &JobRecord) -> Result<JobRecord> {
        self.inner.update_job(job).await
    }
    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage> {
        self.inner.list_jobs(query).await
    }
    async fn put_blob(&self, hash: &BlobHash, content: Bytes) -> Result<()> {
        self.inner.put_blob(hash, content).await
    }
    async fn missing_blobs(&self, hashes: &[BlobHash]) -> Result<Vec<BlobHash>> {
        self.inner.missing_blobs(hashes).await
    }
    async fn get_blob(&self, hash: &BlobHash) -> Result<Bytes> {
        self.inner.get_blob(hash).await
    }
    async fn append_logs(&self, id: JobId, entries: &[LogEntry]) -> Result<u64> {
        self.inner.append_logs(id, entries).await
    }
    fn watch_job(&self, id: JobId) -> Option<JobWatch> {
        if let Some(wakers) = &self.wakers {
            let (watch, waker) = JobWatch::with_waker();
            wakers.lock().unwrap().push(waker);
            return Some(watch);
        }
        self.watches.then(|| self.inner.watch_job(id)).flatten()
    }
    async fn read_logs(&self, id: JobId, after: u64, limit: usize) -> Result<Vec<LogRecord>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read_logs(id, after, limit).await
    }
    async fn put_artifact(&self, id: JobId, name: &RelPath, content: Bytes) -> Result<()> {
        self.inner.put_artifact(id, name, content).await
    }
    async fn list_artifacts(&self, id: JobId) -> Result<Vec<ArtifactInfo>> {
        self.inner.list_artifacts(id).await
    }
    async fn get_artifact(&self, id: JobId, name: &RelPath) -> Result<Bytes> {
        self.inner.get_artifact(id, name).await
    }
    async fn delete_job(&self, id: JobId) -> Result<bool> {
        self.inner.delete_job(id).await
    }
    async fn list_blobs(&self) -> Result<Vec<BlobInfo>> {
        self.inner.list_blobs().await
    }
    async fn delete_blob(&self, hash: &BlobHash) -> Result<bool> {
        self.inner.delete_blob(hash).await
    }
    async fn put_cache(&self, key: &CacheKey, content: Bytes) -> Result<()> {
        self.inner.put_cache(key, content).await
    }
    async fn get_cache(&self, key: &CacheKey) -> Result<Option<Bytes>> {
        self.inner.get_cache(key).await
    }
}

fn counting(watches: bool) -> Arc<Counting> {
    Arc::new(Counting {
        inner: Arc::new(MemoryStore::new()),
        reads: AtomicUsize::new(0),
        watches,
        wakers: None,
    })
}

const LONG: Duration = Duration::from_secs(30);

#[tokio::test]
async fn every_follower_gets_every_record_once_in_order_then_the_end() {
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let id = new_job(&*store).await;
    set_status(&*store, id, JobStatus::Running).await;
    append(&*store, id, 0, 10).await;
    let hub = LogHub::new(store.clone());
    // Followers from the start, from the middle, and one joining later.
    let mut followers: Vec<_> = (0..50)
        .map(|i| tokio::spawn(drain(hub.follow(id, if i % 2 == 0 { 0 } else { 5 }, LONG))))
        .collect();
    for batch in 0..20 {
        append(&*store, id, 10 + batch * 7, 7).await;
        tokio::task::yield_now().await;
    }
    followers.push(tokio::spawn(drain(hub.follow(id, 100, LONG))));
    set_status(&*store, id, JobStatus::Succeeded).await;
    for (i, follower) in followers.into_iter().enumerate() {
        let (seqs, end) = tokio::time::timeout(Duration::from_secs(10), follower)
            .await
            .expect("a follower never ended")
            .unwrap();
        let from = if i == 50 {
            100
        } else if i % 2 == 0 {
            0
        } else {
            5
        };
        assert_eq!(seqs, (from + 1..=150).collect::<Vec<u64>>(), "follower {i}");
        assert_eq!(end, Some(JobStatus::Succeeded));
    }
    assert_eq!(hub.feeds(), 0, "the feed outlived its job");
}

#[tokio::test]
async fn a_job_is_read_once_whoever_follows_it() {
    let store = counting(true);
    let id = new_job(&*store).await;
    set_status(&*store, id, JobStatus::Running).await;
    let hub = LogHub::new(store.clone());
    let followers: Vec<_> = (0..200)
        .map(|_| tokio::spawn(drain(hub.follow(id, 0, LONG))))
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = store.reads.load(Ordering::Relaxed);
    for batch in 0..20 {
        append(&*store, id, batch * 5, 5).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    set_status(&*store, id, JobStatus::Failed).await;
    for follower in followers {
        let (seqs, end) = follower.await.unwrap();
        assert_eq!(seqs.len(), 100);
        assert_eq!(end, Some(JobStatus::Failed));
    }
    // One feed reads after each wake-up (20 appends, a status change and the end); 200
    // polling followers would have read thousands of times.
    let reads = store.reads.load(Ordering::Relaxed) - before;
    assert!(reads <= 60, "{reads} reads of the log for 20 appends");
}

#[tokio::test]
async fn a_store_that_wakes_delivers_at_once_and_one_that_cannot_is_polled() {
    for watches in [true, false] {
        let store = counting(watches);
        let id = new_job(&*store).await;
        set_status(&*store, id, JobStatus::Running).await;
        // Without wake-ups the feed polls every 20 ms; with them, it would wait 30 s.
        let poll = if watches {
            LONG
        } else {
            Duration::from_millis(20)
        };
        let hub = LogHub::new(store.clone()).with_safety_poll(LONG);
        let mut events = Box::pin(hub.follow(id, 0, poll));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        append(&*store, id, 0, 1).await;
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("no record within 5 s")
            .unwrap()
            .unwrap();
        assert!(matches!(event, FollowEvent::Record(ref r) if r.seq == 1));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "watches={watches}"
        );
    }
}

#[tokio::test]
async fn a_watch_that_is_not_live_is_polled_and_one_that_is_waits_for_its_wake_ups() {
    let store = Arc::new(Counting {
        inner: Arc::new(MemoryStore::new()),
        reads: AtomicUsize::new(0),
        watches: true,
        wakers: Some(Mutex::default()),
    });
    let id = new_job(&*store).await;
    set_status(&*store, id, JobStatus::Running).await;
    let poll = Duration::from_millis(20);
    let hub = LogHub::new(store.clone()).with_safety_poll(LONG);
    let mut events = Box::pin(hub.follow(id, 0, poll));
    async fn next_seq(
        events: &mut (impl futures::Stream<Item = Result<FollowEvent>> + Unpin),
    ) -> Option<u64> {
        match tokio::time::timeout(Duration::from_secs(2), events.next()).await {
            Ok(Some(Ok(FollowEvent::Record(r)))) => Some(r.seq),
            Ok(other) => panic!("{other:?}"),
            Err(_) => None,
        }
    }
    // Never live (a listener that cannot connect): read every `poll`, not every safety poll.
    append(&*store, id, 0, 1).await;
    assert_eq!(next_seq(&mut events).await, Some(1), "a dead watch stalled");
    // Live: it waits for the wake-up (the safety poll is 30 s).
    let waker = || store.wakers.as_ref().unwrap().lock().unwrap();
    waker()[0].set_live(true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    append(&*store, id, 1, 1).await;
    assert_eq!(next_seq(&mut events).await, None, "a live watch was polled");
    waker()[0].wake();
    assert_eq!(next_seq(&mut events).await, Some(2));
    // Down again: polled again at once.
    waker()[0].set_live(false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    append(&*store, id, 2, 1).await;
    assert_eq!(next_seq(&mut events).await, Some(3));
}

#[tokio::test]
async fn the_local_store_wakes_its_followers_by_inotify() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn StateStore> = Arc::new(LocalStore::new(dir.path()).unwrap());
    let id = new_job(&*store).await;
    set_status(&*store, id, JobStatus::Running).await;
    let hub = LogHub::new(store.clone()).with_safety_poll(LONG);
    let mut events = Box::pin(hub.follow(id, 0, LONG));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Another process writes the state dir: a second store over the same folder.
    let writer = LocalStore::new(dir.path()).unwrap();
    for i in 0..3 {
        append(&writer, id, i, 1).await;
        let event = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("inotify did not wake the feed")
            .unwrap()
            .unwrap();
        assert!(matches!(event, FollowEvent::Record(ref r) if r.seq == i as u64 + 1));
    }
    set_status(&writer, id, JobStatus::Succeeded).await;
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the end did not wake the feed")
        .unwrap()
        .unwrap();
    assert!(matches!(event, FollowEvent::End(ref j) if j.status == JobStatus::Succeeded));
}

#[tokio::test]
async fn a_follower_far_behind_reads_the_store_and_a_feed_nobody_follows_stops() {
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let id = new_job(&*store).await;
    set_status(&*store, id, JobStatus::Running).await;
    let hub = LogHub::new(store.clone());
    // A follower that keeps the feed reading past what it keeps in memory.
    let ahead = hub.follow(id, 0, LONG);
    let mut ahead = Box::pin(ahead);
    for batch in 0..10 {
        append(&*store, id, batch * 1000, 1000).await;
    }
    let mut seen = 0;
    while seen < 10_000 {
        if let FollowEvent::Record(r) = ahead.next().await.unwrap().unwrap() {
            seen = r.seq;
        }
    }
    let behind = tokio::spawn(drain(hub.follow(id, 0, LONG)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    set_status(&*store, id, JobStatus::Cancelled).await;
    let (seqs, end) = behind.await.unwrap();
    assert_eq!(seqs, (1..=10_000).collect::<Vec<u64>>());
    assert_eq!(end, Some(JobStatus::Cancelled));

    // Followers that leave before the end: the feed stops.
    let id = new_job(&*store).await;
    set_status(&*store, id, JobStatus::Running).await;
    let mut leaving = Box::pin(hub.follow(id, 0, LONG));
    append(&*store, id, 0, 1).await;
    leaving.next().await.unwrap().unwrap();
    assert_eq!(hub.feeds(), 1);
    drop(leaving);
    drop(ahead);
    append(&*store, id, 1, 1).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while hub.feeds() > 0 {
        assert!(
            Instant::now() < deadline,
            "a feed nobody follows kept reading"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn many_followers_get_records_in_batches_and_few_at_once() {
    // The same trickle of records to 10 followers, with batching above 5 followers (on) and
    // above 100 (off): every follower gets every record either way; batched, the feed reads
    // (and its followers wake) a few times instead of once per append.
    let mut reads = Vec::new();
    for above in [5, 100] {
        let store = counting(true);
        let id = new_job(&*store).await;
        set_status(&*store, id, JobStatus::Running).await;
        let hub = LogHub::new(store.clone()).with_batching(above, Duration::from_millis(250));
        let followers: Vec<_> = (0..10)
            .map(|_| tokio::spawn(drain(hub.follow(id, 0, LONG))))
            .collect();
        let mut first = Box::pin(hub.follow(id, 0, LONG));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = store.reads.load(Ordering::Relaxed);
        // The first record after a quiet spell is not held back.
        let started = Instant::now();
        append(&*store, id, 0, 1).await;
        first.next().await.unwrap().unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "above {above}"
        );
        drop(first);
        for i in 1..40 {
            append(&*store, id, i, 1).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        set_status(&*store, id, JobStatus::Succeeded).await;
        for follower in followers {
            let (seqs, end) = follower.await.unwrap();
            assert_eq!(seqs, (1..=40).collect::<Vec<u64>>(), "above {above}");
            assert_eq!(end, Some(JobStatus::Succeeded));
        }
        reads.push(store.reads.load(Ordering::Relaxed) - before);
    }
    // Batched: about one read per 250 ms of the ~450 ms trickle; unbatched: one or two per append.
    assert!(reads[0] <= 10, "batched feed read {} times", reads[0]);
    assert!(
        reads[1] >= 30,
        "unbatched feed read only {} times",
        reads[1]
    );
}

//! Conformance suites: one async fn per behaviour of a trait's contract, run unchanged against
//! every implementation (`cargo test` runs them on the memory and local stores).

use std::sync::Arc;

use bytes::Bytes;

use crate::blob::BlobHash;
use crate::job::{JobRecord, JobSpec, JobStatus};
use crate::lifecycle::{Claim, JobLifecycle, Lease};
use crate::log::{LogEntry, LogLevel};
use crate::paths::RelPath;
use crate::state::{JobQuery, StateStore, StateStoreExt};
use crate::Error;

/// A queued job running `dbt build`.
pub fn sample_job() -> JobRecord {
    JobRecord::new(JobSpec {
        args: vec!["build".into()],
        ..Default::default()
    })
}

/// Every job of `store` (up to 1000), newest first.
pub async fn all_jobs(store: &dyn StateStore) -> Vec<JobRecord> {
    let query = JobQuery {
        limit: 1000,
        ..Default::default()
    };
    store.list_jobs(&query).await.unwrap().jobs
}

/// Runs every store behaviour against `store`. `store` must start empty.
pub async fn run_store_suite(store: Arc<dyn StateStore>) {
    create_is_create_only(&*store).await;
    update_is_compare_and_set(&*store).await;
    concurrent_updates_have_one_winner(store.clone()).await;
    final_status_is_never_overwritten(&*store).await;
    a_launch_claim_has_one_winner_and_a_lease(store.clone()).await;
    list_is_newest_first_and_paged(&*store).await;
    blobs_are_content_addressed(&*store).await;
    blob_sizes_are_known(&*store).await;
    logs_are_sequenced_and_read_without_change(&*store).await;
    concurrent_appends_lose_nothing(store.clone()).await;
    artifacts_round_trip(&*store).await;
    unknown_jobs_are_not_found(&*store).await;
    delete_job_removes_the_record_log_and_artifacts(&*store).await;
    blobs_are_listed_with_their_time_and_deleted(&*store).await;
    long_log_records_are_cut_with_a_marker(&*store).await;
    cache_entries_are_replaced_and_kept_apart_by_kind(&*store).await;
}

/// Cache entries: missing is `None`, a put is read back, a second put replaces it, the same
/// hash under two kinds is two entries, and deleting jobs and blobs leaves them.
pub async fn cache_entries_are_replaced_and_kept_apart_by_kind(store: &dyn StateStore) {
    use crate::state::{CacheKey, CacheKind};
    let mut hash = [0u8; 32];
    hash[..16].copy_from_slice(uuid::Uuid::now_v7().as_bytes());
    let parse = CacheKey::new(CacheKind::PartialParse, hash);
    let deps = CacheKey::new(CacheKind::Deps, hash);
    assert_eq!(
        store.get_cache(&parse).await.unwrap(),
        None,
        "missing: None"
    );
    store
        .put_cache(&parse, Bytes::from_static(b"first"))
        .await
        .unwrap();
    assert_eq!(
        store.get_cache(&deps).await.unwrap(),
        None,
        "kinds are apart"
    );
    store
        .put_cache(&deps, Bytes::from_static(b"packages"))
        .await
        .unwrap();
    store
        .put_cache(&parse, Bytes::from_static(b"second"))
        .await
        .unwrap();
    assert_eq!(
        store.get_cache(&parse).await.unwrap().as_deref(),
        Some(&b"second"[..]),
        "a put replaces the entry"
    );
    assert_eq!(
        store.get_cache(&deps).await.unwrap().as_deref(),
        Some(&b"packages"[..])
    );
    let job = store.create_job(&sample_job()).await.unwrap();
    store.delete_job(job.id).await.unwrap();
    for blob in store.list_blobs().await.unwrap() {
        store.delete_blob(&blob.hash).await.unwrap();
    }
    assert!(
        store.get_cache(&parse).await.unwrap().is_some(),
        "deleting jobs and blobs leaves cache entries"
    );
}

/// A cache entry past the store's bound (`max`, as configured) is refused and not stored.
pub async fn oversized_cache_entries_are_refused(store: &dyn StateStore, max: u64) {
    use crate::state::{CacheKey, CacheKind};
    let key = CacheKey::new(CacheKind::Deps, [7; 32]);
    let big = Bytes::from(vec![0u8; max as usize + 1]);
    let err = store.put_cache(&key, big).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    assert_eq!(store.get_cache(&key).await.unwrap(), None);
    let fits = Bytes::from(vec![1u8; max as usize]);
    store.put_cache(&key, fits.clone()).await.unwrap();
    assert_eq!(store.get_cache(&key).await.unwrap(), Some(fits));
}

pub async fn long_log_records_are_cut_with_a_marker(store: &dyn StateStore) {
    let job = store.create_job(&sample_job()).await.unwrap();
    let max = crate::state::DEFAULT_MAX_LOG_RECORD_BYTES;
    // A multi-byte character across the cut: the store cuts at a character boundary.
    let long = format!("{}é{}", "a".repeat(max - 1), "b".repeat(10_000));
    let short = LogEntry::remote(LogLevel::Info, "a".repeat(max));
    let entries = [
        LogEntry::remote(LogLevel::Info, long.clone()),
        short.clone(),
    ];
    assert_eq!(store.append_logs(job.id, &entries).await.unwrap(), 2);
    let records = store.read_logs(job.id, 0, 10).await.unwrap();
    let cut = &records[0].entry.message;
    let kept = max - 1;
    assert_eq!(&cut[..kept], &long[..kept]);
    assert_eq!(
        &cut[kept..],
        format!("… [cut: {} bytes]", long.len() - kept),
        "the marker says how much was cut"
    );
    assert_eq!(records[1].entry, short, "a record at the cap is kept whole");
}

/// A damaged blob (`damage` overwrites the stored copy of `hash` with other bytes, as a
/// failing disk or a hand edit would) is refused when read, and a new upload of the right
/// content repairs it. Stores that forget a damaged blob also report it missing.
pub async fn damaged_blobs_are_refused_and_repaired(
    store: &dyn StateStore,
    damage: impl Fn(&BlobHash, Bytes),
    forgets_damaged: bool,
) {
    let content = Bytes::from_static(b"select 2 as id\n");
    let hash = BlobHash::of(&content);
    store.put_blob(&hash, content.clone()).await.unwrap();
    damage(&hash, Bytes::from_static(b"select 666 as id\n"));
    let err = store.get_blob(&hash).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("damaged"), "{err}");
    if forgets_damaged {
        let missing = store.missing_blobs(std::slice::from_ref(&hash)).await;
        assert_eq!(missing.unwrap(), std::slice::from_ref(&hash));
    }
    store.put_blob(&hash, content.clone()).await.unwrap();
    assert_eq!(store.get_blob(&hash).await.unwrap(), content, "repaired");
    // Damaged again while still listed as present: a put of the right content repairs it too.
    damage(&hash, Bytes::from_static(b"garbage"));
    store.put_blob(&hash, content.clone()).await.unwrap();
    assert_eq!(store.get_blob(&hash).await.unwrap(), content);
}

pub async fn create_is_create_only(store: &dyn StateStore) {
    let job = sample_job();
    let stored = store.create_job(&job).await.unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(store.get_job(job.id).await.unwrap(), stored);
    let err = store.create_job(&job).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert_eq!(
        store.get_job(job.id).await.unwrap(),
        stored,
        "a refused create changes nothing"
    );
}

pub async fn update_is_compare_and_set(store: &dyn StateStore) {
    let mut job = store.create_job(&sample_job()).await.unwrap();
    job.start();
    let running = store.update_job(&job).await.unwrap();
    assert_eq!(running.version, 2);
    assert_eq!(running.status, JobStatus::Running);
    // A writer still holding version 1 loses.
    job.status = JobStatus::Cancelled;
    let err = store.update_job(&job).await.unwrap_err();
    assert!(matches!(err, Error::Precondition { .. }), "{err:?}");
    assert_eq!(store.get_job(job.id).await.unwrap(), running);
}

pub async fn concurrent_updates_have_one_winner(store: Arc<dyn StateStore>) {
    let job = store.create_job(&sample_job()).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (store, mut job) = (store.clone(), job.clone());
            tokio::spawn(async move {
                job.failure_reason = Some(format!("writer {i}"));
                store.update_job(&job).await
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(Error::Precondition { .. }) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.get_job(job.id).await.unwrap().version, 2);
}

/// Two claimers, one winner; a live lease cannot be taken over, an expired one can; renewing
/// keeps a claim only for its owner and only while the job is not final.
pub async fn a_launch_claim_has_one_winner_and_a_lease(store: Arc<dyn StateStore>) {
    use std::time::Duration;
    let job = store.create_job(&sample_job()).await.unwrap();
    let leases: Vec<Lease> = (0..4)
        .map(|_| Lease::new(Duration::from_millis(600)))
        .collect();
    let tasks: Vec<_> = leases
        .iter()
        .map(|lease| {
            let (store, lease) = (store.clone(), lease.clone());
            tokio::spawn(async move { store.claim_job(job.id, &lease).await.unwrap() })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if let Claim::Won { taken_over, .. } = t.await.unwrap() {
            assert!(!taken_over, "a queued job is claimed, not taken over");
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "one claimer wins");
    let (owner, other) = (&leases[winners[0]], &leases[(winners[0] + 1) % 4]);
    let held = store.get_job(job.id).await.unwrap();
    assert_eq!(held.status, JobStatus::Running);
    assert_eq!(held.launch_owner.as_deref(), Some(owner.owner.as_str()));
    // A live lease cannot be taken over, and only its owner renews it.
    assert!(matches!(
        store.claim_job(job.id, other).await.unwrap(),
        Claim::Lost(_)
    ));
    assert!(!store.renew_lease(job.id, other).await.unwrap());
    assert!(store.renew_lease(job.id, owner).await.unwrap());
    // An expired one can: the new owner takes the running job over.
    tokio::time::sleep(Duration::from_millis(700)).await;
    match store.claim_job(job.id, other).await.unwrap() {
        Claim::Won { job, taken_over } => {
            assert!(taken_over);
            assert_eq!(job.launch_owner.as_deref(), Some(other.owner.as_str()));
        }
        lost => panic!("an expired lease is taken over: {lost:?}"),
    }
    assert!(
        !store.renew_lease(job.id, owner).await.unwrap(),
        "the old owner lost it"
    );
    store
        .finish_job(job.id, JobStatus::Succeeded, Some(0), None)
        .await
        .unwrap();
    assert!(
        !store.renew_lease(job.id, other).await.unwrap(),
        "a final job is not held"
    );
    assert!(matches!(
        store.claim_job(job.id, owner).await.unwrap(),
        Claim::Lost(_)
    ));
}

pub async fn final_status_is_never_overwritten(store: &dyn StateStore) {
    let job = store.create_job(&sample_job()).await.unwrap();
    let done = store
        .finish_job(job.id, JobStatus::Succeeded, Some(0), None)
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert!(done.finished_at.is_some());
    let late = store
        .finish_job(job.id, JobStatus::Failed, Some(1), Some("late".into()))
        .await
        .unwrap();
    assert_eq!(late.status, JobStatus::Succeeded);
    assert_eq!(late.exit_code, Some(0));
    assert_eq!(store.get_job(job.id).await.unwrap(), done);
}

pub async fn list_is_newest_first_and_paged(store: &dyn StateStore) {
    let existing = all_jobs(store).await.len();
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut job = store.create_job(&sample_job()).await.unwrap();
        if i % 2 == 0 {
            job.start();
            store.update_job(&job).await.unwrap();
        }
        ids.push(job.id);
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut query = JobQuery {
        limit: 2,
        ..Default::default()
    };
    loop {
        let page = store.list_jobs(&query).await.unwrap();
        assert!(page.jobs.len() <= 2);
        seen.extend(page.jobs.iter().map(|j| j.id));
        match page.next {
            Some(next) => query.before = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), existing + 5);
    assert_eq!(&seen[..5], &ids[..], "newest first");
    let running = store
        .list_jobs(&JobQuery {
            status: Some(JobStatus::Running),
            limit: 100,
            before: None,
        })
        .await
        .unwrap();
    let running_ids: Vec<_> = running.jobs.iter().map(|j| j.id).collect();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(running_ids.contains(id), i % 2 == 0, "status filter");
    }
    assert!(running.jobs.iter().all(|j| j.status == JobStatus::Running));
}

pub async fn blob_sizes_are_known(store: &dyn StateStore) {
    let content = Bytes::from_static(b"select 2 as size_check\n");
    let hash = BlobHash::of(&content);
    let err = store.blob_size(&hash).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    store.put_blob(&hash, content.clone()).await.unwrap();
    assert_eq!(store.blob_size(&hash).await.unwrap(), content.len() as u64);
}

pub async fn blobs_are_content_addressed(store: &dyn StateStore) {
    let content = Bytes::from_static(b"select 1 as id\n");
    let hash = BlobHash::of(&content);
    let other = BlobHash::of(b"something else");
    assert_eq!(
        store
            .missing_blobs(&[hash.clone(), other.clone()])
            .await
            .unwrap()
            .len(),
        2
    );
    let err = store.put_blob(&other, content.clone()).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert_eq!(
        store
            .missing_blobs(std::slice::from_ref(&other))
            .await
            .unwrap(),
        std::slice::from_ref(&other)
    );
    store.put_blob(&hash, content.clone()).await.unwrap();
    store.put_blob(&hash, content.clone()).await.unwrap();
    assert_eq!(
        store
            .missing_blobs(&[hash.clone(), other.clone()])
            .await
            .unwrap(),
        std::slice::from_ref(&other)
    );
    assert_eq!(store.get_blob(&hash).await.unwrap(), content);
    let err = store.get_blob(&other).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}

fn entry(i: usize) -> LogEntry {
    LogEntry::remote(
        LogLevel::Info,
        format!("line {i} with \"quotes\" and ünïcode\nand a newline"),
    )
}

pub async fn logs_are_sequenced_and_read_without_change(store: &dyn StateStore) {
    let job = store.create_job(&sample_job()).await.unwrap();
    assert!(store.read_logs(job.id, 0, 10).await.unwrap().is_empty());
    assert_eq!(store.append_logs(job.id, &[]).await.unwrap(), 0);
    assert_eq!(store.append_logs(job.id, &[entry(1)]).await.unwrap(), 1);
    assert_eq!(
        store
            .append_logs(job.id, &[entry(2), entry(3), entry(4)])
            .await
            .unwrap(),
        4
    );
    for _reader in 0..2 {
        let all = store.read_logs(job.id, 0, 100).await.unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(all[1].entry.message, entry(2).message);
    }
    let tail = store.read_logs(job.id, 2, 1).await.unwrap();
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].seq, 3);
    assert!(store.read_logs(job.id, 4, 10).await.unwrap().is_empty());
    assert!(store.read_logs(job.id, 99, 10).await.unwrap().is_empty());
}

pub async fn concurrent_appends_lose_nothing(store: Arc<dyn StateStore>) {
    let job = store.create_job(&sample_job()).await.unwrap();
    let tasks: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    store
                        .append_logs(job.id, &[entry(w * 100 + i)])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let all = store.read_all_logs(job.id, 0).await.unwrap();
    assert_eq!(all.len(), 100);
    assert!(all.iter().enumerate().all(|(i, r)| r.seq == i as u64 + 1));
    let mut messages: Vec<_> = all.iter().map(|r| r.entry.message.clone()).collect();
    messages.sort();
    messages.dedup();
    assert_eq!(messages.len(), 100, "every record kept once");
}

pub async fn artifacts_round_trip(store: &dyn StateStore) {
    let job = store.create_job(&sample_job()).await.unwrap();
    assert!(store.list_artifacts(job.id).await.unwrap().is_empty());
    let manifest = RelPath::new("manifest.json").unwrap();
    let nested = RelPath::new("compiled/a.sql").unwrap();
    store
        .put_artifact(job.id, &manifest, Bytes::from_static(b"{}"))
        .await
        .unwrap();
    store
        .put_artifact(job.id, &manifest, Bytes::from_static(b"{\"v\":2}"))
        .await
        .unwrap();
    store
        .put_artifact(job.id, &nested, Bytes::from_static(b"select 1"))
        .await
        .unwrap();
    let list = store.list_artifacts(job.id).await.unwrap();
    let names: Vec<_> = list.iter().map(|a| (a.name.as_str(), a.size)).collect();
    assert_eq!(names, [("compiled/a.sql", 8), ("manifest.json", 7)]);
    assert_eq!(
        store.get_artifact(job.id, &manifest).await.unwrap(),
        &b"{\"v\":2}"[..]
    );
    let missing = RelPath::new("catalog.json").unwrap();
    let err = store.get_artifact(job.id, &missing).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}

pub async fn unknown_jobs_are_not_found(store: &dyn StateStore) {
    let ghost = sample_job();
    let name = RelPath::new("x").unwrap();
    let errs = [
        store.get_job(ghost.id).await.unwrap_err(),
        store.update_job(&ghost).await.unwrap_err(),
        store.append_logs(ghost.id, &[entry(0)]).await.unwrap_err(),
        store.read_logs(ghost.id, 0, 10).await.unwrap_err(),
        store
            .put_artifact(ghost.id, &name, Bytes::new())
            .await
            .unwrap_err(),
        store.list_artifacts(ghost.id).await.unwrap_err(),
        store.get_artifact(ghost.id, &name).await.unwrap_err(),
    ];
    for err in errs {
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    }
    assert!(all_jobs(store).await.iter().all(|j| j.id != ghost.id));
}

/// A [`JobLauncher`](crate::launcher::JobLauncher) that starts nothing: it records launches,
/// and cancels as the contract says (queued → cancelled, running → cancel requested). Tests
/// drive the job's state through the store.
#[derive(Debug, Default)]
pub struct RecordingLauncher {
    store: Option<Arc<dyn StateStore>>,
    launched: std::sync::Mutex<Vec<crate::JobId>>,
}

impl RecordingLauncher {
    pub fn new(store: Arc<dyn StateStore>) -> Self {
        RecordingLauncher {
            store: Some(store),
            launched: Default::default(),
        }
    }

    /// The jobs launched so far, in order.
    pub fn launched(&self) -> Vec<crate::JobId> {
        self.launched.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl crate::launcher::JobLauncher for RecordingLauncher {
    async fn launch(&self, id: crate::JobId) -> crate::Result<()> {
        self.launched.lock().unwrap().push(id);
        Ok(())
    }

    async fn cancel(&self, id: crate::JobId) -> crate::Result<JobRecord> {
        self.store
            .as_ref()
            .expect("made with new")
            .request_cancel(id)
            .await
    }

    async fn recover(&self) -> crate::Result<()> {
        Ok(())
    }
}
pub mod auth;
mod launcher;
mod schedule;

pub use launcher::{fake_dbt, final_job, run_launcher_suite};
pub use schedule::{run_concurrent_schedule_suite, run_schedule_suite, sample_schedule};

pub async fn delete_job_removes_the_record_log_and_artifacts(store: &dyn StateStore) {
    let other = store.create_job(&sample_job()).await.unwrap();
    let job = store.create_job(&sample_job()).await.unwrap();
    let entries: Vec<LogEntry> = (0..3).map(entry).collect();
    store.append_logs(job.id, &entries).await.unwrap();
    let name = RelPath::new("target/run_results.json").unwrap();
    store
        .put_artifact(job.id, &name, Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert!(store.delete_job(job.id).await.unwrap(), "there was a job");
    let errs = [
        store.get_job(job.id).await.unwrap_err(),
        store.read_logs(job.id, 0, 10).await.unwrap_err(),
        store.list_artifacts(job.id).await.unwrap_err(),
        store.get_artifact(job.id, &name).await.unwrap_err(),
    ];
    for err in errs {
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    }
    let ids: Vec<_> = all_jobs(store).await.iter().map(|j| j.id).collect();
    assert!(!ids.contains(&job.id) && ids.contains(&other.id));
    assert!(
        !store.delete_job(job.id).await.unwrap(),
        "a second delete finds nothing"
    );
    assert_eq!(store.get_job(other.id).await.unwrap(), other, "others stay");
    // The id can be used again, with an empty log.
    store.create_job(&job).await.unwrap();
    assert!(store.read_logs(job.id, 0, 10).await.unwrap().is_empty());
    assert!(store.list_artifacts(job.id).await.unwrap().is_empty());
    assert!(store.delete_job(job.id).await.unwrap());
}

pub async fn blobs_are_listed_with_their_time_and_deleted(store: &dyn StateStore) {
    let content = Bytes::from(format!("blob {}", uuid::Uuid::now_v7()));
    let hash = BlobHash::of(&content);
    let before = chrono::Utc::now() - chrono::Duration::seconds(2);
    store.put_blob(&hash, content).await.unwrap();
    let after = chrono::Utc::now() + chrono::Duration::seconds(2);
    let listed = store.list_blobs().await.unwrap();
    let info = listed
        .iter()
        .find(|b| b.hash == hash)
        .expect("a stored blob is listed");
    assert!(
        (before..=after).contains(&info.stored_at),
        "stored at {} (between {before} and {after})",
        info.stored_at
    );
    assert!(store.delete_blob(&hash).await.unwrap(), "there was a blob");
    let missing = store
        .missing_blobs(std::slice::from_ref(&hash))
        .await
        .unwrap();
    assert_eq!(missing.as_slice(), std::slice::from_ref(&hash));
    assert!(store.get_blob(&hash).await.is_err());
    assert!(!store
        .list_blobs()
        .await
        .unwrap()
        .iter()
        .any(|b| b.hash == hash));
    assert!(
        !store.delete_blob(&hash).await.unwrap(),
        "a second delete finds nothing"
    );
}

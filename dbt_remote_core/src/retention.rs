//! Retention: which finished jobs are deleted, and which blobs are collected, in one pass
//! ([`collect`]) that the server runs at start and then every
//! [`ServerSettings::gc_interval`](crate::server::ServerSettings::gc_interval).
//!
//! - A **finished** job (succeeded, failed, cancelled) is deleted when it finished more than
//!   [`RetentionPolicy::max_age`] ago, or when it is not among the
//!   [`RetentionPolicy::max_jobs`] newest finished jobs and finished more than
//!   [`RetentionPolicy::grace`] ago (so a follower still sees the end of a job that has just
//!   finished). Deleted: its record, log and artifacts ([`StateStore::delete_job`]), then its work
//!   dir `<work root>/<id>` and its runner files `<runs dir>/<id>.lock` and `<id>.log`.
//! - A queued or running job is never deleted, and the blobs of its files are kept.
//! - A **blob** is collected when no remaining job (queued, running or kept finished) and no
//!   schedule lists it, and it was stored more than [`RetentionPolicy::grace`] ago: a client may
//!   be between uploading its files and submitting the job.
//!
//! The blobs are listed before the jobs, and the jobs created while the pass ran are read again
//! just before blobs are deleted, so a blob that a job submitted meanwhile names is kept.
//!
//! ```
//! # async fn f() -> dbt_remote_core::Result<()> {
//! use dbt_remote_core::retention::{collect, RetentionPolicy};
//! use dbt_remote_core::schedule::MemorySchedules;
//! use dbt_remote_core::MemoryStore;
//! let removed = collect(
//!     &MemoryStore::new(),
//!     &MemorySchedules::new(),
//!     &RetentionPolicy::default(),
//!     chrono::Utc::now(),
//! )
//! .await?;
//! assert!(removed.jobs.is_empty() && removed.blobs.is_empty());
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(f()).unwrap();
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::blob::BlobHash;
use crate::job::{JobId, JobRecord};
use crate::schedule::ScheduleStore;
use crate::state::{BlobInfo, JobQuery, StateStore};
use crate::Result;

/// Default days a finished job is kept.
pub const DEFAULT_RETAIN_DAYS: u64 = 30;
/// Default minutes a new blob (and a just-finished job, for the count limit) is kept.
pub const DEFAULT_GRACE_MINUTES: u64 = 60;
/// Default minutes between two passes.
pub const DEFAULT_GC_INTERVAL_MINUTES: u64 = 60;

/// Jobs read from the store per page.
const PAGE: usize = 500;

/// What a pass deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Finished jobs older than this are deleted (by their end time); `None`: kept by age.
    pub max_age: Option<Duration>,
    /// Only this many finished jobs are kept, the newest; `None`: no count limit.
    pub max_jobs: Option<usize>,
    /// A blob stored, or a job finished, less than this long ago is kept.
    pub grace: Duration,
    /// Where jobs' work dirs are (`<work root>/<id>`), to remove what a deleted job left.
    pub work_root: Option<PathBuf>,
    /// Where the process launcher keeps `<id>.lock` and `<id>.log`.
    pub runs_dir: Option<PathBuf>,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            max_age: Some(Duration::from_secs(DEFAULT_RETAIN_DAYS * 24 * 3600)),
            max_jobs: None,
            grace: Duration::from_secs(DEFAULT_GRACE_MINUTES * 60),
            work_root: None,
            runs_dir: None,
        }
    }
}

/// What a pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// The jobs deleted, newest first.
    pub jobs: Vec<JobId>,
    /// The blobs deleted.
    pub blobs: Vec<BlobHash>,
}

/// One retention pass at `now`: deletes the finished jobs `policy` lets go and the blobs no
/// remaining job or schedule needs. A job or blob whose deletion fails is kept (and logged);
/// a failure to list jobs or schedules stops the pass before any blob is deleted.
pub async fn collect(
    store: &dyn StateStore,
    schedules: &dyn ScheduleStore,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Result<Collected> {
    let blobs = store.list_blobs().await?;
    let jobs = jobs_newer_than(store, None).await?;
    let newest = jobs.first().map(|j| j.id);
    let (expired, kept) = split_expired(jobs, policy, now);
    let mut referenced = HashSet::new();
    kept.iter().for_each(|j| add_files(&mut referenced, j));
    for schedule in schedules.list_schedules().await? {
        referenced.extend(schedule.spec.files.iter().map(|f| f.sha256.clone()));
    }
    let mut collected = Collected::default();
    for job in expired {
        if delete_job(store, policy, job.id).await {
            collected.jobs.push(job.id);
        } else {
            add_files(&mut referenced, &job);
        }
    }
    // Jobs submitted while this pass ran name blobs too.
    for job in jobs_newer_than(store, newest).await? {
        add_files(&mut referenced, &job);
    }
    for blob in blobs {
        if is_garbage(&blob, &referenced, policy, now) && delete_blob(store, &blob.hash).await {
            collected.blobs.push(blob.hash);
        }
    }
    Ok(collected)
}

/// Every job newer than `after` (every job, for `None`), newest first.
async fn jobs_newer_than(store: &dyn StateStore, after: Option<JobId>) -> Result<Vec<JobRecord>> {
    let mut all = Vec::new();
    let mut query = JobQuery {
        limit: PAGE,
        ..Default::default()
    };
    loop {
        let page = store.list_jobs(&query).await?;
        let listed = page.jobs.len();
        let newer: Vec<JobRecord> = page
            .jobs
            .into_iter()
            .take_while(|j| after.is_none_or(|a| j.id > a))
            .collect();
        let reached_after = newer.len() < listed;
        all.extend(newer);
        match page.next {
            Some(next) if !reached_after => query.before = Some(next),
            _ => return Ok(all),
        }
    }
}

/// The finished jobs (newest first) that `policy` lets go, and the jobs it keeps.
fn split_expired(
    jobs: Vec<JobRecord>,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> (Vec<JobRecord>, Vec<JobRecord>) {
    let mut finished_rank = 0usize;
    let (mut expired, mut kept) = (Vec::new(), Vec::new());
    for job in jobs {
        if !job.status.is_final() {
            kept.push(job);
            continue;
        }
        let ended = job.finished_at.unwrap_or(job.created_at);
        let age = (now - ended).to_std().unwrap_or_default();
        let too_old = policy.max_age.is_some_and(|max| age > max);
        let too_many = policy.max_jobs.is_some_and(|n| finished_rank >= n) && age > policy.grace;
        finished_rank += 1;
        if too_old || too_many {
            expired.push(job);
        } else {
            kept.push(job);
        }
    }
    (expired, kept)
}

fn add_files(referenced: &mut HashSet<BlobHash>, job: &JobRecord) {
    referenced.extend(job.spec.files.iter().map(|f| f.sha256.clone()));
}

fn is_garbage(
    blob: &BlobInfo,
    referenced: &HashSet<BlobHash>,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> bool {
    let age = (now - blob.stored_at).to_std().unwrap_or_default();
    !referenced.contains(&blob.hash) && age > policy.grace
}

/// Deletes the job from the store, then the files it left on this machine; `false` (logged)
/// when the store failed.
async fn delete_job(store: &dyn StateStore, policy: &RetentionPolicy, id: JobId) -> bool {
    if let Err(e) = store.delete_job(id).await {
        tracing::warn!(job = %id, "retention: could not delete the job: {e}");
        return false;
    }
    let (work_root, runs_dir) = (policy.work_root.clone(), policy.runs_dir.clone());
    let removed = tokio::task::spawn_blocking(move || {
        let name = id.to_string();
        if let Some(root) = work_root {
            remove(&root.join(&name), true);
        }
        if let Some(runs) = runs_dir {
            remove(&runs.join(format!("{name}.lock")), false);
            remove(&runs.join(format!("{name}.log")), false);
        }
    });
    if let Err(e) = removed.await {
        tracing::warn!(job = %id, "retention: removing the job's files stopped: {e}");
    }
    true
}

async fn delete_blob(store: &dyn StateStore, hash: &BlobHash) -> bool {
    match store.delete_blob(hash).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(blob = %hash, "retention: could not delete the blob: {e}");
            false
        }
    }
}

/// Removes a file or (with `dir`) a folder tree; a missing one is fine, another failure is
/// logged.
fn remove(path: &Path, dir: bool) {
    let result = if dir {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("retention: could not remove {}: {e}", path.display()),
    }
}

/// Runs [`collect`] now and then every `interval` until `stop`, logging what each pass removed.
pub async fn run_periodically(
    store: std::sync::Arc<dyn StateStore>,
    schedules: std::sync::Arc<dyn ScheduleStore>,
    policy: RetentionPolicy,
    interval: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        match collect(&*store, &*schedules, &policy, Utc::now()).await {
            Ok(c) if c.jobs.is_empty() && c.blobs.is_empty() => {}
            Ok(c) => tracing::info!(
                "retention: deleted {} finished jobs and {} unused blobs",
                c.jobs.len(),
                c.blobs.len()
            ),
            Err(e) => tracing::warn!("retention: the pass stopped: {e}"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

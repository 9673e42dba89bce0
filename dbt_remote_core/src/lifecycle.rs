//! A job's life in the store: queued → running → a final status, with cancel requests and
//! jobs whose runner died. Launchers, the runner and the service all move jobs through these
//! steps only, so each transition is written once.
//!
//! Every step is a read-modify-write with compare-and-set ([`StateStoreExt::modify_job`]):
//! concurrent writers (a runner finishing, a server cancelling) never lose an update, and a final
//! status is never overwritten.

use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::job::{JobId, JobRecord, JobStatus};
use crate::log::{LogEntry, LogLevel};
use crate::state::{JobQuery, Modify, StateStore, StateStoreExt};
use crate::Result;

/// How long [`JobLifecycle::finish_orphan`] keeps retrying a store that is full or busy.
pub const ORPHAN_RETRY_LIMIT: Duration = Duration::from_secs(120);

/// Runs `op` until it succeeds or fails with an error that is not
/// [transient](crate::Error::is_transient) (a full disk, a busy lock), pausing between tries
/// (100 ms, doubling up to 5 s). Gives up with the last error after `limit` (`None`: never).
pub async fn retry_transient<T, F, Fut>(what: &str, limit: Option<Duration>, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match op().await {
            Err(e) if e.is_transient() && limit.is_none_or(|l| start.elapsed() < l) => {
                tracing::warn!("{what}: {e}; retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

/// How long a launch claim holds when no length is configured.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// A launcher instance's hold on the jobs it launches: who it is and how long a claim lasts.
///
/// Several servers may share one store (Cloud Run instances on one Firestore). Of those, only
/// the one holding a job's claim starts its runner; it renews the claim (every
/// [`renew_every`](Self::renew_every)) while it launches and watches the job. An instance that
/// dies stops renewing, and once the lease has run out another instance may take the job over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The instance's id, random per launcher.
    pub owner: String,
    /// How long a claim holds without renewal.
    pub length: Duration,
}

impl Lease {
    /// A lease of `length` for a new random owner id.
    pub fn new(length: Duration) -> Self {
        Lease {
            owner: uuid::Uuid::now_v7().simple().to_string(),
            length,
        }
    }

    /// How often the owner renews its claims: a third of the length, so that two renewals may
    /// fail before the claim runs out.
    pub fn renew_every(&self) -> Duration {
        (self.length / 3).max(Duration::from_millis(100))
    }

    /// When a claim made or renewed now runs out.
    fn until(&self) -> DateTime<Utc> {
        let length = chrono::Duration::from_std(self.length).unwrap_or(chrono::Duration::MAX);
        Utc::now()
            .checked_add_signed(length)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Whether `job`'s claim is free for this owner: its own, never made, or run out.
    fn is_free(&self, job: &JobRecord) -> bool {
        job.launch_owner.as_deref() == Some(self.owner.as_str())
            || job.lease_until.is_none_or(|until| until <= Utc::now())
    }
}

/// What [`JobLifecycle::claim_job`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The caller holds the job now and is the one to start (or keep watching) its runner.
    /// `taken_over` is set when the job was `running` already (under an owner whose lease ran
    /// out, or no owner): its runner may exist already, so look for it before starting one.
    Won { job: JobRecord, taken_over: bool },
    /// The job is final, or another owner holds a live lease: leave it alone.
    Lost(JobRecord),
}

/// The transitions of a job, over every [`StateStore`].
#[async_trait]
pub trait JobLifecycle: StateStore {
    /// Moves a queued job to `running` (stamping its start); any other job is left as it is.
    /// Returns the record as stored.
    async fn start_job(&self, id: JobId) -> Result<JobRecord> {
        self.modify_job(id, |job| match job.status {
            JobStatus::Queued => {
                job.start();
                Modify::Write
            }
            _ => Modify::Keep,
        })
        .await
    }

    /// Claims the launch of a job for `lease`'s owner, with compare-and-set: of several
    /// instances claiming at once, exactly one wins. A queued job becomes `running` under the
    /// claim; a running one is taken over only if its lease has run out (or it has none, or it
    /// is the caller's own). A final job, or a live lease of another owner, is
    /// [`Claim::Lost`].
    async fn claim_job(&self, id: JobId, lease: &Lease) -> Result<Claim> {
        let mut taken_over = false;
        let job = self
            .modify_job(id, |job| {
                taken_over = job.status == JobStatus::Running;
                let free = match job.status {
                    JobStatus::Queued => true,
                    JobStatus::Running => lease.is_free(job),
                    _ => false,
                };
                if !free {
                    return Modify::Keep;
                }
                job.start();
                job.launch_owner = Some(lease.owner.clone());
                job.lease_until = Some(lease.until());
                Modify::Write
            })
            .await?;
        let won = job.launch_owner.as_deref() == Some(lease.owner.as_str())
            && job.status == JobStatus::Running;
        Ok(if won {
            Claim::Won { job, taken_over }
        } else {
            Claim::Lost(job)
        })
    }

    /// Renews `lease`'s claim on a job that is not final. Returns whether the caller still holds
    /// it: `false` once the job is final or another owner has taken it over (stop renewing).
    async fn renew_lease(&self, id: JobId, lease: &Lease) -> Result<bool> {
        let job = self
            .modify_job(id, |job| {
                if job.status.is_final() || job.launch_owner.as_deref() != Some(&lease.owner) {
                    return Modify::Keep;
                }
                job.lease_until = Some(lease.until());
                Modify::Write
            })
            .await?;
        Ok(!job.status.is_final() && job.launch_owner.as_deref() == Some(&lease.owner))
    }

    /// Moves a job that is not final yet to the final `status`. Returns the record as stored;
    /// a job that was final already keeps its status (a late writer never overwrites it).
    async fn finish_job(
        &self,
        id: JobId,
        status: JobStatus,
        exit_code: Option<i32>,
        reason: Option<String>,
    ) -> Result<JobRecord> {
        self.modify_job(id, |job| {
            if job.status.is_final() {
                return Modify::Keep;
            }
            job.finish(status, exit_code, reason.clone());
            Modify::Write
        })
        .await
    }

    /// Like [`finish_job`](Self::finish_job), retrying for as long as the store is full or
    /// busy: the job is finished as soon as the store takes the write (what the runner calls,
    /// so that a job never stays `running` for good).
    async fn finish_job_eventually(
        &self,
        id: JobId,
        status: JobStatus,
        exit_code: Option<i32>,
        reason: Option<String>,
    ) -> Result<JobRecord> {
        let what = format!("finishing job {id}");
        retry_transient(&what, None, || {
            self.finish_job(id, status, exit_code, reason.clone())
        })
        .await
    }

    /// Ends a job `cancelled` on request, with a note in its log.
    async fn finish_cancelled(&self, id: JobId) -> Result<JobRecord> {
        let _ = self
            .log(
                id,
                LogEntry::remote(LogLevel::Warn, "dbt-remote: job cancelled"),
            )
            .await;
        self.finish_job_eventually(
            id,
            JobStatus::Cancelled,
            None,
            Some("cancelled on request".into()),
        )
        .await
    }

    /// Records a cancel request: a queued job is cancelled at once, a running one is marked.
    /// Returns the record after the change.
    async fn request_cancel(&self, id: JobId) -> Result<JobRecord> {
        self.modify_job(id, |job| match job.status {
            JobStatus::Queued => {
                job.cancel_requested = true;
                job.finish(
                    JobStatus::Cancelled,
                    None,
                    Some("cancelled before it started".into()),
                );
                Modify::Write
            }
            JobStatus::Running if !job.cancel_requested => {
                job.cancel_requested = true;
                Modify::Write
            }
            _ => Modify::Keep,
        })
        .await
    }

    /// Finishes a job whose runner has gone without finishing it: `cancelled` if a cancel was
    /// requested, else `failed` with `reason`. A full or busy store is retried for
    /// [`ORPHAN_RETRY_LIMIT`].
    async fn finish_orphan(&self, id: JobId, reason: String) -> Result<JobRecord> {
        let what = format!("finishing job {id}");
        let limit = Some(ORPHAN_RETRY_LIMIT);
        let job = retry_transient(&what, limit, || self.get_job(id)).await?;
        if job.status.is_final() {
            return Ok(job);
        }
        let (status, reason) = if job.cancel_requested {
            (JobStatus::Cancelled, "cancelled on request".to_string())
        } else {
            (JobStatus::Failed, reason)
        };
        let _ = self
            .log(
                id,
                LogEntry::remote(LogLevel::Error, format!("dbt-remote: {reason}")),
            )
            .await;
        retry_transient(&what, limit, || {
            self.finish_job(id, status, None, Some(reason.clone()))
        })
        .await
    }

    /// Ids of every job in `status`, oldest first (what a launcher takes over at start).
    async fn jobs_in(&self, status: JobStatus) -> Result<Vec<JobId>> {
        let mut ids = Vec::new();
        let mut query = JobQuery {
            status: Some(status),
            before: None,
            limit: 500,
        };
        loop {
            let page = self.list_jobs(&query).await?;
            ids.extend(page.jobs.iter().map(|j| j.id));
            match page.next {
                Some(next) => query.before = Some(next),
                None => break,
            }
        }
        ids.reverse();
        Ok(ids)
    }
}

impl<T: StateStore + ?Sized> JobLifecycle for T {}

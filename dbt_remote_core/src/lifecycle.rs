//! A job's life in the store: queued → running → a final status, with cancel requests and
//! jobs whose runner died. Launchers, the runner and the service all move jobs through these
//! steps only, so each transition is written once.
//!
//! Every step is a read-modify-write with compare-and-set ([`StateStoreExt::modify_job`]):
//! concurrent writers (a runner finishing, a server cancelling) never lose an update, and a final
//! status is never overwritten.

use async_trait::async_trait;

use crate::job::{JobId, JobRecord, JobStatus};
use crate::log::{LogEntry, LogLevel};
use crate::state::{JobQuery, Modify, StateStore, StateStoreExt};
use crate::Result;

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

    /// Ends a job `cancelled` on request, with a note in its log.
    async fn finish_cancelled(&self, id: JobId) -> Result<JobRecord> {
        let _ = self
            .log(
                id,
                LogEntry::remote(LogLevel::Warn, "dbt-remote: job cancelled"),
            )
            .await;
        self.finish_job(
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
    /// requested, else `failed` with `reason`.
    async fn finish_orphan(&self, id: JobId, reason: String) -> Result<JobRecord> {
        let job = self.get_job(id).await?;
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
        self.finish_job(id, status, None, Some(reason)).await
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

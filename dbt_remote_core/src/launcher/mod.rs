//! How jobs are started: the [`JobLauncher`] trait and its implementations.

use std::fmt;

use async_trait::async_trait;

use crate::job::{JobId, JobRecord, JobStatus};
use crate::state::{Modify, StateStore, StateStoreExt};
use crate::Result;

#[cfg(feature = "gcp")]
pub mod cloud_run;
mod in_process;
mod process;

#[cfg(feature = "gcp")]
pub use cloud_run::{CloudRunLauncher, CloudRunLauncherBuilder};
pub use in_process::InProcessLauncher;
pub use process::{JobCommand, ProcessLauncher, ProcessLauncherConfig, RunnerLock};

/// Starts, cancels and watches jobs whose records are in a [`StateStore`].
///
/// # Contract
/// - [`launch`](Self::launch) takes a job the store holds as `queued` and makes sure it runs:
///   now, or once a slot is free (jobs wait in the order they were launched). It returns without
///   waiting for the job. Launching a job twice runs it once.
/// - [`cancel`](Self::cancel) is idempotent: a queued job becomes `cancelled` at once; a running
///   one gets `cancel_requested` and is interrupted, then killed after the launcher's grace
///   period, and ends `cancelled`; a final job is left as it is. Returns the record as it is after
///   the request.
/// - Every job the launcher started ends in a final status, also when its runner dies: the job
///   then becomes `failed` with the reason (or `cancelled`, if a cancel was requested).
/// - [`recover`](Self::recover), called when a server starts, takes over the jobs that the store
///   holds as `queued` or `running`: queued ones are launched in creation order, running ones are
///   watched, and those whose runner is gone are finished as above.
#[async_trait]
pub trait JobLauncher: fmt::Debug + Send + Sync + 'static {
    async fn launch(&self, id: JobId) -> Result<()>;
    async fn cancel(&self, id: JobId) -> Result<JobRecord>;
    async fn recover(&self) -> Result<()>;
}

/// Records a cancel request: a queued job is cancelled at once, a running one is marked.
/// Returns the record after the change.
pub(crate) async fn request_cancel(store: &dyn StateStore, id: JobId) -> Result<JobRecord> {
    store
        .modify_job(id, |job| match job.status {
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
pub(crate) async fn finish_orphan(
    store: &dyn StateStore,
    id: JobId,
    reason: String,
) -> Result<JobRecord> {
    let job = store.get_job(id).await?;
    if job.status.is_final() {
        return Ok(job);
    }
    let (status, reason) = if job.cancel_requested {
        (JobStatus::Cancelled, "cancelled on request".to_string())
    } else {
        (JobStatus::Failed, reason)
    };
    let _ = store
        .log(
            id,
            crate::LogEntry::remote(crate::LogLevel::Error, format!("dbt-remote: {reason}")),
        )
        .await;
    store.finish_job(id, status, None, Some(reason)).await
}

/// Ids of every job in `status`, oldest first.
pub(crate) async fn jobs_in(store: &dyn StateStore, status: JobStatus) -> Result<Vec<JobId>> {
    let mut ids = Vec::new();
    let mut query = crate::state::JobQuery {
        status: Some(status),
        before: None,
        limit: 500,
    };
    loop {
        let page = store.list_jobs(&query).await?;
        ids.extend(page.jobs.iter().map(|j| j.id));
        match page.next {
            Some(next) => query.before = Some(next),
            None => break,
        }
    }
    ids.reverse();
    Ok(ids)
}

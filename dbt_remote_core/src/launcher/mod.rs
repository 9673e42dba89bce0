//! How jobs are started: the [`JobLauncher`] trait and its implementations.

use std::fmt;

use async_trait::async_trait;

use crate::job::{JobId, JobRecord};
use crate::Result;

#[cfg(feature = "gcp")]
pub mod cloud_run;
mod in_process;
mod process;
mod worker_pool;

#[cfg(feature = "gcp")]
pub use cloud_run::{CloudRunLauncher, CloudRunLauncherBuilder};
pub use in_process::InProcessLauncher;
pub use process::{JobCommand, ProcessLauncher, ProcessLauncherConfig, RunnerLock};
pub use worker_pool::{WorkerPool, WorkerPoolConfig, DEFAULT_DBT_WORKERS};

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
/// - Several servers may share one store. A job's runner is started by exactly one of them:
///   the one that wins the job's claim ([`JobLifecycle::claim_job`]: queued → running with an
///   owner and a lease, compare-and-set). The owner renews the lease while it launches and
///   watches the job; `recover` takes over only jobs whose owner's lease has run out, and looks
///   for the runner the old owner may have started before starting one. `cancel` works from any
///   of them: it marks the record, and whoever sees a runner (now, or when it records one)
///   stops it.
///
///   The Cloud Run launcher keeps this rule (its instances share Firestore). The process
///   launcher needs no lease: a server holds `<state dir>/server.lock`, so no second server runs
///   on a state dir, and were two ever allowed, a job's runner still runs once, since
///   `dbt-server run-job` takes the job's runner lock (`runs/<id>.lock`) first and refuses to run
///   when it is held; the kernel releases that lock when the runner dies, which is how its
///   `recover` tells a dead runner from a live one.
///
/// [`JobLifecycle::claim_job`]: crate::lifecycle::JobLifecycle::claim_job
#[async_trait]
pub trait JobLauncher: fmt::Debug + Send + Sync + 'static {
    async fn launch(&self, id: JobId) -> Result<()>;
    async fn cancel(&self, id: JobId) -> Result<JobRecord>;
    async fn recover(&self) -> Result<()>;
}

//! A launcher that runs each job as an execution of one Cloud Run job (feature `gcp`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_gax::error::rpc::Code;
use google_cloud_lro::Poller as _;
use google_cloud_run_v2::client::{Executions, Jobs};
use google_cloud_run_v2::model::condition::{ExecutionReason, State};
use google_cloud_run_v2::model::run_job_request::overrides::ContainerOverride;
use google_cloud_run_v2::model::run_job_request::Overrides;
use google_cloud_run_v2::model::{EnvVar, Execution};
use tokio::sync::OnceCell;

use super::JobLauncher;
use crate::cloud_run::{api_error, client, code, ClientOptions, Hints};
use crate::env;
use crate::job::{JobId, JobRecord, JobStatus};
use crate::lifecycle::{Claim, JobLifecycle, Lease};
use crate::state::{Modify, StateStore, StateStoreExt};
use crate::{Error, Result};

/// The Cloud Run job's name when none is configured.
pub const DEFAULT_JOB_NAME: &str = "dbt-server-job";
/// How long one execution may run when no timeout is configured.
pub const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_secs(3600);
/// CPU limit of an execution when none is configured.
pub const DEFAULT_CPU: &str = "1";
/// Memory limit of an execution when none is configured.
pub const DEFAULT_MEMORY: &str = "2Gi";
/// How often the state of a running execution is read.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// The name of the job's one container.
pub const CONTAINER_NAME: &str = "dbt-server";
/// The label (key, value) the launcher puts on the Cloud Run job it manages.
pub const JOB_LABEL: (&str, &str) = ("dbt-remote", "job-runner");
/// The folder in which an execution finds the profiles secret's `profiles.yml`
/// ([`CloudRunLauncherBuilder::with_profiles_secret`]); `DBT_PROFILES_DIR` points there.
pub const PROFILES_MOUNT: &str = "/etc/dbt-remote/profiles";
/// The name of the profiles secret's volume in the job template.
pub const PROFILES_VOLUME: &str = "dbt-remote-profiles";

/// What the server's account needs to use the launcher, for permission errors.
const PERMISSION_HINT: &str = "the dbt-server's service account needs roles/run.developer on \
     the project (run.jobs.get/create/update/run, run.executions.get/cancel) and \
     iam.serviceAccounts.actAs on the executions' service account (roles/iam.serviceAccountUser)";

mod builder;
mod template;

pub use builder::CloudRunLauncherBuilder;
use builder::Config;

impl CloudRunLauncher {
    /// The launcher of checked settings (the end of [`CloudRunLauncherBuilder::build`]).
    async fn with_config(
        store: Arc<dyn StateStore>,
        config: Config,
        client: &ClientOptions,
    ) -> Result<CloudRunLauncher> {
        let jobs = client!(Jobs, client)?;
        let executions = client!(Executions, client)?;
        let lease = Lease::new(config.lease);
        Ok(CloudRunLauncher {
            shared: Arc::new(Shared {
                store,
                jobs,
                executions,
                config,
                job_ready: OnceCell::new(),
                watched: Mutex::default(),
                lease,
                sweeping: std::sync::Once::new(),
            }),
        })
    }
}

/// Runs each job as one execution of a single Cloud Run job.
///
/// The Cloud Run job (`projects/P/locations/R/jobs/J`, labelled [`JOB_LABEL`]) is created on
/// the first launch if it is missing, and updated if its template differs from the settings
/// (image, service account, CPU, memory, timeout, environment, no retries). Every dbt job is
/// then one execution of it, started with per-execution overrides: the arguments
/// `run-job <id>`, the variable `DBT_REMOTE_JOB_ID=<id>`, one task, the task timeout. So
/// executions do not pile up job resources against the regional quota.
///
/// The execution's name is kept in the job record ([`JobRecord::execution`]). A task per
/// running job reads the execution's state every poll interval: an execution that ends while
/// its job is not final (the container exited non-zero or was killed, the task timed out, the
/// execution was cancelled) finishes the job `failed` with the reason, or `cancelled` if a
/// cancel was requested. [`cancel`](JobLauncher::cancel) cancels the execution;
/// [`recover`](JobLauncher::recover) watches the executions of the running jobs again.
#[derive(Debug, Clone)]
pub struct CloudRunLauncher {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    store: Arc<dyn StateStore>,
    jobs: Jobs,
    executions: Executions,
    config: Config,
    /// Set once the Cloud Run job is known to exist with the right template.
    job_ready: OnceCell<()>,
    /// Jobs launched or watched by this launcher.
    watched: Mutex<HashSet<JobId>>,
    /// This instance's claim on the jobs it launches.
    lease: Lease,
    /// Set once the periodic take-over of jobs left by dead instances has started.
    sweeping: std::sync::Once,
}

impl CloudRunLauncher {
    pub fn builder() -> CloudRunLauncherBuilder {
        CloudRunLauncherBuilder::default()
    }

    /// The Cloud Run job's full name, `projects/P/locations/R/jobs/J`.
    pub fn job(&self) -> &str {
        &self.shared.config.job
    }
}

impl Shared {
    fn hints(&self) -> Hints<'_> {
        Hints {
            permission: PERMISSION_HINT,
            not_found: "check the project and the region (DBT_REMOTE_GCP_PROJECT, \
                        DBT_REMOTE_CLOUD_RUN_REGION), and that the Cloud Run Admin API is enabled",
        }
    }

    /// Makes sure the Cloud Run job exists with the desired template (once per launcher).
    async fn ensure_job(&self) -> Result<()> {
        self.job_ready
            .get_or_try_init(|| async {
                let c = &self.config;
                let desired = template::desired_job(c);
                match self.jobs.get_job().set_name(&c.job).send().await {
                    Ok(existing) => {
                        // What an admin added by hand stays: only the managed fields change.
                        let merged = template::merged(&existing, c);
                        if let Some(what) = template::drift(&existing, &merged) {
                            tracing::info!(job = %c.job, "updating the Cloud Run job: its {what} changed");
                            self.jobs
                                .update_job()
                                .set_job(merged.set_name(&c.job))
                                .poller()
                                .until_done()
                                .await
                                .map_err(|e| {
                                    api_error(e, format!("updating Cloud Run job {}", c.job), self.hints())
                                })?;
                        }
                    }
                    Err(e) if code(&e) == Some(Code::NotFound) => {
                        tracing::info!(job = %c.job, "creating the Cloud Run job");
                        let created = self
                            .jobs
                            .create_job()
                            .set_parent(&c.parent)
                            .set_job_id(&c.job_name)
                            .set_job(desired)
                            .poller()
                            .until_done()
                            .await;
                        match created {
                            Ok(_) => {}
                            // Another server created it first.
                            Err(e) if code(&e) == Some(Code::AlreadyExists) => {}
                            Err(e) => {
                                return Err(api_error(
                                    e,
                                    format!("creating Cloud Run job {}", c.job),
                                    self.hints(),
                                ))
                            }
                        }
                    }
                    Err(e) => {
                        return Err(api_error(
                            e,
                            format!("reading Cloud Run job {}", c.job),
                            self.hints(),
                        ))
                    }
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Launches the job unless this launcher already does: see [`launch`](Self::launch).
    async fn launch_once(self: &Arc<Self>, id: JobId) -> Result<()> {
        if !self.watched.lock().unwrap().insert(id) {
            return Ok(());
        }
        self.launch(id).await
    }

    /// Claims the job, starts (or adopts) its execution and watches it; finishes the job
    /// `failed` if the execution cannot start. A job another instance holds is left to it.
    async fn launch(self: &Arc<Self>, id: JobId) -> Result<()> {
        match self.start(id).await {
            Ok(Some(execution)) => {
                tokio::spawn(self.clone().watch(id, execution));
                Ok(())
            }
            Ok(None) => {
                self.watched.lock().unwrap().remove(&id);
                Ok(())
            }
            Err(e) => {
                tracing::error!(job = %id, "could not start the Cloud Run execution: {e}");
                let _ = self
                    .store
                    .finish_orphan(id, format!("could not start the Cloud Run execution: {e}"))
                    .await;
                self.watched.lock().unwrap().remove(&id);
                Err(e)
            }
        }
    }

    /// The execution of a job this instance wins the claim of: the recorded one, else one
    /// started for it before (a taken-over job), else a new one. `None` if the job is not this
    /// instance's to run (final, or another instance's lease is live).
    async fn start(self: &Arc<Self>, id: JobId) -> Result<Option<String>> {
        let (job, taken_over) = match self.store.claim_job(id, &self.lease).await? {
            Claim::Won { job, taken_over } => (job, taken_over),
            Claim::Lost(_) => return Ok(None),
        };
        tokio::spawn(self.clone().keep_lease(id));
        self.ensure_job().await?;
        if let Some(execution) = job.execution {
            tracing::info!(job = %id, execution, "watching the job's Cloud Run execution");
            return Ok(Some(execution));
        }
        if taken_over {
            if let Some(execution) = self.find_execution(id).await? {
                tracing::info!(job = %id, execution, "adopting the Cloud Run execution another instance started");
                let recorded = self.record_execution(id, &execution).await?;
                return Ok(recorded.then_some(execution));
            }
        }
        if job.cancel_requested {
            // Cancelled while no execution ran: nothing to start.
            self.store.finish_cancelled(id).await?;
            return Ok(None);
        }
        let execution = self.run_execution(id).await?;
        let recorded = self.record_execution(id, &execution).await?;
        Ok(recorded.then_some(execution))
    }

    /// `POST {job}:run` for one job; the new execution's name.
    async fn run_execution(&self, id: JobId) -> Result<String> {
        let c = &self.config;
        let id_text = id.to_string();
        let overrides = Overrides::new()
            .set_container_overrides([ContainerOverride::new()
                .set_name(CONTAINER_NAME)
                .set_args(["run-job", id_text.as_str()])
                .set_env([EnvVar::new().set_name(env::JOB_ID).set_value(&id_text)])])
            .set_task_count(1)
            .set_timeout(wkt_duration(c.task_timeout));
        let operation = self
            .jobs
            .run_job()
            .set_name(&c.job)
            .set_overrides(overrides)
            .send()
            .await
            .map_err(|e| {
                api_error(
                    e,
                    format!("running Cloud Run job {} for job {id}", c.job),
                    self.hints(),
                )
            })?;
        let execution = operation
            .metadata
            .as_ref()
            .and_then(|any| any.to_msg::<Execution>().ok())
            .map(|e| e.name)
            .filter(|name| !name.is_empty())
            .ok_or_else(|| {
                Error::backend(
                    crate::cloud_run::BACKEND,
                    format!(
                        "running Cloud Run job {} answered operation {:?} without the execution",
                        c.job, operation.name
                    ),
                )
            })?;
        tracing::info!(job = %id, execution, "Cloud Run execution started");
        Ok(execution)
    }

    /// Keeps the execution's name in the job record while this instance still holds the job's
    /// claim; cancels the execution if a cancel was requested before it was recorded (an
    /// instance that got the cancel saw no execution). An execution started under a claim that
    /// another instance has since taken over is cancelled instead, so that one execution runs.
    /// Returns whether the execution was recorded.
    async fn record_execution(&self, id: JobId, execution: &str) -> Result<bool> {
        let owner = self.lease.owner.as_str();
        let job = self
            .store
            .modify_job(id, |job| {
                if job.launch_owner.as_deref() != Some(owner) || job.status.is_final() {
                    return Modify::Keep;
                }
                job.execution = Some(execution.to_string());
                Modify::Write
            })
            .await?;
        let recorded = job.execution.as_deref() == Some(execution);
        if !recorded {
            tracing::warn!(job = %id, execution, "the job was taken over or ended during the launch: cancelling this execution");
        }
        if job.cancel_requested || !recorded {
            self.cancel_execution(execution).await?;
        }
        Ok(recorded)
    }

    /// The execution started for the job earlier, if any: the one among the Cloud Run job's
    /// executions whose container overrides set `DBT_REMOTE_JOB_ID` to the job's id (an
    /// execution's `template` is the task template its tasks were made from, overrides applied).
    async fn find_execution(&self, id: JobId) -> Result<Option<String>> {
        let c = &self.config;
        let id_text = id.to_string();
        let mut token = String::new();
        for _ in 0..MAX_EXECUTION_PAGES {
            let page = self
                .executions
                .list_executions()
                .set_parent(&c.job)
                .set_page_size(100)
                .set_page_token(token)
                .send()
                .await
                .map_err(|e| {
                    api_error(
                        e,
                        format!("listing the executions of Cloud Run job {}", c.job),
                        self.hints(),
                    )
                })?;
            if let Some(found) = page.executions.iter().find(|e| runs_job(e, &id_text)) {
                return Ok(Some(found.name.clone()));
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        Ok(None)
    }

    /// Renews this instance's claim on the job every third of the lease, until the job is final
    /// or another instance has taken it over.
    async fn keep_lease(self: Arc<Self>, id: JobId) {
        loop {
            tokio::time::sleep(self.lease.renew_every()).await;
            match self.store.renew_lease(id, &self.lease).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => tracing::warn!(job = %id, "could not renew the job's lease: {e}"),
            }
        }
    }

    async fn cancel_execution(&self, execution: &str) -> Result<()> {
        match self
            .executions
            .cancel_execution()
            .set_name(execution)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Already over or gone: nothing left to cancel.
            Err(e) if matches!(code(&e), Some(Code::NotFound | Code::FailedPrecondition)) => Ok(()),
            Err(e) => Err(api_error(
                e,
                format!("cancelling Cloud Run execution {execution}"),
                self.hints(),
            )),
        }
    }

    /// Reads the execution's state until it ends or its job is final; finishes a job whose
    /// execution ended without finishing it. A cancel requested through any instance cancels
    /// the execution (once; the call is idempotent anyway).
    async fn watch(self: Arc<Self>, id: JobId, execution: String) {
        let mut cancelled = false;
        loop {
            tokio::time::sleep(self.config.poll_interval).await;
            let ended = match self
                .executions
                .get_execution()
                .set_name(&execution)
                .send()
                .await
            {
                Ok(state) => execution_end(&state),
                Err(e) if code(&e) == Some(Code::NotFound) => Some(format!(
                    "the Cloud Run execution {} no longer exists",
                    short_name(&execution)
                )),
                Err(e) => {
                    tracing::warn!(job = %id, execution, "could not read the execution's state: {e}");
                    None
                }
            };
            if let Some(reason) = ended {
                if let Err(e) = self.store.finish_orphan(id, reason).await {
                    tracing::error!(job = %id, "could not finish the job: {e}");
                }
                break;
            }
            match self.store.get_job(id).await {
                Ok(job) if job.status.is_final() => break,
                Ok(job) if job.cancel_requested && !cancelled => {
                    match self.cancel_execution(&execution).await {
                        Ok(()) => cancelled = true,
                        Err(e) => tracing::warn!(job = %id, "could not cancel the execution: {e}"),
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(job = %id, "could not read the job: {e}"),
            }
        }
        self.watched.lock().unwrap().remove(&id);
    }

    /// Takes over what no live instance holds: running jobs whose owner's lease ran out (their
    /// execution is adopted, found, or started once) and queued jobs (whoever wins the claim
    /// launches them). Jobs this instance launches already are skipped.
    async fn take_over(self: &Arc<Self>) -> Result<()> {
        for id in self.store.jobs_in(JobStatus::Running).await? {
            if self.watched.lock().unwrap().contains(&id) {
                continue;
            }
            let job = self.store.get_job(id).await?;
            if job
                .lease_until
                .is_some_and(|until| until > chrono::Utc::now())
            {
                continue;
            }
            if let Err(e) = self.launch_once(id).await {
                tracing::error!(job = %id, "could not take over a running job: {e}");
            }
        }
        for id in self.store.jobs_in(JobStatus::Queued).await? {
            // A job that cannot start is finished `failed` by `launch`: go on with the others.
            if let Err(e) = self.launch_once(id).await {
                tracing::error!(job = %id, "could not launch a queued job: {e}");
            }
        }
        Ok(())
    }

    /// Runs [`take_over`](Self::take_over) every half lease, so that the jobs of an instance
    /// that died are taken over while this one runs (not only when a server starts).
    async fn sweep(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.lease.length / 2).await;
            if let Err(e) = self.take_over().await {
                tracing::warn!("could not look for jobs to take over: {e}");
            }
        }
    }
}

/// Pages of executions [`Shared::find_execution`] reads at most (100 each).
const MAX_EXECUTION_PAGES: usize = 20;

/// Whether an execution's container overrides name the job `id_text`.
fn runs_job(execution: &Execution, id_text: &str) -> bool {
    execution.template.iter().any(|t| {
        t.containers.iter().any(|c| {
            c.env
                .iter()
                .any(|e| e.name == env::JOB_ID && e.value().map(String::as_str) == Some(id_text))
        })
    })
}

/// Why an execution is over, in words; `None` while it runs.
fn execution_end(execution: &Execution) -> Option<String> {
    let completed = execution
        .conditions
        .iter()
        .find(|c| c.r#type == "Completed");
    let done = execution.completion_time.is_some()
        || completed
            .is_some_and(|c| matches!(c.state, State::ConditionSucceeded | State::ConditionFailed));
    if !done {
        return None;
    }
    let reason = completed.and_then(|c| c.execution_reason());
    let failed =
        execution.failed_count > 0 || completed.is_some_and(|c| c.state == State::ConditionFailed);
    let how = if execution.cancelled_count > 0
        || matches!(
            reason,
            Some(ExecutionReason::Cancelled | ExecutionReason::Cancelling)
        ) {
        "was cancelled"
    } else if reason == Some(&ExecutionReason::NonZeroExitCode) {
        "failed: its container exited with a non-zero code"
    } else if failed {
        "failed"
    } else {
        "ended"
    };
    let detail = completed
        .map(|c| c.message.trim())
        .filter(|m| !m.is_empty())
        .map(|m| format!(" ({m})"))
        .unwrap_or_default();
    Some(format!(
        "the Cloud Run execution {} {how} before the job finished{detail}",
        short_name(&execution.name)
    ))
}

/// The last segment of a resource name.
fn short_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

fn wkt_duration(d: Duration) -> google_cloud_wkt::Duration {
    google_cloud_wkt::Duration::clamp(d.as_secs() as i64, 0)
}

#[async_trait]
impl JobLauncher for CloudRunLauncher {
    async fn launch(&self, id: JobId) -> Result<()> {
        self.shared.launch_once(id).await
    }

    /// Requests the cancel in the store and cancels the recorded execution, from any instance:
    /// the owner, watching, cancels it too, and an owner still inside `RunJob` cancels it as
    /// soon as it records it.
    async fn cancel(&self, id: JobId) -> Result<JobRecord> {
        let job = self.shared.store.request_cancel(id).await?;
        if let (JobStatus::Running, Some(execution)) = (job.status, &job.execution) {
            self.shared.cancel_execution(execution).await?;
        }
        Ok(job)
    }

    /// Takes over the jobs no live instance holds (see [`Lease`]), then keeps doing so every
    /// half lease.
    async fn recover(&self) -> Result<()> {
        let shared = &self.shared;
        shared.take_over().await?;
        shared
            .sweeping
            .call_once(|| drop(tokio::spawn(shared.clone().sweep())));
        Ok(())
    }
}

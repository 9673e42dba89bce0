//! The Cloud Scheduler trigger (feature `gcp`): one Cloud Scheduler job per schedule, which
//! calls `POST {public URL}/api/v1/schedules/{name}/run` with a Google ID token for the
//! service, so schedules fire while the service is scaled to zero.
//!
//! - Job `projects/P/locations/L/jobs/<prefix><schedule name>`: `schedule` is the cron,
//!   `timeZone` `Etc/UTC`, `httpTarget` a `POST` of `{}` with
//!   `oidcToken { serviceAccountEmail, audience }`, the audience being the service URL (the
//!   server's `--auth-audience`, else `--public-url`). Its `description` starts with
//!   [`MANAGED_BY`]: Cloud Scheduler jobs have no labels, so the name prefix and this mark say
//!   which jobs the server manages.
//! - Created with the schedule (an existing job is patched with an `updateMask`), deleted with
//!   it (a job already gone is fine); at start, `reconcile` creates the missing jobs, patches
//!   those that differ and deletes the managed jobs of schedules that are gone.
//! - The run endpoint reads Cloud Scheduler's `X-CloudScheduler-ScheduleTime` header and
//!   claims that occurrence ([`JobService::run_schedule_occurrence`](crate::service::JobService::run_schedule_occurrence)),
//!   so a retried call does not run the job twice.

use std::collections::HashMap;

use async_trait::async_trait;
use google_cloud_gax::error::rpc::Code;
use google_cloud_scheduler_v1::client::CloudScheduler;
use google_cloud_scheduler_v1::model::{HttpMethod, HttpTarget, Job, OidcToken};

use super::{Schedule, ScheduleTrigger};
use crate::env;
use crate::{Error, Result};

/// The start of the description of every Cloud Scheduler job the server manages.
pub const MANAGED_BY: &str = "Managed by dbt-server";
/// Default start of the names of the server's Cloud Scheduler jobs.
pub const DEFAULT_JOB_PREFIX: &str = "dbt-server-";
/// The time zone of every job: schedules' crons are in UTC.
const TIME_ZONE: &str = "Etc/UTC";
const BACKEND: &str = "cloud scheduler";

/// Keeps one Cloud Scheduler job per schedule; made by [`CloudSchedulerTrigger::builder`].
#[derive(Debug)]
pub struct CloudSchedulerTrigger {
    client: CloudScheduler,
    project: String,
    /// `projects/P/locations/L`.
    parent: String,
    prefix: String,
    public_url: String,
    audience: String,
    service_account: String,
}

/// Configures a [`CloudSchedulerTrigger`]; every setting is checked in [`build`](Self::build),
/// and a missing one is named by its variable.
#[derive(Debug, Clone, Default)]
pub struct CloudSchedulerTriggerBuilder {
    project: Option<String>,
    region: Option<String>,
    public_url: Option<String>,
    audience: Option<String>,
    service_account: Option<String>,
    prefix: Option<String>,
    endpoint: Option<String>,
    anonymous: bool,
}

impl CloudSchedulerTriggerBuilder {
    /// The project (`DBT_REMOTE_GCP_PROJECT`, else `GOOGLE_CLOUD_PROJECT`), the region
    /// (`DBT_REMOTE_CLOUD_SCHEDULER_REGION`, else `DBT_REMOTE_CLOUD_RUN_REGION`), the invoker
    /// (`DBT_REMOTE_SCHEDULER_SERVICE_ACCOUNT`), the job prefix
    /// (`DBT_REMOTE_CLOUD_SCHEDULER_PREFIX`) and the endpoint
    /// (`DBT_REMOTE_CLOUD_SCHEDULER_ENDPOINT`; an `http://` one gets no credentials).
    pub fn from_env(mut self) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        self.project = var(env::GCP_PROJECT)
            .or_else(|| var(env::GOOGLE_CLOUD_PROJECT))
            .or(self.project);
        self.region = var(env::CLOUD_SCHEDULER_REGION)
            .or_else(|| var(env::CLOUD_RUN_REGION))
            .or(self.region);
        self.service_account = var(env::SCHEDULER_SERVICE_ACCOUNT).or(self.service_account);
        self.prefix = var(env::CLOUD_SCHEDULER_PREFIX).or(self.prefix);
        if let Some(endpoint) = var(env::CLOUD_SCHEDULER_ENDPOINT) {
            self.anonymous = endpoint.starts_with("http://");
            self.endpoint = Some(endpoint);
        }
        self
    }

    pub fn with_project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// The Cloud Scheduler region (`europe-west1`).
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// The server's base URL as Cloud Scheduler reaches it (`--public-url`).
    pub fn with_public_url(mut self, url: impl Into<String>) -> Self {
        self.public_url = Some(url.into());
        self
    }

    /// The audience of the ID tokens (default: the public URL).
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// The service account whose ID token Cloud Scheduler sends (it must be allowed to call
    /// the service).
    pub fn with_service_account(mut self, email: impl Into<String>) -> Self {
        self.service_account = Some(email.into());
        self
    }

    /// The start of the job names (default [`DEFAULT_JOB_PREFIX`]): servers sharing a project
    /// and region need different prefixes.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Another endpoint of the Cloud Scheduler API (tests).
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// Sends no credentials (tests against a local fake of the API).
    pub fn with_anonymous_credentials(mut self) -> Self {
        self.anonymous = true;
        self
    }

    /// Checks the settings and makes the client (no request is made).
    pub async fn build(self) -> Result<CloudSchedulerTrigger> {
        let needs = |what: &str, how: String| {
            Error::invalid(format!(
                "--scheduler cloud-scheduler needs {what}: set {how}"
            ))
        };
        let given = |v: Option<String>| v.filter(|v| !v.is_empty());
        let project = given(self.project).ok_or_else(|| {
            needs(
                "a project",
                format!("{} (or {})", env::GCP_PROJECT, env::GOOGLE_CLOUD_PROJECT),
            )
        })?;
        let region = given(self.region).ok_or_else(|| {
            needs(
                "a region",
                format!(
                    "{} (or {})",
                    env::CLOUD_SCHEDULER_REGION,
                    env::CLOUD_RUN_REGION
                ),
            )
        })?;
        crate::cloud_run::check_region(&region, env::CLOUD_SCHEDULER_REGION)?;
        let public_url = given(self.public_url).ok_or_else(|| {
            needs(
                "the URL it calls",
                format!("--public-url ({})", env::PUBLIC_URL),
            )
        })?;
        if !(public_url.starts_with("https://") || public_url.starts_with("http://")) {
            return Err(Error::invalid(format!(
                "--public-url {public_url:?} must start with https://"
            )));
        }
        let public_url = public_url.trim_end_matches('/').to_owned();
        let service_account = given(self.service_account).ok_or_else(|| {
            needs(
                "the service account whose ID token it sends",
                env::SCHEDULER_SERVICE_ACCOUNT.to_owned(),
            )
        })?;
        let prefix = self.prefix.unwrap_or_else(|| DEFAULT_JOB_PREFIX.into());
        check_job_id_part(&prefix)?;
        let mut builder = CloudScheduler::builder();
        if let Some(endpoint) = self.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if self.anonymous {
            builder = builder.with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            );
        }
        let client = builder.build().await.map_err(|e| {
            Error::backend(
                BACKEND,
                format!(
                    "could not make a Cloud Scheduler client (are Application Default \
                     Credentials set up?): {e}"
                ),
            )
        })?;
        Ok(CloudSchedulerTrigger {
            client,
            parent: format!("projects/{project}/locations/{region}"),
            project,
            prefix,
            audience: self.audience.unwrap_or_else(|| public_url.clone()),
            public_url,
            service_account,
        })
    }
}

/// A job id may hold letters, digits, `-` and `_` (at most 500).
fn check_job_id_part(prefix: &str) -> Result<()> {
    if prefix.len() <= 300
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid {} {prefix:?}: use letters, digits, '-' and '_' only",
            env::CLOUD_SCHEDULER_PREFIX
        )))
    }
}

impl CloudSchedulerTrigger {
    pub fn builder() -> CloudSchedulerTriggerBuilder {
        CloudSchedulerTriggerBuilder::default()
    }

    /// The full name of the job of the schedule `name`.
    pub fn job_name(&self, name: &str) -> String {
        format!("{}/jobs/{}{name}", self.parent, self.prefix)
    }

    /// The schedule name of a job the server manages, `None` for any other job.
    fn managed(&self, job: &Job) -> Option<String> {
        let id = job.name.strip_prefix(&format!("{}/jobs/", self.parent))?;
        let name = id.strip_prefix(&self.prefix)?;
        (job.description.starts_with(MANAGED_BY) && super::check_name(name).is_ok())
            .then(|| name.to_owned())
    }

    /// The job of `schedule`, as the server wants it.
    pub fn desired_job(&self, schedule: &Schedule) -> Job {
        let target = HttpTarget::new()
            .set_uri(format!(
                "{}/api/v1/schedules/{}/run",
                self.public_url, schedule.name
            ))
            .set_http_method(HttpMethod::Post)
            .set_headers(HashMap::from([("Content-Type", "application/json")]))
            .set_body(bytes::Bytes::from_static(b"{}"))
            .set_oidc_token(
                OidcToken::new()
                    .set_service_account_email(self.service_account.clone())
                    .set_audience(self.audience.clone()),
            );
        Job::new()
            .set_name(self.job_name(&schedule.name))
            .set_description(format!(
                "{MANAGED_BY}: runs its schedule {} ({}). Changes made here are overwritten; \
                 delete the schedule, not this job.",
                schedule.name, schedule.command
            ))
            .set_schedule(schedule.cron.clone())
            .set_time_zone(TIME_ZONE)
            .set_http_target(target)
    }

    async fn create(&self, job: Job) -> Result<()> {
        let action = format!("creating Cloud Scheduler job {}", job.name);
        match self
            .client
            .create_job()
            .set_parent(self.parent.clone())
            .set_job(job.clone())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if crate::cloud_run::code(&e) == Some(Code::AlreadyExists) => {
                self.update(job).await
            }
            Err(e) => Err(self.api_error(e, &action)),
        }
    }

    async fn update(&self, job: Job) -> Result<()> {
        let action = format!("updating Cloud Scheduler job {}", job.name);
        let mask = google_cloud_wkt::FieldMask::default().set_paths([
            "description",
            "schedule",
            "time_zone",
            "http_target",
        ]);
        self.client
            .update_job()
            .set_job(job)
            .set_update_mask(mask)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.api_error(e, &action))
    }

    async fn delete(&self, name: String) -> Result<()> {
        let action = format!("deleting Cloud Scheduler job {name}");
        match self.client.delete_job().set_name(name).send().await {
            Ok(()) => Ok(()),
            Err(e) if crate::cloud_run::code(&e) == Some(Code::NotFound) => Ok(()),
            Err(e) => Err(self.api_error(e, &action)),
        }
    }

    /// Every job in the project and region, all pages.
    async fn list(&self) -> Result<Vec<Job>> {
        let action = format!("listing the Cloud Scheduler jobs of {}", self.parent);
        let mut jobs = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .client
                .list_jobs()
                .set_parent(self.parent.clone())
                .set_page_token(token)
                .send()
                .await
                .map_err(|e| self.api_error(e, &action))?;
            jobs.extend(page.jobs);
            if page.next_page_token.is_empty() {
                return Ok(jobs);
            }
            token = page.next_page_token;
        }
    }

    /// The core's error for a failed call, with what to grant or check.
    fn api_error(&self, e: google_cloud_gax::error::Error, action: &str) -> Error {
        let said = e
            .status()
            .map(|s| s.message.clone())
            .unwrap_or_else(|| e.to_string());
        let hint = match crate::cloud_run::code(&e) {
            Some(Code::PermissionDenied) => format!(
                "permission denied {action}: grant the server's service account \
                 roles/cloudscheduler.admin on project {}, and roles/iam.serviceAccountUser on \
                 {} (the account the jobs' ID tokens are for)",
                self.project, self.service_account
            ),
            Some(Code::NotFound) => format!(
                "not found {action}: check the project and region ({}) and that the Cloud \
                 Scheduler API is enabled (`gcloud services enable cloudscheduler.googleapis.com`)",
                self.parent
            ),
            Some(Code::Unauthenticated) => {
                return Error::Unauthenticated(format!(
                    "Google Cloud refused the credentials {action}: set up Application Default \
                     Credentials ({said})"
                ))
            }
            _ => format!("{action} failed"),
        };
        Error::backend(BACKEND, format!("{hint} (Google Cloud said: {said})"))
    }
}

/// Whether `actual` already is what `desired` says (the fields the server manages).
fn same(actual: &Job, desired: &Job) -> bool {
    let target = |j: &Job| {
        j.http_target().map(|t| {
            (
                t.uri.clone(),
                t.http_method.clone(),
                t.oidc_token()
                    .map(|o| (o.service_account_email.clone(), o.audience.clone())),
            )
        })
    };
    actual.schedule == desired.schedule
        && actual.time_zone == desired.time_zone
        && actual.description == desired.description
        && target(actual) == target(desired)
}

#[async_trait]
impl ScheduleTrigger for CloudSchedulerTrigger {
    async fn on_created(&self, schedule: &Schedule) -> Result<()> {
        self.create(self.desired_job(schedule)).await
    }

    async fn on_deleted(&self, name: &str) -> Result<()> {
        self.delete(self.job_name(name)).await
    }

    async fn reconcile(&self, all: &[Schedule]) -> Result<()> {
        let mut existing: HashMap<String, Job> = HashMap::new();
        for job in self.list().await? {
            if let Some(name) = self.managed(&job) {
                existing.insert(name, job);
            }
        }
        for schedule in all {
            let desired = self.desired_job(schedule);
            match existing.remove(&schedule.name) {
                None => self.create(desired).await?,
                Some(actual) if !same(&actual, &desired) => self.update(desired).await?,
                Some(_) => {}
            }
        }
        for (name, job) in existing {
            tracing::info!(schedule = %name, "deleting the Cloud Scheduler job of a deleted schedule");
            self.delete(job.name).await?;
        }
        Ok(())
    }

    fn fires_in_server(&self) -> bool {
        false
    }

    fn describe(&self) -> String {
        format!(
            "schedules fired by Cloud Scheduler jobs {}/jobs/{}* calling {}",
            self.parent, self.prefix, self.public_url
        )
    }
}

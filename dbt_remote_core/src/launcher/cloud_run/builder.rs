//! The settings of a [`CloudRunLauncher`]: read from the environment, set with `with_*`,
//! checked in [`CloudRunLauncherBuilder::build`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::{CloudRunLauncher, DEFAULT_JOB_NAME, DEFAULT_POLL_INTERVAL, DEFAULT_TASK_TIMEOUT};
#[cfg(doc)]
use super::{DEFAULT_CPU, DEFAULT_MEMORY};
use crate::cloud_run::{check_region, ClientOptions};
use crate::env;
use crate::lifecycle::DEFAULT_LEASE;
use crate::state::StateStore;
use crate::{Error, Result};

/// Settings of a [`CloudRunLauncher`]; `from_env` reads the `DBT_REMOTE_CLOUD_RUN_*` variables,
/// `with_*` set them, and [`build`](Self::build) checks them.
#[derive(Debug, Clone, Default)]
pub struct CloudRunLauncherBuilder {
    project: Option<String>,
    region: Option<String>,
    job_name: Option<String>,
    image: Option<String>,
    service_account: Option<String>,
    task_timeout: Option<Duration>,
    task_timeout_text: Option<String>,
    cpu: Option<String>,
    memory: Option<String>,
    env: BTreeMap<String, String>,
    profiles_secret: Option<String>,
    poll_interval: Option<Duration>,
    lease: Option<Duration>,
    client: ClientOptions,
}

impl CloudRunLauncherBuilder {
    /// Takes every setting whose variable is set (docs/configuration.md); the project falls
    /// back to `GOOGLE_CLOUD_PROJECT`.
    pub fn from_env(mut self) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        self.project = var(env::GCP_PROJECT)
            .or_else(|| var(env::GOOGLE_CLOUD_PROJECT))
            .or(self.project);
        self.region = var(env::CLOUD_RUN_REGION).or(self.region);
        self.job_name = var(env::CLOUD_RUN_JOB).or(self.job_name);
        self.image = var(env::CLOUD_RUN_IMAGE).or(self.image);
        self.service_account = var(env::CLOUD_RUN_SERVICE_ACCOUNT).or(self.service_account);
        self.task_timeout_text = var(env::CLOUD_RUN_TASK_TIMEOUT_SECONDS);
        self.cpu = var(env::CLOUD_RUN_CPU).or(self.cpu);
        self.memory = var(env::CLOUD_RUN_MEMORY).or(self.memory);
        self.profiles_secret = var(env::CLOUD_RUN_PROFILES_SECRET).or(self.profiles_secret);
        if let Some(endpoint) = var(env::CLOUD_RUN_ENDPOINT) {
            self.client.anonymous |= endpoint.starts_with("http://");
            self.client.endpoint = Some(endpoint);
        }
        self
    }

    pub fn with_project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// The Cloud Run region, e.g. `europe-west1`.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// The name of the one Cloud Run job (default [`DEFAULT_JOB_NAME`]).
    pub fn with_job_name(mut self, name: impl Into<String>) -> Self {
        self.job_name = Some(name.into());
        self
    }

    /// The container image; its entry point must be `dbt-server` (each execution runs
    /// `run-job <id>`).
    pub fn with_image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// The service account the executions run as (default: the project's compute account).
    pub fn with_service_account(mut self, email: impl Into<String>) -> Self {
        self.service_account = Some(email.into());
        self
    }

    /// How long one execution may run (default [`DEFAULT_TASK_TIMEOUT`]).
    pub fn with_task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = Some(timeout);
        self
    }

    /// CPU limit of an execution, in Cloud Run's syntax (`1`, `2`, `4000m`).
    pub fn with_cpu(mut self, cpu: impl Into<String>) -> Self {
        self.cpu = Some(cpu.into());
        self
    }

    /// Memory limit of an execution (`512Mi`, `2Gi`).
    pub fn with_memory(mut self, memory: impl Into<String>) -> Self {
        self.memory = Some(memory.into());
        self
    }

    /// An environment variable of every execution (e.g. the state store's settings).
    pub fn with_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// A Secret Manager secret with a `profiles.yml` (`SECRET`, `SECRET:VERSION` or
    /// `projects/P/secrets/SECRET[:VERSION]`; version default `latest`), mounted in every
    /// execution as [`PROFILES_MOUNT`](super::PROFILES_MOUNT)`/profiles.yml`, with
    /// `DBT_PROFILES_DIR` set to [`PROFILES_MOUNT`](super::PROFILES_MOUNT).
    pub fn with_profiles_secret(mut self, secret: impl Into<String>) -> Self {
        self.profiles_secret = Some(secret.into());
        self
    }

    /// How often a running execution's state is read (default [`DEFAULT_POLL_INTERVAL`]).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = Some(interval);
        self
    }

    /// How long a launch claim holds without renewal (default [`DEFAULT_LEASE`]); see
    /// [`Lease`](crate::lifecycle::Lease).
    pub fn with_lease(mut self, length: Duration) -> Self {
        self.lease = Some(length);
        self
    }

    crate::cloud_run::client_option_setters!();

    /// Checks the settings and makes the launcher; jobs are kept in `store`, which the
    /// executions must reach too.
    pub async fn build(self, store: Arc<dyn StateStore>) -> Result<CloudRunLauncher> {
        let project = self.project.ok_or_else(|| {
            Error::invalid(format!(
                "no Google Cloud project for the Cloud Run launcher: set {} (or {})",
                env::GCP_PROJECT,
                env::GOOGLE_CLOUD_PROJECT
            ))
        })?;
        let region = self.region.ok_or_else(|| {
            Error::invalid(format!(
                "no Cloud Run region for the launcher: set {} (e.g. europe-west1)",
                env::CLOUD_RUN_REGION
            ))
        })?;
        check_region(&region, env::CLOUD_RUN_REGION)?;
        let image = self.image.ok_or_else(|| {
            Error::invalid(format!(
                "no container image for the Cloud Run job: set {} (an image whose entry point is dbt-server)",
                env::CLOUD_RUN_IMAGE
            ))
        })?;
        let job_name = self.job_name.unwrap_or_else(|| DEFAULT_JOB_NAME.into());
        let valid_name = job_name.len() <= 63
            && job_name.starts_with(|c: char| c.is_ascii_lowercase())
            && !job_name.ends_with('-')
            && job_name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid_name {
            return Err(Error::invalid(format!(
                "Cloud Run job name {job_name:?} is invalid: use up to 63 lowercase letters, \
                 digits and hyphens, starting with a letter ({})",
                env::CLOUD_RUN_JOB
            )));
        }
        let task_timeout = match (self.task_timeout, self.task_timeout_text) {
            (Some(t), _) => t,
            (None, Some(text)) => text
                .trim()
                .parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| {
                    Error::invalid(format!(
                        "{}: {text:?} is not a number of seconds",
                        env::CLOUD_RUN_TASK_TIMEOUT_SECONDS
                    ))
                })?,
            (None, None) => DEFAULT_TASK_TIMEOUT,
        };
        if task_timeout.is_zero() {
            return Err(Error::invalid(format!(
                "the Cloud Run task timeout must be at least 1 second ({})",
                env::CLOUD_RUN_TASK_TIMEOUT_SECONDS
            )));
        }
        let (cpu, memory) = (self.cpu, self.memory);
        let blank = |v: &Option<String>| v.as_ref().is_some_and(|v| v.trim().is_empty());
        if blank(&cpu) || blank(&memory) {
            return Err(Error::invalid(
                "the Cloud Run CPU and memory limits cannot be empty",
            ));
        }
        let profiles = self
            .profiles_secret
            .as_deref()
            .map(ProfilesSecret::parse)
            .transpose()?;
        let config = Config {
            parent: format!("projects/{project}/locations/{region}"),
            job: format!("projects/{project}/locations/{region}/jobs/{job_name}"),
            job_name,
            image,
            service_account: self.service_account.unwrap_or_default(),
            task_timeout,
            cpu,
            memory,
            env: self.env,
            profiles,
            poll_interval: self.poll_interval.unwrap_or(DEFAULT_POLL_INTERVAL),
            lease: self.lease.unwrap_or(DEFAULT_LEASE),
        };
        CloudRunLauncher::with_config(store, config, &self.client).await
    }
}

/// The checked settings of a launcher.
#[derive(Debug)]
pub(super) struct Config {
    /// `projects/P/locations/R`.
    pub(super) parent: String,
    /// `projects/P/locations/R/jobs/J`.
    pub(super) job: String,
    pub(super) job_name: String,
    pub(super) image: String,
    pub(super) service_account: String,
    pub(super) task_timeout: Duration,
    /// CPU limit when configured (a new job gets [`DEFAULT_CPU`] otherwise).
    pub(super) cpu: Option<String>,
    /// Memory limit when configured (a new job gets [`DEFAULT_MEMORY`] otherwise).
    pub(super) memory: Option<String>,
    /// The managed environment of the executions (the server's job settings).
    pub(super) env: BTreeMap<String, String>,
    pub(super) profiles: Option<ProfilesSecret>,
    pub(super) poll_interval: Duration,
    /// How long a launch claim holds without renewal.
    pub(super) lease: Duration,
}

/// The Secret Manager secret (and version) mounted as the executions' `profiles.yml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ProfilesSecret {
    /// `SECRET` (same project) or `projects/P/secrets/SECRET`.
    pub(super) secret: String,
    /// `latest` or a version number.
    pub(super) version: String,
}

impl ProfilesSecret {
    /// Reads `SECRET`, `SECRET:VERSION`, `projects/P/secrets/SECRET[:VERSION]`.
    fn parse(text: &str) -> Result<ProfilesSecret> {
        let text = text.trim();
        let (secret, version) = match text.rsplit_once(':') {
            Some((secret, version)) => (secret, version),
            None => (text, "latest"),
        };
        let id = match secret.split('/').collect::<Vec<_>>()[..] {
            [id] => id,
            ["projects", project, "secrets", id] if !project.is_empty() => id,
            _ => "",
        };
        let id_ok = !id.is_empty()
            && id.len() <= 255
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let version_ok = version == "latest"
            || (!version.is_empty() && version.bytes().all(|b| b.is_ascii_digit()));
        if !id_ok || !version_ok {
            return Err(Error::invalid(format!(
                "{}={text:?}: expected SECRET, SECRET:VERSION or projects/P/secrets/SECRET[:VERSION] \
                 (VERSION: latest or a number)",
                env::CLOUD_RUN_PROFILES_SECRET
            )));
        }
        Ok(ProfilesSecret {
            secret: secret.to_string(),
            version: version.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_secrets_are_read_with_their_version() {
        let parsed = |t: &str| ProfilesSecret::parse(t).map(|p| (p.secret, p.version));
        assert_eq!(
            parsed("dbt-profiles").unwrap(),
            ("dbt-profiles".into(), "latest".into())
        );
        assert_eq!(
            parsed("dbt-profiles:3").unwrap(),
            ("dbt-profiles".into(), "3".into())
        );
        assert_eq!(
            parsed("projects/p/secrets/dbt_profiles:latest").unwrap(),
            ("projects/p/secrets/dbt_profiles".into(), "latest".into())
        );
        for bad in [
            "",
            "a b",
            "s:v1",
            "projects/p/s",
            "projects//secrets/s",
            "s:",
        ] {
            let err = parsed(bad).unwrap_err().to_string();
            assert!(
                err.contains("DBT_REMOTE_CLOUD_RUN_PROFILES_SECRET"),
                "{bad}: {err}"
            );
        }
    }
}

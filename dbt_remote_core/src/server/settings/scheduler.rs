//! The settings of what fires schedules: the server's own loop, or Cloud Scheduler (feature
//! `gcp`; docs/deploy-gcp.md "Schedules").

use std::str::FromStr;

use super::var;
use crate::env;
use crate::{Error, Result};

/// What fires schedules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SchedulerKind {
    /// The server's own loop, every second (the local default).
    #[default]
    Loop,
    /// One Cloud Scheduler job per schedule, calling the server's run endpoint (feature
    /// `gcp`): schedules fire while the service is scaled to zero.
    CloudScheduler,
}

impl FromStr for SchedulerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "loop" => Ok(SchedulerKind::Loop),
            "cloud-scheduler" => Ok(SchedulerKind::CloudScheduler),
            other => Err(Error::invalid(format!(
                "{}={other:?}: expected loop or cloud-scheduler",
                env::SCHEDULER
            ))),
        }
    }
}

/// What fires schedules, and the Cloud Scheduler settings. The project and the API endpoint
/// are those of the environment ([`env::GCP_PROJECT`], [`env::CLOUD_SCHEDULER_ENDPOINT`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchedulerSettings {
    pub kind: SchedulerKind,
    /// Region of the Cloud Scheduler jobs. Default: the Cloud Run region.
    pub region: Option<String>,
    /// The service account whose ID token the jobs send (required for Cloud Scheduler).
    pub service_account: Option<String>,
    /// Start of the job names. Default `dbt-server-`.
    pub job_prefix: Option<String>,
}

impl SchedulerSettings {
    /// The defaults, overridden by the variables that are set.
    pub fn from_env() -> Result<Self> {
        Ok(SchedulerSettings {
            kind: var(env::SCHEDULER)
                .map(|v| v.parse())
                .transpose()?
                .unwrap_or_default(),
            region: var(env::CLOUD_SCHEDULER_REGION).or_else(|| var(env::CLOUD_RUN_REGION)),
            service_account: var(env::SCHEDULER_SERVICE_ACCOUNT),
            job_prefix: var(env::CLOUD_SCHEDULER_PREFIX),
        })
    }
}

//! The flags of what fires schedules (the server's loop or Cloud Scheduler), read into the
//! core's [`SchedulerSettings`].

use clap::{Args, ValueEnum};
use dbt_remote_core::env;
use dbt_remote_core::server::{SchedulerKind, SchedulerSettings};

/// What fires schedules.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Scheduler {
    /// The server's own loop, every second.
    Loop,
    /// One Cloud Scheduler job per schedule, calling POST <public url>/api/v1/schedules/<name>/run
    /// with an ID token, so schedules fire while the service is scaled to zero (needs
    /// --public-url, DBT_REMOTE_SCHEDULER_SERVICE_ACCOUNT and a build with the `gcp` feature).
    CloudScheduler,
}

#[derive(Args, Debug, Clone)]
pub struct SchedulerArgs {
    /// What fires schedules.
    #[arg(long, env = env::SCHEDULER, value_enum, default_value_t = Scheduler::Loop)]
    scheduler: Scheduler,
    /// Region of the Cloud Scheduler jobs [default: DBT_REMOTE_CLOUD_RUN_REGION].
    #[arg(long, env = env::CLOUD_SCHEDULER_REGION, value_name = "REGION")]
    cloud_scheduler_region: Option<String>,
    /// The service account whose ID token the Cloud Scheduler jobs send (allowed to call the
    /// service: roles/run.invoker, or listed in --auth-allowed-emails).
    #[arg(long, env = env::SCHEDULER_SERVICE_ACCOUNT, value_name = "EMAIL")]
    scheduler_service_account: Option<String>,
    /// Start of the Cloud Scheduler job names, so that servers sharing a project and region
    /// do not collide [default: dbt-server-].
    #[arg(long, env = env::CLOUD_SCHEDULER_PREFIX, value_name = "PREFIX")]
    cloud_scheduler_prefix: Option<String>,
}

impl SchedulerArgs {
    /// The settings of these flags (a region not given falls back to the Cloud Run region).
    pub fn settings(self) -> SchedulerSettings {
        let region = self.cloud_scheduler_region.or_else(|| {
            std::env::var(env::CLOUD_RUN_REGION)
                .ok()
                .filter(|r| !r.is_empty())
        });
        SchedulerSettings {
            kind: match self.scheduler {
                Scheduler::Loop => SchedulerKind::Loop,
                Scheduler::CloudScheduler => SchedulerKind::CloudScheduler,
            },
            region,
            service_account: self.scheduler_service_account,
            job_prefix: self.cloud_scheduler_prefix,
        }
    }
}

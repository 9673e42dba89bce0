//! The handlers of dbt-remote's commands, one file per group: `config`, `debug`, `jobs` (jobs,
//! logs, status, cancel, artifacts), `schedules` (create, list, delete, run) and `dbt` (a dbt
//! command, following a job). Each takes its parsed arguments and returns the exit status;
//! errors go up to `main`.

pub mod config;
pub mod dbt;
pub mod debug;
pub mod jobs;
pub mod schedules;

use std::path::PathBuf;

use dbt_remote_core::config::Settings;
use dbt_remote_core::{connect, Client, LogLevel, Result};

use crate::cli::Options;

/// What every command that talks to the server needs: the settings in force, the server
/// located.
pub struct Context {
    pub settings: Settings,
    pub log_level: LogLevel,
    /// `--log-level` when given: dbt on the server runs with it too.
    pub dbt_log_level: Option<LogLevel>,
    /// `--environment` when given as a flag: `jobs` filters by it (a job's environment comes
    /// from the settings, [`Settings::environment`]).
    pub environment_flag: Option<String>,
    /// `--defer-to`: the environment whose latest success is the job's dbt state.
    pub defer_to: Option<String>,
    /// `--job`: the failed job `retry` retries.
    pub retry_job: Option<String>,
}

impl Context {
    /// Resolves the settings and locates the server (Cloud Run discovery when only
    /// `--location` is given, in a build with the `gcp` feature).
    pub async fn new(options: &Options) -> Result<Self> {
        let dir = std::env::current_dir().unwrap_or_else(|_| ".".into());
        let settings = Settings::load(&options.overrides(), &dir)?;
        Ok(Context {
            settings: connect::locate(settings).await?,
            log_level: options.log_level.unwrap_or(LogLevel::Info),
            dbt_log_level: options.log_level,
            environment_flag: options.environment.clone(),
            defer_to: options.defer_to.clone(),
            retry_job: options.job.clone(),
        })
    }

    /// A client of the server, with the credentials of the settings and environment.
    pub fn client(&self) -> Result<Client> {
        connect::client(&self.settings)
    }

    pub fn project_dir(&self) -> PathBuf {
        self.settings.job_files().project_dir
    }
}

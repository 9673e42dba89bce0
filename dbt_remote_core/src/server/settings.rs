//! The settings of a server and of its job processes: what the `dbt-server` flags hold, read
//! from the environment variables of [`crate::env`] and passed on to job processes.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::auth::GOOGLE_JWKS_URL;
use crate::env;
use crate::limits::{ZipLimits, DEFAULT_MAX_SCHEDULES};
use crate::retention::{self, RetentionPolicy};
use crate::{Error, Result};

mod edge;
mod job;
mod original;
mod scheduler;
mod vars;
pub use edge::*;
pub use job::JobSettings;
pub use original::*;
pub use scheduler::*;
use vars::{var, var_bool, var_parse};

/// Default port of dbt-server.
pub const DEFAULT_PORT: u16 = 8001;
/// Default folder of the local state store.
pub const DEFAULT_STATE_DIR: &str = ".dbt-remote/state";
/// Default dbt executable (found on PATH).
pub const DEFAULT_DBT: &str = "dbt";
/// Default number of jobs running at once.
pub const DEFAULT_MAX_CONCURRENT_JOBS: usize = 4;
/// Default largest request body or uploaded file (64 MiB).
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 64 * 1024 * 1024;
/// Default seconds a cancelled job has to stop before it is killed.
pub const DEFAULT_CANCEL_GRACE_SECONDS: u64 = 30;

#[cfg(not(feature = "gcp"))]
pub(super) const NO_GCP: &str =
    "this dbt-server was built without the `gcp` feature (cargo build --release --features gcp)";

pub use crate::runner::{DEFAULT_MAX_LOG_BYTES, DEFAULT_MAX_LOG_RECORDS};

/// What the store and the runner bound: how long a file lock is waited for, and how big a
/// job's log may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Longest wait for a file lock of the local store ([`crate::env::LOCK_TIMEOUT_SECONDS`]).
    pub lock_timeout: Duration,
    /// Longest message of one log record ([`crate::env::MAX_LOG_RECORD_BYTES`]).
    pub max_log_record_bytes: usize,
    /// Most records of one job's log ([`crate::env::MAX_LOG_RECORDS`]).
    pub max_log_records: u64,
    /// Most bytes of messages in one job's log ([`crate::env::MAX_LOG_BYTES`]).
    pub max_log_bytes: u64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            lock_timeout: crate::state::DEFAULT_LOCK_TIMEOUT,
            max_log_record_bytes: crate::state::DEFAULT_MAX_LOG_RECORD_BYTES,
            max_log_records: DEFAULT_MAX_LOG_RECORDS,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
        }
    }
}

impl StoreLimits {
    /// The defaults, overridden by the variables that are set.
    fn from_env() -> Result<Self> {
        let mut l = StoreLimits::default();
        if let Some(v) = var_parse(env::LOCK_TIMEOUT_SECONDS)? {
            l.lock_timeout = Duration::from_secs(v);
        }
        if let Some(v) = var_parse(env::MAX_LOG_RECORD_BYTES)? {
            l.max_log_record_bytes = v;
        }
        if let Some(v) = var_parse(env::MAX_LOG_RECORDS)? {
            l.max_log_records = v;
        }
        if let Some(v) = var_parse(env::MAX_LOG_BYTES)? {
            l.max_log_bytes = v;
        }
        Ok(l)
    }

    fn to_env(self) -> [(&'static str, Option<OsString>); 4] {
        let v = |n: u64| Some(OsString::from(n.to_string()));
        [
            (env::LOCK_TIMEOUT_SECONDS, v(self.lock_timeout.as_secs())),
            (
                env::MAX_LOG_RECORD_BYTES,
                v(self.max_log_record_bytes as u64),
            ),
            (env::MAX_LOG_RECORDS, v(self.max_log_records)),
            (env::MAX_LOG_BYTES, v(self.max_log_bytes)),
        ]
    }
}

/// Where jobs live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StateKind {
    /// In the state dir.
    #[default]
    Local,
    /// In Firestore and Cloud Storage (feature `gcp`).
    Gcp,
}

impl StateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StateKind::Local => "local",
            StateKind::Gcp => "gcp",
        }
    }
}

impl FromStr for StateKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "local" => Ok(StateKind::Local),
            "gcp" => Ok(StateKind::Gcp),
            other => Err(Error::invalid(format!(
                "{}={other:?}: expected local or gcp",
                env::STATE
            ))),
        }
    }
}

/// Where jobs run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LauncherKind {
    /// As child processes of dbt-server (`dbt-server run-job`).
    #[default]
    Process,
    /// As executions of one Cloud Run Job (feature `gcp`).
    CloudRun,
}

impl LauncherKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LauncherKind::Process => "process",
            LauncherKind::CloudRun => "cloud-run",
        }
    }
}

impl FromStr for LauncherKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "process" => Ok(LauncherKind::Process),
            "cloud-run" => Ok(LauncherKind::CloudRun),
            other => Err(Error::invalid(format!(
                "{}={other:?}: expected process or cloud-run",
                env::LAUNCHER
            ))),
        }
    }
}

/// Who may call the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// The static token's SHA-256, in hex.
    pub token_sha256: Option<String>,
    /// The static token itself.
    pub token: Option<String>,
    /// Accept Google ID tokens.
    pub google: bool,
    /// The audience of Google ID tokens. Default: the public URL.
    pub audience: Option<String>,
    pub jwks_url: String,
    /// Accept Google ID tokens of these emails only (empty: any).
    pub allowed_emails: Vec<String>,
    /// How long the web UI's session cookie lasts (a Google ID token's own expiry is sooner;
    /// [`crate::auth::session`]).
    pub session_max_age: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            token_sha256: None,
            token: None,
            google: false,
            audience: None,
            jwks_url: GOOGLE_JWKS_URL.into(),
            allowed_emails: vec![],
            session_max_age: crate::auth::session::DEFAULT_SESSION_MAX_AGE,
        }
    }
}

/// Everything the `dbt-server` flags hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub job: JobSettings,
    pub launcher: LauncherKind,
    pub host: IpAddr,
    pub port: u16,
    pub max_concurrent_jobs: usize,
    /// Warm dbt workers of the process launcher (`0`: none; [`crate::launcher::WorkerPool`]).
    pub dbt_workers: usize,
    pub max_upload_bytes: u64,
    pub cancel_grace: Duration,
    /// How long this instance's claim on a job it launches holds without renewal
    /// ([`crate::lifecycle::Lease`]; the Cloud Run launcher).
    pub launch_lease: Duration,
    /// The server's base URL as clients reach it (`http://` or `https://`).
    pub public_url: Option<String>,
    pub accept_client_profiles: bool,
    /// Most schedules at once.
    pub max_schedules: usize,
    /// What the zip of a 0.4.6 form may hold.
    pub zip: ZipLimits,
    pub auth: AuthSettings,
    /// The HTTP edge: origins, hosts, timeouts, connections.
    pub edge: EdgeSettings,
    /// The job entry point the process launcher runs (`<program> run-job <id>`). Default: this
    /// executable.
    pub job_program: Option<PathBuf>,
    /// Days a finished job is kept; `0`: kept forever (see [`crate::retention`]).
    pub retain_days: u64,
    /// How many finished jobs are kept, the newest; `None`: no count limit.
    pub retain_jobs: Option<usize>,
    /// How long a new unreferenced blob, or a just-finished job past `retain_jobs`, is kept.
    pub retention_grace: Duration,
    /// Time between two retention passes (one runs at start); zero: no retention.
    pub gc_interval: Duration,
    /// What fires schedules.
    pub scheduler: SchedulerSettings,
}

impl ServerSettings {
    /// The defaults, overridden by every variable of [`crate::env`] that is set. Takes (and
    /// removes) the static token of [`env::AUTH_TOKEN`], see [`take_auth_token_from_env`].
    /// The state and launcher are [`choose`]n (the original's `BUCKET_NAME` and
    /// `DOCKER_IMAGE` count when `DBT_REMOTE_STATE` and `DBT_REMOTE_LAUNCHER` are unset); call
    /// [`apply_original_env`] first for the original's other variables.
    pub fn from_env() -> Result<Self> {
        let mut s = ServerSettings {
            job: JobSettings::from_env()?,
            ..Default::default()
        };
        let choice = choose(var_parse(env::STATE)?, var_parse(env::LAUNCHER)?);
        s.job.state = choice.state;
        s.launcher = choice.launcher;
        if let Some(v) = var_parse(env::HOST)? {
            s.host = v;
        }
        if let Some(v) = var_parse(env::PORT)? {
            s.port = v;
        }
        if let Some(v) = var_parse(env::MAX_CONCURRENT_JOBS)? {
            s.max_concurrent_jobs = v;
        }
        if let Some(v) = var_parse(env::DBT_WORKERS)? {
            s.dbt_workers = v;
        }
        if let Some(v) = var_parse(env::MAX_UPLOAD_BYTES)? {
            s.max_upload_bytes = v;
        }
        if let Some(v) = var_parse(env::CANCEL_GRACE_SECONDS)? {
            s.cancel_grace = Duration::from_secs(v);
        }
        if let Some(v) = var_parse(env::LEASE_SECONDS)? {
            s.launch_lease = Duration::from_secs(v);
        }
        s.public_url = var(env::PUBLIC_URL);
        s.accept_client_profiles = var_bool(env::ACCEPT_CLIENT_PROFILES)?.unwrap_or(false);
        if let Some(v) = var_parse(env::MAX_SCHEDULES)? {
            s.max_schedules = v;
        }
        if let Some(v) = var_parse(env::MAX_ZIP_ENTRIES)? {
            s.zip.max_entries = v;
        }
        if let Some(v) = var_parse(env::MAX_UNZIPPED_BYTES)? {
            s.zip.max_unzipped_bytes = v;
        }
        s.auth.token_sha256 = var(env::AUTH_TOKEN_SHA256);
        s.auth.token = take_auth_token_from_env();
        s.auth.google = var_bool(env::AUTH_GOOGLE)?.unwrap_or(false);
        s.auth.audience = var(env::AUTH_AUDIENCE);
        if let Some(url) = var(env::AUTH_JWKS_URL) {
            s.auth.jwks_url = url;
        }
        s.auth.allowed_emails = var(env::AUTH_ALLOWED_EMAILS)
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        if let Some(v) = var_parse(env::SESSION_MAX_AGE_SECONDS)? {
            s.auth.session_max_age = Duration::from_secs(v);
        }
        if let Some(v) = var_parse(env::RETAIN_DAYS)? {
            s.retain_days = v;
        }
        s.retain_jobs = var_parse(env::RETAIN_JOBS)?;
        if let Some(v) = var_parse::<u64>(env::RETENTION_GRACE_MINUTES)? {
            s.retention_grace = Duration::from_secs(v * 60);
        }
        if let Some(v) = var_parse::<u64>(env::GC_INTERVAL_MINUTES)? {
            s.gc_interval = Duration::from_secs(v * 60);
        }
        s.edge = EdgeSettings::from_env()?;
        s.scheduler = SchedulerSettings::from_env()?;
        Ok(s)
    }

    /// The environment of a job run elsewhere (a Cloud Run execution, which inherits nothing
    /// of this server's): the job settings ([`JobSettings::to_env`], those that are set) but
    /// the state and work dirs (folders of this machine; the image's own apply), the cancel
    /// grace, and the GCP store's settings that this process has. Names and values, sorted.
    pub fn execution_env(&self) -> Vec<(&'static str, String)> {
        let machine_local = [env::STATE_DIR, env::WORK_DIR, env::DBT_WORKER_SOCKET];
        let mut vars: Vec<(&'static str, String)> = self
            .job
            .to_env()
            .into_iter()
            .filter(|(name, _)| !machine_local.contains(name))
            .filter_map(|(name, value)| Some((name, value?.to_string_lossy().into_owned())))
            .collect();
        vars.push((
            env::CANCEL_GRACE_SECONDS,
            self.cancel_grace.as_secs().to_string(),
        ));
        vars.extend(
            env::GCP_STORE_SETTINGS
                .iter()
                .filter_map(|name| Some((*name, var(name)?))),
        );
        vars.sort();
        vars.dedup_by(|a, b| a.0 == b.0);
        vars
    }

    /// What the retention passes delete (call on built settings, whose paths are absolute).
    pub fn retention_policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            max_age: (self.retain_days > 0)
                .then(|| Duration::from_secs(self.retain_days.saturating_mul(24 * 3600))),
            max_jobs: self.retain_jobs,
            grace: self.retention_grace,
            work_root: self.job.work_dir.clone(),
            runs_dir: Some(self.job.state_dir.join("runs")),
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            job: JobSettings::default(),
            launcher: LauncherKind::Process,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_PORT,
            max_concurrent_jobs: DEFAULT_MAX_CONCURRENT_JOBS,
            dbt_workers: crate::launcher::DEFAULT_DBT_WORKERS,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            cancel_grace: Duration::from_secs(DEFAULT_CANCEL_GRACE_SECONDS),
            launch_lease: crate::lifecycle::DEFAULT_LEASE,
            public_url: None,
            accept_client_profiles: false,
            max_schedules: DEFAULT_MAX_SCHEDULES,
            zip: ZipLimits::default(),
            auth: AuthSettings::default(),
            edge: EdgeSettings::default(),
            job_program: None,
            retain_days: retention::DEFAULT_RETAIN_DAYS,
            retain_jobs: None,
            retention_grace: Duration::from_secs(retention::DEFAULT_GRACE_MINUTES * 60),
            gc_interval: Duration::from_secs(retention::DEFAULT_GC_INTERVAL_MINUTES * 60),
            scheduler: SchedulerSettings::default(),
        }
    }
}

/// Reads the static token of [`env::AUTH_TOKEN`] and removes it from this process's
/// environment, so that job processes and dbt never inherit it. Call it before any other
/// thread runs (first thing in `main`).
pub fn take_auth_token_from_env() -> Option<String> {
    let token = var(env::AUTH_TOKEN);
    std::env::remove_var(env::AUTH_TOKEN);
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executions_get_the_job_settings_but_this_machine_s_folders() {
        let settings = ServerSettings {
            job: JobSettings {
                state: StateKind::Gcp,
                state_dir: "/s".into(),
                work_dir: Some("/w".into()),
                dbt_path: "/venv/bin/dbt".into(),
                job_env: vec!["SNOWFLAKE_PASSWORD".into()],
                ..Default::default()
            },
            cancel_grace: Duration::from_secs(12),
            ..Default::default()
        };
        let env = settings.execution_env();
        let get = |name| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get(env::STATE), Some("gcp"));
        assert_eq!(get(env::DBT_PATH), Some("/venv/bin/dbt"));
        assert_eq!(get(env::CANCEL_GRACE_SECONDS), Some("12"));
        assert_eq!(get(env::JOB_ENV), Some("SNOWFLAKE_PASSWORD"));
        assert_eq!(get(env::MAX_LOG_RECORDS), Some("500000"));
        assert_eq!(get(env::STATE_DIR), None);
        assert_eq!(get(env::WORK_DIR), None);
        assert_eq!(get(env::PYTHON), None, "unset settings are left out");
        assert_eq!(
            get("SNOWFLAKE_PASSWORD"),
            None,
            "values of --job-env are not copied"
        );
    }
}

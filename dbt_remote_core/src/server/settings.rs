//! The settings of a server and of its job processes: what the `dbt-server` flags hold, read
//! from the environment variables of [`crate::env`] and passed on to job processes.

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::GOOGLE_JWKS_URL;
use crate::env;
use crate::limits::{JobLimits, ZipLimits, DEFAULT_MAX_SCHEDULES};
use crate::retention::{self, RetentionPolicy};
use crate::runner::RunnerConfig;
use crate::state::{LocalStore, StateStore};
use crate::{Error, Result};

mod edge;
mod scheduler;
pub use edge::*;
mod original;
pub use original::*;
pub use scheduler::*;

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

/// What a job process needs: where the state is and how dbt runs. The server and its job
/// processes read it from the same environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSettings {
    pub state: StateKind,
    /// Folder of the local state store; with [`StateKind::Gcp`], of the job processes' lock
    /// and output files only (schedules are in Firestore then).
    pub state_dir: PathBuf,
    /// Folder in which each job gets a fresh work dir. Default `<state dir>/../work`.
    pub work_dir: Option<PathBuf>,
    pub dbt_path: PathBuf,
    /// The Python of manifest jobs. Default: the `python` beside dbt, else `python3`.
    pub python: Option<PathBuf>,
    /// dbt's profiles dir, owned by the server.
    pub profiles_dir: Option<PathBuf>,
    pub keep_work_dirs: bool,
    /// What one job may materialise; the runner checks it again as it writes.
    pub limits: JobLimits,
    /// Variables of the server's environment that job processes and dbt also get (the
    /// server's profiles read them with `env_var()`), beyond those that pass by default
    /// ([`crate::isolation::passes_by_default`]).
    pub job_env: Vec<String>,
    /// Lock timeout and log caps.
    pub store_limits: StoreLimits,
    /// How far apart a job's log appends are at least, on a store that
    /// [batches them](crate::state::StateStore::batches_log_appends).
    pub log_flush: Duration,
    /// Elementary's `edr` (docs/elementary.md). Default: the `edr` next to dbt, else on PATH.
    pub edr_path: Option<PathBuf>,
    /// Longest run of one `edr report`.
    pub edr_timeout: Duration,
    /// Jobs restore and keep dbt's partial parse state in the store (docs/caches.md).
    pub parse_cache: bool,
    /// Jobs restore and keep the `dbt_packages/` of `dbt deps` in the store.
    pub deps_cache: bool,
    /// The socket of the process launcher's warm dbt workers, which the launcher sets for its
    /// job processes ([`env::DBT_WORKER_SOCKET`]); `None`: dbt starts afresh.
    pub dbt_worker_socket: Option<PathBuf>,
}

impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            state: StateKind::Local,
            state_dir: DEFAULT_STATE_DIR.into(),
            work_dir: None,
            dbt_path: DEFAULT_DBT.into(),
            python: None,
            profiles_dir: None,
            keep_work_dirs: false,
            limits: JobLimits::default(),
            job_env: vec![],
            store_limits: StoreLimits::default(),
            log_flush: crate::runner::DEFAULT_LOG_FLUSH,
            edr_path: None,
            edr_timeout: crate::runner::DEFAULT_EDR_TIMEOUT,
            parse_cache: true,
            deps_cache: true,
            dbt_worker_socket: None,
        }
    }
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn var_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `1`/`true`/`yes`/`on` (any case) is true; `0`/`false`/`no`/`off` false.
fn var_bool(name: &str) -> Result<Option<bool>> {
    var(name)
        .map(|v| match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" | "y" => Ok(true),
            "0" | "false" | "no" | "off" | "n" => Ok(false),
            _ => Err(Error::invalid(format!(
                "{name}={v:?}: expected true or false"
            ))),
        })
        .transpose()
}

fn var_parse<T: FromStr>(name: &str) -> Result<Option<T>> {
    var(name)
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| Error::invalid(format!("{name}={v:?} is not a valid value")))
        })
        .transpose()
}

impl JobSettings {
    /// The defaults, overridden by every variable of [`crate::env`] that is set.
    pub fn from_env() -> Result<Self> {
        let mut s = JobSettings::default();
        if let Some(state) = var(env::STATE) {
            s.state = state.parse()?;
        }
        if let Some(dir) = var_path(env::STATE_DIR) {
            s.state_dir = dir;
        }
        s.work_dir = var_path(env::WORK_DIR);
        if let Some(dbt) = var_path(env::DBT_PATH) {
            s.dbt_path = dbt;
        }
        s.python = var_path(env::PYTHON);
        s.profiles_dir = var_path(env::PROFILES_DIR);
        s.keep_work_dirs = var_bool(env::KEEP_WORK_DIRS)?.unwrap_or(false);
        if let Some(v) = var_parse(env::MAX_JOB_FILES)? {
            s.limits.max_files = v;
        }
        if let Some(v) = var_parse(env::MAX_JOB_BYTES)? {
            s.limits.max_bytes = v;
        }
        s.job_env = var(env::JOB_ENV)
            .map(|v| crate::isolation::parse_names(&v))
            .unwrap_or_default();
        s.store_limits = StoreLimits::from_env()?;
        if let Some(v) = var_parse(env::LOG_FLUSH_MS)? {
            s.log_flush = Duration::from_millis(v);
        }
        s.edr_path = var_path(env::EDR_PATH);
        if let Some(v) = var_parse(env::EDR_TIMEOUT_SECONDS)? {
            s.edr_timeout = Duration::from_secs(v);
        }
        s.parse_cache = var_bool(env::PARSE_CACHE)?.unwrap_or(true);
        s.deps_cache = var_bool(env::DEPS_CACHE)?.unwrap_or(true);
        s.dbt_worker_socket = var_path(env::DBT_WORKER_SOCKET);
        Ok(s)
    }

    /// The environment that makes a job process (`dbt-server run-job`) see these settings:
    /// each variable with its value, or `None` for one to remove.
    pub fn to_env(&self) -> Vec<(&'static str, Option<OsString>)> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.clone().into_os_string());
        let mut vars = vec![
            (env::STATE, Some(self.state.as_str().into())),
            (
                env::STATE_DIR,
                Some(self.state_dir.clone().into_os_string()),
            ),
            (env::WORK_DIR, path(&self.work_dir)),
            (env::DBT_PATH, Some(self.dbt_path.clone().into_os_string())),
            (env::PYTHON, path(&self.python)),
            (env::PROFILES_DIR, path(&self.profiles_dir)),
            (
                env::KEEP_WORK_DIRS,
                Some(if self.keep_work_dirs { "true" } else { "false" }.into()),
            ),
            (
                env::MAX_JOB_FILES,
                Some(self.limits.max_files.to_string().into()),
            ),
            (
                env::MAX_JOB_BYTES,
                Some(self.limits.max_bytes.to_string().into()),
            ),
            (
                env::JOB_ENV,
                (!self.job_env.is_empty()).then(|| self.job_env.join(",").into()),
            ),
        ];
        vars.push((
            env::LOG_FLUSH_MS,
            Some(self.log_flush.as_millis().to_string().into()),
        ));
        vars.push((env::EDR_PATH, path(&self.edr_path)));
        vars.push((
            env::EDR_TIMEOUT_SECONDS,
            Some(self.edr_timeout.as_secs().to_string().into()),
        ));
        let flag = |on: bool| Some(OsString::from(if on { "true" } else { "false" }));
        vars.push((env::PARSE_CACHE, flag(self.parse_cache)));
        vars.push((env::DEPS_CACHE, flag(self.deps_cache)));
        vars.extend(self.store_limits.to_env());
        vars.push((env::DBT_WORKER_SOCKET, path(&self.dbt_worker_socket)));
        vars
    }

    /// The same settings with absolute paths (and the work dir's default filled in), so that
    /// processes started elsewhere see the same folders.
    pub fn absolute(&self) -> Result<JobSettings> {
        let io = |p: &Path, e: std::io::Error| {
            Error::backend("dbt-server", format!("{}: {e}", p.display()))
        };
        let abs = |p: &Path| std::path::absolute(p).map_err(|e| io(p, e));
        let state_dir = abs(&self.state_dir)?;
        let work_dir = match &self.work_dir {
            Some(w) => abs(w)?,
            None => state_dir.parent().unwrap_or(&state_dir).join("work"),
        };
        // A bare program name is looked up on PATH; a path is made absolute.
        let program = |p: &Path| {
            if p.components().count() > 1 {
                abs(p)
            } else {
                Ok(p.to_path_buf())
            }
        };
        refuse_nesting(&state_dir, &work_dir)?;
        Ok(JobSettings {
            state: self.state,
            state_dir,
            work_dir: Some(work_dir),
            dbt_path: program(&self.dbt_path)?,
            python: self.python.as_deref().map(program).transpose()?,
            profiles_dir: self.profiles_dir.as_deref().map(abs).transpose()?,
            keep_work_dirs: self.keep_work_dirs,
            limits: self.limits,
            store_limits: self.store_limits,
            job_env: self.job_env.clone(),
            log_flush: self.log_flush,
            edr_path: self.edr_path.as_deref().map(program).transpose()?,
            edr_timeout: self.edr_timeout,
            parse_cache: self.parse_cache,
            deps_cache: self.deps_cache,
            dbt_worker_socket: self.dbt_worker_socket.as_deref().map(abs).transpose()?,
        })
    }

    /// Opens the store of [`state`](Self::state) (a GCP store takes its settings from the
    /// environment, which the job processes inherit).
    pub async fn open_store(&self) -> Result<Arc<dyn StateStore>> {
        match self.state {
            StateKind::Local => Ok(Arc::new(
                LocalStore::new(&self.state_dir)?
                    .with_lock_timeout(self.store_limits.lock_timeout)
                    .with_max_log_record_bytes(self.store_limits.max_log_record_bytes),
            )),
            #[cfg(feature = "gcp")]
            StateKind::Gcp => Ok(Arc::new(
                crate::state::GcpStore::builder()
                    .from_env()
                    .with_max_log_record_bytes(self.store_limits.max_log_record_bytes)
                    .build()
                    .await?,
            )),
            #[cfg(not(feature = "gcp"))]
            StateKind::Gcp => Err(Error::invalid(format!("--state gcp: {NO_GCP}"))),
        }
    }

    /// Where the state is, for the log.
    pub fn describe(&self) -> String {
        match self.state {
            StateKind::Local => format!("state in {}", self.state_dir.display()),
            StateKind::Gcp => "state in Firestore + Cloud Storage".into(),
        }
    }

    /// How the runner runs dbt (call on [`absolute`](Self::absolute) settings).
    pub fn runner_config(&self) -> RunnerConfig {
        let work_dir = self.work_dir.clone().unwrap_or_else(|| {
            self.state_dir
                .parent()
                .unwrap_or(&self.state_dir)
                .join("work")
        });
        let mut config = RunnerConfig::new(work_dir);
        config.dbt_path = self.dbt_path.clone();
        config.python_path = self.python.clone();
        config.profiles_dir = self.profiles_dir.clone();
        config.keep_work_dir = self.keep_work_dirs;
        config.limits = self.limits;
        config.job_env = self.job_env.clone();
        config.max_log_records = self.store_limits.max_log_records;
        config.max_log_bytes = self.store_limits.max_log_bytes;
        config.log_flush = self.log_flush;
        config.edr_path = self.edr_path.clone();
        config.edr_timeout = self.edr_timeout;
        config.parse_cache = self.parse_cache;
        config.deps_cache = self.deps_cache;
        config.dbt_worker_socket = self.dbt_worker_socket.clone();
        config
    }
}

/// Refuses a work root and a state dir of which one is inside the other: a job could then
/// read or write the server's state (other jobs' files, blobs, locks) from its work dir, or
/// a job's files could land in the state.
fn refuse_nesting(state_dir: &Path, work_dir: &Path) -> Result<()> {
    let (state, work) = (resolved(state_dir), resolved(work_dir));
    if state.starts_with(&work) || work.starts_with(&state) {
        return Err(Error::invalid(format!(
            "--work-dir {} and --state-dir {} must not be inside one another: jobs would reach \
             the server's state from their work dirs; choose two separate folders",
            work_dir.display(),
            state_dir.display()
        )));
    }
    Ok(())
}

/// `path` without `.` and `..` components, with symlinks resolved for the part that exists.
fn resolved(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    let mut existing = out.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return out,
        }
    }
    let mut real = existing
        .canonicalize()
        .unwrap_or_else(|_| existing.to_path_buf());
    real.extend(rest.iter().rev());
    real
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
    fn job_settings_go_through_the_environment_unchanged() {
        let settings = JobSettings {
            state: StateKind::Local,
            state_dir: "/s".into(),
            work_dir: Some("/w".into()),
            dbt_path: "/venv/bin/dbt".into(),
            python: None,
            profiles_dir: Some("/p".into()),
            keep_work_dirs: true,
            limits: JobLimits {
                max_files: 7,
                max_bytes: 9,
            },
            job_env: vec!["SNOWFLAKE_PASSWORD".into(), "PGPASS".into()],
            store_limits: StoreLimits {
                max_log_records: 7,
                ..Default::default()
            },
            log_flush: Duration::from_millis(250),
            edr_path: Some("/edr/bin/edr".into()),
            edr_timeout: Duration::from_secs(42),
            parse_cache: false,
            deps_cache: true,
            dbt_worker_socket: Some("/s/runs/dbt-worker.sock".into()),
        };
        let env = settings.to_env();
        let get = |name| env.iter().find(|(k, _)| *k == name).unwrap().1.clone();
        assert_eq!(get(env::STATE_DIR), Some("/s".into()));
        assert_eq!(get(env::PYTHON), None);
        assert_eq!(get(env::KEEP_WORK_DIRS), Some("true".into()));
        assert_eq!(get(env::MAX_JOB_FILES), Some("7".into()));
        assert_eq!(get(env::MAX_JOB_BYTES), Some("9".into()));
        assert_eq!(get(env::JOB_ENV), Some("SNOWFLAKE_PASSWORD,PGPASS".into()));
        assert_eq!(get(env::MAX_LOG_RECORDS), Some("7".into()));
        assert_eq!(get(env::LOG_FLUSH_MS), Some("250".into()));
        assert_eq!(get(env::EDR_PATH), Some("/edr/bin/edr".into()));
        assert_eq!(get(env::EDR_TIMEOUT_SECONDS), Some("42".into()));
        assert_eq!(get(env::PARSE_CACHE), Some("false".into()));
        assert_eq!(get(env::DEPS_CACHE), Some("true".into()));
        let config = settings.runner_config();
        assert!(!config.parse_cache && config.deps_cache);
    }

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

    #[test]
    fn a_work_root_and_a_state_dir_that_nest_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (state, work) in [
            (d.join("s"), d.join("s/work")),
            (d.join("w/state"), d.join("w")),
            (d.join("s"), d.join("x/../s")),
        ] {
            let settings = JobSettings {
                state_dir: state,
                work_dir: Some(work),
                ..Default::default()
            };
            let err = settings.absolute().unwrap_err();
            assert!(err.to_string().contains("must not be inside"), "{err}");
        }
        let apart = JobSettings {
            state_dir: d.join("state"),
            work_dir: Some(d.join("work")),
            ..Default::default()
        };
        apart.absolute().unwrap();
        let default = JobSettings {
            state_dir: d.join("a/state"),
            ..Default::default()
        };
        assert_eq!(default.absolute().unwrap().work_dir, Some(d.join("a/work")));
    }
}

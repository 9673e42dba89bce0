//! The command line of `dbt-server`: flags (each with its environment variable) read into the
//! core's [`ServerSettings`] and [`JobSettings`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use dbt_remote_core::server::{self as wiring, AuthSettings, JobSettings, ServerSettings};
use dbt_remote_core::{env, limits, retention, JobId};

#[derive(Parser, Debug)]
#[command(
    name = "dbt-server",
    version,
    about = "Runs dbt jobs submitted over HTTP, keeping their state, logs and artifacts.",
    after_help = "Examples:\n  dbt-server --profiles-dir examples/profiles\n  PORT=8080 dbt-server --host 0.0.0.0 --state-dir /var/lib/dbt-remote\n  dbt-server run-job 0190c2a4-7c1e-7b4a-9f3e-2d1c0b9a8f7e --state-dir /var/lib/dbt-remote",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

// Parsed once per process: the size of the serve flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(ServeArgs),
    /// Run one job to its end (the job entry point the server starts; exits with dbt's code).
    RunJob(RunJobArgs),
}

/// Where jobs live.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum StateKind {
    /// In the state dir.
    Local,
    /// In Firestore and Cloud Storage (DBT_REMOTE_GCP_PROJECT, DBT_REMOTE_GCS_BUCKET, …;
    /// needs a build with the `gcp` feature).
    Gcp,
}

/// Where jobs run.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum LauncherKind {
    /// As child processes of dbt-server (`dbt-server run-job <id>`).
    Process,
    /// As executions of one Cloud Run Job (DBT_REMOTE_CLOUD_RUN_*; needs `--state gcp` and a
    /// build with the `gcp` feature).
    CloudRun,
}

/// The settings of the job processes too (the server passes them on in their environment).
#[derive(Args, Debug, Clone)]
pub struct StateArgs {
    /// Where jobs, logs, artifacts and uploaded files live [default: gcp when the original
    /// dbt-server's BUCKET_NAME is set, else local].
    #[arg(long = "state", env = env::STATE, value_enum)]
    state: Option<StateKind>,
    /// Folder of the local state store (jobs, logs, artifacts, uploaded files); with
    /// `--state gcp`, of the job processes' lock and output files only.
    #[arg(long, env = env::STATE_DIR, default_value = wiring::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Folder in which each job gets a fresh work dir [default: <state dir>/../work].
    #[arg(long, env = env::WORK_DIR)]
    work_dir: Option<PathBuf>,
    /// The dbt executable.
    #[arg(long = "dbt", env = env::DBT_PATH, default_value = wiring::DEFAULT_DBT)]
    dbt_path: PathBuf,
    /// The Python that runs manifest-only jobs [default: the python beside dbt, else python3].
    #[arg(long, env = env::PYTHON)]
    python: Option<PathBuf>,
    /// Elementary's edr, run after dbt for jobs that ask for a report (docs/elementary.md)
    /// [default: the edr next to the dbt executable when it exists, else edr on PATH].
    #[arg(long, env = env::EDR_PATH, value_name = "PATH")]
    edr_path: Option<PathBuf>,
    /// Seconds an edr report may run before it is interrupted (the job keeps dbt's result).
    #[arg(long, env = env::EDR_TIMEOUT_SECONDS, value_name = "SECONDS", default_value_t = dbt_remote_core::runner::DEFAULT_EDR_TIMEOUT.as_secs())]
    edr_timeout_seconds: u64,
    /// dbt's profiles dir, owned by the server (jobs name only --profile/--target).
    #[arg(long, env = env::PROFILES_DIR)]
    profiles_dir: Option<PathBuf>,
    /// Jobs neither restore nor keep dbt's partial parse state in the store: every job parses
    /// the whole project (docs/caches.md). Env DBT_REMOTE_PARSE_CACHE=false.
    #[arg(long = "no-parse-cache", env = env::PARSE_CACHE, action = clap::ArgAction::SetFalse, value_parser = clap::builder::BoolishValueParser::new())]
    parse_cache: bool,
    /// Jobs neither restore nor keep the dbt_packages/ of `dbt deps` in the store: every job
    /// with a packages.yml runs `dbt deps` (docs/caches.md). Env DBT_REMOTE_DEPS_CACHE=false.
    #[arg(long = "no-deps-cache", env = env::DEPS_CACHE, action = clap::ArgAction::SetFalse, value_parser = clap::builder::BoolishValueParser::new())]
    deps_cache: bool,
    /// Keep each job's work dir after it ends, for debugging.
    #[arg(long, env = env::KEEP_WORK_DIRS, action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    keep_work_dirs: bool,
    /// Milliseconds a job's log appends are at least apart on the GCP store (Firestore takes
    /// about one write per second per document); 0: at once. The local store appends at once.
    #[arg(long, env = env::LOG_FLUSH_MS, default_value_t = 1000)]
    log_flush_ms: u64,
    /// Most files one job may have; more are refused (413) at submit and by the runner.
    #[arg(long, env = env::MAX_JOB_FILES, default_value_t = limits::DEFAULT_MAX_JOB_FILES)]
    max_job_files: usize,
    /// Most bytes one job's files may add up to, each path counting its file's size (a file
    /// listed under many paths counts each time); more are refused (413) at submit and by the
    /// runner as it writes.
    #[arg(long, env = env::MAX_JOB_BYTES, default_value_t = limits::DEFAULT_MAX_JOB_BYTES)]
    max_job_bytes: u64,
    /// Variables of the server's environment that jobs also get, comma-separated (for
    /// `env_var()` in the server's profiles) [default: none beyond PATH, HOME, LANG, LC_*, TZ,
    /// TMPDIR, USER, TLS and proxy settings, GOOGLE_APPLICATION_CREDENTIALS and DBT_* but not
    /// DBT_REMOTE_*; see docs/configuration.md].
    #[arg(long, env = env::JOB_ENV, value_name = "NAMES", value_delimiter = ',')]
    job_env: Vec<String>,
    /// Seconds a write waits for a file lock of the state dir held by another writer before
    /// it is refused (503).
    #[arg(long, env = env::LOCK_TIMEOUT_SECONDS, default_value_t = 10)]
    lock_timeout_seconds: u64,
    /// Longest message of one log record, in bytes; longer ones are cut with a marker.
    #[arg(long, env = env::MAX_LOG_RECORD_BYTES, default_value_t = dbt_remote_core::state::DEFAULT_MAX_LOG_RECORD_BYTES)]
    max_log_record_bytes: usize,
    /// Most log records of one job; past it one "log truncated" record, the rest dropped.
    #[arg(long, env = env::MAX_LOG_RECORDS, default_value_t = wiring::DEFAULT_MAX_LOG_RECORDS)]
    max_log_records: u64,
    /// Most bytes of log messages of one job (same rule as --max-log-records).
    #[arg(long, env = env::MAX_LOG_BYTES, default_value_t = wiring::DEFAULT_MAX_LOG_BYTES)]
    max_log_bytes: u64,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Where jobs run [default: cloud-run when the state is gcp and the original dbt-server's
    /// DOCKER_IMAGE is set, else process].
    #[arg(long, env = env::LAUNCHER, value_enum)]
    launcher: Option<LauncherKind>,
    /// Port to listen on (Cloud Run sets PORT).
    #[arg(long, env = env::PORT, default_value_t = wiring::DEFAULT_PORT)]
    port: u16,
    /// Address to bind; use 0.0.0.0 to accept connections from other machines.
    #[arg(long, env = env::HOST, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Jobs running at once; more wait queued, in order.
    #[arg(long, env = env::MAX_CONCURRENT_JOBS, default_value_t = wiring::DEFAULT_MAX_CONCURRENT_JOBS)]
    max_concurrent_jobs: usize,
    /// Warm dbt workers: Python processes that import dbt once and fork a fresh child for each
    /// dbt run of a job (process launcher only), saving dbt's start-up per job; 0: none, each
    /// job starts dbt afresh.
    #[arg(long, env = env::DBT_WORKERS, default_value_t = dbt_remote_core::launcher::DEFAULT_DBT_WORKERS)]
    dbt_workers: usize,
    /// Largest accepted request body or uploaded file, in bytes.
    #[arg(long, env = env::MAX_UPLOAD_BYTES, default_value_t = wiring::DEFAULT_MAX_UPLOAD_BYTES)]
    max_upload_bytes: u64,
    /// Seconds a cancelled job has to stop before it is killed.
    #[arg(long, env = env::CANCEL_GRACE_SECONDS, default_value_t = wiring::DEFAULT_CANCEL_GRACE_SECONDS)]
    cancel_grace_seconds: u64,
    /// Seconds this instance's claim on a job it launches holds without renewal (Cloud Run
    /// launcher); past it, another instance sharing the store takes the job over.
    #[arg(long, env = env::LEASE_SECONDS, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    lease_seconds: u64,
    /// The server's base URL as clients reach it, for links in 0.4.6-protocol answers
    /// [default: http://<listen address>/, or the request's Host when listening on all addresses].
    #[arg(long, env = env::PUBLIC_URL)]
    public_url: Option<String>,
    /// Run 0.4.6-protocol jobs with the profiles.yml their client sends, instead of the
    /// server's own profiles.
    #[arg(long, env = env::ACCEPT_CLIENT_PROFILES, action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    accept_client_profiles: bool,
    /// Most schedules the server keeps; creating one more is refused (413).
    #[arg(long, env = env::MAX_SCHEDULES, default_value_t = limits::DEFAULT_MAX_SCHEDULES)]
    max_schedules: usize,
    /// Most entries in the zip of a 0.4.6 form (413 past it).
    #[arg(long, env = env::MAX_ZIP_ENTRIES, default_value_t = limits::DEFAULT_MAX_ZIP_ENTRIES)]
    max_zip_entries: usize,
    /// Most bytes the entries of a 0.4.6 form's zip may unzip to (413 past it).
    #[arg(long, env = env::MAX_UNZIPPED_BYTES, default_value_t = limits::DEFAULT_MAX_UNZIPPED_BYTES)]
    max_unzipped_bytes: u64,
    /// Require this static token on every route but /health, /check and /version: its
    /// SHA-256 in hex (`printf %s "$TOKEN" | sha256sum`). Clients send `Authorization: Bearer
    /// <token>`. DBT_REMOTE_AUTH_TOKEN may give the token itself instead.
    #[arg(long, env = env::AUTH_TOKEN_SHA256, value_name = "HEX")]
    auth_token_sha256: Option<String>,
    /// Accept Google ID tokens (signed by Google, for --auth-audience, unexpired) on every route
    /// but /health, /check and /version.
    #[arg(long, env = env::AUTH_GOOGLE, action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    auth_google: bool,
    /// The audience Google ID tokens must have: the URL clients use [default: --public-url].
    #[arg(long, env = env::AUTH_AUDIENCE, value_name = "URL")]
    auth_audience: Option<String>,
    /// Where Google's public keys are fetched (keys are cached).
    #[arg(long, env = env::AUTH_JWKS_URL, value_name = "URL", default_value = dbt_remote_core::auth::GOOGLE_JWKS_URL)]
    auth_jwks_url: String,
    /// Accept Google ID tokens of these emails only (comma-separated) [default: any].
    #[arg(long, env = env::AUTH_ALLOWED_EMAILS, value_name = "EMAILS", value_delimiter = ',')]
    auth_allowed_emails: Vec<String>,
    /// Seconds the web UI's session cookie lasts (a Google ID token's own expiry is sooner).
    #[arg(long, env = env::SESSION_MAX_AGE_SECONDS, value_name = "SECONDS", default_value_t = dbt_remote_core::auth::session::DEFAULT_SESSION_MAX_AGE.as_secs())]
    session_max_age_seconds: u64,
    /// Days a finished job (record, log, artifacts, work dir, runner files) is kept; 0 keeps
    /// jobs forever.
    #[arg(long, env = env::RETAIN_DAYS, value_name = "DAYS", default_value_t = retention::DEFAULT_RETAIN_DAYS)]
    retain_days: u64,
    /// Keep only this many finished jobs, the newest [default: no count limit].
    #[arg(long, env = env::RETAIN_JOBS, value_name = "N")]
    retain_jobs: Option<usize>,
    /// Minutes an uploaded file that no job names yet is kept (a client may be between upload
    /// and submit), and a just-finished job past --retain-jobs.
    #[arg(long, env = env::RETENTION_GRACE_MINUTES, value_name = "MINUTES", default_value_t = retention::DEFAULT_GRACE_MINUTES)]
    retention_grace_minutes: u64,
    /// Minutes between two retention passes (one also runs at start); 0 turns retention off.
    #[arg(long, env = env::GC_INTERVAL_MINUTES, value_name = "MINUTES", default_value_t = retention::DEFAULT_GC_INTERVAL_MINUTES)]
    gc_interval_minutes: u64,
    #[command(flatten)]
    pub edge: crate::edge_args::EdgeArgs,
    #[command(flatten)]
    pub scheduler: crate::scheduler_args::SchedulerArgs,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Args, Debug)]
pub struct RunJobArgs {
    /// The job to run.
    #[arg(env = env::JOB_ID)]
    pub job_id: JobId,
    /// Also print each log record as a Cloud Logging JSON line on stdout [default: on inside
    /// a Cloud Run Job, i.e. when CLOUD_RUN_JOB is set].
    #[arg(long, env = env::LOG_JSON, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new())]
    pub log_json: Option<bool>,
    /// Seconds dbt has to stop after an interrupt (a cancel or a stop signal) before it is
    /// killed; the server passes its --cancel-grace-seconds to Cloud Run executions this way
    /// [default: 20].
    #[arg(long, env = env::CANCEL_GRACE_SECONDS, value_name = "SECONDS")]
    pub cancel_grace_seconds: Option<u64>,
    /// The socket of the server's warm dbt workers (the process launcher sets it).
    #[arg(long, env = env::DBT_WORKER_SOCKET, hide = true)]
    pub dbt_worker_socket: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub state: StateArgs,
}

impl StateKind {
    fn core(self) -> wiring::StateKind {
        match self {
            StateKind::Local => wiring::StateKind::Local,
            StateKind::Gcp => wiring::StateKind::Gcp,
        }
    }
}

impl StateArgs {
    pub fn settings(&self) -> JobSettings {
        JobSettings {
            state: wiring::choose(self.state.map(StateKind::core), None).state,
            state_dir: self.state_dir.clone(),
            work_dir: self.work_dir.clone(),
            dbt_path: self.dbt_path.clone(),
            python: self.python.clone(),
            profiles_dir: self.profiles_dir.clone(),
            keep_work_dirs: self.keep_work_dirs,
            log_flush: Duration::from_millis(self.log_flush_ms),
            edr_path: self.edr_path.clone(),
            edr_timeout: Duration::from_secs(self.edr_timeout_seconds),
            parse_cache: self.parse_cache,
            deps_cache: self.deps_cache,
            dbt_worker_socket: None,
            limits: limits::JobLimits {
                max_files: self.max_job_files,
                max_bytes: self.max_job_bytes,
            },
            job_env: self
                .job_env
                .iter()
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect(),
            store_limits: wiring::StoreLimits {
                lock_timeout: Duration::from_secs(self.lock_timeout_seconds),
                max_log_record_bytes: self.max_log_record_bytes,
                max_log_records: self.max_log_records,
                max_log_bytes: self.max_log_bytes,
            },
        }
    }
}

impl ServeArgs {
    /// The state store and launcher of these flags and the original's variables, and why.
    pub fn choice(&self) -> wiring::Choice {
        let launcher = self.launcher.map(|l| match l {
            LauncherKind::Process => wiring::LauncherKind::Process,
            LauncherKind::CloudRun => wiring::LauncherKind::CloudRun,
        });
        wiring::choose(self.state.state.map(StateKind::core), launcher)
    }

    /// The settings of these flags; `token` is the static token of DBT_REMOTE_AUTH_TOKEN.
    pub fn settings(self, token: Option<String>) -> ServerSettings {
        let choice = self.choice();
        ServerSettings {
            job: JobSettings {
                state: choice.state,
                ..self.state.settings()
            },
            launcher: choice.launcher,
            host: self.host,
            port: self.port,
            max_concurrent_jobs: self.max_concurrent_jobs,
            dbt_workers: self.dbt_workers,
            max_upload_bytes: self.max_upload_bytes,
            cancel_grace: Duration::from_secs(self.cancel_grace_seconds),
            launch_lease: Duration::from_secs(self.lease_seconds),
            public_url: self.public_url,
            accept_client_profiles: self.accept_client_profiles,
            max_schedules: self.max_schedules,
            zip: limits::ZipLimits {
                max_entries: self.max_zip_entries,
                max_unzipped_bytes: self.max_unzipped_bytes,
            },
            auth: AuthSettings {
                token_sha256: self.auth_token_sha256,
                token,
                google: self.auth_google,
                audience: self.auth_audience,
                jwks_url: self.auth_jwks_url,
                allowed_emails: self.auth_allowed_emails,
                session_max_age: Duration::from_secs(self.session_max_age_seconds),
            },
            edge: self.edge.settings(),
            job_program: None,
            retain_days: self.retain_days,
            retain_jobs: self.retain_jobs,
            retention_grace: Duration::from_secs(self.retention_grace_minutes.saturating_mul(60)),
            gc_interval: Duration::from_secs(self.gc_interval_minutes.saturating_mul(60)),
            scheduler: self.scheduler.settings(),
        }
    }
}

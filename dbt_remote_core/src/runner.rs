//! The job runner: runs one job's dbt command in a fresh work dir, turning dbt's output into
//! log records and its exit code into the job's final status.
//!
//! It is what `dbt-server run-job <id>` executes, in a local process or a Cloud Run Job, and
//! what [`InProcessLauncher`](crate::launcher::InProcessLauncher) calls directly.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::containment::PACKAGE_FILES;
use crate::isolation;
use crate::job::{JobId, JobMode, JobRecord, JobStatus, PROFILES_FILE};
use crate::lifecycle::{retry_transient, JobLifecycle};
use crate::limits::JobLimits;
use crate::log::{LogEntry, LogLevel};
use crate::paths::RelPath;
use crate::state::{StateStore, StateStoreExt};
use crate::{Error, Result};

/// Artifacts a job keeps from dbt's target/ folder, when dbt wrote them.
pub const ARTIFACTS: &[&str] = &[
    "manifest.json",
    "run_results.json",
    "catalog.json",
    "index.html",
    "sources.json",
];

/// dbt's target and log folders, relative to the work dir (dbt's working directory and
/// project root), forced whatever `dbt_project.yml` says.
const TARGET_DIR: &str = "target";
const LOG_DIR: &str = "logs";

/// dbt's level of `logs/dbt.log`; `none` unless the work dir is kept.
const LOG_LEVEL_FILE: &str = "DBT_LOG_LEVEL_FILE";

/// Commands that take no `--target-path` flag (they get `DBT_TARGET_PATH` only).
const NO_TARGET_FLAG: &[&str] = &["deps", "debug"];

mod cache_key;
mod deps_cache;
mod elementary;
mod parse_cache;
mod stream;
mod worker;

pub use elementary::{DEFAULT_EDR_TIMEOUT, ELEMENTARY_REPORT};
pub use stream::write_log_stream;
pub use worker::ZYGOTE;

/// The Python entry point of manifest jobs ([`JobMode::Manifest`]), run with `python -c`.
const RUN_MANIFEST: &str = include_str!("runner/run_manifest.py");

/// Default most log records of one job's dbt output.
pub const DEFAULT_MAX_LOG_RECORDS: u64 = 500_000;
/// Default most bytes of log messages of one job's dbt output (256 MiB).
pub const DEFAULT_MAX_LOG_BYTES: u64 = 256 * 1024 * 1024;

/// How far apart a job's log appends are at least on a store that batches them: Firestore's
/// sustained rate is about one write per second per document, and each append writes the
/// log head.
pub const DEFAULT_LOG_FLUSH: Duration = Duration::from_secs(1);

/// How the runner finds and runs dbt.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The dbt executable (default `dbt`, found on PATH).
    pub dbt_path: PathBuf,
    /// The Python that runs manifest jobs through dbt's Python API; `None`: the `python` next
    /// to the dbt executable (a venv's), else `python3` on PATH.
    pub python_path: Option<PathBuf>,
    /// dbt's profiles dir; `None` leaves dbt's own default (`DBT_PROFILES_DIR` or ~/.dbt).
    pub profiles_dir: Option<PathBuf>,
    /// Folder in which each job gets its work dir `<work_root>/<job id>`.
    pub work_root: PathBuf,
    /// Keep the work dir after the job (for debugging).
    pub keep_work_dir: bool,
    /// Time dbt has to stop after an interrupt before it is killed.
    pub interrupt_grace: Duration,
    /// Variables of this process's environment that dbt also gets, beyond those that pass by
    /// default ([`isolation::dbt_env`]).
    pub job_env: Vec<String>,
    /// How often the runner checks the store for a cancel request.
    pub cancel_poll: Duration,
    /// What a job may materialise, checked with the real sizes as the files are written.
    pub limits: JobLimits,
    /// Most records of dbt's output kept in the job's log; past it, one "log truncated"
    /// record and the rest dropped (dbt runs on and its exit code is kept).
    pub max_log_records: u64,
    /// Most bytes of messages of dbt's output kept in the job's log (same rule).
    pub max_log_bytes: u64,
    /// How far apart the log appends are at least, on a store that
    /// [batches them](StateStore::batches_log_appends) (the GCP store); others append at once.
    pub log_flush: Duration,
    /// Elementary's `edr`, run after dbt for jobs that ask for a report; `None`: the `edr`
    /// next to the dbt executable when there is one, else `edr` on PATH.
    pub edr_path: Option<PathBuf>,
    /// Longest an `edr report` may run before it is interrupted (the job keeps dbt's result).
    pub edr_timeout: Duration,
    /// Restore and keep dbt's partial parse state in the store (docs/caches.md).
    pub parse_cache: bool,
    /// Restore and keep the `dbt_packages/` of `dbt deps` in the store (docs/caches.md).
    pub deps_cache: bool,
    /// The socket of the warm dbt workers ([`crate::launcher::WorkerPool`]); `None`, or no
    /// worker answering: dbt starts as a fresh process.
    pub dbt_worker_socket: Option<PathBuf>,
}

impl RunnerConfig {
    pub fn new(work_root: impl Into<PathBuf>) -> Self {
        RunnerConfig {
            dbt_path: PathBuf::from("dbt"),
            python_path: None,
            profiles_dir: None,
            work_root: work_root.into(),
            keep_work_dir: false,
            interrupt_grace: Duration::from_secs(20),
            job_env: vec![],
            cancel_poll: Duration::from_secs(2),
            limits: JobLimits::default(),
            max_log_records: DEFAULT_MAX_LOG_RECORDS,
            max_log_bytes: DEFAULT_MAX_LOG_BYTES,
            log_flush: DEFAULT_LOG_FLUSH,
            edr_path: None,
            edr_timeout: DEFAULT_EDR_TIMEOUT,
            parse_cache: true,
            deps_cache: true,
            dbt_worker_socket: None,
        }
    }

    /// The Python of manifest jobs: the configured one, else the `python` beside dbt.
    pub fn python(&self) -> PathBuf {
        if let Some(p) = &self.python_path {
            return p.clone();
        }
        self.beside_dbt("python")
            .unwrap_or_else(|| PathBuf::from("python3"))
    }

    /// Elementary's `edr`: the configured one, else the `edr` beside dbt, else `edr` on PATH.
    pub fn edr(&self) -> PathBuf {
        if let Some(p) = &self.edr_path {
            return p.clone();
        }
        self.beside_dbt("edr")
            .unwrap_or_else(|| PathBuf::from("edr"))
    }

    /// The file `name` in the folder of the dbt executable (a venv's `bin`), if it exists.
    fn beside_dbt(&self, name: &str) -> Option<PathBuf> {
        let dbt = if self.dbt_path.components().count() > 1 {
            Some(self.dbt_path.clone())
        } else {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(&self.dbt_path))
                    .find(|p| p.is_file())
            })
        };
        dbt.and_then(|d| Some(d.parent()?.join(name)))
            .filter(|p| p.is_file())
    }
}

/// Runs job `id` to its end and returns its final record.
///
/// Cancelling `cancel` (the entry point does on SIGTERM), or a cancel request in the store,
/// interrupts dbt and ends the job `cancelled`. Errors of the runner itself (a missing input
/// blob, dbt not found) end the job `failed` with the reason; an `Err` is returned only when
/// the store cannot be used at all.
pub async fn run_job(
    store: Arc<dyn StateStore>,
    id: JobId,
    config: &RunnerConfig,
    cancel: CancellationToken,
) -> Result<JobRecord> {
    let job = store.start_job(id).await?;
    if job.status.is_final() {
        return Ok(job);
    }
    if job.cancel_requested {
        return store.finish_cancelled(id).await;
    }
    let work_dir = config.work_root.join(id.to_string());
    let outcome = Runner {
        store: &store,
        id,
        config,
        cancel: &cancel,
        work_dir: &work_dir,
    }
    .run(&job)
    .await;
    if !config.keep_work_dir {
        let _ = tokio::fs::remove_dir_all(&work_dir).await;
    }
    let (status, exit_code, reason) = match outcome {
        Ok(Outcome::Cancelled) => return store.finish_cancelled(id).await,
        Ok(Outcome::Exited(0)) => (JobStatus::Succeeded, Some(0), None),
        Ok(Outcome::Exited(code)) => (
            JobStatus::Failed,
            Some(code),
            Some(format!("dbt exited with code {code}")),
        ),
        Ok(Outcome::Signalled(reason)) => (JobStatus::Failed, None, Some(reason)),
        Ok(Outcome::TimedOut(limit)) => (
            JobStatus::Failed,
            None,
            Some(format!("dbt ran past its limit of {}s", limit.as_secs())),
        ),
        Err(e) => {
            let reason = format!("{e}");
            let _ = store
                .log(id, LogEntry::remote(LogLevel::Error, &reason))
                .await;
            (JobStatus::Failed, None, Some(reason))
        }
    };
    // A cancel that arrived while dbt was finishing still wins over its result. A full or
    // busy store is waited for: the job is finished as soon as it can be.
    let current = retry_transient("reading the job", None, || store.get_job(id)).await?;
    if current.cancel_requested || cancel.is_cancelled() {
        return store.finish_cancelled(id).await;
    }
    // Every record is written before the final status: followers stop reading at it.
    let note = LogEntry::remote(LogLevel::Info, format!("dbt-remote: job {status}"));
    let _ = store.log(id, note).await;
    store
        .finish_job_eventually(id, status, exit_code, reason)
        .await
}

enum Outcome {
    Exited(i32),
    Signalled(String),
    Cancelled,
    /// Interrupted after running past its time limit.
    TimedOut(Duration),
}

/// A program the runner runs with its output going into the job's log.
struct Tool {
    /// Its name in messages.
    name: &'static str,
    /// The server flag that says which executable it is.
    flag: &'static str,
    /// One line of its output as a log record (the level for lines that carry none).
    line: fn(&str, LogLevel) -> LogEntry,
}

/// dbt, whose `--log-format json` lines become records with dbt's level, event and node.
const DBT: Tool = Tool {
    name: "dbt",
    flag: "--dbt",
    line: LogEntry::from_dbt_line,
};

struct Runner<'a> {
    store: &'a Arc<dyn StateStore>,
    id: JobId,
    config: &'a RunnerConfig,
    cancel: &'a CancellationToken,
    work_dir: &'a Path,
}

impl Runner<'_> {
    async fn run(&self, job: &JobRecord) -> Result<Outcome> {
        self.materialise(job).await?;
        let command = job.spec.command().unwrap_or("?");
        let profiles = job.spec.client_profiles.then_some(self.work_dir);
        self.record_default_target(job, profiles).await;
        if command != "deps"
            && job.spec.mode == JobMode::Project
            && PACKAGE_FILES
                .iter()
                .any(|f| self.work_dir.join(f).is_file())
        {
            if let Some(outcome) = deps_cache::install(self, profiles).await? {
                return Ok(outcome);
            }
        }
        let from = match job.spec.mode {
            JobMode::Project => "",
            JobMode::Manifest => " from the compiled manifest",
        };
        self.note(
            LogLevel::Info,
            format!("dbt-remote: running dbt {}{from}", job.spec.args.join(" ")),
        )
        .await;
        let parse = parse_cache::ParseCache::restore(self, job, profiles).await;
        let outcome = self.dbt(job.spec.mode, profiles, &job.spec.args).await?;
        if let Some(parse) = parse {
            parse.save(self, &outcome).await;
        }
        self.store_artifacts().await?;
        if job.spec.elementary && !matches!(outcome, Outcome::Cancelled) {
            let report = elementary::report(self, &job.spec.args, profiles).await?;
            if report == elementary::Report::Cancelled {
                return Ok(Outcome::Cancelled);
            }
        }
        Ok(outcome)
    }

    async fn note(&self, level: LogLevel, message: impl Into<String>) {
        if let Err(e) = self
            .store
            .log(self.id, LogEntry::remote(level, message))
            .await
        {
            tracing::warn!(job = %self.id, "could not store a log record: {e}");
        }
    }

    /// Writes the job's files into a fresh work dir, refusing to write past
    /// [`RunnerConfig::limits`] (counted with the real size of each blob). A `profiles.yml` at
    /// its root is left out unless the job uses client profiles, so dbt can never pick it up.
    /// Errors name paths relative to the work dir: they reach the client.
    async fn materialise(&self, job: &JobRecord) -> Result<()> {
        let limits = &self.config.limits;
        limits.check_files(job.spec.files.len())?;
        let mut written = limits.bytes();
        let io = |what: &str, path: &Path, e: std::io::Error| {
            let shown = path.strip_prefix(self.work_dir).unwrap_or(Path::new(""));
            tracing::error!(job = %self.id, "{what} {}: {e}", path.display());
            Error::backend(
                "work dir",
                format!("{what} ./{}: {}", shown.display(), e.kind()),
            )
        };
        if self.work_dir.exists() {
            tokio::fs::remove_dir_all(self.work_dir)
                .await
                .map_err(|e| io("removing", self.work_dir, e))?;
        }
        tokio::fs::create_dir_all(self.work_dir)
            .await
            .map_err(|e| io("creating", self.work_dir, e))?;
        for file in &job.spec.files {
            if file.path.as_str() == PROFILES_FILE && !job.spec.client_profiles {
                continue;
            }
            let content = self
                .store
                .get_blob(&file.sha256)
                .await
                .map_err(|e| match e {
                    // The store's words say whether the blob is absent or damaged.
                    Error::NotFound { what } => {
                        Error::invalid(format!("input file {} is missing: {what}", file.path))
                    }
                    e => e,
                })?;
            written.charge(content.len() as u64)?;
            let path = file.path.join_to(self.work_dir);
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|e| io("creating", parent, e))?;
            }
            tokio::fs::write(&path, &content)
                .await
                .map_err(|e| io("writing", &path, e))?;
        }
        Ok(())
    }

    /// Runs dbt with `args`, streaming its output into the job's log. `profiles` (the job's
    /// own profiles dir) wins over the server's.
    async fn dbt(
        &self,
        mode: JobMode,
        profiles: Option<&Path>,
        args: &[String],
    ) -> Result<Outcome> {
        let mut argv: Vec<String> = ["--log-format", "json", "--no-use-colors"]
            .map(String::from)
            .to_vec();
        argv.extend(contained_args(args));
        let mut env: BTreeMap<OsString, OsString> = isolation::dbt_env(&self.config.job_env)
            .into_iter()
            .collect();
        for (name, value) in [
            ("DBT_SEND_ANONYMOUS_USAGE_STATS", "false"),
            ("DBT_TARGET_PATH", TARGET_DIR),
            ("DBT_LOG_PATH", LOG_DIR),
        ] {
            env.insert(name.into(), value.into());
        }
        env.remove(std::ffi::OsStr::new("DBT_PROJECT_DIR"));
        if !self.config.keep_work_dir {
            // dbt's file log (every debug event as text; a quarter of a 300-model build) goes
            // with the work dir: the job's log is dbt's JSON output. An operator's own
            // DBT_LOG_LEVEL_FILE, or the job's --log-level-file, still wins.
            env.entry(LOG_LEVEL_FILE.into()).or_insert("none".into());
        }
        if let Some(dir) = self.profiles_dir(profiles) {
            env.insert(crate::env::PROFILES_DIR.into(), dir.into_os_string());
        }
        if let Some(socket) = &self.config.dbt_worker_socket {
            let kind = match mode {
                JobMode::Project => worker::Kind::Dbt,
                JobMode::Manifest => worker::Kind::Python(RUN_MANIFEST),
            };
            match worker::start(socket, &argv, self.work_dir, &env, kind).await {
                Ok(warm) => {
                    let note = format!("dbt-remote: dbt runs in a warm worker (pid {})", warm.pid);
                    self.note(LogLevel::Debug, note).await;
                    return self
                        .follow(
                            stream::Proc::Warm(warm.child),
                            warm.out,
                            warm.err,
                            &DBT,
                            None,
                        )
                        .await;
                }
                Err(e) => {
                    let note = format!("dbt-remote: no warm dbt worker ({e}): dbt starts afresh");
                    self.note(LogLevel::Debug, note).await;
                }
            }
        }
        let mut cmd = match mode {
            JobMode::Project => Command::new(&self.config.dbt_path),
            JobMode::Manifest => {
                let mut cmd = Command::new(self.config.python());
                cmd.args(["-c", RUN_MANIFEST]);
                cmd
            }
        };
        cmd.args(argv)
            .current_dir(self.work_dir)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null());
        self.stream(cmd, &DBT, None).await
    }

    /// dbt's profiles dir: the job's own (`profiles`), else the server's, else `~/.dbt`, never
    /// dbt's fallback to the project dir (a `profiles.yml` the client sent).
    fn profiles_dir(&self, profiles: Option<&Path>) -> Option<PathBuf> {
        if let Some(dir) = profiles.or(self.config.profiles_dir.as_deref()) {
            return Some(dir.to_path_buf());
        }
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".dbt"))
    }

    /// Records the target dbt will use when the job's arguments name none: its profile's
    /// default (see [`crate::project::default_target`]). Unknown or unrecordable: left unset.
    async fn record_default_target(&self, job: &JobRecord, profiles: Option<&Path>) {
        if job.target.is_some() {
            return;
        }
        let Some(target) = self
            .profiles_dir(profiles)
            .and_then(|dir| crate::project::default_target(&job.spec.args, self.work_dir, &dir))
        else {
            return;
        };
        let recorded = self
            .store
            .modify_job(self.id, |j| match j.target {
                None => {
                    j.target = Some(target.clone());
                    crate::state::Modify::Write
                }
                Some(_) => crate::state::Modify::Keep,
            })
            .await;
        if let Err(e) = recorded {
            tracing::warn!(job = %self.id, "could not record the job's target: {e}");
        }
    }

    async fn store_artifacts(&self) -> Result<()> {
        let target = self.work_dir.join(TARGET_DIR);
        for name in ARTIFACTS {
            let path = target.join(name);
            if let Ok(content) = tokio::fs::read(&path).await {
                let name = RelPath::new(*name)?;
                self.store
                    .put_artifact(self.id, &name, Bytes::from(content))
                    .await?;
            }
        }
        Ok(())
    }
}

/// The job's arguments with dbt's log path (and, for commands that take it, target path)
/// forced into the work dir, right after the subcommand's words.
fn contained_args(args: &[String]) -> Vec<String> {
    let words = crate::job::JobSpec {
        args: args.to_vec(),
        ..Default::default()
    }
    .command()
    .map_or(1, |c| c.split(' ').count())
    .min(args.len());
    let mut out = args[..words].to_vec();
    out.extend(["--log-path".to_string(), LOG_DIR.to_string()]);
    if !args
        .first()
        .is_some_and(|c| NO_TARGET_FLAG.contains(&c.as_str()))
    {
        out.extend(["--target-path".to_string(), TARGET_DIR.to_string()]);
    }
    out.extend_from_slice(&args[words..]);
    out
}

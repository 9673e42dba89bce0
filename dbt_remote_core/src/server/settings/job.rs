//! [`JobSettings`]: what a job process needs, read from and passed on through the
//! environment variables of [`crate::env`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::vars::{var, var_bool, var_parse, var_path};
#[cfg(not(feature = "gcp"))]
use super::NO_GCP;
use super::{StateKind, StoreLimits, DEFAULT_DBT, DEFAULT_STATE_DIR};
use crate::env;
use crate::limits::JobLimits;
use crate::runner::RunnerConfig;
use crate::state::{LocalStore, StateStore};
use crate::{Error, Result};

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

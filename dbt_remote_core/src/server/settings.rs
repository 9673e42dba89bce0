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
use crate::runner::RunnerConfig;
use crate::state::{LocalStore, StateStore};
use crate::{Error, Result};

mod edge;
pub use edge::*;

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
    /// and output files and of schedules only.
    pub state_dir: PathBuf,
    /// Folder in which each job gets a fresh work dir. Default `<state dir>/../work`.
    pub work_dir: Option<PathBuf>,
    pub dbt_path: PathBuf,
    /// The Python of manifest jobs. Default: the `python` beside dbt, else `python3`.
    pub python: Option<PathBuf>,
    /// dbt's profiles dir, owned by the server.
    pub profiles_dir: Option<PathBuf>,
    pub keep_work_dirs: bool,
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
        Ok(s)
    }

    /// The environment that makes a job process (`dbt-server run-job`) see these settings:
    /// each variable with its value, or `None` for one to remove.
    pub fn to_env(&self) -> Vec<(&'static str, Option<OsString>)> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.clone().into_os_string());
        vec![
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
        ]
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
        Ok(JobSettings {
            state: self.state,
            state_dir,
            work_dir: Some(work_dir),
            dbt_path: program(&self.dbt_path)?,
            python: self.python.as_deref().map(program).transpose()?,
            profiles_dir: self.profiles_dir.as_deref().map(abs).transpose()?,
            keep_work_dirs: self.keep_work_dirs,
        })
    }

    /// Opens the store of [`state`](Self::state) (a GCP store takes its settings from the
    /// environment, which the job processes inherit).
    pub async fn open_store(&self) -> Result<Arc<dyn StateStore>> {
        match self.state {
            StateKind::Local => Ok(Arc::new(LocalStore::new(&self.state_dir)?)),
            #[cfg(feature = "gcp")]
            StateKind::Gcp => Ok(Arc::new(
                crate::state::GcpStore::builder().from_env().build().await?,
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
        config
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
    pub max_upload_bytes: u64,
    pub cancel_grace: Duration,
    /// The server's base URL as clients reach it (`http://` or `https://`).
    pub public_url: Option<String>,
    pub accept_client_profiles: bool,
    pub auth: AuthSettings,
    /// The HTTP edge: origins, hosts, timeouts, connections.
    pub edge: EdgeSettings,
    /// The job entry point the process launcher runs (`<program> run-job <id>`). Default: this
    /// executable.
    pub job_program: Option<PathBuf>,
}

impl ServerSettings {
    /// The defaults, overridden by every variable of [`crate::env`] that is set. Takes (and
    /// removes) the static token of [`env::AUTH_TOKEN`], see [`take_auth_token_from_env`].
    pub fn from_env() -> Result<Self> {
        let mut s = ServerSettings {
            job: JobSettings::from_env()?,
            ..Default::default()
        };
        if let Some(v) = var_parse(env::LAUNCHER)? {
            s.launcher = v;
        }
        if let Some(v) = var_parse(env::HOST)? {
            s.host = v;
        }
        if let Some(v) = var_parse(env::PORT)? {
            s.port = v;
        }
        if let Some(v) = var_parse(env::MAX_CONCURRENT_JOBS)? {
            s.max_concurrent_jobs = v;
        }
        if let Some(v) = var_parse(env::MAX_UPLOAD_BYTES)? {
            s.max_upload_bytes = v;
        }
        if let Some(v) = var_parse(env::CANCEL_GRACE_SECONDS)? {
            s.cancel_grace = Duration::from_secs(v);
        }
        s.public_url = var(env::PUBLIC_URL);
        s.accept_client_profiles = var_bool(env::ACCEPT_CLIENT_PROFILES)?.unwrap_or(false);
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
        s.edge = EdgeSettings::from_env()?;
        Ok(s)
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
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            cancel_grace: Duration::from_secs(DEFAULT_CANCEL_GRACE_SECONDS),
            public_url: None,
            accept_client_profiles: false,
            auth: AuthSettings::default(),
            edge: EdgeSettings::default(),
            job_program: None,
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
        };
        let env = settings.to_env();
        let get = |name| env.iter().find(|(k, _)| *k == name).unwrap().1.clone();
        assert_eq!(get(env::STATE_DIR), Some("/s".into()));
        assert_eq!(get(env::PYTHON), None);
        assert_eq!(get(env::KEEP_WORK_DIRS), Some("true".into()));
    }
}

//! A launcher that runs each job as a child process: the local default.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt as _, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::Signal;
use tokio::sync::Notify;

use super::worker_pool::{WorkerPool, WorkerPoolConfig};
use super::JobLauncher;
use crate::isolation;
use crate::job::{JobId, JobRecord, JobStatus};
use crate::lifecycle::JobLifecycle;
use crate::process::{signal, signal_group};
use crate::state::StateStore;
use crate::{Error, Result};

/// The job entry point: `program args… <job id>`, e.g. `dbt-server run-job <id>`, with `env`
/// set for it (a `None` value removes the variable) on top of an allow-list of the server's
/// environment ([`isolation::job_process_env`], plus the variables that `env` names in
/// [`env::JOB_ENV`](crate::env::JOB_ENV)): the server's other variables never reach a job.
#[derive(Debug, Clone)]
pub struct JobCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(&'static str, Option<OsString>)>,
}

impl JobCommand {
    /// The names that `env` lists in [`env::JOB_ENV`](crate::env::JOB_ENV).
    fn job_env(&self) -> Vec<String> {
        self.env
            .iter()
            .find(|(name, _)| *name == crate::env::JOB_ENV)
            .and_then(|(_, value)| value.as_ref())
            .map(|v| isolation::parse_names(&v.to_string_lossy()))
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct ProcessLauncherConfig {
    pub command: JobCommand,
    /// Where the launcher keeps each job process's lock file and output (`<id>.lock`, `<id>.log`).
    pub runs_dir: PathBuf,
    /// Jobs running at once; more wait queued, in order.
    pub max_concurrent: usize,
    /// Time a cancelled job has to stop before its process group is killed.
    pub cancel_grace: Duration,
    /// How often a job process that this launcher did not start (found by
    /// [`recover`](JobLauncher::recover)) is checked for life.
    pub watch_interval: Duration,
    /// Warm dbt workers for the jobs' dbt runs (`None`: dbt starts afresh in each job). A
    /// pool that cannot start is logged, and the jobs run dbt afresh.
    pub dbt_workers: Option<WorkerPoolConfig>,
}

/// Runs each job as `command … <id>` in its own process group.
///
/// The job process holds an exclusive lock on `<runs_dir>/<id>.lock` while it lives (see
/// [`RunnerLock`]); jobs survive a restart of the server, and a restarted server tells live
/// runners (lock held) from dead ones (lock free) by it.
#[derive(Debug, Clone)]
pub struct ProcessLauncher {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    store: Arc<dyn StateStore>,
    config: ProcessLauncherConfig,
    sched: Mutex<Sched>,
    wake: Arc<Notify>,
    /// Asks its workers to stop when the launcher is dropped.
    _pool: Option<WorkerPool>,
}

#[derive(Debug, Default)]
struct Sched {
    queue: VecDeque<JobId>,
    known: HashSet<JobId>,
    /// Job processes alive, by job: their pid (= process group id).
    running: HashMap<JobId, u32>,
}

impl ProcessLauncher {
    /// Makes the launcher and starts its dispatcher task (call inside a tokio runtime).
    pub fn new(store: Arc<dyn StateStore>, mut config: ProcessLauncherConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.runs_dir).map_err(|e| {
            Error::backend(
                "process launcher",
                format!("{}: {e}", config.runs_dir.display()),
            )
        })?;
        let pool = config.dbt_workers.clone().and_then(|workers| {
            WorkerPool::start(workers)
                .inspect_err(|e| tracing::warn!("no warm dbt workers: {e}"))
                .ok()
        });
        if let Some(pool) = &pool {
            let socket = pool.socket().as_os_str().to_owned();
            config
                .command
                .env
                .push((crate::env::DBT_WORKER_SOCKET, Some(socket)));
        }
        let shared = Arc::new(Shared {
            store,
            config,
            sched: Mutex::default(),
            wake: Arc::new(Notify::new()),
            _pool: pool,
        });
        tokio::spawn(dispatch(Arc::downgrade(&shared), shared.wake.clone()));
        Ok(ProcessLauncher { shared })
    }

    /// Pids of the job processes alive now, by job.
    pub fn running(&self) -> HashMap<JobId, u32> {
        self.shared.sched.lock().unwrap().running.clone()
    }
}

async fn dispatch(shared: std::sync::Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        loop {
            let next = {
                let mut sched = s.sched.lock().unwrap();
                if sched.running.len() >= s.config.max_concurrent.max(1) {
                    None
                } else {
                    sched.queue.pop_front()
                }
            };
            let Some(id) = next else { break };
            if let Err(e) = s.start(id).await {
                tracing::error!(job = %id, "could not start job: {e}");
                let _ = s
                    .store
                    .finish_orphan(id, format!("could not start the job: {e}"))
                    .await;
                s.sched.lock().unwrap().known.remove(&id);
            }
        }
        drop(s);
        wake.notified().await;
    }
}

impl Shared {
    fn lock_path(&self, id: JobId) -> PathBuf {
        self.config.runs_dir.join(format!("{id}.lock"))
    }

    async fn start(self: &Arc<Self>, id: JobId) -> Result<()> {
        let job = self.store.start_job(id).await?;
        if job.status != JobStatus::Running {
            self.sched.lock().unwrap().known.remove(&id);
            return Ok(());
        }
        let out_path = self.config.runs_dir.join(format!("{id}.log"));
        let out = File::create(&out_path).map_err(|e| {
            tracing::error!(job = %id, "{}: {e}", out_path.display());
            Error::backend("process launcher", format!("the runner log: {}", e.kind()))
        })?;
        let err = out
            .try_clone()
            .map_err(|e| Error::backend("process launcher", e))?;
        let mut cmd = std::process::Command::new(&self.config.command.program);
        cmd.env_clear()
            .envs(isolation::job_process_env(&self.config.command.job_env()));
        for (name, value) in &self.config.command.env {
            match value {
                Some(value) => cmd.env(name, value),
                None => cmd.env_remove(name),
            };
        }
        cmd.args(&self.config.command.args)
            .arg(id.to_string())
            .env(crate::env::RUNNER_LOCK, self.lock_path(id))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: one prctl between fork and exec (async-signal-safe).
        unsafe {
            cmd.pre_exec(|| {
                isolation::drop_ptrace_capability();
                Ok(())
            });
        }
        let mut child = tokio::process::Command::from(cmd).spawn().map_err(|e| {
            let program = self.config.command.program.display();
            tracing::error!(job = %id, "could not start {program}: {e}");
            Error::backend(
                "process launcher",
                format!("could not start the job process ({})", e.kind()),
            )
        })?;
        let pid = child.id().unwrap_or(0);
        self.sched.lock().unwrap().running.insert(id, pid);
        tracing::info!(job = %id, pid, "job process started");
        let this = self.clone();
        tokio::spawn(async move {
            let how = match child.wait().await {
                Ok(status) => describe_exit(status),
                Err(e) => format!("could not be waited for ({e})"),
            };
            this.ended(id, pid, how).await;
        });
        Ok(())
    }

    /// A job process has ended: kill what is left of its group, and finish the job if its
    /// runner did not.
    async fn ended(self: &Arc<Self>, id: JobId, pid: u32, how: String) {
        signal_group(pid, Signal::SIGKILL);
        let reason = format!("the job process {how} before the job finished");
        if let Err(e) = self.store.finish_orphan(id, reason).await {
            tracing::error!(job = %id, "could not finish the job: {e}");
        }
        let _ = std::fs::remove_file(self.lock_path(id));
        {
            let mut sched = self.sched.lock().unwrap();
            sched.running.remove(&id);
            sched.known.remove(&id);
        }
        tracing::info!(job = %id, pid, "job process {how}");
        self.wake.notify_one();
    }

    /// Watches a job process this launcher did not start, until its lock is free.
    async fn watch(self: Arc<Self>, id: JobId, pid: u32) {
        loop {
            tokio::time::sleep(self.config.watch_interval).await;
            if let Ok(Some(_lock)) = try_lock(&self.lock_path(id)) {
                self.ended(id, pid, "ended".into()).await;
                return;
            }
        }
    }
}

fn describe_exit(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => {
            let name = Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("?");
            format!("was killed by signal {sig} ({name})")
        }
        _ => "ended".into(),
    }
}

/// Takes the lock at `path` if it is free; `Ok(None)` if a live process holds it.
fn try_lock(path: &Path) -> std::io::Result<Option<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

#[async_trait]
impl JobLauncher for ProcessLauncher {
    async fn launch(&self, id: JobId) -> Result<()> {
        {
            let mut sched = self.shared.sched.lock().unwrap();
            if !sched.known.insert(id) {
                return Ok(());
            }
            sched.queue.push_back(id);
        }
        self.shared.wake.notify_one();
        Ok(())
    }

    async fn cancel(&self, id: JobId) -> Result<JobRecord> {
        let job = self.shared.store.request_cancel(id).await?;
        let pid = self.shared.sched.lock().unwrap().running.get(&id).copied();
        if let (JobStatus::Running, Some(pid)) = (job.status, pid) {
            signal(pid, Signal::SIGTERM);
            let shared = self.shared.clone();
            tokio::spawn(async move {
                tokio::time::sleep(shared.config.cancel_grace).await;
                if shared.sched.lock().unwrap().running.get(&id) == Some(&pid) {
                    tracing::warn!(job = %id, pid, "job did not stop in time: killing it");
                    signal_group(pid, Signal::SIGKILL);
                }
            });
        }
        Ok(job)
    }

    async fn recover(&self) -> Result<()> {
        let shared = &self.shared;
        for id in shared.store.jobs_in(JobStatus::Running).await? {
            let lock_path = shared.lock_path(id);
            let held = try_lock(&lock_path).map_err(|e| Error::backend("process launcher", e))?;
            if held.is_some() {
                shared
                    .store
                    .finish_orphan(
                        id,
                        "the job process ended while the server was not running".into(),
                    )
                    .await?;
                let _ = std::fs::remove_file(&lock_path);
                continue;
            }
            let pid = std::fs::read_to_string(&lock_path)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            tracing::info!(job = %id, pid, "watching a job process started before this server");
            {
                let mut sched = shared.sched.lock().unwrap();
                sched.known.insert(id);
                sched.running.insert(id, pid);
            }
            tokio::spawn(shared.clone().watch(id, pid));
        }
        for id in shared.store.jobs_in(JobStatus::Queued).await? {
            self.launch(id).await?;
        }
        Ok(())
    }
}

/// The lock a job process holds while it lives (see [`ProcessLauncher`]).
#[derive(Debug)]
pub struct RunnerLock {
    _file: File,
}

impl RunnerLock {
    /// Takes the lock named by the launcher in [`crate::env::RUNNER_LOCK`], if any, and writes
    /// this process's pid into it. Fails if another live process holds it.
    pub fn acquire_from_env() -> Result<Option<RunnerLock>> {
        let Some(path) = std::env::var_os(crate::env::RUNNER_LOCK) else {
            return Ok(None);
        };
        let mut file = try_lock(Path::new(&path))
            .map_err(|e| Error::backend("runner lock", e))?
            .ok_or_else(|| Error::precondition("another process is already running this job"))?;
        let mut old = String::new();
        let _ = file.read_to_string(&mut old);
        file.set_len(0)
            .map_err(|e| Error::backend("runner lock", e))?;
        use std::io::Seek;
        file.rewind()
            .map_err(|e| Error::backend("runner lock", e))?;
        write!(file, "{}", std::process::id()).map_err(|e| Error::backend("runner lock", e))?;
        Ok(Some(RunnerLock { _file: file }))
    }
}

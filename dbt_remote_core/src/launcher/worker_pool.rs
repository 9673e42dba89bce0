//! Warm dbt workers: Python processes that have imported dbt and its adapters once, and fork
//! a fresh child for each dbt invocation of the process launcher's jobs (the runner's side is
//! `runner/worker.rs`; the worker itself is `runner/dbt_worker.py`).
//!
//! The pool owns one listening Unix socket, `<runs dir>/dbt-worker.sock` (mode 0600; each
//! worker also checks that a peer has its uid), shared by its workers (the kernel spreads the
//! connections). The socket's path exists only while at least one worker is ready: before,
//! the socket sits at `dbt-worker.sock.starting`, so a runner never waits on a pool that is
//! still importing dbt or restarting, it runs dbt afresh. A worker that dies is started again
//! after a backoff (1 s, doubling to 30 s). Workers start with dbt's environment
//! ([`isolation::dbt_env`]), never the server's secrets.
//!
//! Dropping the pool asks its workers to stop (SIGTERM): a worker then accepts nothing more,
//! waits for the children it forked (their jobs go on, as job processes outlive the server),
//! and exits; so does a worker whose server died.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::isolation;
use crate::{Error, Result};

/// The socket's name in the runs dir.
pub const SOCKET_NAME: &str = "dbt-worker.sock";
/// Default number of warm workers.
pub const DEFAULT_DBT_WORKERS: usize = 2;

/// The fd on which a worker finds the listening socket.
const LISTEN_FD: RawFd = 3;
/// First wait before a dead worker is started again; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A worker that ran this long before it died is restarted after [`FIRST_BACKOFF`] again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// A worker's exit code when its Python cannot import dbt: no worker is started again.
const CANNOT_IMPORT_DBT: i32 = 3;

/// How a [`WorkerPool`] starts its workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPoolConfig {
    /// Workers kept running (at least 1).
    pub workers: usize,
    /// The Python that has dbt (the runner's [`python`](crate::runner::RunnerConfig::python)).
    pub python: PathBuf,
    /// The folder of the socket (the process launcher's runs dir, the server's own).
    pub dir: PathBuf,
    /// Variables of the server's environment that dbt also gets (`--job-env`).
    pub job_env: Vec<String>,
}

/// Running warm dbt workers; they are asked to stop when it is dropped.
#[derive(Debug)]
pub struct WorkerPool {
    socket: PathBuf,
    starting: PathBuf,
    stop: CancellationToken,
    pids: Arc<Mutex<Vec<u32>>>,
    started: Arc<AtomicUsize>,
}

/// What the supervising tasks share.
#[derive(Debug)]
struct Shared {
    config: WorkerPoolConfig,
    listener: UnixListener,
    socket: PathBuf,
    starting: PathBuf,
    /// Workers that said they are ready.
    ready: AtomicUsize,
    pids: Arc<Mutex<Vec<u32>>>,
    /// Workers started so far.
    started: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl WorkerPool {
    /// Makes the socket (removing a stale one) and starts the workers (call inside a tokio
    /// runtime). Fails only when the socket cannot be made.
    pub fn start(config: WorkerPoolConfig) -> Result<WorkerPool> {
        let socket = config.dir.join(SOCKET_NAME);
        let starting = config.dir.join(format!("{SOCKET_NAME}.starting"));
        let io = |what: &str, e: std::io::Error| {
            Error::backend("dbt workers", format!("{what} {}: {e}", starting.display()))
        };
        for stale in [&socket, &starting] {
            match std::fs::remove_file(stale) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("removing", e));
                }
                _ => {}
            }
        }
        let listener = UnixListener::bind(&starting).map_err(|e| io("binding", e))?;
        std::fs::set_permissions(&starting, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io("restricting", e))?;
        let stop = CancellationToken::new();
        let pids = Arc::new(Mutex::new(Vec::new()));
        let started = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            config,
            listener,
            socket: socket.clone(),
            starting: starting.clone(),
            ready: AtomicUsize::new(0),
            pids: pids.clone(),
            started: started.clone(),
            stop: stop.clone(),
        });
        for _ in 0..shared.config.workers.max(1) {
            tokio::spawn(supervise(shared.clone()));
        }
        Ok(WorkerPool {
            socket,
            starting,
            stop,
            pids,
            started,
        })
    }

    /// The path runners connect to (present while a worker is ready).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Pids of the workers alive now.
    pub fn pids(&self) -> Vec<u32> {
        self.pids.lock().unwrap().clone()
    }

    /// How many workers were started so far (restarts included).
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.stop.cancel();
        for pid in self.pids() {
            crate::process::signal(pid, Signal::SIGTERM);
        }
        let _ = std::fs::remove_file(&self.socket);
        let _ = std::fs::remove_file(&self.starting);
    }
}

impl Shared {
    /// Starts one worker: `python -c <worker>` with the socket as fd 3, in its own process
    /// group, with dbt's environment, stdout piped (it says `ready`), stderr the server's.
    fn spawn(&self) -> std::io::Result<tokio::process::Child> {
        let mut cmd = std::process::Command::new(&self.config.python);
        cmd.args(["-c", crate::runner::ZYGOTE])
            .env_clear()
            .envs(isolation::dbt_env(&self.config.job_env))
            .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0);
        let fd = self.listener.as_raw_fd();
        // SAFETY: only async-signal-safe calls (dup2, fcntl, sigaction, prctl) between fork
        // and exec.
        unsafe {
            cmd.pre_exec(move || {
                use nix::libc;
                if fd != LISTEN_FD && libc::dup2(fd, LISTEN_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // dup2 clears close-on-exec; fd 3 that already was the socket keeps it.
                if libc::fcntl(LISTEN_FD, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                crate::process::reset_signals();
                isolation::drop_ptrace_capability();
                Ok(())
            });
        }
        tokio::process::Command::from(cmd).spawn()
    }

    /// A worker said it is ready: the first makes the socket reachable.
    fn became_ready(&self) {
        if self.ready.fetch_add(1, Ordering::SeqCst) == 0 {
            if let Err(e) = std::fs::rename(&self.starting, &self.socket) {
                tracing::warn!("could not publish {}: {e}", self.socket.display());
            }
        }
    }

    /// A ready worker is gone: the last takes the socket's path away again.
    fn lost_ready(&self) {
        if self.ready.fetch_sub(1, Ordering::SeqCst) == 1 && !self.stop.is_cancelled() {
            if let Err(e) = std::fs::rename(&self.socket, &self.starting) {
                tracing::warn!("could not withdraw {}: {e}", self.socket.display());
            }
        }
    }
}

/// Keeps one worker running until the pool stops.
async fn supervise(shared: Arc<Shared>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if shared.stop.is_cancelled() {
            return;
        }
        let started = Instant::now();
        match shared.spawn() {
            Ok(child) => {
                let pid = child.id().unwrap_or(0);
                shared.pids.lock().unwrap().push(pid);
                shared.started.fetch_add(1, Ordering::SeqCst);
                tracing::info!(pid, "warm dbt worker started");
                let end = run(&shared, child).await;
                shared.pids.lock().unwrap().retain(|p| *p != pid);
                let Some(end) = end else { return };
                if end.cannot_import_dbt() {
                    let python = shared.config.python.display();
                    tracing::warn!(
                        "no warm dbt workers: {python} cannot import dbt (set --python to the \
                         Python of dbt); jobs start dbt afresh"
                    );
                    return;
                }
                let how = end.describe();
                tracing::warn!(
                    pid,
                    "warm dbt worker {how}; starting another in {backoff:?}"
                );
            }
            Err(e) => {
                let python = shared.config.python.display();
                tracing::warn!("could not start a warm dbt worker ({python}): {e}");
            }
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = FIRST_BACKOFF;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shared.stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// How a worker ended.
struct End {
    /// It said it was ready before.
    was_ready: bool,
    status: std::io::Result<std::process::ExitStatus>,
}

impl End {
    /// It never got ready because its Python has no dbt: starting another is pointless.
    fn cannot_import_dbt(&self) -> bool {
        !self.was_ready && matches!(&self.status, Ok(s) if s.code() == Some(CANNOT_IMPORT_DBT))
    }

    fn describe(&self) -> String {
        match &self.status {
            Ok(status) => format!("ended ({status})"),
            Err(e) => format!("could not be waited for ({e})"),
        }
    }
}

/// Follows a worker to its end, or to the pool's stop (`None`).
async fn run(shared: &Shared, mut child: tokio::process::Child) -> Option<End> {
    let mut lines = child.stdout.take().map(|out| BufReader::new(out).lines());
    let mut ready = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            line = async { lines.as_mut()?.next_line().await.ok().flatten() }, if lines.is_some() => {
                match line {
                    Some(line) if line.trim() == "ready" && !ready => {
                        ready = true;
                        shared.became_ready();
                    }
                    Some(_) => {}
                    None => lines = None,
                }
            }
            _ = shared.stop.cancelled() => {
                if let Some(pid) = child.id() {
                    crate::process::signal(pid, Signal::SIGTERM);
                }
                return None;
            }
        }
    };
    if ready {
        shared.lost_ready();
    }
    Some(End {
        was_ready: ready,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_the_new_one_is_private() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SOCKET_NAME), "stale").unwrap();
        let pool = WorkerPool::start(WorkerPoolConfig {
            workers: 1,
            python: dir.path().join("no-python"),
            dir: dir.path().to_path_buf(),
            job_env: vec![],
        })
        .unwrap();
        // No worker can start, so the socket stays unpublished, and private.
        assert!(!pool.socket().exists());
        let starting = dir.path().join(format!("{SOCKET_NAME}.starting"));
        let mode = std::fs::metadata(&starting).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(pool);
        assert!(!starting.exists());
    }

    /// The venv of scripts/setup-python.sh, when there is one.
    fn venv_python() -> Option<PathBuf> {
        let home = std::env::var_os("HOME")?;
        let python = PathBuf::from(home).join(".cache/dbt-remote/venv/bin/python");
        python.is_file().then_some(python)
    }

    /// Sends `line` with `fds` and reads the answer lines until the worker closes.
    fn ask(socket: &Path, line: &[u8], fds: &[RawFd]) -> Vec<serde_json::Value> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
        use std::io::{BufRead, IoSlice};
        let conn = std::os::unix::net::UnixStream::connect(socket).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let cmsgs: Vec<ControlMessage<'_>> = if fds.is_empty() {
            vec![]
        } else {
            vec![ControlMessage::ScmRights(fds)]
        };
        sendmsg::<UnixAddr>(
            conn.as_raw_fd(),
            &[IoSlice::new(line)],
            &cmsgs,
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        std::io::BufReader::new(conn)
            .lines()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_refuses_bad_requests_and_forks_good_ones() {
        let Some(python) = venv_python() else {
            eprintln!("skipped: no venv with dbt");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let pool = WorkerPool::start(WorkerPoolConfig {
            workers: 1,
            python,
            dir: dir.path().to_path_buf(),
            job_env: vec![],
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !pool.socket().exists() {
            assert!(Instant::now() < deadline, "no worker got ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let socket = pool.socket().to_path_buf();
        let (out_r, out_w) = std::io::pipe().unwrap();
        let fds = [out_w.as_raw_fd(), out_w.as_raw_fd()];
        let answers = tokio::task::spawn_blocking(move || {
            let bad: Vec<Vec<serde_json::Value>> = [
                (&b"not json\n"[..], &fds[..]),
                (
                    b"{\"argv\": [], \"cwd\": \"/\", \"env\": {}, \"kind\": \"dbt\"}\n",
                    &[],
                ),
                (
                    b"{\"argv\": [1], \"cwd\": \"/\", \"env\": {}, \"kind\": \"dbt\"}\n",
                    &fds,
                ),
                (
                    b"{\"argv\": [], \"cwd\": \"/\", \"env\": {}, \"kind\": \"sh\"}\n",
                    &fds,
                ),
            ]
            .into_iter()
            .map(|(line, fds)| ask(&socket, line, fds))
            .collect();
            let code =
                "import os, sys; print(sys.argv[1:], sorted(os.environ), os.getcwd()); sys.exit(7)";
            let good = serde_json::json!({
                "argv": ["a"], "cwd": "/tmp", "env": {"ONLY": "this"}, "kind": "python", "code": code,
            });
            let mut line = serde_json::to_vec(&good).unwrap();
            line.push(b'\n');
            (bad, ask(&socket, &line, &fds))
        });
        let (bad, good) = answers.await.unwrap();
        drop(out_w);
        for answer in &bad {
            assert_eq!(answer.len(), 1, "{answer:?}");
            assert!(answer[0]["error"].is_string(), "{answer:?}");
        }
        assert_eq!(good.len(), 2, "{good:?}");
        assert!(good[0]["pid"].as_u64().is_some_and(|p| p > 1), "{good:?}");
        assert_eq!(good[1], serde_json::json!({"exit": 7}));
        let mut out = String::new();
        std::io::Read::read_to_string(&mut { out_r }, &mut out).unwrap();
        assert_eq!(out.trim(), "['a'] ['ONLY'] /tmp");
        assert_eq!(pool.pids().len(), 1, "the worker lives on");
    }

    #[tokio::test]
    async fn a_python_without_dbt_is_not_started_again() {
        let Some(python) = ["/usr/bin/python3", "/usr/local/bin/python3"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| {
                std::process::Command::new(p)
                    .args(["-c", "import dbt"])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| !s.success())
            })
        else {
            eprintln!("skipped: no python3 without dbt");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let pool = WorkerPool::start(WorkerPoolConfig {
            workers: 1,
            python,
            dir: dir.path().to_path_buf(),
            job_env: vec![],
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while pool.started() == 0 || !pool.pids().is_empty() {
            assert!(Instant::now() < deadline, "the worker did not end");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A restart would come after the first backoff (1 s).
        tokio::time::sleep(FIRST_BACKOFF * 3).await;
        assert_eq!(pool.started(), 1);
        assert!(!pool.socket().exists());
    }
}

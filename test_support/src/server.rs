//! A real dbt-server for end-to-end tests: the binary, real job processes and real dbt on the
//! example project, on a free port of 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The dbt executable for end-to-end tests: `DBT_REMOTE_DBT_PATH`, else the venv that
/// scripts/setup-python.sh makes. Panics with what to do when there is none.
pub fn dbt_path() -> PathBuf {
    if let Some(p) = std::env::var_os("DBT_REMOTE_DBT_PATH") {
        return PathBuf::from(p);
    }
    let venv = std::env::var_os("DBT_REMOTE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/dbt-remote/venv")
        });
    let dbt = venv.join("bin/dbt");
    assert!(
        dbt.is_file(),
        "no dbt at {}: run scripts/setup-python.sh (or set DBT_REMOTE_DBT_PATH)",
        dbt.display()
    );
    dbt
}

/// The real dbt-server binary with real dbt, on a free port of 127.0.0.1, with its own state
/// dir; killed when dropped.
pub struct RealServer {
    pub url: String,
    pub dir: PathBuf,
    child: Child,
    _tmp: Option<tempfile::TempDir>,
}

impl RealServer {
    /// Starts `binary` (a dbt-server) over a new temp state dir.
    pub fn start(binary: &Path) -> RealServer {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut server = RealServer::start_in(binary, &dir, &[]);
        server._tmp = Some(tmp);
        server
    }

    /// Starts `binary` over the state in `dir` (a restart when one ran there before), with
    /// `extra` flags.
    pub fn start_in(binary: &Path, dir: &Path, extra: &[&str]) -> RealServer {
        RealServer::start_with_env(binary, dir, extra, &[] as &[(&str, &str)])
    }

    /// Like [`start_in`](Self::start_in), with `env` added to the server's environment (its
    /// job processes inherit it).
    pub fn start_with_env(
        binary: &Path,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, impl AsRef<std::ffi::OsStr>)],
    ) -> RealServer {
        let profiles = repo_root().join("examples/profiles");
        RealServer::spawn(binary, dir, extra, env, Some(&profiles))
    }

    /// Like [`start_with_env`](Self::start_with_env), without `--profiles-dir`: dbt's profiles
    /// are then the server user's `~/.dbt` (set `HOME` in `env`).
    pub fn start_without_profiles_dir(
        binary: &Path,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, impl AsRef<std::ffi::OsStr>)],
    ) -> RealServer {
        RealServer::spawn(binary, dir, extra, env, None)
    }

    fn spawn(
        binary: &Path,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, impl AsRef<std::ffi::OsStr>)],
        profiles_dir: Option<&Path>,
    ) -> RealServer {
        let profiles: Vec<&std::ffi::OsStr> = match profiles_dir {
            Some(p) => vec!["--profiles-dir".as_ref(), p.as_os_str()],
            None => vec![],
        };
        let mut child = Command::new(binary)
            .args(if extra.contains(&"--port") {
                &[][..]
            } else {
                &["--port", "0"][..]
            })
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--dbt")
            .arg(dbt_path())
            .args(profiles)
            .env_remove("DBT_PROFILES_DIR")
            .args(["--cancel-grace-seconds", "10"])
            .args(extra)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v.as_ref())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dbt-server starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[dbt-server] {line}");
                if !sent {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let url = rest.split_whitespace().next().unwrap_or_default();
                        let _ = tx.send(url.to_string());
                        sent = true;
                    }
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("dbt-server listens");
        RealServer {
            url,
            dir: dir.to_path_buf(),
            child,
            _tmp: None,
        }
    }

    /// Waits (at most 120 s) until the server's warm dbt workers are ready: the pool publishes
    /// `<state>/runs/dbt-worker.sock` once a worker has imported dbt. Jobs submitted before then
    /// run dbt afresh, so tests of the pool's path wait for it.
    pub fn wait_for_warm_workers(&self) {
        let socket = self.dir.join("state/runs/dbt-worker.sock");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "no warm dbt worker became ready within 120 s ({})",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server at once (SIGKILL), leaving its jobs running.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RealServer {
    fn drop(&mut self) {
        self.kill();
        // Kill job processes this server left (each leads its own process group).
        if let Ok(entries) = std::fs::read_dir(self.dir.join("state/runs")) {
            for e in entries.flatten() {
                if let Ok(pid) = std::fs::read_to_string(e.path()) {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(-pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
        }
    }
}

/// Waits until `f` gives `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Follows job `id` from its first record to its end, as `dbt-remote` does: its records with
/// the instant each arrived, and the final job. Panics if it does not end within `limit`.
pub async fn follow_to_end(
    client: &dbt_remote_core::Client,
    id: dbt_remote_core::JobId,
    limit: Duration,
) -> (
    Vec<(Instant, dbt_remote_core::LogRecord)>,
    dbt_remote_core::api::Job,
) {
    use futures::StreamExt;
    let mut records = Vec::new();
    let mut stream = std::pin::pin!(client.follow(id, 0));
    let deadline = Instant::now() + limit;
    loop {
        let event = tokio::time::timeout_at(deadline.into(), stream.next())
            .await
            .expect("the job ends in time")
            .expect("an end event before the stream ends");
        match event.unwrap() {
            dbt_remote_core::client::StreamEvent::Record(r) => records.push((Instant::now(), r)),
            dbt_remote_core::client::StreamEvent::End(job) => return (records, job),
        }
    }
}

/// Asserts that a job followed with [`follow_to_end`] succeeded with dbt's `Done. PASS=`, and
/// that its records came each once, in order, from 1.
pub fn assert_succeeded_in_order(
    records: &[(Instant, dbt_remote_core::LogRecord)],
    done: &dbt_remote_core::api::Job,
) {
    assert_eq!(
        done.status,
        dbt_remote_core::JobStatus::Succeeded,
        "{done:?}"
    );
    assert_eq!(done.exit_code, Some(0));
    let seqs: Vec<u64> = records.iter().map(|(_, r)| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "every record once, in order"
    );
    assert!(records
        .iter()
        .any(|(_, r)| r.entry.message.starts_with("Done. PASS=")));
}

/// Asserts that records followed with [`follow_to_end`] arrived while dbt ran, not only at
/// the end (`ended`): the first node started more than 2 s before.
pub fn assert_live(records: &[(Instant, dbt_remote_core::LogRecord)], ended: Instant) {
    let first_start = records
        .iter()
        .find(|(_, r)| {
            r.entry
                .node
                .as_ref()
                .is_some_and(|n| n.status.as_deref() == Some("started"))
        })
        .expect("a node start record");
    assert!(
        ended - first_start.0 > Duration::from_secs(2),
        "logs were not live"
    );
}

/// Pids of processes whose working directory is inside `dir`.
pub fn processes_in(dir: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) {
            if cwd.starts_with(dir) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// The example project.
pub fn example_project() -> PathBuf {
    repo_root().join("examples/jaffle_duckdb")
}

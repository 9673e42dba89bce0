//! Test harness: dbt-server in-process over the memory store, or the real binary with real dbt.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dbt_remote_core::testing::RecordingLauncher;
use dbt_remote_core::{JobService, MemoryStore, StateStore};
use dbt_server::Config;

/// dbt-server served in this process on 127.0.0.1, over a memory store and a launcher that
/// starts nothing; stopped when dropped.
pub struct InProcess {
    pub url: String,
    pub port: u16,
    pub store: Arc<dyn StateStore>,
    pub launcher: Arc<RecordingLauncher>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl InProcess {
    pub async fn start(max_upload_bytes: u64) -> InProcess {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let launcher = Arc::new(RecordingLauncher::new(store.clone()));
        let mut service = JobService::new(store.clone(), launcher.clone());
        service.log_poll = Duration::from_millis(20);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let config = Config {
            port,
            max_upload_bytes,
        };
        tokio::spawn(dbt_server::serve(listener, service, config, async {
            let _ = rx.await;
        }));
        InProcess {
            url: format!("http://127.0.0.1:{port}"),
            port,
            store,
            launcher,
            stop: Some(tx),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

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
    pub fn start() -> RealServer {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut server = RealServer::start_in(&dir, &[]);
        server._tmp = Some(tmp);
        server
    }

    /// Starts a server over the state in `dir` (a restart when one ran there before).
    pub fn start_in(dir: &Path, extra: &[&str]) -> RealServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dbt-server"))
            .args(["--port", "0", "--state-dir"])
            .arg(dir.join("state"))
            .arg("--dbt")
            .arg(dbt_path())
            .arg("--profiles-dir")
            .arg(repo_root().join("examples/profiles"))
            .args(["--cancel-grace-seconds", "10"])
            .args(extra)
            .env("RUST_LOG", "info")
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

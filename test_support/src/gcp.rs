//! The Firestore and Cloud Storage emulators, started by tests on free ports of 127.0.0.1 and
//! killed when dropped (features `testing` + `gcp`; docs/testing.md).
//!
//! `scripts/setup-emulators.sh` installs them. A test that finds one missing is skipped with a
//! `SKIPPED:` line on stderr, or fails when `DBT_REMOTE_REQUIRE_EMULATORS=1` (`scripts/test.sh`
//! sets it, so CI cannot skip them).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dbt_remote_core::env;
use dbt_remote_core::state::{GcpStore, GcpStoreBuilder};

/// The project the emulated Firestore database belongs to.
pub const PROJECT: &str = "dbt-remote-test";
/// The bucket the Cloud Storage emulator creates at start.
pub const BUCKET: &str = "dbt-remote-test";

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Both emulators, running; killed on drop.
#[derive(Debug)]
pub struct Emulators {
    firestore: Child,
    /// Closing it stops the Firestore launcher too, should this process die without dropping;
    /// [`drop_listen_streams`](Self::drop_listen_streams) writes to it.
    firestore_stdin: std::sync::Mutex<Option<ChildStdin>>,
    storage: Child,
    firestore_host: String,
    storage_host: String,
    listens: Arc<Listens>,
}

/// The Listen streams of the Firestore emulator, as its launcher prints them.
#[derive(Debug, Default)]
struct Listens {
    /// Open now.
    open: AtomicUsize,
    /// Opened since the start.
    opened: AtomicUsize,
}

fn home() -> PathBuf {
    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
}

fn path_from_env(name: &str, default: PathBuf) -> PathBuf {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or(default)
}

/// Skips the test (a visible `SKIPPED:` line), or fails it if emulators are required.
fn skip(test: &str, why: &str) -> Option<Emulators> {
    let message = format!(
        "{test}: {why}; install the emulators with scripts/setup-emulators.sh (scripts/test.sh does)"
    );
    if std::env::var(env::REQUIRE_EMULATORS).is_ok_and(|v| v == "1" || v == "true") {
        panic!("{message} ({} is set)", env::REQUIRE_EMULATORS);
    }
    // Straight to stderr: libtest would capture (and hide) `eprintln!` of a passing test.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {message}");
    None
}

/// A command whose process is killed when the thread that starts it ends (the test's thread),
/// so a test that is killed leaves no emulator behind.
fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    cmd
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

impl Emulators {
    /// Starts both emulators; `None` (after a `SKIPPED:` line naming `test`) when one is not
    /// installed. Panics when one is installed but does not start.
    pub async fn start(test: &str) -> Option<Emulators> {
        let gcs = path_from_env(
            env::GCS_EMULATOR,
            home().join(".cache/dbt-remote/emulators-venv/bin/gcp-storage-emulator"),
        );
        let launcher = path_from_env(
            env::FIRESTORE_EMULATOR,
            home().join(".cache/dbt-remote/firestore-emulator/start.js"),
        );
        if !gcs.is_file() {
            return skip(
                test,
                &format!("no Cloud Storage emulator at {}", gcs.display()),
            );
        }
        if !launcher.is_file() {
            return skip(
                test,
                &format!("no Firestore emulator at {}", launcher.display()),
            );
        }
        if Command::new("node").arg("--version").output().is_err() {
            return skip(
                test,
                "node is not on PATH (the Firestore emulator runs on Node.js)",
            );
        }

        let mut firestore = command("node")
            .arg(&launcher)
            .arg("0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting node {}: {e}", launcher.display()));
        let stdin = firestore.stdin.take();
        let stdout = firestore.stdout.take().expect("piped");
        // The launcher prints `listening on 127.0.0.1:PORT` once it accepts connections, then
        // `listens N` whenever the number of open Listen streams changes.
        let first_line = tokio::task::spawn_blocking(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            stdout.read_line(&mut line).map(|_| (line, stdout))
        });
        let listens = Arc::new(Listens::default());
        let line = match tokio::time::timeout(START_TIMEOUT, first_line).await {
            Ok(Ok(Ok((line, stdout)))) => {
                let listens = listens.clone();
                // Read to the end, so that the launcher never writes to a closed pipe.
                std::thread::spawn(move || {
                    for line in stdout.lines().map_while(std::result::Result::ok) {
                        if let Some(n) = line.strip_prefix("listens ") {
                            let open = n.trim().parse().unwrap_or(0);
                            let before = listens.open.swap(open, Ordering::SeqCst);
                            // Each stream is counted as it opens: one more at a time.
                            if open > before {
                                listens.opened.fetch_add(open - before, Ordering::SeqCst);
                            }
                        }
                    }
                });
                line
            }
            other => {
                kill(&mut firestore);
                panic!("the Firestore emulator did not start: {other:?}");
            }
        };
        let Some(firestore_host) = line.trim().strip_prefix("listening on ").map(str::to_owned)
        else {
            kill(&mut firestore);
            panic!("the Firestore emulator did not start: it printed {line:?}");
        };

        let (storage, storage_host) = match start_storage(&gcs).await {
            Ok(started) => started,
            Err(e) => {
                kill(&mut firestore);
                panic!("{e}");
            }
        };
        Some(Emulators {
            firestore,
            firestore_stdin: std::sync::Mutex::new(stdin),
            storage,
            firestore_host,
            storage_host,
            listens,
        })
    }

    /// Listen streams the Firestore emulator has open now, as its launcher reports them
    /// (shortly after a change).
    pub fn listen_streams(&self) -> usize {
        self.listens.open.load(Ordering::SeqCst)
    }

    /// Listen streams the Firestore emulator has opened since it started.
    pub fn listen_streams_opened(&self) -> usize {
        self.listens.opened.load(Ordering::SeqCst)
    }

    /// Makes the Firestore emulator end every open Listen stream with `UNAVAILABLE`, as
    /// Firestore may at any time.
    pub fn drop_listen_streams(&self) {
        let mut stdin = self.firestore_stdin.lock().unwrap();
        let stdin = stdin.as_mut().expect("the launcher's stdin");
        stdin
            .write_all(b"drop listens\n")
            .and_then(|()| stdin.flush())
            .expect("writing to the Firestore launcher");
    }

    /// `host:port` of the Firestore emulator.
    pub fn firestore_host(&self) -> &str {
        &self.firestore_host
    }

    /// `host:port` of the Cloud Storage emulator.
    pub fn storage_host(&self) -> &str {
        &self.storage_host
    }

    /// The environment that makes `GcpStore::builder().from_env()` (e.g. in a `dbt-server`
    /// child process) use these emulators, with the given collection prefix.
    pub fn env(&self, prefix: &str) -> Vec<(&'static str, String)> {
        vec![
            (env::FIRESTORE_EMULATOR_HOST, self.firestore_host.clone()),
            (env::STORAGE_EMULATOR_HOST, self.storage_host.clone()),
            (env::GCP_PROJECT, PROJECT.to_owned()),
            (env::GCS_BUCKET, BUCKET.to_owned()),
            (env::COLLECTION_PREFIX, prefix.to_owned()),
        ]
    }

    /// A builder for a store on these emulators, under a collection prefix of its own.
    pub fn store_builder(&self) -> GcpStoreBuilder {
        GcpStore::builder()
            .with_project(PROJECT)
            .with_bucket(BUCKET)
            .with_collection_prefix(unique_prefix())
            .with_firestore_emulator(&self.firestore_host)
            .with_storage_emulator(&self.storage_host)
    }

    /// A store on these emulators with the collection prefix `prefix`: another instance on the
    /// data of every store with that prefix, as the server and its job processes are.
    pub async fn store_on(&self, prefix: &str) -> GcpStore {
        self.store_builder()
            .with_collection_prefix(prefix)
            .build()
            .await
            .expect("a GCP store on the emulators")
    }

    /// A new, empty store on these emulators.
    pub async fn store(&self) -> Arc<GcpStore> {
        Arc::new(
            self.store_builder()
                .build()
                .await
                .expect("a GCP store on the emulators"),
        )
    }
}

/// A collection prefix no other store of this process uses.
pub fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}-{}-",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Starts the Cloud Storage emulator on a free port and waits until it serves its bucket. The
/// port is picked before the emulator binds it, so another process may take it in between:
/// then it tries another one.
async fn start_storage(gcs: &std::path::Path) -> Result<(Child, String), String> {
    let mut last_error = String::new();
    for _attempt in 0..3 {
        let port = free_port();
        let mut child = command(gcs)
            .args(["start", "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["--in-memory", "--quiet", "--default-bucket", BUCKET])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", gcs.display()))?;
        let host = format!("127.0.0.1:{port}");
        match wait_for_bucket(&mut child, &host).await {
            Ok(()) => return Ok((child, host)),
            Err(e) => {
                kill(&mut child);
                last_error = e;
            }
        }
    }
    Err(last_error)
}

/// Waits until the Cloud Storage emulator at `host` answers with its bucket.
async fn wait_for_bucket(child: &mut Child, host: &str) -> Result<(), String> {
    let url = format!("http://{host}/storage/v1/b/{BUCKET}");
    let client = reqwest::Client::new();
    let start = Instant::now();
    loop {
        if let Ok(response) = client.get(&url).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the Cloud Storage emulator on {host} exited: {status}"
            ));
        }
        if start.elapsed() > START_TIMEOUT {
            return Err(format!(
                "the Cloud Storage emulator did not answer on {url} within {START_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Drop for Emulators {
    fn drop(&mut self) {
        kill(&mut self.firestore);
        kill(&mut self.storage);
    }
}

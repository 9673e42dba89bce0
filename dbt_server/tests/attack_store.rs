//! Store faults and hostile inputs against real servers (docs/security/faults.md): a really
//! full file system (a 2 MiB tmpfs), held file locks, two servers on one state dir, damaged
//! files, tampered blobs, cron expressions that never fire, log caps, and paths a client sends
//! that the file system refuses.
//!
//! The in-process servers here serve `dbt_server::serve` on a real listener over a real
//! `LocalStore` (with a launcher that starts nothing); the others are the `dbt-server` binary
//! with real dbt.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use common::legacy::{overrides_with, post_form, stored_zip, Form};
use common::{dbt_path, repo_root, server_binary, RealServer};
use dbt_remote_core::package::{pack_project, ProjectFile};
use dbt_remote_core::schedule::{LocalSchedules, Schedule, ScheduleSpec};
use dbt_remote_core::testing::RecordingLauncher;
use dbt_remote_core::{
    BlobHash, Client, JobId, JobService, JobSpec, JobStatus, LocalStore, LogLevel, RelPath,
    StateStore,
};
use serde_json::Value;

const LIMIT: u64 = 1024 * 1024;

/// dbt-server in this process over a `LocalStore` and local schedules in a temp dir.
struct LocalServer {
    url: String,
    dir: tempfile::TempDir,
    store: Arc<dyn StateStore>,
    service: JobService,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl LocalServer {
    async fn start(lock_timeout: Duration) -> LocalServer {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalStore::new(dir.path().join("state")).unwrap();
        let store: Arc<dyn StateStore> = Arc::new(local.with_lock_timeout(lock_timeout));
        let launcher = Arc::new(RecordingLauncher::new(store.clone()));
        let schedules = LocalSchedules::new(dir.path().join("state/schedules")).unwrap();
        let service = JobService::new(store.clone(), launcher).with_schedules(Arc::new(schedules));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let config = dbt_server::Config::new(port, LIMIT);
        tokio::spawn(dbt_server::serve(
            listener,
            service.clone(),
            config,
            async {
                let _ = rx.await;
            },
        ));
        LocalServer {
            url: format!("http://127.0.0.1:{port}"),
            dir,
            store,
            service,
            _stop: tx,
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn job_dir(&self, id: JobId) -> PathBuf {
        self.state().join("jobs").join(id.to_string())
    }

    /// A queued `dbt build` job.
    async fn job(&self) -> JobId {
        let client = Client::new(&self.url).unwrap();
        client.submit(vec!["build".into()], &[]).await.unwrap().0.id
    }
}

/// The status and JSON body of `response`.
async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, body)
}

/// An error body's message (native or 0.4.6 shape), checked to leak no server path.
fn message(body: &Value) -> String {
    let message = body["error"]["message"]
        .as_str()
        .or(body["detail"].as_str())
        .unwrap_or_else(|| panic!("an error body: {body}"))
        .to_string();
    for leak in ["/tmp", "/root", "/work", "panicked", ".rs:"] {
        assert!(!message.contains(leak), "{message:?} leaks {leak:?}");
    }
    message
}

/// A 2 MiB tmpfs mounted in a temp dir, unmounted when dropped; `None` (the test then says it
/// is skipped) where this process may not mount.
struct SmallDisk {
    path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> Option<SmallDisk> {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("fs");
        std::fs::create_dir(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(&path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(SmallDisk { path, _tmp: tmp })
    }

    /// Fills the file system with `filler` until a write fails with ENOSPC.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 16 * 1024];
        loop {
            if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_all()) {
                assert_eq!(e.raw_os_error(), Some(nix::libc::ENOSPC), "{e}");
                return filler;
            }
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A small 0.4.6 `POST /dbt` form.
fn small_form() -> Form {
    Form {
        server_url: "http://x/".into(),
        user_command: "build --select some_model".into(),
        overrides: overrides_with("'target': 'dev'"),
        dbt_project: b"name: jaffle_duckdb\nprofile: jaffle_duckdb\nconfig-version: 2\n".to_vec(),
        profiles: b"jaffle_duckdb:\n  target: dev\n  outputs: {dev: {type: duckdb}}\n".to_vec(),
        packages: None,
        zipped_artifacts: stored_zip(&[("manifest.json", &[b'{'; 1][..])]),
    }
}

fn temp_files(state: &Path) -> Vec<String> {
    std::fs::read_dir(state.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn disk_full_is_507_on_both_protocols_and_leaves_no_temp_files() {
    let Some(disk) = SmallDisk::mount() else {
        eprintln!("skipped: cannot mount a tmpfs here (needs CAP_SYS_ADMIN)");
        return;
    };
    let server = RealServer::start_in(server_binary(), &disk.path, &[]);
    let http = reqwest::Client::new();
    let state = disk.path.join("state");
    let filler = disk.fill();
    let content: Vec<u8> = (0..64 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    let hash = BlobHash::of(&content);
    let put = || {
        http.put(format!("{}/api/v1/blobs/{hash}", server.url))
            .header("content-type", "application/octet-stream")
            .body(content.clone())
    };

    let (status, body) = answer(put().send().await.unwrap()).await;
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_storage");
    assert!(message(&body).contains("no space left"), "{body}");
    let (status, body) =
        answer(post_form(&format!("{}/dbt", server.url), &small_form().parts()).await).await;
    assert_eq!(status, 507, "0.4.6 protocol: {body}");
    assert!(message(&body).contains("insufficient storage"), "{body}");
    assert_eq!(
        temp_files(&state),
        Vec::<String>::new(),
        "no temp file is left"
    );
    let (status, _) = answer(
        http.get(format!("{}/api/v1/jobs", server.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "the server still answers");

    std::fs::remove_file(filler).unwrap();
    let response = put().send().await.unwrap();
    assert_eq!(response.status().as_u16(), 201, "works once space is freed");
    let client = Client::new(&server.url).unwrap();
    assert!(client.missing_blobs(&[hash]).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_job_lock_is_503_with_retry_after_then_works() {
    let s = LocalServer::start(Duration::from_secs(1)).await;
    let id = s.job().await;
    let held = std::fs::File::create(s.job_dir(id).join("job.lock")).unwrap();
    held.lock().unwrap();
    let cancel = format!("{}/api/v1/jobs/{id}/cancel", s.url);
    let http = reqwest::Client::new();

    let started = Instant::now();
    let response = http.post(&cancel).send().await.unwrap();
    let waited = started.elapsed();
    assert!(response.headers().contains_key("retry-after"));
    let (status, body) = answer(response).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(message(&body).contains("locked"), "{body}");
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    let (status, _) = answer(
        http.get(format!("{}/api/v1/jobs/{id}", s.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "reads take no lock and go on");

    drop(held);
    let (status, body) = answer(http.post(&cancel).send().await.unwrap()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "cancelled");
}

/// The `dbt-server` of `state` as a second server would be started: its exit status and stderr.
fn second_server(state: &Path) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(server_binary())
        .args(["--port", "0", "--state-dir"])
        .arg(state)
        .arg("--dbt")
        .arg(dbt_path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the second server did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

#[tokio::test]
async fn a_second_server_on_the_same_state_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut first = RealServer::start_in(server_binary(), tmp.path(), &[]);
    let (status, stderr) = second_server(&tmp.path().join("state"));
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("another dbt-server is already running on the state dir"),
        "{stderr}"
    );
    let client = Client::new(&first.url).unwrap();
    assert_eq!(
        client.health().await.unwrap().status,
        "ok",
        "the first keeps working"
    );
    // The lock dies with its holder, however it dies: a restart after a crash starts.
    first.kill();
    let again = RealServer::start_in(server_binary(), tmp.path(), &[]);
    let client = Client::new(&again.url).unwrap();
    assert_eq!(client.health().await.unwrap().status, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_records_and_logs_break_only_their_job() {
    let s = LocalServer::start(Duration::from_secs(1)).await;
    let (bad_record, bad_index, good) = (s.job().await, s.job().await, s.job().await);
    for id in [bad_record, bad_index, good] {
        common::log(&*s.store, id, LogLevel::Info, "a line").await;
    }
    std::fs::write(s.job_dir(bad_record).join("job.json"), b"{\"id\": \"01").unwrap();
    // An index entry that claims a terabyte: refused before anything is allocated.
    let mut entry = (1u64 << 40).to_le_bytes().to_vec();
    entry.extend_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(s.job_dir(bad_index).join("logs.idx"), entry).unwrap();
    let get = |path: String| async move { answer(reqwest::get(path).await.unwrap()).await };

    let (status, list) = get(format!("{}/api/v1/jobs", s.url)).await;
    assert_eq!(status, 200, "{list}");
    let ids: Vec<&str> = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [good.to_string(), bad_index.to_string()],
        "the damaged record is skipped"
    );
    let (status, body) = get(format!("{}/api/v1/jobs/{bad_record}", s.url)).await;
    assert_eq!(status, 500, "a damaged record is a server fault: {body}");
    assert_eq!(message(&body), "internal server error; see the server log");
    let (status, body) = get(format!("{}/api/v1/jobs/{bad_index}/logs", s.url)).await;
    assert_eq!(status, 500, "{body}");
    message(&body);
    let (status, _) = get(format!("{}/api/v1/jobs/{bad_index}", s.url)).await;
    assert_eq!(status, 200, "its record still reads");
    let (status, logs) = get(format!("{}/api/v1/jobs/{good}/logs", s.url)).await;
    assert_eq!(
        (status, logs["records"][0]["message"].as_str()),
        (200, Some("a line"))
    );
}

fn every_minute(name: &str) -> Schedule {
    Schedule::new(ScheduleSpec {
        name: Some(name.into()),
        cron: "* * * * *".into(),
        command: None,
        job: JobSpec {
            args: vec!["build".into()],
            ..Default::default()
        },
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_schedule_breaks_only_itself() {
    let s = LocalServer::start(Duration::from_secs(1)).await;
    for name in ["broken", "healthy"] {
        s.service
            .schedules()
            .create_schedule(&every_minute(name))
            .await
            .unwrap();
    }
    std::fs::write(s.state().join("schedules/broken.json"), b"{\"name\": \"bro").unwrap();

    let (status, list) = answer(reqwest::get(format!("{}/schedule", s.url)).await.unwrap()).await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&String> = list["schedules"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["healthy"]);
    let fired = s
        .service
        .run_due_schedules(Utc::now() + chrono::Duration::minutes(2))
        .await;
    assert_eq!(
        fired.unwrap().len(),
        1,
        "the scheduler fires the healthy one"
    );
}

#[tokio::test]
async fn cron_needs_five_fields_and_a_date_that_exists() {
    let s = common::InProcess::start(LIMIT).await;
    let url = format!("{}/schedule", s.url);
    for cron in [
        "0 0 8 * * *",
        "0 0 8 * * * 2030",
        "@daily",
        "0 0 30 2 *",
        "0 0 31 11 *",
    ] {
        let mut parts = small_form().parts();
        parts.push(("schedule", None, cron.as_bytes().to_vec()));
        let (status, body) = answer(post_form(&url, &parts).await).await;
        assert_eq!(status, 400, "{cron}: {body}");
        let message = message(&body);
        assert!(
            message.contains("five") || message.contains("never fires"),
            "{message}"
        );
    }
    let mut parts = small_form().parts();
    parts.push(("schedule", None, b"0 0 29 2 *".to_vec()));
    let (status, body) = answer(post_form(&url, &parts).await).await;
    assert_eq!(status, 201, "29 February exists: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_paths_a_client_gets_wrong_are_4xx() {
    let s = LocalServer::start(Duration::from_secs(1)).await;
    let id = s.job().await;
    let manifest = RelPath::new("manifest.json").unwrap();
    s.store
        .put_artifact(id, &manifest, Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let artifact = |name: &str| format!("{}/api/v1/jobs/{id}/artifacts/{name}", s.url);
    let long = "a".repeat(300);
    for (name, status) in [
        ("manifest.json/b", 404),
        (long.as_str(), 400),
        ("x/manifest.json", 404),
    ] {
        let (got, body) = answer(reqwest::get(artifact(name)).await.unwrap()).await;
        assert_eq!(got, status, "{name}: {body}");
        message(&body);
    }
    let huge = serde_json::json!({ "args": ["build", "x".repeat(LIMIT as usize)], "files": [] });
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs", s.url))
        .json(&huge)
        .send()
        .await
        .unwrap();
    let (status, body) = answer(response).await;
    assert_eq!(status, 413, "{body}");
}

/// The jaffle project's files.
fn jaffle() -> Vec<ProjectFile> {
    pack_project(&repo_root().join("examples/jaffle_duckdb")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_blob_fails_its_job_and_a_new_upload_repairs_it() {
    let server = RealServer::start(server_binary());
    let client = Client::new(&server.url).unwrap();
    let files = jaffle();
    for f in &files {
        client.put_blob(f.content.clone()).await.unwrap();
    }
    // A model: a tampered dbt_project.yml is already refused at submit, where its paths are
    // checked (and so is any file the submit reads).
    let project = files
        .iter()
        .find(|f| f.path.as_str() == "models/marts/orders.sql")
        .unwrap();
    let h = project.sha256.as_str();
    let stored = server.dir.join("state/blobs").join(&h[..2]).join(&h[2..]);
    std::fs::write(&stored, b"select 666 as evil\n").unwrap();

    let args = vec!["parse".to_string()];
    let (job, _) = client.submit(args.clone(), &files).await.unwrap();
    let failed = client
        .wait(job.id, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    let reason = failed.failure_reason.unwrap_or_default();
    assert!(
        reason.contains("damaged") && reason.contains("orders.sql"),
        "{reason}"
    );
    let missing = client
        .missing_blobs(std::slice::from_ref(&project.sha256))
        .await
        .unwrap();
    assert_eq!(
        missing,
        std::slice::from_ref(&project.sha256),
        "the client is asked for it again"
    );

    let (job, _) = client.submit(args, &files).await.unwrap();
    let done = client
        .wait(job.id, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(
        done.status,
        JobStatus::Succeeded,
        "repaired by the new upload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_log_cap_one_record_says_truncated_and_dbt_code_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let server = RealServer::start_in(server_binary(), tmp.path(), &["--max-log-records", "2"]);
    let client = Client::new(&server.url).unwrap();
    let (job, _) = client
        .submit(vec!["parse".into()], &jaffle())
        .await
        .unwrap();
    let done = client
        .wait(job.id, Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!(done.status, JobStatus::Succeeded);
    assert_eq!(done.exit_code, Some(0));
    let records = client.logs(job.id, 0, Some(1000)).await.unwrap().records;
    let truncated: Vec<_> = records
        .iter()
        .filter(|r| r.entry.message.contains("log truncated"))
        .collect();
    assert_eq!(truncated.len(), 1, "{records:#?}");
    let from_dbt = records
        .iter()
        .filter(|r| r.entry.source != "dbt-remote")
        .count();
    assert!(from_dbt <= 2, "{from_dbt} records of dbt kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_end_cannot_be_written_ends_once_space_is_freed() {
    let Some(disk) = SmallDisk::mount() else {
        eprintln!("skipped: cannot mount a tmpfs here (needs CAP_SYS_ADMIN)");
        return;
    };
    // dbt's work dir is elsewhere: only the state store runs out of space.
    let work = tempfile::tempdir().unwrap();
    let work_dir = work.path().to_str().unwrap();
    let server = RealServer::start_in(server_binary(), &disk.path, &["--work-dir", work_dir]);
    let client = Client::new(&server.url).unwrap();
    let (job, _) = client
        .submit(vec!["parse".into()], &jaffle())
        .await
        .unwrap();
    common::eventually(Duration::from_secs(20), "dbt starts", || async {
        let records = client.logs(job.id, 0, None).await.ok()?.records;
        let started = |r: &dbt_remote_core::LogRecord| r.entry.message.contains("running dbt");
        records.iter().any(started).then_some(())
    })
    .await;
    let filler = disk.fill();
    // The runner removes the work dir once dbt has ended, just before it writes the end,
    // which it cannot: it keeps trying.
    let work_dir = work.path().join(job.id.to_string());
    common::eventually(Duration::from_secs(60), "dbt ends", || async {
        (!work_dir.exists()).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stuck = client.job(job.id).await.unwrap();
    assert_eq!(stuck.status, JobStatus::Running, "{stuck:?}");

    std::fs::remove_file(filler).unwrap();
    let freed = Instant::now();
    let done = common::eventually(Duration::from_secs(15), "the job ends", || async {
        let job = client.job(job.id).await.ok()?;
        job.status.is_final().then_some(job)
    })
    .await;
    assert!(
        freed.elapsed() < Duration::from_secs(10),
        "{:?}",
        freed.elapsed()
    );
    let reason = done.failure_reason.unwrap_or_default();
    assert!(
        done.status == JobStatus::Succeeded || reason.contains("insufficient storage"),
        "{:?} {reason}",
        done.status
    );
    assert_eq!(temp_files(&disk.path.join("state")), Vec::<String>::new());
}

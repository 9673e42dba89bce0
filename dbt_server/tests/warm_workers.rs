//! Warm dbt workers end to end: the real dbt-server with its pool of Python workers that have
//! imported dbt, real job processes and real dbt on the example project (DuckDB). Needs the
//! venv of scripts/setup-python.sh.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{assert_succeeded_in_order, eventually, repo_root, RealServer};
use dbt_remote_core::api::Job;
use dbt_remote_core::package::{pack_project, ProjectFile};
use dbt_remote_core::paths::RelPath;
use dbt_remote_core::{Client, JobId, JobStatus, LogRecord};

const LONG: Duration = Duration::from_secs(180);
const WARM: &str = "dbt-remote: dbt runs in a warm worker (pid ";

fn example() -> PathBuf {
    repo_root().join("examples/jaffle_duckdb")
}

async fn submit_files(client: &Client, dbt_args: &[&str], files: &[ProjectFile]) -> Job {
    let args = dbt_args.iter().map(|s| s.to_string()).collect();
    client.submit(args, files).await.unwrap().0
}

async fn submit(client: &Client, dbt_args: &[&str]) -> Job {
    submit_files(client, dbt_args, &pack_project(&example()).unwrap()).await
}

async fn follow(client: &Client, id: JobId) -> (Vec<(Instant, LogRecord)>, Job) {
    common::follow_to_end(client, id, LONG).await
}

/// The pid of the warm worker's child that ran the job's dbt, from its debug record.
fn warm_pid(records: &[(Instant, LogRecord)]) -> Option<u32> {
    records.iter().find_map(|(_, r)| {
        let rest = r.entry.message.strip_prefix(WARM)?;
        rest.trim_end_matches(')').parse().ok()
    })
}

fn socket(server: &RealServer) -> PathBuf {
    server.dir.join("state/runs/dbt-worker.sock")
}

/// Waits until a worker is ready (the pool then publishes its socket).
async fn wait_for_workers(server: &RealServer) {
    let socket = socket(server);
    eventually(Duration::from_secs(120), "a ready warm worker", || async {
        socket.exists().then_some(())
    })
    .await;
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
}

/// Pids of the server's warm workers: its children running the worker's program.
fn workers_of(server_pid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let is_worker = String::from_utf8_lossy(&cmdline).contains("a warm dbt worker");
        if ppid == Some(server_pid) && is_worker {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_in_warm_workers_with_dbts_results() {
    let server = RealServer::start(common::server_binary());
    let client = Client::new(&server.url).unwrap();
    wait_for_workers(&server).await;
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(socket(&server)).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the socket is the server user's only");

    let job = submit(&client, &["build"]).await;
    let (records, done) = follow(&client, job.id).await;
    assert_succeeded_in_order(&records, &done);
    let first = warm_pid(&records).expect("the build ran in a warm worker");
    assert!(
        records
            .iter()
            .any(|(_, r)| r.entry.event.as_deref() == Some("LogModelResult")),
        "dbt's JSON lines became records"
    );

    let job = submit(
        &client,
        &[
            "run",
            "--select",
            "fail_on_demand",
            "--vars",
            "{fail: true}",
        ],
    )
    .await;
    let (records, done) = follow(&client, job.id).await;
    assert_eq!((done.status, done.exit_code), (JobStatus::Failed, Some(1)));
    assert_eq!(
        done.failure_reason.as_deref(),
        Some("dbt exited with code 1")
    );
    let second = warm_pid(&records).expect("the failing run ran in a warm worker");
    assert_ne!(first, second, "each run gets a fresh child");

    // dbt's own code 2 (invalid --vars) passes through too.
    let job = submit(&client, &["run", "--vars", "{not: [yaml"]).await;
    let (records, done) = follow(&client, job.id).await;
    assert_eq!((done.status, done.exit_code), (JobStatus::Failed, Some(2)));
    assert!(warm_pid(&records).is_some());
}

/// Submits a job whose slow model runs for `seconds` in a warm worker, and waits until that
/// model runs: the job and the warm child's pid.
async fn start_slow_warm_job(client: &Client, seconds: u32) -> (Job, u32) {
    let vars = format!("{{slow_seconds: {seconds}}}");
    let job = submit(client, &["run", "--select", "slow_model", "--vars", &vars]).await;
    let pid = eventually(LONG, "the slow model to start", || async {
        let page = client.logs(job.id, 0, None).await.unwrap();
        assert!(!page.status.is_final(), "job ended early: {page:?}");
        let records: Vec<_> = page
            .records
            .into_iter()
            .map(|r| (Instant::now(), r))
            .collect();
        let started = records.iter().any(|(_, r)| {
            r.entry.node.as_ref().is_some_and(|n| {
                n.unique_id == "model.jaffle_duckdb.slow_model"
                    && n.status.as_deref() == Some("started")
            })
        });
        warm_pid(&records).filter(|_| started)
    })
    .await;
    (job, pid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_warm_job_ends_cancelled_and_its_dbt_is_gone() {
    let server = RealServer::start(common::server_binary());
    let client = Client::new(&server.url).unwrap();
    wait_for_workers(&server).await;
    let (job, pid) = start_slow_warm_job(&client, 300).await;
    assert!(alive(pid), "the warm child runs dbt");
    let asked = Instant::now();
    client.cancel(job.id).await.unwrap();
    let (_, done) = follow(&client, job.id).await;
    assert_eq!(done.status, JobStatus::Cancelled, "{done:?}");
    assert!(asked.elapsed() < Duration::from_secs(60));
    eventually(
        Duration::from_secs(15),
        "the warm child to be gone",
        || async { (!alive(pid)).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_worker_dies_fails_with_the_reason_and_its_dbt_is_gone() {
    let server = RealServer::start(common::server_binary());
    let client = Client::new(&server.url).unwrap();
    wait_for_workers(&server).await;
    let (job, pid) = start_slow_warm_job(&client, 300).await;
    for worker in workers_of(server.pid()) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(worker as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    let (_, done) = follow(&client, job.id).await;
    assert_eq!(done.status, JobStatus::Failed, "{done:?}");
    let reason = done.failure_reason.unwrap_or_default();
    assert!(reason.contains("the warm dbt worker was lost"), "{reason}");
    eventually(
        Duration::from_secs(15),
        "the orphaned child to be gone",
        || async { (!alive(pid)).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_job_survives_a_restart_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = RealServer::start_in(common::server_binary(), dir.path(), &[]);
    let client = Client::new(&server.url).unwrap();
    wait_for_workers(&server).await;
    let (job, pid) = start_slow_warm_job(&client, 15).await;
    server.kill();
    let server = RealServer::start_in(common::server_binary(), dir.path(), &[]);
    let client = Client::new(&server.url).unwrap();
    let (records, done) = follow(&client, job.id).await;
    assert_succeeded_in_order(&records, &done);
    assert_eq!(warm_pid(&records), Some(pid));
}

/// A Python model that fails if an earlier job left its mark in the process, then leaves one
/// (an environment variable and a builtin): run twice in one reused process, it would fail.
const LEAKY_MODEL: &str = r#"
import builtins
import os


def model(dbt, session):
    dbt.config(materialized="table")
    found = [
        what
        for what, mark in (
            ("an environment variable", os.environ.get("DBT_REMOTE_LEAK_MARK")),
            ("a builtin", getattr(builtins, "dbt_remote_leak_mark", None)),
        )
        if mark
    ]
    if found:
        raise RuntimeError(f"an earlier job left {found} in this process")
    os.environ["DBT_REMOTE_LEAK_MARK"] = "left"
    builtins.dbt_remote_leak_mark = "left"
    return session.sql("select 1 as x")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_job_leaves_in_its_process_never_reaches_the_next() {
    let dir = tempfile::tempdir().unwrap();
    // One worker: every job is forked from the same process.
    let server = RealServer::start_in(common::server_binary(), dir.path(), &["--dbt-workers", "1"]);
    let client = Client::new(&server.url).unwrap();
    wait_for_workers(&server).await;
    let mut files = pack_project(&example()).unwrap();
    files.push(ProjectFile::new(
        RelPath::new("models/leaky.py").unwrap(),
        LEAKY_MODEL.as_bytes().to_vec().into(),
    ));
    let mut pids = Vec::new();
    for _ in 0..3 {
        let job = submit_files(&client, &["run", "--select", "leaky"], &files).await;
        let (records, done) = follow(&client, job.id).await;
        assert_succeeded_in_order(&records, &done);
        pids.push(warm_pid(&records).expect("the job ran in the warm worker"));
    }
    pids.dedup();
    assert_eq!(pids.len(), 3, "a fresh child each time: {pids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_succeed_when_the_workers_are_killed_and_the_pool_restarts_them() {
    let server = RealServer::start(common::server_binary());
    let client = Client::new(&server.url).unwrap();
    wait_for_workers(&server).await;
    let killed = workers_of(server.pid());
    assert_eq!(killed.len(), 2, "the default pool has 2 workers");
    for pid in &killed {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    // At once: dbt runs afresh (or in a worker started again meanwhile).
    let job = submit(&client, &["run", "--select", "slow_model"]).await;
    let (records, done) = follow(&client, job.id).await;
    assert_succeeded_in_order(&records, &done);

    // The pool starts new workers, and jobs run in them again.
    eventually(LONG, "new workers", || async {
        let now = workers_of(server.pid());
        (now.len() == 2 && now.iter().all(|p| !killed.contains(p))).then_some(())
    })
    .await;
    wait_for_workers(&server).await;
    let job = submit(&client, &["run", "--select", "slow_model"]).await;
    let (records, done) = follow(&client, job.id).await;
    assert_succeeded_in_order(&records, &done);
    assert!(warm_pid(&records).is_some(), "warm again after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_workers_dbt_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let server = RealServer::start_in(common::server_binary(), dir.path(), &["--dbt-workers", "0"]);
    let client = Client::new(&server.url).unwrap();
    let job = submit(&client, &["run", "--select", "slow_model"]).await;
    let (records, done) = follow(&client, job.id).await;
    assert_succeeded_in_order(&records, &done);
    assert_eq!(warm_pid(&records), None);
    assert!(!socket(&server).exists());
    assert!(workers_of(server.pid()).is_empty());
}

/// Prints how long a small job takes with and without warm workers (no assertion: the
/// machine's load decides the figures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_and_fresh_job_durations() {
    let mut figures = Vec::new();
    for workers in ["2", "0"] {
        let dir = tempfile::tempdir().unwrap();
        let server = RealServer::start_in(
            common::server_binary(),
            dir.path(),
            &["--dbt-workers", workers],
        );
        let client = Client::new(&server.url).unwrap();
        if workers != "0" {
            wait_for_workers(&server).await;
        }
        let mut times = Vec::new();
        for _ in 0..3 {
            let submitted = Instant::now();
            let job = submit(&client, &["run", "--select", "slow_model"]).await;
            let (records, done) = follow(&client, job.id).await;
            assert_succeeded_in_order(&records, &done);
            assert_eq!(warm_pid(&records).is_some(), workers != "0");
            times.push(submitted.elapsed().as_secs_f64());
            if std::env::var_os("WARM_DEBUG").is_some() {
                for (_, r) in &records {
                    eprintln!(
                        "{} {:?} {}",
                        r.entry.time.format("%H:%M:%S%.3f"),
                        r.entry.level,
                        r.entry.message.chars().take(100).collect::<String>()
                    );
                }
                eprintln!(
                    "created {} started {:?} finished {:?}",
                    done.created_at, done.started_at, done.finished_at
                );
            }
        }
        figures.push(format!("--dbt-workers {workers}: {times:.2?} s"));
    }
    eprintln!("job durations (submit to end): {}", figures.join("; "));
}

//! End to end on the local default: the real dbt-server binary, job processes and real dbt on
//! the example project (DuckDB). Needs the venv of scripts/setup-python.sh.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{
    assert_live, assert_succeeded_in_order, eventually, processes_in, repo_root, RealServer,
};
use dbt_remote_core::api::Job;
use dbt_remote_core::client::StreamEvent;
use dbt_remote_core::package::pack_project;
use dbt_remote_core::{Client, JobId, JobStatus, LogLevel, LogRecord};
use futures::StreamExt;

const LONG: Duration = Duration::from_secs(180);

fn example() -> PathBuf {
    repo_root().join("examples/jaffle_duckdb")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn submit(client: &Client, dbt_args: &[&str]) -> Job {
    let files = pack_project(&example()).unwrap();
    client.submit(args(dbt_args), &files).await.unwrap().0
}

/// Submits `dbt run --select {model} --vars {vars}` on the example project.
async fn submit_run(client: &Client, model: &str, vars: &str) -> Job {
    submit(client, &["run", "--select", model, "--vars", vars]).await
}

/// Follows a job to its end: its records with the instant each arrived, and the final job.
async fn follow(client: &Client, id: JobId) -> (Vec<(Instant, LogRecord)>, Job) {
    common::follow_to_end(client, id, LONG).await
}

/// Waits until the job's log shows the node `unique_id` started.
async fn wait_for_node_start(client: &Client, id: JobId, unique_id: &str) {
    eventually(LONG, &format!("{unique_id} to start"), || async {
        let page = client.logs(id, 0, None).await.unwrap();
        assert!(!page.status.is_final(), "job ended early: {page:?}");
        page.records
            .iter()
            .any(|r| {
                r.entry.node.as_ref().is_some_and(|n| {
                    n.unique_id == unique_id && n.status.as_deref() == Some("started")
                })
            })
            .then_some(())
    })
    .await
}

/// Submits a job whose slow model runs for minutes, and waits until that model runs.
async fn start_slow_job(client: &Client) -> Job {
    let job = submit_run(client, "slow_model", "{slow_seconds: 300}").await;
    wait_for_node_start(client, job.id, "model.jaffle_duckdb.slow_model").await;
    job
}

/// The pid of a job's process, from its runner lock under the server's dir.
fn runner_pid(dir: &std::path::Path, id: JobId) -> i32 {
    let lock = dir.join(format!("state/runs/{id}.lock"));
    std::fs::read_to_string(lock)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A real server whose warm dbt workers are ready (the default pool): the scenarios below run
/// dbt in warm workers; `job_scenarios_pass_with_the_pool_off` runs them with fresh processes.
fn warm_server() -> RealServer {
    let server = RealServer::start(common::server_binary());
    server.wait_for_warm_workers();
    server
}

const WARM: &str = "dbt-remote: dbt runs in a warm worker";

fn has_record(records: &[(Instant, LogRecord)], text: &str) -> bool {
    records.iter().any(|(_, r)| r.entry.message.contains(text))
}

fn work_dir(server: &RealServer, id: JobId) -> PathBuf {
    server.dir.join("work").join(id.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_succeeds_with_live_logs_and_artifacts() {
    let server = warm_server();
    let client = Client::new(&server.url).unwrap();
    let job = submit(&client, &["build", "--vars", "{slow_seconds: 3}"]).await;
    let (records, done) = follow(&client, job.id).await;
    let ended = Instant::now();

    assert_succeeded_in_order(&records, &done);
    assert!(
        has_record(&records, WARM),
        "dbt did not run in a warm worker"
    );
    assert!(done.started_at.is_some() && done.finished_at.is_some());
    // Logs arrive while dbt runs, not only at the end: the first node started seconds before.
    assert_live(&records, ended);
    let result = records
        .iter()
        .map(|(_, r)| r)
        .find(|r| {
            r.entry.event.as_deref() == Some("LogModelResult")
                && r.entry
                    .node
                    .as_ref()
                    .is_some_and(|n| n.unique_id == "model.jaffle_duckdb.orders")
        })
        .expect("orders model result");
    assert_eq!(
        result.entry.node.as_ref().unwrap().status.as_deref(),
        Some("success")
    );

    let names: Vec<String> = client
        .artifacts(job.id)
        .await
        .unwrap()
        .artifacts
        .into_iter()
        .map(|a| a.name.to_string())
        .collect();
    assert!(names.contains(&"manifest.json".to_string()), "{names:?}");
    let run_results: serde_json::Value =
        serde_json::from_slice(&client.artifact(job.id, "run_results.json").await.unwrap())
            .unwrap();
    assert!(run_results["results"].as_array().unwrap().len() >= 20);
    assert!(
        !work_dir(&server, job.id).exists(),
        "work dir removed after the job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_model_fails_with_dbts_exit_code() {
    let server = warm_server();
    let client = Client::new(&server.url).unwrap();
    let job = submit_run(&client, "fail_on_demand", "{fail: true}").await;
    let (records, done) = follow(&client, job.id).await;
    assert_eq!(done.status, JobStatus::Failed);
    assert_eq!(done.exit_code, Some(1));
    assert_eq!(
        done.failure_reason.as_deref(),
        Some("dbt exited with code 1")
    );
    assert!(records.iter().any(|(_, r)| r.entry.level == LogLevel::Error
        && r.entry
            .node
            .as_ref()
            .is_some_and(|n| n.unique_id == "model.jaffle_duckdb.fail_on_demand")));

    // A dbt error (invalid --vars) passes dbt's code 2 through.
    let job = submit(&client, &["run", "--vars", "{not: [yaml"]).await;
    let (_, done) = follow(&client, job.id).await;
    assert_eq!((done.status, done.exit_code), (JobStatus::Failed, Some(2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ends_cancelled_and_dbt_is_gone() {
    let server = warm_server();
    let client = Client::new(&server.url).unwrap();
    let job = start_slow_job(&client).await;
    let dir = work_dir(&server, job.id);
    assert!(!processes_in(&dir).is_empty(), "dbt runs in the work dir");
    assert!(
        dir.join("target").is_dir() && !dir.join("logs/dbt.log").exists(),
        "dbt writes no file log in a work dir that is not kept"
    );
    let asked = Instant::now();
    let answer = client.cancel(job.id).await.unwrap();
    assert!(answer.cancel_requested);
    let (_, done) = follow(&client, job.id).await;
    assert_eq!(done.status, JobStatus::Cancelled, "{done:?}");
    assert!(asked.elapsed() < Duration::from_secs(60));
    eventually(Duration::from_secs(15), "dbt to be gone", || async {
        processes_in(&dir).is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_job_process_ends_failed() {
    let server = warm_server();
    let client = Client::new(&server.url).unwrap();
    let job = start_slow_job(&client).await;
    let pid = runner_pid(&server.dir, job.id);
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (_, done) = follow(&client, job.id).await;
    assert!(killed.elapsed() < Duration::from_secs(60));
    assert_eq!(done.status, JobStatus::Failed);
    let reason = done.failure_reason.unwrap();
    assert!(reason.contains("signal 9"), "{reason}");
    let dir = work_dir(&server, job.id);
    eventually(Duration::from_secs(15), "dbt to be gone", || async {
        processes_in(&dir).is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_restart_mid_job_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = RealServer::start_in(common::server_binary(), tmp.path(), &[]);
    server.wait_for_warm_workers();
    let client = Client::new(&server.url).unwrap();
    let job = submit(&client, &["build", "--vars", "{slow_seconds: 8}"]).await;
    wait_for_node_start(&client, job.id, "model.jaffle_duckdb.slow_model").await;
    server.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let server = RealServer::start_in(common::server_binary(), tmp.path(), &[]);
    let client = Client::new(&server.url).unwrap();
    let (records, done) = follow(&client, job.id).await;
    // No record lost or repeated.
    assert_succeeded_in_order(&records, &done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_that_died_while_the_server_was_down_is_failed_at_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = RealServer::start_in(common::server_binary(), tmp.path(), &[]);
    server.wait_for_warm_workers();
    let client = Client::new(&server.url).unwrap();
    let job = start_slow_job(&client).await;
    server.kill();
    let pid = runner_pid(tmp.path(), job.id);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let server = RealServer::start_in(common::server_binary(), tmp.path(), &[]);
    let client = Client::new(&server.url).unwrap();
    let done = client.job(job.id).await.unwrap();
    assert_eq!(
        done.status,
        JobStatus::Failed,
        "found and finished at start: {done:?}"
    );
    assert!(done
        .failure_reason
        .unwrap()
        .contains("while the server was not running"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excess_jobs_wait_queued_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let server = RealServer::start_in(
        common::server_binary(),
        tmp.path(),
        &["--max-concurrent-jobs", "1"],
    );
    server.wait_for_warm_workers();
    let client = Client::new(&server.url).unwrap();
    let first = submit_run(&client, "slow_model", "{slow_seconds: 2}").await;
    let second = submit(&client, &["parse"]).await;
    let third = submit(&client, &["parse"]).await;
    wait_for_node_start(&client, first.id, "model.jaffle_duckdb.slow_model").await;
    assert_eq!(
        client.job(second.id).await.unwrap().status,
        JobStatus::Queued
    );
    let (_, a) = follow(&client, first.id).await;
    let (_, b) = follow(&client, second.id).await;
    let (_, c) = follow(&client, third.id).await;
    for job in [&a, &b, &c] {
        assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    }
    assert!(
        b.started_at.unwrap() >= a.finished_at.unwrap(),
        "one at a time"
    );
    assert!(c.started_at.unwrap() >= b.finished_at.unwrap(), "in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_are_installed_before_the_command() {
    let server = warm_server();
    let client = Client::new(&server.url).unwrap();
    // A copy of the example with a `local:` package inside it: packing sends the package's
    // files without any option (as the original dbt-remote needed --extra-packages for).
    let project = tempfile::tempdir().unwrap();
    let files = pack_project(&example()).unwrap();
    let own: Vec<(&str, &str)> = files
        .iter()
        .map(|f| (f.path.as_str(), std::str::from_utf8(&f.content).unwrap()))
        .collect();
    dbt_remote_test_support::files::write_files(project.path(), &own);
    dbt_remote_test_support::files::write_files(
        project.path(),
        &[
            ("packages.yml", "packages:\n  - local: local_pkgs/helpers\n"),
            (
                "local_pkgs/helpers/dbt_project.yml",
                "name: helpers\nversion: '1.0.0'\nconfig-version: 2\nmacro-paths: ['macros']\n",
            ),
            (
                "local_pkgs/helpers/macros/answer.sql",
                "{% macro answer() %}42{% endmacro %}\n",
            ),
            (
                "models/uses_package.sql",
                "select {{ helpers.answer() }} as answer\n",
            ),
        ],
    );
    let files = pack_project(project.path()).unwrap();
    assert!(files
        .iter()
        .any(|f| f.path.as_str() == "local_pkgs/helpers/macros/answer.sql"));
    let (job, _) = client
        .submit(args(&["run", "--select", "uses_package"]), &files)
        .await
        .unwrap();
    let (records, done) = follow(&client, job.id).await;
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    let messages: Vec<&str> = records
        .iter()
        .map(|(_, r)| r.entry.message.as_str())
        .collect();
    let deps = messages
        .iter()
        .position(|m| m.contains("installing packages"))
        .expect("deps ran");
    let run = messages
        .iter()
        .position(|m| m.contains("running dbt run"))
        .expect("run ran");
    assert!(deps < run, "deps first");
    assert!(messages
        .iter()
        .any(|m| m.contains("OK created") && m.contains("uses_package")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_reconnects_through_a_server_restart_without_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let port = port.to_string();
    let extra = ["--port", port.as_str()];
    let mut server = RealServer::start_in(common::server_binary(), tmp.path(), &extra);
    server.wait_for_warm_workers();
    let client = Client::new(&server.url).unwrap();
    let job = submit(&client, &["build", "--vars", "{slow_seconds: 6}"]).await;
    let mut stream = std::pin::pin!(client.follow(job.id, 0));
    let mut seqs = Vec::new();
    // Read a few records, then take the server away under the open stream.
    while seqs.len() < 3 {
        match stream.next().await.unwrap().unwrap() {
            StreamEvent::Record(r) => seqs.push(r.seq),
            StreamEvent::End(j) => panic!("ended early: {j:?}"),
        }
    }
    server.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _server = RealServer::start_in(common::server_binary(), tmp.path(), &extra);
    let done = loop {
        match tokio::time::timeout(LONG, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            StreamEvent::Record(r) => seqs.push(r.seq),
            StreamEvent::End(j) => break j,
        }
    };
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "no record lost or repeated"
    );
    let all = client.logs(job.id, 0, None).await.unwrap();
    assert_eq!(all.records.len(), seqs.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_scenarios_pass_with_the_pool_off() {
    let tmp = tempfile::tempdir().unwrap();
    let server = RealServer::start_in(common::server_binary(), tmp.path(), &["--dbt-workers", "0"]);
    let client = Client::new(&server.url).unwrap();
    // A build succeeds, every record once and in order, dbt started afresh.
    let job = submit(&client, &["build"]).await;
    let (records, done) = follow(&client, job.id).await;
    assert_succeeded_in_order(&records, &done);
    assert!(
        !has_record(&records, WARM),
        "a warm worker ran with --dbt-workers 0"
    );
    // dbt's exit codes pass through.
    let job = submit_run(&client, "fail_on_demand", "{fail: true}").await;
    let (_, done) = follow(&client, job.id).await;
    assert_eq!((done.status, done.exit_code), (JobStatus::Failed, Some(1)));
    // A cancel interrupts dbt, which is gone afterwards.
    let job = start_slow_job(&client).await;
    let dir = work_dir(&server, job.id);
    client.cancel(job.id).await.unwrap();
    let (_, done) = follow(&client, job.id).await;
    assert_eq!(done.status, JobStatus::Cancelled, "{done:?}");
    eventually(Duration::from_secs(15), "dbt to be gone", || async {
        processes_in(&dir).is_empty().then_some(())
    })
    .await;
    assert!(!server.dir.join("state/runs/dbt-worker.sock").exists());
}

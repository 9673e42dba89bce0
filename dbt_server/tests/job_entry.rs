//! The job entry point as a Cloud Run Job runs it: `dbt-server run-job` with the job id in
//! `DBT_REMOTE_JOB_ID` (no argument) and `CLOUD_RUN_JOB` set, so each log record is also a
//! Cloud Logging JSON line on stdout. Real dbt on the example project.

mod common;

use std::process::Command;
use std::sync::Arc;

use common::{dbt_path, repo_root, server_binary};
use dbt_remote_core::package::pack_project;
use dbt_remote_core::{
    FileEntry, JobRecord, JobSpec, JobStatus, LocalStore, StateStore, StateStoreExt,
};
use serde_json::Value;

#[tokio::test]
async fn a_cloud_run_job_execution_runs_the_job_of_its_env_and_logs_json_to_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let store: Arc<dyn StateStore> = Arc::new(LocalStore::new(&state).unwrap());
    let mut files = Vec::new();
    for f in pack_project(&repo_root().join("examples/jaffle_duckdb")).unwrap() {
        store.put_blob(&f.sha256, f.content.clone()).await.unwrap();
        files.push(FileEntry {
            path: f.path.clone(),
            sha256: f.sha256.clone(),
        });
    }
    let spec = JobSpec {
        args: vec!["seed".into()],
        files,
        ..Default::default()
    };
    let job = store.create_job(&JobRecord::new(spec)).await.unwrap();

    let out = Command::new(server_binary())
        .arg("run-job")
        .args(["--state-dir".as_ref(), state.as_os_str()])
        .args(["--work-dir".as_ref(), tmp.path().join("work").as_os_str()])
        .args(["--dbt".as_ref(), dbt_path().as_os_str()])
        .args([
            "--profiles-dir".as_ref(),
            repo_root().join("examples/profiles").as_os_str(),
        ])
        .env("DBT_REMOTE_JOB_ID", job.id.to_string())
        .env("CLOUD_RUN_JOB", "dbt-server-job")
        .env_remove("DBT_REMOTE_LOG_JSON")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run-job failed: {stderr}");

    let ended = store.get_job(job.id).await.unwrap();
    assert_eq!(ended.status, JobStatus::Succeeded, "{stderr}");
    let stored = store.read_all_logs(job.id, 0).await.unwrap();
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(
        lines.len(),
        stored.len(),
        "one stdout line per stored record"
    );
    for (line, record) in lines.iter().zip(&stored) {
        assert_eq!(line["seq"], record.seq);
        assert_eq!(line["message"], record.entry.message.as_str());
        assert_eq!(
            line["logging.googleapis.com/labels"]["dbt_remote_job_id"],
            job.id.to_string()
        );
        let severity = line["severity"].as_str().unwrap();
        assert!(
            ["DEBUG", "INFO", "WARNING", "ERROR"].contains(&severity),
            "{line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("loaded seed file")),
        "{lines:#?}"
    );
}

#[tokio::test]
async fn run_job_without_an_id_says_which_variable_to_set() {
    let out = Command::new(server_binary())
        .arg("run-job")
        .env_remove("DBT_REMOTE_JOB_ID")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("DBT_REMOTE_JOB_ID") || stderr.contains("<JOB_ID>"),
        "{stderr}"
    );
}

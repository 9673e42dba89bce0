//! The Cloud Run launcher against a fake Cloud Run Admin API on 127.0.0.1: each request's
//! method, path and JSON body is checked against the REST shapes of the API (v2).
#![cfg(feature = "gcp")]

mod cloud_run_api;

use std::sync::Arc;
use std::time::Duration;

use dbt_remote_core::launcher::cloud_run::CloudRunLauncher;
use dbt_remote_core::{
    JobId, JobLauncher, JobLifecycle, JobStatus, MemoryStore, StateStore, StateStoreExt,
};
use dbt_remote_test_support::text::assert_contains;
use serde_json::{json, Value};
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use cloud_run_api::*;

#[tokio::test]
async fn launch_runs_one_execution_per_job_on_one_job_definition() {
    let (server, store) = api_and_store().await;
    let ids = jobs_to_run(&server, &store, 2).await;
    let (a, b) = (ids[0], ids[1]);
    mount_execution(&server, 1, running()).await;
    mount_execution(&server, 2, running()).await;
    let launcher = launcher(&server, store.clone()).await;
    assert_eq!(launcher.job(), JOB);

    launcher.launch(a).await.unwrap();
    launcher.launch(a).await.unwrap(); // launching twice runs once
    launcher.launch(b).await.unwrap();

    for (id, n) in [(a, 1), (b, 2)] {
        let job = store.get_job(id).await.unwrap();
        assert_eq!(job.status, JobStatus::Running);
        assert_eq!(job.execution.as_deref(), Some(execution_name(n).as_str()));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(store.get_job(a).await.unwrap().status, JobStatus::Running);
    // Dropping the server checks every `expect`: one GET and one create of the job, one run each.
}

#[tokio::test]
async fn a_drifted_job_definition_is_updated_and_a_current_one_is_not() {
    let (server, store) = api_and_store().await;
    let mut old = template();
    old["template"]["template"]["containers"][0]["image"] = json!("old-image:0");
    mount_existing_job(&server, old).await;
    let mut wanted = template();
    wanted["name"] = json!(JOB);
    Mock::given(method("PATCH"))
        .and(path(format!("/v2/{JOB}")))
        .and(body_partial_json(wanted))
        .respond_with(done_operation("update", "Job", json!({"name": JOB})))
        .expect(1)
        .mount(&server)
        .await;
    launch_as_execution_1(&server, &store).await;
    server.verify().await;

    // A job that matches the settings is used as it is.
    let server = MockServer::start().await;
    mount_existing_job(&server, template()).await;
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    launch_as_execution_1(&server, &store).await;
}

#[tokio::test]
async fn a_creation_that_is_not_done_at_once_is_polled_until_done() {
    let (server, store) = api_and_store().await;
    get_job()
        .respond_with(google_error(404, "NOT_FOUND", "Job not found."))
        .expect(1)
        .mount(&server)
        .await;
    create_job()
        .respond_with(pending_operation("create-slow"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/{PARENT}/operations/create-slow")))
        .respond_with(done_operation("create-slow", "Job", json!({"name": JOB})))
        .expect(1..)
        .mount(&server)
        .await;
    let id = launch_as_execution_1(&server, &store).await;
    assert_eq!(store.get_job(id).await.unwrap().status, JobStatus::Running);
}

#[tokio::test]
async fn cancel_cancels_the_execution_and_the_job_ends_cancelled() {
    let (server, store) = api_and_store().await;
    let id = jobs_to_run(&server, &store, 1).await[0];
    // Running until cancelled, then cancelled.
    Mock::given(method("GET"))
        .and(path(format!("/v2/{}", execution_name(1))))
        .respond_with(ResponseTemplate::new(200).set_body_json(running()))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    // `cancel` cancels the execution; the owner's watcher, which sees the request at its next
    // poll while the execution still runs, may cancel it once more (idempotent, and what a
    // cancel received by another instance relies on). Never more than that.
    Mock::given(method("POST"))
        .and(path(format!("/v2/{}:cancel", execution_name(1))))
        .respond_with(pending_operation("cancel-1"))
        .expect(1..=2)
        .mount(&server)
        .await;
    let launcher = launcher(&server, store.clone()).await;
    launcher.launch(id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;

    let job = launcher.cancel(id).await.unwrap();
    assert_eq!(job.status, JobStatus::Running);
    assert!(job.cancel_requested);
    let conditions = json!([{
        "type": "Completed",
        "state": "CONDITION_FAILED",
        "executionReason": "CANCELLED",
        "message": "The execution was cancelled."
    }]);
    let cancelled = ended("2026-11-25T10:00:00Z", "cancelledCount", conditions);
    mount_execution(&server, 1, cancelled).await;
    let job = wait_final(&store, id).await;
    assert_eq!(job.status, JobStatus::Cancelled);
}

#[tokio::test]
async fn a_queued_job_is_cancelled_in_the_store_without_any_request() {
    let (server, store) = api_and_store().await;
    let id = queued_job(&store).await;
    let job = launcher(&server, store.clone())
        .await
        .cancel(id)
        .await
        .unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_execution_fails_the_job_with_the_reason() {
    let (server, store) = api_and_store().await;
    let ids = jobs_to_run(&server, &store, 2).await;
    let (exited, timed_out) = (ids[0], ids[1]);
    let exited_state = json!([
        {"type": "ResourcesAvailable", "state": "CONDITION_SUCCEEDED"},
        {
            "type": "Completed",
            "state": "CONDITION_FAILED",
            "executionReason": "NON_ZERO_EXIT_CODE",
            "message": "Task dbt-server-job-exec1-task0 failed with message: The container exited with an error."
        }
    ]);
    let timed_out_state = json!([{
        "type": "Completed",
        "state": 3,
        "message": "Task dbt-server-job-exec2-task0 failed with message: The configured timeout was reached."
    }]);
    for (n, at, conditions) in [
        (1, "2026-11-25T10:00:00Z", exited_state),
        (2, "2026-11-25T10:30:00Z", timed_out_state),
    ] {
        mount_execution(&server, n, ended(at, "failedCount", conditions)).await;
    }
    let launcher = launcher(&server, store.clone()).await;
    launcher.launch(exited).await.unwrap();
    launcher.launch(timed_out).await.unwrap();

    let reason = failure_reason(&store, exited).await;
    assert_contains(
        &reason,
        &[
            "dbt-server-job-exec1 failed: its container exited with a non-zero code",
            "The container exited with an error",
        ],
    );
    let logs = store.read_all_logs(exited, 0).await.unwrap();
    assert!(logs.last().unwrap().entry.message.contains(&reason));

    let reason = failure_reason(&store, timed_out).await;
    let expected = [
        "dbt-server-job-exec2 failed",
        "The configured timeout was reached",
    ];
    assert_contains(&reason, &expected);
}

#[tokio::test]
async fn a_job_the_runner_finished_keeps_its_status_when_the_execution_ends() {
    let (server, store) = api_and_store().await;
    let id = jobs_to_run(&server, &store, 1).await[0];
    let launcher = launcher(&server, store.clone()).await;
    launcher.launch(id).await.unwrap();
    // The runner in the execution finishes the job (dbt exited 1), then the execution fails.
    store
        .finish_job(id, JobStatus::Failed, Some(1), None)
        .await
        .unwrap();
    let conditions = json!([{"type": "Completed", "state": "CONDITION_FAILED", "executionReason": "NON_ZERO_EXIT_CODE"}]);
    let failed = ended("2026-11-25T10:00:00Z", "failedCount", conditions);
    mount_execution(&server, 1, failed).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let job = store.get_job(id).await.unwrap();
    assert_eq!(job.exit_code, Some(1));
    assert_eq!(job.failure_reason, None);
}

/// `GET /v2/{job}/executions` answering `executions` (one page).
async fn mount_executions_list(server: &MockServer, executions: Value) {
    Mock::given(method("GET"))
        .and(path(format!("/v2/{JOB}/executions")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"executions": executions})))
        .mount(server)
        .await;
}

/// An execution, as `GET /v2/{job}/executions` lists it, started for dbt job `id`.
fn listed_execution(n: u32, id: JobId) -> Value {
    json!({
        "name": execution_name(n),
        "template": {"containers": [{
            "name": "dbt-server",
            "args": ["run-job", id.to_string()],
            "env": [{"name": "DBT_REMOTE_JOB_ID", "value": id.to_string()}]
        }]}
    })
}

#[tokio::test]
async fn recover_watches_running_executions_and_launches_queued_jobs() {
    let (server, store) = api_and_store().await;
    mount_job_creation(&server).await;
    // A job running before the restart, whose execution has since failed.
    let running_id = queued_job(&store).await;
    store.start_job(running_id).await.unwrap();
    store
        .modify_job(running_id, |job| {
            job.execution = Some(execution_name(7));
            dbt_remote_core::state::Modify::Write
        })
        .await
        .unwrap();
    let conditions = json!([{"type": "Completed", "state": "CONDITION_FAILED", "message": "Task was killed: out of memory."}]);
    let failed = ended("2026-11-25T10:00:00Z", "failedCount", conditions);
    mount_execution(&server, 7, failed).await;
    // A running job without an execution and no live lease: its server died before starting
    // it, and Cloud Run lists no execution for it (only one of another job): it runs once.
    let lost = queued_job(&store).await;
    store.start_job(lost).await.unwrap();
    mount_executions_list(&server, json!([listed_execution(9, JobId::new())])).await;
    mount_run(&server, lost, 2).await;
    mount_execution(&server, 2, running()).await;
    let queued = queued_job(&store).await;
    mount_run(&server, queued, 1).await;
    mount_execution(&server, 1, running()).await;

    launcher(&server, store.clone())
        .await
        .recover()
        .await
        .unwrap();

    let reason = failure_reason(&store, running_id).await;
    assert!(reason.contains("out of memory"));
    let job = store.get_job(lost).await.unwrap();
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.execution.as_deref(), Some(execution_name(2).as_str()));
    let job = store.get_job(queued).await.unwrap();
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.execution.as_deref(), Some(execution_name(1).as_str()));
}

#[tokio::test]
async fn a_taken_over_job_adopts_the_execution_started_for_it_without_running_another() {
    let (server, store) = api_and_store().await;
    mount_job_creation(&server).await;
    // Its server died inside `RunJob`: the execution exists, the record does not name it.
    let lost = queued_job(&store).await;
    store.start_job(lost).await.unwrap();
    mount_executions_list(
        &server,
        json!([listed_execution(4, JobId::new()), listed_execution(5, lost)]),
    )
    .await;
    Mock::given(method("POST"))
        .and(path(format!("/v2/{JOB}:run")))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;
    mount_execution(&server, 5, running()).await;

    launcher(&server, store.clone())
        .await
        .recover()
        .await
        .unwrap();

    let job = store.get_job(lost).await.unwrap();
    assert_eq!(job.status, JobStatus::Running);
    assert_eq!(job.execution.as_deref(), Some(execution_name(5).as_str()));
}

#[tokio::test]
async fn a_job_another_launcher_holds_is_left_to_it_and_its_cancel_reaches_the_execution() {
    let (server, store) = api_and_store().await;
    mount_job_creation(&server).await;
    let id = queued_job(&store).await;
    mount_run(&server, id, 1).await;
    mount_execution(&server, 1, running()).await;
    let owner = launcher(&server, store.clone()).await;
    owner.launch(id).await.unwrap();
    // A second instance on the same store: recover and launch leave the held job alone
    // (`:run` is expected once), and its cancel cancels the owner's execution.
    let other = launcher(&server, store.clone()).await;
    other.recover().await.unwrap();
    other.launch(id).await.unwrap();
    Mock::given(method("POST"))
        .and(path(format!("/v2/{}:cancel", execution_name(1))))
        .respond_with(done_operation(
            "cancel",
            "Execution",
            json!({"name": execution_name(1)}),
        ))
        .expect(1..)
        .mount(&server)
        .await;
    let job = other.cancel(id).await.unwrap();
    assert!(job.cancel_requested);
    let job = store.get_job(id).await.unwrap();
    assert_eq!(job.execution.as_deref(), Some(execution_name(1).as_str()));
}

#[tokio::test]
async fn permission_denied_names_the_roles_the_server_needs() {
    let denied = "Permission 'run.jobs.get' denied on resource 'projects/p/locations/europe-west1/jobs/dbt-server-job' (or resource may not exist).";
    let refusals = vec![(get_job(), 403, "PERMISSION_DENIED", denied)];
    let expected = [
        "permission denied reading Cloud Run job",
        "roles/run.developer",
        "iam.serviceAccounts.actAs",
        "Permission 'run.jobs.get' denied",
    ];
    let reason = assert_launch_refused(refusals, &expected).await;
    assert!(reason.unwrap().contains("roles/run.developer"));
}

#[tokio::test]
async fn an_unknown_location_is_a_clear_not_found() {
    let unknown = "Location europe-west1 not found for project p.";
    let refusals = vec![
        (get_job(), 404, "NOT_FOUND", "Job not found."),
        (create_job(), 404, "NOT_FOUND", unknown),
    ];
    let expected = [
        "not found creating Cloud Run job",
        "check the project and the region",
        "DBT_REMOTE_CLOUD_RUN_REGION",
    ];
    assert_launch_refused(refusals, &expected).await;
}

#[tokio::test]
async fn settings_are_checked_in_build() {
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let base = || {
        CloudRunLauncher::builder()
            .with_project("p")
            .with_region("europe-west1")
            .with_image(IMAGE)
            .with_endpoint("http://127.0.0.1:9")
            .with_anonymous_credentials()
    };
    base().build(store.clone()).await.unwrap();
    let err = |b: dbt_remote_core::launcher::CloudRunLauncherBuilder| {
        let store = store.clone();
        async move { b.build(store).await.unwrap_err().to_string() }
    };
    let e = err(base().with_region("EU")).await;
    assert!(
        e.contains("`EU` is a BigQuery multi-region, not a Cloud Run region"),
        "{e}"
    );
    let e = err(CloudRunLauncher::builder()
        .with_region("europe-west1")
        .with_image(IMAGE))
    .await;
    assert!(e.contains("DBT_REMOTE_GCP_PROJECT"), "{e}");
    let e = err(CloudRunLauncher::builder()
        .with_project("p")
        .with_region("europe-west1"))
    .await;
    assert!(e.contains("DBT_REMOTE_CLOUD_RUN_IMAGE"), "{e}");
    let e = err(base().with_job_name("Dbt_Job")).await;
    assert!(e.contains("job name"), "{e}");
    let e = err(base().with_task_timeout(Duration::ZERO)).await;
    assert!(e.contains("timeout"), "{e}");
}

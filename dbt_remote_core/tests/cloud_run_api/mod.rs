//! The fake Cloud Run Admin API (v2) of the Cloud Run launcher's tests: its REST shapes, and
//! launchers and jobs to run against it. Each test file uses part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use dbt_remote_core::launcher::cloud_run::CloudRunLauncher;
use dbt_remote_core::launcher::CloudRunLauncherBuilder;
use dbt_remote_core::testing::sample_job;
use dbt_remote_core::{JobId, JobLauncher, JobStatus, MemoryStore, StateStore};
use dbt_remote_test_support::text::assert_contains;
use serde_json::{json, Value};
use wiremock::matchers::{body_partial_json, method, path, query_param};
use wiremock::{Mock, MockBuilder, MockServer, ResponseTemplate};

pub const PARENT: &str = "projects/p/locations/europe-west1";
pub const JOB: &str = "projects/p/locations/europe-west1/jobs/dbt-server-job";
pub const IMAGE: &str = "europe-docker.pkg.dev/p/dbt/dbt-server:1";
pub const RUNNER: &str = "dbt-runner@p.iam.gserviceaccount.com";

/// A launcher builder with the settings every test shares, talking to the fake API `server`.
pub fn builder(server: &MockServer) -> CloudRunLauncherBuilder {
    CloudRunLauncher::builder()
        .with_project("p")
        .with_region("europe-west1")
        .with_image(IMAGE)
        .with_service_account(RUNNER)
        .with_task_timeout(Duration::from_secs(1800))
        .with_env("DBT_REMOTE_STATE", "gcp")
        .with_poll_interval(Duration::from_millis(50))
        .with_endpoint(server.uri())
        .with_anonymous_credentials()
}

/// The launcher of most tests: the shared settings, 2 CPUs and 4 GiB.
pub async fn launcher(server: &MockServer, store: Arc<dyn StateStore>) -> CloudRunLauncher {
    builder(server)
        .with_cpu("2")
        .with_memory("4Gi")
        .build(store)
        .await
        .unwrap()
}

/// A fake Cloud Run Admin API and an empty memory store.
pub async fn api_and_store() -> (MockServer, Arc<dyn StateStore>) {
    (MockServer::start().await, Arc::new(MemoryStore::new()))
}

pub fn google_error(code: u16, status: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({
        "error": {"code": code, "message": message, "status": status}
    }))
}

/// The job template the launcher must ask for, as the REST API spells it.
pub fn template() -> Value {
    json!({
        "labels": {"dbt-remote": "job-runner"},
        "template": {
            "taskCount": 1,
            "template": {
                "containers": [{
                    "name": "dbt-server",
                    "image": IMAGE,
                    "env": [{"name": "DBT_REMOTE_STATE", "value": "gcp"}],
                    "resources": {"limits": {"cpu": "2", "memory": "4Gi"}}
                }],
                "timeout": "1800s",
                "serviceAccount": RUNNER,
                "maxRetries": 0
            }
        }
    })
}

pub fn done_operation(name: &str, type_name: &str, response: Value) -> ResponseTemplate {
    let mut response = response;
    response["@type"] = json!(format!(
        "type.googleapis.com/google.cloud.run.v2.{type_name}"
    ));
    ResponseTemplate::new(200).set_body_json(json!({
        "name": format!("{PARENT}/operations/{name}"),
        "done": true,
        "response": response
    }))
}

/// An operation `name` that is not done yet.
pub fn pending_operation(name: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "name": format!("{PARENT}/operations/{name}"),
        "done": false
    }))
}

pub fn execution_name(n: u32) -> String {
    format!("{JOB}/executions/dbt-server-job-exec{n}")
}

/// A missing job (GET 404, once) and its creation (expected once).
pub async fn mount_job_creation(server: &MockServer) {
    get_job()
        .respond_with(google_error(
            404,
            "NOT_FOUND",
            "Resource 'dbt-server-job' of kind 'JOB' does not exist.",
        ))
        .up_to_n_times(1)
        .expect(1)
        .mount(server)
        .await;
    create_job()
        .and(body_partial_json(template()))
        .respond_with(done_operation("create", "Job", json!({"name": JOB})))
        .expect(1)
        .mount(server)
        .await;
}

/// `GET /v2/{job}`.
pub fn get_job() -> MockBuilder {
    Mock::given(method("GET")).and(path(format!("/v2/{JOB}")))
}

/// `POST /v2/{parent}/jobs?jobId=dbt-server-job`.
pub fn create_job() -> MockBuilder {
    Mock::given(method("POST"))
        .and(path(format!("/v2/{PARENT}/jobs")))
        .and(query_param("jobId", "dbt-server-job"))
}

/// An existing job definition: `GET /v2/{job}` answers `definition` (named), once.
pub async fn mount_existing_job(server: &MockServer, definition: Value) {
    let mut definition = definition;
    definition["name"] = json!(JOB);
    get_job()
        .respond_with(ResponseTemplate::new(200).set_body_json(definition))
        .expect(1)
        .mount(server)
        .await;
}

/// `POST /v2/{job}:run` for dbt job `id`, answering an operation on execution `n`.
pub async fn mount_run(server: &MockServer, id: JobId, n: u32) {
    Mock::given(method("POST"))
        .and(path(format!("/v2/{JOB}:run")))
        .and(body_partial_json(json!({
            "overrides": {
                "containerOverrides": [{
                    "name": "dbt-server",
                    "args": ["run-job", id.to_string()],
                    "env": [{"name": "DBT_REMOTE_JOB_ID", "value": id.to_string()}]
                }],
                "taskCount": 1,
                "timeout": "1800s"
            }
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "name": format!("{PARENT}/operations/run-{n}"),
            "metadata": {
                "@type": "type.googleapis.com/google.cloud.run.v2.Execution",
                "name": execution_name(n),
                "job": "dbt-server-job"
            },
            "done": false
        })))
        .expect(1)
        .mount(server)
        .await;
}

/// `GET /v2/{execution}` answering `state`.
pub async fn mount_execution(server: &MockServer, n: u32, state: Value) {
    let mut body = state;
    body["name"] = json!(execution_name(n));
    Mock::given(method("GET"))
        .and(path(format!("/v2/{}", execution_name(n))))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(server)
        .await;
}

pub fn running() -> Value {
    json!({"runningCount": 1, "taskCount": 1})
}

/// An execution that ended at `at` with one task counted in `count` (`failedCount`, ...).
pub fn ended(at: &str, count: &str, conditions: Value) -> Value {
    let mut state = json!({"completionTime": at, "conditions": conditions});
    state[count] = json!(1);
    state
}

/// Launches a new queued job as execution 1, which runs: the job's id.
pub async fn launch_as_execution_1(server: &MockServer, store: &Arc<dyn StateStore>) -> JobId {
    let id = queued_job(store).await;
    mount_run(server, id, 1).await;
    mount_execution(server, 1, running()).await;
    launcher(server, store.clone())
        .await
        .launch(id)
        .await
        .unwrap();
    id
}

/// With the API answering each of `refusals` (a request; the code, status and message of its
/// error), launching a new queued job fails with an error naming each of `expected` and leaves
/// the job failed: the job's failure reason.
pub async fn assert_launch_refused(
    refusals: Vec<(MockBuilder, u16, &str, &str)>,
    expected: &[&str],
) -> Option<String> {
    let (server, store) = api_and_store().await;
    for (request, code, status, message) in refusals {
        request
            .respond_with(google_error(code, status, message))
            .mount(&server)
            .await;
    }
    let id = queued_job(&store).await;
    let launcher = launcher(&server, store.clone()).await;
    let err = launcher.launch(id).await.unwrap_err();
    assert_contains(&err.to_string(), expected);
    let job = store.get_job(id).await.unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    job.failure_reason
}

pub async fn queued_job(store: &Arc<dyn StateStore>) -> JobId {
    store.create_job(&sample_job()).await.unwrap().id
}

pub async fn wait_final(store: &Arc<dyn StateStore>, id: JobId) -> dbt_remote_core::JobRecord {
    for _ in 0..200 {
        let job = store.get_job(id).await.unwrap();
        if job.status.is_final() {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {id} did not end");
}

/// A job definition to create and `count` queued jobs, to be run as executions 1, 2, ...
pub async fn jobs_to_run(
    server: &MockServer,
    store: &Arc<dyn StateStore>,
    count: u32,
) -> Vec<JobId> {
    mount_job_creation(server).await;
    let mut ids = Vec::new();
    for n in 1..=count {
        let id = queued_job(store).await;
        mount_run(server, id, n).await;
        ids.push(id);
    }
    ids
}

/// Waits until job `id` ends, which must be failed: its failure reason.
pub async fn failure_reason(store: &Arc<dyn StateStore>, id: JobId) -> String {
    let job = wait_final(store, id).await;
    assert_eq!(job.status, JobStatus::Failed);
    job.failure_reason.expect("a failure reason")
}

//! End to end on the Google Cloud setup, as far as it runs here: the real dbt-server with
//! `--state gcp --launcher cloud-run`, state in the Firestore and Cloud Storage emulators, and
//! a fake Cloud Run Admin API on 127.0.0.1 that checks the launcher's requests and, for each
//! `:run`, does what Cloud Run does: starts the image's entry point (`dbt-server`) with the
//! execution's overrides (args and env) on top of the job template's env. Real dbt runs the
//! example project; the client follows live; the job's log is also in the execution's stdout
//! as Cloud Logging JSON. Skipped, saying so, without the emulators.
#![cfg(feature = "gcp")]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{dbt_path, follow_to_end, repo_root, server_binary, strings, RealServer};
use dbt_remote_core::package::pack_project;
use dbt_remote_core::{Client, JobStatus};
use dbt_remote_test_support::gcp::{unique_prefix, Emulators};
use serde_json::{json, Value};
use wiremock::matchers::{body_partial_json, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const PARENT: &str = "projects/dbt-remote-test/locations/europe-west1";
const JOB: &str = "projects/dbt-remote-test/locations/europe-west1/jobs/dbt-server-job";
const EXECUTION: &str =
    "projects/dbt-remote-test/locations/europe-west1/jobs/dbt-server-job/executions/exec-1";
const IMAGE: &str = "europe-docker.pkg.dev/dbt-remote-test/dbt/dbt-server:test";

/// What the fake Cloud Run knows of its one execution.
#[derive(Default)]
struct Executions {
    template_env: Vec<(String, String)>,
    child: Option<Child>,
    stdout: Option<std::path::PathBuf>,
}

/// `POST /v2/{job}`: records the template's env (what every execution's container gets).
struct CreateJob(Arc<Mutex<Executions>>);

impl Respond for CreateJob {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let env = &body["template"]["template"]["containers"][0]["env"];
        self.0.lock().unwrap().template_env = env
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["value"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        ResponseTemplate::new(200).set_body_json(json!({
            "name": format!("{PARENT}/operations/create"),
            "done": true,
            "response": {"@type": "type.googleapis.com/google.cloud.run.v2.Job", "name": JOB}
        }))
    }
}

/// `POST /v2/{job}:run`: starts the container command with the overrides, as Cloud Run would.
struct RunJob {
    executions: Arc<Mutex<Executions>>,
    /// The image's ENV (Dockerfile) and a scratch dir for the container.
    image_env: Vec<(String, String)>,
}

impl Respond for RunJob {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let overrides = &body["overrides"]["containerOverrides"][0];
        let args = strings(&overrides["args"]);
        let mut ex = self.executions.lock().unwrap();
        let stdout_path = std::env::temp_dir().join(format!("cloud-run-exec-{}.log", args[1]));
        let stdout = std::fs::File::create(&stdout_path).unwrap();
        let mut cmd = Command::new(server_binary());
        cmd.args(&args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", std::env::var_os("HOME").unwrap())
            .env("CLOUD_RUN_JOB", "dbt-server-job")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::inherit());
        cmd.envs(self.image_env.iter().map(|(k, v)| (k, v)));
        cmd.envs(ex.template_env.iter().map(|(k, v)| (k, v)));
        for e in overrides["env"].as_array().into_iter().flatten() {
            cmd.env(e["name"].as_str().unwrap(), e["value"].as_str().unwrap());
        }
        ex.child = Some(cmd.spawn().expect("the container starts"));
        ex.stdout = Some(stdout_path);
        ResponseTemplate::new(200).set_body_json(json!({
            "name": format!("{PARENT}/operations/run-1"),
            "metadata": {
                "@type": "type.googleapis.com/google.cloud.run.v2.Execution",
                "name": EXECUTION,
                "job": "dbt-server-job"
            },
            "done": false
        }))
    }
}

/// `GET /v2/{execution}`: running while the container runs, then its result.
struct GetExecution(Arc<Mutex<Executions>>);

impl Respond for GetExecution {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut ex = self.0.lock().unwrap();
        let exited = ex
            .child
            .as_mut()
            .and_then(|c| c.try_wait().unwrap())
            .map(|s| s.success());
        let state = match exited {
            None => json!({"runningCount": 1, "taskCount": 1}),
            Some(true) => json!({
                "taskCount": 1, "succeededCount": 1, "completionTime": "2026-11-25T12:00:00Z",
                "conditions": [{"type": "Completed", "state": "CONDITION_SUCCEEDED"}]
            }),
            Some(false) => json!({
                "taskCount": 1, "failedCount": 1, "completionTime": "2026-11-25T12:00:00Z",
                "conditions": [{"type": "Completed", "state": "CONDITION_FAILED",
                                "message": "Task exited with a non-zero code"}]
            }),
        };
        let mut body = state;
        body["name"] = json!(EXECUTION);
        ResponseTemplate::new(200).set_body_json(body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_as_a_cloud_run_execution_with_state_in_firestore_and_cloud_storage() {
    let test = "a_job_runs_as_a_cloud_run_execution_with_state_in_firestore_and_cloud_storage";
    let Some(emulators) = Emulators::start(test).await else {
        return;
    };
    let prefix = unique_prefix();
    let container = tempfile::tempdir().unwrap();
    let api = MockServer::start().await;
    let executions = Arc::new(Mutex::new(Executions::default()));

    Mock::given(method("GET"))
        .and(path(format!("/v2/{JOB}")))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "error": {"code": 404, "status": "NOT_FOUND", "message": "no such job"}
        })))
        .up_to_n_times(1)
        .expect(1)
        .mount(&api)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v2/{PARENT}/jobs")))
        .and(query_param("jobId", "dbt-server-job"))
        .and(body_partial_json(json!({
            "template": {"taskCount": 1, "template": {
                "containers": [{"name": "dbt-server", "image": IMAGE}],
                "maxRetries": 0
            }}
        })))
        .respond_with(CreateJob(executions.clone()))
        .expect(1)
        .mount(&api)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v2/{JOB}:run")))
        .and(body_partial_json(json!({"overrides": {"taskCount": 1}})))
        .respond_with(RunJob {
            executions: executions.clone(),
            image_env: vec![
                (
                    "DBT_REMOTE_DBT_PATH".into(),
                    dbt_path().display().to_string(),
                ),
                (
                    "DBT_PROFILES_DIR".into(),
                    repo_root().join("examples/profiles").display().to_string(),
                ),
                (
                    "DBT_REMOTE_STATE_DIR".into(),
                    container.path().join("state").display().to_string(),
                ),
                (
                    "DBT_REMOTE_WORK_DIR".into(),
                    container.path().join("work").display().to_string(),
                ),
            ],
        })
        .expect(1)
        .mount(&api)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/{EXECUTION}")))
        .respond_with(GetExecution(executions.clone()))
        .mount(&api)
        .await;

    let mut env: Vec<(&str, String)> = emulators.env(&prefix);
    env.extend([
        ("DBT_REMOTE_CLOUD_RUN_ENDPOINT", api.uri()),
        ("DBT_REMOTE_CLOUD_RUN_REGION", "europe-west1".into()),
        ("DBT_REMOTE_CLOUD_RUN_IMAGE", IMAGE.into()),
    ]);
    let server_dir = tempfile::tempdir().unwrap();
    let server = RealServer::start_with_env(
        server_binary(),
        server_dir.path(),
        &["--state", "gcp", "--launcher", "cloud-run"],
        &env,
    );
    let client = Client::new(&server.url).unwrap();
    let files = pack_project(&repo_root().join("examples/jaffle_duckdb")).unwrap();
    let job = client.submit(vec!["seed".into()], &files).await.unwrap().0;

    let (records, done) = follow_to_end(&client, job.id, Duration::from_secs(180)).await;
    let records: Vec<_> = records.into_iter().map(|(_, r)| r).collect();
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    assert_eq!(done.exit_code, Some(0));
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(
        records
            .iter()
            .any(|r| r.entry.message.contains("loaded seed file")),
        "{records:#?}"
    );

    // The execution's stdout: the same records, as Cloud Logging lines.
    let stdout_path = executions.lock().unwrap().stdout.clone().unwrap();
    let mut child = executions.lock().unwrap().child.take().unwrap();
    assert!(child.wait().unwrap().success());
    let stdout = std::fs::read_to_string(&stdout_path).unwrap();
    let _ = std::fs::remove_file(&stdout_path);
    let logged: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(logged.len(), records.len(), "{stdout}");
    assert!(logged
        .iter()
        .all(|l| l["logging.googleapis.com/labels"]["dbt_remote_job_id"] == job.id.to_string()));

    // The container saw the store's settings through the job template, nothing local.
    let template_env = executions.lock().unwrap().template_env.clone();
    assert!(
        template_env.contains(&("DBT_REMOTE_STATE".into(), "gcp".into())),
        "{template_env:?}"
    );
    assert!(
        template_env.contains(&("DBT_REMOTE_COLLECTION_PREFIX".into(), prefix.clone())),
        "{template_env:?}"
    );
    drop(server);
}

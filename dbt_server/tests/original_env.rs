//! The real dbt-server started as the original dbt-server (0.4.6) was deployed: with only its
//! `gcloud run deploy --set-env-vars` variables (`BUCKET_NAME`, `DOCKER_IMAGE`,
//! `SERVICE_ACCOUNT`, `PROJECT_ID`, `LOCATION`), no flag, plus the emulators' hosts and a fake
//! Cloud Run Admin API on 127.0.0.1. It must be GCP-backed (a job's record in the Firestore
//! emulator, the Cloud Run job created with the image) and say why at start. Skipped, saying
//! so, without the emulators.
#![cfg(feature = "gcp")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{repo_root, server_binary};
use dbt_remote_core::package::pack_project;
use dbt_remote_core::{Client, JobStatus, StateStore};
use dbt_remote_test_support::gcp::{Emulators, BUCKET, PROJECT};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PARENT: &str = "projects/dbt-remote-test/locations/europe-west1";
const JOB: &str = "projects/dbt-remote-test/locations/europe-west1/jobs/dbt-server-job";
const EXECUTION: &str =
    "projects/dbt-remote-test/locations/europe-west1/jobs/dbt-server-job/executions/exec-1";
const IMAGE: &str =
    "europe-west1-docker.pkg.dev/dbt-remote-test/dbt-server-repository/server-image";
const ACCOUNT: &str = "dbt-server-service-account@dbt-remote-test.iam.gserviceaccount.com";

/// A dbt-server process and the lines it logged; killed when dropped.
struct Started {
    child: Child,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Started {
    /// The lines logged so far, joined.
    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// Starts dbt-server in `dir` with no flag and an environment of `PATH`, `HOME`, `PORT=0`
/// and `env` only.
fn start(dir: &Path, env: &[(&str, String)]) -> Started {
    let mut child = Command::new(server_binary())
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("HOME", dir)
        .env("PORT", "0")
        .env("RUST_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dbt-server starts");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[dbt-server] {line}");
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
            lines.lock().unwrap().push(line);
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(30));
    let mut started = Started {
        child,
        url: String::new(),
        log,
    };
    started.url =
        url.unwrap_or_else(|_| panic!("dbt-server listens; it logged:\n{}", started.log()));
    started
}

/// The fake Cloud Run Admin API: no job yet, its creation, one run, an execution that runs.
async fn fake_cloud_run() -> MockServer {
    let api = MockServer::start().await;
    let error = json!({"error": {"code": 404, "status": "NOT_FOUND", "message": "no such job"}});
    Mock::given(method("GET"))
        .and(path(format!("/v2/{JOB}")))
        .respond_with(ResponseTemplate::new(404).set_body_json(error))
        .mount(&api)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v2/{PARENT}/jobs")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "name": format!("{PARENT}/operations/create"),
            "done": true,
            "response": {"@type": "type.googleapis.com/google.cloud.run.v2.Job", "name": JOB}
        })))
        .expect(1)
        .mount(&api)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v2/{JOB}:run")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "name": format!("{PARENT}/operations/run-1"),
            "metadata": {
                "@type": "type.googleapis.com/google.cloud.run.v2.Execution",
                "name": EXECUTION
            },
            "done": false
        })))
        .expect(1)
        .mount(&api)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/{EXECUTION}")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"name": EXECUTION, "runningCount": 1, "taskCount": 1})),
        )
        .mount(&api)
        .await;
    api
}

/// The body of the job creation the fake API received.
async fn created_job(api: &MockServer) -> Value {
    let requests = api.received_requests().await.unwrap();
    let create = requests
        .iter()
        .find(|r| r.method.as_str() == "POST" && r.url.path() == format!("/v2/{PARENT}/jobs"))
        .expect("the Cloud Run job was created");
    serde_json::from_slice(&create.body).unwrap()
}

/// The emulators' hosts (what a test adds to the original's variables).
fn emulator_hosts(emulators: &Emulators) -> Vec<(&'static str, String)> {
    emulators
        .env("")
        .into_iter()
        .filter(|(name, _)| name.ends_with("_EMULATOR_HOST"))
        .collect()
}

/// The original's deploy command's variables, for the emulators' project and bucket.
fn original_variables() -> Vec<(&'static str, String)> {
    vec![
        ("BUCKET_NAME", BUCKET.into()),
        ("DOCKER_IMAGE", IMAGE.into()),
        ("SERVICE_ACCOUNT", ACCOUNT.into()),
        ("PROJECT_ID", PROJECT.into()),
        ("LOCATION", "europe-west1".into()),
    ]
}

/// Submits `dbt seed` of the example project; the job's id once its execution was started.
async fn submit_and_wait_running(url: &str, store: &dyn StateStore) -> dbt_remote_core::JobRecord {
    let client = Client::new(url).unwrap();
    let files = pack_project(&repo_root().join("examples/jaffle_duckdb")).unwrap();
    let job = client.submit(vec!["seed".into()], &files).await.unwrap().0;
    for _ in 0..100 {
        let record = store.get_job(job.id).await.unwrap();
        if record.execution.is_some() {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("job {} got no Cloud Run execution", job.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_deploy_variables_alone_give_a_gcp_backed_server_that_says_why() {
    let test = "the_original_deploy_variables_alone_give_a_gcp_backed_server_that_says_why";
    let Some(emulators) = Emulators::start(test).await else {
        return;
    };
    let api = fake_cloud_run().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = original_variables();
    env.extend(emulator_hosts(&emulators));
    env.push(("DBT_REMOTE_CLOUD_RUN_ENDPOINT", api.uri()));
    let server = start(dir.path(), &env);

    // The job's record is in Firestore (the server's default collections), running as the
    // execution the fake started.
    let store = emulators.store_on("").await;
    let record = submit_and_wait_running(&server.url, &store).await;
    assert_eq!(record.status, JobStatus::Running);
    assert_eq!(record.execution.as_deref(), Some(EXECUTION));

    // The Cloud Run job was created in PROJECT_ID/LOCATION with DOCKER_IMAGE, run as
    // SERVICE_ACCOUNT, and its executions open the same store (our names).
    let created = created_job(&api).await;
    let task = &created["template"]["template"];
    assert_eq!(task["containers"][0]["image"], json!(IMAGE));
    assert_eq!(task["serviceAccount"], json!(ACCOUNT));
    let env = &task["containers"][0]["env"];
    for (name, value) in [
        ("DBT_REMOTE_STATE", "gcp"),
        ("DBT_REMOTE_GCS_BUCKET", BUCKET),
        ("DBT_REMOTE_GCP_PROJECT", PROJECT),
        ("DBT_REMOTE_CANCEL_GRACE_SECONDS", "30"),
        ("DBT_REMOTE_DBT_PATH", "dbt"),
    ] {
        assert!(
            env.as_array()
                .unwrap()
                .contains(&json!({"name": name, "value": value})),
            "{name}={value} not in {env:#}"
        );
    }

    // The start-up log says which store and launcher, and why.
    let log = server.log();
    for expected in [
        "state: gcp (Firestore of project dbt-remote-test + gs://dbt-remote-test) because \
         BUCKET_NAME is set (the original dbt-server's variable) and --state was not given",
        "launcher: cloud-run (executions of a Cloud Run job in dbt-remote-test/europe-west1, \
         image europe-west1-docker.pkg.dev/dbt-remote-test/dbt-server-repository/server-image) \
         because DOCKER_IMAGE is set",
        "SERVICE_ACCOUNT (the original dbt-server's variable) is used as \
         DBT_REMOTE_CLOUD_RUN_SERVICE_ACCOUNT",
        "LOCATION (the original dbt-server's variable) is used as DBT_REMOTE_CLOUD_RUN_REGION",
    ] {
        assert!(log.contains(expected), "{expected:?} not in:\n{log}");
    }
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_variable_wins_over_the_original_one_and_the_conflict_is_logged() {
    let test = "our_variable_wins_over_the_original_one_and_the_conflict_is_logged";
    let Some(emulators) = Emulators::start(test).await else {
        return;
    };
    let api = fake_cloud_run().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = original_variables();
    env[0].1 = "no-such-bucket".into(); // BUCKET_NAME
    env.push(("DBT_REMOTE_GCS_BUCKET", BUCKET.into()));
    env.extend(emulator_hosts(&emulators));
    env.push(("DBT_REMOTE_CLOUD_RUN_ENDPOINT", api.uri()));
    let server = start(dir.path(), &env);

    // The upload went to our bucket, the one that exists.
    let store = emulators.store_on("").await;
    submit_and_wait_running(&server.url, &store).await;
    let log = server.log();
    let expected = "BUCKET_NAME=\"no-such-bucket\" and DBT_REMOTE_GCS_BUCKET=\"dbt-remote-test\" \
                    are both set: using DBT_REMOTE_GCS_BUCKET";
    assert!(log.contains(expected), "{expected:?} not in:\n{log}");
    assert!(log.contains("WARN"), "{log}");
    assert!(
        log.contains("gs://dbt-remote-test) because BUCKET_NAME is set"),
        "{log}"
    );
}

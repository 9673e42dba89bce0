//! Two dbt-server instances on one store, as on Cloud Run: the real binary twice, with
//! `--state gcp --launcher cloud-run`, state in the Firestore and Cloud Storage emulators under
//! one collection prefix, and one fake Cloud Run Admin API on 127.0.0.1 whose `RunJob` is slow
//! (3 s) and counts its calls per `DBT_REMOTE_JOB_ID`. Each `:run` starts the image's entry
//! point (`dbt-server run-job <id>`, over a fake dbt) as Cloud Run would. Checked: every job
//! gets exactly one execution and ends right, also when the instance launching it is killed
//! inside `RunJob`, and a cancel sent to the instance that did not launch a job cancels its
//! execution. Skipped, saying so, without the emulators.
#![cfg(feature = "gcp")]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{repo_root, server_binary, strings, RealServer};
use dbt_remote_core::package::{pack_project, ProjectFile};
use dbt_remote_core::{Client, JobId, JobStatus, StateStore};
use dbt_remote_test_support::gcp::{unique_prefix, Emulators};
use serde_json::{json, Value};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const PARENT: &str = "projects/dbt-remote-test/locations/europe-west1";
const JOB: &str = "projects/dbt-remote-test/locations/europe-west1/jobs/dbt-server-job";
const IMAGE: &str = "europe-docker.pkg.dev/dbt-remote-test/dbt/dbt-server:test";
/// How long the fake `RunJob` takes to answer (the execution starts at once).
const RUN_JOB_DELAY: Duration = Duration::from_secs(3);
/// The instances' lease: shorter than `RunJob`, so renewal during the call matters.
const LEASE_SECONDS: &str = "2";

/// One execution of the fake Cloud Run.
struct Execution {
    job_id: String,
    child: Child,
    cancelled: bool,
}

/// What the fake Cloud Run knows: the job template's env and every execution, by name.
#[derive(Default)]
struct Fake {
    template_env: Vec<(String, String)>,
    executions: Vec<(String, Execution)>,
    cancels: Vec<String>,
    /// The image's ENV (Dockerfile): the fake dbt and the container's scratch dirs.
    image_env: Vec<(String, String)>,
}

impl Fake {
    /// `:run` calls per dbt job id.
    fn runs(&self) -> HashMap<String, usize> {
        let mut runs = HashMap::new();
        for (_, e) in &self.executions {
            *runs.entry(e.job_id.clone()).or_default() += 1;
        }
        runs
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        for (_, e) in &mut self.executions {
            let _ = e.child.kill();
            let _ = e.child.wait();
        }
    }
}

type Shared = Arc<Mutex<Fake>>;

fn operation(name: &str, done: bool, extra: Value) -> ResponseTemplate {
    let mut body = json!({"name": format!("{PARENT}/operations/{name}"), "done": done});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    ResponseTemplate::new(200).set_body_json(body)
}

/// `POST /v2/{parent}/jobs`: records the template's env.
struct CreateJob(Shared);

impl Respond for CreateJob {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let env = &body["template"]["template"]["containers"][0]["env"];
        self.0.lock().unwrap().template_env = env
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let value = e["value"].as_str().unwrap_or_default();
                (e["name"].as_str().unwrap().to_string(), value.to_string())
            })
            .collect();
        let response = json!({"@type": "type.googleapis.com/google.cloud.run.v2.Job", "name": JOB});
        operation("create", true, json!({ "response": response }))
    }
}

/// `POST /v2/{job}:run`: starts the container with the overrides at once, as Cloud Run does,
/// and answers after [`RUN_JOB_DELAY`].
struct RunJob(Shared);

impl Respond for RunJob {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let overrides = &body["overrides"]["containerOverrides"][0];
        let args = strings(&overrides["args"]);
        let env: Vec<(String, String)> = overrides["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let value = e["value"].as_str().unwrap().to_string();
                (e["name"].as_str().unwrap().to_string(), value)
            })
            .collect();
        let job_id = env
            .iter()
            .find(|(k, _)| k == "DBT_REMOTE_JOB_ID")
            .map(|(_, v)| v.clone())
            .expect("DBT_REMOTE_JOB_ID in the overrides");
        let mut fake = self.0.lock().unwrap();
        let name = format!("{JOB}/executions/exec-{}", fake.executions.len() + 1);
        let mut cmd = Command::new(server_binary());
        cmd.args(&args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("HOME", std::env::var_os("HOME").unwrap())
            .env("CLOUD_RUN_JOB", "dbt-server-job")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        cmd.envs(fake.image_env.iter().map(|(k, v)| (k, v)));
        cmd.envs(fake.template_env.iter().map(|(k, v)| (k, v)));
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let child = cmd.spawn().expect("the container starts");
        fake.executions.push((
            name.clone(),
            Execution {
                job_id,
                child,
                cancelled: false,
            },
        ));
        let metadata = json!({
            "@type": "type.googleapis.com/google.cloud.run.v2.Execution",
            "name": name, "job": "dbt-server-job"
        });
        operation("run", false, json!({ "metadata": metadata })).set_delay(RUN_JOB_DELAY)
    }
}

/// An execution in the REST shape: its template holds the container's overridden env.
fn execution_json(name: &str, e: &mut Execution) -> Value {
    let exited = e.child.try_wait().unwrap().map(|s| s.success());
    let mut body = match (exited, e.cancelled) {
        (None, _) => json!({"runningCount": 1}),
        (Some(_), true) => json!({
            "cancelledCount": 1, "completionTime": "2026-12-02T12:00:00Z",
            "conditions": [{"type": "Completed", "state": "CONDITION_FAILED", "executionReason": "CANCELLED"}]
        }),
        (Some(true), false) => json!({
            "succeededCount": 1, "completionTime": "2026-12-02T12:00:00Z",
            "conditions": [{"type": "Completed", "state": "CONDITION_SUCCEEDED"}]
        }),
        (Some(false), false) => json!({
            "failedCount": 1, "completionTime": "2026-12-02T12:00:00Z",
            "conditions": [{"type": "Completed", "state": "CONDITION_FAILED",
                            "message": "Task exited with a non-zero code"}]
        }),
    };
    body["name"] = json!(name);
    body["taskCount"] = json!(1);
    body["template"] = json!({"containers": [{
        "name": "dbt-server",
        "env": [{"name": "DBT_REMOTE_JOB_ID", "value": e.job_id}]
    }]});
    body
}

/// `GET /v2/{job}/executions`: every execution, one page.
struct ListExecutions(Shared);

impl Respond for ListExecutions {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut fake = self.0.lock().unwrap();
        let listed: Vec<Value> = fake
            .executions
            .iter_mut()
            .map(|(name, e)| execution_json(name, e))
            .collect();
        ResponseTemplate::new(200).set_body_json(json!({ "executions": listed }))
    }
}

/// `GET /v2/{execution}` and `POST /v2/{execution}:cancel` (SIGTERM to the container, as Cloud
/// Run stops it).
struct OneExecution(Shared);

impl Respond for OneExecution {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let url_path = request.url.path().trim_start_matches("/v2/");
        let (name, cancel) = match url_path.strip_suffix(":cancel") {
            Some(name) => (name.to_string(), true),
            None => (url_path.to_string(), false),
        };
        let mut fake = self.0.lock().unwrap();
        if cancel {
            fake.cancels.push(name.clone());
        }
        let Some((_, e)) = fake.executions.iter_mut().find(|(n, _)| *n == name) else {
            return ResponseTemplate::new(404).set_body_json(json!({
                "error": {"code": 404, "status": "NOT_FOUND", "message": "no such execution"}
            }));
        };
        if cancel && !e.cancelled {
            e.cancelled = true;
            let pid = nix::unistd::Pid::from_raw(e.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let body = execution_json(&name, e);
        if cancel {
            let mut response = body;
            response["@type"] = json!("type.googleapis.com/google.cloud.run.v2.Execution");
            return operation("cancel", true, json!({ "response": response }));
        }
        ResponseTemplate::new(200).set_body_json(body)
    }
}

/// A dbt that succeeds at once; for a job whose arguments say `slow`, sleeps until interrupted;
/// for one whose arguments say `longer`, succeeds after 6 s (past a lease or two).
fn fake_dbt(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("dbt");
    let script = "#!/bin/sh\ncase \"$*\" in *slow*) exec sleep 60;; *longer*) sleep 6;; esac\necho fake dbt \"$@\"\n";
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The fake Cloud Run Admin API, mounted.
async fn fake_cloud_run(fake: &Shared) -> MockServer {
    let api = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/{JOB}")))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "error": {"code": 404, "status": "NOT_FOUND", "message": "no such job"}
        })))
        .mount(&api)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v2/{PARENT}/jobs")))
        .respond_with(CreateJob(fake.clone()))
        .mount(&api)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v2/{JOB}:run")))
        .respond_with(RunJob(fake.clone()))
        .mount(&api)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v2/{JOB}/executions")))
        .respond_with(ListExecutions(fake.clone()))
        .mount(&api)
        .await;
    Mock::given(path_regex(format!("^/v2/{JOB}/executions/[^/]+$")))
        .respond_with(OneExecution(fake.clone()))
        .mount(&api)
        .await;
    api
}

/// Two instances of the real dbt-server on the same emulator store and fake Cloud Run API.
struct Cluster {
    fake: Shared,
    servers: Vec<RealServer>,
    clients: Vec<Client>,
    files: Vec<ProjectFile>,
    /// The store the instances share, to read what the API does not show.
    store: dbt_remote_core::state::GcpStore,
    _api: MockServer,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    async fn start(emulators: &Emulators) -> Cluster {
        let prefix = unique_prefix();
        let container = tempfile::tempdir().unwrap();
        let fake: Shared = Arc::default();
        let dbt = fake_dbt(container.path());
        let scratch = |name: &str| container.path().join(name).display().to_string();
        fake.lock().unwrap().image_env = vec![
            ("DBT_REMOTE_DBT_PATH".into(), dbt.display().to_string()),
            ("DBT_REMOTE_STATE_DIR".into(), scratch("state")),
            ("DBT_REMOTE_WORK_DIR".into(), scratch("work")),
        ];
        let api = fake_cloud_run(&fake).await;
        let mut env: Vec<(&str, String)> = emulators.env(&prefix);
        env.extend([
            ("DBT_REMOTE_CLOUD_RUN_ENDPOINT", api.uri()),
            ("DBT_REMOTE_CLOUD_RUN_REGION", "europe-west1".into()),
            ("DBT_REMOTE_CLOUD_RUN_IMAGE", IMAGE.into()),
        ]);
        let mut dirs = vec![container];
        let mut servers = Vec::new();
        for _ in 0..2 {
            let dir = tempfile::tempdir().unwrap();
            let flags = [
                "--state",
                "gcp",
                "--launcher",
                "cloud-run",
                "--lease-seconds",
                LEASE_SECONDS,
            ];
            servers.push(RealServer::start_with_env(
                server_binary(),
                dir.path(),
                &flags,
                &env,
            ));
            dirs.push(dir);
        }
        let clients = servers
            .iter()
            .map(|s| Client::new(&s.url).unwrap())
            .collect();
        let files = pack_project(&repo_root().join("examples/jaffle_duckdb")).unwrap();
        Cluster {
            store: emulators.store_on(&prefix).await,
            fake,
            servers,
            clients,
            files,
            _api: api,
            _dirs: dirs,
        }
    }

    /// Submits `args` to instance `n` in the background (the submit answers once `RunJob` has).
    fn submit(
        &self,
        n: usize,
        args: &[&str],
    ) -> tokio::task::JoinHandle<dbt_remote_core::Result<JobId>> {
        let (client, files) = (self.clients[n].clone(), self.files.clone());
        let args = args.iter().map(|a| a.to_string()).collect();
        tokio::spawn(async move { Ok(client.submit(args, &files).await?.0.id) })
    }

    /// Waits until the fake has seen `count` `:run` calls in all; the dbt job ids, in order.
    async fn wait_runs(&self, count: usize) -> Vec<JobId> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ids: Vec<JobId> = {
                let fake = self.fake.lock().unwrap();
                fake.executions
                    .iter()
                    .map(|(_, e)| e.job_id.parse().unwrap())
                    .collect()
            };
            if ids.len() >= count {
                return ids;
            }
            assert!(Instant::now() < deadline, "{count} :run calls expected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (through instance `n`) until the job is final.
    async fn final_status(&self, n: usize, id: JobId) -> dbt_remote_core::api::Job {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let job = self.clients[n].job(id).await.unwrap();
            if job.status.is_final() {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} did not end: {job:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `:run` calls per job, which must be exactly one for each of `ids`.
    fn assert_one_run_each(&self, ids: &[JobId]) {
        let runs = self.fake.lock().unwrap().runs();
        for id in ids {
            assert_eq!(runs.get(&id.to_string()), Some(&1), "{runs:?}");
        }
        assert_eq!(runs.len(), ids.len(), "{runs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_submitted_to_two_instances_each_run_exactly_once_and_succeed() {
    let test = "jobs_submitted_to_two_instances_each_run_exactly_once_and_succeed";
    let Some(emulators) = Emulators::start(test).await else {
        return;
    };
    let cluster = Cluster::start(&emulators).await;
    let submits: Vec<_> = (0..4).map(|n| cluster.submit(n % 2, &["seed"])).collect();
    let mut ids = Vec::new();
    for s in submits {
        ids.push(s.await.unwrap().unwrap());
    }
    for (n, id) in ids.iter().enumerate() {
        // Read through the other instance than the one it was sent to.
        let job = cluster.final_status((n + 1) % 2, *id).await;
        assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    }
    cluster.assert_one_run_each(&ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_inside_run_job_leaves_its_job_to_the_other_which_adopts_the_execution()
{
    let test =
        "an_instance_killed_inside_run_job_leaves_its_job_to_the_other_which_adopts_the_execution";
    let Some(emulators) = Emulators::start(test).await else {
        return;
    };
    let mut cluster = Cluster::start(&emulators).await;
    let submit = cluster.submit(0, &["run", "--select", "longer"]);
    let id = cluster.wait_runs(1).await[0];
    // Instance 0 is inside its 3 s `RunJob` call: SIGKILL it there. The execution runs on.
    cluster.servers[0].kill();
    assert!(
        submit.await.unwrap().is_err(),
        "the killed instance never answered"
    );
    let job = cluster.final_status(1, id).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{job:?}");
    cluster.assert_one_run_each(&[id]);
    let record = cluster.store.get_job(id).await.unwrap();
    assert_eq!(
        record.execution.as_deref(),
        Some(format!("{JOB}/executions/exec-1").as_str()),
        "the surviving instance recorded the adopted execution"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_the_other_instance_during_run_job_cancels_the_execution() {
    let test = "a_cancel_sent_to_the_other_instance_during_run_job_cancels_the_execution";
    let Some(emulators) = Emulators::start(test).await else {
        return;
    };
    let cluster = Cluster::start(&emulators).await;
    let submit = cluster.submit(0, &["run", "--select", "slow"]);
    let id = cluster.wait_runs(1).await[0];
    // Instance 0 is still inside `RunJob`: the record names no execution yet.
    let cancelled = cluster.clients[1].cancel(id).await.unwrap();
    assert!(cancelled.cancel_requested, "{cancelled:?}");
    let record = cluster.store.get_job(id).await.unwrap();
    assert!(record.execution.is_none(), "{record:?}");
    assert_eq!(submit.await.unwrap().unwrap(), id);
    let job = cluster.final_status(1, id).await;
    assert_eq!(job.status, JobStatus::Cancelled, "{job:?}");
    let fake = cluster.fake.lock().unwrap();
    assert!(
        fake.cancels.contains(&format!("{JOB}/executions/exec-1")),
        "{:?}",
        fake.cancels
    );
    assert_eq!(fake.executions.len(), 1);
}

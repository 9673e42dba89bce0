//! The Cloud Run job definition the launcher creates and updates, against a fake Cloud Run
//! Admin API on 127.0.0.1: the profiles secret it mounts, and what an admin added by hand
//! that an update keeps.
#![cfg(feature = "gcp")]

mod cloud_run_api;

use std::sync::Arc;

use dbt_remote_core::launcher::cloud_run::CloudRunLauncher;
use dbt_remote_core::{JobLauncher, StateStore};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use cloud_run_api::*;

/// The JSON body of the one request of `method` on `/v2/{path}` the fake API received.
async fn body_of(server: &MockServer, method: &str, path: &str) -> Value {
    let requests = server.received_requests().await.unwrap();
    let mut bodies = requests
        .iter()
        .filter(|r| r.method.as_str() == method && r.url.path() == format!("/v2/{path}"))
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap());
    let body = bodies.next().expect("a request");
    assert!(bodies.next().is_none(), "one {method} request");
    body
}

/// A launcher of the common settings with a profiles secret and job settings' variables.
async fn launcher_with_profiles(
    server: &MockServer,
    store: Arc<dyn StateStore>,
) -> CloudRunLauncher {
    builder(server)
        .with_env("DBT_REMOTE_DBT_PATH", "/opt/dbt/bin/dbt")
        .with_profiles_secret("projects/p/secrets/dbt-profiles:3")
        .build(store)
        .await
        .unwrap()
}

/// The task template of a job with the profiles secret, as Google's `Job` REST resource spells
/// it (`template.template.volumes[].secret`, `containers[].volumeMounts`).
fn profiles_task() -> Value {
    json!({
        "containers": [{
            "name": "dbt-server",
            "image": IMAGE,
            "env": [
                {"name": "DBT_PROFILES_DIR", "value": "/etc/dbt-remote/profiles"},
                {"name": "DBT_REMOTE_DBT_PATH", "value": "/opt/dbt/bin/dbt"},
                {"name": "DBT_REMOTE_STATE", "value": "gcp"}
            ],
            "resources": {"limits": {"cpu": "1", "memory": "2Gi"}},
            "volumeMounts": [{"name": "dbt-remote-profiles", "mountPath": "/etc/dbt-remote/profiles"}]
        }],
        "volumes": [{
            "name": "dbt-remote-profiles",
            "secret": {
                "secret": "projects/p/secrets/dbt-profiles",
                "items": [{"path": "profiles.yml", "version": "3"}]
            }
        }],
        "timeout": "1800s",
        "serviceAccount": RUNNER,
        "maxRetries": 0
    })
}

#[tokio::test]
async fn the_created_job_mounts_the_profiles_secret_and_points_dbt_at_it() {
    let (server, store) = api_and_store().await;
    get_job()
        .respond_with(google_error(404, "NOT_FOUND", "Job not found."))
        .mount(&server)
        .await;
    create_job()
        .respond_with(done_operation("create", "Job", json!({"name": JOB})))
        .expect(1)
        .mount(&server)
        .await;
    let id = queued_job(&store).await;
    mount_run(&server, id, 1).await;
    mount_execution(&server, 1, running()).await;
    launcher_with_profiles(&server, store.clone())
        .await
        .launch(id)
        .await
        .unwrap();
    let expected = json!({
        "labels": {"dbt-remote": "job-runner"},
        "template": {"taskCount": 1, "template": profiles_task()}
    });
    let created = body_of(&server, "POST", &format!("{PARENT}/jobs")).await;
    assert_eq!(created, expected);
}

/// A job as an admin changed it by hand in the console: an extra plain and secret variable, a
/// stale setting of ours, a Cloud SQL volume and its mount, a label, an annotation, VPC
/// access, a GPU limit; and an old image.
fn hand_edited_job() -> Value {
    json!({
        "name": JOB,
        "uid": "5c1d",
        "generation": "4",
        "etag": "\"abc\"",
        "createTime": "2026-11-01T10:00:00Z",
        "labels": {"dbt-remote": "job-runner", "team": "data"},
        "annotations": {"run.googleapis.com/launch-stage": "BETA"},
        "template": {
            "taskCount": 1,
            "parallelism": 1,
            "template": {
                "containers": [{
                    "name": "dbt-server",
                    "image": "old-image:0",
                    "env": [
                        {"name": "DBT_REMOTE_STATE", "value": "gcp"},
                        {"name": "SNOWFLAKE_ACCOUNT", "value": "xy123"},
                        {"name": "SNOWFLAKE_PASSWORD", "valueSource": {"secretKeyRef": {"secret": "sf-password", "version": "latest"}}},
                        {"name": "DBT_REMOTE_OLD_SETTING", "value": "1"}
                    ],
                    "resources": {"limits": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"}},
                    "volumeMounts": [{"name": "cloudsql", "mountPath": "/cloudsql"}]
                }],
                "volumes": [{"name": "cloudsql", "cloudSqlInstance": {"instances": ["p:europe-west1:db"]}}],
                "vpcAccess": {"connector": "projects/p/locations/europe-west1/connectors/c", "egress": "ALL_TRAFFIC"},
                "timeout": "1800s",
                "serviceAccount": RUNNER,
                "maxRetries": 0
            }
        }
    })
}

#[tokio::test]
async fn an_update_keeps_what_an_admin_added_by_hand() {
    let (server, store) = api_and_store().await;
    mount_existing_job(&server, hand_edited_job()).await;
    Mock::given(method("PATCH"))
        .and(path(format!("/v2/{JOB}")))
        .respond_with(done_operation("update", "Job", json!({"name": JOB})))
        .expect(1)
        .mount(&server)
        .await;
    launch_as_execution_1(&server, &store).await;
    let patch = body_of(&server, "PATCH", JOB).await;
    let task = &patch["template"]["template"];
    let container = &task["containers"][0];
    // Managed: the image, our variables (the stale one gone), the label.
    assert_eq!(container["image"], json!(IMAGE));
    let env = container["env"].as_array().unwrap();
    let names: Vec<&str> = env.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "SNOWFLAKE_ACCOUNT",
            "SNOWFLAKE_PASSWORD",
            "DBT_REMOTE_STATE"
        ]
    );
    // Kept: the admin's variables (the secret reference too), volume, mount, label,
    // annotation, VPC access, GPU limit.
    let job = hand_edited_job();
    let had = &job["template"]["template"];
    assert_eq!(env[1], had["containers"][0]["env"][2]);
    assert_eq!(
        container["volumeMounts"],
        had["containers"][0]["volumeMounts"]
    );
    assert_eq!(task["volumes"], had["volumes"]);
    // The client sends enums as numbers, which the API accepts: ALL_TRAFFIC is 1.
    let vpc = json!({"connector": had["vpcAccess"]["connector"], "egress": 1});
    assert_eq!(task["vpcAccess"], vpc);
    assert_eq!(patch["labels"], job["labels"]);
    assert_eq!(patch["annotations"], job["annotations"]);
    let limits = json!({"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"});
    assert_eq!(container["resources"]["limits"], limits);
    assert_eq!(patch["template"]["parallelism"], json!(1));
    // Output-only fields are not sent back.
    for field in ["uid", "generation", "etag", "createTime"] {
        assert!(patch.get(field).is_none(), "{field} in {patch:#}");
    }
}

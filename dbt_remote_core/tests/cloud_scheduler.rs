//! The Cloud Scheduler trigger against a fake Cloud Scheduler API on 127.0.0.1: each request's
//! method, path, query and JSON body is checked against the documented REST shapes of the
//! API (v1: `projects.locations.jobs.create`, `.patch`, `.delete`, `.list`).
#![cfg(feature = "gcp")]

use std::sync::Arc;

use dbt_remote_core::job::JobSpec;
use dbt_remote_core::schedule::{
    CloudSchedulerTrigger, MemorySchedules, ScheduleSpec, ScheduleStore, MANAGED_BY,
};
use dbt_remote_core::testing::{sample_schedule, RecordingLauncher};
use dbt_remote_core::{env, Error, JobService, MemoryStore, StateStore};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const PARENT: &str = "projects/p/locations/europe-west1";
const URL: &str = "https://dbt-server-abc-ew.a.run.app";
const INVOKER: &str = "dbt-scheduler@p.iam.gserviceaccount.com";

async fn trigger(api: &MockServer) -> CloudSchedulerTrigger {
    CloudSchedulerTrigger::builder()
        .with_project("p")
        .with_region("europe-west1")
        .with_public_url(format!("{URL}/"))
        .with_service_account(INVOKER)
        .with_endpoint(api.uri())
        .with_anonymous_credentials()
        .build()
        .await
        .unwrap()
}

/// A service on memory stores whose schedules fire through Cloud Scheduler.
async fn service(api: &MockServer) -> JobService {
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let launcher = Arc::new(RecordingLauncher::new(store.clone()));
    JobService::new(store, launcher)
        .with_schedules(Arc::new(MemorySchedules::new()))
        .with_trigger(Arc::new(trigger(api).await))
}

fn spec(name: &str, cron: &str) -> ScheduleSpec {
    ScheduleSpec {
        name: Some(name.into()),
        cron: cron.into(),
        command: Some("build".into()),
        job: JobSpec {
            args: vec!["build".into()],
            ..Default::default()
        },
    }
}

fn assert_has(text: &str, needle: &str) {
    assert!(text.contains(needle), "{needle:?} is not in: {text}");
}

fn google_error(code: u16, status: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({
        "error": {"code": code, "message": message, "status": status}
    }))
}

/// The job Google's REST API must receive for the schedule `name` running `cron`.
fn job_body(name: &str, cron: &str) -> Value {
    json!({
        "name": format!("{PARENT}/jobs/dbt-server-{name}"),
        "description": format!(
            "{MANAGED_BY}: runs its schedule {name} (build). Changes made here are \
             overwritten; delete the schedule, not this job."
        ),
        "schedule": cron,
        "timeZone": "Etc/UTC",
        "httpTarget": {
            "uri": format!("{URL}/api/v1/schedules/{name}/run"),
            // The official client asks for enums as numbers (`$alt=json;enum-encoding=int`,
            // checked in `calls`): POST is 1 in google.cloud.scheduler.v1.HttpMethod.
            "httpMethod": 1,
            "headers": {"Content-Type": "application/json"},
            "body": "e30=", // base64 of {}
            "oidcToken": {"serviceAccountEmail": INVOKER, "audience": URL}
        }
    })
}

fn body(request: &Request) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

/// The requests the fake received, as `METHOD path?query`, without the system parameter
/// `$alt=json;enum-encoding=int` that Google's clients add to every call (checked here).
async fn calls(api: &MockServer) -> Vec<String> {
    api.received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let alt = r.url.query_pairs().find(|(k, _)| k == "$alt");
            assert_eq!(alt.unwrap().1, "json;enum-encoding=int");
            let query: Vec<&str> = r
                .url
                .query()
                .unwrap_or_default()
                .split('&')
                .filter(|p| !p.is_empty() && !p.starts_with("%24alt="))
                .collect();
            let query = if query.is_empty() {
                String::new()
            } else {
                format!("?{}", query.join("&"))
            };
            format!("{} {}{query}", r.method, r.url.path())
        })
        .collect()
}

#[tokio::test]
async fn a_schedule_is_created_and_deleted_with_its_cloud_scheduler_job() {
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/v1/{PARENT}/jobs")))
        .respond_with(ResponseTemplate::new(200).set_body_json(job_body("nightly", "0 8 * * *")))
        .mount(&api)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!("/v1/{PARENT}/jobs/dbt-server-nightly")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .up_to_n_times(1)
        .mount(&api)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(google_error(404, "NOT_FOUND", "Job not found."))
        .mount(&api)
        .await;
    let service = service(&api).await;
    assert!(!service.trigger().fires_in_server());

    service
        .create_schedule(spec("nightly", "0 8 * * *"))
        .await
        .unwrap();
    let requests = api.received_requests().await.unwrap();
    assert_eq!(calls(&api).await, [format!("POST /v1/{PARENT}/jobs")]);
    assert_eq!(body(&requests[0]), job_body("nightly", "0 8 * * *"));

    assert!(service.delete_schedule("nightly").await.unwrap());
    // A job already gone (deleted by hand, or a second delete) is no error.
    assert!(!service.delete_schedule("nightly").await.unwrap());
    let deletes = &calls(&api).await[1..];
    let delete = format!("DELETE /v1/{PARENT}/jobs/dbt-server-nightly");
    assert_eq!(deletes, [delete.clone(), delete]);
}

#[tokio::test]
async fn an_existing_job_is_patched_with_an_update_mask() {
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(google_error(409, "ALREADY_EXISTS", "Job already exists."))
        .mount(&api)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("/v1/{PARENT}/jobs/dbt-server-nightly")))
        .respond_with(ResponseTemplate::new(200).set_body_json(job_body("nightly", "*/5 * * * *")))
        .mount(&api)
        .await;
    let service = service(&api).await;
    service
        .create_schedule(spec("nightly", "*/5 * * * *"))
        .await
        .unwrap();
    let requests = api.received_requests().await.unwrap();
    assert_eq!(
        calls(&api).await,
        [
            format!("POST /v1/{PARENT}/jobs"),
            format!(
                "PATCH /v1/{PARENT}/jobs/dbt-server-nightly\
                 ?updateMask=description%2Cschedule%2CtimeZone%2ChttpTarget"
            ),
        ]
    );
    assert_eq!(body(&requests[1]), job_body("nightly", "*/5 * * * *"));
}

/// At start: the missing job is created, the one that differs patched, the managed job of a
/// deleted schedule deleted; jobs the server does not manage are left alone. Both pages of
/// the list are read.
#[tokio::test]
async fn reconcile_creates_missing_patches_stale_and_deletes_orphaned_managed_jobs() {
    let api = MockServer::start().await;
    let mut stale = job_body("nightly", "0 7 * * *");
    stale["state"] = json!("ENABLED");
    let orphan = job_body("gone", "0 8 * * *");
    let mut foreign = job_body("theirs", "0 8 * * *"); // our prefix, not our mark
    foreign["description"] = json!("a job made by hand");
    let mut other_server = job_body("nightly", "0 8 * * *");
    other_server["name"] = json!(format!("{PARENT}/jobs/other-server-nightly"));
    Mock::given(method("GET"))
        .and(path(format!("/v1/{PARENT}/jobs")))
        .and(wiremock::matchers::query_param("pageToken", "page-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"jobs": [orphan]})))
        .mount(&api)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("/v1/{PARENT}/jobs")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "jobs": [stale, foreign, other_server],
            "nextPageToken": "page-2"
        })))
        .mount(&api)
        .await;
    for verb in ["POST", "PATCH", "DELETE"] {
        Mock::given(method(verb))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .mount(&api)
            .await;
    }
    let schedules = MemorySchedules::new();
    for (name, cron) in [("hourly", "0 * * * *"), ("nightly", "0 8 * * *")] {
        let mut s = sample_schedule(name);
        s.cron = cron.into();
        schedules.create_schedule(&s).await.unwrap();
    }
    let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
    let service = JobService::new(store.clone(), Arc::new(RecordingLauncher::new(store)))
        .with_schedules(Arc::new(schedules))
        .with_trigger(Arc::new(trigger(&api).await));

    service.reconcile_triggers().await.unwrap();
    let requests = api.received_requests().await.unwrap();
    let calls = calls(&api).await;
    let list = format!("GET /v1/{PARENT}/jobs");
    assert!(calls[0].starts_with(&list), "{calls:?}");
    assert!(calls[1].starts_with(&list) && calls[1].contains("pageToken=page-2"));
    assert_eq!(
        calls[2..],
        [
            format!("POST /v1/{PARENT}/jobs"),
            format!(
                "PATCH /v1/{PARENT}/jobs/dbt-server-nightly\
                 ?updateMask=description%2Cschedule%2CtimeZone%2ChttpTarget"
            ),
            format!("DELETE /v1/{PARENT}/jobs/dbt-server-gone"),
        ]
    );
    let mut hourly = job_body("hourly", "0 * * * *");
    hourly["description"] = json!(format!(
        "{MANAGED_BY}: runs its schedule hourly (build). Changes made here are overwritten; \
         delete the schedule, not this job."
    ));
    assert_eq!(body(&requests[2]), hourly);
    assert_eq!(body(&requests[3]), job_body("nightly", "0 8 * * *"));

    // In step now: a second reconcile only lists.
    let api2 = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "jobs": [hourly, job_body("nightly", "0 8 * * *")]
        })))
        .mount(&api2)
        .await;
    let again = service.clone().with_trigger(Arc::new(trigger(&api2).await));
    again.reconcile_triggers().await.unwrap();
    assert_eq!(api2.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_refused_job_names_the_roles_and_leaves_no_schedule() {
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(google_error(
            403,
            "PERMISSION_DENIED",
            "The principal lacks IAM permission \"cloudscheduler.jobs.create\"",
        ))
        .mount(&api)
        .await;
    let service = service(&api).await;
    let err = service
        .create_schedule(spec("nightly", "0 8 * * *"))
        .await
        .unwrap_err()
        .to_string();
    assert_has(&err, "roles/cloudscheduler.admin");
    assert_has(&err, "roles/iam.serviceAccountUser");
    assert_has(&err, INVOKER);
    assert_has(&err, "cloudscheduler.jobs.create");
    assert!(service.list_schedules().await.unwrap().is_empty());
}

#[tokio::test]
async fn missing_settings_are_named() {
    let full = CloudSchedulerTrigger::builder()
        .with_project("p")
        .with_region("europe-west1")
        .with_public_url(URL)
        .with_service_account(INVOKER)
        .with_anonymous_credentials();
    full.clone().build().await.unwrap();
    let err = |b: dbt_remote_core::schedule::CloudSchedulerTriggerBuilder| async move {
        let e = b.build().await.unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
        e.to_string()
    };
    let base = || CloudSchedulerTrigger::builder().with_anonymous_credentials();
    assert_has(&err(base()).await, "DBT_REMOTE_GCP_PROJECT");
    assert_has(
        &err(base().with_project("p")).await,
        "DBT_REMOTE_CLOUD_SCHEDULER_REGION",
    );
    let located = base().with_project("p").with_region("europe-west1");
    assert_has(&err(located.clone()).await, "--public-url");
    assert_has(
        &err(located.clone().with_public_url(URL)).await,
        "DBT_REMOTE_SCHEDULER_SERVICE_ACCOUNT",
    );
    assert_has(
        &err(base().with_project("p").with_region("EU")).await,
        "multi-region",
    );
    // An empty value is no value.
    assert_has(
        &err(full.clone().with_service_account("")).await,
        "DBT_REMOTE_SCHEDULER_SERVICE_ACCOUNT",
    );
    assert_has(
        &err(full.clone().with_prefix("a/b")).await,
        "DBT_REMOTE_CLOUD_SCHEDULER_PREFIX",
    );
}

/// The server's wiring: `--scheduler cloud-scheduler` with its settings builds the trigger
/// from the settings and the environment, reconciles at start (one list of the region's
/// jobs), and leaves firing to Cloud Scheduler. The only test of this file that sets
/// variables (the endpoint and project are read from the environment, as in a deployment).
#[tokio::test]
async fn a_server_with_cloud_scheduler_reconciles_at_start() {
    use dbt_remote_core::server::{
        JobSettings, SchedulerKind, SchedulerSettings, ServerBuilder, ServerSettings,
    };
    let api = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("/v1/{PARENT}/jobs")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&api)
        .await;
    std::env::set_var(env::CLOUD_SCHEDULER_ENDPOINT, api.uri());
    std::env::set_var(env::GCP_PROJECT, "p");
    let dir = tempfile::tempdir().unwrap();
    let settings = ServerSettings {
        job: JobSettings {
            state_dir: dir.path().join("state"),
            ..Default::default()
        },
        public_url: Some(URL.into()),
        scheduler: SchedulerSettings {
            kind: SchedulerKind::CloudScheduler,
            region: Some("europe-west1".into()),
            service_account: Some(INVOKER.into()),
            job_prefix: None,
        },
        ..Default::default()
    };
    let server = ServerBuilder::new()
        .with_settings(settings)
        .build()
        .await
        .unwrap();
    assert!(!server.service().trigger().fires_in_server());
    let calls = calls(&api).await;
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(
        calls[0].starts_with(&format!("GET /v1/{PARENT}/jobs?")),
        "{calls:?}"
    );
}

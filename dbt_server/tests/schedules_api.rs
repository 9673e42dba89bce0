//! The native schedule routes (`/api/v1/schedules`) over the memory store: every route, every
//! bad input (status, error body, nothing stored), the schedule cap, and the core client.

mod common;

use bytes::Bytes;
use common::InProcess;
use dbt_remote_core::api::ScheduleInfo;
use dbt_remote_core::{BlobHash, Client, Error};
use serde_json::{json, Value};

const LIMIT: u64 = 1 << 20;

const MODEL: &[u8] = b"select 1 as id\n";

/// A server with the blob of `models/a.sql` uploaded, and a client of it.
async fn server() -> (InProcess, Client) {
    let s = InProcess::start(LIMIT).await;
    let client = Client::new(&s.url).unwrap();
    client.put_blob(Bytes::from_static(MODEL)).await.unwrap();
    (s, client)
}

/// A create request for `name` at `cron`, building the uploaded model.
fn create_body(name: &str, cron: &str) -> Value {
    json!({
        "name": name,
        "cron": cron,
        "args": ["build", "--select", "a"],
        "files": [{"path": "models/a.sql", "sha256": BlobHash::of(MODEL).to_string()}],
    })
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// Sends `request`; its status and JSON body (`null` when empty).
async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, body)
}

/// Checks a refusal: its status, the native error body with `code`, no server detail.
async fn refused(request: reqwest::RequestBuilder, status: u16, code: &str) -> String {
    let (got, body) = send(request).await;
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap().to_string();
    for leak in ["/tmp", "/root", "panicked", "src/", ".rs:"] {
        assert!(!message.contains(leak), "{message:?} leaks {leak:?}");
    }
    message
}

async fn names(s: &InProcess) -> Vec<String> {
    let (_, list) = send(http().get(format!("{}/api/v1/schedules", s.url))).await;
    let list = list["schedules"].as_array().unwrap().clone();
    list.iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn schedules_are_created_listed_got_run_and_deleted() {
    let (s, _) = server().await;
    let base = format!("{}/api/v1/schedules", s.url);
    let response = http()
        .post(&base)
        .json(&create_body("nightly", "0 8 * * *"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    assert_eq!(
        response.headers()["location"].to_str().unwrap(),
        "/api/v1/schedules/nightly"
    );
    let created: ScheduleInfo = response.json().await.unwrap();
    assert_eq!(created.name, "nightly");
    assert_eq!(created.cron, "0 8 * * *");
    assert_eq!(created.description, "At 08:00.");
    assert_eq!(created.command, "build --select a");
    assert_eq!(created.args, ["build", "--select", "a"]);
    assert_eq!(created.file_count, 1);
    assert!(created.next_run.unwrap() > created.created_at);
    assert_eq!((created.last_run, created.last_job), (None, None));

    let (status, list) = send(http().get(&base)).await;
    assert_eq!(status, 200);
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1);
    assert_eq!(list["schedules"][0]["id"], created.id.to_string());
    let (status, one) = send(http().get(format!("{base}/nightly"))).await;
    assert_eq!(status, 200);
    assert_eq!(one["name"], "nightly");

    // Run now: an empty body, then `{}` (what Cloud Scheduler sends).
    let response = http()
        .post(format!("{base}/nightly/run"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let job: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/jobs/{}", job["id"].as_str().unwrap())
    );
    assert_eq!(job["args"], json!(["build", "--select", "a"]));
    assert_eq!(job["file_count"], 1);
    let (status, second) = send(http().post(format!("{base}/nightly/run")).json(&json!({}))).await;
    assert_eq!(status, 201, "{second}");
    assert_eq!(s.launcher.launched().len(), 2);
    let (_, one) = send(http().get(format!("{base}/nightly"))).await;
    assert_eq!(one["last_job"], second["id"]);
    assert!(one["last_run"].is_string());

    let (status, body) = send(http().delete(format!("{base}/nightly"))).await;
    assert_eq!((status, body), (204, Value::Null));
    refused(http().get(format!("{base}/nightly")), 404, "not_found").await;
    refused(http().delete(format!("{base}/nightly")), 404, "not_found").await;
    refused(http().post(format!("{base}/nightly/run")), 404, "not_found").await;
    assert!(names(&s).await.is_empty());
    assert_eq!(s.launcher.launched().len(), 2);
}

#[tokio::test]
async fn bad_schedule_requests_are_refused_and_store_nothing() {
    let (s, _) = server().await;
    let base = format!("{}/api/v1/schedules", s.url);
    let (status, _) = send(
        http()
            .post(&base)
            .json(&create_body("nightly", "0 8 * * *")),
    )
    .await;
    assert_eq!(status, 201);

    let message = refused(
        http()
            .post(&base)
            .json(&create_body("nightly", "0 9 * * *")),
        409,
        "already_exists",
    )
    .await;
    assert!(message.contains("nightly"), "{message}");
    for cron in [
        "every day",
        "61 * * * *",
        "0 0 30 2 *",
        "@daily",
        "0 0 8 * * *",
    ] {
        let message = refused(
            http().post(&base).json(&create_body("other", cron)),
            400,
            "invalid_input",
        )
        .await;
        assert!(message.contains("cron"), "{cron}: {message}");
    }
    for name in ["../x", "a b", "", &"x".repeat(101)] {
        let message = refused(
            http().post(&base).json(&create_body(name, "0 8 * * *")),
            400,
            "invalid_input",
        )
        .await;
        assert!(message.contains("schedule name"), "{name}: {message}");
    }
    let mut missing = create_body("other", "0 8 * * *");
    missing["files"][0]["sha256"] = json!(BlobHash::of(b"never uploaded").to_string());
    let message = refused(http().post(&base).json(&missing), 400, "invalid_input").await;
    assert!(
        message.contains("models/a.sql") && message.contains("not uploaded"),
        "{message}"
    );
    let mut bad = Vec::new();
    for (field, value) in [
        ("args", json!(["rm", "-rf"])),
        ("args", json!(["build", "--profiles-dir", "/etc"])),
        (
            "files",
            json!([{"path": "../x.sql", "sha256": BlobHash::of(MODEL).to_string()}]),
        ),
        (
            "files",
            json!([{"path": "x", "sha256": BlobHash::of(MODEL).to_string(), "kind": "symlink"}]),
        ),
        ("unknown", json!(1)),
    ] {
        let mut body = create_body("other", "0 8 * * *");
        body[field] = value;
        bad.push(body);
    }
    bad.push(json!({"name": "other", "args": ["build"]}));
    for body in bad {
        refused(http().post(&base).json(&body), 400, "invalid_input").await;
    }
    refused(
        http()
            .post(&base)
            .body(create_body("other", "0 8 * * *").to_string()),
        415,
        "unsupported_media_type",
    )
    .await;
    // Run now takes an empty body or `{}`, and a name only the schedule has.
    refused(
        http()
            .post(format!("{base}/nightly/run"))
            .json(&json!({"x": 1})),
        400,
        "invalid_input",
    )
    .await;
    refused(
        http().post(format!("{base}/nightly/run")).body("{}"),
        415,
        "unsupported_media_type",
    )
    .await;
    for path in ["..%2Fx", "a%20b", "nope"] {
        refused(http().get(format!("{base}/{path}")), 404, "not_found").await;
        refused(http().post(format!("{base}/{path}/run")), 404, "not_found").await;
        refused(http().delete(format!("{base}/{path}")), 404, "not_found").await;
    }
    let response = http().put(format!("{base}/nightly")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["allow"], "DELETE, GET");

    assert_eq!(names(&s).await, ["nightly"]);
    assert!(s.launcher.launched().is_empty(), "nothing ran");
}

#[tokio::test]
async fn schedules_past_the_cap_are_413() {
    let s = InProcess::start_with_limits(LIMIT, |l| l.max_schedules = 1).await;
    let base = format!("{}/api/v1/schedules", s.url);
    let body = |name: &str| json!({"name": name, "cron": "0 8 * * *", "args": ["build"]});
    let (status, _) = send(http().post(&base).json(&body("one"))).await;
    assert_eq!(status, 201);
    refused(http().post(&base).json(&body("two")), 413, "too_large").await;
    assert_eq!(names(&s).await, ["one"]);
}

#[tokio::test]
async fn the_client_packs_uploads_and_manages_schedules() {
    let (s, client) = server().await;
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("dbt_project.yml"), "name: p\n").unwrap();
    std::fs::create_dir(project.path().join("models")).unwrap();
    std::fs::write(project.path().join("models/a.sql"), MODEL).unwrap();
    let files = dbt_remote_core::package::JobFiles {
        project_dir: project.path().into(),
        ..Default::default()
    };
    let request = dbt_remote_core::client::NewSchedule {
        name: Some("hourly".into()),
        cron: "0 * * * *".into(),
        command: None,
        args: vec!["run".into()],
        elementary: false,
        environment: None,
    };
    let (created, stats) = client.create_schedule(request, &files).await.unwrap();
    assert_eq!(created.name, "hourly");
    assert_eq!(stats.files, created.file_count);
    assert_eq!(stats.uploaded_blobs, 1, "models/a.sql was uploaded already");
    assert_eq!(
        client.list_schedules().await.unwrap(),
        std::slice::from_ref(&created)
    );
    assert_eq!(client.schedule("hourly").await.unwrap().id, created.id);
    let job = client.run_schedule("hourly").await.unwrap();
    assert_eq!(job.file_count, created.file_count);
    assert_eq!(s.launcher.launched(), [job.id]);
    client.delete_schedule("hourly").await.unwrap();
    for e in [
        client.delete_schedule("hourly").await.unwrap_err(),
        client.schedule("hourly").await.unwrap_err(),
        client.run_schedule("hourly").await.unwrap_err(),
    ] {
        assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    }
    let e = client.schedule("../x").await.unwrap_err();
    assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
}

/// What Cloud Scheduler sends: `POST …/run` with the occurrence it fires in
/// `X-CloudScheduler-ScheduleTime`. Each occurrence submits one job, however often it is
/// retried; a time the cron does not match, a future one or a malformed one is a 400.
#[tokio::test]
async fn cloud_schedulers_call_runs_each_occurrence_once() {
    let (s, _) = server().await;
    let base = format!("{}/api/v1/schedules", s.url);
    let (status, _) = send(
        http()
            .post(&base)
            .json(&create_body("minutely", "* * * * *")),
    )
    .await;
    assert_eq!(status, 201);
    let now = chrono::Utc::now();
    let minute = now - chrono::Duration::seconds(i64::from(chrono::Timelike::second(&now)));
    let minute = minute.format("%Y-%m-%dT%H:%M:00Z").to_string();
    let run = |at: &str| {
        http()
            .post(format!("{base}/minutely/run"))
            .header("X-CloudScheduler-ScheduleTime", at)
    };
    let (status, job) = send(run(&minute)).await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["status"], "queued");
    for _ in 0..3 {
        let (status, again) = send(run(&minute)).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["submitted"], false, "{again}");
    }
    let (_, jobs) = send(http().get(format!("{}/api/v1/jobs", s.url))).await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1, "{jobs}");
    let future = (now + chrono::Duration::hours(2))
        .format("%Y-%m-%dT%H:%M:00Z")
        .to_string();
    let odd = minute.replace(":00Z", ":30Z");
    for bad in ["yesterday", future.as_str(), odd.as_str()] {
        let message = refused(run(bad), 400, "invalid_input").await;
        assert!(!message.is_empty());
    }
    let (_, jobs) = send(http().get(format!("{}/api/v1/jobs", s.url))).await;
    assert_eq!(
        jobs["jobs"].as_array().unwrap().len(),
        1,
        "nothing more submitted"
    );
}

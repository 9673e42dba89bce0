//! The 0.4.6 protocol, replayed as the original CLI sends it, against dbt-server in-process
//! (memory store, a launcher that records launches and runs nothing).

mod common;

use std::collections::HashSet;

use common::legacy::{
    is_legacy_line, multipart, overrides_with, post_form, stored_zip, Form, Part,
    CAPTURED_OVERRIDES,
};
use common::{log, strings, InProcess};
use dbt_remote_core::testing::all_jobs;
use dbt_remote_core::{JobId, JobLifecycle, JobMode, JobStatus, LogLevel};
use serde_json::Value;

const MIB: u64 = 1024 * 1024;

/// A manifest over 1 MiB, as real ones easily are.
fn big_manifest() -> Vec<u8> {
    let padding = "x".repeat(1_200_000);
    format!("{{\"metadata\": {{}}, \"padding\": \"{padding}\"}}").into_bytes()
}

fn form(server_url: &str, zip: Vec<u8>) -> Form {
    Form {
        server_url: server_url.into(),
        user_command: "build --select some_model".into(),
        overrides: overrides_with("'target': 'dev', 'full_refresh': True"),
        dbt_project: b"name: jaffle_duckdb\nprofile: jaffle_duckdb\nconfig-version: 2\n".to_vec(),
        profiles: b"jaffle_duckdb:\n  target: dev\n  outputs: {dev: {type: duckdb}}\n".to_vec(),
        packages: None,
        zipped_artifacts: zip,
    }
}

/// The dbt args of the command and overrides of [`form`].
const FORM_ARGS: [&str; 6] = [
    "build",
    "--select",
    "some_model",
    "--target",
    "dev",
    "--full-refresh",
];

fn good_zip() -> Vec<u8> {
    stored_zip(&[
        ("manifest.json", &big_manifest()),
        ("seeds/raw_orders.csv", b"id,amount\n1,10\n"),
    ])
}

async fn json(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

async fn get(url: String) -> (u16, Value) {
    json(reqwest::get(url).await.unwrap()).await
}

/// `GET url` answers 200 with `expected`.
async fn assert_get(url: String, expected: Value) {
    assert_eq!(get(url).await, (200, expected));
}

/// Posts `parts` to `/dbt` of `s`: the status and the JSON body.
async fn post_dbt(s: &InProcess, parts: &[Part<'_>]) -> (u16, Value) {
    json(post_form(&format!("{}/dbt", s.url), parts).await).await
}

/// Posts `f`, which must create a job (202): the body.
async fn created(s: &InProcess, f: &Form) -> Value {
    let (status, body) = post_dbt(s, &f.parts()).await;
    assert_eq!(status, 202, "{body}");
    body
}

/// Posts a job of [`form`] to `s`: its uuid and id.
async fn posted_job(s: &InProcess) -> (String, JobId) {
    let f = form("http://127.0.0.1/", good_zip());
    let (_, body) = post_dbt(s, &f.parts()).await;
    uuid_of(&body)
}

/// The uuid a `/dbt` answer names, and the job id it is.
fn uuid_of(body: &Value) -> (String, JobId) {
    let uuid = body["uuid"].as_str().unwrap().to_string();
    let id = uuid.parse().unwrap();
    (uuid, id)
}

#[tokio::test]
async fn version_is_the_protocol_version() {
    let s = InProcess::start(MIB).await;
    let version = format!("{}/version", s.url);
    assert_get(version, serde_json::json!({"version": "0.4.6"})).await;
}

#[tokio::test]
async fn a_captured_request_creates_a_manifest_job() {
    let s = InProcess::start(8 * MIB).await;
    // The client names another server: links come from the server's own URL.
    let f = form("http://client-side-name.invalid/", good_zip());
    let body = created(&s, &f).await;
    let (uuid, id) = uuid_of(&body);
    assert_eq!(body["message"], format!("Job created with uuid: {uuid}"));
    assert_eq!(body["links"]["run_status"], format!("{}/job/{uuid}", s.url));
    assert_eq!(
        body["links"]["last_logs"],
        format!("{}/job/{uuid}/last_logs", s.url)
    );
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");

    let job = s.store.get_job(id).await.unwrap();
    assert_eq!(s.launcher.launched(), [id]);
    assert_eq!(job.spec.mode, JobMode::Manifest);
    assert_eq!(job.spec.args, FORM_ARGS);
    let paths: Vec<&str> = job.spec.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        ["dbt_project.yml", "manifest.json", "seeds/raw_orders.csv"]
    );
    assert!(
        !job.spec.client_profiles,
        "client profiles are off by default"
    );
    let manifest = s.store.get_blob(&job.spec.files[1].sha256).await.unwrap();
    assert_eq!(manifest.len(), big_manifest().len());

    let run_status = format!("{}/job/{uuid}", s.url);
    assert_get(run_status, serde_json::json!({"run_status": "pending"})).await;
}

#[tokio::test]
async fn the_captured_overrides_alone_add_no_flag_and_packages_are_kept() {
    let s = InProcess::start(8 * MIB).await;
    let mut f = form("http://127.0.0.1:18081/", good_zip());
    f.overrides = CAPTURED_OVERRIDES.into();
    f.packages = Some(b"packages:\n  - local: ../shared_macros\n".to_vec());
    let (_, id) = uuid_of(&created(&s, &f).await);
    let job = s.store.get_job(id).await.unwrap();
    assert_eq!(job.spec.args, ["build", "--select", "some_model"]);
    assert!(job
        .spec
        .files
        .iter()
        .any(|f| f.path.as_str() == "packages.yml"));
}

#[tokio::test]
async fn client_profiles_are_used_only_when_the_server_accepts_them() {
    let s = InProcess::start_with(8 * MIB, |c| {
        c.accept_client_profiles = true;
        c.public_url = Some("https://dbt.example.com".into());
    })
    .await;
    let f = form("http://127.0.0.1:18081/", good_zip());
    let body = created(&s, &f).await;
    let (uuid, id) = uuid_of(&body);
    assert_eq!(
        body["links"]["run_status"],
        format!("https://dbt.example.com/job/{uuid}")
    );
    let job = s.store.get_job(id).await.unwrap();
    assert!(job.spec.client_profiles);
    let profiles = job
        .spec
        .files
        .iter()
        .find(|f| f.path.as_str() == "profiles.yml")
        .unwrap();
    assert_eq!(
        s.store.get_blob(&profiles.sha256).await.unwrap(),
        f.profiles.as_slice()
    );
}

#[tokio::test]
async fn last_logs_returns_each_line_once_in_order_and_logs_returns_all() {
    let s = InProcess::start(8 * MIB).await;
    let (uuid, id) = posted_job(&s).await;
    let last_logs = || get(format!("{}/job/{uuid}/last_logs", s.url));

    let (status, first) = last_logs().await;
    assert_eq!(status, 200);
    assert_eq!(first["run_status"], "pending");
    assert_eq!(first["uuid"], uuid.as_str());
    assert_eq!(first["run_logs"], serde_json::json!([]));

    s.store.start_job(id).await.unwrap();
    for i in 0..3 {
        log(&*s.store, id, LogLevel::Info, format!("line {i}")).await;
    }
    log(&*s.store, id, LogLevel::Error, "two\nlines").await;
    let (_, second) = last_logs().await;
    assert_eq!(second["run_status"], "running");
    let lines = strings(&second["run_logs"]);
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(lines.iter().all(|l| is_legacy_line(l)), "{lines:?}");
    assert!(lines[0].ends_with("\tINFO\tline 0"), "{lines:?}");
    assert!(lines[3].ends_with("\tERROR\ttwo") && lines[4].ends_with("\tERROR\tlines"));
    let (_, third) = last_logs().await;
    assert_eq!(third["run_logs"], serde_json::json!([]), "nothing twice");

    log(&*s.store, id, LogLevel::Info, "last").await;
    s.store
        .finish_job(id, JobStatus::Succeeded, Some(0), None)
        .await
        .unwrap();
    let (_, fourth) = last_logs().await;
    assert_eq!(fourth["run_status"], "success");
    assert_eq!(fourth["run_logs"].as_array().unwrap().len(), 1);

    let (status, all) = get(format!("{}/job/{uuid}/logs", s.url)).await;
    assert_eq!(status, 200);
    assert_eq!(all["run_logs"].as_array().unwrap().len(), 6, "{all}");
    assert_eq!(all["run_status"], "success");
    assert_eq!(all["uuid"], uuid.as_str());
}

#[tokio::test]
async fn concurrent_last_logs_callers_never_get_a_line_twice() {
    let s = InProcess::start(8 * MIB).await;
    let (uuid, id) = posted_job(&s).await;
    let writer = {
        let store = s.store.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                log(&*store, id, LogLevel::Info, format!("record {i}")).await;
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            store
                .finish_job(id, JobStatus::Cancelled, None, None)
                .await
                .unwrap();
        })
    };
    let pollers: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{}/job/{uuid}/last_logs", s.url);
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let (_, body) = get(url.clone()).await;
                    got.extend(strings(&body["run_logs"]));
                    if body["run_status"] == "failed" {
                        return got;
                    }
                }
            })
        })
        .collect();
    writer.await.unwrap();
    let mut all = Vec::new();
    for p in pollers {
        all.extend(p.await.unwrap());
    }
    // A final poll picks up what the pollers left after the status turned final.
    let (_, rest) = get(format!("{}/job/{uuid}/last_logs", s.url)).await;
    assert_eq!(rest["run_status"], "failed", "cancelled is failed here");
    all.extend(strings(&rest["run_logs"]));
    let messages: Vec<String> = all
        .iter()
        .map(|l| l.rsplit('\t').next().unwrap().to_string())
        .collect();
    let unique: HashSet<&String> = messages.iter().collect();
    assert_eq!(messages.len(), 300, "every line once");
    assert_eq!(unique.len(), 300);
}

async fn refused(s: &InProcess, parts: &[Part<'_>], expected_status: u16, needle: &str) {
    let (status, body) = post_dbt(s, parts).await;
    assert_eq!(status, expected_status, "{body}");
    let detail = body["detail"]
        .as_str()
        .unwrap_or_else(|| panic!("no detail: {body}"));
    assert!(
        detail.contains(needle),
        "{detail:?} should mention {needle:?}"
    );
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
}

#[tokio::test]
async fn bad_requests_get_a_detail_and_change_nothing() {
    let s = InProcess::start(2 * MIB).await;
    let with_zip = |zip: Vec<u8>| form("http://x/", zip).parts();

    refused(
        &s,
        &with_zip(b"PK\x03\x04 not really".to_vec()),
        400,
        "not a valid zip",
    )
    .await;
    let escaping = stored_zip(&[("manifest.json", b"{}"), ("../../etc/cron.d/x", b"x")]);
    refused(&s, &with_zip(escaping), 400, "..").await;
    let absolute = stored_zip(&[("manifest.json", b"{}"), ("/tmp/x.csv", b"x")]);
    refused(&s, &with_zip(absolute), 400, "zipped_artifacts").await;
    let no_manifest = stored_zip(&[("seeds/a.csv", b"x")]);
    refused(&s, &with_zip(no_manifest), 400, "manifest.json").await;
    let bomb = stored_zip(&[("manifest.json", &vec![b' '; 3 * MIB as usize])]);
    let (_, bomb_body) = multipart(&with_zip(bomb));
    assert!(bomb_body.len() as u64 > 2 * MIB);
    // Past the body limit, the request itself is refused.
    let bomb = stored_zip(&[("manifest.json", &vec![b' '; 3 * MIB as usize])]);
    refused(&s, &with_zip(bomb), 413, "limit").await;

    let mut f = form("http://x/", good_zip());
    f.overrides = "{'target': 'dev', 'threads': (1, 2)".into();
    refused(&s, &f.parts(), 400, "dbt_native_params_overrides").await;
    f.overrides = "['not', 'a', 'dict']".into();
    refused(&s, &f.parts(), 400, "dbt_native_params_overrides").await;

    let mut f = form("http://x/", good_zip());
    f.user_command = "rm -rf /".into();
    refused(&s, &f.parts(), 400, "unknown dbt command").await;
    f.user_command = "run --profiles-dir /etc".into();
    refused(&s, &f.parts(), 400, "--profiles-dir").await;
    f.user_command = "run --select 'unclosed".into();
    refused(&s, &f.parts(), 400, "quote").await;

    let mut f = form("http://x/", good_zip());
    f.dbt_project = b"name: [unclosed".to_vec();
    refused(&s, &f.parts(), 400, "dbt_project").await;
    let parts: Vec<Part<'_>> = form("http://x/", good_zip())
        .parts()
        .into_iter()
        .filter(|p| p.0 != "zipped_artifacts")
        .collect();
    refused(&s, &parts, 400, "zipped_artifacts is missing").await;

    let r = reqwest::Client::new()
        .post(format!("{}/dbt", s.url))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, body) = json(r).await;
    assert_eq!(status, 400);
    assert!(body["detail"].as_str().unwrap().contains("multipart"));

    assert!(all_jobs(&*s.store).await.is_empty(), "no job was stored");
    assert!(s.launcher.launched().is_empty());

    for path in [
        "job/nope",
        "job/01a20c54-fec2-7178-96ab-21796b082a7f/last_logs",
        "job/01a20c54-fec2-7178-96ab-21796b082a7f/logs",
        "job/01a20c54-fec2-7178-96ab-21796b082a7f",
    ] {
        let (status, body) = get(format!("{}/{path}", s.url)).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("not found"),
            "{body}"
        );
    }
}

fn schedule_parts(cron: &str, name: Option<&str>) -> Vec<Part<'static>> {
    let mut parts = form("http://x/", good_zip()).parts();
    parts.push(("schedule", None, cron.as_bytes().to_vec()));
    if let Some(n) = name {
        parts.push(("schedule_name", None, n.as_bytes().to_vec()));
    }
    parts
}

#[tokio::test]
async fn schedules_are_created_listed_started_and_deleted() {
    let s = InProcess::start(8 * MIB).await;
    let url = format!("{}/schedule", s.url);
    let (status, body) =
        json(post_form(&url, &schedule_parts("0 8 * * *", Some("nightly"))).await).await;
    assert_eq!(status, 201, "{body}");
    let uuid = body["uuid"].as_str().unwrap().to_string();
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("Job build --select some_model scheduled at 0 8 * * * (")
            && message.ends_with(&format!(") with uuid: {uuid}")),
        "{message}"
    );
    let start = format!("{}/schedule/{uuid}/start", s.url);
    assert_eq!(body["links"]["start"], start.as_str());
    assert!(
        s.launcher.launched().is_empty(),
        "nothing runs before its time"
    );

    let (status, dup) =
        json(post_form(&url, &schedule_parts("0 9 * * *", Some("nightly"))).await).await;
    assert_eq!(status, 409, "{dup}");
    assert!(dup["detail"].as_str().unwrap().contains("already exists"));
    for (cron, name) in [("every day", None), ("0 8 * * *", Some("../x"))] {
        let (status, bad) = json(post_form(&url, &schedule_parts(cron, name)).await).await;
        assert_eq!(status, 400, "{bad}");
        assert!(bad["detail"].is_string());
    }

    let (status, list) = get(url.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(
        list,
        serde_json::json!({"schedules": {"nightly": {
            "name": "nightly", "command": "build --select some_model", "schedule": "0 8 * * *",
            "timezone": "UTC", "target": start,
        }}})
    );

    let r = reqwest::Client::new().post(&start).send().await.unwrap();
    let (status, started) = json(r).await;
    assert_eq!(status, 200, "{started}");
    let (_, job_id) = uuid_of(&started);
    assert_eq!(
        started["message"],
        format!("Job created with uuid: {job_id}")
    );
    assert_eq!(s.launcher.launched(), [job_id]);
    let job = s.store.get_job(job_id).await.unwrap();
    assert_eq!(job.spec.args, FORM_ARGS);

    let r = reqwest::Client::new()
        .post(format!(
            "{}/schedule/01a20c54-fec2-7178-96ab-21796b082a7f/start",
            s.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    let delete = || {
        reqwest::Client::new()
            .delete(format!("{url}/nightly"))
            .send()
    };
    let (status, deleted) = json(delete().await.unwrap()).await;
    assert_eq!(
        (status, deleted),
        (
            200,
            serde_json::json!({"message": "Schedule nightly deleted"})
        )
    );
    let (status, again) = json(delete().await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(again["message"]
        .as_str()
        .unwrap()
        .starts_with("Nothing to delete"));
    let (_, list) = get(url).await;
    assert_eq!(list, serde_json::json!({"schedules": {}}));
}

#[tokio::test]
async fn a_schedule_without_a_name_gets_one() {
    let s = InProcess::start(8 * MIB).await;
    let url = format!("{}/schedule", s.url);
    let (status, body) = json(post_form(&url, &schedule_parts("*/5 * * * *", None)).await).await;
    assert_eq!(status, 201, "{body}");
    let (_, list) = get(url).await;
    let names: Vec<&String> = list["schedules"].as_object().unwrap().keys().collect();
    assert_eq!(
        names,
        [&format!("dbt-server-{}", body["uuid"].as_str().unwrap())]
    );
}

/// 0.4.6 schedules are native schedules: each protocol lists, runs and deletes the other's.
#[tokio::test]
async fn legacy_and_native_schedules_are_one_list() {
    let s = InProcess::start(8 * MIB).await;
    let http = reqwest::Client::new();
    let legacy = format!("{}/schedule", s.url);
    let native = format!("{}/api/v1/schedules", s.url);
    let (status, body) =
        json(post_form(&legacy, &schedule_parts("0 8 * * *", Some("old"))).await).await;
    assert_eq!(status, 201, "{body}");
    let created = http
        .post(&native)
        .json(&serde_json::json!({"name": "new", "cron": "30 6 * * 1-5", "args": ["run"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let created: Value = created.json().await.unwrap();

    let (_, list) = get(native.clone()).await;
    let old = &list["schedules"][1];
    assert_eq!(list["schedules"][0]["name"], "new");
    assert_eq!(old["name"], "old");
    assert_eq!(old["id"], body["uuid"]);
    assert_eq!(old["cron"], "0 8 * * *");
    assert_eq!(old["args"], serde_json::json!(FORM_ARGS));
    let (_, list) = get(legacy.clone()).await;
    let start = format!(
        "{}/schedule/{}/start",
        s.url,
        created["id"].as_str().unwrap()
    );
    assert_eq!(list["schedules"]["new"]["target"], start.as_str());
    assert_eq!(list["schedules"]["new"]["schedule"], "30 6 * * 1-5");

    // Run: the 0.4.6 schedule by its name, the native one by its 0.4.6 start link.
    let job: Value = http
        .post(format!("{native}/old/run"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (status, started) = json(http.post(&start).send().await.unwrap()).await;
    assert_eq!(status, 200, "{started}");
    let (_, started) = uuid_of(&started);
    let launched = s.launcher.launched();
    assert_eq!(launched.len(), 2);
    assert_eq!(launched[0].to_string(), job["id"].as_str().unwrap());
    assert_eq!(
        s.store.get_job(launched[0]).await.unwrap().spec.args,
        FORM_ARGS
    );
    assert_eq!(s.store.get_job(started).await.unwrap().spec.args, ["run"]);

    // Delete: each protocol removes the other's.
    let (status, _) = json(http.delete(format!("{legacy}/new")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let gone = http.delete(format!("{native}/old")).send().await.unwrap();
    assert_eq!(gone.status().as_u16(), 204);
    let (_, list) = get(native).await;
    assert_eq!(list, serde_json::json!({"schedules": []}));
}

/// Writes an executable shell script.
fn script(path: &std::path::Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// The original's `'elementary': True` override: the job asks for a report, and its runner
/// (run here on the job the form made, with stand-ins for dbt and edr that record their
/// arguments) runs `edr report` after dbt and stores the page it writes.
#[tokio::test]
async fn the_elementary_override_runs_edr() {
    let s = InProcess::start(8 * MIB).await;
    let mut f = form("http://127.0.0.1:18081/", good_zip());
    f.overrides = overrides_with("'target': 'dev', 'elementary': True");
    let (_, id) = uuid_of(&created(&s, &f).await);
    let job = s.store.get_job(id).await.unwrap();
    assert!(job.spec.elementary);
    assert_eq!(
        job.spec.args,
        ["build", "--select", "some_model", "--target", "dev"]
    );

    let dir = tempfile::tempdir().unwrap();
    let (dbt, edr) = (dir.path().join("dbt"), dir.path().join("edr"));
    script(&dbt, "exit 0");
    let seen = dir.path().join("edr-args");
    script(
        &edr,
        &format!(
            "echo \"$@\" > {}\nwhile [ \"$1\" != --file-path ]; do shift; done\n\
             echo '<html>report</html>' > \"$2\"",
            seen.display()
        ),
    );
    let mut config = dbt_remote_core::runner::RunnerConfig::new(dir.path().join("work"));
    config.python_path = Some(dbt);
    config.edr_path = Some(edr);
    let cancel = tokio_util::sync::CancellationToken::new();
    let done = dbt_remote_core::runner::run_job(s.store.clone(), id, &config, cancel)
        .await
        .unwrap();
    assert_eq!(
        done.status,
        JobStatus::Succeeded,
        "{:?}",
        done.failure_reason
    );
    let report = s
        .store
        .get_artifact(
            id,
            &dbt_remote_core::RelPath::new("elementary_report.html").unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(&report[..], b"<html>report</html>\n");
    let args = std::fs::read_to_string(seen).unwrap();
    assert!(args.starts_with("report --profiles-dir "), "{args}");
    assert!(args.contains("--profile-target dev"), "{args}");
}

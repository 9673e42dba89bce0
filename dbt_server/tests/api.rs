//! The HTTP API over the memory store: every route, every bad input (status, error body,
//! nothing stored), paging, logs and the SSE stream.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{file, job_count, InProcess};
use dbt_remote_core::api::Job;
use dbt_remote_core::client::StreamEvent;
use dbt_remote_core::{
    BlobHash, Client, JobId, JobLifecycle, JobMode, JobStatus, LogLevel, RelPath, StateStore,
};
use futures::StreamExt;
use serde_json::{json, Value};

const LIMIT: u64 = 4096;

async fn server() -> InProcess {
    InProcess::start(LIMIT).await
}

/// A server with one queued job (`build`), and a client of it.
async fn server_with_a_job() -> (InProcess, Client, Job) {
    let s = server().await;
    let client = Client::new(&s.url).unwrap();
    let (job, _) = client.submit(vec!["build".into()], &[]).await.unwrap();
    (s, client, job)
}

/// Sends `request` and checks its error answer: status, `{"error": {"code", "message"}}`, no
/// internal detail. The message.
async fn assert_error(request: reqwest::RequestBuilder, status: u16, code: &str) -> String {
    let response = request.send().await.unwrap();
    assert_eq!(response.status().as_u16(), status, "status");
    let body: Value = response.json().await.expect("error body is JSON");
    assert_eq!(body["error"]["code"], code, "code in {body}");
    let message = body["error"]["message"]
        .as_str()
        .expect("message")
        .to_string();
    assert!(!message.is_empty());
    for leak in ["/tmp", "/root", "panicked", "backtrace", "src/", ".rs:"] {
        assert!(!message.contains(leak), "{message:?} leaks {leak:?}");
    }
    message
}

/// Sends each of `requests`, which must all be refused with `status` and `code`.
async fn assert_errors(requests: Vec<reqwest::RequestBuilder>, status: u16, code: &str) {
    for request in requests {
        assert_error(request, status, code).await;
    }
}

#[tokio::test]
async fn check_and_health_answer() {
    let s = server().await;
    let check = common::get_json(format!("{}/check", s.url)).await;
    assert_eq!(
        check,
        json!({ "response": format!("Running dbt-server on port {}", s.port) })
    );
    let health = common::get_json(format!("{}/health", s.url)).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn openapi_document_is_served_and_matches_the_routes() {
    let s = server().await;
    let served = reqwest::get(format!("{}/api/v1/openapi.json", s.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let checked_in =
        std::fs::read_to_string(common::repo_root().join("docs/openapi.json")).unwrap();
    assert_eq!(served, checked_in, "served document = docs/openapi.json");
    let doc: Value = serde_json::from_str(&served).unwrap();
    let paths = doc["paths"].as_object().expect("paths");
    let http = reqwest::Client::new();
    let methods = ["get", "post", "put", "delete", "patch"];
    for (path, ops) in paths {
        let concrete = path
            .replace("{id}", "01a20c54-fec2-7178-96ab-21796b082a7f")
            .replace("{sha256}", &BlobHash::of(b"x").to_string())
            .replace("{name}", "manifest.json");
        for method in methods {
            let documented = ops.get(method).is_some();
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = http
                .request(m, format!("{}{concrete}", s.url))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            let unrouted = status == 405 || (status == 404 && body.contains("no such route"));
            // `PUT /api/v1/blobs/missing` is `PUT /api/v1/blobs/{sha256}` with a bad hash.
            let other_route = paths.iter().any(|(other, ops)| {
                other != path && ops.get(method).is_some() && template_matches(other, &concrete)
            });
            if other_route {
                continue;
            }
            assert_eq!(
                !unrouted,
                documented,
                "{} {path}: documented={documented}, answered {status} {body}",
                method.to_uppercase()
            );
        }
    }
    assert!(paths.contains_key("/api/v1/jobs/{id}/logs/stream"));
}

/// Whether `path` fits the OpenAPI `template` (`{x}` is one segment; a last `{name}`, the rest).
fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    let last_is_rest = t.last() == Some(&"{name}");
    if p.len() < t.len() || (p.len() > t.len() && !last_is_rest) {
        return false;
    }
    t.iter().zip(&p).all(|(a, b)| a.starts_with('{') || a == b)
}

#[tokio::test]
async fn upload_then_submit_get_and_list() {
    let s = server().await;
    let client = Client::new(&s.url).unwrap();
    let files = [
        file("dbt_project.yml", b"name: p\n"),
        file("models/a.sql", b"select 1\n"),
    ];
    let hashes: Vec<_> = files.iter().map(|f| f.sha256.clone()).collect();
    assert_eq!(client.missing_blobs(&hashes).await.unwrap(), hashes);
    let (job, stats) = client.submit(vec!["build".into()], &files).await.unwrap();
    assert_eq!((stats.files, stats.uploaded_blobs), (2, 2));
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.file_count, 2);
    assert!(client.missing_blobs(&hashes).await.unwrap().is_empty());
    // Resubmitting the same project uploads nothing.
    let (again, stats) = client.submit(vec!["run".into()], &files).await.unwrap();
    assert_eq!((stats.uploaded_blobs, stats.uploaded_bytes), (0, 0));
    assert_eq!(s.launcher.launched(), [job.id, again.id]);
    assert_eq!(client.job(job.id).await.unwrap(), job);

    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs", s.url))
        .json(&json!({ "args": ["seed"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let third: Value = r.json().await.unwrap();
    assert_eq!(
        location,
        format!("/api/v1/jobs/{}", third["id"].as_str().unwrap())
    );

    let page = client.jobs(None, Some(2), None).await.unwrap();
    assert_eq!(page.jobs.len(), 2);
    assert_eq!(page.jobs[0].args, ["seed"], "newest first");
    let rest = client
        .jobs(None, Some(2), page.next_page_token.as_deref())
        .await
        .unwrap();
    assert_eq!(rest.jobs.len(), 1);
    assert_eq!(rest.jobs[0].id, job.id);
    assert!(rest.next_page_token.is_none());
    s.store
        .finish_job(job.id, JobStatus::Failed, Some(1), None)
        .await
        .unwrap();
    let failed = client.jobs(Some("failed"), None, None).await.unwrap();
    assert_eq!(
        failed.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        [job.id]
    );
}

#[tokio::test]
async fn bad_submissions_are_refused_and_store_nothing() {
    let s = server().await;
    let http = reqwest::Client::new();
    let good = BlobHash::of(b"select 1");
    s.store
        .put_blob(&good, Bytes::from_static(b"select 1"))
        .await
        .unwrap();
    let project = BlobHash::of(b"name: shop\n");
    s.store
        .put_blob(&project, Bytes::from_static(b"name: shop\n"))
        .await
        .unwrap();
    let shop = json!([{ "path": "dbt_project.yml", "sha256": project }]);
    let long = "e".repeat(65);
    let cases: Vec<(&str, Value)> = vec![
        (
            "environment with a slash",
            json!({ "args": ["build"], "environment": "prod/x" }),
        ),
        (
            "empty environment",
            json!({ "args": ["build"], "environment": "" }),
        ),
        (
            "long environment",
            json!({ "args": ["build"], "environment": long }),
        ),
        (
            "environment not a string",
            json!({ "args": ["build"], "environment": 1 }),
        ),
        (
            "bad defer_to",
            json!({ "args": ["build"], "defer_to": "../prod", "files": shop }),
        ),
        (
            "defer_to an environment without a success",
            json!({ "args": ["build"], "defer_to": "prod", "files": shop }),
        ),
        (
            "defer_to without a project name",
            json!({ "args": ["build"], "defer_to": "prod" }),
        ),
        (
            "retry deferring",
            json!({ "args": ["retry"], "defer_to": "prod", "files": shop }),
        ),
        (
            "retry_of for another command",
            json!({ "args": ["build"], "retry_of": JobId::new(), "files": shop }),
        ),
        (
            "retry_of not an id",
            json!({ "args": ["retry"], "retry_of": "latest" }),
        ),
        (
            "retry_of an unknown job",
            json!({ "args": ["retry"], "retry_of": JobId::new(), "files": shop }),
        ),
        (
            "retry without a failed job",
            json!({ "args": ["retry"], "files": shop }),
        ),
        (
            "files_of with files",
            json!({ "args": ["build"], "files_of": JobId::new(), "files": shop }),
        ),
        (
            "files_of an unknown job",
            json!({ "args": ["build"], "files_of": JobId::new() }),
        ),
        ("empty args", json!({ "args": [] })),
        ("empty command", json!({ "args": [""] })),
        ("unknown command", json!({ "args": ["rm", "-rf", "/"] })),
        ("half a command", json!({ "args": ["docs"] })),
        (
            "server-owned flag",
            json!({ "args": ["build", "--profiles-dir", "/etc"] }),
        ),
        ("no args", json!({ "files": [] })),
        ("args not strings", json!({ "args": [1, 2] })),
        (
            "unknown field",
            json!({ "args": ["build"], "shell": "rm -rf /" }),
        ),
        (
            "absolute path",
            json!({ "args": ["build"], "files": [{ "path": "/etc/passwd", "sha256": good }] }),
        ),
        (
            "dotdot path",
            json!({ "args": ["build"], "files": [{ "path": "models/../../x.sql", "sha256": good }] }),
        ),
        (
            "symlink",
            json!({ "args": ["build"], "files": [{ "path": "models/a.sql", "sha256": good, "kind": "symlink" }] }),
        ),
        (
            "device",
            json!({ "args": ["build"], "files": [{ "path": "dev/null", "sha256": good, "kind": "device" }] }),
        ),
        (
            "bad hash",
            json!({ "args": ["build"], "files": [{ "path": "a.sql", "sha256": "abc" }] }),
        ),
        (
            "duplicate path",
            json!({ "args": ["build"], "files": [{ "path": "a.sql", "sha256": good }, { "path": "a.sql", "sha256": good }] }),
        ),
        (
            "manifest mode without a manifest",
            json!({ "args": ["build"], "mode": "manifest", "files": [{ "path": "a.sql", "sha256": good }] }),
        ),
        (
            "unknown mode",
            json!({ "args": ["build"], "mode": "shell" }),
        ),
        (
            "blob not uploaded",
            json!({ "args": ["build"], "files": [{ "path": "a.sql", "sha256": BlobHash::of(b"nope") }] }),
        ),
    ];
    for (name, body) in cases {
        let message = assert_error(
            http.post(format!("{}/api/v1/jobs", s.url)).json(&body),
            400,
            "invalid_input",
        )
        .await;
        assert!(!message.is_empty(), "{name}");
    }
    for raw in ["", "{", "not json", "[]", "{\"args\": \"build\"}"] {
        let message = assert_error(
            http.post(format!("{}/api/v1/jobs", s.url))
                .header("content-type", "application/json")
                .body(raw),
            400,
            "invalid_input",
        )
        .await;
        assert!(message.starts_with("invalid JSON body"), "{message}");
    }
    assert_eq!(job_count(&*s.store).await, 0, "nothing stored");
    assert!(s.launcher.launched().is_empty(), "nothing launched");
}

#[tokio::test]
async fn oversized_uploads_get_413_and_store_nothing() {
    let s = server().await;
    let http = reqwest::Client::new();
    let big = vec![b'x'; LIMIT as usize + 1];
    let hash = BlobHash::of(&big);
    // Without a content-length (chunked), the limit holds as well.
    let chunks = futures::stream::iter(
        big.chunks(1000)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let blob = format!("{}/api/v1/blobs/{hash}", s.url);
    let uploads = vec![
        http.put(&blob).body(big.clone()),
        http.put(&blob).body(reqwest::Body::wrap_stream(chunks)),
    ];
    assert_errors(uploads, 413, "too_large").await;
    assert_eq!(
        s.store
            .missing_blobs(std::slice::from_ref(&hash))
            .await
            .unwrap(),
        [hash]
    );
    let args: Vec<String> = (0..1000).map(|i| format!("--vars-{i}")).collect();
    assert_error(
        http.post(format!("{}/api/v1/jobs", s.url))
            .json(&json!({ "args": args })),
        413,
        "too_large",
    )
    .await;
    assert_eq!(job_count(&*s.store).await, 0);
}

#[tokio::test]
async fn bad_blobs_are_refused() {
    let s = server().await;
    let http = reqwest::Client::new();
    let claimed = BlobHash::of(b"one thing");
    let blobs = format!("{}/api/v1/blobs", s.url);
    let bad = vec![
        http.put(format!("{blobs}/{claimed}")).body("another thing"),
        http.put(format!("{blobs}/..%2F..%2Fetc")).body("x"),
        http.post(format!("{blobs}/missing"))
            .json(&json!({ "hashes": ["../x"] })),
    ];
    assert_errors(bad, 400, "invalid_input").await;
    assert_eq!(
        s.store
            .missing_blobs(std::slice::from_ref(&claimed))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn unknown_jobs_get_404() {
    let s = server().await;
    let http = reqwest::Client::new();
    let mut unknown = vec![http.get(format!("{}/no/such/route", s.url))];
    for id in [
        "01a20c54-fec2-7178-96ab-21796b082a7f",
        "not-a-uuid",
        "..%2F..%2Fetc",
    ] {
        for (method, path) in [
            ("GET", ""),
            ("POST", "/cancel"),
            ("GET", "/logs"),
            ("GET", "/logs/stream"),
            ("GET", "/artifacts"),
            ("GET", "/artifacts/manifest.json"),
        ] {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            unknown.push(http.request(m, format!("{}/api/v1/jobs/{id}{path}", s.url)));
        }
    }
    assert_errors(unknown, 404, "not_found").await;
    let delete = http.delete(format!("{}/api/v1/jobs", s.url));
    assert_error(delete, 405, "method_not_allowed").await;
}

#[tokio::test]
async fn bad_queries_get_400() {
    let (s, _client, job) = server_with_a_job().await;
    let http = reqwest::Client::new();
    let job = format!("/api/v1/jobs/{}", job.id);
    let queries = [
        "/api/v1/jobs?status=bogus".to_string(),
        "/api/v1/jobs?limit=0".to_string(),
        "/api/v1/jobs?limit=100000".to_string(),
        "/api/v1/jobs?limit=abc".to_string(),
        "/api/v1/jobs?page_token=xyz".to_string(),
        "/api/v1/jobs?colour=blue".to_string(),
        "/api/v1/jobs?environment=a/b".to_string(),
        "/api/v1/jobs?environment=".to_string(),
        format!("{job}/logs?after=abc"),
        format!("{job}/logs?after=-1"),
        format!("{job}/logs/stream?after=x"),
        format!("{job}/artifacts/..%2Fjob.json"),
    ];
    let bad = queries.iter().map(|q| http.get(format!("{}{q}", s.url)));
    assert_errors(bad.collect(), 400, "invalid_input").await;
}

#[tokio::test]
async fn cancel_a_queued_job() {
    let (_s, client, job) = server_with_a_job().await;
    let cancelled = client.cancel(job.id).await.unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(cancelled.cancel_requested);
    // Idempotent.
    assert_eq!(
        client.cancel(job.id).await.unwrap().status,
        JobStatus::Cancelled
    );
}

/// Writes the record `line {i}` into job `id`'s log.
async fn log_line(store: &dyn StateStore, id: JobId, i: u32) {
    common::log(store, id, LogLevel::Info, format!("line {i}")).await;
}

#[tokio::test]
async fn logs_page_and_stream_live_with_resume() {
    let (s, client, job) = server_with_a_job().await;
    let store = s.store.clone();
    for i in 1..=3 {
        log_line(&*store, job.id, i).await;
    }
    let page = client.logs(job.id, 1, Some(1)).await.unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(page.records[0].seq, 2);
    assert_eq!(page.next_after, 2);
    assert!(!page.done);

    // A follower sees the first records before the job ends, and the rest as they come.
    let mut stream = std::pin::pin!(client.follow(job.id, 0));
    for i in 1..=3 {
        match stream.next().await.unwrap().unwrap() {
            StreamEvent::Record(r) => assert_eq!(r.entry.message, format!("line {i}")),
            other => panic!("unexpected {other:?}"),
        }
    }
    let writer = tokio::spawn(async move {
        for i in 4..=6 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            log_line(&*store, job.id, i).await;
        }
        store
            .finish_job(job.id, JobStatus::Succeeded, Some(0), None)
            .await
            .unwrap();
    });
    let mut rest = Vec::new();
    while let Some(event) = stream.next().await {
        rest.push(event.unwrap());
    }
    writer.await.unwrap();
    assert_eq!(rest.len(), 4);
    assert!(matches!(&rest[3], StreamEvent::End(j) if j.status == JobStatus::Succeeded));

    // Last-Event-ID resumes after that record.
    let text = reqwest::Client::new()
        .get(format!("{}/api/v1/jobs/{}/logs/stream", s.url, job.id))
        .header("last-event-id", "4")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("id:5") || text.contains("id: 5"), "{text}");
    assert!(!text.contains("line 4"));
    assert!(text.contains("line 6"), "{text}");
    assert!(
        text.contains("event:end") || text.contains("event: end"),
        "{text}"
    );
    let page = client.logs(job.id, 0, None).await.unwrap();
    assert_eq!(page.records.len(), 6);
    assert!(page.done);
}

#[tokio::test]
async fn artifacts_are_listed_and_downloaded() {
    let (s, client, job) = server_with_a_job().await;
    let name = RelPath::new("run_results.json").unwrap();
    s.store
        .put_artifact(job.id, &name, Bytes::from_static(b"{\"results\":[]}"))
        .await
        .unwrap();
    let list = client.artifacts(job.id).await.unwrap();
    assert_eq!(list.artifacts.len(), 1);
    assert_eq!(list.artifacts[0].size, 14);
    assert_eq!(
        client.artifact(job.id, "run_results.json").await.unwrap(),
        &b"{\"results\":[]}"[..]
    );
    let err = client.artifact(job.id, "catalog.json").await.unwrap_err();
    assert!(
        matches!(err, dbt_remote_core::Error::NotFound { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_manifest_job_can_be_submitted_natively() {
    let s = server().await;
    let manifest = Bytes::from_static(b"{\"nodes\": {}}");
    let hash = BlobHash::of(&manifest);
    s.store.put_blob(&hash, manifest).await.unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs", s.url))
        .json(&json!({ "args": ["build"], "mode": "manifest", "files": [{ "path": "manifest.json", "sha256": hash }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let job: Value = r.json().await.unwrap();
    assert_eq!(job["mode"], "manifest");
    let id = job["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        s.store.get_job(id).await.unwrap().spec.mode,
        JobMode::Manifest
    );
}

//! dbt's docs site served by dbt-server: per job and as the latest of a project and target,
//! with the real dbt-server binary and real `dbt docs generate` on the example project.

mod common;

use std::time::Duration;

use common::{repo_root, RealServer};
use dbt_remote_core::api::Job;
use dbt_remote_core::package::pack_project;
use dbt_remote_core::{Client, JobStatus};
use reqwest::{redirect, StatusCode};

const LONG: Duration = Duration::from_secs(180);

async fn run(client: &Client, dbt_args: &[&str]) -> Job {
    let files = pack_project(&repo_root().join("examples/jaffle_duckdb")).unwrap();
    let args = dbt_args.iter().map(|s| s.to_string()).collect();
    let job = client.submit(args, &files).await.unwrap().0;
    let done = tokio::time::timeout(LONG, client.wait(job.id, Duration::from_millis(200)))
        .await
        .expect("the job ends")
        .unwrap();
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}");
    done
}

/// A client that does not follow redirects, so that they can be checked.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap()
}

async fn get(url: &str) -> (StatusCode, Option<String>, String) {
    let answer = http().get(url).send().await.unwrap();
    let status = answer.status();
    let location = answer
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string());
    (status, location, answer.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_generate_is_served_per_job_and_as_the_latest_of_its_project_and_target() {
    let server = RealServer::start(common::server_binary());
    let client = Client::new(&server.url).unwrap();
    let url = |path: &str| format!("{}{path}", server.url);

    let dev = run(&client, &["docs", "generate"]).await;
    // The project from dbt_project.yml, the target from the profile's default.
    assert_eq!(dev.project.as_deref(), Some("jaffle_duckdb"));
    assert_eq!(dev.target.as_deref(), Some("dev"));
    let site = format!("/api/v1/jobs/{}/docs/", dev.id);
    assert_eq!(
        client.docs_links(&dev),
        vec![
            ("docs", url(&site)),
            ("latest docs", url("/api/v1/docs/jaffle_duckdb/dev/"))
        ]
    );

    let (status, location, _) = get(&url(site.trim_end_matches('/'))).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(location.as_deref(), Some(site.as_str()));
    let (status, _, index) = get(&url(&site)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        index.contains("<title>dbt Docs</title>"),
        "{}",
        &index[..200]
    );
    // What dbt's index.html loads, relative to it.
    let (status, _, manifest) = get(&url(&format!("{site}manifest.json?cb=1"))).await;
    assert_eq!(status, StatusCode::OK);
    let manifest: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(manifest["metadata"]["project_name"], "jaffle_duckdb");
    assert!(manifest["nodes"]["model.jaffle_duckdb.orders"].is_object());
    let (status, _, catalog) = get(&url(&format!("{site}catalog.json"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(serde_json::from_str::<serde_json::Value>(&catalog).unwrap()["nodes"].is_object());
    // Only the site's files are beneath it.
    let (status, _, body) = get(&url(&format!("{site}run_results.json"))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Latest: a redirect to the job's own site, file by file.
    let (status, location, _) = get(&url("/api/v1/docs/jaffle_duckdb/dev/")).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(location.as_deref(), Some(site.as_str()));
    let (_, location, _) = get(&url("/api/v1/docs/jaffle_duckdb/dev/catalog.json")).await;
    assert_eq!(location, Some(format!("{site}catalog.json")));

    // Another target has its own latest; dev's stays where it was.
    let ci = run(&client, &["docs", "generate", "--target", "ci"]).await;
    assert_eq!(ci.target.as_deref(), Some("ci"));
    let (_, location, _) = get(&url("/api/v1/docs/jaffle_duckdb/ci/")).await;
    assert_eq!(location, Some(format!("/api/v1/jobs/{}/docs/", ci.id)));
    let (_, location, _) = get(&url("/api/v1/docs/jaffle_duckdb/dev/")).await;
    assert_eq!(location.as_deref(), Some(site.as_str()));
    let listed = client.jobs_matching("jaffle_duckdb", "ci").await;
    assert_eq!(listed, vec![ci.id]);

    // A job that made no docs, a target without docs, a name that is no name.
    let parse = run(&client, &["parse"]).await;
    assert!(client.docs_links(&parse).is_empty());
    let (status, _, body) = get(&url(&format!("/api/v1/jobs/{}/docs/", parse.id))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("docs generate"), "{body}");
    let (status, _, body) = get(&url("/api/v1/docs/jaffle_duckdb/prod/")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("\\\"prod\\\""), "{body}");
    let (status, _, body) = get(&url("/api/v1/docs/a%20b/dev/")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

/// The jobs list filtered by project and target, through the raw API.
trait JobsMatching {
    async fn jobs_matching(&self, project: &str, target: &str) -> Vec<dbt_remote_core::JobId>;
}

impl JobsMatching for Client {
    async fn jobs_matching(&self, project: &str, target: &str) -> Vec<dbt_remote_core::JobId> {
        let url = format!(
            "{}/api/v1/jobs?project={project}&target={target}",
            self.base_url()
        );
        let list: dbt_remote_core::api::JobList =
            reqwest::get(url).await.unwrap().json().await.unwrap();
        list.jobs.into_iter().map(|j| j.id).collect()
    }
}

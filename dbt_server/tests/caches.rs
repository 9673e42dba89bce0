//! The partial-parse and deps caches end to end: the real dbt-server binary, job processes and
//! real dbt on a copy of the example project (DuckDB). Needs the venv of
//! scripts/setup-python.sh.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{repo_root, RealServer};
use dbt_remote_core::api::Job;
use dbt_remote_core::package::pack_project;
use dbt_remote_core::{Client, JobStatus};

const LONG: Duration = Duration::from_secs(180);
const PARSE_RESTORED: &str = "dbt-remote: restored dbt's partial parse state";
const DEPS_RESTORED: &str =
    "dbt-remote: restored dbt_packages from the deps cache (dbt deps skipped)";
const DEPS_RUN: &str = "dbt-remote: installing packages (dbt deps)";

/// A copy of the example project in `dir`, without dbt's own output.
fn copy_example(dir: &Path) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if ["target", "logs", "dbt_packages"].contains(&name.to_str().unwrap()) {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &to.join(&name));
            } else {
                std::fs::copy(entry.path(), to.join(&name)).unwrap();
            }
        }
    }
    let project = dir.join("project");
    copy(&repo_root().join("examples/jaffle_duckdb"), &project);
    project
}

/// Submits `args` on the project in `project` and follows the job to its end: the messages
/// of its records and the final job.
async fn run(client: &Client, project: &Path, args: &[&str]) -> (Vec<String>, Job) {
    let files = pack_project(project).unwrap();
    let args = args.iter().map(|s| s.to_string()).collect();
    let job = client.submit(args, &files).await.unwrap().0;
    let (records, done) = common::follow_to_end(client, job.id, LONG).await;
    let messages: Vec<String> = records.into_iter().map(|(_, r)| r.entry.message).collect();
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}\n{messages:#?}");
    (messages, done)
}

fn has(messages: &[String], text: &str) -> bool {
    messages.iter().any(|m| m.contains(text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_parse_starts_from_the_first_ones_state() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example(tmp.path());
    let server = RealServer::start(common::server_binary());
    let client = Client::new(&server.url).unwrap();

    let (first, _) = run(&client, &project, &["parse"]).await;
    assert!(!has(&first, PARSE_RESTORED), "nothing to restore yet");

    let customers = project.join("models/marts/customers.sql");
    let marker = format!("-- edited for the parse cache test {}", uuid_like());
    let mut sql = std::fs::read_to_string(&customers).unwrap();
    sql.push_str(&format!("\n{marker}\n"));
    std::fs::write(&customers, sql).unwrap();

    let (second, job) = run(&client, &project, &["parse", "--log-level", "debug"]).await;
    assert!(has(&second, PARSE_RESTORED), "{second:#?}");
    assert!(has(&second, "Partial parsing enabled"), "{second:#?}");
    assert!(has(&second, "1 files changed"), "{second:#?}");
    assert!(
        has(
            &second,
            "Partial parsing: updated file: jaffle_duckdb://models/marts/customers.sql"
        ),
        "{second:#?}"
    );
    assert!(!has(&second, "Unable to do partial parsing"), "{second:#?}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&client.artifact(job.id, "manifest.json").await.unwrap()).unwrap();
    let raw = manifest["nodes"]["model.jaffle_duckdb.customers"]["raw_code"]
        .as_str()
        .unwrap();
    assert!(raw.contains(&marker), "the edit is in the manifest: {raw}");

    // dbt's state holds absolute paths (a seed is loaded from its node's root_path): a build
    // from a restored state reads the seeds of its own work dir, not a previous job's.
    let (third, job) = run(&client, &project, &["build", "--exclude", "slow_model"]).await;
    assert!(has(&third, PARSE_RESTORED), "{third:#?}");
    assert_eq!(job.status, JobStatus::Succeeded, "{third:#?}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&client.artifact(job.id, "manifest.json").await.unwrap()).unwrap();
    let root = manifest["nodes"]["seed.jaffle_duckdb.raw_customers"]["root_path"]
        .as_str()
        .unwrap();
    assert!(root.ends_with(&job.id.to_string()), "{root}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_parse_cache_nothing_is_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example(tmp.path());
    let server = RealServer::start_in(common::server_binary(), tmp.path(), &["--no-parse-cache"]);
    let client = Client::new(&server.url).unwrap();
    run(&client, &project, &["parse"]).await;
    let (second, _) = run(&client, &project, &["parse", "--log-level", "debug"]).await;
    assert!(!has(&second, PARSE_RESTORED), "{second:#?}");
    assert!(has(&second, "Unable to do partial parsing"), "{second:#?}");
    assert!(
        !tmp.path().join("state/cache/partial-parse").exists(),
        "nothing is stored"
    );
}

/// A dbt package as a `.tar.gz` (one top folder, as dbt expects), served on 127.0.0.1 by a
/// server that counts its downloads.
struct PackageServer {
    url: String,
    downloads: Arc<AtomicUsize>,
    serving: tokio::task::JoinHandle<()>,
}

impl Drop for PackageServer {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

impl PackageServer {
    async fn start(dir: &Path) -> PackageServer {
        let src = dir.join("pkg-src");
        dbt_remote_test_support::files::write_files(
            &src,
            &[
                (
                    "tiny_pkg/dbt_project.yml",
                    "name: tiny_pkg\nversion: \"1.0.0\"\nconfig-version: 2\n",
                ),
                (
                    "tiny_pkg/macros/answer.sql",
                    "{% macro answer() %}42{% endmacro %}\n",
                ),
            ],
        );
        let tarball = dir.join("tiny_pkg.tar.gz");
        let status = std::process::Command::new("tar")
            .arg("czf")
            .arg(&tarball)
            .arg("-C")
            .arg(&src)
            .arg("tiny_pkg")
            .status()
            .unwrap();
        assert!(status.success());
        let body = bytes::Bytes::from(std::fs::read(&tarball).unwrap());
        let downloads = Arc::new(AtomicUsize::new(0));
        let counted = downloads.clone();
        use warp::Filter;
        let route = warp::path!("tiny_pkg.tar.gz").map(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            warp::http::Response::builder()
                .header("content-type", "application/gzip")
                .body(body.clone())
                .unwrap()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = tokio::spawn(warp::serve(route).incoming(listener).run());
        PackageServer {
            url: format!("http://{addr}/tiny_pkg.tar.gz"),
            downloads,
            serving,
        }
    }

    fn downloads(&self) -> usize {
        self.downloads.load(Ordering::SeqCst)
    }
}

/// The packages.yml of the tiny package served at `url`, with a `comment` line.
fn packages_yml(url: &str, comment: &str) -> String {
    format!("# {comment}\npackages:\n  - tarball: {url}\n    name: tiny_pkg\n")
}

/// Adds the tiny package and a model that calls its macro (dbt refuses to parse the project
/// without the package installed) to `project`.
fn use_tiny_package(project: &Path, url: &str) {
    dbt_remote_test_support::files::write_files(
        project,
        &[
            ("packages.yml", &packages_yml(url, "first")),
            (
                "models/uses_pkg.sql",
                "select {{ tiny_pkg.answer() }} as answer\n",
            ),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_packages_are_restored_until_the_package_files_change() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example(tmp.path());
    let packages = PackageServer::start(tmp.path()).await;
    use_tiny_package(&project, &packages.url);
    let server = RealServer::start(common::server_binary());
    let client = Client::new(&server.url).unwrap();

    let (first, _) = run(&client, &project, &["parse"]).await;
    assert!(
        has(&first, DEPS_RUN) && !has(&first, DEPS_RESTORED),
        "{first:#?}"
    );
    // dbt deps fetches a tarball more than once (to hash it for the lock file, to install it).
    let one_install = packages.downloads();
    assert!(one_install > 0, "dbt deps downloaded the package");

    let (second, _) = run(&client, &project, &["parse"]).await;
    assert!(has(&second, DEPS_RESTORED), "{second:#?}");
    assert!(!has(&second, DEPS_RUN), "dbt deps is not run: {second:#?}");
    assert_eq!(
        packages.downloads(),
        one_install,
        "nothing downloaded again"
    );

    std::fs::write(
        project.join("packages.yml"),
        packages_yml(&packages.url, "second"),
    )
    .unwrap();
    let (third, _) = run(&client, &project, &["parse"]).await;
    assert!(
        has(&third, DEPS_RUN) && !has(&third, DEPS_RESTORED),
        "{third:#?}"
    );
    assert_eq!(
        packages.downloads(),
        2 * one_install,
        "a changed packages.yml installs again"
    );
}

/// A value that differs between runs, without another dependency.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos:x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_deps_cache_false_every_job_runs_dbt_deps() {
    let tmp = tempfile::tempdir().unwrap();
    let project = copy_example(tmp.path());
    let packages = PackageServer::start(tmp.path()).await;
    use_tiny_package(&project, &packages.url);
    let server = RealServer::start_with_env(
        common::server_binary(),
        tmp.path(),
        &[],
        &[("DBT_REMOTE_DEPS_CACHE", "false")],
    );
    let client = Client::new(&server.url).unwrap();
    for _ in 0..2 {
        let (messages, _) = run(&client, &project, &["parse"]).await;
        assert!(has(&messages, DEPS_RUN), "{messages:#?}");
        assert!(!has(&messages, DEPS_RESTORED), "{messages:#?}");
    }
    assert!(
        !tmp.path().join("state/cache/deps").exists(),
        "nothing is stored"
    );
    assert!(
        tmp.path().join("state/cache/partial-parse").exists(),
        "the parse cache is still on"
    );
}

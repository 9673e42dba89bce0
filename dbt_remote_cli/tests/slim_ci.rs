//! Slim CI with real dbt (docs/slim-ci.md): jobs of an environment, `--defer-to` it with
//! `state:modified+`, and `dbt-remote retry` of a failed job, by the dbt-remote binary against
//! a real dbt-server. The jobs share one DuckDB file (`JAFFLE_DUCKDB_PATH`, passed to jobs with
//! `--job-env`), as prod and CI share a warehouse, so deferred references resolve.

use std::collections::BTreeSet;
use std::path::Path;

use dbt_remote_core::api::Job;
use dbt_remote_core::client::JobFilter;
use dbt_remote_core::Client;
use dbt_remote_test_support::server::RealServer;

mod common;
use common::{project_copy, run, server_binary, text};

const ORDERS: &str = "model.jaffle_duckdb.orders";
const CUSTOMERS: &str = "model.jaffle_duckdb.customers";

struct Ci {
    server: RealServer,
    client: Client,
    runtime: tokio::runtime::Runtime,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Ci {
    fn start() -> Ci {
        let (state, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let db = data.path().join("warehouse.duckdb");
        let server = RealServer::start_with_env(
            &server_binary(),
            state.path(),
            &["--job-env", "JAFFLE_DUCKDB_PATH", "--dbt-workers", "0"],
            &[("JAFFLE_DUCKDB_PATH", db.as_os_str())],
        );
        let client = Client::new(&server.url).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        Ci {
            server,
            client,
            runtime,
            _dirs: (state, data),
        }
    }

    /// Runs dbt-remote in `project` against the server; its exit code, stdout and stderr.
    fn run(&self, project: &Path, args: &[&str]) -> (Option<i32>, String, String) {
        let args = [args, &["--server-url", &self.server.url]].concat();
        let out = run(project, &args);
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    }

    fn jobs(&self, filter: JobFilter) -> Vec<Job> {
        let list = self.client.jobs_where(&filter, Some(100), None);
        self.runtime.block_on(list).unwrap().jobs
    }

    fn latest(&self) -> Job {
        self.jobs(JobFilter::default()).remove(0)
    }

    /// `(unique_id, status)` of every result in the job's `run_results.json`.
    fn results(&self, job: &Job) -> Vec<(String, String)> {
        let bytes = self
            .runtime
            .block_on(self.client.artifact(job.id, "run_results.json"))
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        doc["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let field = |k: &str| r[k].as_str().unwrap().to_string();
                (field("unique_id"), field("status"))
            })
            .collect()
    }
}

fn ids(results: &[(String, String)]) -> BTreeSet<String> {
    results.iter().map(|(id, _)| id.clone()).collect()
}

fn edit(project: &Path, file: &str, from: &str, to: &str) {
    let path = project.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} has no {from:?}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

#[test]
fn a_pull_request_builds_what_changed_deferring_to_prod_and_retries_its_failure() {
    let ci = Ci::start();
    let project = project_copy();
    let dir = project.path();
    let modified = ["build", "--select", "state:modified+", "--defer"];

    // No prod job yet: a clear error, exit 64, no job stored.
    let (code, _, stderr) = ci.run(dir, &[&modified[..], &["--defer-to", "prod"]].concat());
    assert_eq!(code, Some(64), "{stderr}");
    assert!(
        stderr.contains("environment \"prod\" has no succeeded job of project \"jaffle_duckdb\""),
        "{stderr}"
    );
    assert!(ci.jobs(JobFilter::default()).is_empty());
    // A name that cannot be an environment: refused before anything is sent.
    let (code, _, stderr) = ci.run(dir, &["build", "--environment", "prod/../x"]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("invalid environment name"), "{stderr}");

    // Prod builds everything.
    let (code, _, stderr) = ci.run(dir, &["build", "--environment", "prod"]);
    assert_eq!(code, Some(0), "{stderr}");
    let prod = ci.latest();
    assert_eq!(prod.environment.as_deref(), Some("prod"));
    assert_eq!(prod.project.as_deref(), Some("jaffle_duckdb"));
    let everything = ids(&ci.results(&prod));
    assert!(everything.contains("model.jaffle_duckdb.stg_orders"));

    // A pull request changes one model: only it and its children are built, against prod's
    // state, with no manifest sent from here.
    edit(
        dir,
        "models/marts/orders.sql",
        "select\n    orders.order_id,",
        "select -- changed in a pull request\n    orders.order_id,",
    );
    let pr = [
        &modified[..],
        &["--defer-to", "prod", "--environment", "ci"],
    ]
    .concat();
    let (code, stdout, stderr) = ci.run(dir, &pr);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&format!("dbt's state: the artifacts of job {}", prod.id)),
        "{stderr}"
    );
    let job = ci.latest();
    assert_eq!(job.state_of, Some(prod.id));
    let built = ids(&ci.results(&job));
    let nodes: BTreeSet<&str> = built
        .iter()
        .map(String::as_str)
        .filter(|id| !id.starts_with("test."))
        .collect();
    assert_eq!(nodes, BTreeSet::from([ORDERS, CUSTOMERS]), "{built:?}");
    assert!(
        built.len() > 2 && built.len() < everything.len(),
        "{built:?}"
    );
    assert!(
        stdout.contains("OK created sql table model main.orders"),
        "{stdout}"
    );
    assert!(!stdout.contains("stg_orders"), "{stdout}");

    // The jobs list filters by environment and project.
    let of = |environment: &str| {
        ci.jobs(JobFilter {
            environment: Some(environment.into()),
            project: Some("jaffle_duckdb".into()),
            ..Default::default()
        })
    };
    assert_eq!(
        of("prod").iter().map(|j| j.id).collect::<Vec<_>>(),
        [prod.id]
    );
    assert_eq!(of("ci").iter().map(|j| j.id).collect::<Vec<_>>(), [job.id]);
    let (code, stdout, _) = ci.run(dir, &["jobs", "--environment", "prod"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains(&prod.id.to_string()) && !stdout.contains(&job.id.to_string()));

    // A failing model fails the CI build; its children are skipped.
    let good = "coalesce(order_payments.total_amount, 0) as amount";
    let bad = "cast('x' as integer) as amount";
    edit(dir, "models/marts/orders.sql", good, bad);
    let (code, _, stderr) = ci.run(dir, &["build", "--environment", "ci"]);
    assert_eq!(code, Some(1), "{stderr}");
    let failed = ci.latest();
    let retryable: BTreeSet<String> = ci
        .results(&failed)
        .into_iter()
        .filter(|(_, status)| matches!(status.as_str(), "error" | "fail" | "skipped"))
        .map(|(id, _)| id)
        .collect();
    assert!(
        retryable.contains(ORDERS) && retryable.contains(CUSTOMERS),
        "{retryable:?}"
    );
    assert!(!retryable.contains("model.jaffle_duckdb.stg_orders"));

    // Nothing to retry in an environment without failures.
    let (code, _, stderr) = ci.run(dir, &["retry", "--environment", "prod"]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("no failed job of project"), "{stderr}");
    // --job belongs to retry.
    let (code, _, stderr) = ci.run(dir, &["build", "--job", &failed.id.to_string()]);
    assert_eq!(code, Some(64), "{stderr}");

    // Fixed, `dbt-remote retry` runs the failed and skipped nodes only, and succeeds.
    edit(dir, "models/marts/orders.sql", bad, good);
    let (code, stdout, stderr) = ci.run(dir, &["retry", "--environment", "ci"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let retry = ci.latest();
    assert_eq!(retry.state_of, Some(failed.id));
    // Labelled with the target the failed job ran against, which dbt's retry runs with.
    let target = failed.target.clone().expect("the failed job's target");
    assert!(
        retry
            .args
            .windows(2)
            .any(|w| w == ["--target", target.as_str()]),
        "{:?}",
        retry.args
    );
    assert_eq!(retry.target, failed.target);
    let results = ci.results(&retry);
    assert_eq!(
        ids(&results),
        retryable,
        "retried exactly the failed and skipped nodes"
    );
    assert!(
        results.iter().all(|(_, s)| s == "success" || s == "pass"),
        "{results:?}"
    );

    // --job picks the failed job by id.
    let (code, stdout, stderr) = ci.run(dir, &["retry", "--job", &failed.id.to_string()]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert_eq!(ci.latest().state_of, Some(failed.id));
}

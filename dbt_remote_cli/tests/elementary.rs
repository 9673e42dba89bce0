//! `dbt-remote <cmd> --elementary` against a real dbt-server with real dbt: the job runs
//! Elementary's `edr report` after dbt and stores the HTML report (real `edr` 0.25.1 from
//! scripts/setup-elementary.sh, on the example project with the offline Elementary package);
//! a report that fails is one warning and the job keeps dbt's exit code (a stand-in `edr`
//! that fails, and a missing one). docs/elementary.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use dbt_remote_core::{Client, JobId, LogLevel, LogRecord};
use dbt_remote_test_support::server::{repo_root, RealServer};

mod common;
use common::{project_copy, run, server_binary, text};

/// Elementary's `edr` for these tests: `DBT_REMOTE_EDR_PATH`, else the venv that
/// scripts/setup-elementary.sh makes. Fails (never skips) with what to do when there is none.
fn edr_path() -> PathBuf {
    if let Some(p) = std::env::var_os("DBT_REMOTE_EDR_PATH") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    let edr = PathBuf::from(home).join(".cache/dbt-remote/edr-venv/bin/edr");
    assert!(
        edr.is_file(),
        "no edr at {}: run scripts/setup-elementary.sh (or set DBT_REMOTE_EDR_PATH)",
        edr.display()
    );
    edr
}

/// The offline dbt packages (docs/elementary.md): `DBT_REMOTE_DBT_PACKAGES`, else
/// `<repo>/../shared/dbt-packages`.
fn dbt_packages() -> PathBuf {
    std::env::var_os("DBT_REMOTE_DBT_PACKAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/dbt-packages"))
}

/// The server's profiles: the example project's and Elementary's, on one DuckDB file at an
/// absolute path (edr runs its own dbt project elsewhere: a relative path would be another
/// file there).
fn write_profiles(dir: &Path, database: &Path) {
    let db = database.display();
    let profiles = format!(
        "jaffle_duckdb:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      \
         path: \"{db}\"\n      threads: 4\n\
         elementary:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      \
         path: \"{db}\"\n      schema: main_elementary\n      threads: 4\n"
    );
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("profiles.yml"), profiles).unwrap();
}

/// Adds Elementary to the example project in `project` as docs/elementary.md says: the two
/// packages copied inside the project, listed as `local:`, and the `dbt_project.yml` lines.
fn add_elementary(project: &Path) {
    let packages = project.join("packages");
    std::fs::create_dir_all(&packages).unwrap();
    for package in ["elementary-0.25.1", "dbt_utils-1.3.3"] {
        let from = dbt_packages().join(package);
        assert!(from.is_dir(), "{} is missing", from.display());
        let status = Command::new("cp")
            .arg("-R")
            .arg(&from)
            .arg(&packages)
            .status()
            .unwrap();
        assert!(status.success());
    }
    std::fs::write(
        project.join("packages.yml"),
        "packages:\n  - local: packages/elementary-0.25.1\n  - local: packages/dbt_utils-1.3.3\n",
    )
    .unwrap();
    let config = project.join("dbt_project.yml");
    let mut yml = std::fs::read_to_string(&config).unwrap();
    yml.push_str(
        "  elementary:\n    +schema: elementary\n\n\
         flags:\n  require_explicit_package_overrides_for_builtin_materializations: false\n",
    );
    std::fs::write(config, yml).unwrap();
}

/// A dbt-server over `dir` with the profiles of [`write_profiles`] and `edr`.
fn server(dir: &Path, edr: &Path) -> RealServer {
    let profiles = dir.join("profiles");
    write_profiles(&profiles, &dir.join("jaffle.duckdb"));
    RealServer::start_without_profiles_dir(
        &server_binary(),
        dir,
        &[
            "--profiles-dir",
            profiles.to_str().unwrap(),
            "--edr-path",
            edr.to_str().unwrap(),
        ],
        &[] as &[(&str, &str)],
    )
}

/// The job's whole log.
fn logs(url: &str, id: JobId) -> Vec<LogRecord> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(url).unwrap();
    runtime.block_on(client.logs(id, 0, None)).unwrap().records
}

/// The id of the newest job.
fn last_job(url: &str) -> JobId {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(url).unwrap();
    runtime
        .block_on(client.jobs(None, Some(1), None))
        .unwrap()
        .jobs[0]
        .id
}

/// The warnings of dbt-remote itself in `records`.
fn remote_warnings(records: &[LogRecord]) -> Vec<&str> {
    records
        .iter()
        .filter(|r| r.entry.source == "dbt-remote" && r.entry.level == LogLevel::Warn)
        .map(|r| r.entry.message.as_str())
        .collect()
}

#[test]
fn build_elementary_stores_a_report_with_the_project_s_models() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), &edr_path());
    let url = server.url.as_str();
    let project = project_copy();
    add_elementary(project.path());

    let started = Instant::now();
    let out = run(
        project.path(),
        &["build", "--elementary", "--server-url", url],
    );
    let took = started.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    eprintln!("build --elementary (dbt build, then edr report) took {took:?}");

    let id = last_job(url);
    let report_url = format!("{url}/api/v1/jobs/{id}/artifacts/elementary_report.html");
    let last_lines: Vec<&str> = stderr.lines().rev().take(2).collect();
    assert_eq!(
        last_lines[0],
        format!("dbt-remote: Elementary report: {report_url}"),
        "{stderr}"
    );
    assert!(last_lines[1].contains("succeeded"), "{stderr}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(url).unwrap();
    let html = runtime
        .block_on(client.artifact(id, "elementary_report.html"))
        .unwrap();
    let html = String::from_utf8_lossy(&html);
    assert!(html.contains("<html"), "not an HTML page");
    for model in ["stg_orders", "stg_customers", "customers", "orders"] {
        assert!(html.contains(model), "the report lacks the model {model}");
    }
    let records = logs(url, id);
    assert!(
        records
            .iter()
            .any(|r| r.entry.source == "edr" && r.entry.message.starts_with("edr: ")),
        "edr's output is not in the log"
    );
    assert!(remote_warnings(&records).is_empty(), "{records:?}");
}

#[test]
fn a_failing_or_missing_edr_is_one_warning_and_dbt_s_exit_code_stays() {
    let dir = tempfile::tempdir().unwrap();
    let failing = dir.path().join("failing-edr");
    std::fs::write(&failing, "#!/bin/sh\necho 'edr: boom' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(
        &failing,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let project = project_copy();
    let cases: [(&Path, &[&str], i32, &str); 3] = [
        (&failing, &["seed"], 0, "edr exited with code 1"),
        (
            &failing,
            &["run", "-s", "fail_on_demand", "--vars", "{fail: true}"],
            1,
            "edr exited with code 1",
        ),
        (
            Path::new("/nonexistent/edr"),
            &["seed"],
            0,
            "could not start edr",
        ),
    ];
    let mut servers = Vec::new();
    for (edr, args, code, why) in cases {
        let state = dir.path().join(format!("server-{}", servers.len()));
        let server = server(&state, edr);
        let url = server.url.clone();
        servers.push(server);
        let out = run(
            project.path(),
            &[args, &["--elementary", "--server-url", &url]].concat(),
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(!stderr.contains("Elementary report:"), "{stderr}");
        let records = logs(&url, last_job(&url));
        let warnings = remote_warnings(&records);
        assert_eq!(warnings.len(), 1, "{args:?}: {warnings:?}");
        assert!(
            warnings[0].contains("no Elementary report") && warnings[0].contains(why),
            "{warnings:?}"
        );
        assert!(
            !warnings[0].contains(dir.path().to_str().unwrap()),
            "a server path reached the client: {warnings:?}"
        );
    }
}

/// The job of `--elementary` says so, and a job without it runs no edr (the stand-in would
/// have left a warning).
#[test]
fn without_elementary_no_edr_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), Path::new("/nonexistent/edr"));
    let url = server.url.as_str();
    let project = project_copy();
    let out = run(project.path(), &["seed", "--server-url", url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let records = logs(url, last_job(url));
    assert!(remote_warnings(&records).is_empty(), "{records:?}");
}

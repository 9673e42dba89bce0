//! The dbt-remote binary against a real dbt-server with real dbt on the example project, and
//! its settings, help and error texts.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use dbt_remote_core::{Client, JobStatus};
use dbt_remote_test_support::server::{eventually, RealServer};

mod common;
use common::{cli, project_copy, run, run_with, server_binary, text};

/// The args of `dbt-remote {before} run` of the model that fails on demand, made to fail, on
/// the server at `url`.
fn failing_run<'a>(url: &'a str, before: &[&'a str]) -> Vec<&'a str> {
    let run = [
        "run",
        "-s",
        "fail_on_demand",
        "--vars",
        "{fail: true}",
        "--server-url",
        url,
    ];
    [before, &run].concat()
}

#[test]
fn dbt_commands_exit_with_dbts_code() {
    let server = RealServer::start(&server_binary());
    let project = project_copy();
    let url = server.url.as_str();
    let out = run(project.path(), &["build", "--server-url", url]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("Completed successfully") && stdout.contains("Done. PASS="),
        "{stdout}"
    );
    assert!(stdout.contains("OK created sql table model main.orders"));

    let out = run(project.path(), &failing_run(url, &[]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("[ERROR]"));
    // --log-level error shows errors only.
    let out = run(project.path(), &failing_run(url, &["--log-level", "error"]));
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout
            .lines()
            .all(|l| l.contains("[ERROR]") || l.starts_with("        ")),
        "{stdout}"
    );

    let out = run(
        project.path(),
        &["compile", "--vars", "{not: [yaml", "--server-url", url],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "dbt's own error code: {}",
        text(&out.stderr)
    );
}

#[test]
fn detach_then_logs_status_jobs_and_artifacts() {
    let server = RealServer::start(&server_binary());
    let project = project_copy();
    let url = server.url.as_str();
    let vars = "{\"note\": \"two words\", \"quote\": \"it's\"}";
    let out = run(
        project.path(),
        &["--server-url", url, "--detach", "build", "--vars", vars],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 36, "{id:?}");

    let out = run(
        project.path(),
        &["logs", &id, "--follow", "--server-url", url],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Done. PASS="));
    let out = run(project.path(), &["logs", &id, "--server-url", url]);
    assert!(
        text(&out.stdout).contains("Done. PASS="),
        "logs without --follow print it all"
    );

    let out = run(
        project.path(),
        &["status", &id, "--json", "--server-url", url],
    );
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["status"], "succeeded");
    assert_eq!(
        job["args"],
        serde_json::json!(["build", "--vars", vars]),
        "quoting preserved"
    );

    let out = run(project.path(), &["jobs", "--server-url", url]);
    let listing = text(&out.stdout);
    assert!(
        listing.contains(&id) && listing.contains("succeeded"),
        "{listing}"
    );

    let out = run(project.path(), &["artifacts", &id, "--server-url", url]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let manifest = project.path().join("target/manifest.json");
    let parsed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    assert!(parsed["nodes"]
        .as_object()
        .unwrap()
        .contains_key("model.jaffle_duckdb.orders"));
    let elsewhere = tempfile::tempdir().unwrap();
    let dir = elsewhere.path().to_str().unwrap();
    let out = run(
        project.path(),
        &["artifacts", &id, "--output-dir", dir, "--server-url", url],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(elsewhere.path().join("run_results.json").is_file());

    let out = run(
        project.path(),
        &[
            "status",
            "01a20c54-fec2-7178-96ab-21796b082a7f",
            "--server-url",
            url,
        ],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("not found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_the_remote_job() {
    let server = RealServer::start(&server_binary());
    let project = project_copy();
    let child = std::process::Command::new(cli())
        .args([
            "run",
            "--select",
            "slow_model",
            "--vars",
            "{slow_seconds: 300}",
            "--server-url",
            &server.url,
        ])
        .current_dir(project.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = Client::new(&server.url).unwrap();
    let job = eventually(
        Duration::from_secs(120),
        "the slow model to run",
        || async {
            let jobs = client.jobs(Some("running"), None, None).await.ok()?;
            let job = jobs.jobs.first()?.clone();
            let page = client.logs(job.id, 0, None).await.ok()?;
            page.records
                .iter()
                .any(|r| {
                    r.entry
                        .message
                        .contains("START python table model main.slow_model")
                })
                .then_some(job)
        },
    )
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.status.code(), Some(130), "{}", text(&status.stderr));
    assert!(text(&status.stderr).contains(&format!("cancelling job {}", job.id)));
    assert_eq!(
        client.job(job.id).await.unwrap().status,
        JobStatus::Cancelled
    );
}

/// A server started with a static token: dbt-remote runs dbt with DBT_REMOTE_TOKEN, and
/// without it (or with a wrong one) exits 77 saying what to set.
#[test]
fn a_server_with_a_static_token() {
    let token = "e2e-static-token";
    let hash = dbt_remote_core::BlobHash::of(token.as_bytes()).to_string();
    let state = tempfile::tempdir().unwrap();
    let server = RealServer::start_in(
        &server_binary(),
        state.path(),
        &["--auth-token-sha256", &hash],
    );
    let project = project_copy();
    let url = server.url.as_str();
    let args = ["seed", "--server-url", url];
    let out = run_with(project.path(), &args, &[("DBT_REMOTE_TOKEN", token)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Completed successfully"));
    let out = run_with(
        project.path(),
        &["jobs", "--server-url", url],
        &[("DBT_REMOTE_TOKEN", token)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("succeeded"),
        "{}",
        text(&out.stdout)
    );

    for env in [&[][..], &[("DBT_REMOTE_TOKEN", "wrong")][..]] {
        for args in [&args[..], &["jobs", "--server-url", url][..]] {
            let out = run_with(project.path(), args, env);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(77), "{args:?} {env:?}: {stderr}");
            assert!(
                stderr.contains("unauthenticated") && stderr.contains(url),
                "{stderr}"
            );
            assert!(stderr.contains("hint: set DBT_REMOTE_TOKEN"), "{stderr}");
            assert!(
                !stderr.contains("wrong"),
                "the token is never printed: {stderr}"
            );
        }
    }
    let out = run_with(project.path(), &["debug", "--server-url", url], &[]);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("FAIL  credentials refused"),
        "{}",
        text(&out.stdout)
    );
}

/// DBT_REMOTE_AUTH_TOKEN: the server accepts that token, and the jobs' dbt does not see it.
#[test]
fn a_server_token_from_the_environment_stays_out_of_the_jobs() {
    let token = "e2e-env-token";
    let state = tempfile::tempdir().unwrap();
    let server = RealServer::start_with_env(
        &server_binary(),
        state.path(),
        &[],
        &[("DBT_REMOTE_AUTH_TOKEN", token)],
    );
    let project = project_copy();
    let url = server.url.as_str();
    let sql = "select '{{ env_var(\"DBT_REMOTE_AUTH_TOKEN\", \"absent\") }}' as seen";
    let args = ["show", "--inline", sql, "--server-url", url];
    let out = run_with(project.path(), &args, &[("DBT_REMOTE_TOKEN", token)]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("absent") && !stdout.contains(token),
        "{stdout}"
    );
    let out = run_with(project.path(), &["jobs", "--server-url", url], &[]);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
}

#[test]
fn config_subcommands_and_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    assert_eq!(run(cwd, &["config", "init"]).status.code(), Some(0));
    let written = std::fs::read_to_string(cwd.join("dbt_remote.yml")).unwrap();
    assert!(
        written.contains("server_url: http://127.0.0.1:8001"),
        "{written}"
    );
    let out = run(
        cwd,
        &[
            "config",
            "set",
            "server_url=http://10.1.2.3:9000",
            "location=europe-west1",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(cwd, &["config", "get", "server_url", "location"]);
    assert_eq!(
        text(&out.stdout),
        "server_url: http://10.1.2.3:9000\nlocation: europe-west1\n"
    );
    let out = run(cwd, &["config", "delete", "location"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&run(cwd, &["config", "get", "location"]).stdout),
        "location: \n"
    );

    assert_eq!(
        run(cwd, &["config", "delete", "project_dir"]).status.code(),
        Some(0)
    );
    let show = text(&run(cwd, &["config", "show"]).stdout);
    assert!(
        show.contains("server_url      http://10.1.2.3:9000  (dbt_remote.yml)"),
        "{show}"
    );
    assert!(show.contains("project_dir     .  (default)"), "{show}");
    let out = Command::new(cli())
        .args(["config", "show"])
        .current_dir(cwd)
        .env("DBT_REMOTE_SERVER_URL", "http://env:1")
        .output()
        .unwrap();
    assert!(text(&out.stdout).contains("server_url      http://env:1  (environment)"));

    // Bad keys and values change nothing and say why.
    for args in [
        &["config", "set", "colour=blue"][..],
        &["config", "set", "server_url=nope"],
        &["config", "set", "elementary=maybe"],
        &["config", "set", "novalue"],
        &["config", "get", "colour"],
    ] {
        let out = run(cwd, args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(
            text(&out.stderr).starts_with("dbt-remote: error: "),
            "{args:?}"
        );
    }
    assert!(!std::fs::read_to_string(cwd.join("dbt_remote.yml"))
        .unwrap()
        .contains("colour"));
    std::fs::write(cwd.join("dbt_remote.yml"), "server_url: [1, 2]\n").unwrap();
    let out = run(cwd, &["jobs"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("dbt_remote.yml"));
}

#[test]
fn refusals_before_contacting_any_server() {
    let project = project_copy();
    let cwd = project.path();
    // Nothing listens on port 9 of 127.0.0.1: these must fail before trying.
    let url = "http://127.0.0.1:9";
    let out = run(cwd, &["rm", "-rf", "/", "--server-url", url]);
    assert_eq!(out.status.code(), Some(64));
    let empty = tempfile::tempdir().unwrap();
    let out = run(empty.path(), &["build", "--server-url", url]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("dbt_project.yml cannot be read"),
        "{}",
        text(&out.stderr)
    );
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("x.sql"), "select 1").unwrap();
    std::os::unix::fs::symlink(outside.path().join("x.sql"), cwd.join("models/x.sql")).unwrap();
    let out = run(cwd, &["build", "--server-url", url]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("outside the project"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_file(cwd.join("models/x.sql")).unwrap();
    let out = run(cwd, &["build", "--server-url", url]);
    assert_eq!(out.status.code(), Some(69), "unreachable server");
    assert!(text(&out.stderr).contains("hint: is dbt-server running there?"));
}

/// The original CLI's habits: `dbt-remote run --help` inside a project prints help and sends
/// nothing; `--log-level` is also dbt's own log level on the server.
#[test]
fn help_sends_nothing_and_the_log_level_reaches_dbt() {
    let server = RealServer::start(&server_binary());
    let project = project_copy();
    let url = server.url.as_str();
    for help in [
        &["run", "--help"][..],
        &["build", "--select", "orders", "-h"],
    ] {
        let out = run(project.path(), &[help, &["--server-url", url]].concat());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("Usage: dbt-remote"),
            "{}",
            text(&out.stdout)
        );
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = Client::new(url).unwrap();
    let jobs = |c: &Client| runtime.block_on(c.jobs(None, Some(10), None)).unwrap().jobs;
    assert!(jobs(&client).is_empty(), "--help submitted a job");

    let out = run(
        project.path(),
        &["--log-level", "warn", "parse", "--server-url", url],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let job = jobs(&client).remove(0);
    assert_eq!(job.args, ["parse", "--log-level", "warn"]);
    assert!(
        runtime
            .block_on(client.wait(job.id, Duration::from_millis(200)))
            .unwrap()
            .status
            == JobStatus::Succeeded
    );
    // dbt itself logged at warn: none of its info lines were stored.
    let logs = runtime.block_on(client.logs(job.id, 0, None)).unwrap();
    let from_dbt = |r: &&dbt_remote_core::LogRecord| r.entry.source == "dbt";
    assert!(
        !logs
            .records
            .iter()
            .filter(from_dbt)
            .any(|r| r.entry.level == dbt_remote_core::LogLevel::Info),
        "{:?}",
        logs.records
    );
}

/// `--help` texts and error texts are what tests/snapshots/ holds (UPDATE_SNAPSHOTS=1 rewrites).
#[test]
fn help_and_error_texts_match_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("help", &["--help"]),
        ("help-config", &["config", "--help"]),
        ("help-debug", &["debug", "--help"]),
        ("help-jobs", &["jobs", "--help"]),
        ("help-logs", &["logs", "--help"]),
        ("help-status", &["status", "--help"]),
        ("help-cancel", &["cancel", "--help"]),
        ("help-artifacts", &["artifacts", "--help"]),
        ("help-run", &["run", "--help"]),
        (
            "help-docs-generate",
            &["docs", "generate", "-h", "--select", "x"],
        ),
        ("help-schedules", &["schedules", "--help"]),
        ("help-schedules-create", &["schedules", "create", "--help"]),
        ("error-unknown-command", &["frobnicate"]),
        ("error-bad-level", &["build", "--log-level", "loud"]),
        ("error-bad-setting", &["config", "set", "colour=blue"]),
        ("error-bad-job-id", &["status", "nope"]),
    ];
    let snapshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let mut mismatches = Vec::new();
    for (name, args) in cases {
        let out = run(dir.path(), args);
        let actual = format!(
            "$ dbt-remote {}\nexit: {}\n--- stdout\n{}--- stderr\n{}",
            args.join(" "),
            out.status.code().unwrap_or(-1),
            text(&out.stdout),
            text(&out.stderr)
        );
        let path = snapshots.join(format!("{name}.txt"));
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != actual {
            mismatches.push(format!("{}:\n{actual}", path.display()));
        }
    }
    assert!(
        mismatches.is_empty(),
        "snapshots differ (UPDATE_SNAPSHOTS=1 to accept):\n{}",
        mismatches.join("\n")
    );
}

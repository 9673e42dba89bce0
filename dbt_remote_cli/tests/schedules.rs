//! `dbt-remote schedules` end to end: the real binaries, real dbt on the example project.

use std::process::Output;

use dbt_remote_test_support::server::RealServer;

mod common;
use common::{project_copy, run, server_binary, text};

/// Asserts `out` exited with `code`; its stdout.
fn exited(out: &Output, code: i32) -> String {
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    stdout
}

/// A copy of the example project, to edit.

#[test]
fn schedules_run_the_files_stored_at_creation() {
    let server = RealServer::start(&server_binary());
    let project = project_copy();
    let dir = project.path();
    let url = server.url.as_str();
    let model = ["run", "--select", "fail_on_demand"];

    // Own options may come before `schedules` or after the dbt command.
    let create = [
        &["--server-url", url, "schedules", "create"][..],
        &["--name", "nightly", "--cron", "0 8 * * *"],
        &model,
        &["--project-dir", ".", "--environment", "prod"],
    ]
    .concat();
    assert_eq!(exited(&run(dir, &create), 0).trim(), "nightly");

    // Edited locally so that it fails (the cast that fail_on_demand's `fail` var makes fail in
    // DuckDB): a schedule that packed the project again would now exit 1.
    let edited =
        "{{ config(materialized='table') }}\nselect cast('edited locally' as integer) as ok\n";
    std::fs::write(dir.join("models/fail_on_demand.sql"), edited).unwrap();
    // The schedule runs the files sent when it was created.
    let ran = run(
        dir,
        &[
            "schedules",
            "run",
            "nightly",
            "--follow",
            "--server-url",
            url,
        ],
    );
    let stdout = exited(&ran, 0);
    assert!(
        stdout.contains("OK created sql table model main.fail_on_demand"),
        "{stdout}"
    );
    assert!(!stdout.contains("edited locally"), "{stdout}");
    let job_id = text(&ran.stderr)
        .split_whitespace()
        .skip_while(|w| *w != "job")
        .nth(1)
        .unwrap_or_default()
        .to_string();

    let list = exited(&run(dir, &["schedules", "list", "--server-url", url]), 0);
    let header = list.lines().next().unwrap_or_default();
    for column in [
        "NAME",
        "ENVIRONMENT",
        "CRON",
        "DESCRIPTION",
        "NEXT RUN",
        "LAST JOB",
    ] {
        assert!(header.contains(column), "{list}");
    }
    let row = list
        .lines()
        .find(|l| l.starts_with("nightly"))
        .expect(&list);
    // The schedule's environment: each run is a job of it.
    assert!(row.contains("  prod  "), "the environment in {row:?}");
    for cell in [
        "0 8 * * *",
        "At 08:00.",
        &job_id,
        "dbt run --select fail_on_demand",
    ] {
        assert!(row.contains(cell), "{cell:?} in {row:?}");
    }

    exited(
        &run(
            dir,
            &["schedules", "delete", "nightly", "--server-url", url],
        ),
        0,
    );
    let again = run(
        dir,
        &["schedules", "delete", "nightly", "--server-url", url],
    );
    exited(&again, 64);
    assert!(
        text(&again.stderr).contains("not found"),
        "{}",
        text(&again.stderr)
    );
    let list = exited(&run(dir, &["schedules", "list", "--server-url", url]), 0);
    assert_eq!(list.lines().count(), 1, "only the header: {list}");
}

#[test]
fn bad_schedule_commands_are_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: each refusal comes before any request.
    let url = "http://127.0.0.1:9";
    for (args, says) in [
        (
            &["schedules", "create", "--cron", "0 8 * * *", "rm", "-rf"][..],
            "unknown dbt command",
        ),
        (
            &[
                "schedules",
                "create",
                "--name",
                "a b",
                "--cron",
                "0 8 * * *",
                "build",
            ],
            "schedule name",
        ),
        (
            &["schedules", "create", "--cron", "8 * *", "build"],
            "cron expression",
        ),
        (&["schedules", "delete", "../x"], "schedule name"),
        (&["schedules", "run", "a/b"], "schedule name"),
        (&["schedules", "create", "build"], "--cron"),
    ] {
        let out = run(dir.path(), &[args, &["--server-url", url]].concat());
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

//! Job containment under attack, against the real dbt-server binary (and real dbt where dbt
//! matters): path escapes through `dbt_project.yml`, dbt's arguments and `local:` packages are
//! refused at submit with nothing stored; dbt's target and log paths are forced into the work
//! dir; a `profiles.yml` in the project is never used; the server's secrets stay out of job
//! code; the work root and the state dir never nest; server paths stay out of job messages.
//! See docs/security/jobs.md.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::legacy::{post_form, stored_zip, Form, CAPTURED_OVERRIDES};
use common::{follow_to_end, repo_root, server_binary, RealServer};
use dbt_remote_core::auth::ClientAuth;
use dbt_remote_core::package::{pack_project, ProjectFile};
use dbt_remote_core::{BlobHash, Client, Error, JobStatus, RelPath};

fn example() -> PathBuf {
    repo_root().join("examples/jaffle_duckdb")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn file(path: &str, content: impl Into<Bytes>) -> ProjectFile {
    ProjectFile::new(RelPath::new(path).unwrap(), content.into())
}

/// The example project with `changes` replacing or adding files.
fn project_with(changes: Vec<ProjectFile>) -> Vec<ProjectFile> {
    let mut files = pack_project(&example()).unwrap();
    for change in changes {
        files.retain(|f| f.path != change.path);
        files.push(change);
    }
    files
}

/// The example's dbt_project.yml with the top-level settings of `extra`, each replacing the
/// example's line of the same key.
fn dbt_project(extra: &str) -> String {
    let base = std::fs::read_to_string(example().join("dbt_project.yml")).unwrap();
    let keys: Vec<&str> = extra
        .lines()
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim()))
        .collect();
    let kept: Vec<&str> = base
        .lines()
        .filter(|l| !keys.iter().any(|k| l.starts_with(&format!("{k}:"))))
        .collect();
    format!("{}\n{extra}\n", kept.join("\n"))
}

/// Asserts a 400 whose message names `needle` and no path of the server's.
fn assert_refused(
    result: dbt_remote_core::Result<impl std::fmt::Debug>,
    needle: &str,
    server: &Path,
) {
    match result {
        Err(Error::Server {
            status, message, ..
        }) => {
            assert_eq!(status, 400, "{message}");
            assert!(
                message.contains(needle),
                "{message:?} should name {needle:?}"
            );
            let dir = server.to_string_lossy();
            assert!(
                !message.contains(dir.as_ref()),
                "{message:?} leaks a server path"
            );
        }
        other => panic!("expected a 400 naming {needle:?}, got {other:?}"),
    }
}

async fn job_count(client: &Client) -> usize {
    client.jobs(None, None, None).await.unwrap().jobs.len()
}

/// `dbt_project.yml` path settings, `local:` packages and dbt arguments that resolve outside the
/// work dir are refused with 400 at submit, on the native API and the 0.4.6 adapter, and no job
/// is stored. No dbt runs, so nothing reaches the canary dir.
#[tokio::test]
async fn path_escapes_are_refused_at_submit_and_nothing_is_stored() {
    let server = RealServer::start(server_binary());
    let client = Client::new(&server.url).unwrap();
    let canary = server.dir.join("canary");
    let escape = "../../canary"; // <work root>/<id>/../../canary = <server dir>/canary

    for (setting, needle) in [
        (format!("target-path: {escape}"), "target-path"),
        ("log-path: /var/tmp/escape".to_string(), "log-path"),
        (
            format!("packages-install-path: {escape}"),
            "packages-install-path",
        ),
        (format!("model-paths: [models, {escape}]"), "model-paths"),
        (format!("seed-paths: ['{escape}']"), "seed-paths"),
        (
            format!("clean-targets: [target, {escape}]"),
            "clean-targets",
        ),
        (
            "docs-paths: [\"{{ env_var('HOME') }}\"]".to_string(),
            "Jinja",
        ),
    ] {
        let files = project_with(vec![file("dbt_project.yml", dbt_project(&setting))]);
        let result = client.submit(args(&["build"]), &files).await;
        assert_refused(result, needle, &server.dir);
    }
    for (path, content) in [
        ("packages.yml", format!("packages:\n  - local: {escape}\n")),
        (
            "dependencies.yml",
            "packages:\n  - local: /opt\n".to_string(),
        ),
    ] {
        let files = project_with(vec![file(path, content)]);
        let result = client.submit(args(&["build"]), &files).await;
        assert_refused(result, "local", &server.dir);
    }
    let files = pack_project(&example()).unwrap();
    for (dbt_args, needle) in [
        (&["build", "--state", escape][..], "--state"),
        (&["build", "--defer", "--defer-state=/tmp"], "--defer-state"),
        (&["source", "freshness", "-o", "/tmp/fresh.json"], "-o"),
        (
            &["source", "freshness", "--output=../../x.json"],
            "--output",
        ),
        (
            &["clean", "--no-clean-project-files-only"],
            "--no-clean-project-files-only",
        ),
        (&["build", "--target-path", "t"], "--target-path"),
        (&["build", "--log-path=l"], "--log-path"),
        (&["build", "--profiles-dir", "."], "--profiles-dir"),
    ] {
        let result = client.submit(args(dbt_args), &files).await;
        assert_refused(result, needle, &server.dir);
    }

    // The 0.4.6 adapter: the same dbt_project.yml rule on the form's dbt_project.
    let project = dbt_project(&format!("target-path: {escape}"));
    let form = Form {
        server_url: server.url.clone(),
        user_command: "build".into(),
        overrides: CAPTURED_OVERRIDES.into(),
        dbt_project: project.into_bytes(),
        profiles: b"jaffle_duckdb: {}\n".to_vec(),
        packages: Some(format!("packages:\n  - local: {escape}\n").into_bytes()),
        zipped_artifacts: stored_zip(&[("manifest.json", b"{}")]),
    };
    let response = post_form(&format!("{}/dbt", server.url), &form.parts()).await;
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("target-path") || detail.contains("local"),
        "{detail}"
    );

    assert_eq!(job_count(&client).await, 0, "nothing was stored");
    assert!(!canary.exists());
}

/// The Python model that looks for the canaries in its own environment and in every readable
/// `/proc/*/environ` and `/proc/*/cmdline`, tries the server's environment and memory, and
/// writes what it found to `probe.json` in its work dir.
fn probe_model(canaries: &[(&str, String)], server_pid: u32) -> String {
    let canaries: Vec<String> = canaries
        .iter()
        .map(|(name, value)| format!("{name:?}: {value:?}"))
        .collect();
    format!(
        r#"import json
import os

CANARIES = {{{}}}
SERVER_PID = {server_pid}


def model(dbt, session):
    dbt.config(materialized="table")
    found = []

    def scan(where, text):
        for name, value in CANARIES.items():
            if value in text:
                found.append([where, name])

    scan("os.environ", "\n".join(f"{{k}}={{v}}" for k, v in os.environ.items()))
    read = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        for what in ("environ", "cmdline"):
            try:
                with open(f"/proc/{{pid}}/{{what}}", "rb") as f:
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            read += 1
            scan(f"/proc/{{pid}}/{{what}}", text)
    server = {{}}
    for what in ("environ", "mem"):
        try:
            with open(f"/proc/{{SERVER_PID}}/{{what}}", "rb") as f:
                server[what] = "opened"
        except OSError as e:
            server[what] = e.strerror
    with open("probe.json", "w") as f:
        json.dump({{"found": found, "read": read, "names": sorted(os.environ), "server": server}}, f)
    return session.sql("select 1 as probed")
"#,
        canaries.join(", ")
    )
}

/// One real dbt job on a server started without `--profiles-dir` (its profiles are
/// `~/.dbt`), with a static token, a token hash and an unrelated secret in its environment:
/// - dbt writes its target and logs in `<work dir>/target` and `logs` although
///   `dbt_project.yml` says `custom_target` and `custom_logs` (artifacts are found);
/// - the project's `profiles.yml`, which points DuckDB at a canary file outside the work
///   dir, is not even written to the work dir, and the canary is never created;
/// - a Python model finds none of the canaries in its environment or in any readable
///   `/proc/*/environ` or `/proc/*/cmdline`, and cannot open the server's memory, while it
///   sees the variable allowed by `--job-env`.
#[tokio::test]
async fn a_job_stays_in_its_work_dir_and_never_sees_the_servers_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".dbt")).unwrap();
    std::fs::copy(
        repo_root().join("examples/profiles/profiles.yml"),
        home.join(".dbt/profiles.yml"),
    )
    .unwrap();
    // The canary dir exists, so DuckDB could create the file if dbt used the project's profiles.
    let stolen_db = tmp.path().join("canary/stolen.duckdb");
    std::fs::create_dir_all(tmp.path().join("canary")).unwrap();
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let token = format!("token-canary-{tag}");
    let other_token_hash = BlobHash::of(format!("other-{tag}").as_bytes()).to_string();
    let unrelated = format!("unrelated-canary-{tag}");
    let env = [
        ("HOME", home.to_string_lossy().to_string()),
        ("DBT_REMOTE_AUTH_TOKEN", token.clone()),
        ("DBT_REMOTE_AUTH_TOKEN_SHA256", other_token_hash.clone()),
        ("UNRELATED_SECRET_CANARY", unrelated.clone()),
        ("ALLOWED_FOR_PROFILES", "visible".into()),
    ];
    let server = RealServer::start_without_profiles_dir(
        server_binary(),
        tmp.path(),
        &["--keep-work-dirs", "--job-env", "ALLOWED_FOR_PROFILES"],
        &env,
    );
    let client = Client::new(&server.url)
        .unwrap()
        .with_auth(ClientAuth::static_token(token.as_str()));
    let canaries = [
        ("token", token.clone()),
        ("token_hash", BlobHash::of(token.as_bytes()).to_string()),
        ("env_token_hash", other_token_hash),
        ("unrelated", unrelated),
    ];
    let profiles = format!(
        "jaffle_duckdb:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: {:?}\n",
        stolen_db.display().to_string()
    );
    let files = project_with(vec![
        file(
            "dbt_project.yml",
            dbt_project("target-path: custom_target\nlog-path: custom_logs"),
        ),
        file("profiles.yml", profiles),
        file("models/env_probe.py", probe_model(&canaries, server.pid())),
    ]);
    let (job, _) = client
        .submit(args(&["run", "--select", "env_probe"]), &files)
        .await
        .unwrap();
    let (records, done) = follow_to_end(&client, job.id, Duration::from_secs(120)).await;
    let log: Vec<&str> = records
        .iter()
        .map(|(_, r)| r.entry.message.as_str())
        .collect();
    assert_eq!(done.status, JobStatus::Succeeded, "{done:?}\n{log:#?}");

    let work = server.dir.join("work").join(job.id.to_string());
    let probe: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.join("probe.json")).unwrap()).unwrap();
    assert_eq!(
        probe["found"],
        serde_json::json!([]),
        "canaries reached the job: {probe}"
    );
    assert!(
        probe["read"].as_u64().unwrap() > 2,
        "the probe read /proc: {probe}"
    );
    let names = common::strings(&probe["names"]);
    assert!(names.contains(&"PATH".to_string()), "{names:?}");
    assert!(
        names.contains(&"ALLOWED_FOR_PROFILES".to_string()),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.starts_with("DBT_REMOTE_")),
        "{names:?}"
    );
    // (Some kernels let a same-uid process open a non-dumpable process's environ: the server
    // blanks it, which "found" checks. Its memory needs CAP_SYS_PTRACE, which jobs drop.)
    assert_ne!(probe["server"]["mem"], "opened", "{probe}");

    assert!(!stolen_db.exists(), "dbt used the project's profiles.yml");
    assert!(!work.join("profiles.yml").exists());
    assert!(work.join("target/run_results.json").is_file());
    assert!(work.join("logs/dbt.log").is_file());
    assert!(!work.join("custom_target").exists() && !work.join("custom_logs").exists());
    let artifacts = client.artifacts(job.id).await.unwrap().artifacts;
    assert!(
        artifacts
            .iter()
            .any(|a| a.name.as_str() == "run_results.json"),
        "{artifacts:?}"
    );
}

/// A work root inside the state dir, or a state dir inside the work root, is refused at start
/// with a message saying why.
#[test]
fn a_work_root_and_a_state_dir_that_nest_are_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for (state, work) in [
        (d.join("state"), d.join("state/work")),
        (d.join("work/state"), d.join("work")),
    ] {
        let mut child = std::process::Command::new(server_binary())
            .args(["--port", "0", "--state-dir"])
            .arg(&state)
            .arg("--work-dir")
            .arg(&work)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill(); // a server that started anyway
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("must not be inside one another"),
            "{stderr}"
        );
    }
}

/// A runner that cannot start dbt says so without the server's paths (the Python of manifest
/// jobs, the work dir) in the job's failure reason or log.
#[tokio::test]
async fn server_paths_stay_out_of_job_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let python = tmp.path().join("no-such-venv/bin/python");
    let python = python.to_string_lossy().to_string();
    let server = RealServer::start_in(server_binary(), tmp.path(), &["--python", &python]);
    let form = Form {
        server_url: server.url.clone(),
        user_command: "run".into(),
        overrides: CAPTURED_OVERRIDES.into(),
        dbt_project: std::fs::read(example().join("dbt_project.yml")).unwrap(),
        profiles: b"jaffle_duckdb: {}\n".to_vec(),
        packages: None,
        zipped_artifacts: stored_zip(&[("manifest.json", b"{}")]),
    };
    let response = post_form(&format!("{}/dbt", server.url), &form.parts()).await;
    assert_eq!(response.status().as_u16(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    let id = body["uuid"].as_str().unwrap().parse().unwrap();
    let client = Client::new(&server.url).unwrap();
    let (records, done) = follow_to_end(&client, id, Duration::from_secs(60)).await;
    assert_eq!(done.status, JobStatus::Failed, "{done:?}");
    let reason = done.failure_reason.clone().unwrap_or_default();
    assert!(reason.contains("could not start dbt"), "{reason}");
    let dir = tmp.path().to_string_lossy().to_string();
    for message in records
        .iter()
        .map(|(_, r)| r.entry.message.clone())
        .chain([reason])
    {
        assert!(!message.contains(&dir), "{message:?} leaks a server path");
    }
}

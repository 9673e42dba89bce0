//! The 0.4.6 protocol end to end: a manifest made by `dbt parse` of the example project,
//! zipped with its seeds and posted as the original CLI does, run by the real dbt-server with
//! real dbt, its log polled through `last_logs` as that CLI polls it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::legacy::{is_legacy_line, overrides_with, post_form, stored_zip, Form};
use common::{dbt_path, example_project, get_json, repo_root, server_binary, strings, RealServer};
use serde_json::Value;

/// The example project parsed by real dbt: its dbt_project.yml and the 0.4.6 zip
/// (manifest.json, then seeds/<name>.csv).
fn parsed_example() -> (Vec<u8>, Vec<u8>) {
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("project");
    copy_dir(&example_project(), &project);
    let status = Command::new(dbt_path())
        .args(["parse", "--no-use-colors", "--quiet"])
        .current_dir(&project)
        .env("DBT_PROFILES_DIR", repo_root().join("examples/profiles"))
        .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        .status()
        .expect("dbt parse runs");
    assert!(status.success(), "dbt parse failed");
    let manifest = std::fs::read(project.join("target/manifest.json")).unwrap();
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(project.join("seeds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .map(|p| {
            let name = format!("seeds/{}", p.file_name().unwrap().to_string_lossy());
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    seeds.sort();
    let mut entries: Vec<(&str, &[u8])> = vec![("manifest.json", &manifest)];
    entries.extend(seeds.iter().map(|(n, c)| (n.as_str(), c.as_slice())));
    let project_yml = std::fs::read(project.join("dbt_project.yml")).unwrap();
    (project_yml, stored_zip(&entries))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if ["target", "logs", "dbt_packages"].contains(&name.to_string_lossy().as_ref()) {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(name));
        } else if !name.to_string_lossy().ends_with(".duckdb") {
            std::fs::copy(entry.path(), to.join(name)).unwrap();
        }
    }
}

/// Polls `last_logs` every 200 ms, as the 0.4.6 CLI does every second, until the status is
/// final; returns every line received and the final status.
async fn poll_until_final(url: &str) -> (Vec<String>, String) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut lines = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "job did not end in time");
        let body = get_json(url).await;
        lines.extend(strings(&body["run_logs"]));
        let status = body["run_status"].as_str().unwrap().to_string();
        if status != "pending" && status != "running" {
            return (lines, status);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn form(user_command: &str, overrides: &str, project: &[u8], zip: &[u8], profiles: &[u8]) -> Form {
    Form {
        server_url: "http://127.0.0.1:18081/".into(),
        user_command: user_command.into(),
        overrides: overrides.into(),
        dbt_project: project.to_vec(),
        profiles: profiles.to_vec(),
        packages: None,
        zipped_artifacts: zip.to_vec(),
    }
}

#[tokio::test]
async fn a_manifest_job_runs_real_dbt_and_last_logs_returns_every_line_once() {
    let (project, zip) = parsed_example();
    let server = RealServer::start(server_binary());
    // The ci target of the server's profiles runs dbt with one thread.
    let f = form(
        "build",
        &overrides_with("'target': 'ci'"),
        &project,
        &zip,
        b"ignored: {}\n",
    );
    let r = post_form(&format!("{}/dbt", server.url), &f.parts()).await;
    assert_eq!(r.status().as_u16(), 202);
    let body: Value = r.json().await.unwrap();
    let last_logs = body["links"]["last_logs"].as_str().unwrap();
    assert!(last_logs.starts_with(&server.url), "{last_logs}");

    let (polled, status) = poll_until_final(last_logs).await;
    assert_eq!(status, "success", "{polled:#?}");
    let uuid = body["uuid"].as_str().unwrap();
    let all = strings(&get_json(format!("{}/job/{uuid}/logs", server.url)).await["run_logs"]);
    assert_eq!(
        polled, all,
        "last_logs returned every line exactly once, in order"
    );
    assert!(polled.iter().all(|l| is_legacy_line(l)), "{polled:#?}");
    let text = polled.join("\n");
    for expected in [
        "from the compiled manifest",
        "target='ci'",
        "OK loaded seed file main_raw.raw_orders",
        "OK created sql table model main.orders",
        "Completed successfully",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    let final_poll = get_json(last_logs).await;
    assert_eq!(final_poll["run_logs"], serde_json::json!([]));
}

#[tokio::test]
async fn client_profiles_and_a_failing_model_reach_dbt() {
    let (project, zip) = parsed_example();
    let tmp = tempfile::tempdir().unwrap();
    let server = RealServer::start_in(server_binary(), tmp.path(), &["--accept-client-profiles"]);
    let profiles = b"jaffle_duckdb:\n  target: remote\n  outputs:\n    remote:\n      type: duckdb\n      path: jaffle.duckdb\n      threads: 2\n";
    let f = form(
        "run --select fail_on_demand --vars '{fail: true}'",
        &overrides_with("'target': 'remote'"),
        &project,
        &zip,
        profiles,
    );
    let r = post_form(&format!("{}/dbt", server.url), &f.parts()).await;
    assert_eq!(r.status().as_u16(), 202);
    let body: Value = r.json().await.unwrap();
    let (lines, status) = poll_until_final(body["links"]["last_logs"].as_str().unwrap()).await;
    let text = lines.join("\n");
    assert_eq!(status, "failed", "{text}");
    assert!(
        text.contains("target='remote'"),
        "the client's profiles were used:\n{text}"
    );
    assert!(text.contains("fail_on_demand"), "{text}");
    assert!(
        text.contains("dbt exited with code 1") || text.contains("job failed"),
        "{text}"
    );
}

#[tokio::test]
async fn a_manifest_job_runs_in_a_warm_worker() {
    let (project, zip) = parsed_example();
    let server = RealServer::start(server_binary());
    let socket = server.dir.join("state/runs/dbt-worker.sock");
    common::eventually(Duration::from_secs(120), "a ready warm worker", || async {
        socket.exists().then_some(())
    })
    .await;
    let f = form(
        "run --select fail_on_demand --vars '{fail: true}'",
        &overrides_with("'target': 'ci'"),
        &project,
        &zip,
        b"ignored: {}\n",
    );
    let r = post_form(&format!("{}/dbt", server.url), &f.parts()).await;
    assert_eq!(r.status().as_u16(), 202);
    let body: Value = r.json().await.unwrap();
    let (lines, status) = poll_until_final(body["links"]["last_logs"].as_str().unwrap()).await;
    let text = lines.join("\n");
    assert_eq!(status, "failed", "{text}");
    assert!(text.contains("fail_on_demand"), "{text}");
    // The job's native log has the runner's debug record.
    let id: dbt_remote_core::JobId = body["uuid"].as_str().unwrap().parse().unwrap();
    let client = dbt_remote_core::Client::new(&server.url).unwrap();
    let page = client.logs(id, 0, None).await.unwrap();
    assert!(
        page.records.iter().any(|r| r
            .entry
            .message
            .starts_with("dbt-remote: dbt runs in a warm worker (pid ")),
        "{:#?}",
        page.records
    );
    let job = client.job(id).await.unwrap();
    assert_eq!(
        job.exit_code,
        Some(1),
        "run_manifest.py's exit code: {job:?}"
    );
}

//! dbt-remote's figures, from one run (needs scripts/setup-python.sh's venv):
//! - `dbt-remote build` vs plain `dbt build` on the example project (wall time, ratio);
//! - bytes uploaded by the first and the second submission of a generated 500-model project;
//! - log latency: from dbt emitting an event (its timestamp) to dbt-remote printing it, p50/p99
//!   (an upper bound of store → print: the runner stores the event right after dbt emits it);
//! - `dbt-remote --version` start time.
//!
//! cargo bench -p dbt_remote_cli --bench cli

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

use dbt_remote_core::Client;
use dbt_remote_test_support::server::{dbt_path, example_project, repo_root, RealServer};

fn cli() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dbt-remote"))
}

fn copy(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-r")
        .arg(from.join("."))
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success());
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let server_bin = cli().with_file_name("dbt-server");
    assert!(
        server_bin.is_file(),
        "build dbt-server first (cargo build --release --bins)"
    );
    let server = RealServer::start(&server_bin);
    let tmp = tempfile::tempdir().unwrap();

    // 1. dbt-remote build vs plain dbt build, and the log latency of that build.
    let plain_dir = tmp.path().join("plain");
    std::fs::create_dir_all(&plain_dir).unwrap();
    copy(&example_project(), &plain_dir);
    let start = Instant::now();
    let status = Command::new(dbt_path())
        .args(["build", "--profiles-dir"])
        .arg(repo_root().join("examples/profiles"))
        .current_dir(&plain_dir)
        .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let plain = start.elapsed();
    assert!(status.success());

    let start = Instant::now();
    let mut child = Command::new(cli())
        .args(["build", "--server-url", &server.url, "--project-dir"])
        .arg(example_project())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut printed = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        line.unwrap();
        printed.push(SystemTime::now());
    }
    let output = child.wait_with_output().unwrap();
    let remote = start.elapsed();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let id = stderr
        .split("job ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let records = runtime.block_on(async {
        let client = Client::new(&server.url).unwrap();
        client
            .logs(id.parse().unwrap(), 0, None)
            .await
            .unwrap()
            .records
    });
    let mut latencies = Vec::new();
    let mut line = 0;
    for record in &records {
        if let Some(at) = printed.get(line) {
            let emitted: SystemTime = record.entry.time.into();
            if let Ok(d) = at.duration_since(emitted) {
                latencies.push(d.as_secs_f64() * 1e3);
            }
        }
        line += record.entry.message.split('\n').count();
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());

    // 2. Bytes uploaded for a generated 500-model project, first and second submission.
    let big = tmp.path().join("big");
    std::fs::create_dir_all(big.join("models")).unwrap();
    let project = "name: big\nversion: '1.0'\nconfig-version: 2\nprofile: jaffle_duckdb\n";
    std::fs::write(big.join("dbt_project.yml"), project).unwrap();
    for i in 0..500 {
        let sql = if i == 0 {
            "select 1 as id\n".to_string()
        } else {
            format!(
                "select id, {i} as n_{i} from {{{{ ref('model_{}') }}}}\n",
                i / 2
            )
        };
        std::fs::write(big.join(format!("models/model_{i}.sql")), sql).unwrap();
    }
    let uploads: Vec<String> = (0..2)
        .map(|_| {
            let out = Command::new(cli())
                .args([
                    "parse",
                    "--detach",
                    "--server-url",
                    &server.url,
                    "--project-dir",
                ])
                .arg(&big)
                .output()
                .unwrap();
            assert!(out.status.success());
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            err.split('(')
                .nth(1)
                .and_then(|s| s.split(')').next())
                .unwrap_or("?")
                .to_string()
        })
        .collect();

    // 3. Start time of the binary.
    let runs = 20;
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let ok = Command::new(cli())
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(ok.success());
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());

    println!(
        "cli: plain `dbt build`              {:6.2} s",
        plain.as_secs_f64()
    );
    println!(
        "cli: `dbt-remote build`             {:6.2} s",
        remote.as_secs_f64()
    );
    println!(
        "cli: ratio dbt-remote / plain = {:.2}",
        remote.as_secs_f64() / plain.as_secs_f64()
    );
    println!("cli: 500-model project, 1st submission: {}", uploads[0]);
    println!("cli: 500-model project, 2nd submission: {}", uploads[1]);
    println!(
        "cli: log latency, dbt event → printed, {} records: p50 {:.0} ms, p99 {:.0} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    println!(
        "cli: `dbt-remote --version` start, {runs} runs: median {:.1} ms, min {:.1} ms",
        percentile(&times, 0.5),
        times[0]
    );
}

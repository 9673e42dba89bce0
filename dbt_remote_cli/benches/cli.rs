//! dbt-remote's figures, from one run (needs scripts/setup-python.sh's venv):
//! - for each server configuration the dbt-server binary supports
//!   (`dbt_remote_test_support::bench::all_configs`; at least `default` and `no pool` once
//!   `--dbt-workers` exists), on a fresh server after its warm-up: `dbt-remote build` of the
//!   example project (wall time, ratio to plain `dbt build`) and its log latency: from dbt
//!   emitting an event (the `ts` of its JSON record) to dbt-remote printing its line, p50/p90/p99
//!   (an upper bound of store → print: the runner stores the event right after dbt emits it);
//! - bytes uploaded by the first and the second submission of a generated 500-model project;
//! - `dbt-remote --version` start time.
//!
//! cargo bench -p dbt_remote_cli --bench cli
//!
//! Env: `DBT_REMOTE_BENCH_WARMUP_SECS` (wait after a server starts, default 5),
//! `DBT_REMOTE_DBT_PATH` (dbt).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use dbt_remote_core::{Client, LogLevel, LogRecord};
use dbt_remote_test_support::bench::{self, copy_dir, percentile, time_local_build, Config};
use dbt_remote_test_support::server::{example_project, RealServer};

fn cli() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dbt-remote"))
}

/// One `dbt-remote build` of the example: its wall time and the latency (ms) of each dbt
/// event, from its `ts` to the moment its line was printed.
struct Followed {
    wall: Duration,
    latencies_ms: Vec<f64>,
    /// Lines printed, and lines the stored records at level info and above make.
    lines: (usize, usize),
}

/// Runs `dbt-remote build` of the example against `url`, reading each printed line as it
/// comes, then matches the job's stored records to the lines the CLI printed for them.
fn build_and_follow(url: &str, runtime: &tokio::runtime::Runtime) -> Followed {
    let start = Instant::now();
    let mut child = Command::new(cli())
        .args(["build", "--server-url", url, "--project-dir"])
        .arg(example_project())
        .stdin(Stdio::null())
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
    let wall = start.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let id = stderr
        .split("job ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap();
    let records = runtime.block_on(async {
        let client = Client::new(url).unwrap();
        client
            .logs(id.parse().unwrap(), 0, None)
            .await
            .unwrap()
            .records
    });
    let (latencies_ms, expected) = latencies(&records, &printed);
    Followed {
        wall,
        latencies_ms,
        lines: (printed.len(), expected),
    }
}

/// The latency of each of dbt's records (`source` `dbt`: its time is dbt's `ts`) to the
/// first line the CLI printed for it, and the number of lines the CLI prints for `records`
/// (those at `info` and above, one line per line of their message).
fn latencies(records: &[LogRecord], printed: &[SystemTime]) -> (Vec<f64>, usize) {
    let mut latencies = Vec::new();
    let mut line = 0;
    for record in records.iter().filter(|r| r.entry.level >= LogLevel::Info) {
        if let Some(at) = printed.get(line) {
            let emitted: SystemTime = record.entry.time.into();
            if record.entry.source == "dbt" {
                if let Ok(d) = at.duration_since(emitted) {
                    latencies.push(d.as_secs_f64() * 1e3);
                }
            }
        }
        line += record.entry.message.split('\n').count();
    }
    (latencies, line)
}

fn main() {
    let server_bin = cli().with_file_name("dbt-server");
    assert!(
        server_bin.is_file(),
        "build dbt-server first (cargo build --release --bins)"
    );
    let (configs, skipped) = bench::supported_configs(&server_bin);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();

    // 1. Plain dbt build, then per configuration dbt-remote build and its log latency.
    let plain_dir = tmp.path().join("plain");
    copy_dir(&example_project(), &plain_dir);
    let plain = time_local_build(&plain_dir);
    let mut per_config: Vec<(&Config, Followed)> = Vec::new();
    for config in &configs {
        let dir = tmp
            .path()
            .join(format!("server-{}", config.name.replace(' ', "-")));
        std::fs::create_dir_all(&dir).unwrap();
        let server = RealServer::start_with_env(
            &server_bin,
            &dir,
            &config.flags(),
            &[("RUST_LOG", "warn,dbt_server=info")],
        );
        std::thread::sleep(bench::warmup());
        per_config.push((config, build_and_follow(&server.url, &runtime)));
    }
    let server = RealServer::start(&server_bin);

    // 2. Bytes uploaded for a generated 500-model project, first and second submission.
    let big = tmp.path().join("big");
    bench::generate_project(&big, 500);
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
    times.sort_by(f64::total_cmp);

    println!(
        "cli: plain `dbt build` of the example  {:6.2} s",
        plain.as_secs_f64()
    );
    for s in &skipped {
        println!("cli: skipped configuration {s}");
    }
    println!(
        "cli: `dbt-remote build` of the example on a fresh server (after a {} s warm-up), and its log latency \
         (dbt event ts → line printed):",
        bench::warmup().as_secs()
    );
    println!(
        "  {:<10} {:>8} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "config", "build", "÷ plain", "events", "p50", "p90", "p99"
    );
    for (config, f) in &per_config {
        let l = &f.latencies_ms;
        println!(
            "  {:<10} {:>6.2} s {:>9.2}x {:>8} {:>5.0} ms {:>5.0} ms {:>5.0} ms",
            config.name,
            f.wall.as_secs_f64(),
            f.wall.as_secs_f64() / plain.as_secs_f64(),
            l.len(),
            percentile(l, 0.5),
            percentile(l, 0.9),
            percentile(l, 0.99)
        );
        if f.lines.0 != f.lines.1 {
            println!(
                "  {:<10} (printed {} lines, the records make {}: the latencies may be off)",
                "", f.lines.0, f.lines.1
            );
        }
    }
    println!("cli: 500-model project, 1st submission: {}", uploads[0]);
    println!("cli: 500-model project, 2nd submission: {}", uploads[1]);
    println!(
        "cli: `dbt-remote --version` start, {runs} runs: median {:.1} ms, min {:.1} ms",
        percentile(&times, 0.5),
        times[0]
    );
}

//! Wall time of `dbt build` through a local dbt-server against plain `dbt build`, for the
//! example project and a generated one, in every server configuration the binary supports
//! (`dbt_remote_test_support::bench::all_configs`). Figures and ratios from one run:
//!
//! - local `dbt build` with `target/` present (run once untimed to make it, then timed: dbt's
//!   partial parse is used) and without `target/` (a fresh copy each run, as a job gets);
//! - for each configuration, a fresh server (waited on for its warm-up), then `dbt-remote build`
//!   twice: the first run (cold server caches, every file uploaded) and the second (warm
//!   caches, nothing uploaded). Pack, upload, job process, log stream to the end.
//!
//! Each round runs every figure once, the configurations in a rotating order, so a change of
//! the machine's load falls on all of them; the table shows medians over the rounds.
//!
//! cargo bench -p dbt_server --bench dbt_build      (needs scripts/setup-python.sh's venv)
//!
//! Env: `DBT_REMOTE_BENCH_RUNS` (rounds, default 3), `DBT_REMOTE_BENCH_MODELS` (models of the
//! generated project, default 300), `DBT_REMOTE_BENCH_WARMUP_SECS` (wait after a server starts,
//! default 5), `DBT_REMOTE_DBT_PATH` (dbt). The `dbt-remote` CLI is used when it is built next to
//! dbt-server (`cargo build --release -p dbt_remote_cli`), else the core `Client`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dbt_remote_core::client::StreamEvent;
use dbt_remote_core::package::JobFiles;
use dbt_remote_core::Client;
use dbt_remote_test_support::bench::{
    self, cli_next_to, copy_dir, generate_project, median, time_local_build, Config,
};
use dbt_remote_test_support::server::{example_project, RealServer};
use futures::StreamExt;

/// How a benchmark submits a build: the `dbt-remote` binary a user runs, or the core client.
enum Submitter {
    Cli(PathBuf),
    Client(tokio::runtime::Runtime),
}

impl Submitter {
    fn describe(&self) -> String {
        match self {
            Submitter::Cli(path) => format!("the dbt-remote CLI ({})", path.display()),
            Submitter::Client(_) => {
                "the core Client (no dbt-remote binary next to dbt-server: cargo build --release -p dbt_remote_cli)".into()
            }
        }
    }

    /// Times `dbt build` of `project` through the server at `url`, to the end of its log.
    /// Panics if it does not succeed.
    fn time_build(&self, url: &str, project: &Path) -> Duration {
        let start = Instant::now();
        match self {
            Submitter::Cli(cli) => {
                let out = Command::new(cli)
                    .args(["build", "--server-url", url, "--project-dir"])
                    .arg(project)
                    .current_dir(project.parent().unwrap())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "dbt-remote build failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Submitter::Client(runtime) => runtime.block_on(async {
                let client = Client::new(url).unwrap();
                let files = JobFiles {
                    project_dir: project.to_path_buf(),
                    ..Default::default()
                };
                let (job, _) = client
                    .submit_project(vec!["build".into()], &files)
                    .await
                    .unwrap();
                let mut events = std::pin::pin!(client.follow(job.id, 0));
                let mut end = None;
                while let Some(event) = events.next().await {
                    if let StreamEvent::End(job) = event.unwrap() {
                        end = Some(job);
                    }
                }
                let end = end.expect("the log stream ends with the job");
                assert_eq!(end.exit_code, Some(0), "remote build failed: {end:?}");
            }),
        }
        start.elapsed()
    }
}

/// The times (seconds) of one project, one entry per round.
#[derive(Default)]
struct Samples {
    local_target: Vec<f64>,
    local_fresh: Vec<f64>,
    /// Per configuration: first and second remote run.
    remote: Vec<(Vec<f64>, Vec<f64>)>,
}

/// Runs every figure of `source` (copied first) `runs` times.
fn measure(
    source: &Path,
    tmp: &Path,
    server_bin: &Path,
    configs: &[Config],
    submitter: &Submitter,
) -> Samples {
    let runs = bench::runs();
    let warmup = bench::warmup();
    let clean = tmp.join("clean");
    copy_dir(source, &clean);
    let warm = tmp.join("local-with-target");
    copy_dir(&clean, &warm);
    time_local_build(&warm); // untimed: makes target/ (partial_parse.msgpack, manifest)
    let mut samples = Samples {
        remote: vec![Default::default(); configs.len()],
        ..Default::default()
    };
    for round in 0..runs {
        samples
            .local_target
            .push(time_local_build(&warm).as_secs_f64());
        let fresh = tmp.join(format!("local-fresh-{round}"));
        copy_dir(&clean, &fresh);
        samples
            .local_fresh
            .push(time_local_build(&fresh).as_secs_f64());
        let _ = std::fs::remove_dir_all(&fresh);
        for k in 0..configs.len() {
            let i = (k + round) % configs.len();
            let dir = tmp.join(format!("server-{round}-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let server = RealServer::start_with_env(
                server_bin,
                &dir,
                &configs[i].flags(),
                &[("RUST_LOG", "warn,dbt_server=info")],
            );
            std::thread::sleep(warmup);
            let first = submitter.time_build(&server.url, &clean);
            let second = submitter.time_build(&server.url, &clean);
            drop(server);
            let _ = std::fs::remove_dir_all(&dir);
            samples.remote[i].0.push(first.as_secs_f64());
            samples.remote[i].1.push(second.as_secs_f64());
        }
    }
    samples
}

fn list(values: &[f64]) -> String {
    let v: Vec<String> = values.iter().map(|v| format!("{v:.2}")).collect();
    v.join(", ")
}

fn print_table(project: &str, configs: &[Config], samples: &Samples) {
    let with_target = median(&samples.local_target);
    let fresh = median(&samples.local_fresh);
    println!();
    println!(
        "dbt_build: {project}: medians of {} runs, warm-up {} s",
        samples.local_target.len(),
        bench::warmup().as_secs()
    );
    println!(
        "  local `dbt build`, target/ present  {with_target:7.2} s   (runs: {})",
        list(&samples.local_target)
    );
    println!(
        "  local `dbt build`, no target/       {fresh:7.2} s   (runs: {})",
        list(&samples.local_fresh)
    );
    println!(
        "  {:<10} {:<52} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "config",
        "server flags",
        "1st run",
        "2nd run",
        "1st/tgt",
        "2nd/tgt",
        "1st/none",
        "2nd/none"
    );
    for (config, (first, second)) in configs.iter().zip(&samples.remote) {
        let (f, s) = (median(first), median(second));
        println!(
            "  {:<10} {:<52} {:>6.2} s {:>6.2} s {:>8.2}x {:>8.2}x {:>8.2}x {:>8.2}x",
            config.name,
            config.describe(),
            f,
            s,
            f / with_target,
            s / with_target,
            f / fresh,
            s / fresh
        );
        println!(
            "  {:<10} runs: 1st {} / 2nd {}",
            "",
            list(first),
            list(second)
        );
    }
    println!(
        "  (x/tgt: remote time / local with target/; x/none: remote time / local without target/)"
    );
}

fn main() {
    let server_bin = PathBuf::from(env!("CARGO_BIN_EXE_dbt-server"));
    let submitter = match cli_next_to(&server_bin) {
        Some(cli) => Submitter::Cli(cli),
        None => Submitter::Client(tokio::runtime::Runtime::new().unwrap()),
    };
    let (configs, skipped) = bench::supported_configs(&server_bin);
    let models = bench::models();
    println!("dbt_build: remote builds through {}", submitter.describe());
    println!(
        "dbt_build: configurations: {}",
        configs
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    for s in &skipped {
        println!("dbt_build: skipped {s}");
    }

    let tmp = tempfile::tempdir().unwrap();
    let example_tmp = tmp.path().join("example");
    let example = measure(
        &example_project(),
        &example_tmp,
        &server_bin,
        &configs,
        &submitter,
    );
    let _ = std::fs::remove_dir_all(&example_tmp);
    print_table("examples/jaffle_duckdb", &configs, &example);

    let generated = tmp.path().join("generated-source");
    generate_project(&generated, models);
    let generated_tmp = tmp.path().join("generated");
    let big = measure(
        &generated,
        &generated_tmp,
        &server_bin,
        &configs,
        &submitter,
    );
    print_table(
        &format!("generated project, {models} models"),
        &configs,
        &big,
    );
}

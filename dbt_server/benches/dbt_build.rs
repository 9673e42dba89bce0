//! Wall time of `dbt build` of the example project through a local dbt-server (pack, upload,
//! job process, live log stream to the end) against plain `dbt build`, from one run.
//!
//! cargo bench -p dbt_server --bench dbt_build      (needs scripts/setup-python.sh's venv)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use dbt_remote_core::client::StreamEvent;
use dbt_remote_core::package::pack_project;
use dbt_remote_core::Client;
use futures::StreamExt;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn dbt() -> PathBuf {
    std::env::var_os("DBT_REMOTE_DBT_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/dbt-remote/venv/bin/dbt")
        })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn main() {
    let example = repo().join("examples/jaffle_duckdb");
    let profiles = repo().join("examples/profiles");
    let tmp = tempfile::tempdir().unwrap();

    // Plain dbt, in a fresh copy (as the server's job gets a fresh work dir).
    let plain_dir = tmp.path().join("plain");
    copy_dir(&example, &plain_dir);
    let start = Instant::now();
    let status = Command::new(dbt())
        .args(["build", "--profiles-dir"])
        .arg(&profiles)
        .current_dir(&plain_dir)
        .env("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        .stdout(Stdio::null())
        .status()
        .expect("dbt runs (scripts/setup-python.sh makes the venv)");
    let plain = start.elapsed();
    assert!(status.success(), "plain dbt build failed");

    let mut server = Command::new(env!("CARGO_BIN_EXE_dbt-server"))
        .args(["--port", "0", "--state-dir"])
        .arg(tmp.path().join("state"))
        .arg("--dbt")
        .arg(dbt())
        .arg("--profiles-dir")
        .arg(&profiles)
        .env("RUST_LOG", "warn,dbt_server=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = {
        use std::io::BufRead;
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = std::io::BufReader::new(server.stderr.take().unwrap());
        // Keep draining the server's log so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
            }
        });
        rx.recv_timeout(std::time::Duration::from_secs(30))
            .expect("dbt-server starts")
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (remote, job) = runtime.block_on(async {
        let client = Client::new(&url).unwrap();
        let start = Instant::now();
        let files = pack_project(&example).unwrap();
        let (job, _) = client.submit(vec!["build".into()], &files).await.unwrap();
        let mut events = std::pin::pin!(client.follow(job.id, 0));
        let mut end = None;
        while let Some(event) = events.next().await {
            if let StreamEvent::End(job) = event.unwrap() {
                end = Some(job);
            }
        }
        (start.elapsed(), end.unwrap())
    });
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(job.exit_code, Some(0), "remote build failed: {job:?}");
    let queued = (job.started_at.unwrap() - job.created_at).as_seconds_f64();
    let ran = (job.finished_at.unwrap() - job.started_at.unwrap()).as_seconds_f64();
    println!(
        "dbt_build: plain `dbt build`                 {:6.2} s",
        plain.as_secs_f64()
    );
    println!(
        "dbt_build: `dbt build` through dbt-server   {:6.2} s",
        remote.as_secs_f64()
    );
    println!("           (created→started {queued:.3} s, started→finished {ran:.2} s)");
    println!(
        "dbt_build: ratio remote / plain = {:.2}",
        remote.as_secs_f64() / plain.as_secs_f64()
    );
}

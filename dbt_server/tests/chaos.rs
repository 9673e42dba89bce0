//! The chaos soak: jobs submitted to the real `dbt-server` binary (local state dir, a fast
//! fake dbt) while the server and its job processes (`dbt-server run-job`, found in /proc)
//! are killed with SIGKILL at random moments and the server is restarted on the same state
//! dir and port, running a retention pass (grace 0) at each start. At the end every job is
//! final, nothing submitted is lost, a follower that reconnects got every log record of its
//! job exactly once, in order, as stored, without `Client::follow` ever giving up, and no job
//! lost a file it needed to retention.
//!
//! Short by default (CI); longer on demand:
//! `DBT_REMOTE_CHAOS_JOBS=200 DBT_REMOTE_CHAOS_SECONDS=600 cargo test -p dbt_server --test chaos`.
//! The seed is printed; `DBT_REMOTE_CHAOS_SEED=<seed>` replays the same random choices.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dbt_remote_core::client::StreamEvent;
use dbt_remote_core::package::ProjectFile;
use dbt_remote_core::{Client, JobId, JobStatus, LocalStore, LogRecord, StateStore, StateStoreExt};
use futures::StreamExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A small seeded random generator (SplitMix64): the same seed, the same choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// A dbt that prints 30 JSON log lines, 20 ms apart, and succeeds.
fn fast_fake_dbt(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("dbt");
    let script = r#"#!/bin/sh
i=1
while [ $i -le 30 ]; do
  printf '{"info": {"level": "info", "msg": "chaos line %s", "name": "Chaos", "ts": "2026-01-01T00:00:00Z"}, "data": {}}\n' $i
  i=$((i + 1))
  sleep 0.02
done
exit 0
"#;
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The real server on `dir`, restarted on the same port after each kill.
struct Chaos {
    dir: PathBuf,
    dbt: PathBuf,
    port: u16,
    child: Option<Child>,
    starts: u32,
}

impl Chaos {
    fn new(dir: &Path) -> Chaos {
        let mut chaos = Chaos {
            dir: dir.to_path_buf(),
            dbt: fast_fake_dbt(dir),
            port: 0,
            child: None,
            starts: 0,
        };
        chaos.start();
        chaos
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the server and waits until it listens (on a free port the first time).
    fn start(&mut self) {
        self.starts += 1;
        let log = self.dir.join(format!("server-{}.log", self.starts));
        let child = Command::new(common::server_binary())
            .args(["--port", &self.port.to_string()])
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .arg("--dbt")
            .arg(&self.dbt)
            .args(["--max-concurrent-jobs", "2", "--cancel-grace-seconds", "2"])
            // A retention pass at every start, keeping only the blobs jobs name.
            .args(["--retention-grace-minutes", "0"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("dbt-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(rest) = text.split("listening on http://127.0.0.1:").nth(1) {
                let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                self.port = port.parse().expect("a port");
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                // The old listening socket may linger for a moment: try again.
                assert!(
                    Instant::now() < deadline,
                    "dbt-server exited {status}: {text}"
                );
                std::thread::sleep(Duration::from_millis(100));
                return self.start();
            }
            assert!(
                Instant::now() < deadline,
                "dbt-server did not listen: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill_server(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Pids of this server's job processes (`dbt-server run-job` with this state dir).
    fn runners(&self) -> Vec<i32> {
        let state = format!("DBT_REMOTE_STATE_DIR={}", self.dir.join("state").display());
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_runner = args.get(1) == Some(&&b"run-job"[..])
                && environ.split(|b| *b == 0).any(|v| v == state.as_bytes());
            if is_runner {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Chaos {
    fn drop(&mut self) {
        self.kill_server();
        for pid in self.runners() {
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// What a follower saw of one job.
#[derive(Default)]
struct Followed {
    records: Vec<LogRecord>,
    end: Option<dbt_remote_core::api::Job>,
    reconnects: u32,
    /// Why `Client::follow` gave up, each time.
    errors: Vec<String>,
}

/// Follows `id` to its end, starting again from the last record it has whenever
/// `Client::follow` gives up (the server may be down for a while); gives up at `deadline`.
async fn follow(client: Client, id: JobId, deadline: Instant) -> Followed {
    let mut seen = Followed::default();
    while Instant::now() < deadline {
        let after = seen.records.last().map_or(0, |r| r.seq);
        let mut stream = std::pin::pin!(client.follow(id, after));
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline.into(), stream.next()).await {
            match event {
                Ok(StreamEvent::Record(r)) => seen.records.push(r),
                Ok(StreamEvent::End(job)) => {
                    seen.end = Some(job);
                    return seen;
                }
                Err(e) => {
                    seen.errors.push(e.to_string());
                    break;
                }
            }
        }
        seen.reconnects += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

/// A file only job `i` has, and one that every job has.
fn files(i: usize) -> Vec<ProjectFile> {
    let file = |path: &str, content: String| {
        let content = bytes::Bytes::from(content);
        ProjectFile {
            path: dbt_remote_core::RelPath::new(path).unwrap(),
            sha256: dbt_remote_core::BlobHash::of(&content),
            content,
        }
    };
    vec![
        file("dbt_project.yml", "name: chaos\n".into()),
        file("models/own.sql", format!("select {i}")),
    ]
}

/// Submits job `i`, retrying while the server is down (or after a retention pass deleted a
/// blob between the upload and the submit); the job's id.
async fn submit(client: &Client, i: usize) -> JobId {
    loop {
        match client.submit(vec!["build".into()], &files(i)).await {
            Ok((job, _)) => return job.id,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_killed_servers_and_runners() {
    let seed = env_number("DBT_REMOTE_CHAOS_SEED", {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        nanos.unwrap().as_nanos() as u64
    });
    let jobs = env_number("DBT_REMOTE_CHAOS_JOBS", 12) as usize;
    let seconds = env_number("DBT_REMOTE_CHAOS_SECONDS", 15);
    eprintln!("chaos soak: seed {seed} (DBT_REMOTE_CHAOS_SEED={seed} replays it), {jobs} jobs, {seconds} s");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let mut chaos = Chaos::new(tmp.path());
    let client = Client::new(&chaos.url()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(seconds + 90 + jobs as u64);

    // Submit the jobs, each with its follower, 0.2 s apart on average: faster than two at a
    // time run, so some wait queued through the restarts.
    let submitted = Arc::new(Mutex::new(Vec::new()));
    let gaps: Vec<Duration> = (0..jobs).map(|_| rng.millis(0, 400)).collect();
    let submitter = tokio::spawn({
        let (client, submitted) = (client.clone(), submitted.clone());
        async move {
            for (i, gap) in gaps.into_iter().enumerate() {
                let id = submit(&client, i).await;
                let follower = tokio::spawn(follow(client.clone(), id, deadline));
                submitted.lock().unwrap().push((id, follower));
                tokio::time::sleep(gap).await;
            }
        }
    });

    // Kill things at random until the time is up and every job is submitted.
    let (mut server_kills, mut runner_kills) = (0, 0);
    let chaos_end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < chaos_end || !submitter.is_finished() {
        tokio::time::sleep(rng.millis(200, 1500)).await;
        let action = rng.below(4);
        if action != 1 {
            let runners = chaos.runners();
            if !runners.is_empty() {
                let pid = runners[rng.below(runners.len() as u64) as usize];
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                runner_kills += 1;
            }
        }
        if action != 0 {
            chaos.kill_server();
            server_kills += 1;
            tokio::time::sleep(rng.millis(0, 500)).await;
            chaos.start();
        }
    }
    submitter.await.unwrap();
    eprintln!("chaos soak: {server_kills} server kills, {runner_kills} runner kills");

    // Every follower ends; what it saw is what is stored, each record once, in order.
    let store = LocalStore::new(tmp.path().join("state")).unwrap();
    let followers: Vec<_> = std::mem::take(&mut *submitted.lock().unwrap());
    assert_eq!(followers.len(), jobs);
    let (mut reconnects, mut errors) = (0, std::collections::BTreeSet::new());
    for (id, follower) in followers {
        let seen = follower.await.unwrap();
        reconnects += seen.reconnects;
        errors.extend(seen.errors.iter().cloned());
        let end = seen
            .end
            .unwrap_or_else(|| panic!("job {id} did not end (seed {seed})"));
        assert!(end.status.is_final(), "job {id}: {end:?} (seed {seed})");
        let stored = store.read_all_logs(id, 0).await.unwrap();
        let seqs: Vec<u64> = seen.records.iter().map(|r| r.seq).collect();
        assert_eq!(
            seqs,
            (1..=stored.len() as u64).collect::<Vec<_>>(),
            "job {id}: every record once, in order (seed {seed})"
        );
        assert_eq!(seen.records, stored, "job {id} (seed {seed})");
        let record = store.get_job(id).await.unwrap();
        assert_eq!(record.status, end.status, "job {id} (seed {seed})");
        let reason = record.failure_reason.unwrap_or_default();
        assert!(
            !reason.contains("missing"),
            "job {id}: {reason} (seed {seed})"
        );
    }
    eprintln!("chaos soak: {reconnects} follower restarts");
    assert!(
        errors.is_empty(),
        "Client::follow gave up {reconnects} times (seed {seed}): {errors:?}"
    );
    // Nothing is left queued or running, also among jobs a lost answer made twice.
    let all = common::eventually(Duration::from_secs(60), "every job to end", || async {
        let all = dbt_remote_core::testing::all_jobs(&store).await;
        all.iter().all(|j| j.status.is_final()).then_some(all)
    })
    .await;
    assert!(all.len() >= jobs, "seed {seed}");
    let count = |s: JobStatus| all.iter().filter(|j| j.status == s).count();
    eprintln!(
        "chaos soak: {} jobs: {} succeeded, {} failed, {} cancelled",
        all.len(),
        count(JobStatus::Succeeded),
        count(JobStatus::Failed),
        count(JobStatus::Cancelled)
    );
}

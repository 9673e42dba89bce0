//! What 1,000 log followers cost the real dbt-server binary: its RSS and CPU (share of one
//! core, from /proc) idle, while 1,000 SSE followers follow one running job that receives log
//! records, and after they leave; then status requests per second (`GET /api/v1/jobs/{id}`
//! from 32 concurrent clients). Figures and ratios from one run.
//!
//! cargo bench -p dbt_server --bench followers      (Linux; no dbt needed)

use std::time::{Duration, Instant};

use dbt_remote_core::testing::sample_job;
use dbt_remote_core::{JobLifecycle, LocalStore, LogEntry, LogLevel, StateStore, StateStoreExt};
use dbt_remote_test_support::server::RealServer;

const FOLLOWERS: usize = 1000;
const STATUS_CLIENTS: usize = 32;
const WINDOW: Duration = Duration::from_secs(5);

/// CPU time (user + system) of process `pid` so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ = 100
}

/// Resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Open file descriptors of process `pid` (its connections among them).
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The share of one core process `pid` uses over `window`, in percent.
async fn cpu_percent(pid: u32, window: Duration) -> f64 {
    let before = cpu_time(pid);
    tokio::time::sleep(window).await;
    (cpu_time(pid) - before).as_secs_f64() / window.as_secs_f64() * 100.0
}

/// `GET url` from `clients` concurrent clients for `window`: answers per second.
async fn requests_per_second(url: &str, clients: usize, window: Duration) -> f64 {
    let until = Instant::now() + window;
    let counts = futures::future::join_all((0..clients).map(|_| async move {
        let http = reqwest::Client::new();
        let mut n = 0u64;
        while Instant::now() < until {
            let r = http.get(url).send().await.unwrap();
            assert!(r.status().is_success());
            r.bytes().await.unwrap();
            n += 1;
        }
        n
    }))
    .await;
    counts.iter().sum::<u64>() as f64 / window.as_secs_f64()
}

/// One follower on its own connection: answered 200, then read (and dropped) until aborted.
async fn follow(addr: &str, request: &str) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    tokio::spawn(async move { while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {} })
}

#[tokio::main]
async fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_dbt-server"));
    let server = RealServer::start_in(binary, tmp.path(), &[]);
    let pid = server.pid();
    // A job left running in the server's state, as a runner would have it, receiving 20
    // records a second.
    let store = LocalStore::new(tmp.path().join("state")).unwrap();
    let job = store.create_job(&sample_job()).await.unwrap();
    store.start_job(job.id).await.unwrap();
    let writer = tokio::spawn({
        let store = LocalStore::new(tmp.path().join("state")).unwrap();
        async move {
            for i in 0.. {
                let entry = LogEntry::remote(LogLevel::Info, format!("record {i}"));
                store.log(job.id, entry).await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });

    let idle_cpu = cpu_percent(pid, WINDOW).await;
    let idle_rss = rss_mib(pid);

    // Raw connections, so that leaving is one close() each, whatever a client library does.
    let addr = server.url.trim_start_matches("http://").to_string();
    let request = format!(
        "GET /api/v1/jobs/{}/logs/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n",
        job.id
    );
    let opened = Instant::now();
    let followers =
        futures::future::join_all((0..FOLLOWERS).map(|_| follow(&addr, &request))).await;
    let open_time = opened.elapsed();
    let followed_cpu = cpu_percent(pid, WINDOW).await;
    let followed_rss = rss_mib(pid);
    let followed_fds = open_fds(pid);

    for follower in &followers {
        follower.abort();
    }
    let left_at = Instant::now();
    // The CPU of each second after they left, then 3-5 s after.
    let mut decay = Vec::new();
    for _ in 0..3 {
        decay.push((
            cpu_percent(pid, Duration::from_secs(1)).await,
            open_fds(pid),
        ));
    }
    let left_cpu = cpu_percent(pid, Duration::from_secs(2)).await;
    let left_rss = rss_mib(pid);
    let left_after = left_at.elapsed();

    let status_url = format!("{}/api/v1/jobs/{}", server.url, job.id);
    let rps = requests_per_second(&status_url, STATUS_CLIENTS, WINDOW).await;
    writer.abort();

    println!("dbt-server with {FOLLOWERS} SSE followers of one running job (20 records/s):");
    println!(
        "  {FOLLOWERS} followers connected in {:.2} s",
        open_time.as_secs_f64()
    );
    println!("  idle:       {idle_cpu:6.1}% of a core, RSS {idle_rss:7.1} MiB");
    println!(
        "  followed:   {followed_cpu:6.1}% of a core, RSS {followed_rss:7.1} MiB, {followed_fds} fds"
    );
    println!(
        "  left:       {left_cpu:6.1}% of a core, RSS {left_rss:7.1} MiB (measured {:.0}-{:.0} s after they left)",
        (left_after - Duration::from_secs(2)).as_secs_f64(),
        left_after.as_secs_f64()
    );
    let decay: Vec<String> = decay
        .iter()
        .map(|(c, fds)| format!("{c:.1}% ({fds} fds)"))
        .collect();
    println!("  each second after they left: {}", decay.join(", "));
    println!(
        "  per follower: {:.2}% of a core, {:.1} KiB RSS",
        (followed_cpu - idle_cpu) / FOLLOWERS as f64,
        (followed_rss - idle_rss) * 1024.0 / FOLLOWERS as f64
    );
    println!(
        "  after leaving / followed: CPU {:.3}, RSS {:.2}",
        left_cpu / followed_cpu.max(0.1),
        left_rss / followed_rss.max(0.1)
    );
    println!("status: {rps:.0} GET /api/v1/jobs/{{id}} per second from {STATUS_CLIENTS} clients");
}

//! Attacks on the HTTP edge, each against a real server on 127.0.0.1: requests from another
//! browser origin, DNS rebinding, bodies that are not JSON, connections that never finish or
//! sit idle, stalled bodies, too many connections, followers that leave. Each test checks the
//! answer and that nothing was stored. docs/security/http.md lists the rules.

mod common;

use std::time::{Duration, Instant};

use common::legacy::{multipart, post_form, stored_zip, Form};
use common::InProcess;
use dbt_remote_core::testing::all_jobs;
use dbt_remote_core::StateStore;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: u64 = 1024 * 1024;
const EVIL: &str = "https://evil.example";

async fn server() -> InProcess {
    InProcess::start(LIMIT).await
}

async fn job_count(s: &InProcess) -> usize {
    all_jobs(&*s.store).await.len()
}

/// A `POST /dbt` form as the 0.4.6 CLI sends it.
fn legacy_form(s: &InProcess) -> Form {
    Form {
        server_url: format!("{}/", s.url),
        user_command: "build".into(),
        overrides: "{}".into(),
        dbt_project: b"name: p\nprofile: p\nconfig-version: 2\n".to_vec(),
        profiles: b"p: {}\n".to_vec(),
        packages: None,
        zipped_artifacts: stored_zip(&[("manifest.json", b"{\"nodes\": {}}")]),
    }
}

/// `POST /dbt` of the 0.4.6 form with the extra `headers` a browser adds.
async fn cross_site_form(s: &InProcess, headers: &[(&str, &str)]) -> reqwest::Response {
    let (content_type, body) = multipart(&legacy_form(s).parts());
    let mut request = reqwest::Client::new()
        .post(format!("{}/dbt", s.url))
        .header("content-type", content_type)
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// `POST /api/v1/jobs` of a valid JSON job with `headers`.
async fn post_job(s: &InProcess, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs", s.url))
        .body(json!({ "args": ["build"] }).to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

/// Checks a refusal: `status`, the error body of the route's protocol with `code` (native)
/// or a `detail` (0.4.6), and no server path in the message.
async fn assert_refused(response: reqwest::Response, status: u16, code: Option<&str>) {
    assert_eq!(response.status().as_u16(), status);
    let body: Value = response.json().await.expect("a JSON error body");
    let message = match code {
        Some(code) => {
            assert_eq!(body["error"]["code"], code, "{body}");
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
        None => body["detail"].as_str().unwrap_or_default().to_string(),
    };
    assert!(!message.is_empty(), "{body}");
    for leak in ["/tmp", "/root", "/work", "panicked", ".rs:"] {
        assert!(!message.contains(leak), "{message:?} leaks {leak:?}");
    }
}

/// Sends `request` as written on a new connection and reads the whole answer (the request
/// should say `Connection: close`): its status and text.
async fn raw(port: u16, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server answers")
        .unwrap();
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    (status, text)
}

#[tokio::test]
async fn a_cross_site_text_plain_post_of_json_starts_no_job() {
    let s = server().await;
    // What a page can send without a preflight: text/plain, from its own origin.
    let text = [("content-type", "text/plain")];
    assert_refused(
        post_job(&s, &text).await,
        415,
        Some("unsupported_media_type"),
    )
    .await;
    let with_origin = [("content-type", "text/plain"), ("origin", EVIL)];
    assert_refused(post_job(&s, &with_origin).await, 403, Some("forbidden")).await;
    let form = [("content-type", "application/x-www-form-urlencoded")];
    assert_refused(
        post_job(&s, &form).await,
        415,
        Some("unsupported_media_type"),
    )
    .await;
    let missing = reqwest::Client::new()
        .post(format!("{}/api/v1/blobs/missing", s.url))
        .header("content-type", "text/plain")
        .body(json!({ "hashes": [] }).to_string());
    assert_refused(
        missing.send().await.unwrap(),
        415,
        Some("unsupported_media_type"),
    )
    .await;
    assert_eq!(job_count(&s).await, 0, "no job stored");
    assert!(s.launcher.launched().is_empty());
    // JSON with parameters is JSON.
    let json = [("content-type", "application/json; charset=utf-8")];
    assert_eq!(post_job(&s, &json).await.status().as_u16(), 201);
}

#[tokio::test]
async fn a_cross_site_form_to_the_legacy_route_starts_no_job() {
    let s = server().await;
    let from_evil = cross_site_form(&s, &[("origin", EVIL)]).await;
    assert_refused(from_evil, 403, None).await;
    let fetch_metadata_only = cross_site_form(&s, &[("sec-fetch-site", "cross-site")]).await;
    assert_refused(fetch_metadata_only, 403, None).await;
    let same_site = cross_site_form(&s, &[("sec-fetch-site", "same-site")]).await;
    assert_refused(same_site, 403, None).await;
    let null_origin = cross_site_form(&s, &[("origin", "null")]).await;
    assert_refused(null_origin, 403, None).await;
    assert_eq!(job_count(&s).await, 0, "no job stored");
    assert!(s.launcher.launched().is_empty());
}

#[tokio::test]
async fn reads_that_carry_data_are_refused_to_other_origins() {
    let s = server().await;
    let http = reqwest::Client::new();
    let id = s
        .store
        .create_job(&dbt_remote_core::testing::sample_job())
        .await
        .unwrap()
        .id;
    for path in [
        "/api/v1/jobs".to_string(),
        format!("/api/v1/jobs/{id}/logs"),
        format!("/api/v1/jobs/{id}/logs/stream"),
        format!("/api/v1/jobs/{id}/artifacts/manifest.json"),
    ] {
        let r = http.get(format!("{}{path}", s.url)).header("origin", EVIL);
        assert_refused(r.send().await.unwrap(), 403, Some("forbidden")).await;
    }
    let r = http
        .get(format!("{}/job/{id}/logs", s.url))
        .header("origin", EVIL);
    assert_refused(r.send().await.unwrap(), 403, None).await;
    // Liveness and the API document stay readable from anywhere.
    for path in ["/health", "/version", "/api/v1/openapi.json"] {
        let r = http.get(format!("{}{path}", s.url)).header("origin", EVIL);
        assert_eq!(r.send().await.unwrap().status().as_u16(), 200, "{path}");
    }
}

#[tokio::test]
async fn the_own_origin_and_allowed_origins_pass() {
    let s = InProcess::start_with(LIMIT, |c| {
        c.edge.allowed_origins = vec!["https://ui.example.com".into()];
    })
    .await;
    let json = ("content-type", "application/json");
    let own = s.url.clone();
    for origin in ["https://ui.example.com", own.as_str()] {
        let headers = [json, ("origin", origin), ("sec-fetch-site", "cross-site")];
        let r = post_job(&s, &headers).await;
        assert_eq!(r.status().as_u16(), 201, "{origin}");
    }
    let same_origin = post_job(&s, &[json, ("sec-fetch-site", "same-origin")]).await;
    assert_eq!(same_origin.status().as_u16(), 201);
    let form = cross_site_form(&s, &[("origin", "https://ui.example.com")]).await;
    assert_eq!(form.status().as_u16(), 202);
    assert_eq!(job_count(&s).await, 4);
}

#[tokio::test]
async fn a_rebinding_host_is_refused_before_anything_is_stored() {
    let s = server().await;
    let port = s.port;
    let body = json!({ "args": ["build"] }).to_string();
    let post = |host: &str| {
        format!(
            "POST /api/v1/jobs HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let (status, text) = raw(port, &post("evil.example:8001")).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("\"forbidden\""), "{text}");
    let health =
        |host: &str| format!("GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    assert_eq!(raw(port, &health("evil.example:8001")).await.0, 403);
    assert_eq!(job_count(&s).await, 0, "no job stored");
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "[::1]".into(),
    ] {
        assert_eq!(raw(port, &health(&host)).await.0, 200, "{host}");
    }
    assert_eq!(raw(port, &post(&format!("localhost:{port}"))).await.0, 201);
}

#[tokio::test]
async fn allowed_hosts_and_the_public_url_pass_the_host_check() {
    let s = InProcess::start_with(LIMIT, |c| {
        c.edge.allowed_hosts = vec!["dbt.internal".into()];
        c.public_url = Some("https://dbt.example.com/".into());
    })
    .await;
    let health =
        |host: &str| format!("GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    for host in [
        "dbt.internal:8001",
        "dbt.example.com",
        "DBT.example.com:443",
    ] {
        assert_eq!(raw(s.port, &health(host)).await.0, 200, "{host}");
    }
    assert_eq!(raw(s.port, &health("evil.example")).await.0, 403);
}

#[tokio::test]
async fn the_0_4_6_cli_replay_passes() {
    let s = server().await;
    let response = post_form(&format!("{}/dbt", s.url), &legacy_form(&s).parts()).await;
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(job_count(&s).await, 1);
    // And the native client, which sends no Origin and JSON with its content type.
    let client = dbt_remote_core::Client::new(&s.url).unwrap();
    client.submit(vec!["build".into()], &[]).await.unwrap();
    assert_eq!(job_count(&s).await, 2);
}

/// A server whose edge settings are changed by `edge`.
async fn server_with(edge: impl FnOnce(&mut dbt_remote_core::server::EdgeSettings)) -> InProcess {
    InProcess::start_with(LIMIT, |c| edge(&mut c.edge)).await
}

/// Waits until the server closes `stream` (end of file or reset), for at most `within`:
/// whether it did, and what it sent.
async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> (bool, String) {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut answer)).await;
    (read.is_ok(), String::from_utf8_lossy(&answer).to_string())
}

#[tokio::test]
async fn connections_that_never_finish_their_headers_are_closed() {
    let timeout = Duration::from_secs(1);
    let s = server_with(|e| {
        e.header_read_timeout = timeout;
        e.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let mut streams = Vec::new();
    for _ in 0..800 {
        let mut stream = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .await
            .unwrap();
        streams.push(stream);
    }
    let deadline = tokio::time::Instant::now() + timeout + Duration::from_secs(2);
    let closed = futures::future::join_all(streams.iter_mut().map(|stream| async move {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        closed_by_server(stream, left).await.0
    }))
    .await;
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(open, 0, "{open} of 800 half-header connections still open");
    // The server still answers.
    let health = reqwest::get(format!("{}/health", s.url)).await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let s = server_with(|e| {
        e.header_read_timeout = Duration::from_secs(60);
        e.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let mut stream = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (closed, answer) = closed_by_server(&mut stream, Duration::from_secs(4)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(closed, "the idle keep-alive connection is still open");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before it was idle"
    );
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_stores_nothing() {
    let s = server_with(|e| {
        e.body_read_timeout = Duration::from_secs(1);
        e.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let body = json!({ "args": ["build"] }).to_string();
    let mut stream = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    let head = format!(
        "POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..5]
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (closed, answer) = closed_by_server(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("\"timed_out\""), "{answer:?}");
    assert!(closed, "the connection of a stalled body is closed");
    assert_eq!(job_count(&s).await, 0, "no job stored");
}

#[tokio::test]
async fn connections_past_the_limit_wait_until_others_leave() {
    let s = server_with(|e| e.max_connections = 4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(("127.0.0.1", s.port)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let url = format!("{}/health", s.url);
    assert!(
        http.get(&url).send().await.is_err(),
        "a fifth connection is served while four are open"
    );
    drop(held);
    let served = common::eventually(Duration::from_secs(5), "served again", || async {
        http.get(&url)
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    })
    .await;
    assert_eq!(served, 200);
}

/// The first bytes the server answers to an HTTP/2 connection preface (prior knowledge) with
/// an empty SETTINGS frame.
async fn answer_to_h2_preface(port: u16) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    stream.write_all(&hello).await.unwrap();
    let mut answer = vec![0; 9];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer)).await;
    let n = read.expect("the server answers or closes").unwrap_or(0);
    answer.truncate(n);
    answer
}

#[tokio::test]
async fn http2_without_tls_is_served_only_when_asked_for() {
    let is_settings_frame = |a: &[u8]| a.len() == 9 && a[3] == 4;
    let default = server().await;
    let answer = answer_to_h2_preface(default.port).await;
    assert!(
        !is_settings_frame(&answer),
        "h2c served by default: {answer:?}"
    );
    let h2 = server_with(|e| e.http2 = true).await;
    let answer = answer_to_h2_preface(h2.port).await;
    assert!(
        is_settings_frame(&answer),
        "no h2c with --http2: {answer:?}"
    );
}

/// CPU time (user + system) the process `pid` has used so far, from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // The kernel's USER_HZ, 100 on every Linux this runs on.
    Duration::from_millis(ticks * 10)
}

/// The share of one core the process `pid` uses over `window`.
async fn cpu_share(pid: u32, window: Duration) -> f64 {
    let before = cpu_time(pid);
    tokio::time::sleep(window).await;
    (cpu_time(pid) - before).as_secs_f64() / window.as_secs_f64()
}

#[tokio::test]
async fn followers_that_leave_stop_costing_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let server = common::RealServer::start_in(common::server_binary(), tmp.path(), &[]);
    // A job left running in the server's own state, as a runner would have it.
    let store = dbt_remote_core::LocalStore::new(tmp.path().join("state")).unwrap();
    let job = store
        .create_job(&dbt_remote_core::testing::sample_job())
        .await
        .unwrap();
    dbt_remote_core::JobLifecycle::start_job(&store, job.id)
        .await
        .unwrap();
    let url = format!("{}/api/v1/jobs/{}/logs/stream", server.url, job.id);
    let http = reqwest::Client::new();
    let followers = futures::future::join_all((0..200).map(|_| http.get(&url).send())).await;
    let followers: Vec<reqwest::Response> = followers.into_iter().map(|r| r.unwrap()).collect();
    assert!(followers.iter().all(|r| r.status().as_u16() == 200));
    let followed = cpu_share(server.pid(), Duration::from_secs(2)).await;
    drop(followers);
    drop(http);
    // Within 5 s of leaving: 3 s to notice, then 2 s measured.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left = cpu_share(server.pid(), Duration::from_secs(2)).await;
    eprintln!(
        "server CPU: {:.1}% of a core followed by 200, {:.1}% after they left",
        followed * 100.0,
        left * 100.0
    );
    assert!(
        left < 0.05,
        "the server still uses {:.0}% of a core after its followers left",
        left * 100.0
    );
}

#[tokio::test]
async fn a_quiet_log_stream_gets_heartbeats() {
    use futures::StreamExt;
    let s = server_with(|e| e.sse_heartbeat = Duration::from_secs(1)).await;
    let job = s
        .store
        .create_job(&dbt_remote_core::testing::sample_job())
        .await
        .unwrap();
    dbt_remote_core::JobLifecycle::start_job(&*s.store, job.id)
        .await
        .unwrap();
    let url = format!("{}/api/v1/jobs/{}/logs/stream", s.url, job.id);
    let response = reqwest::get(&url).await.unwrap();
    let mut body = response.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(3), body.next())
        .await
        .expect("a heartbeat within 3 s")
        .unwrap()
        .unwrap();
    assert!(first.starts_with(b":"), "not an SSE comment: {first:?}");
}

/// A JWKS endpoint on 127.0.0.1 that serves key 0 at once the first time, then keys 0 and 1
/// only after 10 s: its URL.
async fn slow_after_first_jwks() -> String {
    use dbt_remote_core::testing::auth::{jwks, key};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use warp::Filter;
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let route = warp::path!("certs").then(move || {
        let first = hits.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                return warp::reply::json(&jwks(&[key(0)]));
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
            warp::reply::json(&jwks(&[key(0), key(1)]))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    format!("http://{addr}/certs")
}

#[tokio::test]
async fn a_slow_jwks_endpoint_never_stalls_requests_with_cached_keys() {
    use dbt_remote_core::testing::auth::{google_claims, key};
    const AUDIENCE: &str = "https://dbt.example.test";
    let verifier = dbt_remote_core::auth::Verifier::builder()
        .with_google_id_tokens(AUDIENCE)
        .with_jwks_url(slow_after_first_jwks().await)
        // Keys are old after 1 s; an unknown kid may fetch at once.
        .with_key_timings(Duration::from_secs(1), Duration::ZERO)
        .build()
        .unwrap();
    let s = InProcess::start_with(LIMIT, |c| c.auth = verifier).await;
    let claims = google_claims(AUDIENCE, "a@example.test", 3600);
    let cached = format!("Bearer {}", key(0).sign(&claims));
    let unknown = format!("Bearer {}", key(1).sign(&claims));
    let list = |authorization: String| {
        let url = format!("{}/api/v1/jobs", s.url);
        async move {
            let started = Instant::now();
            let r = reqwest::Client::new()
                .get(url)
                .header("authorization", authorization)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), started.elapsed())
        }
    };
    assert_eq!(list(cached.clone()).await.0, 200, "the first fetch");
    // An unknown key id starts the slow fetch and waits for it.
    let waiting = tokio::spawn(list(unknown));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, took) = list(cached.clone()).await;
    assert_eq!(status, 200);
    assert!(
        took < Duration::from_secs(1),
        "a cached key waited {took:?}"
    );
    // Old keys are still used while the (slow) refresh runs.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for _ in 0..3 {
        let (status, took) = list(cached.clone()).await;
        assert_eq!(status, 200);
        assert!(
            took < Duration::from_secs(1),
            "an old cached key waited {took:?}"
        );
    }
    // The fetch gave up after its timeout (5 s): the unknown key got a 500, not a hang.
    let (status, took) = waiting.await.unwrap();
    assert_eq!(status, 500);
    assert!(
        took < Duration::from_secs(7),
        "the unknown key waited {took:?}"
    );
}

#[test]
fn google_auth_without_an_allow_list_warns_at_start() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::server_binary())
        .args(["--port", "0", "--auth-google", "--auth-audience"])
        .arg("https://dbt.example.test")
        .arg("--state-dir")
        .arg(tmp.path().join("state"))
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut warned = false;
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(10)) {
        if line.contains("any Google account") && line.contains("--auth-allowed-emails") {
            warned = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(warned, "no warning that any Google account is accepted");
}

#[test]
fn zero_timeouts_and_connection_limits_are_refused_at_start() {
    for flag in [
        "--header-read-timeout-seconds",
        "--idle-timeout-seconds",
        "--body-read-timeout-seconds",
        "--sse-heartbeat-seconds",
        "--max-connections",
    ] {
        let out = std::process::Command::new(common::server_binary())
            .args([flag, "0", "--port", "0"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flag} 0 was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{flag}: {stderr}");
    }
}

//! Attacks on the server's caps (docs/security/limits.md), each against dbt-server served on a
//! real listener: files and bytes a job would materialise (blob amplification), schedules,
//! zip archives whose headers lie, multipart forms, and the 0.4.6 log route on a huge log.

mod common;

use std::io::Write;

use bytes::Bytes;
use common::legacy::{multipart, overrides_with, post_form, stored_zip, Form, Part};
use common::InProcess;
use dbt_remote_core::testing::all_jobs;
use dbt_remote_core::BlobHash;
use serde_json::{json, Value};

const MIB: u64 = 1024 * 1024;

/// The answer's status and JSON body.
async fn answer(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, body)
}

/// Checks a refusal: `status`, the protocol's error body whose message mentions `needle`, and
/// no server detail in it.
fn assert_refused(got: (u16, Value), status: u16, needle: &str) {
    let (code, body) = got;
    assert_eq!(code, status, "{body}");
    let message = body["detail"]
        .as_str()
        .or_else(|| body["error"]["message"].as_str())
        .unwrap_or_else(|| panic!("no error message in {body}"));
    assert!(
        message.contains(needle),
        "{message:?} should mention {needle:?}"
    );
    for leak in ["/tmp", "/root", "panicked", "src/", ".rs:"] {
        assert!(!message.contains(leak), "{message:?} leaks {leak:?}");
    }
}

/// The server still answers, and stored no job.
async fn assert_unchanged(s: &InProcess) {
    let health = common::get_json(format!("{}/health", s.url)).await;
    assert_eq!(health["status"], "ok");
    assert!(all_jobs(&*s.store).await.is_empty(), "no job was stored");
    assert!(s.launcher.launched().is_empty());
}

/// Uploads `content` with the native API; its hash.
async fn upload(s: &InProcess, content: Vec<u8>) -> BlobHash {
    let hash = BlobHash::of(&content);
    let r = reqwest::Client::new()
        .put(format!("{}/api/v1/blobs/{hash}", s.url))
        .body(content)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    hash
}

/// `POST /api/v1/jobs` of `build` with `count` paths, all of content `hash`.
async fn submit_paths(s: &InProcess, hash: &BlobHash, count: usize) -> (u16, Value) {
    let files: Vec<Value> = (0..count)
        .map(|i| json!({ "path": format!("models/m{i}.sql"), "sha256": hash.to_string() }))
        .collect();
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs", s.url))
        .json(&json!({ "args": ["build"], "files": files }))
        .send()
        .await
        .unwrap();
    answer(r).await
}

#[tokio::test]
async fn one_blob_under_many_paths_is_refused_before_anything_is_stored() {
    // Blob amplification: 1 MiB uploaded once, listed under 10,000 paths, would make the
    // runner write 10 GB.
    let s = InProcess::start(64 * MIB).await;
    let hash = upload(&s, vec![b'x'; MIB as usize]).await;
    let got = submit_paths(&s, &hash, 10_000).await;
    assert_refused(got, 413, "over the limit");
    assert_unchanged(&s).await;
}

#[tokio::test]
async fn too_many_files_are_refused_before_anything_is_stored() {
    let s = InProcess::start_with_limits(64 * MIB, |l| l.job.max_files = 100).await;
    let hash = upload(&s, b"select 1".to_vec()).await;
    assert_refused(
        submit_paths(&s, &hash, 101).await,
        413,
        "101 files in the job",
    );
    assert_unchanged(&s).await;
    let (status, body) = submit_paths(&s, &hash, 100).await;
    assert_eq!(status, 201, "{body}");
}

/// A STORED zip with a `manifest.json` of `size` spaces and `extra` tiny files.
fn zip_with(size: usize, extra: usize) -> Vec<u8> {
    let manifest = vec![b' '; size];
    let names: Vec<String> = (0..extra).map(|i| format!("seeds/s{i}.csv")).collect();
    let mut entries: Vec<(&str, &[u8])> = vec![("manifest.json", &manifest)];
    entries.extend(names.iter().map(|n| (n.as_str(), &b"a\n1\n"[..])));
    stored_zip(&entries)
}

/// The offsets of the central directory headers of `zip`.
fn central_headers(zip: &[u8]) -> Vec<usize> {
    zip.windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"PK\x01\x02")
        .map(|(i, _)| i)
        .collect()
}

/// `zip` with the uncompressed size of its first central directory entry set to `size`
/// (the header's claim; the data are unchanged).
fn declaring_size(mut zip: Vec<u8>, size: u32) -> Vec<u8> {
    let at = central_headers(&zip)[0] + 24;
    zip[at..at + 4].copy_from_slice(&size.to_le_bytes());
    zip
}

/// A zip of one DEFLATE `manifest.json` of `actual` bytes whose headers claim `declared`.
fn deflated_lying(actual: usize, declared: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut w = zip::ZipWriter::new(&mut out);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    w.start_file("manifest.json", options).unwrap();
    w.write_all(&vec![b' '; actual]).unwrap();
    w.finish().unwrap();
    let mut zip = out.into_inner();
    // Local header (offset 22) and central directory (offset 24) both lie.
    zip[22..26].copy_from_slice(&declared.to_le_bytes());
    declaring_size(zip, declared)
}

/// A zip of one entry whose zip64 extra field claims `declared` bytes unzipped.
fn zip64_declaring(declared: u64) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut w = zip::ZipWriter::new(&mut out);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    w.start_file("manifest.json", options).unwrap();
    w.write_all(b"{}").unwrap();
    w.finish().unwrap();
    let mut zip = out.into_inner();
    let header = central_headers(&zip)[0];
    // Uncompressed size 0xFFFFFFFF: the real one is in the zip64 extra field (id 1).
    zip[header + 24..header + 28].copy_from_slice(&u32::MAX.to_le_bytes());
    let name_len = u16::from_le_bytes([zip[header + 28], zip[header + 29]]) as usize;
    let extra = header + 46 + name_len;
    assert_eq!(&zip[extra..extra + 2], &[1, 0], "a zip64 extra field");
    zip[extra + 4..extra + 12].copy_from_slice(&declared.to_le_bytes());
    zip
}

fn form(zip: Vec<u8>) -> Form {
    Form {
        server_url: "http://127.0.0.1/".into(),
        user_command: "build".into(),
        overrides: overrides_with("'target': 'dev'"),
        dbt_project: b"name: p\nprofile: p\nconfig-version: 2\n".to_vec(),
        profiles: b"p: {target: dev}\n".to_vec(),
        packages: None,
        zipped_artifacts: zip,
    }
}

/// Posts `parts` to `/dbt`: the status and the JSON body.
async fn post_dbt(s: &InProcess, parts: &[Part<'_>]) -> (u16, Value) {
    answer(post_form(&format!("{}/dbt", s.url), parts).await).await
}

#[tokio::test]
async fn zips_whose_headers_lie_are_refused_and_the_server_still_answers() {
    let s = InProcess::start(8 * MIB).await;
    let honest = zip_with(1000, 0);
    // Declared small, actual larger: the data do not match the header.
    let small = declaring_size(honest.clone(), 10);
    assert_refused(
        post_dbt(&s, &form(small).parts()).await,
        400,
        "manifest.json",
    );
    // Declared huge (4 GiB), actual 1000 bytes: refused before any allocation of that size.
    let huge = declaring_size(honest, u32::MAX - 1);
    assert_refused(post_dbt(&s, &form(huge).parts()).await, 413, "unzipped");
    // zip64: a size of 2^64 - 1 (used to overflow and panic the handler).
    let zip64 = zip64_declaring(u64::MAX);
    assert_refused(post_dbt(&s, &form(zip64).parts()).await, 413, "unzipped");
    // A bomb: declared 100 bytes, inflates to 8 MiB (1000 times its size); reading stops at
    // byte 101.
    let bomb = deflated_lying(8 * MIB as usize, 100);
    assert!(bomb.len() < 8 * MIB as usize / 1000);
    assert_refused(
        post_dbt(&s, &form(bomb).parts()).await,
        400,
        "header says 100",
    );
    assert_unchanged(&s).await;
}

#[tokio::test]
async fn zips_past_the_entry_and_size_caps_are_refused() {
    let s = InProcess::start_with_limits(8 * MIB, |l| {
        l.zip.max_entries = 50;
        l.zip.max_unzipped_bytes = 100_000;
    })
    .await;
    let many = zip_with(10, 50);
    assert_refused(
        post_dbt(&s, &form(many).parts()).await,
        413,
        "51 entries in zipped_artifacts",
    );
    let large = zip_with(100_001, 0);
    assert_refused(post_dbt(&s, &form(large).parts()).await, 413, "unzipped");
    assert_unchanged(&s).await;
    let (status, body) = post_dbt(&s, &form(zip_with(90_000, 48)).parts()).await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test]
async fn multipart_forms_are_bounded() {
    let s = InProcess::start(MIB).await;
    // A body past the limit, whatever its fields.
    let big = vec![("user_command", None, vec![b'x'; 2 * MIB as usize])];
    assert_refused(post_dbt(&s, &big).await, 413, "limit");
    // Many tiny unknown fields.
    let mut parts = form(zip_with(10, 0)).parts();
    let names: Vec<String> = (0..2000).map(|i| format!("f{i}")).collect();
    parts.extend(names.iter().map(|n| (n.as_str(), None, b"x".to_vec())));
    assert_refused(post_dbt(&s, &parts).await, 413, "fields");
    // A field repeated: one value per field.
    let mut twice = form(zip_with(10, 0)).parts();
    twice.push(("user_command", None, b"run".to_vec()));
    assert_refused(post_dbt(&s, &twice).await, 400, "user_command");
    assert_unchanged(&s).await;
    let _ = multipart(&[]);
    let _ = Bytes::new();
}

/// The parts of a `POST /schedule` named `name`.
fn schedule(name: &str) -> Vec<Part<'static>> {
    let mut parts = form(zip_with(10, 0)).parts();
    parts.push(("schedule", None, b"0 8 * * *".to_vec()));
    parts.push(("schedule_name", None, name.as_bytes().to_vec()));
    parts
}

#[tokio::test]
async fn schedules_past_the_cap_are_refused() {
    let s = InProcess::start_with_limits(MIB, |l| l.max_schedules = 2).await;
    let url = format!("{}/schedule", s.url);
    for name in ["a", "b"] {
        let (status, body) = answer(post_form(&url, &schedule(name)).await).await;
        assert_eq!(status, 201, "{body}");
    }
    let got = answer(post_form(&url, &schedule("c")).await).await;
    assert_refused(got, 413, "3 schedules, over the limit of 2");
    let listed = common::get_json(&url).await;
    let names: Vec<&String> = listed["schedules"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["a", "b"]);
    assert_unchanged(&s).await;
}

/// A job of `files` paths of one blob, written into the state dir behind the server's back
/// (as if its sizes had been misjudged at submit), then the real dbt-server started over it:
/// its runner must refuse to write past `--max-job-bytes`.
#[tokio::test]
async fn the_runner_refuses_to_materialise_past_the_cap() {
    use dbt_remote_core::{FileEntry, JobRecord, JobSpec, LocalStore, RelPath, StateStore};
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().join("state")).unwrap();
    let content = Bytes::from(vec![b'x'; 64 * 1024]);
    let sha256 = BlobHash::of(&content);
    store.put_blob(&sha256, content).await.unwrap();
    let files = (0..100)
        .map(|i| FileEntry {
            path: RelPath::new(format!("seeds/s{i}.csv")).unwrap(),
            sha256: sha256.clone(),
        })
        .collect();
    let spec = JobSpec {
        args: vec!["seed".into()],
        files,
        ..Default::default()
    };
    let job = store.create_job(&JobRecord::new(spec)).await.unwrap();
    drop(store);

    // 100 × 64 KiB = 6.4 MB against a cap of 1 MB; the server launches the queued job at start.
    let work = dir.path().join("work");
    let work_flag = work.to_str().unwrap();
    let server = common::RealServer::start_in(
        common::server_binary(),
        dir.path(),
        &[
            "--max-job-bytes",
            "1000000",
            "--work-dir",
            work_flag,
            "--keep-work-dirs",
        ],
    );
    let client = dbt_remote_core::Client::new(&server.url).unwrap();
    let done = common::eventually(std::time::Duration::from_secs(20), "the job ends", || {
        let client = client.clone();
        async move { Some(client.job(job.id).await.ok()?).filter(|j| j.status.is_final()) }
    })
    .await;
    assert_eq!(done.status, dbt_remote_core::JobStatus::Failed);
    let reason = done.failure_reason.unwrap_or_default();
    assert!(reason.contains("over the limit of 1000000"), "{reason}");
    let written: u64 = walk_sizes(&work.join(job.id.to_string()));
    assert!(written <= 1_000_000, "{written} bytes were written");
}

/// The total size of the files under `dir` (0 when there is none).
fn walk_sizes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => walk_sizes(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// The peak resident memory of process `pid`, in bytes (`VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Records in the log of [`a_huge_log_is_streamed_whole_in_bounded_memory`]: 100,000 of 200
/// bytes (a 24 MB answer), or `DBT_REMOTE_TEST_HUGE_LOG` (e.g. 1000000, a few minutes in a
/// debug build).
fn huge_log_records() -> u64 {
    std::env::var("DBT_REMOTE_TEST_HUGE_LOG")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

#[tokio::test]
async fn a_huge_log_is_streamed_whole_in_bounded_memory() {
    use dbt_remote_core::{
        JobLifecycle, JobRecord, JobSpec, JobStatus, LocalStore, LogEntry, LogLevel, StateStore,
    };
    let records = huge_log_records();
    let padding = "x".repeat(200);
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().join("state")).unwrap();
    let spec = JobSpec {
        args: vec!["build".into()],
        ..Default::default()
    };
    let job = store.create_job(&JobRecord::new(spec)).await.unwrap();
    let mut entry = LogEntry::remote(LogLevel::Info, "");
    for batch in 0..records.div_ceil(10_000) {
        let entries: Vec<LogEntry> = (batch * 10_000..records.min((batch + 1) * 10_000))
            .map(|i| {
                entry.message = format!("{padding} m{i}");
                entry.clone()
            })
            .collect();
        store.append_logs(job.id, &entries).await.unwrap();
    }
    store.start_job(job.id).await.unwrap();
    store
        .finish_job(job.id, JobStatus::Succeeded, Some(0), None)
        .await
        .unwrap();
    drop(store);

    let server = common::RealServer::start_in(common::server_binary(), dir.path(), &[]);
    let before = peak_rss(server.pid());
    let response = reqwest::get(format!("{}/job/{}/logs", server.url, job.id))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(response.content_length().is_none(), "streamed, not sized");
    assert_eq!(response.headers()["transfer-encoding"], "chunked");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = response.bytes().await.unwrap();
    let grown = peak_rss(server.pid()).saturating_sub(before);
    eprintln!(
        "{records} records, {} bytes: peak RSS {before} → +{grown}",
        body.len()
    );
    // Held at once, the records, their lines and the answer would take several times the
    // answer's size; streamed, a few pages.
    assert!(body.len() as u64 > records * 200, "{} bytes", body.len());
    assert!(
        grown < 16 * MIB,
        "the server's peak memory grew by {grown} bytes"
    );

    let answer: dbt_remote_core::compat::LegacyLogs = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer.run_status, "success");
    assert_eq!(answer.run_logs.len() as u64, records);
    for (i, line) in answer.run_logs.iter().enumerate() {
        assert!(
            line.ends_with(&format!("\tINFO\t{padding} m{i}")),
            "line {i}: {line:?}"
        );
    }
    // last_logs pages too: one answer holds at most 10,000 records, and says running.
    let page = common::get_json(format!("{}/job/{}/last_logs", server.url, job.id)).await;
    assert_eq!(page["run_logs"].as_array().unwrap().len(), 10_000);
    assert_eq!(page["run_status"], "running");
}

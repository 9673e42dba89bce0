//! The HTTP client of dbt-server's API, used by the CLI, the Python binding and tests.

use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;

use crate::api::{
    self, ArtifactList, BlobQuery, Health, Job, JobList, LogPage, MissingBlobs, SubmitFile,
    SubmitJob,
};
use crate::auth::ClientAuth;
use crate::blob::BlobHash;
use crate::job::JobId;
use crate::job::JobSpec;
use crate::log::LogRecord;
use crate::package::{pack_job, with_state, JobFiles, ProjectFile};
use crate::{Error, Result};

mod retry;
mod schedules;

pub use schedules::NewSchedule;

/// How many times in a row [`Client::follow`] fails to get a stream (refused, dropped before a
/// record, cut) before giving up; a new connection starts the count again.
const MAX_RECONNECTS: u32 = 10;

/// A client of one dbt-server.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    auth: ClientAuth,
}

/// How a submitted job runs beyond its arguments and files ([`Client::submit_with`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubmitOptions {
    /// Make an Elementary report after the dbt command (the artifact
    /// [`ELEMENTARY_REPORT`](crate::runner::ELEMENTARY_REPORT); docs/elementary.md).
    pub elementary: bool,
    /// The environment the job runs for ([`SubmitJob::environment`]).
    pub environment: Option<String>,
    /// Run with the manifest of this environment's latest success as dbt's state
    /// ([`SubmitJob::defer_to`]).
    pub defer_to: Option<String>,
    /// For `retry`: the failed job to retry ([`SubmitJob::retry_of`]); default the latest
    /// failed job of the project and environment.
    pub retry_of: Option<JobId>,
}

/// Which jobs [`Client::jobs_where`] lists; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub status: Option<String>,
    pub project: Option<String>,
    pub environment: Option<String>,
    pub target: Option<String>,
}

/// What [`Client::submit`] sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadStats {
    /// Files in the job.
    pub files: usize,
    /// Blobs the server lacked and that were uploaded.
    pub uploaded_blobs: usize,
    /// Bytes of those blobs.
    pub uploaded_bytes: u64,
}

/// A node that did not pass, from a job's `run_results.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct FailedNode {
    pub unique_id: String,
    /// dbt's result status: `error`, `fail` or `runtime error`.
    pub status: String,
    /// dbt's message, e.g. the database error.
    #[serde(default)]
    pub message: Option<String>,
}

/// One step of [`Client::follow`].
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Record(LogRecord),
    End(Job),
}

impl Client {
    /// A client of the server at `base_url` (`http://host:port` or `https://host`, optionally
    /// with a path prefix) that sends no credentials; see [`with_auth`](Self::with_auth).
    pub fn new(base_url: &str) -> Result<Self> {
        let base = base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::invalid(format!(
                "invalid server URL {base_url:?}: it must start with http:// or https://"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("dbt-remote/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::backend("http", e))?;
        Ok(Client {
            base,
            http,
            auth: ClientAuth::none(),
        })
    }

    /// The same client, sending `auth`'s bearer token on every request.
    pub fn with_auth(mut self, auth: ClientAuth) -> Self {
        self.auth = auth;
        self
    }

    /// The credentials this client sends.
    pub fn auth(&self) -> &ClientAuth {
        &self.auth
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Where a browser opens the docs site of a finished job: for a succeeded `dbt docs
    /// generate` job, its own site and the latest site of its project and target (when both
    /// are known); for any other job, none.
    pub fn docs_links(&self, job: &Job) -> Vec<(&'static str, String)> {
        let spec = crate::JobSpec {
            args: job.args.clone(),
            ..Default::default()
        };
        if job.status != crate::JobStatus::Succeeded || spec.command() != Some("docs generate") {
            return vec![];
        }
        let mut links = vec![("docs", self.url(&format!("/api/v1/jobs/{}/docs/", job.id)))];
        if let (Some(project), Some(target)) = (&job.project, &job.target) {
            let latest = format!("/api/v1/docs/{project}/{target}/");
            links.push(("latest docs", self.url(&latest)));
        }
        links
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let request = match self.auth.token().await? {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let (code, message) = match serde_json::from_str::<api::ErrorBody>(&text) {
            Ok(body) => (body.error.code, body.error.message),
            Err(_) => ("http".to_string(), text.chars().take(300).collect()),
        };
        Err(match status.as_u16() {
            404 if code == "not_found" => Error::NotFound { what: message },
            401 | 403 => Error::Unauthenticated(format!(
                "{} refused the request ({}); sent: {}",
                self.base,
                message.trim_start_matches("unauthenticated: "),
                self.auth.describe()
            )),
            s => Error::Server {
                status: s,
                code,
                message,
            },
        })
    }

    /// A request that failed on the way: the server is unreachable. The cause is kept as text
    /// (the HTTP library's types stay out of the public error).
    fn transport_error(&self, e: reqwest::Error) -> Error {
        Error::unreachable(&self.base, e.to_string())
    }

    async fn json<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T> {
        self.send(request)
            .await?
            .json()
            .await
            .map_err(|e| self.transport_error(e))
    }

    /// `GET /check`: the original dbt-server's liveness answer.
    pub async fn check(&self) -> Result<String> {
        #[derive(serde::Deserialize)]
        struct Check {
            response: String,
        }
        Ok(self
            .json::<Check>(self.http.get(self.url("/check")))
            .await?
            .response)
    }

    pub async fn health(&self) -> Result<Health> {
        self.json(self.http.get(self.url("/health"))).await
    }

    pub async fn missing_blobs(&self, hashes: &[BlobHash]) -> Result<Vec<BlobHash>> {
        let body = BlobQuery {
            hashes: hashes.to_vec(),
        };
        let answer: MissingBlobs = self
            .json(
                self.http
                    .post(self.url("/api/v1/blobs/missing"))
                    .json(&body),
            )
            .await?;
        Ok(answer.missing)
    }

    pub async fn put_blob(&self, content: Bytes) -> Result<BlobHash> {
        let hash = BlobHash::of(&content);
        self.send(
            self.http
                .put(self.url(&format!("/api/v1/blobs/{hash}")))
                .body(content),
        )
        .await?;
        Ok(hash)
    }

    /// Uploads the files the server lacks, then submits the job.
    pub async fn submit(
        &self,
        args: Vec<String>,
        files: &[ProjectFile],
    ) -> Result<(Job, UploadStats)> {
        self.submit_with(args, files, SubmitOptions::default())
            .await
    }

    /// [`submit`](Self::submit) with `options`.
    pub async fn submit_with(
        &self,
        args: Vec<String>,
        files: &[ProjectFile],
        options: SubmitOptions,
    ) -> Result<(Job, UploadStats)> {
        let stats = self.upload_missing(files).await?;
        let request = SubmitJob {
            args,
            files: submit_files(files),
            mode: Default::default(),
            elementary: options.elementary,
            environment: options.environment,
            defer_to: options.defer_to,
            retry_of: options.retry_of,
            files_of: None,
        };
        Ok((self.post_job(&request).await?, stats))
    }

    /// `POST /api/v1/jobs`: submits a job whose blobs the server holds.
    async fn post_job(&self, request: &SubmitJob) -> Result<Job> {
        self.json(self.http.post(self.url("/api/v1/jobs")).json(request))
            .await
    }

    /// Uploads the blobs of `files` the server lacks (each once) and says what was sent.
    pub async fn upload_missing(&self, files: &[ProjectFile]) -> Result<UploadStats> {
        let hashes: Vec<BlobHash> = files.iter().map(|f| f.sha256.clone()).collect();
        let mut missing = self.missing_blobs(&hashes).await?;
        missing.sort();
        missing.dedup();
        let mut stats = UploadStats {
            files: files.len(),
            ..Default::default()
        };
        for hash in &missing {
            let file = files.iter().find(|f| &f.sha256 == hash).ok_or_else(|| {
                Error::backend(
                    "dbt-server",
                    format!("the server asked for blob {hash}, which was not offered"),
                )
            })?;
            self.put_blob(file.content.clone()).await?;
            stats.uploaded_blobs += 1;
            stats.uploaded_bytes += file.content.len() as u64;
        }
        Ok(stats)
    }

    /// Packs the project as `files` says (see [`JobFiles`]), uploads what the server lacks and
    /// submits `args`. A bad command is refused before anything is read or sent; with a
    /// manifest, `--state` points dbt at it.
    pub async fn submit_project(
        &self,
        args: Vec<String>,
        files: &JobFiles,
    ) -> Result<(Job, UploadStats)> {
        self.submit_project_with(args, files, SubmitOptions::default())
            .await
    }

    /// [`submit_project`](Self::submit_project) with `options`.
    pub async fn submit_project_with(
        &self,
        args: Vec<String>,
        files: &JobFiles,
        options: SubmitOptions,
    ) -> Result<(Job, UploadStats)> {
        let (args, packed) = pack_project(args, files).await?;
        self.submit_with(args, &packed, options).await
    }

    /// Where a job's Elementary report is served, when the job stored one
    /// (`GET /api/v1/jobs/{id}/artifacts/elementary_report.html`).
    pub fn report_url(&self, id: JobId) -> String {
        self.url(&format!(
            "/api/v1/jobs/{id}/artifacts/{}",
            crate::runner::ELEMENTARY_REPORT
        ))
    }

    /// Waits until the job has a final status, asking every `poll`, and returns it.
    pub async fn wait(&self, id: JobId, poll: Duration) -> Result<Job> {
        loop {
            let job = self.job(id).await?;
            if job.status.is_final() {
                return Ok(job);
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// The nodes that errored or failed in the job, from its `run_results.json` (none when
    /// dbt wrote no results, e.g. it stopped before running any node).
    pub async fn failed_nodes(&self, id: JobId) -> Result<Vec<FailedNode>> {
        #[derive(serde::Deserialize)]
        struct RunResults {
            results: Vec<FailedNode>,
        }
        let content = match self.artifact(id, "run_results.json").await {
            Ok(c) => c,
            Err(Error::NotFound { .. }) => return Ok(vec![]),
            Err(e) => return Err(e),
        };
        let results: RunResults = serde_json::from_slice(&content)
            .map_err(|e| Error::backend("dbt-server", format!("run_results.json: {e}")))?;
        Ok(results
            .results
            .into_iter()
            .filter(|r| matches!(r.status.as_str(), "error" | "fail" | "runtime error"))
            .collect())
    }

    pub async fn job(&self, id: JobId) -> Result<Job> {
        self.json(self.http.get(self.url(&format!("/api/v1/jobs/{id}"))))
            .await
    }

    pub async fn jobs(
        &self,
        status: Option<&str>,
        limit: Option<usize>,
        page_token: Option<&str>,
    ) -> Result<JobList> {
        let filter = JobFilter {
            status: status.map(str::to_string),
            ..Default::default()
        };
        self.jobs_where(&filter, limit, page_token).await
    }

    /// Jobs newest first, one page, filtered by status, project, environment and target.
    pub async fn jobs_where(
        &self,
        filter: &JobFilter,
        limit: Option<usize>,
        page_token: Option<&str>,
    ) -> Result<JobList> {
        let mut query: Vec<(&str, String)> = Vec::new();
        let fields = [
            ("status", &filter.status),
            ("project", &filter.project),
            ("environment", &filter.environment),
            ("target", &filter.target),
        ];
        for (name, value) in fields {
            if let Some(v) = value {
                query.push((name, v.clone()));
            }
        }
        if let Some(l) = limit {
            query.push(("limit", l.to_string()));
        }
        if let Some(t) = page_token {
            query.push(("page_token", t.to_string()));
        }
        self.json(self.http.get(self.url("/api/v1/jobs")).query(&query))
            .await
    }

    pub async fn cancel(&self, id: JobId) -> Result<Job> {
        self.json(
            self.http
                .post(self.url(&format!("/api/v1/jobs/{id}/cancel"))),
        )
        .await
    }

    pub async fn logs(&self, id: JobId, after: u64, limit: Option<usize>) -> Result<LogPage> {
        let mut query = vec![("after", after.to_string())];
        if let Some(l) = limit {
            query.push(("limit", l.to_string()));
        }
        self.json(
            self.http
                .get(self.url(&format!("/api/v1/jobs/{id}/logs")))
                .query(&query),
        )
        .await
    }

    /// The job's log records written so far, after `after`, read page by page; the stream
    /// ends at the last record written (the job's last one once it has ended).
    pub fn logs_so_far(
        &self,
        id: JobId,
        after: u64,
    ) -> impl Stream<Item = Result<LogRecord>> + Send + 'static {
        let client = self.clone();
        let pages = futures::stream::try_unfold(Some(after), move |after| {
            let client = client.clone();
            async move {
                let Some(after) = after else {
                    return Ok::<_, Error>(None);
                };
                let page = client.logs(id, after, None).await?;
                let next = (!page.records.is_empty() && !page.done).then_some(page.next_after);
                Ok(Some((page.records, next)))
            }
        });
        pages
            .map_ok(|records| futures::stream::iter(records.into_iter().map(Ok)))
            .try_flatten()
    }

    pub async fn artifacts(&self, id: JobId) -> Result<ArtifactList> {
        self.json(
            self.http
                .get(self.url(&format!("/api/v1/jobs/{id}/artifacts"))),
        )
        .await
    }

    pub async fn artifact(&self, id: JobId, name: &str) -> Result<Bytes> {
        let url = self.url(&format!("/api/v1/jobs/{id}/artifacts/{name}"));
        self.send(self.http.get(url))
            .await?
            .bytes()
            .await
            .map_err(|e| self.transport_error(e))
    }

    /// Downloads every artifact of the job into `dir` (names keep their sub-folders) and
    /// returns the paths written, in the server's order.
    pub async fn download_artifacts(
        &self,
        id: JobId,
        dir: &std::path::Path,
    ) -> Result<Vec<std::path::PathBuf>> {
        let mut written = Vec::new();
        for artifact in self.artifacts(id).await?.artifacts {
            let content = self.artifact(id, artifact.name.as_str()).await?;
            // A RelPath has no `..` or root: the file stays inside `dir`.
            let path = artifact.name.join_to(dir);
            let write = || -> std::io::Result<()> {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&path, &content)
            };
            write().map_err(|e| {
                Error::invalid(format!("{} cannot be written: {e}", path.display()))
            })?;
            written.push(path);
        }
        Ok(written)
    }

    /// Follows the job's log live from `after`: every record once, in order, then the final
    /// job. A dropped connection is reconnected with `Last-Event-ID`, so nothing is lost or
    /// repeated.
    pub fn follow(
        &self,
        id: JobId,
        after: u64,
    ) -> impl Stream<Item = Result<StreamEvent>> + Send + 'static {
        let state = Follow {
            client: self.clone(),
            id,
            after,
            failures: 0,
            events: None,
            done: false,
        };
        futures::stream::try_unfold(state, |mut st| async move {
            let event = st.next().await?;
            Ok(event.map(|e| (e, st)))
        })
    }
}

type SseStream = std::pin::Pin<Box<dyn Stream<Item = Result<eventsource_stream::Event>> + Send>>;

/// The state of one [`Client::follow`].
struct Follow {
    client: Client,
    id: JobId,
    after: u64,
    failures: u32,
    events: Option<SseStream>,
    done: bool,
}

impl Follow {
    async fn next(&mut self) -> Result<Option<StreamEvent>> {
        loop {
            if self.done {
                return Ok(None);
            }
            let Some(events) = self.events.as_mut() else {
                self.connect().await?;
                continue;
            };
            match events.next().await {
                Some(Ok(event)) => match event.event.as_str() {
                    api::SSE_EVENT_LOG => {
                        let record: LogRecord = parse_event(&event.data)?;
                        if record.seq <= self.after {
                            continue;
                        }
                        self.after = record.seq;
                        self.failures = 0;
                        return Ok(Some(StreamEvent::Record(record)));
                    }
                    api::SSE_EVENT_END => {
                        self.done = true;
                        return Ok(Some(StreamEvent::End(parse_event(&event.data)?)));
                    }
                    api::SSE_EVENT_ERROR => {
                        let why = format!("log stream: {}", event.data);
                        self.retry(Error::backend("dbt-server", why)).await?;
                    }
                    _ => continue,
                },
                Some(Err(e)) => self.retry(e).await?,
                None => {
                    let e = Error::unreachable(
                        &self.client.base,
                        "the log stream ended before the job",
                    );
                    self.retry(e).await?
                }
            }
        }
    }

    async fn connect(&mut self) -> Result<()> {
        let url = self
            .client
            .url(&format!("/api/v1/jobs/{}/logs/stream", self.id));
        let request = self
            .client
            .http
            .get(url)
            .header("accept", "text/event-stream")
            .header("last-event-id", self.after.to_string());
        match self.client.send(request).await {
            Ok(response) => {
                // Connected: the server is back, so the failures in a row start again (a job
                // that stays queued through many restarts sends no record to reset them).
                self.failures = 0;
                let base = self.client.base.clone();
                let stream = response.bytes_stream().eventsource().map(move |e| {
                    e.map_err(|e| Error::unreachable(&base, format!("log stream: {e}")))
                });
                self.events = Some(Box::pin(stream));
                Ok(())
            }
            Err(e @ (Error::Unreachable { .. } | Error::Backend { .. })) => self.retry(e).await,
            Err(e) => Err(e),
        }
    }

    /// Drops the connection and waits before the next try; fails after too many in a row.
    async fn retry(&mut self, e: Error) -> Result<()> {
        self.events = None;
        self.failures += 1;
        if self.failures > MAX_RECONNECTS {
            return Err(e);
        }
        tracing::debug!("log stream dropped ({e}); reconnecting");
        tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(self.failures.min(5)))).await;
        Ok(())
    }
}

fn parse_event<T: DeserializeOwned>(data: &str) -> Result<T> {
    serde_json::from_str(data)
        .map_err(|e| Error::backend("dbt-server", format!("unexpected log stream event: {e}")))
}

/// The wire form of packed files.
fn submit_files(files: &[ProjectFile]) -> Vec<SubmitFile> {
    files
        .iter()
        .map(|f| SubmitFile {
            path: f.path.to_string(),
            sha256: f.sha256.to_string(),
            kind: "file".into(),
        })
        .collect()
}

/// The arguments (with `--state` when a manifest is sent) and the packed files of a job on the
/// project `files` describes. A bad command is refused before anything is read.
async fn pack_project(
    args: Vec<String>,
    files: &JobFiles,
) -> Result<(Vec<String>, Vec<ProjectFile>)> {
    let args = if files.manifest.is_some() {
        with_state(args)
    } else {
        args
    };
    JobSpec {
        args: args.clone(),
        ..Default::default()
    }
    .validate()?;
    let packed = {
        let files = files.clone();
        tokio::task::spawn_blocking(move || pack_job(&files))
            .await
            .map_err(|e| Error::backend("packing", e))??
    };
    Ok((args, packed))
}

//! The native HTTP API (`/api/v1`, `/health`, `/check`): warp filters that read a request into
//! core types, and one small handler per route that calls the [`JobService`]. Errors are
//! answered by [`crate::reply`].

use std::convert::Infallible;

use bytes::Bytes;
use dbt_remote_core::api::{self, BlobQuery, ErrorBody, SubmitJob, SSE_EVENT_END, SSE_EVENT_ERROR};
use dbt_remote_core::auth::Verifier;
use dbt_remote_core::server::EdgeSettings;
use dbt_remote_core::service::{log_cursor, not_uploaded, ListJobs};
use dbt_remote_core::state::FollowEvent;
use dbt_remote_core::{BlobHash, Error, JobService, RelPath};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use warp::filters::BoxedFilter;
use warp::http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use warp::http::StatusCode;
use warp::path::Tail;
use warp::reply::{self, Reply, Response};
use warp::Filter;

use crate::reply::{artifact_reply, json_reply, native};
use crate::request::{
    job_id, json_body, limited_body, parse_json, percent_decode, query, BodyLimits,
};

/// The OpenAPI document of this API (docs/openapi.json), served at /api/v1/openapi.json.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

#[derive(Debug, Clone)]
pub struct Config {
    /// The port the server listens on, for `GET /check`.
    pub port: u16,
    /// Largest accepted request body.
    pub max_upload_bytes: u64,
    /// The server's base URL as clients reach it, for links in 0.4.6 answers; `None`: the
    /// Host the client reached.
    pub public_url: Option<String>,
    /// Use the profiles a 0.4.6 client sends instead of the server's own.
    pub accept_client_profiles: bool,
    /// Who may call the routes other than `GET /health`, `/check` and `/version`; open by default.
    pub auth: Verifier,
    /// The HTTP edge: allowed origins and hosts, timeouts, connections, heartbeats.
    pub edge: EdgeSettings,
    /// How long the web UI's session cookie lasts (`POST /ui/login`).
    pub session_max_age: std::time::Duration,
}

impl Config {
    /// The defaults for a server on `port`: 0.4.6 links from the Host header, client profiles
    /// refused.
    pub fn new(port: u16, max_upload_bytes: u64) -> Self {
        Config {
            port,
            max_upload_bytes,
            public_url: None,
            accept_client_profiles: false,
            auth: Verifier::open(),
            edge: EdgeSettings::default(),
            session_max_age: dbt_remote_core::auth::session::DEFAULT_SESSION_MAX_AGE,
        }
    }

    /// How much of a request body is read, and for how long.
    pub(crate) fn body_limits(&self) -> BodyLimits {
        BodyLimits {
            max_bytes: self.max_upload_bytes,
            timeout: self.edge.body_read_timeout,
        }
    }
}

type Answer = Result<Response, Error>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    project: Option<String>,
    target: Option<String>,
    environment: Option<String>,
    limit: Option<usize>,
    page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    after: Option<u64>,
}

/// The routes of the native API. Paths come before methods in every route, so that a path no
/// route has is a 404 and a known path with another method a 405.
pub(crate) fn routes(service: JobService, config: &Config) -> BoxedFilter<(Response,)> {
    use warp::path::{end, param, tail};
    use warp::{get, path, post, put};

    let port = config.port;
    let limits = config.body_limits();
    let heartbeat = config.edge.sse_heartbeat;
    let schedules = crate::schedules::routes(service.clone(), limits);
    let docs = crate::docs::routes(service.clone());
    let svc = warp::any().map(move || service.clone());
    let body = move || limited_body(limits);
    let json = move || json_body(limits);
    let api = || path("api").and(path("v1"));
    let job = || api().and(path("jobs")).and(param::<String>());

    let check = path("check").and(end()).and(get()).map(move || check(port));
    let health = path("health").and(end()).and(get()).map(health);
    let openapi = api()
        .and(path("openapi.json"))
        .and(end())
        .and(get())
        .map(|| reply::with_header(OPENAPI, "content-type", "application/json").into_response());
    let missing = api()
        .and(path!("blobs" / "missing"))
        .and(post())
        .and(svc.clone())
        .and(json())
        .then(missing_blobs)
        .map(native);
    // `/api/v1/blobs/missing` is its own route, not a blob (the literal path wins, as in
    // OpenAPI): PUT there is a 405.
    let put_blob = api()
        .and(path("blobs"))
        .and(param::<String>())
        .and_then(|hash: String| async move {
            if hash == "missing" {
                Err(warp::reject::not_found())
            } else {
                Ok(hash)
            }
        })
        .and(end())
        .and(put())
        .and(svc.clone())
        .and(body())
        .then(put_blob)
        .map(native);
    let submit = api()
        .and(path("jobs"))
        .and(end())
        .and(post())
        .and(svc.clone())
        .and(json())
        .then(submit)
        .map(native);
    let list = api()
        .and(path("jobs"))
        .and(end())
        .and(get())
        .and(svc.clone())
        .and(query::<ListQuery>())
        .then(list)
        .map(native);
    let get_job = job()
        .and(end())
        .and(get())
        .and(svc.clone())
        .then(get_job)
        .map(native);
    let cancel = job()
        .and(path("cancel"))
        .and(end())
        .and(post())
        .and(svc.clone())
        .then(cancel)
        .map(native);
    let logs = job()
        .and(path("logs"))
        .and(end())
        .and(get())
        .and(svc.clone())
        .and(query::<LogsQuery>())
        .then(logs)
        .map(native);
    let stream = job()
        .and(path!("logs" / "stream"))
        .and(get())
        .and(svc.clone())
        .and(query::<StreamQuery>())
        .and(warp::header::optional::<String>("last-event-id"))
        .then(move |id, svc, q, last| stream(id, svc, q, last, heartbeat))
        .map(native);
    let artifacts = job()
        .and(path("artifacts"))
        .and(end())
        .and(get())
        .and(svc.clone())
        .then(artifacts)
        .map(native);
    let artifact = job()
        .and(path("artifacts"))
        .and(tail())
        .and(get())
        .and(svc)
        .then(artifact)
        .map(native);

    check
        .or(health)
        .unify()
        .or(openapi)
        .unify()
        .or(missing)
        .unify()
        .or(put_blob)
        .unify()
        .or(submit)
        .unify()
        .or(list)
        .unify()
        .or(get_job)
        .unify()
        .or(cancel)
        .unify()
        .or(logs)
        .unify()
        .or(stream)
        .unify()
        .or(artifacts)
        .unify()
        .or(artifact)
        .unify()
        .or(schedules)
        .unify()
        .or(docs)
        .unify()
        .boxed()
}

fn check(port: u16) -> Response {
    let answer = serde_json::json!({ "response": format!("Running dbt-server on port {port}") });
    json_reply(&answer, StatusCode::OK)
}

fn health() -> Response {
    let answer = api::Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    json_reply(&answer, StatusCode::OK)
}

async fn missing_blobs(svc: JobService, body: Result<Bytes, Error>) -> Answer {
    let query: BlobQuery = parse_json(&body?)?;
    Ok(json_reply(
        &svc.missing_blobs(&query.hashes).await?,
        StatusCode::OK,
    ))
}

async fn put_blob(hash: String, svc: JobService, body: Result<Bytes, Error>) -> Answer {
    let body = body?;
    let size = body.len();
    svc.put_blob(&hash.parse::<BlobHash>()?, body).await?;
    let answer = serde_json::json!({ "sha256": hash, "size": size });
    Ok(json_reply(&answer, StatusCode::CREATED))
}

async fn submit(svc: JobService, body: Result<Bytes, Error>) -> Answer {
    let request = parse_json::<SubmitJob>(&body?)?;
    let files_of = request.files_of;
    let (spec, state_from) = request.into_parts()?;
    let spec = svc.with_files_of(spec, files_of).await?;
    let missing = svc.missing_files(&spec).await?;
    if !missing.is_empty() {
        let why = not_uploaded(&missing);
        return Err(Error::invalid(format!(
            "{why}: upload them with PUT /api/v1/blobs/{{sha256}}"
        )));
    }
    let spec = svc.with_state_of(spec, state_from).await?;
    let job = svc.submit_spec(spec, &[]).await?;
    let location = format!("/api/v1/jobs/{}", job.id);
    let reply = reply::with_status(reply::json(&job), StatusCode::CREATED);
    Ok(reply::with_header(reply, "location", location).into_response())
}

async fn list(svc: JobService, q: Result<ListQuery, Error>) -> Answer {
    let q = q?;
    let query = ListJobs {
        status: q.status.as_deref().map(str::parse).transpose()?,
        page_token: q
            .page_token
            .map(|t| t.parse().map_err(|_| Error::invalid("invalid page_token")))
            .transpose()?,
        limit: q.limit,
        project: q.project,
        target: q.target,
        environment: q
            .environment
            .map(|e| dbt_remote_core::job::check_environment(&e).map(|()| e))
            .transpose()?,
    };
    Ok(json_reply(&svc.list(&query).await?, StatusCode::OK))
}

async fn get_job(id: String, svc: JobService) -> Answer {
    Ok(json_reply(&svc.job(job_id(&id)?).await?, StatusCode::OK))
}

async fn cancel(id: String, svc: JobService) -> Answer {
    Ok(json_reply(
        &svc.cancel(job_id(&id)?).await?,
        StatusCode::ACCEPTED,
    ))
}

async fn logs(id: String, svc: JobService, q: Result<LogsQuery, Error>) -> Answer {
    let q = q?;
    let page = svc.logs(job_id(&id)?, q.after, q.limit).await?;
    Ok(json_reply(&page, StatusCode::OK))
}

async fn stream(
    id: String,
    svc: JobService,
    q: Result<StreamQuery, Error>,
    last: Option<String>,
    heartbeat: std::time::Duration,
) -> Answer {
    let after = q?.after.map(log_cursor).transpose()?;
    // A reconnecting EventSource sends Last-Event-ID: it wins over the query.
    let last = last
        .map(|l| l.trim().parse::<u64>())
        .transpose()
        .map_err(|_| Error::invalid("Last-Event-ID must be a log sequence number"))?;
    let events = svc
        .follow(job_id(&id)?, last.or(after).unwrap_or(0))
        .await?;
    let mut reply = warp::reply::stream(sse(events, heartbeat)).into_response();
    let headers = reply.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(reply)
}

async fn artifacts(id: String, svc: JobService) -> Answer {
    Ok(json_reply(
        &svc.artifacts(job_id(&id)?).await?,
        StatusCode::OK,
    ))
}

async fn artifact(id: String, name: Tail, svc: JobService) -> Answer {
    let name = percent_decode(name.as_str())?;
    let id = job_id(&id)?;
    let content = svc.artifact(id, &RelPath::new(name.as_str())?).await?;
    Ok(artifact_reply(&name, content))
}

/// Server-Sent Events of a log follower: `log` events with the record's seq as event id, then
/// one `end` event with the final job. A store error ends the stream with an `error` event.
/// A record's event is encoded once for all of its job's followers ([`SharedRecord`]).
///
/// A comment goes out at a `heartbeat` tick when nothing was written since the tick before, so
/// a quiet stream gets one at least every two ticks and a busy one none: it keeps proxies from
/// closing a quiet stream, and finds a client that has left (the write fails).
///
/// [`SharedRecord`]: dbt_remote_core::state::SharedRecord
fn sse(
    events: impl Stream<Item = dbt_remote_core::Result<FollowEvent>> + Send + 'static,
    heartbeat: std::time::Duration,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + Sync + 'static {
    struct Sse<S> {
        events: std::pin::Pin<Box<S>>,
        tick: tokio::time::Interval,
        wrote: bool,
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = Sse {
        events: Box::pin(events),
        tick,
        wrote: false,
    };
    let frames = futures::stream::unfold(state, |mut st| async move {
        loop {
            tokio::select! {
                event = st.events.next() => {
                    st.wrote = true;
                    return Some((Ok(sse_frame(event?)), st));
                }
                _ = st.tick.tick() => {
                    if !std::mem::take(&mut st.wrote) {
                        return Some((Ok(Bytes::from_static(api::SSE_HEARTBEAT)), st));
                    }
                }
            }
        }
    });
    // warp wants a Sync stream; it is polled only through `&mut`, so wrapping it is enough (no
    // task in between: each record wakes one task, the connection's). When the client leaves,
    // hyper drops the response and the follower with it.
    sync_wrapper::SyncStream::new(frames)
}

/// The SSE frame of one follower event.
fn sse_frame(event: dbt_remote_core::Result<FollowEvent>) -> Bytes {
    let frame = match event {
        Ok(FollowEvent::Record(record)) => {
            let mut failed = None;
            let frame = record.encoded(|r| {
                api::sse_log_event(r).unwrap_or_else(|e| {
                    failed = Some(e);
                    Bytes::new()
                })
            });
            failed.map_or(Ok(frame), Err)
        }
        Ok(FollowEvent::End(job)) => api::sse_event(SSE_EVENT_END, None, &api::Job::from(*job)),
        Err(e) => {
            tracing::error!("log stream failed: {e}");
            let body = ErrorBody::new("internal", "reading the log failed");
            api::sse_event(SSE_EVENT_ERROR, None, &body)
        }
    };
    frame.unwrap_or_else(|e| {
        tracing::error!("encoding a log stream event failed: {e}");
        Bytes::from_static(b":unserialisable\n\n")
    })
}

impl Config {
    /// The configuration of a built server listening on `addr`: links in 0.4.6 answers go to
    /// the public URL, else to `addr` (or to the request's Host when listening on all
    /// addresses).
    pub fn of(server: &dbt_remote_core::server::Server, addr: std::net::SocketAddr) -> Config {
        let settings = server.settings();
        Config {
            public_url: settings
                .public_url
                .clone()
                .or_else(|| (!addr.ip().is_unspecified()).then(|| format!("http://{addr}/"))),
            accept_client_profiles: settings.accept_client_profiles,
            auth: server.verifier().clone(),
            edge: settings.edge.clone(),
            session_max_age: settings.auth.session_max_age,
            ..Config::new(addr.port(), settings.max_upload_bytes)
        }
    }
}

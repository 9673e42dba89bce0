//! The native HTTP API (`/api/v1`, `/health`, `/check`): warp filters that read a request into
//! core types, and one small handler per route that calls the [`JobService`]. Errors are
//! answered by [`crate::reply`].

use std::convert::Infallible;

use bytes::Bytes;
use dbt_remote_core::api::{self, BlobQuery, SubmitJob};
use dbt_remote_core::auth::Verifier;
use dbt_remote_core::server::EdgeSettings;
use dbt_remote_core::service::{log_cursor, ListJobs};
use dbt_remote_core::{BlobHash, Error, JobService, RelPath};
use futures::StreamExt;
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
    let job = svc.submit(parse_json::<SubmitJob>(&body?)?).await?;
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
        environment: q.environment,
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
    // warp wants a Sync stream; it is polled only through `&mut`, so wrapping it is enough (no
    // task in between: each record wakes one task, the connection's). When the client leaves,
    // hyper drops the response and the follower with it.
    let frames = api::sse::frames(events, heartbeat).map(Ok::<_, Infallible>);
    let mut reply = warp::reply::stream(sync_wrapper::SyncStream::new(frames)).into_response();
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

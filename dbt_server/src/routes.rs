//! The HTTP API: warp filters that translate requests into [`JobService`] calls, and the one
//! place where errors become status codes.

use std::convert::Infallible;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use dbt_remote_core::api::{self, BlobQuery, SubmitJob, SSE_EVENT_END, SSE_EVENT_LOG};
use dbt_remote_core::auth::Verifier;
use dbt_remote_core::service::error_body;
use dbt_remote_core::state::FollowEvent;
use dbt_remote_core::{Error, JobService};
use futures::{Stream, StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use warp::http::StatusCode;
use warp::reply::{self, Reply, Response};
use warp::{Filter, Rejection};

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
        }
    }
}

type Answer = Result<Response, Error>;

/// The answer of a matched route: its reply, or its error as an error reply.
fn respond(answer: Answer) -> Response {
    answer.unwrap_or_else(error_response)
}

pub(crate) fn json_reply(value: &impl serde::Serialize, status: StatusCode) -> Response {
    reply::with_status(reply::json(value), status).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
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

/// Every route, with errors turned into `{"error": {"code", "message"}}` answers.
pub fn routes(
    service: JobService,
    config: Config,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    use warp::path::{end, param, tail, Tail};
    use warp::{get, path, post, put};

    // Paths come before methods in every route, so that a path no route has is a 404 and a
    // known path with another method a 405.
    let compat = crate::compat::routes(service.clone(), config.clone());
    let port = config.port;
    let max_upload_bytes = config.max_upload_bytes;
    let svc = warp::any().map(move || service.clone());
    let body = move || limited_body(max_upload_bytes);
    let api = || path("api").and(path("v1"));
    let job = || api().and(path("jobs")).and(param::<String>());

    let check = path("check").and(end()).and(get()).map(move || {
        let answer = serde_json::json!({
            "response": format!("Running dbt-server on port {port}")
        });
        json_reply(&answer, StatusCode::OK)
    });
    let health = path("health").and(end()).and(get()).map(|| {
        let answer = api::Health {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        json_reply(&answer, StatusCode::OK)
    });
    let openapi = api()
        .and(path("openapi.json"))
        .and(end())
        .and(get())
        .map(|| reply::with_header(OPENAPI, "content-type", "application/json").into_response());

    let missing = api()
        .and(path!("blobs" / "missing"))
        .and(post())
        .and(svc.clone())
        .and(body())
        .then(|svc: JobService, body: Result<Bytes, Error>| async move {
            respond(
                async {
                    let query: BlobQuery = parse_json(&body?)?;
                    Ok(json_reply(
                        &svc.missing_blobs(&query.hashes).await?,
                        StatusCode::OK,
                    ))
                }
                .await,
            )
        });
    let put_blob = api()
        .and(path("blobs"))
        .and(param::<String>())
        .and(end())
        .and(put())
        .and(svc.clone())
        .and(body())
        .then(
            |hash: String, svc: JobService, body: Result<Bytes, Error>| async move {
                respond(
                    async {
                        let body = body?;
                        let size = body.len();
                        svc.put_blob(&hash, body).await?;
                        let answer = serde_json::json!({ "sha256": hash, "size": size });
                        Ok(json_reply(&answer, StatusCode::CREATED))
                    }
                    .await,
                )
            },
        );

    let submit = api()
        .and(path("jobs"))
        .and(end())
        .and(post())
        .and(svc.clone())
        .and(body())
        .then(|svc: JobService, body: Result<Bytes, Error>| async move {
            respond(
                async {
                    let request: SubmitJob = parse_json(&body?)?;
                    let job = svc.submit(request).await?;
                    let location = format!("/api/v1/jobs/{}", job.id);
                    let reply = reply::with_status(reply::json(&job), StatusCode::CREATED);
                    Ok(reply::with_header(reply, "location", location).into_response())
                }
                .await,
            )
        });
    let list = api()
        .and(path("jobs"))
        .and(end())
        .and(get())
        .and(svc.clone())
        .and(query::<ListQuery>())
        .then(|svc: JobService, q: Result<ListQuery, Error>| async move {
            respond(
                async {
                    let q = q?;
                    let list = svc
                        .list(q.status.as_deref(), q.limit, q.page_token.as_deref())
                        .await?;
                    Ok(json_reply(&list, StatusCode::OK))
                }
                .await,
            )
        });
    let get_job = job().and(end()).and(get()).and(svc.clone()).then(
        |id: String, svc: JobService| async move {
            respond(
                svc.job(&id)
                    .await
                    .map(|job| json_reply(&job, StatusCode::OK)),
            )
        },
    );
    let cancel = job()
        .and(path("cancel"))
        .and(end())
        .and(post())
        .and(svc.clone())
        .then(|id: String, svc: JobService| async move {
            respond(
                svc.cancel(&id)
                    .await
                    .map(|job| json_reply(&job, StatusCode::ACCEPTED)),
            )
        });
    let logs = job()
        .and(path("logs"))
        .and(end())
        .and(get())
        .and(svc.clone())
        .and(query::<LogsQuery>())
        .then(
            |id: String, svc: JobService, q: Result<LogsQuery, Error>| async move {
                respond(
                    async {
                        let q = q?;
                        Ok(json_reply(
                            &svc.logs(&id, q.after, q.limit).await?,
                            StatusCode::OK,
                        ))
                    }
                    .await,
                )
            },
        );
    let stream =
        job()
            .and(path!("logs" / "stream"))
            .and(get())
            .and(svc.clone())
            .and(query::<StreamQuery>())
            .and(warp::header::optional::<String>("last-event-id"))
            .then(
                |id: String,
                 svc: JobService,
                 q: Result<StreamQuery, Error>,
                 last: Option<String>| async move {
                    respond(
                        async {
                            let q = q?;
                            // A reconnecting EventSource sends Last-Event-ID: it wins over the query.
                            let last = last.map(|l| l.trim().parse::<u64>()).transpose().map_err(
                                |_| Error::invalid("Last-Event-ID must be a log sequence number"),
                            )?;
                            let events = svc.follow(&id, last.or(q.after).unwrap_or(0)).await?;
                            let stream = warp::sse::keep_alive().stream(sse(events));
                            Ok(warp::sse::reply(stream).into_response())
                        }
                        .await,
                    )
                },
            );
    let artifacts = job()
        .and(path("artifacts"))
        .and(end())
        .and(get())
        .and(svc.clone())
        .then(|id: String, svc: JobService| async move {
            respond(
                svc.artifacts(&id)
                    .await
                    .map(|list| json_reply(&list, StatusCode::OK)),
            )
        });
    let artifact = job()
        .and(path("artifacts"))
        .and(tail())
        .and(get())
        .and(svc)
        .then(|id: String, name: Tail, svc: JobService| async move {
            respond(
                async {
                    let name = percent_decode(name.as_str())?;
                    let content = svc.artifact(&id, &name).await?;
                    let kind = if name.ends_with(".json") {
                        "application/json"
                    } else if name.ends_with(".html") {
                        "text/html; charset=utf-8"
                    } else {
                        "application/octet-stream"
                    };
                    Ok(reply::with_header(content.to_vec(), "content-type", kind).into_response())
                }
                .await,
            )
        });

    crate::auth::gate(config.auth.clone())
        .or(check)
        .unify()
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
        .or(compat)
        .unify()
        .recover(|r: Rejection| async move { Ok::<_, Infallible>(rejection_response(r)) })
        .unify()
        .with(warp::log::custom(|info| {
            tracing::info!(
                target: "dbt_server::http",
                "{} {} {} {:?}",
                info.method(),
                info.path(),
                info.status().as_u16(),
                info.elapsed()
            );
        }))
}

/// Server-Sent Events of a log follower: `log` events with the record's seq as event id, then
/// one `end` event with the final job. A store error ends the stream with an `error` event.
fn sse(
    events: impl Stream<Item = dbt_remote_core::Result<FollowEvent>> + Send + 'static,
) -> impl Stream<Item = Result<warp::sse::Event, Infallible>> + Send + Sync + 'static {
    // warp wants a Sync stream: drive the follower in a task that stops when the client leaves.
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(FollowEvent::Record(record)) => warp::sse::Event::default()
                    .event(SSE_EVENT_LOG)
                    .id(record.seq.to_string())
                    .json_data(&record),
                Ok(FollowEvent::End(job)) => warp::sse::Event::default()
                    .event(SSE_EVENT_END)
                    .json_data(api::Job::from(job)),
                Err(e) => {
                    tracing::error!("log stream failed: {e}");
                    warp::sse::Event::default()
                        .event("error")
                        .json_data(error_body("internal", "reading the log failed"))
                }
            };
            let event =
                event.unwrap_or_else(|_| warp::sse::Event::default().comment("unserialisable"));
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A query string; a 400 naming the problem when it does not parse.
fn query<T: DeserializeOwned + Send + 'static>(
) -> impl Filter<Extract = (Result<T, Error>,), Error = Infallible> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .map(|raw: String| {
            serde_urlencoded::from_str::<T>(&raw)
                .map_err(|e| Error::invalid(format!("invalid query string: {e}")))
        })
}

/// The whole body, refused with 413 past `limit` bytes (whether or not the client sent a
/// content-length).
pub(crate) fn limited_body(
    limit: u64,
) -> impl Filter<Extract = (Result<Bytes, Error>,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .then(move |len: Option<u64>, stream| async move {
            match len {
                Some(size) if size > limit => Err(Error::TooLarge {
                    what: "request body".into(),
                    size,
                    limit,
                }),
                _ => collect_limited(stream, limit).await,
            }
        })
}

async fn collect_limited<S, B>(stream: S, limit: u64) -> Result<Bytes, Error>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut stream = std::pin::pin!(stream);
    let mut body = BytesMut::new();
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| Error::invalid(format!("could not read the request body: {e}")))?
    {
        let size = body.len() as u64 + chunk.remaining() as u64;
        if size > limit {
            return Err(Error::TooLarge {
                what: "request body".into(),
                size,
                limit,
            });
        }
        body.put(chunk);
    }
    Ok(body.freeze())
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::invalid(format!("invalid JSON body: {e}")))
}

fn percent_decode(s: &str) -> dbt_remote_core::Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::invalid("invalid percent-encoding in the path"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::invalid("the path is not UTF-8"))
}

/// The answer to a service error: the caller's mistakes get 4xx with a message; anything else
/// a 500 with a generic message, the detail going to the server log only.
pub(crate) fn error_response(e: Error) -> Response {
    let status = error_status(&e);
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!("internal error: {e}");
        return json_reply(
            &error_body("internal", "internal server error; see the server log"),
            status,
        );
    }
    json_reply(&error_body(e.code(), e.to_string()), status)
}

/// The answer when no route matched.
fn rejection_response(r: Rejection) -> Response {
    let (status, code, message) = if r.is_not_found() {
        (StatusCode::NOT_FOUND, "not_found", "no such route")
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        )
    } else if r.find::<warp::reject::InvalidHeader>().is_some() {
        (
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "invalid request header",
        )
    } else {
        tracing::error!("unhandled rejection: {r:?}");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error",
        )
    };
    json_reply(&error_body(code, message), status)
}

/// The status code of an error: the caller's mistakes are 4xx, anything else 500.
pub(crate) fn error_status(e: &Error) -> StatusCode {
    match e {
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::AlreadyExists { .. } | Error::Precondition { .. } => StatusCode::CONFLICT,
        Error::InvalidInput(_) => StatusCode::BAD_REQUEST,
        Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

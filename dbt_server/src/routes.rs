//! The HTTP API: warp filters that translate requests into [`JobService`] calls, and the one
//! place where errors become status codes.

use std::convert::Infallible;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use dbt_remote_core::api::{self, BlobQuery, SubmitJob, SSE_EVENT_END, SSE_EVENT_LOG};
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

#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// The port the server listens on, for `GET /check`.
    pub port: u16,
    /// Largest accepted request body.
    pub max_upload_bytes: u64,
}

/// An error of the service, carried through warp's rejection.
#[derive(Debug)]
struct ApiError(Error);
impl warp::reject::Reject for ApiError {}

fn reject(e: Error) -> Rejection {
    warp::reject::custom(ApiError(e))
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
    let svc = warp::any().map(move || service.clone());
    let body = move || limited_body(config.max_upload_bytes);
    let api = warp::path("api").and(warp::path("v1"));
    let job = || {
        api.and(warp::path("jobs"))
            .and(warp::path::param::<String>())
    };

    let check = warp::get()
        .and(warp::path("check"))
        .and(warp::path::end())
        .map(move || {
            reply::json(&serde_json::json!({
                "response": format!("Running dbt-server on port {}", config.port)
            }))
            .into_response()
        });
    let health = warp::get()
        .and(warp::path("health"))
        .and(warp::path::end())
        .map(|| {
            reply::json(&api::Health {
                status: "ok".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .into_response()
        });
    let openapi = warp::get()
        .and(api.and(warp::path("openapi.json")).and(warp::path::end()))
        .map(|| reply::with_header(OPENAPI, "content-type", "application/json").into_response());

    let missing = warp::post()
        .and(api.and(warp::path!("blobs" / "missing")))
        .and(svc.clone())
        .and(body())
        .and_then(|svc: JobService, body: Bytes| async move {
            let query: BlobQuery = parse_json(&body)?;
            let missing = svc.missing_blobs(&query.hashes).await.map_err(reject)?;
            Ok::<_, Rejection>(reply::json(&missing).into_response())
        });
    let put_blob = warp::put()
        .and(
            api.and(warp::path("blobs"))
                .and(warp::path::param::<String>())
                .and(warp::path::end()),
        )
        .and(svc.clone())
        .and(body())
        .and_then(|hash: String, svc: JobService, body: Bytes| async move {
            let size = body.len();
            svc.put_blob(&hash, body).await.map_err(reject)?;
            let answer = serde_json::json!({ "sha256": hash, "size": size });
            Ok::<_, Rejection>(
                reply::with_status(reply::json(&answer), StatusCode::CREATED).into_response(),
            )
        });

    let submit = warp::post()
        .and(api.and(warp::path("jobs")).and(warp::path::end()))
        .and(svc.clone())
        .and(body())
        .and_then(|svc: JobService, body: Bytes| async move {
            let request: SubmitJob = parse_json(&body)?;
            let job = svc.submit(request).await.map_err(reject)?;
            let location = format!("/api/v1/jobs/{}", job.id);
            let reply = reply::with_status(reply::json(&job), StatusCode::CREATED);
            Ok::<_, Rejection>(reply::with_header(reply, "location", location).into_response())
        });
    let list = warp::get()
        .and(api.and(warp::path("jobs")).and(warp::path::end()))
        .and(svc.clone())
        .and(query::<ListQuery>())
        .and_then(|svc: JobService, q: ListQuery| async move {
            let list = svc
                .list(q.status.as_deref(), q.limit, q.page_token.as_deref())
                .await
                .map_err(reject)?;
            Ok::<_, Rejection>(reply::json(&list).into_response())
        });
    let get = warp::get()
        .and(job())
        .and(warp::path::end())
        .and(svc.clone())
        .and_then(|id: String, svc: JobService| async move {
            let job = svc.job(&id).await.map_err(reject)?;
            Ok::<_, Rejection>(reply::json(&job).into_response())
        });
    let cancel = warp::post()
        .and(job())
        .and(warp::path("cancel"))
        .and(warp::path::end())
        .and(svc.clone())
        .and_then(|id: String, svc: JobService| async move {
            let job = svc.cancel(&id).await.map_err(reject)?;
            Ok::<_, Rejection>(
                reply::with_status(reply::json(&job), StatusCode::ACCEPTED).into_response(),
            )
        });
    let logs = warp::get()
        .and(job())
        .and(warp::path("logs"))
        .and(warp::path::end())
        .and(svc.clone())
        .and(query::<LogsQuery>())
        .and_then(|id: String, svc: JobService, q: LogsQuery| async move {
            let page = svc.logs(&id, q.after, q.limit).await.map_err(reject)?;
            Ok::<_, Rejection>(reply::json(&page).into_response())
        });
    let stream = warp::get()
        .and(job())
        .and(warp::path!("logs" / "stream"))
        .and(svc.clone())
        .and(query::<StreamQuery>())
        .and(warp::sse::last_event_id::<u64>())
        .and_then(
            |id: String, svc: JobService, q: StreamQuery, last: Option<u64>| async move {
                // A reconnecting EventSource sends Last-Event-ID: it wins over the query.
                let after = last.or(q.after).unwrap_or(0);
                let events = svc.follow(&id, after).await.map_err(reject)?;
                Ok::<_, Rejection>(
                    warp::sse::reply(warp::sse::keep_alive().stream(sse(events))).into_response(),
                )
            },
        );
    let artifacts = warp::get()
        .and(job())
        .and(warp::path("artifacts"))
        .and(warp::path::end())
        .and(svc.clone())
        .and_then(|id: String, svc: JobService| async move {
            let list = svc.artifacts(&id).await.map_err(reject)?;
            Ok::<_, Rejection>(reply::json(&list).into_response())
        });
    let artifact = warp::get()
        .and(job())
        .and(warp::path("artifacts"))
        .and(warp::path::tail())
        .and(svc)
        .and_then(
            |id: String, name: warp::path::Tail, svc: JobService| async move {
                let name = percent_decode(name.as_str()).map_err(reject)?;
                let content = svc.artifact(&id, &name).await.map_err(reject)?;
                let kind = if name.ends_with(".json") {
                    "application/json"
                } else if name.ends_with(".html") {
                    "text/html; charset=utf-8"
                } else {
                    "application/octet-stream"
                };
                Ok::<_, Rejection>(
                    reply::with_header(content.to_vec(), "content-type", kind).into_response(),
                )
            },
        );

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
        .or(get)
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
        .recover(|r: Rejection| async move { Ok::<_, Infallible>(error_reply(r)) })
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

/// A query string, with a 400 naming the problem when it does not parse.
fn query<T: DeserializeOwned + Send + 'static>(
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .and_then(|raw: String| async move {
            serde_urlencoded::from_str::<T>(&raw)
                .map_err(|e| reject(Error::invalid(format!("invalid query string: {e}"))))
        })
}

/// The whole body, refused with 413 past `limit` bytes (whether or not the client sent a
/// content-length).
fn limited_body(limit: u64) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and_then(move |len: Option<u64>| async move {
            match len {
                Some(size) if size > limit => Err(reject(Error::TooLarge {
                    what: "request body".into(),
                    size,
                    limit,
                })),
                _ => Ok(()),
            }
        })
        .untuple_one()
        .and(warp::body::stream())
        .and_then(move |stream| collect_limited(stream, limit))
}

async fn collect_limited<S, B>(stream: S, limit: u64) -> Result<Bytes, Rejection>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut stream = std::pin::pin!(stream);
    let mut body = BytesMut::new();
    while let Some(chunk) = stream.try_next().await.map_err(|e| {
        reject(Error::invalid(format!(
            "could not read the request body: {e}"
        )))
    })? {
        let size = body.len() as u64 + chunk.remaining() as u64;
        if size > limit {
            return Err(reject(Error::TooLarge {
                what: "request body".into(),
                size,
                limit,
            }));
        }
        body.put(chunk);
    }
    Ok(body.freeze())
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Rejection> {
    serde_json::from_slice(body)
        .map_err(|e| reject(Error::invalid(format!("invalid JSON body: {e}"))))
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

/// The error answer of a rejection. Caller mistakes get 4xx with a message; anything else a 500
/// with a generic message, the detail going to the server log only.
fn error_reply(r: Rejection) -> Response {
    let (status, code, message) = if let Some(ApiError(e)) = r.find::<ApiError>() {
        let status = match e {
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::AlreadyExists { .. } | Error::Precondition { .. } => StatusCode::CONFLICT,
            Error::InvalidInput(_) => StatusCode::BAD_REQUEST,
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!("internal error: {e}");
            (
                status,
                "internal".to_string(),
                "internal server error; see the server log".to_string(),
            )
        } else {
            (status, e.code().to_string(), e.to_string())
        }
    } else if r.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "not_found".into(),
            "no such route".into(),
        )
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed".into(),
            "method not allowed on this route".into(),
        )
    } else if r.find::<warp::reject::InvalidHeader>().is_some() {
        (
            StatusCode::BAD_REQUEST,
            "invalid_input".into(),
            "invalid request header".into(),
        )
    } else {
        tracing::error!("unhandled rejection: {r:?}");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal".into(),
            "internal server error".into(),
        )
    };
    reply::with_status(reply::json(&error_body(&code, message)), status).into_response()
}

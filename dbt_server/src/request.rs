//! What requests carry, read into core types: bodies (with a size limit), query strings, JSON,
//! ids and names from the URL. Errors are core errors (400, 404, 413), answered by the route's
//! protocol.

use std::convert::Infallible;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use dbt_remote_core::{Error, JobId};
use futures::{Stream, TryStreamExt};
use serde::de::DeserializeOwned;
use warp::{Filter, Rejection};

/// A job id from a URL: one that is not a UUID names no job.
pub(crate) fn job_id(id: &str) -> Result<JobId, Error> {
    id.parse()
        .map_err(|_| Error::not_found(format!("job {id:?}")))
}

/// A query string; a 400 naming the problem when it does not parse.
pub(crate) fn query<T: DeserializeOwned + Send + 'static>(
) -> impl Filter<Extract = (Result<T, Error>,), Error = Infallible> + Clone {
    warp::query::raw()
        .or(warp::any().map(String::new))
        .unify()
        .map(|raw: String| {
            serde_urlencoded::from_str::<T>(&raw)
                .map_err(|e| Error::invalid(format!("invalid query string: {e}")))
        })
}

/// How much of a request body is read, and for how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    /// Largest accepted body (413 past it).
    pub max_bytes: u64,
    /// Time the whole body has to arrive (408 past it).
    pub timeout: Duration,
}

/// The whole body, refused with 413 past `limits.max_bytes` bytes (whether or not the client
/// sent a content-length) and with 408 when it has not all arrived within `limits.timeout`.
pub(crate) fn limited_body(
    limits: BodyLimits,
) -> impl Filter<Extract = (Result<Bytes, Error>,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .then(move |len: Option<u64>, stream| read_body(len, stream, limits))
}

/// A JSON body: refused with 415 unless its `Content-Type` is `application/json` (parameters
/// allowed), before anything is read; then as [`limited_body`].
pub(crate) fn json_body(
    limits: BodyLimits,
) -> impl Filter<Extract = (Result<Bytes, Error>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(
            move |content_type: Option<String>, len: Option<u64>, stream| async move {
                require_json(content_type.as_deref())?;
                read_body(len, stream, limits).await
            },
        )
}

/// A body that may be empty: `None` when it is, else a JSON body as [`json_body`] reads it
/// (an empty body needs no `Content-Type`; one with content must say JSON).
pub(crate) fn optional_json_body(
    limits: BodyLimits,
) -> impl Filter<Extract = (Result<Option<Bytes>, Error>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and(limited_body(limits))
        .map(|content_type: Option<String>, body: Result<Bytes, Error>| {
            let body = body?;
            if body.is_empty() {
                return Ok(None);
            }
            require_json(content_type.as_deref())?;
            Ok(Some(body))
        })
}

/// Fails with [`Error::UnsupportedMediaType`] unless `content_type` is JSON's. A browser page
/// can send `text/plain` or a form to another site without asking; JSON it cannot.
fn require_json(content_type: Option<&str>) -> Result<(), Error> {
    let media = content_type
        .and_then(|ct| ct.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    if media.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType(
            "this route takes a JSON body: send Content-Type: application/json".into(),
        ))
    }
}

async fn read_body<S, B>(len: Option<u64>, stream: S, limits: BodyLimits) -> Result<Bytes, Error>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let limit = limits.max_bytes;
    if let Some(size) = len.filter(|size| *size > limit) {
        return Err(Error::TooLarge {
            what: "request body".into(),
            size,
            limit,
        });
    }
    tokio::time::timeout(limits.timeout, collect_limited(stream, limit))
        .await
        .unwrap_or_else(|_| {
            Err(Error::TimedOut(format!(
                "the request body did not arrive within {} s",
                limits.timeout.as_secs_f64()
            )))
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

pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::invalid(format!("invalid JSON body: {e}")))
}

pub(crate) fn percent_decode(s: &str) -> dbt_remote_core::Result<String> {
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

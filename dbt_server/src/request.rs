//! What requests carry, read into core types: bodies (with a size limit), query strings, JSON,
//! ids and names from the URL. Errors are core errors (400, 404, 413), answered by the route's
//! protocol.

use std::convert::Infallible;

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

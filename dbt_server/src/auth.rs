//! The authentication gate in front of every route but `GET /health`, `GET /check` and
//! `GET /version`: the core's [`Verifier`] decides, this only translates its answer.

use dbt_remote_core::auth::Verifier;
use dbt_remote_core::Error;
use warp::http::{HeaderMap, Method};
use warp::path::FullPath;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

/// Routes anyone may call: liveness, and the version the 0.4.6 CLI asks for before it sends
/// its token.
fn is_public(method: &Method, path: &str) -> bool {
    *method == Method::GET && matches!(path, "/health" | "/check" | "/version")
}

/// Whether `path` belongs to the 0.4.6 protocol, whose errors are `{"detail": …}`.
fn is_legacy(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    matches!(first, "version" | "dbt" | "job" | "schedule")
}

/// Answers a request that is not authenticated (401 with `WWW-Authenticate: Bearer`), and
/// rejects (so the routes run) one that is, or that needs no authentication.
pub(crate) fn gate(
    verifier: Verifier,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and_then(move |method: Method, path: FullPath, headers: HeaderMap| {
            let verifier = verifier.clone();
            async move {
                if !verifier.is_enabled() || is_public(&method, path.as_str()) {
                    return Err(warp::reject::not_found());
                }
                // A header that is not text counts as a wrong token, never as no header.
                let header = match headers.get("authorization").map(|v| v.to_str()) {
                    None => None,
                    Some(Ok(value)) => Some(value),
                    Some(Err(_)) => Some(""),
                };
                match verifier.verify(header).await {
                    Ok(_) => Err(warp::reject::not_found()),
                    Err(e) => Ok(refusal(path.as_str(), e)),
                }
            }
        })
}

fn refusal(path: &str, e: Error) -> Response {
    let unauthenticated = matches!(e, Error::Unauthenticated(_));
    let response = if is_legacy(path) {
        crate::compat::detail_response(e)
    } else {
        crate::routes::error_response(e)
    };
    if unauthenticated {
        warp::reply::with_header(response, "www-authenticate", "Bearer").into_response()
    } else {
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_liveness_and_version_are_public() {
        assert!(is_public(&Method::GET, "/health"));
        assert!(is_public(&Method::GET, "/check"));
        assert!(is_public(&Method::GET, "/version"));
        assert!(!is_public(&Method::POST, "/health"));
        assert!(!is_public(&Method::GET, "/health/"));
        assert!(!is_public(&Method::GET, "/api/v1/jobs"));
        assert!(is_legacy("/job/x/logs") && is_legacy("/schedule") && is_legacy("/dbt"));
        assert!(!is_legacy("/api/v1/jobs") && !is_legacy("/jobs") && !is_legacy("/"));
    }
}

//! The authentication gate in front of every route but `GET /health`, `GET /check` and
//! `GET /version`: the core's [`Verifier`] decides, this only translates its answer into a
//! pass or an [`Unauthorized`] rejection.

use dbt_remote_core::auth::Verifier;
use warp::http::{HeaderMap, Method};
use warp::path::FullPath;
use warp::{Filter, Rejection};

use crate::reply::{Protocol, Unauthorized};

/// Routes anyone may call: liveness, and the version the 0.4.6 CLI asks for before it sends
/// its token.
fn is_public(method: &Method, path: &str) -> bool {
    *method == Method::GET && matches!(path, "/health" | "/check" | "/version")
}

/// Passes a request that is authenticated or needs no authentication; rejects any other with
/// [`Unauthorized`].
pub(crate) fn gate(verifier: Verifier) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and_then(move |method: Method, path: FullPath, headers: HeaderMap| {
            let verifier = verifier.clone();
            async move {
                if !verifier.is_enabled() || is_public(&method, path.as_str()) {
                    return Ok(());
                }
                // A header that is not text counts as a wrong token, never as no header.
                let header = match headers.get("authorization").map(|v| v.to_str()) {
                    None => None,
                    Some(Ok(value)) => Some(value),
                    Some(Err(_)) => Some(""),
                };
                match verifier.verify(header).await {
                    Ok(_) => Ok(()),
                    Err(error) => Err(warp::reject::custom(Unauthorized {
                        error,
                        protocol: Protocol::of_path(path.as_str()),
                    })),
                }
            }
        })
        .untuple_one()
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
    }
}

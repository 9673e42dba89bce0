//! The authentication gate in front of every route but the public ones ([`is_public`]): the
//! core's [`Verifier`] decides, from the `Authorization` header or, when a request has none,
//! from the web UI's session cookie ([`session::verify`]); this only translates its answer
//! into a pass or an [`Unauthorized`] rejection. A token in the URL (`?token=`,
//! `?access_token=`) is never read: URLs end up in logs and browser history.

use dbt_remote_core::auth::session;
use dbt_remote_core::auth::Verifier;
use warp::http::{HeaderMap, Method};
use warp::path::FullPath;
use warp::{Filter, Rejection};

use crate::reply::{Protocol, Unauthorized};

/// Routes anyone may call: liveness, the version the 0.4.6 CLI asks for before it sends its
/// token, the web UI's shell (`/` and everything under `/ui/`: pages and assets, which hold
/// no data: they fetch it from the API with the session), its login and its logout.
///
/// Nothing under `/ui/` may answer with data: put data behind `/api/v1`.
fn is_public(method: &Method, path: &str) -> bool {
    let read = *method == Method::GET || *method == Method::HEAD;
    match path {
        "/health" | "/check" | "/version" => *method == Method::GET,
        "/ui/login" | "/ui/logout" if *method == Method::POST => true,
        "/" => read,
        _ => read && is_ui_shell(path),
    }
}

/// A path of the web UI's shell: `/ui/…`.
pub(crate) fn is_ui_shell(path: &str) -> bool {
    path.starts_with("/ui/")
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
                let cookies = headers
                    .get_all("cookie")
                    .iter()
                    .filter_map(|v| v.to_str().ok());
                let session = session::session_tokens(cookies);
                match session::verify(&verifier, header, &session).await {
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
    fn only_liveness_version_and_the_ui_shell_are_public() {
        assert!(is_public(&Method::GET, "/health"));
        assert!(is_public(&Method::GET, "/check"));
        assert!(is_public(&Method::GET, "/version"));
        assert!(!is_public(&Method::POST, "/health"));
        assert!(!is_public(&Method::GET, "/health/"));
        assert!(!is_public(&Method::GET, "/api/v1/jobs"));
        assert!(is_public(&Method::GET, "/"));
        assert!(is_public(&Method::HEAD, "/"));
        assert!(is_public(&Method::GET, "/ui/jobs/x"));
        assert!(is_public(&Method::GET, "/ui/assets/app.js"));
        assert!(is_public(&Method::POST, "/ui/login"));
        assert!(is_public(&Method::POST, "/ui/logout"));
        assert!(!is_public(&Method::POST, "/"));
        assert!(!is_public(&Method::POST, "/ui/jobs/x"));
        assert!(!is_public(&Method::GET, "/ui"));
        assert!(!is_public(&Method::GET, "/uix/a"));
        assert!(!is_public(&Method::GET, "/api/v1/ui/x"));
        assert!(!is_public(&Method::DELETE, "/ui/login"));
        assert!(is_public(&Method::GET, "/ui/login"));
    }
}

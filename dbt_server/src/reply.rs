//! The one place where errors and rejections become answers, for both protocols: the native
//! `{"error": {"code", "message"}}` and the 0.4.6 `{"detail": "<message>"}`.

use std::convert::Infallible;

use dbt_remote_core::api::ErrorBody;
use dbt_remote_core::Error;
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::{self, Reply, Response};
use warp::Rejection;

/// Which protocol a request belongs to, so its errors get that protocol's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// `/api/v1/...`, `/health`, `/check`: `{"error": {"code", "message"}}`.
    Native,
    /// The 0.4.6 routes (`/version`, `/dbt`, `/job/...`, `/schedule...`): `{"detail": …}`.
    Legacy,
}

impl Protocol {
    /// The protocol of a request path.
    pub(crate) fn of_path(path: &str) -> Protocol {
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        match first {
            "version" | "dbt" | "job" | "schedule" => Protocol::Legacy,
            _ => Protocol::Native,
        }
    }
}

/// A request refused by the authentication gate, and the protocol of its path (answered with
/// `WWW-Authenticate: Bearer` when the error is [`Error::Unauthenticated`]).
#[derive(Debug)]
pub(crate) struct Unauthorized {
    pub error: Error,
    pub protocol: Protocol,
}

impl warp::reject::Reject for Unauthorized {}

/// A request refused by the guard (another origin, an unknown Host), before authentication,
/// and the protocol of its path.
#[derive(Debug)]
pub(crate) struct Refused {
    pub error: Error,
    pub protocol: Protocol,
}

impl warp::reject::Reject for Refused {}

/// A native route's answer: its reply, or its error as an error reply. (Errors are answered
/// here rather than rejected: a rejection would make warp try the routes after this one.)
pub(crate) fn native(answer: Result<Response, Error>) -> Response {
    answer.unwrap_or_else(|e| error_reply(Protocol::Native, &e))
}

/// A 0.4.6 route's answer: its reply, or its error as a `{"detail": …}` reply.
pub(crate) fn legacy(answer: Result<Response, Error>) -> Response {
    answer.unwrap_or_else(|e| error_reply(Protocol::Legacy, &e))
}

pub(crate) fn json_reply(value: &impl serde::Serialize, status: StatusCode) -> Response {
    reply::with_status(reply::json(value), status).into_response()
}

/// Every rejection as an answer: the gate's refusals in their protocol's shape, warp's own
/// rejections (no route, wrong method, bad header) in the native shape.
pub(crate) async fn recover(r: Rejection) -> Result<Response, Infallible> {
    if let Some(Unauthorized { error, protocol }) = r.find() {
        let response = error_reply(*protocol, error);
        if matches!(error, Error::Unauthenticated(_)) {
            return Ok(reply::with_header(response, "www-authenticate", "Bearer").into_response());
        }
        return Ok(response);
    }
    if let Some(Refused { error, protocol }) = r.find() {
        return Ok(error_reply(*protocol, error));
    }
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
    Ok(json_reply(&ErrorBody::new(code, message), status))
}

/// The answer to an error: the caller's mistakes get 4xx with a message; anything else a 500
/// with a generic message, the detail going to the server log only.
fn error_reply(protocol: Protocol, e: &Error) -> Response {
    let response = error_body(protocol, e);
    if matches!(e, Error::Unavailable { .. }) {
        let retry = RETRY_AFTER_SECONDS.to_string();
        return reply::with_header(response, "retry-after", retry).into_response();
    }
    response
}

/// Seconds a client is told to wait (`Retry-After`) before retrying a 503.
const RETRY_AFTER_SECONDS: u64 = 1;

/// The body and status of an error answer.
fn error_body(protocol: Protocol, e: &Error) -> Response {
    let status = error_status(e);
    let internal = status == StatusCode::INTERNAL_SERVER_ERROR;
    if internal {
        tracing::error!("internal error: {e}");
    }
    match protocol {
        Protocol::Native if internal => json_reply(
            &ErrorBody::new("internal", "internal server error; see the server log"),
            status,
        ),
        Protocol::Native => json_reply(&ErrorBody::new(e.code(), e.to_string()), status),
        Protocol::Legacy => {
            let message = if internal {
                "internal server error; see the server log".to_string()
            } else {
                e.to_string()
            };
            json_reply(&json!({ "detail": message }), status)
        }
    }
}

/// The status code of an error: the caller's mistakes are 4xx, anything else 500.
fn error_status(e: &Error) -> StatusCode {
    match e {
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::AlreadyExists { .. } | Error::Precondition { .. } => StatusCode::CONFLICT,
        Error::InvalidInput(_) => StatusCode::BAD_REQUEST,
        Error::TooLarge { .. } | Error::TooMany { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::InsufficientStorage { .. } => StatusCode::INSUFFICIENT_STORAGE,
        Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Error::TimedOut(_) => StatusCode::REQUEST_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An artifact's content, typed by its name, with the headers of what a job wrote.
pub(crate) fn artifact_reply(name: &str, content: bytes::Bytes) -> Response {
    let kind = if name.ends_with(".json") {
        "application/json"
    } else if name.ends_with(".html") {
        "text/html; charset=utf-8"
    } else {
        "application/octet-stream"
    };
    let answer = reply::with_header(content.to_vec(), "content-type", kind).into_response();
    crate::ui_headers::with_artifact_headers(answer, name.ends_with(".html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_paths_are_told_apart() {
        let legacy = |p| Protocol::of_path(p) == Protocol::Legacy;
        assert!(legacy("/job/x/logs") && legacy("/schedule") && legacy("/dbt"));
        assert!(!legacy("/api/v1/jobs") && !legacy("/jobs") && !legacy("/"));
    }
}

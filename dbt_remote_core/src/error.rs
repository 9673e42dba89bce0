//! The one public error type of the core.

use std::fmt;

/// Result with the core's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every error the core returns.
///
/// Backends keep their own private error types and convert them into [`Error::Backend`];
/// no type of a cloud SDK or of the HTTP server appears here.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The thing asked for does not exist.
    #[error("{what} not found")]
    NotFound { what: String },
    /// A create-only write found the thing already there.
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    /// A compare-and-set write found another version than the one it expected.
    #[error("precondition failed: {what}")]
    Precondition { what: String },
    /// The caller's input is invalid; the message says why, in words a user can act on.
    #[error("{0}")]
    InvalidInput(String),
    /// The caller's input is larger than the configured limit.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { what: String, size: u64, limit: u64 },
    /// The request carries no acceptable credentials.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The request is refused whoever sends it: another origin, an unknown Host.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The request's body is not of the media type the route takes.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// The caller did not send its request in time (a stalled body).
    #[error("timed out: {0}")]
    TimedOut(String),
    /// The server answered with an error (client side).
    #[error("server answered {status}: {message}")]
    Server {
        status: u16,
        code: String,
        message: String,
    },
    /// The server could not be reached (client side): no connection, a dropped connection or
    /// an answer cut short. `url` is the server's base URL.
    #[error("http: could not reach dbt-server at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A storage, process or network backend failed.
    #[error("{backend}: {source}")]
    Backend {
        backend: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    pub fn not_found(what: impl fmt::Display) -> Self {
        Error::NotFound {
            what: what.to_string(),
        }
    }

    pub fn already_exists(what: impl fmt::Display) -> Self {
        Error::AlreadyExists {
            what: what.to_string(),
        }
    }

    pub fn precondition(what: impl fmt::Display) -> Self {
        Error::Precondition {
            what: what.to_string(),
        }
    }

    pub fn invalid(message: impl fmt::Display) -> Self {
        Error::InvalidInput(message.to_string())
    }

    pub fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Backend {
            backend,
            source: source.into(),
        }
    }

    pub fn unreachable(
        url: impl fmt::Display,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Error::Unreachable {
            url: url.to_string(),
            source: source.into(),
        }
    }

    /// A stable, machine-readable code for the error (used in the HTTP error body).
    pub fn code(&self) -> &str {
        match self {
            Error::NotFound { .. } => "not_found",
            Error::AlreadyExists { .. } => "already_exists",
            Error::Precondition { .. } => "precondition_failed",
            Error::InvalidInput(_) => "invalid_input",
            Error::TooLarge { .. } => "too_large",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::TimedOut(_) => "timed_out",
            Error::Server { code, .. } => code,
            Error::Unreachable { .. } => "unreachable",
            Error::Backend { .. } => "internal",
        }
    }
}

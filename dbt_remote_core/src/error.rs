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
    /// The caller asks for more things (files, entries, schedules) than the configured limit.
    #[error("{count} {what}, over the limit of {limit}")]
    TooMany {
        what: String,
        count: u64,
        limit: u64,
    },
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
    /// The server's storage is full (a write failed with ENOSPC or EDQUOT); nothing was
    /// written. Retrying once space is freed works.
    #[error("insufficient storage: {what}")]
    InsufficientStorage { what: String },
    /// A resource is busy (e.g. a file lock held longer than the lock timeout); retry later.
    #[error("temporarily unavailable: {what}")]
    Unavailable { what: String },
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

    /// A backend failure. An I/O error that says the disk is full becomes
    /// [`Error::InsufficientStorage`], whichever backend it came from.
    pub fn backend(
        backend: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        let source = source.into();
        match source.downcast_ref::<std::io::Error>() {
            Some(io) if is_storage_full(io) => Error::InsufficientStorage {
                what: format!("{backend}: no space left on the server's storage"),
            },
            _ => Error::Backend { backend, source },
        }
    }

    pub fn unavailable(what: impl fmt::Display) -> Self {
        Error::Unavailable {
            what: what.to_string(),
        }
    }

    /// Whether retrying the same operation later may succeed (storage full, lock busy).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::InsufficientStorage { .. } | Error::Unavailable { .. }
        )
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
            Error::TooLarge { .. } | Error::TooMany { .. } => "too_large",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::TimedOut(_) => "timed_out",
            Error::Server { code, .. } => code,
            Error::Unreachable { .. } => "unreachable",
            Error::InsufficientStorage { .. } => "insufficient_storage",
            Error::Unavailable { .. } => "unavailable",
            Error::Backend { .. } => "internal",
        }
    }
}

/// Whether an I/O error means the disk (or the user's quota) is full: ENOSPC or EDQUOT.
pub(crate) fn is_storage_full(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(e.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded)
        || matches!(e.raw_os_error(), Some(c) if c == nix::libc::ENOSPC || c == nix::libc::EDQUOT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_insufficient_storage_from_any_backend() {
        for errno in [nix::libc::ENOSPC, nix::libc::EDQUOT] {
            let e = Error::backend("x", std::io::Error::from_raw_os_error(errno));
            assert!(matches!(e, Error::InsufficientStorage { .. }), "{e:?}");
            assert!(e.is_transient());
        }
        let wrapped = std::io::Error::new(std::io::ErrorKind::StorageFull, "writing y: full");
        assert!(matches!(
            Error::backend("x", wrapped),
            Error::InsufficientStorage { .. }
        ));
        let other = Error::backend("x", std::io::Error::from_raw_os_error(nix::libc::EIO));
        assert!(matches!(other, Error::Backend { .. }), "{other:?}");
    }
}

//! Authentication between dbt-remote and dbt-server, both sides.
//!
//! - [`ClientAuth`] (the client): which bearer token a [`Client`](crate::Client) sends. A
//!   static token (`DBT_REMOTE_TOKEN`), or a Google ID token whose audience is the server URL,
//!   made from a service-account key file or asked of the metadata server, cached until
//!   shortly before it expires.
//! - [`Credentials`]: a static token or a service-account key a caller hands to a client
//!   itself (an Airflow connection's), instead of those of the settings and the environment.
//! - [`Verifier`] (the server): whether a request's `Authorization: Bearer …` is acceptable.
//!   A static token (kept as its SHA-256), or a Google ID token checked against Google's
//!   public keys (JWKS), audience, issuer, expiry and an optional list of emails. Off by
//!   default: a server without one accepts every request.
//!
//! - [`session`]: the web UI's browser session, the same token kept in an HttpOnly cookie.
//!
//! Every failure is an [`Error::Unauthenticated`](crate::Error::Unauthenticated) with a
//! message a person can act on.

mod client;
mod credentials;
pub mod session;
mod verify;

pub use client::{ClientAuth, ServiceAccountKey, DEFAULT_METADATA_HOST, GOOGLE_TOKEN_URI};
pub use credentials::Credentials;
pub use verify::{Principal, Verifier, VerifierBuilder, GOOGLE_ISSUERS, GOOGLE_JWKS_URL};

use crate::Error;

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Selects jsonwebtoken's pure-Rust crypto provider for this process. Called before any
/// signing or verifying, so the choice does not depend on which features other crates of a
/// build enable (with both of jsonwebtoken's providers enabled it would otherwise panic).
pub(crate) fn init_jwt() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    });
}

pub(crate) fn unauthenticated(message: impl std::fmt::Display) -> Error {
    Error::Unauthenticated(message.to_string())
}

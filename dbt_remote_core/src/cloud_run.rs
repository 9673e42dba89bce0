//! What the Cloud Run launcher and locator share (feature `gcp`): making API clients, checking
//! a region, and turning the API's errors into the core's [`Error`] with a hint a user can act on.

use std::fmt;

use google_cloud_gax::error::rpc::Code;

use crate::{Error, Result};

/// The backend name in [`Error::Backend`].
pub(crate) const BACKEND: &str = "cloud run";

/// How API clients are made: Google's default endpoint and credentials (Application Default
/// Credentials), or another endpoint and no credentials (tests, emulators).
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientOptions {
    pub endpoint: Option<String>,
    pub anonymous: bool,
}

/// The setters of the [`ClientOptions`] a builder keeps in its `client` field, written once for
/// the launcher's and the locator's builders: `client_option_setters!();` in their `impl`.
macro_rules! client_option_setters {
    () => {
        /// Another endpoint of the Cloud Run Admin API (tests, emulators).
        pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
            self.client.endpoint = Some(url.into());
            self
        }

        /// Sends no credentials (tests against a local fake of the API).
        pub fn with_anonymous_credentials(mut self) -> Self {
            self.client.anonymous = true;
            self
        }
    };
}
pub(crate) use client_option_setters;

/// Builds a client of the Cloud Run Admin API, e.g. `client!(Jobs, &options)`.
macro_rules! client {
    ($client:ident, $options:expr) => {{
        let options: &$crate::cloud_run::ClientOptions = $options;
        let mut builder = google_cloud_run_v2::client::$client::builder();
        if let Some(endpoint) = &options.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        if options.anonymous {
            builder = builder.with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            );
        }
        builder.build().await.map_err(|e| {
            $crate::Error::backend(
                $crate::cloud_run::BACKEND,
                format!(
                    "could not make a Cloud Run {} client (are Application Default Credentials \
                     set up? `gcloud auth application-default login`): {e}",
                    stringify!($client)
                ),
            )
        })
    }};
}
pub(crate) use client;

/// BigQuery's multi-region locations, which are no Cloud Run region, with a region to suggest.
const MULTI_REGIONS: &[(&str, &str)] = &[("EU", "europe-west1"), ("US", "us-central1")];

/// Checks that `region` looks like a Cloud Run region (`europe-west1`); `how_to_set` names the
/// flag or variable that sets it, for the error.
pub(crate) fn check_region(region: &str, how_to_set: &str) -> Result<()> {
    if let Some((name, example)) = MULTI_REGIONS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(region))
    {
        return Err(Error::invalid(format!(
            "`{name}` is a BigQuery multi-region, not a Cloud Run region: pass {how_to_set} \
             with a region such as {example}"
        )));
    }
    let well_formed = !region.is_empty()
        && region.contains('-')
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !well_formed {
        return Err(Error::invalid(format!(
            "{region:?} is not a Cloud Run region (e.g. europe-west1, us-central1): pass {how_to_set}"
        )));
    }
    Ok(())
}

/// What went wrong in a call of the Cloud Run Admin API.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("permission denied {action}: {hint} (Google Cloud said: {message})")]
    PermissionDenied {
        action: String,
        hint: String,
        message: String,
    },
    #[error("not found {action}: {hint} (Google Cloud said: {message})")]
    NotFound {
        action: String,
        hint: String,
        message: String,
    },
    #[error("{action} failed: {source}")]
    Other {
        action: String,
        #[source]
        source: google_cloud_gax::error::Error,
    },
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Error::backend(BACKEND, e)
    }
}

/// The hints an [`ApiError`] gives for a call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hints<'a> {
    /// What the caller's account needs, for a 403.
    pub permission: &'a str,
    /// What to check, for a 404.
    pub not_found: &'a str,
}

/// The API's status code of `e`, from its status or its HTTP code.
pub(crate) fn code(e: &google_cloud_gax::error::Error) -> Option<Code> {
    if let Some(status) = e.status() {
        return Some(status.code);
    }
    match e.http_status_code()? {
        401 => Some(Code::Unauthenticated),
        403 => Some(Code::PermissionDenied),
        404 => Some(Code::NotFound),
        409 => Some(Code::AlreadyExists),
        _ => None,
    }
}

/// The core's error for a failed call `action` (e.g. "creating Cloud Run job X").
pub(crate) fn api_error(
    e: google_cloud_gax::error::Error,
    action: impl fmt::Display,
    hints: Hints<'_>,
) -> Error {
    let message = e
        .status()
        .map(|s| s.message.clone())
        .unwrap_or_else(|| e.to_string());
    let action = action.to_string();
    match code(&e) {
        Some(Code::PermissionDenied) => ApiError::PermissionDenied {
            action,
            hint: hints.permission.to_string(),
            message,
        }
        .into(),
        Some(Code::NotFound) => ApiError::NotFound {
            action,
            hint: hints.not_found.to_string(),
            message,
        }
        .into(),
        Some(Code::Unauthenticated) => Error::Unauthenticated(format!(
            "Google Cloud refused the credentials {action}: set up Application Default \
             Credentials (`gcloud auth application-default login`, or a service account) \
             ({message})"
        )),
        _ => ApiError::Other { action, source: e }.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_checked() {
        check_region("europe-west1", "--location").unwrap();
        check_region("us-central1", "--location").unwrap();
        let err = check_region("EU", "--location").unwrap_err().to_string();
        assert!(
            err.contains("`EU` is a BigQuery multi-region, not a Cloud Run region"),
            "{err}"
        );
        assert!(
            err.contains("pass --location with a region such as europe-west1"),
            "{err}"
        );
        let err = check_region("us", "--location").unwrap_err().to_string();
        assert!(err.contains("us-central1"), "{err}");
        assert!(check_region("Europe West", "--location").is_err());
        assert!(check_region("", "--location").is_err());
    }
}

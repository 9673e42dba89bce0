//! How `dbt-remote` finds its server: the [`ServerLocator`] trait and its implementations.
//! [`choose`] picks one from what the client settings say ([`LocatorSettings`]); the
//! `connect` module, above this one, passes them.

use std::fmt;
use std::path::Path;

use async_trait::async_trait;

use crate::Result;

#[cfg(feature = "gcp")]
pub mod cloud_run;
mod fixed;
pub mod profile;

#[cfg(feature = "gcp")]
pub use cloud_run::{CloudRunLocator, CloudRunLocatorBuilder};
pub use fixed::FixedLocator;

/// Finds the base URL of a dbt-server.
///
/// # Contract
/// - [`locate`](Self::locate) returns the base URL a [`Client`](crate::Client) is made with:
///   `http://` or `https://`, host, optional port and path prefix, no trailing `/`.
/// - It changes no state and may be called any number of times, also concurrently; a locator
///   that looks the server up (a cloud API) does so on each call, so a server that moved is
///   found again.
/// - A setting that cannot work (a malformed URL, a location that is not a region) is
///   [`Error::InvalidInput`](crate::Error::InvalidInput) naming the flag to fix; no server
///   found is [`Error::NotFound`](crate::Error::NotFound) saying what was searched; a lookup
///   service that fails is [`Error::Backend`](crate::Error::Backend) or
///   [`Error::Unauthenticated`](crate::Error::Unauthenticated).
#[async_trait]
pub trait ServerLocator: fmt::Debug + Send + Sync + 'static {
    async fn locate(&self) -> Result<String>;
}

/// What choosing a locator needs to know from the client's settings.
#[derive(Debug, Clone, Copy)]
pub struct LocatorSettings<'a> {
    /// The `server_url` setting (its default when not given).
    pub server_url: &'a str,
    /// Whether `server_url` was given (flag, environment or `dbt_remote.yml`).
    pub server_url_given: bool,
    /// The `location` setting: a Google Cloud region.
    pub location: Option<&'a str>,
    /// The dbt project, whose BigQuery profile names the Google Cloud project to search.
    pub project_dir: &'a Path,
    /// The `creds_path` setting: the key file whose ID tokens a discovery's probes carry.
    pub creds_path: Option<&'a Path>,
    /// Credentials given to the client: the probes carry these instead (see
    /// [`Credentials`](crate::auth::Credentials)).
    pub credentials: Option<&'a crate::auth::Credentials>,
}

impl LocatorSettings<'_> {
    /// Where discovery looks, and where that was read: `location` (`--location`), else, in a
    /// build with the `gcp` feature, the `location` of the project's BigQuery target in
    /// `profiles.yml`, as the original dbt-remote did. `None`: no discovery.
    pub fn discovery_location(&self) -> Option<(String, Option<String>)> {
        if let Some(location) = self.location {
            return Some((location.to_string(), None));
        }
        if !cfg!(feature = "gcp") {
            return None;
        }
        let (location, origin) = profile::bigquery_location(self.project_dir, None)?;
        Some((location, Some(origin)))
    }

    /// Whether these settings find the server by discovery (a build with the `gcp` feature,
    /// no `server_url` given, and a [`discovery_location`](Self::discovery_location)) rather
    /// than use a fixed URL.
    pub fn discovers(&self) -> bool {
        cfg!(feature = "gcp") && !self.server_url_given && self.discovery_location().is_some()
    }
}

/// The error of `--location` in a build that cannot discover.
#[cfg_attr(feature = "gcp", allow(dead_code))]
fn no_discovery(location: &str) -> crate::Error {
    crate::Error::invalid(format!(
        "--location {location}: this dbt-remote was built without the `gcp` feature, so it \
         cannot look for dbt-server on Cloud Run; pass --server-url, or use a build with \
         `--features gcp`"
    ))
}

/// The locator `settings` call for: a [`FixedLocator`] of `server_url` when it is given or
/// when there is no [`discovery_location`](LocatorSettings::discovery_location). Otherwise a
/// build with the `gcp` feature finds dbt-server on Cloud Run in that region
/// ([`CloudRunLocator`], settings from the environment: the project is `DBT_REMOTE_PROJECT`,
/// else the one of the BigQuery target in `profiles.yml`); in other builds a `location` is an
/// error that says so.
pub async fn choose(settings: LocatorSettings<'_>) -> Result<Box<dyn ServerLocator>> {
    #[cfg(feature = "gcp")]
    {
        choose_on_cloud_run(settings, CloudRunLocator::builder().from_env()).await
    }
    #[cfg(not(feature = "gcp"))]
    {
        if let (false, Some(location)) = (settings.server_url_given, settings.location) {
            return Err(no_discovery(location));
        }
        Ok(Box::new(FixedLocator::new(settings.server_url)))
    }
}

/// [`choose`] with the Cloud Run locator made from `cloud_run` (its location and dbt project
/// dir are taken from `settings`).
#[cfg(feature = "gcp")]
pub async fn choose_on_cloud_run(
    settings: LocatorSettings<'_>,
    cloud_run: CloudRunLocatorBuilder,
) -> Result<Box<dyn ServerLocator>> {
    if settings.server_url_given {
        return Ok(Box::new(FixedLocator::new(settings.server_url)));
    }
    if let Some((location, origin)) = settings.discovery_location() {
        let locator = cloud_run
            .with_location(location.as_str())
            .with_dbt_project_dir(settings.project_dir)
            .with_credentials_file(settings.creds_path.map(Path::to_path_buf))
            .with_credentials(settings.credentials.cloned())
            .build()
            .await
            .map_err(|e| match (origin, e) {
                (Some(origin), crate::Error::InvalidInput(m)) => crate::Error::invalid(format!(
                    "no --location was given, so dbt-remote took {origin}: {m}"
                )),
                (_, e) => e,
            })?;
        return Ok(Box::new(locator));
    }
    Ok(Box::new(FixedLocator::new(settings.server_url)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_without_the_gcp_feature_says_so() {
        let err = no_discovery("europe-west1").to_string();
        for part in [
            "--location europe-west1",
            "without the `gcp` feature",
            "--server-url",
        ] {
            assert!(err.contains(part), "{err}");
        }
    }

    #[cfg(not(feature = "gcp"))]
    #[tokio::test]
    async fn a_default_build_refuses_a_location_and_never_reads_the_profile() {
        let dir = std::path::Path::new("/nonexistent");
        let settings = |location, given| LocatorSettings {
            server_url: "http://127.0.0.1:8001",
            server_url_given: given,
            location,
            project_dir: dir,
            creds_path: None,
            credentials: None,
        };
        assert!(choose(settings(Some("europe-west1"), false)).await.is_err());
        assert!(choose(settings(Some("europe-west1"), true)).await.is_ok());
        assert!(settings(None, false).discovery_location().is_none());
    }
}

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
}

impl LocatorSettings<'_> {
    /// Whether these settings find the server by discovery (a build with the `gcp` feature,
    /// `location` set and no `server_url` given) rather than use a fixed URL.
    pub fn discovers(&self) -> bool {
        cfg!(feature = "gcp") && !self.server_url_given && self.location.is_some()
    }
}

/// The locator `settings` call for: a [`FixedLocator`] of `server_url` when it is given or
/// when `location` is not set. When only `location` is set, a build with the `gcp` feature
/// finds dbt-server on Cloud Run in that region ([`CloudRunLocator`], settings from the
/// environment: the project is `DBT_REMOTE_PROJECT`, else the one of the BigQuery target in
/// `profiles.yml`); other builds use the default `server_url`.
pub async fn choose(settings: LocatorSettings<'_>) -> Result<Box<dyn ServerLocator>> {
    #[cfg(feature = "gcp")]
    {
        choose_on_cloud_run(settings, CloudRunLocator::builder().from_env()).await
    }
    #[cfg(not(feature = "gcp"))]
    {
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
    if let (true, Some(location)) = (settings.discovers(), settings.location) {
        let locator = cloud_run
            .with_location(location)
            .with_dbt_project_dir(settings.project_dir)
            .build()
            .await?;
        return Ok(Box::new(locator));
    }
    Ok(Box::new(FixedLocator::new(settings.server_url)))
}

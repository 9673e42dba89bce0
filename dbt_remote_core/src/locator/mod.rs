//! How `dbt-remote` finds its server: the [`ServerLocator`] trait and its implementations.

use std::fmt;

use async_trait::async_trait;

use crate::config::Settings;
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

/// The locator `settings` name: a [`FixedLocator`] of `server_url` when it is given (flag,
/// environment or `dbt_remote.yml`) or when `location` is not set. When only `location` is set,
/// a build with the `gcp` feature finds dbt-server on Cloud Run in that region
/// ([`CloudRunLocator`], settings from the environment: the project is `DBT_REMOTE_PROJECT`,
/// else the one of the BigQuery target in `profiles.yml`); other builds use the default
/// `server_url`.
pub async fn for_settings(settings: &Settings) -> Result<Box<dyn ServerLocator>> {
    #[cfg(feature = "gcp")]
    {
        for_settings_on_cloud_run(settings, CloudRunLocator::builder().from_env()).await
    }
    #[cfg(not(feature = "gcp"))]
    {
        Ok(Box::new(FixedLocator::new(
            settings.get("server_url").unwrap_or_default(),
        )))
    }
}

/// [`for_settings`] with the Cloud Run locator made from `cloud_run` (its location and dbt
/// project dir are taken from `settings`).
#[cfg(feature = "gcp")]
pub async fn for_settings_on_cloud_run(
    settings: &Settings,
    cloud_run: CloudRunLocatorBuilder,
) -> Result<Box<dyn ServerLocator>> {
    use crate::config::Source;
    let given = !matches!(settings.source("server_url"), None | Some(Source::Default));
    if let (false, Some(location)) = (given, settings.get("location")) {
        let locator = cloud_run
            .with_location(location)
            .with_dbt_project_dir(settings.job_files().project_dir)
            .build()
            .await?;
        return Ok(Box::new(locator));
    }
    Ok(Box::new(FixedLocator::new(
        settings.get("server_url").unwrap_or_default(),
    )))
}

//! Connecting a client: the settings in force → the locator they call for → the server's URL →
//! the credentials → a [`Client`]. It sits above [`crate::config`] and [`crate::locator`],
//! which know nothing of each other. The CLI and the Python binding connect through here.
//!
//! ```
//! use dbt_remote_core::config::{ConfigFile, Overrides, Settings};
//! use dbt_remote_core::connect;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let flags = Overrides { server_url: Some("http://10.0.0.5:8001/".into()), ..Default::default() };
//! let settings = Settings::resolve(&flags, |_| None, &ConfigFile::load(dir.path())?)?;
//! assert!(!connect::discovers(&settings));
//! let connection = connect::connect(settings).await?;
//! assert_eq!(connection.client.base_url(), "http://10.0.0.5:8001");
//! # Ok::<(), dbt_remote_core::Error>(())
//! # }).unwrap();
//! ```

use crate::auth::{ClientAuth, Credentials};
use crate::config::Settings;
use crate::locator::{self, LocatorSettings, ServerLocator};
use crate::{Client, Result};

/// A client of the server the settings name, and the settings with that server's URL.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The settings in force; `server_url` is the one located (source `Located` when a
    /// discovery found it).
    pub settings: Settings,
    pub client: Client,
}

/// Whether connecting with `settings` asks a cloud API where the server is (Cloud Run
/// discovery: a build with `gcp`, `location` set and no `server_url` given). When not,
/// connecting makes no network call.
pub fn discovers(settings: &Settings) -> bool {
    let files = settings.job_files();
    let creds = settings.creds_path();
    locator_settings(settings, &files, creds.as_deref(), None).discovers()
}

/// The locator `settings` call for (see [`locator::choose`]).
pub async fn locator(settings: &Settings) -> Result<Box<dyn ServerLocator>> {
    locator_with(settings, None).await
}

/// [`locator`], whose discovery probes carry `credentials` when given.
async fn locator_with(
    settings: &Settings,
    credentials: Option<&Credentials>,
) -> Result<Box<dyn ServerLocator>> {
    let files = settings.job_files();
    let creds = settings.creds_path();
    locator::choose(locator_settings(
        settings,
        &files,
        creds.as_deref(),
        credentials,
    ))
    .await
}

/// [`locator`] with the Cloud Run locator made from `cloud_run` (tests, emulators).
#[cfg(feature = "gcp")]
pub async fn locator_on_cloud_run(
    settings: &Settings,
    cloud_run: locator::CloudRunLocatorBuilder,
) -> Result<Box<dyn ServerLocator>> {
    let files = settings.job_files();
    let creds = settings.creds_path();
    let settings = locator_settings(settings, &files, creds.as_deref(), None);
    locator::choose_on_cloud_run(settings, cloud_run).await
}

/// `settings` with `server_url` as their locator finds it: unchanged for a fixed URL,
/// the discovered one otherwise.
pub async fn locate(settings: Settings) -> Result<Settings> {
    locate_with(settings, None).await
}

async fn locate_with(settings: Settings, credentials: Option<&Credentials>) -> Result<Settings> {
    let url = locator_with(&settings, credentials).await?.locate().await?;
    Ok(settings.with_located_server_url(url))
}

/// A client of `server_url` of `settings` (not located again), with the credentials of the
/// settings (`creds_path`) and the environment (see [`ClientAuth::from_env`]).
pub fn client(settings: &Settings) -> Result<Client> {
    let url = settings.server_url();
    let auth = ClientAuth::from_env(url, settings.creds_path().as_deref())?;
    Ok(Client::new(url)?.with_auth(auth))
}

/// Locates the server and makes its client: [`locate`], then [`client`].
pub async fn connect(settings: Settings) -> Result<Connection> {
    connect_with(settings, None).await
}

/// [`connect`], with `credentials` (when given) instead of those the settings and the
/// environment name, for the server and for a discovery's probes: a caller holding its own (a
/// static token or a service-account key from an Airflow connection), so none is read from,
/// or leaks through, the process environment.
pub async fn connect_with(
    settings: Settings,
    credentials: Option<Credentials>,
) -> Result<Connection> {
    let settings = locate_with(settings, credentials.as_ref()).await?;
    let client = match credentials {
        Some(credentials) => {
            let url = settings.server_url();
            Client::new(url)?.with_auth(credentials.for_server(url)?)
        }
        None => client(&settings)?,
    };
    Ok(Connection { settings, client })
}

fn locator_settings<'a>(
    settings: &'a Settings,
    files: &'a crate::package::JobFiles,
    creds_path: Option<&'a std::path::Path>,
    credentials: Option<&'a Credentials>,
) -> LocatorSettings<'a> {
    LocatorSettings {
        server_url: settings.server_url(),
        server_url_given: settings.server_url_given(),
        location: settings.location(),
        project_dir: &files.project_dir,
        creds_path,
        credentials,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigFile, Overrides, Source};

    #[tokio::test]
    async fn locate_keeps_a_fixed_server_url() {
        let dir = tempfile::tempdir().unwrap();
        let file = ConfigFile::load(dir.path()).unwrap();
        let flags = Overrides {
            server_url: Some("http://10.0.0.5:8001/".into()),
            ..Default::default()
        };
        let s = Settings::resolve(&flags, |_| None, &file).unwrap();
        let s = locate(s).await.unwrap();
        assert_eq!(s.get("server_url"), Some("http://10.0.0.5:8001/"));
        assert_eq!(s.source("server_url"), Some(Source::Flag));
        let s = Settings::resolve(&Overrides::default(), |_| None, &file).unwrap();
        let s = locate(s).await.unwrap();
        assert_eq!(s.get("server_url"), Some("http://127.0.0.1:8001"));
        assert_eq!(s.source("server_url"), Some(Source::Default));
    }

    #[tokio::test]
    async fn only_a_location_without_a_given_url_discovers() {
        let dir = tempfile::tempdir().unwrap();
        let file = ConfigFile::load(dir.path()).unwrap();
        let resolve = |flags: Overrides| Settings::resolve(&flags, |_| None, &file).unwrap();
        let location = Overrides {
            location: Some("europe-west1".into()),
            ..Default::default()
        };
        assert_eq!(discovers(&resolve(location.clone())), cfg!(feature = "gcp"));
        let both = Overrides {
            server_url: Some("http://h:1".into()),
            ..location
        };
        assert!(!discovers(&resolve(both)));
        assert!(!discovers(&resolve(Overrides::default())));
    }
}

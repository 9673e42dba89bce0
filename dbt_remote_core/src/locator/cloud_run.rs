//! A locator that finds dbt-server among the Cloud Run services of a project (feature `gcp`).

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_gax::paginator::ItemPaginator as _;
use google_cloud_run_v2::client::Services;

use super::profile::bigquery_project;
use super::ServerLocator;
use crate::auth::{ClientAuth, Credentials};
use crate::cloud_run::{api_error, check_region, client, ClientOptions, Hints};
use crate::env;
use crate::{Error, Result};

/// The label (key, value) that marks the dbt-server service: deploy it with
/// `gcloud run deploy … --labels dbt-remote=server`.
pub const SERVER_LABEL: (&str, &str) = ("dbt-remote", "server");

/// What `GET <uri>/check` of a dbt-server answers starts with.
const CHECK_ANSWER: &str = "Running dbt-server";

/// Settings of a [`CloudRunLocator`].
#[derive(Debug, Clone, Default)]
pub struct CloudRunLocatorBuilder {
    project: Option<String>,
    location: Option<String>,
    dbt_project_dir: Option<PathBuf>,
    profiles_dir: Option<PathBuf>,
    target: Option<String>,
    creds_path: Option<PathBuf>,
    credentials: Option<Credentials>,
    client: ClientOptions,
}

impl CloudRunLocatorBuilder {
    /// Takes `DBT_REMOTE_PROJECT` and `DBT_REMOTE_LOCATION` when they are set.
    pub fn from_env(mut self) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        self.project = var(env::PROJECT).or(self.project);
        self.location = var(env::LOCATION).or(self.location);
        self
    }

    /// The Google Cloud project of the service. Unset: the `project` of the BigQuery target
    /// in dbt's `profiles.yml` (see [`with_dbt_project_dir`](Self::with_dbt_project_dir)).
    pub fn with_project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// The Cloud Run region of the service, e.g. `europe-west1` (`--location`).
    pub fn with_location(mut self, location: impl Into<String>) -> Self {
        self.location = Some(location.into());
        self
    }

    /// The dbt project whose profile gives the project when none is set: its
    /// `dbt_project.yml` names the profile, read from `profiles.yml`.
    pub fn with_dbt_project_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dbt_project_dir = Some(dir.into());
        self
    }

    /// Where `profiles.yml` is (default: `DBT_PROFILES_DIR`, else the dbt project dir if it
    /// has one, else `~/.dbt`).
    pub fn with_profiles_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.profiles_dir = Some(dir.into());
        self
    }

    /// The profile's target to read (default: the profile's `target`).
    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// The service-account key file (`--credentials`) whose ID tokens the `/check` probe of
    /// each candidate carries. Unset: the credentials of the environment for that URL, as a
    /// [`Client`](crate::Client) of it would send ([`ClientAuth::from_env`]).
    pub fn with_credentials_file(mut self, path: Option<PathBuf>) -> Self {
        self.creds_path = path;
        self
    }

    /// Credentials given to the client, which the probes carry instead of those of
    /// [`with_credentials_file`](Self::with_credentials_file) and the environment.
    pub fn with_credentials(mut self, credentials: Option<Credentials>) -> Self {
        self.credentials = credentials;
        self
    }

    crate::cloud_run::client_option_setters!();

    /// Checks the settings, finds the project if needed, and makes the locator.
    pub async fn build(self) -> Result<CloudRunLocator> {
        let location = self.location.ok_or_else(|| {
            Error::invalid(
                "no Cloud Run location to look for dbt-server in: pass --location (a region \
                 such as europe-west1) or --server-url",
            )
        })?;
        check_region(&location, "--location")?;
        let project = match self.project {
            Some(p) => p,
            None => {
                let dir = self.dbt_project_dir.ok_or_else(|| {
                    Error::invalid(format!(
                        "no Google Cloud project to look for dbt-server in: set {}",
                        env::PROJECT
                    ))
                })?;
                bigquery_project(&dir, self.profiles_dir.as_deref(), self.target.as_deref())?
            }
        };
        let services = client!(Services, &self.client)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::backend("http", e))?;
        Ok(CloudRunLocator {
            parent: format!("projects/{project}/locations/{location}"),
            project,
            services,
            http,
            creds_path: self.creds_path,
            credentials: self.credentials,
        })
    }
}

/// Finds dbt-server among the Cloud Run services of a project and location: the service
/// labelled [`SERVER_LABEL`] whose `GET <uri>/check` answers as a dbt-server. Returns its
/// `uri`.
#[derive(Debug, Clone)]
pub struct CloudRunLocator {
    project: String,
    /// `projects/P/locations/L`.
    parent: String,
    services: Services,
    http: reqwest::Client,
    creds_path: Option<PathBuf>,
    credentials: Option<Credentials>,
}

impl CloudRunLocator {
    pub fn builder() -> CloudRunLocatorBuilder {
        CloudRunLocatorBuilder::default()
    }

    /// The project searched.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// Whether the service at `uri` answers `/check` as a dbt-server; the reason if not. The
    /// probe carries an ID token for `uri` (Cloud Run IAM refuses calls without one); failing
    /// to get one is the error of the whole lookup.
    async fn check(&self, uri: &str) -> Result<std::result::Result<(), String>> {
        #[derive(serde::Deserialize)]
        struct Check {
            response: String,
        }
        let url = format!("{}/check", uri.trim_end_matches('/'));
        let auth = match &self.credentials {
            Some(credentials) => credentials.for_server(uri)?,
            None => ClientAuth::from_env(uri, self.creds_path.as_deref())?,
        };
        let mut request = self.http.get(&url);
        if let Some(token) = auth.token().await? {
            request = request.bearer_auth(token);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Ok(Err(format!("GET {url}: {e}"))),
        };
        let status = response.status();
        if matches!(status.as_u16(), 401 | 403) {
            return Ok(Err(format!(
                "GET {url} answered {status} with {}: your account needs roles/run.invoker on \
                 the service",
                auth.describe()
            )));
        }
        if !status.is_success() {
            return Ok(Err(format!("GET {url} answered {status}")));
        }
        let body: Check = match response.json().await {
            Ok(b) => b,
            Err(e) => return Ok(Err(format!("GET {url} answered no dbt-server check: {e}"))),
        };
        if body.response.starts_with(CHECK_ANSWER) {
            Ok(Ok(()))
        } else {
            Ok(Err(format!("GET {url} answered {:?}", body.response)))
        }
    }
}

#[async_trait]
impl ServerLocator for CloudRunLocator {
    async fn locate(&self) -> Result<String> {
        let hints = Hints {
            permission: "your account needs run.services.list on the project (e.g. \
                         roles/run.viewer); or pass --server-url",
            not_found: "check the project and --location (a Cloud Run region such as \
                        europe-west1, where dbt-server is deployed)",
        };
        let action = || format!("listing the Cloud Run services of {}", self.parent);
        let mut items = self
            .services
            .list_services()
            .set_parent(&self.parent)
            .by_item();
        let mut candidates = Vec::new();
        while let Some(service) = items.next().await {
            let service = service.map_err(|e| api_error(e, action(), hints))?;
            if service.labels.get(SERVER_LABEL.0).map(String::as_str) == Some(SERVER_LABEL.1) {
                let uri = if service.uri.is_empty() {
                    service.urls.first().cloned().unwrap_or_default()
                } else {
                    service.uri.clone()
                };
                candidates.push((service.name, uri));
            }
        }
        if candidates.is_empty() {
            return Err(Error::not_found(format!(
                "dbt-server in {}: no Cloud Run service there has the label {}={} (deploy it \
                 with --labels {}={}, check --location, or pass --server-url)",
                self.parent, SERVER_LABEL.0, SERVER_LABEL.1, SERVER_LABEL.0, SERVER_LABEL.1
            )));
        }
        let mut refusals = Vec::new();
        for (name, uri) in candidates {
            if uri.is_empty() {
                refusals.push(format!("{name} has no URL yet"));
                continue;
            }
            match self.check(&uri).await? {
                Ok(()) => return Ok(uri.trim_end_matches('/').to_string()),
                Err(why) => refusals.push(format!("{name}: {why}")),
            }
        }
        Err(Error::not_found(format!(
            "a dbt-server that answers in {}: the services labelled {}={} do not ({})",
            self.parent,
            SERVER_LABEL.0,
            SERVER_LABEL.1,
            refusals.join("; ")
        )))
    }
}

//! The Cloud Run locator against a fake Cloud Run Admin API and a fake dbt-server `/check`,
//! both on 127.0.0.1.
#![cfg(feature = "gcp")]

use dbt_remote_core::auth::Credentials;
use dbt_remote_core::config::{ConfigFile, Overrides, Settings};
use dbt_remote_core::connect::locator_on_cloud_run;
use dbt_remote_core::locator::CloudRunLocatorBuilder;
use dbt_remote_core::locator::{CloudRunLocator, ServerLocator};
use dbt_remote_core::testing::auth::{google_claims, key};
use dbt_remote_core::Error;
use dbt_remote_test_support::files::write_files;
use dbt_remote_test_support::text::assert_contains;
use serde_json::{json, Value};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SERVICES: &str = "/v2/projects/p/locations/europe-west1/services";

fn locator(api: &MockServer) -> CloudRunLocatorBuilder {
    CloudRunLocator::builder()
        .with_project("p")
        .with_location("europe-west1")
        .with_endpoint(api.uri())
        .with_anonymous_credentials()
}

fn service(name: &str, uri: &str, labelled: bool) -> serde_json::Value {
    let labels = if labelled {
        json!({"dbt-remote": "server", "team": "data"})
    } else {
        json!({"team": "data"})
    };
    json!({
        "name": format!("projects/p/locations/europe-west1/services/{name}"),
        "uri": uri,
        "labels": labels
    })
}

async fn mount_check(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/check"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"response": "Running dbt-server on port 8080"})),
        )
        .expect(1)
        .mount(server)
        .await;
}

/// `GET {services}` answers one page listing `services`.
fn list_services(services_path: &str, services: Vec<Value>) -> Mock {
    Mock::given(method("GET"))
        .and(path(services_path))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "services": services })))
}

/// A dbt-server answering `/check` once, listed once by `GET {services}` on `api`.
async fn listed_dbt_server(api: &MockServer, services_path: &str) -> MockServer {
    let dbt_server = MockServer::start().await;
    mount_check(&dbt_server).await;
    list_services(
        services_path,
        vec![service("dbt-server", &dbt_server.uri(), true)],
    )
    .expect(1)
    .mount(api)
    .await;
    dbt_server
}

/// `GET {services}` answers a Google API error.
fn refuse_services(services_path: &str, code: u16, status: &str, message: &str) -> Mock {
    Mock::given(method("GET"))
        .and(path(services_path))
        .respond_with(ResponseTemplate::new(code).set_body_json(json!({
            "error": {"code": code, "message": message, "status": status}
        })))
}

/// Builds the locator, which must then fail to locate: the error.
async fn locate_error(builder: CloudRunLocatorBuilder) -> Error {
    builder.build().await.unwrap().locate().await.unwrap_err()
}

#[tokio::test]
async fn finds_the_labelled_service_that_answers_check_across_pages() {
    let api = MockServer::start().await;
    let dbt_server = MockServer::start().await;
    let impostor = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/check"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"response": "hello"})))
        .expect(1)
        .mount(&impostor)
        .await;
    mount_check(&dbt_server).await;
    Mock::given(method("GET"))
        .and(path(SERVICES))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "services": [
                service("web", "http://127.0.0.1:9", false),
                service("old-server", &impostor.uri(), true)
            ],
            "nextPageToken": "page-2"
        })))
        .expect(1)
        .mount(&api)
        .await;
    Mock::given(method("GET"))
        .and(path(SERVICES))
        .and(query_param("pageToken", "page-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "services": [service("dbt-server", &format!("{}/", dbt_server.uri()), true)]
        })))
        .with_priority(1)
        .expect(1)
        .mount(&api)
        .await;
    let locator = locator(&api).build().await.unwrap();
    assert_eq!(locator.locate().await.unwrap(), dbt_server.uri());
}

#[tokio::test]
async fn the_project_comes_from_the_dbt_profile_when_unset() {
    let api = MockServer::start().await;
    let shop_services = "/v2/projects/shop-dev/locations/europe-west1/services";
    let dbt_server = listed_dbt_server(&api, shop_services).await;
    let dir = tempfile::tempdir().unwrap();
    write_files(
        dir.path(),
        &[
            ("dbt_project.yml", "name: shop\nprofile: shop\n"),
            (
                "profiles.yml",
                "shop:\n  target: dev\n  outputs:\n    dev:\n      type: bigquery\n      method: oauth\n      project: shop-dev\n      dataset: analytics\n      location: EU\n",
            ),
        ],
    );
    let locator = CloudRunLocator::builder()
        .with_location("europe-west1")
        .with_dbt_project_dir(dir.path())
        .with_profiles_dir(dir.path())
        .with_endpoint(api.uri())
        .with_anonymous_credentials()
        .build()
        .await
        .unwrap();
    assert_eq!(locator.project(), "shop-dev");
    assert_eq!(locator.locate().await.unwrap(), dbt_server.uri());
}

#[tokio::test]
async fn no_labelled_service_says_how_to_deploy_it() {
    let api = MockServer::start().await;
    list_services(SERVICES, vec![service("web", "http://127.0.0.1:9", false)])
        .mount(&api)
        .await;
    let err = locate_error(locator(&api)).await;
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_contains(
        &err.to_string(),
        &["--labels dbt-remote=server", "--server-url"],
    );
}

#[tokio::test]
async fn a_multi_region_location_names_the_location_flag() {
    let api = MockServer::start().await;
    for location in ["EU", "US", "eu"] {
        let err = locator(&api)
            .with_location(location)
            .build()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
        let expected = [
            "is a BigQuery multi-region, not a Cloud Run region",
            "with a region such as",
            "pass --location",
        ];
        assert_contains(&err.to_string(), &expected);
    }
    let err = CloudRunLocator::builder()
        .with_project("p")
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--location"), "{err}");
    assert!(api.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unknown_location_names_the_location_flag() {
    let api = MockServer::start().await;
    let west9 = "/v2/projects/p/locations/europe-west9/services";
    refuse_services(west9, 404, "NOT_FOUND", "Location europe-west9 not found.")
        .expect(1)
        .mount(&api)
        .await;
    let err = locate_error(locator(&api).with_location("europe-west9")).await;
    let expected = [
        "not found listing the Cloud Run services of projects/p/locations/europe-west9",
        "--location",
        "Location europe-west9 not found",
    ];
    assert_contains(&err.to_string(), &expected);
}

#[tokio::test]
async fn permission_denied_names_the_permission() {
    let api = MockServer::start().await;
    let denied =
        "Permission 'run.services.list' denied on resource 'projects/p/locations/europe-west1'.";
    refuse_services(SERVICES, 403, "PERMISSION_DENIED", denied)
        .mount(&api)
        .await;
    let err = locate_error(locator(&api)).await;
    let expected = [
        "permission denied listing the Cloud Run services",
        "run.services.list",
        "roles/run.viewer",
    ];
    assert_contains(&err.to_string(), &expected);
}

fn settings(flags: &[(&'static str, &str)]) -> Settings {
    let mut overrides = Overrides::default();
    for (key, value) in flags {
        match *key {
            "location" => overrides.location = Some(value.to_string()),
            "server_url" => overrides.server_url = Some(value.to_string()),
            other => panic!("no override {other} in these tests"),
        }
    }
    let flags = overrides;
    let dir = tempfile::tempdir().unwrap();
    Settings::resolve(&flags, |_| None, &ConfigFile::load(dir.path()).unwrap()).unwrap()
}

#[tokio::test]
async fn settings_with_only_a_location_use_cloud_run_discovery() {
    let api = MockServer::start().await;
    let dbt_server = listed_dbt_server(&api, SERVICES).await;
    let cloud_run = || {
        CloudRunLocator::builder()
            .with_project("p")
            .with_endpoint(api.uri())
            .with_anonymous_credentials()
    };
    let located = locator_on_cloud_run(&settings(&[("location", "europe-west1")]), cloud_run())
        .await
        .unwrap();
    assert_eq!(located.locate().await.unwrap(), dbt_server.uri());

    // A server URL that is given wins; no location: the default URL. Neither asks Cloud Run.
    let given = settings(&[
        ("location", "europe-west1"),
        ("server_url", "http://10.0.0.5:8001"),
    ]);
    let fixed = locator_on_cloud_run(&given, cloud_run()).await.unwrap();
    assert_eq!(fixed.locate().await.unwrap(), "http://10.0.0.5:8001");
    let fixed = locator_on_cloud_run(&settings(&[]), cloud_run())
        .await
        .unwrap();
    assert_eq!(fixed.locate().await.unwrap(), "http://127.0.0.1:8001");

    // A multi-region location is refused before any request.
    let err = locator_on_cloud_run(&settings(&[("location", "EU")]), cloud_run())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("pass --location"), "{err}");
}

/// A Google-like token endpoint for service-account keys: it signs, with the test key, an ID
/// token whose audience is the assertion's `target_audience`.
struct SignIdTokens;

impl wiremock::Respond for SignIdTokens {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let body = String::from_utf8_lossy(&request.body).into_owned();
        // The assertion is base64url and dots: form encoding leaves it as it is.
        let assertion = body
            .split('&')
            .find_map(|kv| kv.strip_prefix("assertion="))
            .unwrap_or_default();
        let (n, e) = key(0).public_components();
        let public = jsonwebtoken::DecodingKey::from_rsa_components(n, e).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.validate_aud = false;
        match jsonwebtoken::decode::<Value>(assertion, &public, &validation) {
            Ok(data) => {
                let audience = data.claims["target_audience"].as_str().unwrap_or_default();
                let token = key(0).sign(&google_claims(audience, EMAIL, 3600));
                ResponseTemplate::new(200).set_body_json(json!({ "id_token": token }))
            }
            Err(e) => ResponseTemplate::new(400).set_body_json(json!({"error": e.to_string()})),
        }
    }
}

/// A dbt-server behind Cloud Run IAM: `/check` answers only a request carrying a Google ID
/// token signed by the test key whose audience is this server's URL.
struct IamCheck {
    audience: String,
}

impl wiremock::Respond for IamCheck {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let bearer = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        let (n, e) = key(0).public_components();
        let public = jsonwebtoken::DecodingKey::from_rsa_components(n, e).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[self.audience.as_str()]);
        validation.set_issuer(&["https://accounts.google.com"]);
        match jsonwebtoken::decode::<Value>(bearer, &public, &validation) {
            Ok(_) => ResponseTemplate::new(200)
                .set_body_json(json!({"response": "Running dbt-server on port 8080"})),
            Err(_) => ResponseTemplate::new(401)
                .insert_header("www-authenticate", "Bearer error=\"invalid_token\""),
        }
    }
}

const EMAIL: &str = "dev-runner@p.iam.gserviceaccount.com";

#[tokio::test]
async fn the_check_probe_carries_an_id_token_for_each_candidates_url() {
    let api = MockServer::start().await;
    let tokens = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(SignIdTokens)
        .mount(&tokens)
        .await;
    let dbt_server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/check"))
        .respond_with(IamCheck {
            audience: dbt_server.uri(),
        })
        .mount(&dbt_server)
        .await;
    list_services(
        SERVICES,
        vec![service("dbt-server", &dbt_server.uri(), true)],
    )
    .mount(&api)
    .await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key.json");
    let token_uri = format!("{}/token", tokens.uri());
    std::fs::write(&key_file, key(0).service_account_json(EMAIL, &token_uri)).unwrap();

    // Without credentials Cloud Run IAM refuses the probe, and the error says why.
    let err = locate_error(locator(&api)).await.to_string();
    assert_contains(&err, &["401", "roles/run.invoker"]);
    // With the key, the probe carries an ID token for the server's URL and is let in.
    let located = locator(&api)
        .with_credentials_file(Some(key_file.clone()))
        .build()
        .await
        .unwrap();
    assert_eq!(located.locate().await.unwrap(), dbt_server.uri());
    // A key given to the client as JSON (an Airflow connection's) reaches the probe too.
    let given = Credentials::key_json(&key(0).service_account_json(EMAIL, &token_uri)).unwrap();
    let located = locator(&api)
        .with_credentials(Some(given))
        .build()
        .await
        .unwrap();
    assert_eq!(located.locate().await.unwrap(), dbt_server.uri());
    // The same through the settings: --credentials reaches the probe.
    let mut overrides = Overrides {
        location: Some("europe-west1".into()),
        ..Default::default()
    };
    overrides.creds_path = Some(key_file);
    let settings =
        Settings::resolve(&overrides, |_| None, &ConfigFile::load(dir.path()).unwrap()).unwrap();
    let cloud_run = CloudRunLocator::builder()
        .with_project("p")
        .with_endpoint(api.uri())
        .with_anonymous_credentials();
    let located = locator_on_cloud_run(&settings, cloud_run).await.unwrap();
    assert_eq!(located.locate().await.unwrap(), dbt_server.uri());
}

/// A dbt project whose BigQuery target has `location`.
fn bigquery_project(location: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_files(
        dir.path(),
        &[
            ("dbt_project.yml", "name: shop\nprofile: shop\n"),
            (
                "profiles.yml",
                &format!("shop:\n  target: dev\n  outputs:\n    dev:\n      type: bigquery\n      method: oauth\n      project: p\n      dataset: analytics\n      location: {location}\n"),
            ),
        ],
    );
    dir
}

#[tokio::test]
async fn with_no_location_the_bigquery_targets_location_is_searched() {
    let api = MockServer::start().await;
    let dbt_server = listed_dbt_server(&api, SERVICES).await;
    let cloud_run = || {
        CloudRunLocator::builder()
            .with_endpoint(api.uri())
            .with_anonymous_credentials()
    };
    let in_project = |dir: &tempfile::TempDir| {
        let overrides = Overrides {
            project_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        Settings::resolve(&overrides, |_| None, &ConfigFile::load(dir.path()).unwrap()).unwrap()
    };
    let regional = bigquery_project("europe-west1");
    let settings = in_project(&regional);
    assert!(dbt_remote_core::connect::discovers(&settings));
    let located = locator_on_cloud_run(&settings, cloud_run()).await.unwrap();
    assert_eq!(located.locate().await.unwrap(), dbt_server.uri());

    // A multi-region dataset location: the original's hint, naming where it was read.
    let multi = bigquery_project("EU");
    let err = locator_on_cloud_run(&in_project(&multi), cloud_run())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert_contains(
        &err.to_string(),
        &[
            "no --location was given",
            "target \"dev\" of profile \"shop\"",
            "`EU` is a BigQuery multi-region, not a Cloud Run region: pass --location",
        ],
    );
    // A DuckDB project does not discover: the default URL.
    let duckdb = tempfile::tempdir().unwrap();
    write_files(
        duckdb.path(),
        &[
            ("dbt_project.yml", "name: d\nprofile: d\n"),
            (
                "profiles.yml",
                "d:\n  target: dev\n  outputs:\n    dev: {type: duckdb, path: x}\n",
            ),
        ],
    );
    let settings = in_project(&duckdb);
    assert!(!dbt_remote_core::connect::discovers(&settings));
    let fixed = locator_on_cloud_run(&settings, cloud_run()).await.unwrap();
    assert_eq!(fixed.locate().await.unwrap(), "http://127.0.0.1:8001");
}

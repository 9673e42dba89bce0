//! The Cloud Run locator against a fake Cloud Run Admin API and a fake dbt-server `/check`,
//! both on 127.0.0.1.
#![cfg(feature = "gcp")]

use dbt_remote_core::config::{ConfigFile, Overrides, Settings};
use dbt_remote_core::connect::locator_on_cloud_run;
use dbt_remote_core::locator::CloudRunLocatorBuilder;
use dbt_remote_core::locator::{CloudRunLocator, ServerLocator};
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
            "is a multi-region BigQuery location",
            "Cloud Run needs a region such as",
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

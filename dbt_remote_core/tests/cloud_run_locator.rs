//! The Cloud Run locator against a fake Cloud Run Admin API and a fake dbt-server `/check`,
//! both on 127.0.0.1.
#![cfg(feature = "gcp")]

use dbt_remote_core::config::{ConfigFile, Overrides, Settings};
use dbt_remote_core::connect::locator_on_cloud_run;
use dbt_remote_core::locator::{CloudRunLocator, ServerLocator};
use dbt_remote_core::Error;
use serde_json::json;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SERVICES: &str = "/v2/projects/p/locations/europe-west1/services";

fn locator(api: &MockServer) -> dbt_remote_core::locator::CloudRunLocatorBuilder {
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

fn google_error(code: u16, status: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({
        "error": {"code": code, "message": message, "status": status}
    }))
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
    let dbt_server = MockServer::start().await;
    mount_check(&dbt_server).await;
    Mock::given(method("GET"))
        .and(path(
            "/v2/projects/shop-dev/locations/europe-west1/services",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "services": [service("dbt-server", &dbt_server.uri(), true)]
        })))
        .expect(1)
        .mount(&api)
        .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dbt_project.yml"),
        "name: shop\nprofile: shop\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("profiles.yml"),
        "shop:\n  target: dev\n  outputs:\n    dev:\n      type: bigquery\n      method: oauth\n      project: shop-dev\n      dataset: analytics\n      location: EU\n",
    )
    .unwrap();
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
    Mock::given(method("GET"))
        .and(path(SERVICES))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "services": [service("web", "http://127.0.0.1:9", false)]
        })))
        .mount(&api)
        .await;
    let err = locator(&api)
        .build()
        .await
        .unwrap()
        .locate()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("--labels dbt-remote=server"), "{err}");
    assert!(err.contains("--server-url"), "{err}");
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
        let err = err.to_string();
        assert!(err.contains("is a multi-region BigQuery location"), "{err}");
        assert!(err.contains("Cloud Run needs a region such as"), "{err}");
        assert!(err.contains("pass --location"), "{err}");
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
    Mock::given(method("GET"))
        .and(path("/v2/projects/p/locations/europe-west9/services"))
        .respond_with(google_error(
            404,
            "NOT_FOUND",
            "Location europe-west9 not found.",
        ))
        .expect(1)
        .mount(&api)
        .await;
    let err = locator(&api)
        .with_location("europe-west9")
        .build()
        .await
        .unwrap()
        .locate()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "not found listing the Cloud Run services of projects/p/locations/europe-west9"
        ),
        "{err}"
    );
    assert!(err.contains("--location"), "{err}");
    assert!(err.contains("Location europe-west9 not found"), "{err}");
}

#[tokio::test]
async fn permission_denied_names_the_permission() {
    let api = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(SERVICES))
        .respond_with(google_error(
            403,
            "PERMISSION_DENIED",
            "Permission 'run.services.list' denied on resource 'projects/p/locations/europe-west1'.",
        ))
        .mount(&api)
        .await;
    let err = locator(&api)
        .build()
        .await
        .unwrap()
        .locate()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("permission denied listing the Cloud Run services"),
        "{err}"
    );
    assert!(err.contains("run.services.list"), "{err}");
    assert!(err.contains("roles/run.viewer"), "{err}");
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
    let dbt_server = MockServer::start().await;
    mount_check(&dbt_server).await;
    Mock::given(method("GET"))
        .and(path(SERVICES))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "services": [service("dbt-server", &dbt_server.uri(), true)]
        })))
        .expect(1)
        .mount(&api)
        .await;
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

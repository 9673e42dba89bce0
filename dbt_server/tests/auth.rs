//! Authentication on the HTTP API: a static token and Google ID tokens (signed by a key
//! generated for this run, served through a JWKS endpoint on 127.0.0.1), over every route
//! group of both protocols.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::InProcess;
use dbt_remote_core::auth::{ClientAuth, Verifier};
use dbt_remote_core::testing::auth::{google_claims, jwks, key};
use dbt_remote_core::testing::sample_job;
use dbt_remote_core::{BlobHash, Client, Error};
use serde_json::Value;
use warp::Filter;

const TOKEN: &str = "s3cret-token";
const AUDIENCE: &str = "https://dbt.example.test";
const EMAIL: &str = "runner@test-project.iam.gserviceaccount.com";

async fn with_static_token() -> InProcess {
    InProcess::start_with(4096, |c| {
        c.auth = Verifier::builder().with_token(TOKEN).build().unwrap();
    })
    .await
}

/// A JWKS endpoint on 127.0.0.1 serving key 0; returns its URL and a hit counter.
async fn jwks_endpoint() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let route = warp::path!("oauth2" / "v3" / "certs").map({
        let hits = hits.clone();
        move || {
            hits.fetch_add(1, Ordering::SeqCst);
            warp::reply::json(&jwks(&[key(0)]))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (format!("http://{addr}/oauth2/v3/certs"), hits)
}

async fn with_google(jwks_url: &str, allowed: &[&str]) -> InProcess {
    let verifier = Verifier::builder()
        .with_google_id_tokens(format!("{AUDIENCE}/"))
        .with_jwks_url(jwks_url)
        .with_allowed_emails(allowed.iter().map(|e| e.to_string()))
        .build()
        .unwrap();
    InProcess::start_with(4096, |c| c.auth = verifier).await
}

/// Every protected route group: (method, path, whether it is of the 0.4.6 protocol).
fn protected_routes(job: &str) -> Vec<(&'static str, String, bool)> {
    let blob = BlobHash::of(b"x").to_string();
    let mut routes: Vec<(&str, String, bool)> = vec![
        ("GET", "/api/v1/openapi.json".into(), false),
        ("POST", "/api/v1/blobs/missing".into(), false),
        ("PUT", format!("/api/v1/blobs/{blob}"), false),
        ("POST", "/api/v1/jobs".into(), false),
        ("GET", "/api/v1/jobs".into(), false),
        ("GET", format!("/api/v1/jobs/{job}"), false),
        ("POST", format!("/api/v1/jobs/{job}/cancel"), false),
        ("GET", format!("/api/v1/jobs/{job}/logs"), false),
        ("GET", format!("/api/v1/jobs/{job}/logs/stream"), false),
        ("GET", format!("/api/v1/jobs/{job}/artifacts"), false),
        (
            "GET",
            format!("/api/v1/jobs/{job}/artifacts/manifest.json"),
            false,
        ),
        ("POST", "/api/v1/schedules".into(), false),
        ("GET", "/api/v1/schedules".into(), false),
        ("GET", "/api/v1/schedules/nightly".into(), false),
        ("DELETE", "/api/v1/schedules/nightly".into(), false),
        ("POST", "/api/v1/schedules/nightly/run".into(), false),
        ("GET", "/no/such/route".into(), false),
        ("POST", "/dbt".into(), true),
        ("GET", format!("/job/{job}"), true),
        ("GET", format!("/job/{job}/logs"), true),
        ("GET", format!("/job/{job}/last_logs"), true),
        ("GET", "/schedule".into(), true),
        ("POST", "/schedule".into(), true),
        ("DELETE", "/schedule/nightly".into(), true),
        ("POST", "/schedule/nightly/start".into(), true),
    ];
    // The methods of the public routes other than GET are not public.
    routes.push(("POST", "/health".into(), false));
    routes
}

async fn call(url: &str, method: &str, path: &str, auth: Option<&str>) -> reqwest::Response {
    let http = reqwest::Client::new();
    let mut request = http.request(method.parse().unwrap(), format!("{url}{path}"));
    if let Some(value) = auth {
        request = request.header("authorization", value);
    }
    request.send().await.unwrap()
}

/// `GET /api/v1/jobs` with `authorization`.
async fn list_jobs(url: &str, authorization: &str) -> reqwest::Response {
    call(url, "GET", "/api/v1/jobs", Some(authorization)).await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A job stored in `s`: its id.
async fn stored_job(s: &InProcess) -> String {
    let job = s.store.create_job(&sample_job()).await.unwrap();
    job.id.to_string()
}

/// A 401 in the body shape of the route's protocol, with WWW-Authenticate and no job data.
async fn assert_refused(
    response: reqwest::Response,
    legacy: bool,
    job: &str,
    what: &str,
) -> String {
    assert_eq!(response.status().as_u16(), 401, "{what}");
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer"),
        "{what}"
    );
    let text = response.text().await.unwrap();
    assert!(!text.contains(job), "{what} leaks the job: {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    if legacy {
        body["detail"].as_str().expect(what).to_string()
    } else {
        assert_eq!(body["error"]["code"], "unauthenticated", "{what}: {body}");
        body["error"]["message"].as_str().expect(what).to_string()
    }
}

#[tokio::test]
async fn a_static_token_guards_every_route_but_health_check_and_version() {
    let s = with_static_token().await;
    let job = stored_job(&s).await;
    for path in ["/health", "/check", "/version"] {
        let response = call(&s.url, "GET", path, None).await;
        assert_eq!(response.status().as_u16(), 200, "{path}");
    }
    for (method, path, legacy) in protected_routes(&job) {
        let what = format!("{method} {path}");
        let missing = call(&s.url, method, &path, None).await;
        let message = assert_refused(missing, legacy, &job, &what).await;
        assert!(
            message.contains("requires credentials"),
            "{what}: {message}"
        );
        for wrong in [
            "Bearer not-the-token",
            &format!("Bearer {TOKEN}x"),
            &format!("Basic {TOKEN}"),
            "Bearer",
            TOKEN,
        ] {
            let response = call(&s.url, method, &path, Some(wrong)).await;
            assert_refused(response, legacy, &job, &format!("{what} with {wrong:?}")).await;
        }
        let right = call(&s.url, method, &path, Some(&bearer(TOKEN))).await;
        assert_ne!(right.status().as_u16(), 401, "{what}");
        assert!(right.headers().get("www-authenticate").is_none(), "{what}");
    }
    // With the token the routes answer as usual.
    let listed = list_jobs(&s.url, &format!("bearer {TOKEN}")).await;
    assert_eq!(listed.status().as_u16(), 200);
    assert!(listed.text().await.unwrap().contains(&job));
}

#[tokio::test]
async fn a_header_that_is_not_text_is_refused() {
    let s = with_static_token().await;
    let value = reqwest::header::HeaderValue::from_bytes(b"Bearer \xffs3cret").unwrap();
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/jobs", s.url))
        .header("authorization", value)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
}

#[tokio::test]
async fn the_client_sends_the_token_and_names_a_refusal() {
    let s = with_static_token().await;
    let client = Client::new(&s.url)
        .unwrap()
        .with_auth(ClientAuth::static_token(TOKEN));
    assert!(client.jobs(None, None, None).await.unwrap().jobs.is_empty());
    let err = Client::new(&s.url)
        .unwrap()
        .jobs(None, None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthenticated(_)), "{err}");
    // /health stays open, also without credentials.
    assert_eq!(
        Client::new(&s.url).unwrap().health().await.unwrap().status,
        "ok"
    );
}

#[tokio::test]
async fn google_id_tokens_are_checked_against_the_jwks() {
    let (jwks_url, hits) = jwks_endpoint().await;
    let s = with_google(&jwks_url, &[]).await;
    let job = stored_job(&s).await;
    let valid = bearer(&key(0).sign(&google_claims(AUDIENCE, EMAIL, 3600)));
    for (method, path, _) in [
        ("GET", "/api/v1/jobs".to_string(), false),
        ("GET", format!("/api/v1/jobs/{job}"), false),
        ("GET", "/schedule".to_string(), true),
    ] {
        let response = call(&s.url, method, &path, Some(&valid)).await;
        assert_eq!(response.status().as_u16(), 200, "{method} {path}");
    }
    // The audience may carry a trailing slash too.
    let slash = bearer(&key(0).sign(&google_claims(&format!("{AUDIENCE}/"), EMAIL, 3600)));
    assert_eq!(list_jobs(&s.url, &slash).await.status(), 200);

    let mut wrong_issuer = google_claims(AUDIENCE, EMAIL, 3600);
    wrong_issuer["iss"] = "https://issuer.example.test".into();
    let cases = [
        (
            "wrong audience",
            key(0).sign(&google_claims("https://other.example.test", EMAIL, 3600)),
            "another audience",
        ),
        (
            "wrong issuer",
            key(0).sign(&wrong_issuer),
            "not issued by Google",
        ),
        (
            "expired",
            key(0).sign(&google_claims(AUDIENCE, EMAIL, -600)),
            "expired",
        ),
        (
            "bad signature",
            key(1)
                .with_kid(&key(0).kid)
                .sign(&google_claims(AUDIENCE, EMAIL, 3600)),
            "signature",
        ),
        (
            "unknown kid",
            key(1).sign(&google_claims(AUDIENCE, EMAIL, 3600)),
            "unknown key",
        ),
        ("not a JWT", "a.b.c".to_string(), "not valid"),
    ];
    for (what, token, expected) in cases {
        for (path, legacy) in [("/api/v1/jobs", false), ("/schedule", true)] {
            let response = call(&s.url, "GET", path, Some(&bearer(&token))).await;
            let message = assert_refused(response, legacy, &job, what).await;
            assert!(message.contains(expected), "{what}: {message}");
        }
    }
    // Keys are cached: one fetch, as the unknown kid came right after it.
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_allow_list_limits_google_accounts() {
    let (jwks_url, _) = jwks_endpoint().await;
    let s = with_google(&jwks_url, &[EMAIL]).await;
    let ok = key(0).sign(&google_claims(AUDIENCE, EMAIL, 3600));
    let response = list_jobs(&s.url, &bearer(&ok)).await;
    assert_eq!(response.status().as_u16(), 200);
    let other = key(0).sign(&google_claims(AUDIENCE, "someone@example.test", 3600));
    let response = list_jobs(&s.url, &bearer(&other)).await;
    let message = assert_refused(response, false, "-", "other account").await;
    assert!(message.contains("someone@example.test"), "{message}");
}

#[tokio::test]
async fn unreachable_keys_fail_closed() {
    // Nothing listens on port 9: the request must not reach the route.
    let s = with_google("http://127.0.0.1:9/certs", &[]).await;
    let token = key(0).sign(&google_claims(AUDIENCE, EMAIL, 3600));
    let response = list_jobs(&s.url, &bearer(&token)).await;
    assert_eq!(response.status().as_u16(), 500);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "internal");
    assert!(body.get("jobs").is_none());
}

/// What a Cloud Scheduler job sends to run its schedule: `POST /api/v1/schedules/{name}/run`
/// with an OIDC token of the scheduler's service account for the server's URL, and the
/// occurrence in `X-CloudScheduler-ScheduleTime`. With Google ID tokens checked and only that
/// account allowed, the call runs the schedule; without a token, with another account's or
/// with a token for another audience it is refused and submits nothing.
#[tokio::test]
async fn cloud_schedulers_oidc_call_runs_the_schedule_and_nothing_else_does() {
    const SCHEDULER: &str = "dbt-scheduler@test-project.iam.gserviceaccount.com";
    let (jwks_url, _) = jwks_endpoint().await;
    let s = with_google(&jwks_url, &[SCHEDULER]).await;
    let token =
        |audience: &str, email: &str| bearer(&key(0).sign(&google_claims(audience, email, 3600)));
    let scheduler = token(AUDIENCE, SCHEDULER);
    let http = reqwest::Client::new();
    let model = b"select 1 as id\n";
    let put = http
        .put(format!("{}/api/v1/blobs/{}", s.url, BlobHash::of(model)))
        .header("authorization", &scheduler)
        .header("content-type", "application/octet-stream")
        .body(&model[..])
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let created = http
        .post(format!("{}/api/v1/schedules", s.url))
        .header("authorization", &scheduler)
        .json(&serde_json::json!({
            "name": "minutely",
            "cron": "* * * * *",
            "args": ["build"],
            "files": [{"path": "models/a.sql", "sha256": BlobHash::of(model).to_string()}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        created.status().as_u16(),
        201,
        "{}",
        created.text().await.unwrap()
    );
    let now = chrono::Utc::now();
    let minute = now.format("%Y-%m-%dT%H:%M:00Z").to_string();
    let run = |authorization: Option<String>| {
        let mut request = http
            .post(format!("{}/api/v1/schedules/minutely/run", s.url))
            .header("X-CloudScheduler-ScheduleTime", &minute);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send()
    };
    for refused in [
        None,
        Some(token(AUDIENCE, "someone@example.test")),
        Some(token("https://elsewhere.example.test", SCHEDULER)),
    ] {
        let response = run(refused).await.unwrap();
        assert_eq!(response.status().as_u16(), 401);
    }
    assert!(
        s.launcher.launched().is_empty(),
        "a refused call submitted a job"
    );
    let response = run(Some(scheduler.clone())).await.unwrap();
    assert_eq!(response.status().as_u16(), 201);
    assert_eq!(s.launcher.launched().len(), 1);
    // Cloud Scheduler retrying the same occurrence does not run it again.
    let response = run(Some(scheduler)).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(s.launcher.launched().len(), 1);
}

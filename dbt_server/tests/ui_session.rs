//! The web UI's browser session against a real server on 127.0.0.1: `POST /ui/login` sets
//! the `dbt_remote_session` cookie, the gate accepts it where a header is absent, and the
//! attacks a cookie invites are refused (another site's page posting with it, a token in a
//! URL, a wrong or expired cookie). docs/security.md lists the rules with these tests' names.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::InProcess;
use dbt_remote_core::auth::Verifier;
use dbt_remote_core::testing::auth::{google_claims, jwks, key};
use dbt_remote_core::testing::{all_jobs, sample_job};
use dbt_remote_core::{JobStatus, RelPath, StateStore};
use reqwest::{Client, RequestBuilder, Response};
use serde_json::{json, Value};
use warp::Filter;

const TOKEN: &str = "s3cret-ui-token";
const EVIL: &str = "https://evil.example";
const COOKIE: &str = "dbt_remote_session";

async fn with_token() -> InProcess {
    InProcess::start_with(1024 * 1024, |c| {
        c.auth = Verifier::builder().with_token(TOKEN).build().unwrap();
    })
    .await
}

fn http() -> Client {
    Client::new()
}

/// `POST /ui/login` of the JSON body `{"token": token}`, with `headers`.
fn login(s: &InProcess, token: &str) -> RequestBuilder {
    http()
        .post(format!("{}/ui/login", s.url))
        .json(&json!({ "token": token }))
}

/// The answer's `Set-Cookie` values.
fn set_cookies(response: &Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// The one `Set-Cookie` of a login that succeeded.
async fn logged_in(response: Response) -> String {
    assert_eq!(
        response.status().as_u16(),
        204,
        "{:?}",
        response.text().await
    );
    let cookies = set_cookies(&response);
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    cookies[0].clone()
}

/// The attributes of a `Set-Cookie` value after its `name=value`.
fn attributes(set_cookie: &str) -> Vec<String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_string())
        .collect()
}

/// The `Cookie` a browser sends back for a `Set-Cookie`.
fn cookie_of(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

/// A native error answer: `status`, the `code`, no cookie set, no server path in the message.
async fn assert_error(response: Response, status: u16, code: &str) {
    assert_eq!(response.status().as_u16(), status);
    assert!(set_cookies(&response).is_empty(), "an error set a cookie");
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{body}");
    for leak in ["/tmp", "/root", "/work", "panicked", ".rs:", TOKEN] {
        assert!(!message.contains(leak), "{message:?} leaks {leak:?}");
    }
}

fn get(s: &InProcess, path: &str) -> RequestBuilder {
    http().get(format!("{}{path}", s.url))
}

#[tokio::test]
async fn login_sets_a_strict_httponly_cookie_that_the_api_then_accepts() {
    let s = with_token().await;
    let set = logged_in(login(&s, TOKEN).send().await.unwrap()).await;
    assert!(set.starts_with(&format!("{COOKIE}=")), "{set}");
    let attrs = attributes(&set);
    for wanted in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(attrs.iter().any(|a| a == wanted), "{wanted} missing: {set}");
    }
    assert!(
        !attrs.iter().any(|a| a == "Secure"),
        "Secure over http: {set}"
    );
    let cookie = cookie_of(&set);
    let jobs = get(&s, "/api/v1/jobs").header("cookie", &cookie);
    assert_eq!(jobs.send().await.unwrap().status().as_u16(), 200);
    // Among other cookies, as a browser sends them.
    let mixed = format!("theme=dark; {cookie}; other=\"x\"");
    let jobs = get(&s, "/api/v1/jobs").header("cookie", mixed);
    assert_eq!(jobs.send().await.unwrap().status().as_u16(), 200);
    // A form works as JSON does.
    let form = http()
        .post(format!("{}/ui/login", s.url))
        .form(&[("token", TOKEN)]);
    assert_eq!(logged_in(form.send().await.unwrap()).await, set);
    // No cookie, no access.
    let bare = get(&s, "/api/v1/jobs").send().await.unwrap();
    assert_error(bare, 401, "unauthenticated").await;
}

#[tokio::test]
async fn logout_clears_the_cookie() {
    let s = with_token().await;
    let out = http()
        .post(format!("{}/ui/logout", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status().as_u16(), 204);
    let cleared = set_cookies(&out);
    assert_eq!(cleared.len(), 1);
    assert!(
        cleared[0].starts_with(&format!("{COOKIE}=;")),
        "{cleared:?}"
    );
    let attrs = attributes(&cleared[0]);
    for wanted in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=0"] {
        assert!(attrs.iter().any(|a| a == wanted), "{wanted}: {cleared:?}");
    }
}

#[tokio::test]
async fn the_cookie_is_secure_when_the_request_is_https() {
    let s = with_token().await;
    let proxied = login(&s, TOKEN).header("x-forwarded-proto", "https");
    let set = logged_in(proxied.send().await.unwrap()).await;
    assert!(attributes(&set).contains(&"Secure".to_string()), "{set}");
    let public = InProcess::start_with(4096, |c| {
        c.auth = Verifier::builder().with_token(TOKEN).build().unwrap();
        c.public_url = Some("https://dbt.example.test/".into());
    })
    .await;
    let set = logged_in(login(&public, TOKEN).send().await.unwrap()).await;
    assert!(attributes(&set).contains(&"Secure".to_string()), "{set}");
    let out = http()
        .post(format!("{}/ui/logout", public.url))
        .send()
        .await
        .unwrap();
    assert!(set_cookies(&out)[0].ends_with("; Secure"));
}

#[tokio::test]
async fn a_wrong_token_or_a_bad_login_body_gets_a_4xx_and_no_cookie() {
    let s = with_token().await;
    let wrong = login(&s, "guess").send().await.unwrap();
    assert_error(wrong, 401, "unauthenticated").await;
    let url = format!("{}/ui/login", s.url);
    let post = |body: &'static str, content_type: &'static str| {
        http()
            .post(&url)
            .header("content-type", content_type)
            .body(body)
    };
    let json = "application/json";
    for body in [
        "",
        "{}",
        "[]",
        "not json",
        r#"{"token": 1}"#,
        r#"{"token": " "}"#,
    ] {
        assert_error(post(body, json).send().await.unwrap(), 400, "invalid_input").await;
    }
    let unknown = post(r#"{"token": "s3cret-ui-token", "admin": true}"#, json);
    assert_error(unknown.send().await.unwrap(), 400, "invalid_input").await;
    let text = post("token=s3cret-ui-token", "text/plain");
    assert_error(text.send().await.unwrap(), 415, "unsupported_media_type").await;
    let huge = format!(r#"{{"token": "{}"}}"#, "a".repeat(64 * 1024));
    let huge = http().post(&url).header("content-type", json).body(huge);
    assert_error(huge.send().await.unwrap(), 413, "too_large").await;
    let method = http().get(&url).send().await.unwrap();
    assert_eq!(method.status().as_u16(), 405);
}

#[tokio::test]
async fn a_wrong_cookie_is_refused_like_a_wrong_header_and_a_header_wins() {
    let s = with_token().await;
    let by_header = get(&s, "/api/v1/jobs")
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    let by_cookie = get(&s, "/api/v1/jobs")
        .header("cookie", format!("{COOKIE}=guess"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_header.status(), by_cookie.status());
    assert_eq!(by_cookie.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        by_header.json::<Value>().await.unwrap(),
        by_cookie.json::<Value>().await.unwrap()
    );
    for junk in [
        format!("{COOKIE}=%zz"),
        COOKIE.to_string(),
        format!("{COOKIE}="),
        "a=b; c".to_string(),
    ] {
        let answer = get(&s, "/api/v1/jobs").header("cookie", &junk);
        assert_error(answer.send().await.unwrap(), 401, "unauthenticated").await;
    }
    // A wrong header is not rescued by a good cookie.
    let both = get(&s, "/api/v1/jobs")
        .bearer_auth("guess")
        .header("cookie", format!("{COOKIE}={TOKEN}"));
    assert_error(both.send().await.unwrap(), 401, "unauthenticated").await;
    // A stale session cookie before a good one does not lock the browser out.
    let stale = get(&s, "/api/v1/jobs").header("cookie", format!("{COOKIE}=old; {COOKIE}={TOKEN}"));
    assert_eq!(stale.send().await.unwrap().status().as_u16(), 200);
}

/// A JWKS endpoint on 127.0.0.1 serving key 0: its URL.
async fn jwks_endpoint() -> String {
    let route = warp::path!("certs").map(|| warp::reply::json(&jwks(&[key(0)])));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    format!("http://{addr}/certs")
}

#[tokio::test]
async fn an_id_token_session_ends_with_the_token_and_an_expired_one_is_refused() {
    const AUDIENCE: &str = "https://dbt.example.test";
    let verifier = Verifier::builder()
        .with_google_id_tokens(AUDIENCE)
        .with_jwks_url(jwks_endpoint().await)
        .build()
        .unwrap();
    let s = InProcess::start_with(4096, |c| c.auth = verifier).await;
    let email = "viewer@example.test";
    let fresh = key(0).sign(&google_claims(AUDIENCE, email, 600));
    let set = logged_in(login(&s, &fresh).send().await.unwrap()).await;
    let age: u64 = set
        .split("Max-Age=")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no Max-Age: {set}"));
    assert!(
        (560..=600).contains(&age),
        "the session outlives the token: {set}"
    );
    let jobs = get(&s, "/api/v1/jobs").header("cookie", cookie_of(&set));
    assert_eq!(jobs.send().await.unwrap().status().as_u16(), 200);
    let expired = key(0).sign(&google_claims(AUDIENCE, email, -600));
    assert_error(
        login(&s, &expired).send().await.unwrap(),
        401,
        "unauthenticated",
    )
    .await;
    let answer = get(&s, "/api/v1/jobs").header("cookie", format!("{COOKIE}={expired}"));
    assert_error(answer.send().await.unwrap(), 401, "unauthenticated").await;
}

#[tokio::test]
async fn with_auth_off_the_cookie_is_ignored_and_login_sets_none() {
    let s = InProcess::start(4096).await;
    let jobs = get(&s, "/api/v1/jobs").header("cookie", format!("{COOKIE}=anything"));
    assert_eq!(jobs.send().await.unwrap().status().as_u16(), 200);
    let answer = login(&s, "anything").send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 204);
    assert!(set_cookies(&answer).is_empty());
}

#[tokio::test]
async fn a_token_in_the_url_is_never_accepted() {
    let s = with_token().await;
    let job = s.store.create_job(&sample_job()).await.unwrap().id;
    for path in [
        format!("/api/v1/jobs?token={TOKEN}"),
        format!("/api/v1/jobs?access_token={TOKEN}"),
        format!("/api/v1/jobs/{job}?access_token={TOKEN}"),
        format!("/api/v1/jobs/{job}/logs/stream?token={TOKEN}"),
        format!("/api/v1/jobs/{job}/artifacts/index.html?access_token={TOKEN}"),
        format!("/job/{job}?token={TOKEN}"),
    ] {
        let answer = get(&s, &path).send().await.unwrap();
        assert_eq!(answer.status().as_u16(), 401, "{path}");
    }
    let by_query = http()
        .post(format!("{}/ui/login?token={TOKEN}", s.url))
        .send()
        .await
        .unwrap();
    assert_error(by_query, 400, "invalid_input").await;
    let both = http()
        .post(format!("{}/ui/login?token={TOKEN}", s.url))
        .json(&json!({ "token": TOKEN }));
    assert_error(both.send().await.unwrap(), 400, "invalid_input").await;
}

/// A session cookie for `s`.
async fn session(s: &InProcess) -> String {
    cookie_of(&logged_in(login(s, TOKEN).send().await.unwrap()).await)
}

async fn status_of(s: &InProcess, job: dbt_remote_core::JobId) -> JobStatus {
    s.store.get_job(job).await.unwrap().status
}

#[tokio::test]
async fn another_sites_page_cannot_post_with_the_cookie() {
    let s = with_token().await;
    let cookie = session(&s).await;
    let job = s.store.create_job(&sample_job()).await.unwrap().id;
    let cancel = format!("{}/api/v1/jobs/{job}/cancel", s.url);
    let cross_site: [(&str, &str); 3] = [
        ("origin", EVIL),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
    ];
    for (name, value) in cross_site {
        let refused = http()
            .post(&cancel)
            .header("cookie", &cookie)
            .header(name, value);
        assert_error(refused.send().await.unwrap(), 403, "forbidden").await;
        let submit = http()
            .post(format!("{}/api/v1/jobs", s.url))
            .header("cookie", &cookie)
            .header(name, value)
            .json(&json!({ "args": ["build"] }));
        assert_error(submit.send().await.unwrap(), 403, "forbidden").await;
        let login = login(&s, TOKEN).header(name, value);
        assert_error(login.send().await.unwrap(), 403, "forbidden").await;
        let logout = http()
            .post(format!("{}/ui/logout", s.url))
            .header("cookie", &cookie)
            .header(name, value);
        assert_error(logout.send().await.unwrap(), 403, "forbidden").await;
    }
    assert_eq!(status_of(&s, job).await, JobStatus::Queued);
    assert_eq!(
        all_jobs(&*s.store).await.len(),
        1,
        "a refused submit stored a job"
    );
    // The cookie alone is enough from the server's own page: the guard is what refused.
    let own = http()
        .post(&cancel)
        .header("cookie", &cookie)
        .header("origin", &s.url)
        .header("sec-fetch-site", "same-origin");
    assert_eq!(own.send().await.unwrap().status().as_u16(), 202);
    assert_ne!(status_of(&s, job).await, JobStatus::Queued);
}

#[tokio::test]
async fn the_ui_shell_is_public_and_everything_with_data_is_not() {
    let s = with_token().await;
    // The UI's shell and assets (dbt_server/src/ui.rs) answer 200, neither 401 nor 403,
    // also when another site links to them.
    for path in ["/", "/ui/jobs/x", "/ui/assets/app.js"] {
        let answer = get(&s, path).header("sec-fetch-site", "cross-site");
        assert_eq!(
            answer.send().await.unwrap().status().as_u16(),
            200,
            "{path}"
        );
    }
    for (method, path) in [
        ("POST", "/"),
        ("POST", "/ui/jobs/x"),
        ("DELETE", "/ui/login"),
        ("GET", "/ui"),
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/ui/x"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let answer = http()
            .request(method.clone(), format!("{}{path}", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 401, "{method} {path}");
    }
}

#[tokio::test]
async fn ui_answers_and_html_artifacts_carry_security_headers() {
    let s = with_token().await;
    let answer = login(&s, TOKEN).send().await.unwrap();
    let headers = answer.headers();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let cookie = session(&s).await;
    let job = s.store.create_job(&sample_job()).await.unwrap().id;
    let put = |name: &str, body: &'static [u8]| {
        let store: Arc<dyn StateStore> = s.store.clone();
        let name = RelPath::new(name).unwrap();
        async move {
            store
                .put_artifact(job, &name, Bytes::from_static(body))
                .await
                .unwrap()
        }
    };
    put("index.html", b"<html><script>1</script></html>").await;
    put("manifest.json", b"{}").await;
    let artifact = |name: &str| {
        get(&s, &format!("/api/v1/jobs/{job}/artifacts/{name}")).header("cookie", &cookie)
    };
    let html = artifact("index.html").send().await.unwrap();
    assert_eq!(html.status().as_u16(), 200);
    let csp = html.headers()["content-security-policy"].to_str().unwrap();
    for rule in [
        "default-src 'self'",
        "connect-src 'self'",
        "form-action 'none'",
    ] {
        assert!(csp.contains(rule), "{rule} missing: {csp}");
    }
    assert_eq!(html.headers()["x-content-type-options"], "nosniff");
    let json = artifact("manifest.json").send().await.unwrap();
    assert_eq!(json.headers()["x-content-type-options"], "nosniff");
    assert!(json.headers().get("content-security-policy").is_none());
}

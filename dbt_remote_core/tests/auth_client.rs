//! The client's credentials against a local token endpoint and metadata server on 127.0.0.1:
//! the assertion JWT is verified with the key's public half, ID tokens are cached until
//! shortly before they expire, and every failure is a clear credential error.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dbt_remote_core::auth::{ClientAuth, Credentials};
use dbt_remote_core::testing::auth::{key, TestKey};
use dbt_remote_core::{Client, Error};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};
use warp::http::StatusCode;
use warp::Filter;

const EMAIL: &str = "runner@test-project.iam.gserviceaccount.com";
const AUDIENCE: &str = "https://dbt.example.test";

/// What the fake token endpoint answers.
#[derive(Clone, Copy)]
enum Answer {
    /// An ID token that expires in this many seconds.
    IdToken(i64),
    Status500,
    InvalidJson,
    NoIdToken,
}

/// A Google-like token endpoint on 127.0.0.1 that checks each assertion with the public key.
struct TokenEndpoint {
    uri: String,
    hits: Arc<AtomicUsize>,
    answer: Arc<Mutex<Answer>>,
    /// Why assertions were refused, if any were.
    refusals: Arc<Mutex<Vec<String>>>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Checks an assertion as Google does: signature by the key, and its claims.
fn check_assertion(key: &TestKey, uri: &str, assertion: &str) -> Result<(), String> {
    let (n, e) = key.public_components();
    let public = DecodingKey::from_rsa_components(n, e).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[uri]);
    validation.set_issuer(&[EMAIL]);
    let header = jsonwebtoken::decode_header(assertion).map_err(|e| e.to_string())?;
    if header.kid.as_deref() != Some(key.kid.as_str()) {
        return Err(format!("kid {:?}", header.kid));
    }
    let claims = jsonwebtoken::decode::<Value>(assertion, &public, &validation)
        .map_err(|e| e.to_string())?
        .claims;
    if claims["sub"] != EMAIL {
        return Err(format!("sub {}", claims["sub"]));
    }
    if claims["target_audience"] != AUDIENCE {
        return Err(format!("target_audience {}", claims["target_audience"]));
    }
    let (iat, exp) = (claims["iat"].as_i64(), claims["exp"].as_i64());
    match (iat, exp) {
        (Some(iat), Some(exp)) if exp - iat == 3600 && (iat - now()).abs() < 60 => Ok(()),
        _ => Err(format!("iat {iat:?} exp {exp:?}")),
    }
}

/// The OAuth client and refresh token of the test's gcloud user credentials.
const CLIENT_ID: &str = "764086051850-test.apps.googleusercontent.com";
const CLIENT_SECRET: &str = "d-FL95Q19q7MQmFpd7hHD0Ty";
const REFRESH_TOKEN: &str = "1//0g-test-refresh-token";

/// Checks a refresh-token grant as Google does: the client and the refresh token.
fn check_refresh(field: &dyn Fn(&str) -> String) -> Result<(), String> {
    for (name, want) in [
        ("client_id", CLIENT_ID),
        ("client_secret", CLIENT_SECRET),
        ("refresh_token", REFRESH_TOKEN),
    ] {
        if field(name) != want {
            return Err(format!("{name} {:?}", field(name)));
        }
    }
    Ok(())
}

/// gcloud's `application_default_credentials.json` for a user, with this token endpoint.
fn authorized_user_json(token_uri: &str) -> String {
    json!({
        "type": "authorized_user",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH_TOKEN,
        "account": "dev@example.com",
        "token_uri": token_uri,
        "universe_domain": "googleapis.com",
    })
    .to_string()
}

impl TokenEndpoint {
    async fn start(key: &'static TestKey) -> TokenEndpoint {
        let hits = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(Mutex::new(Answer::IdToken(3600)));
        let refusals = Arc::new(Mutex::new(Vec::new()));
        let uri = Arc::new(Mutex::new(String::new()));
        let route = warp::path("token")
            .and(warp::post())
            .and(warp::body::form::<Vec<(String, String)>>())
            .map({
                let (hits, answer, refusals, uri) =
                    (hits.clone(), answer.clone(), refusals.clone(), uri.clone());
                move |form: Vec<(String, String)>| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let field = |name: &str| {
                        form.iter()
                            .find(|(k, _)| k == name)
                            .map(|(_, v)| v.clone())
                            .unwrap_or_default()
                    };
                    let uri = uri.lock().unwrap().clone();
                    let grant = field("grant_type");
                    let checked = if grant == "refresh_token" {
                        check_refresh(&field)
                    } else if grant != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
                        Err(format!("grant_type {grant}"))
                    } else {
                        check_assertion(key, &uri, &field("assertion"))
                    };
                    if let Err(why) = checked {
                        refusals.lock().unwrap().push(why.clone());
                        let body = json!({"error": "invalid_grant", "error_description": why});
                        return warp::reply::with_status(
                            warp::reply::json(&body),
                            StatusCode::BAD_REQUEST,
                        )
                        .into_response();
                    }
                    match *answer.lock().unwrap() {
                        Answer::IdToken(exp_in) => {
                            let id = id_token(key, exp_in);
                            warp::reply::json(&json!({"id_token": id})).into_response()
                        }
                        Answer::Status500 => warp::reply::with_status(
                            "backend exploded",
                            StatusCode::INTERNAL_SERVER_ERROR,
                        )
                        .into_response(),
                        Answer::InvalidJson => "{not json".into_response(),
                        Answer::NoIdToken => {
                            warp::reply::json(&json!({"access_token": "x"})).into_response()
                        }
                    }
                }
            });
        let addr = serve(route).await;
        *uri.lock().unwrap() = format!("http://{addr}/token");
        let uri = uri.lock().unwrap().clone();
        TokenEndpoint {
            uri,
            hits,
            answer,
            refusals,
        }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// A client of a (nonexistent) server at AUDIENCE with a key file for this endpoint.
    fn auth(&self, dir: &std::path::Path) -> ClientAuth {
        let file = dir.join("key.json");
        std::fs::write(&file, key(0).service_account_json(EMAIL, &self.uri)).unwrap();
        ClientAuth::resolve(AUDIENCE, Some(&file), |_| None).unwrap()
    }
}

use warp::Reply;

async fn serve<F>(route: F) -> SocketAddr
where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: Reply,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    addr
}

/// An ID token as Google makes them, expiring in `exp_in` seconds.
fn id_token(key: &TestKey, exp_in: i64) -> String {
    key.sign(&dbt_remote_core::testing::auth::google_claims(
        AUDIENCE, EMAIL, exp_in,
    ))
}

#[tokio::test]
async fn a_key_file_gets_an_id_token_once_and_again_before_it_expires() {
    let endpoint = TokenEndpoint::start(key(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let auth = endpoint.auth(dir.path());
    assert!(auth.describe().contains(EMAIL));
    let first = auth.token().await.unwrap().expect("a token");
    assert!(endpoint.refusals.lock().unwrap().is_empty());
    assert_eq!(endpoint.hits(), 1);
    // Cached: the endpoint is not asked again, also not by a clone.
    assert_eq!(auth.token().await.unwrap().as_deref(), Some(first.as_str()));
    assert_eq!(auth.clone().token().await.unwrap(), Some(first.clone()));
    assert_eq!(endpoint.hits(), 1);

    // A token that expires within the refresh margin is fetched again at each use.
    let auth = endpoint.auth(dir.path());
    endpoint.set(Answer::IdToken(30));
    auth.token().await.unwrap();
    auth.token().await.unwrap();
    assert_eq!(endpoint.hits(), 3);
    endpoint.set(Answer::IdToken(3600));
    auth.token().await.unwrap();
    auth.token().await.unwrap();
    assert_eq!(endpoint.hits(), 4);
    assert!(
        endpoint.refusals.lock().unwrap().is_empty(),
        "{:?}",
        endpoint.refusals
    );
}

#[tokio::test]
async fn a_key_given_as_json_gets_id_tokens_for_the_servers_url() {
    let endpoint = TokenEndpoint::start(key(0)).await;
    let json = key(0).service_account_json(EMAIL, &endpoint.uri);
    let credentials = Credentials::key_json(&json).unwrap();
    assert!(!format!("{credentials:?}").contains("PRIVATE KEY"));
    let auth = credentials.for_server(&format!("{AUDIENCE}/")).unwrap();
    assert!(auth.describe().contains(EMAIL), "{}", auth.describe());
    assert!(auth.token().await.unwrap().is_some());
    assert!(
        endpoint.refusals.lock().unwrap().is_empty(),
        "{:?}",
        endpoint.refusals
    );
    // Another server is another audience (the endpoint expects AUDIENCE only).
    let other = credentials
        .for_server("https://other.example.test")
        .unwrap();
    assert!(other.token().await.is_err());
    let refusals = endpoint.refusals.lock().unwrap().clone();
    assert!(
        refusals.len() == 1 && refusals[0].contains("target_audience"),
        "{refusals:?}"
    );
}

#[tokio::test]
async fn a_wrong_key_is_refused_by_the_endpoint_with_a_clear_error() {
    let endpoint = TokenEndpoint::start(key(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key.json");
    // Key 1 signs, but the endpoint knows key 0's public half.
    std::fs::write(
        &file,
        key(1)
            .with_kid("test-key-0")
            .service_account_json(EMAIL, &endpoint.uri),
    )
    .unwrap();
    let auth = ClientAuth::resolve(AUDIENCE, Some(&file), |_| None).unwrap();
    let err = auth.token().await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Unauthenticated(_)), "{message}");
    assert!(message.contains(&endpoint.uri), "{message}");
    assert!(message.contains(EMAIL), "{message}");
    assert!(message.contains("invalid_grant"), "{message}");
    assert_eq!(endpoint.refusals.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn token_endpoint_failures_are_clear_errors_and_not_cached() {
    let endpoint = TokenEndpoint::start(key(0)).await;
    let dir = tempfile::tempdir().unwrap();
    let auth = endpoint.auth(dir.path());
    for (answer, expected) in [
        (Answer::Status500, "500"),
        (Answer::InvalidJson, "not the expected JSON"),
        (Answer::NoIdToken, "no id_token"),
    ] {
        endpoint.set(answer);
        let err = auth.token().await.unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Unauthenticated(_)), "{message}");
        assert!(message.contains(expected), "{message}");
        assert!(message.contains(&endpoint.uri), "{message}");
        assert!(message.contains(EMAIL), "{message}");
    }
    endpoint.set(Answer::IdToken(3600));
    assert!(auth.token().await.unwrap().is_some());
    assert_eq!(endpoint.hits(), 4);

    // Nothing listens on port 9.
    let file = dir.path().join("closed.json");
    std::fs::write(
        &file,
        key(0).service_account_json(EMAIL, "http://127.0.0.1:9/token"),
    )
    .unwrap();
    let auth = ClientAuth::resolve(AUDIENCE, Some(&file), |_| None).unwrap();
    let err = auth.token().await.unwrap_err().to_string();
    assert!(
        err.contains("127.0.0.1:9/token") && err.contains(EMAIL),
        "{err}"
    );
}

#[tokio::test]
async fn the_metadata_server_is_asked_for_the_servers_audience() {
    let hits = Arc::new(AtomicUsize::new(0));
    let route = warp::path!(
        "computeMetadata" / "v1" / "instance" / "service-accounts" / "default" / "identity"
    )
    .and(warp::get())
    .and(warp::header::optional::<String>("metadata-flavor"))
    .and(warp::query::<std::collections::HashMap<String, String>>())
    .map({
        let hits = hits.clone();
        move |flavor: Option<String>, q: std::collections::HashMap<String, String>| {
            hits.fetch_add(1, Ordering::SeqCst);
            let ok = flavor.as_deref() == Some("Google")
                && q.get("audience").map(String::as_str) == Some(AUDIENCE)
                && q.get("format").map(String::as_str) == Some("full");
            if ok {
                id_token(key(0), 3600).into_response()
            } else {
                warp::reply::with_status("bad request", StatusCode::BAD_REQUEST).into_response()
            }
        }
    });
    let addr = serve(route).await;
    let host = addr.to_string();
    let auth = ClientAuth::resolve(&format!("{AUDIENCE}/"), None, |var| {
        (var == "GCE_METADATA_HOST").then(|| host.clone())
    })
    .unwrap();
    let token = auth.token().await.unwrap().unwrap();
    assert_eq!(token.split('.').count(), 3);
    auth.token().await.unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 1, "cached");

    // Wrong audience: the fake answers 400, which is a clear error.
    let auth = ClientAuth::metadata_server(&addr.to_string(), "https://other.test").unwrap();
    let err = auth.token().await.unwrap_err().to_string();
    assert!(
        err.contains("metadata server") && err.contains("400"),
        "{err}"
    );
}

#[tokio::test]
async fn the_client_sends_the_bearer_and_a_refusal_is_unauthenticated() {
    let seen = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let route = warp::path("health")
        .and(warp::header::optional::<String>("authorization"))
        .map({
            let seen = seen.clone();
            move |auth: Option<String>| {
                seen.lock().unwrap().push(auth.clone());
                if auth.as_deref() == Some("Bearer s3cret") {
                    warp::reply::json(&json!({"status": "ok", "version": "test"})).into_response()
                } else {
                    let body =
                        json!({"error": {"code": "unauthenticated", "message": "bad token"}});
                    warp::reply::with_status(warp::reply::json(&body), StatusCode::UNAUTHORIZED)
                        .into_response()
                }
            }
        });
    let addr = serve(route).await;
    let url = format!("http://{addr}");
    let client = Client::new(&url)
        .unwrap()
        .with_auth(ClientAuth::static_token("s3cret"));
    assert_eq!(client.health().await.unwrap().status, "ok");
    let err = Client::new(&url).unwrap().health().await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::Unauthenticated(_)), "{message}");
    assert!(
        message.contains("bad token") && message.contains("no credentials"),
        "{message}"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Some("Bearer s3cret".to_string()), None]
    );
}

#[test]
fn https_server_urls_are_accepted() {
    let client = Client::new("https://dbt.example.test/").unwrap();
    assert_eq!(client.base_url(), "https://dbt.example.test");
}

#[tokio::test]
async fn gcloud_user_credentials_get_id_tokens_by_refresh_grant() {
    let endpoint = TokenEndpoint::start(key(0)).await;
    let config = tempfile::tempdir().unwrap();
    let adc = config.path().join("application_default_credentials.json");
    std::fs::write(&adc, authorized_user_json(&endpoint.uri)).unwrap();
    // Found where `gcloud auth application-default login` writes it, for an https server.
    let config_dir = config.path().display().to_string();
    let env = |var: &str| (var == "CLOUDSDK_CONFIG").then(|| config_dir.clone());
    let auth = ClientAuth::resolve(AUDIENCE, None, env).unwrap();
    assert!(
        auth.describe().contains("dev@example.com"),
        "{}",
        auth.describe()
    );
    let token = auth.token().await.unwrap().expect("a token");
    assert!(
        endpoint.refusals.lock().unwrap().is_empty(),
        "{:?}",
        endpoint.refusals
    );
    assert_eq!(auth.token().await.unwrap(), Some(token), "cached");
    assert_eq!(endpoint.hits(), 1);
    // Also as --credentials, and through GOOGLE_APPLICATION_CREDENTIALS.
    let by_flag = ClientAuth::resolve("http://127.0.0.1:1", Some(&adc), |_| None).unwrap();
    by_flag.token().await.unwrap().expect("a token");
    let path = adc.display().to_string();
    let by_env = ClientAuth::resolve(AUDIENCE, None, |var: &str| {
        (var == "GOOGLE_APPLICATION_CREDENTIALS").then(|| path.clone())
    })
    .unwrap();
    by_env.token().await.unwrap().expect("a token");
    assert_eq!(endpoint.hits(), 3);
    // No ADC file: the metadata server, as before; a plain http server: nothing.
    let empty = tempfile::tempdir().unwrap();
    let empty_dir = empty.path().display().to_string();
    let none = ClientAuth::resolve(AUDIENCE, None, |var: &str| {
        (var == "CLOUDSDK_CONFIG").then(|| empty_dir.clone())
    })
    .unwrap();
    assert!(
        none.describe().contains("metadata server"),
        "{}",
        none.describe()
    );
    let plain = ClientAuth::resolve("http://127.0.0.1:1", None, env).unwrap();
    assert_eq!(plain.describe(), "no credentials");

    // A revoked refresh token or an answer without an ID token says what to do.
    std::fs::write(
        &adc,
        authorized_user_json(&endpoint.uri).replace(REFRESH_TOKEN, "revoked"),
    )
    .unwrap();
    let err = ClientAuth::resolve(AUDIENCE, Some(&adc), |_| None)
        .unwrap()
        .token()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthenticated(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("gcloud auth application-default login"),
        "{err}"
    );
    std::fs::write(&adc, authorized_user_json(&endpoint.uri)).unwrap();
    endpoint.set(Answer::NoIdToken);
    let err = ClientAuth::resolve(AUDIENCE, Some(&adc), |_| None)
        .unwrap()
        .token()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no id_token"), "{err}");
    std::fs::write(&adc, r#"{"type": "authorized_user", "client_id": "x"}"#).unwrap();
    let err = ClientAuth::resolve(AUDIENCE, Some(&adc), |_| None).unwrap_err();
    assert!(
        err.to_string()
            .contains("not a complete authorized_user file"),
        "{err}"
    );
}

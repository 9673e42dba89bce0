//! The client side: which bearer token to send, and getting it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;

use super::credentials::KeyJson;
use super::{init_jwt, unauthenticated, unix_now};
use crate::{env, Error, Result};

/// Google's OAuth token endpoint, for key files that do not name one.
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The metadata server of Compute Engine, Cloud Run and GKE (`GCE_METADATA_HOST` overrides it).
pub const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";

/// A token is refreshed this many seconds before it expires.
const REFRESH_MARGIN_SECS: u64 = 60;
/// Lifetime asked for the assertion JWT (Google's maximum).
const ASSERTION_LIFETIME_SECS: u64 = 3600;
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Where `gcloud auth application-default login` writes its credentials, under gcloud's
/// config folder (`CLOUDSDK_CONFIG`, default `~/.config/gcloud`).
pub const ADC_FILE_NAME: &str = "application_default_credentials.json";

/// The fields of the credentials `gcloud auth application-default login` writes (type
/// `authorized_user`): a user's OAuth refresh token and the OAuth client it was issued to.
#[derive(Clone, Deserialize)]
pub struct AuthorizedUser {
    pub client_id: String,
    pub client_secret: String,
    pub refresh_token: String,
    #[serde(default)]
    pub token_uri: Option<String>,
    /// The user's email, when gcloud recorded it (`account`).
    #[serde(default)]
    pub account: Option<String>,
}

impl fmt::Debug for AuthorizedUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizedUser")
            .field("client_id", &self.client_id)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// The fields dbt-remote uses of a Google service-account key file (the JSON file
/// `gcloud iam service-accounts keys create` writes).
#[derive(Clone, Deserialize)]
pub struct ServiceAccountKey {
    #[serde(rename = "type")]
    pub kind: String,
    pub client_email: String,
    pub private_key: String,
    #[serde(default)]
    pub private_key_id: Option<String>,
    #[serde(default)]
    pub token_uri: Option<String>,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// The credentials a [`Client`](crate::Client) sends: `Authorization: Bearer <token>` on every
/// request, or nothing. Cheap to clone; clones share the cached token.
///
/// ```
/// use dbt_remote_core::auth::ClientAuth;
///
/// // The local default: plain http to 127.0.0.1, no credentials and no metadata lookups.
/// let auth = ClientAuth::resolve("http://127.0.0.1:8001", None, |_| None)?;
/// assert_eq!(auth.describe(), "no credentials");
/// // A static token, for a server started with --auth-token-sha256.
/// let auth = ClientAuth::resolve("https://dbt.example.com", None, |var| {
///     (var == "DBT_REMOTE_TOKEN").then(|| "s3cret".to_string())
/// })?;
/// assert_eq!(auth.describe(), "the static token of DBT_REMOTE_TOKEN");
/// # Ok::<(), dbt_remote_core::Error>(())
/// ```
#[derive(Clone)]
pub struct ClientAuth {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    /// Made only for the sources that fetch tokens.
    http: Option<reqwest::Client>,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

enum Source {
    None,
    Static {
        token: String,
        /// Read from `DBT_REMOTE_TOKEN` (else given to the client).
        from_env: bool,
    },
    ServiceAccount {
        email: String,
        key_id: Option<String>,
        token_uri: String,
        signing_key: EncodingKey,
        audience: String,
    },
    Metadata {
        host: String,
        audience: String,
    },
    /// A user's gcloud credentials: ID tokens from a refresh-token grant. Their audience is
    /// the OAuth client, which Cloud Run IAM accepts (as for `gcloud auth
    /// print-identity-token`).
    AuthorizedUser {
        user: AuthorizedUser,
        token_uri: String,
        file: String,
    },
}

struct Cached {
    token: String,
    refresh_at: u64,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ClientAuth").field(&self.describe()).finish()
    }
}

impl Default for ClientAuth {
    fn default() -> Self {
        ClientAuth::none()
    }
}

impl ClientAuth {
    fn with_http(source: Source, http: Option<reqwest::Client>) -> Self {
        ClientAuth {
            inner: Arc::new(Inner {
                source,
                http,
                cached: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// For a source that fetches its tokens over HTTP.
    fn fetching(source: Source) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("dbt-remote/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                Error::backend(
                    "http",
                    format!("the HTTP client for tokens cannot start: {e}"),
                )
            })?;
        Ok(Self::with_http(source, Some(http)))
    }

    /// Sends no credentials.
    pub fn none() -> Self {
        Self::with_http(Source::None, None)
    }

    /// Sends `token` as it is (a server configured with a static token).
    pub fn static_token(token: impl Into<String>) -> Self {
        let token = token.into();
        Self::with_http(
            Source::Static {
                token,
                from_env: false,
            },
            None,
        )
    }

    /// Sends Google ID tokens for `audience` (the server URL), obtained with the credentials
    /// file at `key_file`: a service-account key, or a user's gcloud credentials (type
    /// `authorized_user`, written by `gcloud auth application-default login`).
    pub fn service_account_file(key_file: &Path, audience: &str) -> Result<Self> {
        let text = std::fs::read_to_string(key_file).map_err(|e| {
            unauthenticated(format!(
                "the credentials file {} cannot be read: {e}",
                key_file.display()
            ))
        })?;
        let file = format!("the credentials file {}", key_file.display());
        KeyJson::parse(&text)
            .map_err(|m| unauthenticated(format!("{file} {m}")))?
            .auth(audience, &file, &key_file.display().to_string())
    }

    /// Sends the ID tokens of a user's gcloud credentials (`file` names where they were read,
    /// for messages).
    pub fn authorized_user(user: AuthorizedUser, file: &str) -> Result<Self> {
        let token_uri = user
            .token_uri
            .clone()
            .unwrap_or_else(|| GOOGLE_TOKEN_URI.into());
        Self::fetching(Source::AuthorizedUser {
            user,
            token_uri,
            file: file.to_string(),
        })
    }

    /// Sends Google ID tokens for `audience`, obtained with `key`.
    pub fn service_account(key: ServiceAccountKey, audience: &str) -> Result<Self> {
        if key.kind != "service_account" {
            return Err(unauthenticated(format!(
                "it is of type {:?}, but only service-account keys (\"service_account\") and \
                 gcloud user credentials (\"authorized_user\") can get ID tokens; use one of \
                 those or DBT_REMOTE_TOKEN",
                key.kind
            )));
        }
        init_jwt();
        let signing_key = EncodingKey::from_rsa_pem(key.private_key.as_bytes()).map_err(|e| {
            unauthenticated(format!(
                "the private_key of {} is not a PEM RSA key: {e}",
                key.client_email
            ))
        })?;
        Self::fetching(Source::ServiceAccount {
            email: key.client_email,
            key_id: key.private_key_id,
            token_uri: key.token_uri.unwrap_or_else(|| GOOGLE_TOKEN_URI.into()),
            signing_key,
            audience: audience.to_string(),
        })
    }

    /// Sends Google ID tokens for `audience` asked of the metadata server at `host`
    /// (`host` or `host:port`), as on Compute Engine, Cloud Run and GKE.
    pub fn metadata_server(host: &str, audience: &str) -> Result<Self> {
        Self::fetching(Source::Metadata {
            host: host.to_string(),
            audience: audience.to_string(),
        })
    }

    /// The credentials for a server at `server_url`, from the process environment and the
    /// `creds_path` setting: see [`resolve`](Self::resolve).
    pub fn from_env(server_url: &str, creds_path: Option<&Path>) -> Result<Self> {
        Self::resolve(server_url, creds_path, |var| std::env::var(var).ok())
    }

    /// The credentials for a server at `server_url`, in this order:
    ///
    /// 1. `DBT_REMOTE_AUTH=none`: none.
    /// 2. `DBT_REMOTE_TOKEN`: that static token.
    /// 3. `creds_path`: ID tokens from that service-account key or gcloud user credentials file.
    /// 4. An `https://` server: ID tokens from Google's application default credentials file
    ///    when there is one (`GOOGLE_APPLICATION_CREDENTIALS`, else the one `gcloud auth
    ///    application-default login` writes in `CLOUDSDK_CONFIG` or `~/.config/gcloud`)...
    /// 5. ... else, or with `DBT_REMOTE_AUTH=metadata`: ID tokens from the metadata server
    ///    (`GCE_METADATA_HOST`, default `metadata.google.internal`).
    /// 6. Otherwise none: a plain `http://` server (the local default) gets no credentials and
    ///    no metadata lookup.
    ///
    /// The ID tokens' audience is `server_url` without a trailing `/`. Empty variables count
    /// as unset.
    pub fn resolve(
        server_url: &str,
        creds_path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        let mode = var(env::AUTH).unwrap_or_else(|| "auto".into());
        let audience = server_url.trim_end_matches('/');
        let (metadata, adc) = match mode.as_str() {
            "none" => return Ok(Self::none()),
            "auto" => (audience.starts_with("https://"), true),
            "metadata" => (true, false),
            other => {
                return Err(Error::invalid(format!(
                    "{}: expected auto, none or metadata, not {other:?}",
                    env::AUTH
                )))
            }
        };
        if let Some(token) = var(env::TOKEN) {
            let source = Source::Static {
                token,
                from_env: true,
            };
            return Ok(Self::with_http(source, None));
        }
        if let Some(path) = creds_path {
            return Self::service_account_file(path, audience);
        }
        if metadata && adc {
            if let Some(path) = adc_file(&var) {
                return Self::service_account_file(&path, audience);
            }
        }
        if metadata {
            let host = var(env::GCE_METADATA_HOST).unwrap_or_else(|| DEFAULT_METADATA_HOST.into());
            return Self::metadata_server(&host, audience);
        }
        Ok(Self::none())
    }

    /// What is sent, in words (never the secret itself).
    pub fn describe(&self) -> String {
        match &self.inner.source {
            Source::None => "no credentials".into(),
            Source::Static { from_env: true, .. } => {
                format!("the static token of {}", env::TOKEN)
            }
            Source::Static { .. } => "the static token given to the client".into(),
            Source::ServiceAccount { email, .. } => {
                format!("a Google ID token of {email} (service-account key file)")
            }
            Source::Metadata { host, .. } => {
                format!("a Google ID token from the metadata server {host}")
            }
            Source::AuthorizedUser { user, file, .. } => match &user.account {
                Some(account) => {
                    format!("a Google ID token of {account} (gcloud credentials {file})")
                }
                None => format!("a Google ID token of the gcloud credentials {file}"),
            },
        }
    }

    fn http(&self) -> Result<&reqwest::Client> {
        self.inner
            .http
            .as_ref()
            .ok_or_else(|| unauthenticated("no HTTP client to fetch tokens with"))
    }

    /// The bearer token to send now, `None` for no credentials. ID tokens are cached and
    /// fetched again shortly before they expire.
    pub async fn token(&self) -> Result<Option<String>> {
        match &self.inner.source {
            Source::None => return Ok(None),
            Source::Static { token, .. } => return Ok(Some(token.clone())),
            Source::ServiceAccount { .. }
            | Source::Metadata { .. }
            | Source::AuthorizedUser { .. } => {}
        }
        // Held while fetching, so concurrent requests wait for one fetch.
        let mut cached = self.inner.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if unix_now() < c.refresh_at {
                return Ok(Some(c.token.clone()));
            }
        }
        let token = match &self.inner.source {
            Source::ServiceAccount {
                email,
                key_id,
                token_uri,
                signing_key,
                audience,
            } => {
                self.exchange(email, key_id.clone(), token_uri, signing_key, audience)
                    .await?
            }
            Source::Metadata { host, audience } => self.metadata_token(host, audience).await?,
            Source::AuthorizedUser {
                user, token_uri, ..
            } => self.refresh(user, token_uri).await?,
            Source::None | Source::Static { .. } => unreachable!("handled above"),
        };
        let exp = expiry(&token).ok_or_else(|| {
            unauthenticated(format!(
                "{} gave an ID token that is not a JWT with an exp claim",
                self.describe()
            ))
        })?;
        *cached = Some(Cached {
            token: token.clone(),
            refresh_at: exp.saturating_sub(REFRESH_MARGIN_SECS),
        });
        Ok(Some(token))
    }

    /// Signs an assertion with the key and exchanges it at the token endpoint for an ID token.
    async fn exchange(
        &self,
        email: &str,
        key_id: Option<String>,
        token_uri: &str,
        signing_key: &EncodingKey,
        audience: &str,
    ) -> Result<String> {
        let failed = |why: String| {
            unauthenticated(format!(
                "the token endpoint {token_uri} gave no ID token for {email}: {why}"
            ))
        };
        let now = unix_now();
        let claims = serde_json::json!({
            "iss": email,
            "sub": email,
            "aud": token_uri,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
            "target_audience": audience,
        });
        let mut header = Header::new(Algorithm::RS256);
        header.kid = key_id;
        init_jwt();
        let assertion = jsonwebtoken::encode(&header, &claims, signing_key)
            .map_err(|e| failed(format!("the assertion could not be signed: {e}")))?;
        let response = self
            .http()?
            .post(token_uri)
            .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)])
            .send()
            .await
            .map_err(|e| failed(format!("it cannot be reached: {e}")))?;
        id_token_of(response).await.map_err(failed)
    }

    /// Exchanges a user's refresh token at the token endpoint for an ID token.
    async fn refresh(&self, user: &AuthorizedUser, token_uri: &str) -> Result<String> {
        let failed = |why: String| {
            unauthenticated(format!(
                "the token endpoint {token_uri} gave no ID token for {}: {why}; run `gcloud auth \
                 application-default login` again",
                self.describe()
            ))
        };
        let response = self
            .http()?
            .post(token_uri)
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", user.client_id.as_str()),
                ("client_secret", user.client_secret.as_str()),
                ("refresh_token", user.refresh_token.as_str()),
            ])
            .send()
            .await
            .map_err(|e| failed(format!("it cannot be reached: {e}")))?;
        id_token_of(response).await.map_err(failed)
    }

    async fn metadata_token(&self, host: &str, audience: &str) -> Result<String> {
        let url =
            format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/identity");
        let failed = |why: String| {
            unauthenticated(format!(
                "no ID token from the metadata server {host}: {why}; outside Google Cloud, \
                 use --credentials <key file> or {}",
                env::TOKEN
            ))
        };
        let response = self
            .http()?
            .get(&url)
            .query(&[("audience", audience), ("format", "full")])
            .header("Metadata-Flavor", "Google")
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| failed(format!("it cannot be reached ({e})")))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| failed(format!("its answer could not be read ({e})")))?;
        if !status.is_success() {
            let body: String = text.chars().take(300).collect();
            return Err(failed(format!("it answered {status} ({body})")));
        }
        Ok(text.trim().to_string())
    }
}

/// The `id_token` of a token endpoint's answer; why not, in words.
async fn id_token_of(response: reqwest::Response) -> std::result::Result<String, String> {
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("its answer could not be read: {e}"))?;
    if !status.is_success() {
        let body: String = text.chars().take(300).collect();
        return Err(format!("it answered {status}: {body}"));
    }
    #[derive(Deserialize)]
    struct Answer {
        id_token: Option<String>,
    }
    let answer: Answer = serde_json::from_str(&text)
        .map_err(|e| format!("its answer is not the expected JSON: {e}"))?;
    answer
        .id_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "its answer has no id_token".to_string())
}

/// Google's application default credentials file, if there is one: `GOOGLE_APPLICATION_CREDENTIALS`,
/// else gcloud's (`CLOUDSDK_CONFIG`, default `~/.config/gcloud`).
fn adc_file(var: &impl Fn(&str) -> Option<String>) -> Option<std::path::PathBuf> {
    if let Some(path) = var(env::GOOGLE_APPLICATION_CREDENTIALS) {
        return Some(path.into());
    }
    let config = match var(env::CLOUDSDK_CONFIG) {
        Some(dir) => std::path::PathBuf::from(dir),
        None => std::path::PathBuf::from(var("HOME")?).join(".config/gcloud"),
    };
    let file = config.join(ADC_FILE_NAME);
    file.is_file().then_some(file)
}

/// The `exp` claim of a JWT, read without checking its signature (the client only needs to
/// know when to fetch a new one; the server checks it).
fn expiry(token: &str) -> Option<u64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    #[derive(Deserialize)]
    struct Claims {
        exp: u64,
    }
    serde_json::from_slice::<Claims>(&bytes).ok().map(|c| c.exp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |var| {
            pairs
                .iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_local_default_sends_nothing_and_https_asks_the_metadata_server() {
        let none = ClientAuth::resolve("http://127.0.0.1:8001", None, env_of(&[])).unwrap();
        assert!(matches!(none.inner.source, Source::None));
        let https = ClientAuth::resolve("https://x.run.app/", None, env_of(&[])).unwrap();
        match &https.inner.source {
            Source::Metadata { host, audience } => {
                assert_eq!(host, DEFAULT_METADATA_HOST);
                assert_eq!(audience, "https://x.run.app");
            }
            _ => panic!("{https:?}"),
        }
        let forced = ClientAuth::resolve(
            "http://10.0.0.5:8001",
            None,
            env_of(&[
                ("DBT_REMOTE_AUTH", "metadata"),
                ("GCE_METADATA_HOST", "127.0.0.1:9"),
            ]),
        )
        .unwrap();
        assert_eq!(
            forced.describe(),
            "a Google ID token from the metadata server 127.0.0.1:9"
        );
        let off = ClientAuth::resolve(
            "https://x.run.app",
            None,
            env_of(&[("DBT_REMOTE_AUTH", "none"), ("DBT_REMOTE_TOKEN", "t")]),
        )
        .unwrap();
        assert!(matches!(off.inner.source, Source::None));
        let bad = ClientAuth::resolve("http://h", None, env_of(&[("DBT_REMOTE_AUTH", "maybe")]));
        assert!(matches!(bad, Err(Error::InvalidInput(_))));
    }

    #[test]
    fn a_static_token_wins_over_a_key_file() {
        let auth = ClientAuth::resolve(
            "https://x.run.app",
            Some(Path::new("/nonexistent/key.json")),
            env_of(&[("DBT_REMOTE_TOKEN", "s3cret")]),
        )
        .unwrap();
        assert!(
            matches!(&auth.inner.source, Source::Static { token, from_env: true } if token == "s3cret")
        );
        assert!(!format!("{auth:?}").contains("s3cret"));
    }

    #[test]
    fn bad_key_files_are_credential_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let err = ClientAuth::resolve("http://h", Some(&missing), env_of(&[])).unwrap_err();
        assert!(
            matches!(&err, Error::Unauthenticated(m) if m.contains("missing.json")),
            "{err}"
        );
        let user = dir.path().join("user.json");
        std::fs::write(
            &user,
            r#"{"type": "authorized_user", "client_email": "a@b", "private_key": "x"}"#,
        )
        .unwrap();
        let err = ClientAuth::resolve("http://h", Some(&user), env_of(&[])).unwrap_err();
        assert!(err.to_string().contains("authorized_user"), "{err}");
        let bad_pem = dir.path().join("bad.json");
        std::fs::write(
            &bad_pem,
            r#"{"type": "service_account", "client_email": "a@b", "private_key": "nope"}"#,
        )
        .unwrap();
        let err = ClientAuth::resolve("http://h", Some(&bad_pem), env_of(&[])).unwrap_err();
        assert!(err.to_string().contains("not a PEM RSA key"), "{err}");
    }

    #[test]
    fn expiry_is_read_from_the_payload() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!("{}.{}.sig", b64("{}"), b64(r#"{"exp": 1234}"#));
        assert_eq!(expiry(&token), Some(1234));
        assert_eq!(expiry("not-a-jwt"), None);
        assert_eq!(expiry(&format!("a.{}.c", b64("{}"))), None);
    }
}

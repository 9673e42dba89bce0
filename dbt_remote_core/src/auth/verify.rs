//! The server side: is a request's bearer token acceptable?

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{init_jwt, unauthenticated};
use crate::{Error, Result};

/// Google's public keys of its ID tokens.
pub const GOOGLE_JWKS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";
/// The issuers of Google ID tokens.
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

/// Public keys are fetched again (in the background) after this long (Google rotates them).
const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
/// The keys are fetched at most this often, for an unknown key id or a refresh.
const KEYS_MIN_REFETCH: Duration = Duration::from_secs(10);
/// A fetch of the keys that takes longer fails.
const KEYS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Clock skew allowed on `exp`, `iat`, `nbf`.
const LEEWAY_SECS: u64 = 30;

/// Who a request is, once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Principal {
    /// Authentication is off: every request is accepted.
    Anonymous,
    /// The request sent the static token.
    StaticToken,
    /// The request sent a valid Google ID token.
    Google {
        subject: String,
        email: Option<String>,
    },
}

/// The settings of a [`Verifier`]; validated in [`build`](Self::build).
#[derive(Debug, Clone, Default)]
pub struct VerifierBuilder {
    token_sha256: Option<String>,
    token: Option<String>,
    google_audience: Option<String>,
    jwks_url: Option<String>,
    allowed_emails: Vec<String>,
    key_timings: Option<(Duration, Duration)>,
}

impl VerifierBuilder {
    /// Accept the static token whose SHA-256 is `hex` (64 hex digits).
    pub fn with_token_sha256(mut self, hex: impl Into<String>) -> Self {
        self.token_sha256 = Some(hex.into());
        self
    }

    /// Accept this static token (only its hash is kept).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Accept Google ID tokens whose audience is `audience` (the server's URL as clients
    /// reach it; a trailing `/` does not matter).
    pub fn with_google_id_tokens(mut self, audience: impl Into<String>) -> Self {
        self.google_audience = Some(audience.into());
        self
    }

    /// Fetch Google's public keys from `url` instead of [`GOOGLE_JWKS_URL`].
    pub fn with_jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }

    /// Accept only ID tokens with one of these `email` claims (empty: any email).
    pub fn with_allowed_emails(mut self, emails: impl IntoIterator<Item = String>) -> Self {
        self.allowed_emails = emails
            .into_iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        self
    }

    /// Refresh cached keys older than `max_age` (in the background), and fetch the keys at
    /// most every `min_refetch` (defaults: 1 h and 10 s; tests shorten them).
    pub fn with_key_timings(mut self, max_age: Duration, min_refetch: Duration) -> Self {
        self.key_timings = Some((max_age, min_refetch));
        self
    }

    pub fn build(self) -> Result<Verifier> {
        let mut hashes = Vec::new();
        if let Some(hex) = &self.token_sha256 {
            let bytes = hex::decode(hex.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    Error::invalid("the static token's SHA-256 must be 64 hexadecimal digits")
                })?;
            hashes.push(bytes);
        }
        if let Some(token) = &self.token {
            if token.is_empty() {
                return Err(Error::invalid("the static token cannot be empty"));
            }
            hashes.push(Sha256::digest(token.as_bytes()).into());
        }
        let google = match self.google_audience {
            None if self.jwks_url.is_some() || !self.allowed_emails.is_empty() => {
                return Err(Error::invalid(
                    "a JWKS URL or allowed emails are set, but Google ID tokens are not accepted",
                ))
            }
            None => None,
            Some(audience) => {
                let audience = audience.trim_end_matches('/').to_string();
                if audience.is_empty() {
                    return Err(Error::invalid("the ID tokens' audience cannot be empty"));
                }
                let jwks_url = self.jwks_url.unwrap_or_else(|| GOOGLE_JWKS_URL.into());
                if !(jwks_url.starts_with("https://") || jwks_url.starts_with("http://")) {
                    return Err(Error::invalid(format!(
                        "the JWKS URL {jwks_url:?} must start with https:// or http://"
                    )));
                }
                let http = reqwest::Client::builder()
                    .connect_timeout(KEYS_FETCH_TIMEOUT)
                    .timeout(KEYS_FETCH_TIMEOUT)
                    .build()
                    .map_err(|e| Error::backend("http", e))?;
                let (max_age, min_refetch) =
                    self.key_timings.unwrap_or((KEYS_MAX_AGE, KEYS_MIN_REFETCH));
                Some(Arc::new(Google {
                    audience,
                    jwks_url,
                    allowed_emails: self.allowed_emails,
                    http,
                    keys: std::sync::RwLock::new(Keys::default()),
                    fetching: Arc::new(tokio::sync::Mutex::new(())),
                    max_age,
                    min_refetch,
                }))
            }
        };
        Ok(Verifier {
            inner: Arc::new(Inner { hashes, google }),
        })
    }
}

/// Decides whether a request's `Authorization` header is acceptable. Cheap to clone.
///
/// ```
/// use dbt_remote_core::auth::{Principal, Verifier};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let open = Verifier::open();
/// assert_eq!(open.verify(None).await?, Principal::Anonymous);
/// let verifier = Verifier::builder().with_token("s3cret").build()?;
/// assert_eq!(verifier.verify(Some("Bearer s3cret")).await?, Principal::StaticToken);
/// assert!(verifier.verify(Some("Bearer guess")).await.is_err());
/// assert!(verifier.verify(None).await.is_err());
/// # Ok::<(), dbt_remote_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    /// SHA-256 of each accepted static token.
    hashes: Vec<[u8; 32]>,
    google: Option<Arc<Google>>,
}

/// Google ID tokens and the cache of Google's public keys.
///
/// A request whose key id is cached never waits for a fetch: the cache's lock is never held
/// across one. Keys older than `max_age` are still used while one background task fetches
/// new ones. Only a request with an unknown key id waits for a fetch (at most
/// [`KEYS_FETCH_TIMEOUT`]), and the keys are fetched at most every `min_refetch`, so tokens
/// with made-up key ids cannot make the server hammer the endpoint.
struct Google {
    audience: String,
    jwks_url: String,
    allowed_emails: Vec<String>,
    http: reqwest::Client,
    keys: std::sync::RwLock<Keys>,
    /// Held by the one fetch under way; only requests that need a fetch wait on it.
    fetching: Arc<tokio::sync::Mutex<()>>,
    max_age: Duration,
    min_refetch: Duration,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    /// When the keys were last fetched.
    fetched: Option<Instant>,
    /// When a fetch last started, and why it failed if it did.
    attempted: Option<Instant>,
    failed: Option<String>,
}

#[derive(Deserialize)]
struct GoogleClaims {
    sub: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Verifier").field(&self.describe()).finish()
    }
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier::open()
    }
}

impl Verifier {
    /// Accepts every request (authentication off, the local default).
    pub fn open() -> Self {
        Verifier {
            inner: Arc::new(Inner {
                hashes: Vec::new(),
                google: None,
            }),
        }
    }

    pub fn builder() -> VerifierBuilder {
        VerifierBuilder::default()
    }

    /// Whether requests must authenticate.
    pub fn is_enabled(&self) -> bool {
        !self.inner.hashes.is_empty() || self.inner.google.is_some()
    }

    /// What is accepted, in words (for the server's start-up log; no secret in it).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.inner.hashes.is_empty() {
            parts.push("a static token".to_string());
        }
        if let Some(g) = &self.inner.google {
            let who = if g.allowed_emails.is_empty() {
                "any account".to_string()
            } else {
                g.allowed_emails.join(", ")
            };
            parts.push(format!(
                "Google ID tokens for {} ({who}; keys from {})",
                g.audience, g.jwks_url
            ));
        }
        if parts.is_empty() {
            "off: every request is accepted".into()
        } else {
            parts.join(" or ")
        }
    }

    /// Checks the value of a request's `Authorization` header.
    pub async fn verify(&self, authorization: Option<&str>) -> Result<Principal> {
        if !self.is_enabled() {
            return Ok(Principal::Anonymous);
        }
        let token = bearer(authorization)?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every configured hash is compared in full, so the time taken says nothing.
        let matched = self
            .inner
            .hashes
            .iter()
            .fold(false, |found, h| found | constant_time_eq(h, &hash));
        if matched {
            return Ok(Principal::StaticToken);
        }
        match &self.inner.google {
            Some(google) if token.split('.').count() == 3 => google.verify(token).await,
            _ => Err(unauthenticated("the bearer token is not valid")),
        }
    }
}

/// The token of `Bearer <token>`.
fn bearer(authorization: Option<&str>) -> Result<&str> {
    let value = authorization.ok_or_else(|| {
        unauthenticated("this server requires credentials: send Authorization: Bearer <token>")
    })?;
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(unauthenticated(
            "the Authorization header must be Bearer <token>",
        ));
    }
    Ok(token)
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Google {
    async fn verify(self: &Arc<Self>, token: &str) -> Result<Principal> {
        init_jwt();
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| unauthenticated("the bearer token is not valid"))?;
        if header.alg != Algorithm::RS256 {
            return Err(unauthenticated("the ID token is not signed with RS256"));
        }
        let kid = header
            .kid
            .ok_or_else(|| unauthenticated("the ID token names no signing key (kid)"))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        let with_slash = format!("{}/", self.audience);
        validation.set_audience(&[self.audience.as_str(), with_slash.as_str()]);
        validation.set_issuer(&GOOGLE_ISSUERS);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<GoogleClaims>(token, &key, &validation).map_err(|e| {
            unauthenticated(match e.kind() {
                ErrorKind::ExpiredSignature => "the ID token has expired".to_string(),
                ErrorKind::InvalidAudience => format!(
                    "the ID token is for another audience (this server is {})",
                    self.audience
                ),
                ErrorKind::InvalidIssuer => "the ID token is not issued by Google".to_string(),
                ErrorKind::InvalidSignature => "the ID token's signature is invalid".to_string(),
                _ => format!("the ID token is not valid: {e}"),
            })
        })?;
        let claims = data.claims;
        if !self.allowed_emails.is_empty() {
            let allowed = claims.email_verified != Some(false)
                && claims
                    .email
                    .as_ref()
                    .is_some_and(|e| self.allowed_emails.iter().any(|a| a == e));
            if !allowed {
                return Err(unauthenticated(format!(
                    "the account {} is not allowed on this server",
                    claims.email.as_deref().unwrap_or("without an email")
                )));
            }
        }
        Ok(Principal::Google {
            subject: claims.sub,
            email: claims.email,
        })
    }

    /// The public key `kid`: from the cache (refreshed in the background when old), else
    /// from a new fetch of the JWKS.
    async fn key(self: &Arc<Self>, kid: &str) -> Result<DecodingKey> {
        let (cached, old) = {
            let keys = self.cache();
            let old = keys.fetched.is_none_or(|t| t.elapsed() >= self.max_age);
            (keys.by_kid.get(kid).cloned(), old)
        };
        match cached {
            Some(key) => {
                if old {
                    self.refresh_in_background();
                }
                Ok(key)
            }
            None => self.fetch_for(kid).await,
        }
    }

    fn cache(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a fetch started less than `min_refetch` ago: then its outcome stands.
    fn fetched_recently(&self) -> Result<bool> {
        let keys = self.cache();
        if keys
            .attempted
            .is_none_or(|t| t.elapsed() >= self.min_refetch)
        {
            return Ok(false);
        }
        match &keys.failed {
            Some(why) => Err(Error::backend("jwks", why.clone())),
            None => Ok(true),
        }
    }

    /// Fetches the keys for the unknown `kid`, unless they were fetched just now.
    async fn fetch_for(self: &Arc<Self>, kid: &str) -> Result<DecodingKey> {
        let unknown = || unauthenticated("the ID token is signed by an unknown key");
        if self.fetched_recently()? {
            return Err(unknown());
        }
        let _fetching = self.fetching.lock().await;
        // Another request may have fetched them while this one waited.
        if let Some(key) = self.cache().by_kid.get(kid).cloned() {
            return Ok(key);
        }
        if self.fetched_recently()? {
            return Err(unknown());
        }
        self.refetch().await?;
        self.cache().by_kid.get(kid).cloned().ok_or_else(unknown)
    }

    /// Starts one background fetch of the keys, unless one is under way or was just made.
    fn refresh_in_background(self: &Arc<Self>) {
        if !matches!(self.fetched_recently(), Ok(false)) {
            return;
        }
        let Ok(fetching) = self.fetching.clone().try_lock_owned() else {
            return;
        };
        let google = self.clone();
        tokio::spawn(async move {
            let _fetching = fetching;
            if let Err(e) = google.refetch().await {
                tracing::warn!(
                    "refreshing Google's public keys failed (the cached ones stay in use): {e}"
                );
            }
        });
    }

    /// Fetches the keys into the cache (call holding `fetching`).
    async fn refetch(&self) -> Result<()> {
        self.keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .attempted = Some(Instant::now());
        let fetched = self.fetch_keys().await;
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match fetched {
            Ok(by_kid) => {
                keys.by_kid = by_kid;
                keys.fetched = Some(Instant::now());
                keys.failed = None;
                Ok(())
            }
            Err(e) => {
                keys.failed = Some(match &e {
                    Error::Backend { source, .. } => source.to_string(),
                    other => other.to_string(),
                });
                Err(e)
            }
        }
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, DecodingKey>> {
        let failed = |why: String| {
            Error::backend(
                "jwks",
                format!("the public keys at {} cannot be read: {why}", self.jwks_url),
            )
        };
        let response = self
            .http
            .get(&self.jwks_url)
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(failed(format!("answer {status}")));
        }
        let set: JwkSet = response.json().await.map_err(|e| failed(e.to_string()))?;
        Ok(set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                match DecodingKey::from_jwk(jwk) {
                    Ok(key) => Some((kid, key)),
                    Err(e) => {
                        tracing::warn!("skipping public key {kid} of {}: {e}", self.jwks_url);
                        None
                    }
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_takes_the_token_of_the_bearer_scheme() {
        assert_eq!(bearer(Some("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(Some("bearer  abc ")).unwrap(), "abc");
        assert!(bearer(None).is_err());
        assert!(bearer(Some("Basic abc")).is_err());
        assert!(bearer(Some("Bearer")).is_err());
        assert!(bearer(Some("Bearer ")).is_err());
    }

    #[tokio::test]
    async fn a_static_token_is_checked_by_its_hash() {
        let hex = hex::encode(Sha256::digest(b"s3cret"));
        let v = Verifier::builder().with_token_sha256(hex).build().unwrap();
        assert!(v.is_enabled());
        assert_eq!(
            v.verify(Some("Bearer s3cret")).await.unwrap(),
            Principal::StaticToken
        );
        let err = v.verify(Some("Bearer s3cret2")).await.unwrap_err();
        assert!(matches!(err, Error::Unauthenticated(_)), "{err}");
        // Without Google ID tokens configured, a JWT is just a wrong token.
        assert!(v.verify(Some("Bearer a.b.c")).await.is_err());
        assert!(!v.describe().contains("s3cret"));
    }

    #[test]
    fn bad_settings_are_refused_in_build() {
        assert!(Verifier::builder()
            .with_token_sha256("abc")
            .build()
            .is_err());
        assert!(Verifier::builder().with_token("").build().is_err());
        assert!(Verifier::builder()
            .with_jwks_url("http://127.0.0.1:9/certs")
            .build()
            .is_err());
        assert!(Verifier::builder()
            .with_google_id_tokens("https://x.run.app")
            .with_jwks_url("file:///etc/passwd")
            .build()
            .is_err());
        assert!(!Verifier::open().is_enabled());
    }
}

//! Credentials a caller holds itself and hands to a client: an Airflow connection's static
//! token or Google service-account key. They are used instead of those the settings and the
//! environment name, never read from, nor put into, the process environment.

use std::fmt;

use serde::Deserialize;

use super::client::{AuthorizedUser, ClientAuth, ServiceAccountKey};
use super::unauthenticated;
use crate::Result;

/// The JSON of a Google credentials file: a service-account key, or a user's gcloud
/// credentials (type `authorized_user`).
#[derive(Clone)]
pub(crate) enum KeyJson {
    ServiceAccount(ServiceAccountKey),
    AuthorizedUser(AuthorizedUser),
}

impl KeyJson {
    /// Parses `text`; the error completes a sentence about where it was read ("… is not …").
    pub(crate) fn parse(text: &str) -> std::result::Result<Self, String> {
        #[derive(Deserialize)]
        struct Kind {
            #[serde(rename = "type")]
            kind: String,
        }
        let kind = serde_json::from_str::<Kind>(text).map(|k| k.kind);
        if kind.as_deref().is_ok_and(|k| k == "authorized_user") {
            return serde_json::from_str(text)
                .map(KeyJson::AuthorizedUser)
                .map_err(|e| format!("is not a complete authorized_user file: {e}"));
        }
        serde_json::from_str(text)
            .map(KeyJson::ServiceAccount)
            .map_err(|e| format!("is not a Google service-account key: {e}"))
    }

    /// The client credentials for a server whose ID tokens have `audience`. `what` names
    /// where the key was read, for messages ("the credentials file …"); `label` is the short
    /// form `describe` uses for gcloud credentials.
    pub(crate) fn auth(self, audience: &str, what: &str, label: &str) -> Result<ClientAuth> {
        match self {
            KeyJson::AuthorizedUser(user) => ClientAuth::authorized_user(user, label),
            KeyJson::ServiceAccount(key) => {
                ClientAuth::service_account(key, audience).map_err(|e| match e {
                    crate::Error::Unauthenticated(m) => unauthenticated(format!("{what}: {m}")),
                    e => e,
                })
            }
        }
    }
}

/// Credentials given to a client (see the module docs): a static token, or a Google
/// credentials JSON whose ID tokens are made for whichever server URL is located (also for a
/// Cloud Run discovery's probes). Cheap to clone; `Debug` never shows the secret.
///
/// ```
/// use dbt_remote_core::auth::Credentials;
///
/// let auth = Credentials::token("s3cret").for_server("http://127.0.0.1:8001")?;
/// assert_eq!(auth.describe(), "the static token given to the client");
/// let err = Credentials::key_json("{not json").unwrap_err();
/// assert!(err.to_string().contains("the service-account key given to the client is not"));
/// # Ok::<(), dbt_remote_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Credentials(Given);

#[derive(Clone)]
enum Given {
    Token(String),
    Key(KeyJson),
}

/// How messages name a key given as JSON.
const GIVEN_KEY: &str = "the service-account key given to the client";

impl Credentials {
    /// A static token, sent as it is.
    pub fn token(token: impl Into<String>) -> Self {
        Credentials(Given::Token(token.into()))
    }

    /// A service-account key file's JSON (or gcloud user credentials), checked now: a text
    /// that is no such key, or whose private key is no PEM RSA key, is an
    /// [`Error::Unauthenticated`](crate::Error::Unauthenticated) saying so.
    pub fn key_json(text: &str) -> Result<Self> {
        let key = KeyJson::parse(text).map_err(|m| unauthenticated(format!("{GIVEN_KEY} {m}")))?;
        // The audience does not matter for the check: the key is checked, not used.
        key.clone().auth("", GIVEN_KEY, "given to the client")?;
        Ok(Credentials(Given::Key(key)))
    }

    /// What a client of the server at `server_url` sends: the token, or ID tokens whose
    /// audience is `server_url` without a trailing `/`.
    pub fn for_server(&self, server_url: &str) -> Result<ClientAuth> {
        match &self.0 {
            Given::Token(token) => Ok(ClientAuth::static_token(token.clone())),
            Given::Key(key) => key.clone().auth(
                server_url.trim_end_matches('/'),
                GIVEN_KEY,
                "given to the client",
            ),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Given::Token(_) => f.write_str("Credentials(a static token)"),
            Given::Key(KeyJson::ServiceAccount(key)) => {
                write!(f, "Credentials(the key of {})", key.client_email)
            }
            Given::Key(KeyJson::AuthorizedUser(_)) => {
                f.write_str("Credentials(gcloud user credentials)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_key_is_checked_at_once_and_never_shown() {
        let no_pem = r#"{"type": "service_account", "client_email": "a@b", "private_key": "x"}"#;
        let err = Credentials::key_json(no_pem).unwrap_err().to_string();
        assert!(
            err.contains(GIVEN_KEY) && err.contains("not a PEM RSA key"),
            "{err}"
        );
        let other = r#"{"type": "external_account", "client_email": "a@b", "private_key": "x"}"#;
        let err = Credentials::key_json(other).unwrap_err().to_string();
        assert!(err.contains("external_account"), "{err}");
        let user = r#"{"type": "authorized_user", "client_id": "c", "client_secret": "s",
                       "refresh_token": "r", "account": "me@example.com"}"#;
        let creds = Credentials::key_json(user).unwrap();
        assert_eq!(format!("{creds:?}"), "Credentials(gcloud user credentials)");
        let auth = creds.for_server("https://x.run.app/").unwrap();
        assert_eq!(
            auth.describe(),
            "a Google ID token of me@example.com (gcloud credentials given to the client)"
        );
        let token = Credentials::token("s3cret");
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}

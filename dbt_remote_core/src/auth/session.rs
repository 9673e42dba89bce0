//! The browser session: a bearer token a person gave the web UI once, kept by the browser in
//! an HttpOnly cookie and sent back with every request of the page, where a client would send
//! `Authorization: Bearer`.
//!
//! The cookie holds the token itself (there is no server-side session store): whatever the
//! [`Verifier`](super::Verifier) accepts in a header it accepts in the cookie, and a token
//! that expires or is revoked ends the session with it. This module owns the cookie's name
//! and attributes ([`SessionCookie`]), reading it from `Cookie` headers ([`session_tokens`]),
//! who a request is ([`verify`]) and the login body ([`login_token`]).
//!
//! ```
//! use std::time::Duration;
//! use dbt_remote_core::auth::session::{session_tokens, verify, SessionCookie};
//! use dbt_remote_core::auth::{Principal, Verifier};
//!
//! let cookie = SessionCookie { secure: true, max_age: Duration::from_secs(3600) };
//! assert_eq!(
//!     cookie.set("s3cret", None),
//!     "dbt_remote_session=s3cret; HttpOnly; SameSite=Strict; Path=/; Max-Age=3600; Secure"
//! );
//! let tokens = session_tokens(["theme=dark; dbt_remote_session=s3cret"]);
//! assert_eq!(tokens, ["s3cret"]);
//! // Without an Authorization header, the cookie is the bearer token; a header wins.
//! let verifier = Verifier::builder().with_token("s3cret").build()?;
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! assert_eq!(verify(&verifier, None, &tokens).await?, Principal::StaticToken);
//! assert!(verify(&verifier, Some("Bearer other"), &tokens).await.is_err());
//! # Ok::<(), dbt_remote_core::Error>(())
//! # })?;
//! # Ok::<(), dbt_remote_core::Error>(())
//! ```

use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use super::{unauthenticated, Principal, Verifier};
use crate::{Error, Result};

/// The name of the session cookie.
pub const SESSION_COOKIE: &str = "dbt_remote_session";

/// How long a session lasts by default (a Google ID token's own expiry is sooner).
pub const DEFAULT_SESSION_MAX_AGE: Duration = Duration::from_secs(12 * 3600);

/// Largest login body read: an ID token is about 1 KiB, a static token less.
pub const MAX_LOGIN_BODY_BYTES: u64 = 16 * 1024;

/// Longest token a login accepts (browsers keep cookies of about 4 KiB).
pub const MAX_TOKEN_BYTES: usize = 3 * 1024;

/// Session cookies read from one request at most (a stale one under another path may come
/// first); the rest are ignored.
pub const MAX_SESSION_COOKIES: usize = 4;

/// The attributes of the session cookie a server sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCookie {
    /// Send the cookie over https only (`Secure`): the request came over https.
    pub secure: bool,
    /// How long the browser keeps the cookie (`Max-Age`).
    pub max_age: Duration,
}

impl SessionCookie {
    /// The `Set-Cookie` value that keeps `token`: HttpOnly (no script reads it),
    /// SameSite=Strict (no other site's page sends it), `Path=/`, `Max-Age` the shorter of
    /// [`max_age`](Self::max_age) and the seconds until `expires_at` (Unix seconds, a token's
    /// own expiry), `Secure` when [`secure`](Self::secure).
    pub fn set(&self, token: &str, expires_at: Option<u64>) -> String {
        let mut max_age = self.max_age.as_secs();
        if let Some(expires_at) = expires_at {
            max_age = max_age.min(expires_at.saturating_sub(super::unix_now()));
        }
        self.header(&encode(token), max_age)
    }

    /// The `Set-Cookie` value that removes the cookie (empty, `Max-Age=0`).
    pub fn clear(&self) -> String {
        self.header("", 0)
    }

    fn header(&self, value: &str, max_age: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}")
    }
}

/// The session tokens of a request's `Cookie` headers, in order, at most
/// [`MAX_SESSION_COOKIES`]. Reads `name=value` pairs separated by `;` (RFC 6265), trims
/// spaces, unquotes a `"value"`, and skips anything else: other cookies, pairs without `=`,
/// empty values, values that do not decode.
pub fn session_tokens<'a>(headers: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    headers
        .into_iter()
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            if name.trim() != SESSION_COOKIE {
                return None;
            }
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            decode(value).filter(|token| !token.is_empty())
        })
        .take(MAX_SESSION_COOKIES)
        .collect()
}

/// Who a request is, as the gate decides it: by its `Authorization` header when it has one (a
/// header always wins: a client, or the Cloud Run IAM proxy, said who it is), else by its
/// session cookies (the first one the verifier accepts; the error of the first when none is),
/// else as a request without credentials.
pub async fn verify(
    verifier: &Verifier,
    authorization: Option<&str>,
    session: &[String],
) -> Result<Principal> {
    if authorization.is_some() || session.is_empty() {
        return verifier.verify(authorization).await;
    }
    let mut first_error = None;
    for token in session {
        match verifier.verify(Some(&format!("Bearer {token}"))).await {
            Ok(principal) => return Ok(principal),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| unauthenticated("no session")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    token: String,
}

/// The token of a login body: JSON `{"token": "…"}` (`Content-Type: application/json`) or a
/// form `token=…` (`application/x-www-form-urlencoded`). A body of another type is
/// [`Error::UnsupportedMediaType`]; one that does not parse, or holds an empty or oversized
/// token, [`Error::InvalidInput`].
pub fn login_token(content_type: Option<&str>, body: &[u8]) -> Result<String> {
    let media = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let login: Login =
        match media.as_str() {
            "application/json" => serde_json::from_slice(body)
                .map_err(|e| Error::invalid(format!("invalid JSON body: {e}")))?,
            "application/x-www-form-urlencoded" => serde_urlencoded::from_bytes(body)
                .map_err(|e| Error::invalid(format!("invalid form body: {e}")))?,
            _ => return Err(Error::UnsupportedMediaType(
                "a login takes a JSON body {\"token\": \"…\"} (Content-Type: application/json) \
                 or a form token=… (application/x-www-form-urlencoded)"
                    .into(),
            )),
        };
    let token = login.token.trim();
    if token.is_empty() {
        return Err(Error::invalid("the token is empty"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Error::invalid(format!(
            "the token is longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    Ok(token.to_string())
}

/// The `exp` claim (Unix seconds) of a token that is a JWT, read without checking its
/// signature: call it only on a token the [`Verifier`](super::Verifier) accepted, to end the
/// session when the token ends. `None` for a static token.
pub fn token_expiry(token: &str) -> Option<u64> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("exp")?.as_u64()
}

/// A cookie-octet of RFC 6265 other than `%` (kept as is in the cookie's value).
fn is_plain(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E) && b != b'%'
}

/// A token as a cookie value: bytes that a cookie may not hold (and `%`) percent-encoded.
fn encode(token: &str) -> String {
    token
        .bytes()
        .map(|b| {
            if is_plain(b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A cookie value back to its token; `None` when it is not what [`encode`] writes.
fn decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if is_plain(b) => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn the_cookie_is_httponly_strict_on_every_path_and_secure_only_over_https() {
        let plain = SessionCookie {
            secure: false,
            max_age: HOUR,
        };
        let set = plain.set("t", None);
        assert_eq!(
            set,
            "dbt_remote_session=t; HttpOnly; SameSite=Strict; Path=/; Max-Age=3600"
        );
        let secure = SessionCookie {
            secure: true,
            ..plain
        };
        assert!(secure.set("t", None).ends_with("; Secure"));
        assert_eq!(
            secure.clear(),
            "dbt_remote_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0; Secure"
        );
    }

    #[test]
    fn a_token_that_expires_sooner_shortens_the_session() {
        let cookie = SessionCookie {
            secure: false,
            max_age: HOUR,
        };
        let soon = super::super::unix_now() + 600;
        let set = cookie.set("t", Some(soon));
        let age: u64 = set.rsplit("Max-Age=").next().unwrap().parse().unwrap();
        assert!((595..=600).contains(&age), "{set}");
        assert!(cookie.set("t", Some(1)).ends_with("Max-Age=0"));
        assert!(cookie.set("t", Some(u64::MAX)).ends_with("Max-Age=3600"));
    }

    #[test]
    fn any_token_survives_the_cookie() {
        for token in ["abc.DEF-_~+/=", "with space; and,comma\"quote\\%", "ünï"] {
            let set = SessionCookie {
                secure: false,
                max_age: HOUR,
            }
            .set(token, None);
            let value = set.split(';').next().unwrap();
            assert!(value.bytes().all(|b| b.is_ascii_graphic()), "{value}");
            assert_eq!(session_tokens([value]), [token]);
        }
    }

    #[test]
    fn cookie_headers_are_read_robustly() {
        let read = |headers: &[&str]| session_tokens(headers.iter().copied());
        assert_eq!(read(&["dbt_remote_session=a"]), ["a"]);
        assert_eq!(read(&["x=1;dbt_remote_session=a ; y=2"]), ["a"]);
        assert_eq!(read(&["dbt_remote_session=\"a\""]), ["a"]);
        assert_eq!(
            read(&["dbt_remote_session=a", "dbt_remote_session=b"]),
            ["a", "b"]
        );
        assert_eq!(
            read(&["x_dbt_remote_session=a; dbt_remote_sessionx=b"]),
            [""; 0]
        );
        assert_eq!(
            read(&["junk; ;=; dbt_remote_session; dbt_remote_session=; dbt_remote_session=a b"]),
            [""; 0]
        );
        assert_eq!(
            read(&["dbt_remote_session=%zz; dbt_remote_session=%FF"]),
            [""; 0]
        );
        assert_eq!(read(&[&"dbt_remote_session=a;".repeat(10)]).len(), 4);
        assert!(read(&[]).is_empty());
    }

    #[tokio::test]
    async fn a_header_wins_over_the_cookie_and_any_good_cookie_passes() {
        let verifier = Verifier::builder().with_token("good").build().unwrap();
        let v = |header: Option<&'static str>, session: &[&str]| {
            let verifier = verifier.clone();
            let session: Vec<String> = session.iter().map(|s| s.to_string()).collect();
            async move { verify(&verifier, header, &session).await.is_ok() }
        };
        assert!(v(None, &["good"]).await);
        assert!(v(None, &["stale", "good"]).await);
        assert!(!v(None, &["stale"]).await);
        assert!(!v(None, &[]).await);
        assert!(v(Some("Bearer good"), &["stale"]).await);
        assert!(!v(Some("Bearer wrong"), &["good"]).await);
        assert!(!v(Some(""), &["good"]).await);
        let open = Verifier::open();
        assert!(verify(&open, None, &["junk".into()]).await.is_ok());
    }

    #[test]
    fn login_bodies_are_json_or_forms() {
        let json = Some("application/json; charset=utf-8");
        let form = Some("application/x-www-form-urlencoded");
        assert_eq!(login_token(json, br#"{"token": " t "}"#).unwrap(), "t");
        assert_eq!(login_token(form, b"token=a%20b+c").unwrap(), "a b c");
        let invalid =
            |ct, body: &[u8]| matches!(login_token(ct, body), Err(Error::InvalidInput(_)));
        assert!(invalid(json, b"{}"));
        assert!(invalid(json, b"not json"));
        assert!(invalid(json, br#"{"token": 1}"#));
        assert!(invalid(json, br#"{"token": "t", "more": 1}"#));
        assert!(invalid(json, br#"{"token": "  "}"#));
        assert!(invalid(form, b"nothing=here"));
        let long = format!(r#"{{"token": "{}"}}"#, "a".repeat(MAX_TOKEN_BYTES + 1));
        assert!(invalid(json, long.as_bytes()));
        for ct in [None, Some("text/plain"), Some("multipart/form-data")] {
            assert!(matches!(
                login_token(ct, b"token=t"),
                Err(Error::UnsupportedMediaType(_))
            ));
        }
    }

    #[test]
    fn the_expiry_of_a_jwt_is_read_and_a_static_token_has_none() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let jwt = format!("{}.{}.sig", b64("{}"), b64(r#"{"exp": 1700000000}"#));
        assert_eq!(token_expiry(&jwt), Some(1_700_000_000));
        assert_eq!(token_expiry("s3cret"), None);
        assert_eq!(token_expiry("a.b.c"), None);
        assert_eq!(token_expiry("a.b.c.d"), None);
    }
}

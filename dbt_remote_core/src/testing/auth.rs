//! Test material for authentication: freshly generated RSA keys, their JWKS, service-account
//! key files and signed Google-style ID tokens.

use std::sync::OnceLock;

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};

/// An RSA key pair made for this test run, with its key id.
#[derive(Clone)]
pub struct TestKey {
    pub kid: String,
    /// The private key, PKCS#8 PEM (as in Google's key files).
    pub private_pem: String,
    n: String,
    e: String,
}

impl TestKey {
    /// A new 2048-bit key (slow in debug builds: share one per test binary with [`key`]).
    pub fn generate(kid: &str) -> TestKey {
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        TestKey {
            kid: kid.to_string(),
            private_pem: private.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
            n: b64(private.n().to_bytes_be()),
            e: b64(private.e().to_bytes_be()),
        }
    }

    /// The same key pair under another key id.
    pub fn with_kid(&self, kid: &str) -> TestKey {
        TestKey {
            kid: kid.to_string(),
            ..self.clone()
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.kid, "n": self.n, "e": self.e})
    }

    /// `claims` signed RS256 with this key, its kid in the header.
    pub fn sign(&self, claims: &Value) -> String {
        crate::auth::init_jwt();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        let key = EncodingKey::from_rsa_pem(self.private_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    /// The public key's `n` and `e` (base64url), for verifying what a client signed.
    pub fn public_components(&self) -> (&str, &str) {
        (&self.n, &self.e)
    }

    /// A service-account key file's JSON for this key.
    pub fn service_account_json(&self, client_email: &str, token_uri: &str) -> String {
        json!({
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": self.kid,
            "private_key": self.private_pem,
            "client_email": client_email,
            "client_id": "1234567890",
            "token_uri": token_uri,
        })
        .to_string()
    }
}

/// A JWKS document of `keys`.
pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}

/// Two keys generated once per test binary (`key(0)`, `key(1)`), kids `test-key-0`, `test-key-1`.
pub fn key(i: usize) -> &'static TestKey {
    static KEYS: OnceLock<[TestKey; 2]> = OnceLock::new();
    &KEYS.get_or_init(|| {
        let a = std::thread::spawn(|| TestKey::generate("test-key-0"));
        let b = TestKey::generate("test-key-1");
        [a.join().unwrap(), b]
    })[i]
}

/// The claims of a Google ID token for `audience` and `email`, expiring `exp_in` seconds from
/// now (negative: already expired).
pub fn google_claims(audience: &str, email: &str, exp_in: i64) -> Value {
    let now = crate::auth::unix_now() as i64;
    json!({
        "iss": "https://accounts.google.com",
        "aud": audience,
        "sub": "1234567890",
        "email": email,
        "email_verified": true,
        "iat": now - 10,
        "exp": now + exp_in,
    })
}

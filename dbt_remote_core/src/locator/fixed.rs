//! A locator that returns a URL given by a flag, a setting or a variable (`server_url`).

use async_trait::async_trait;

use super::ServerLocator;
use crate::{Error, Result};

/// Returns the one URL it was made with: what `--server-url`, `DBT_REMOTE_SERVER_URL` and
/// `server_url` in `dbt_remote.yml` give. It asks nobody.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedLocator {
    url: String,
}

impl FixedLocator {
    pub fn new(url: impl Into<String>) -> Self {
        FixedLocator { url: url.into() }
    }
}

#[async_trait]
impl ServerLocator for FixedLocator {
    async fn locate(&self) -> Result<String> {
        let url = self.url.trim().trim_end_matches('/');
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        match rest {
            Some(host) if !host.is_empty() => Ok(url.to_string()),
            _ => Err(Error::invalid(format!(
                "server URL {:?} must start with http:// or https:// and name a host: pass \
                 --server-url (or set server_url)",
                self.url
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_its_url_without_the_trailing_slash() {
        let l = FixedLocator::new("http://10.0.0.5:8001/");
        assert_eq!(l.locate().await.unwrap(), "http://10.0.0.5:8001");
        let l = FixedLocator::new("https://dbt-server-abc-ew.a.run.app");
        assert_eq!(
            l.locate().await.unwrap(),
            "https://dbt-server-abc-ew.a.run.app"
        );
        for bad in ["localhost:8001", "http://", "ftp://x"] {
            let err = FixedLocator::new(bad).locate().await.unwrap_err();
            assert!(matches!(err, Error::InvalidInput(_)), "{bad}: {err}");
            assert!(err.to_string().contains("--server-url"), "{err}");
        }
    }
}

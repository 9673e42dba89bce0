//! The checks every request passes before authentication and before any handler: its `Host`
//! must be a name of this server (against DNS rebinding), and a browser request must come
//! from an allowed origin (against cross-site requests). A refusal is a 403 in the protocol's
//! error shape; nothing is read or stored.
//!
//! Which requests are checked:
//! - `Host`: every request, when the server listens on a loopback address or
//!   `--allowed-hosts` is set. Accepted: `localhost`, loopback IPs, the host of
//!   `--public-url`, and the names of `--allowed-hosts`, with any port. A request without a
//!   Host (HTTP/1.0) is not a browser's and passes.
//! - `Origin` / `Sec-Fetch-Site`: every request but the public reads (`GET`/`HEAD` of
//!   `/health`, `/check`, `/version`, `/api/v1/openapi.json`, and of the web UI's shell: `/`
//!   and `/ui/…`). `POST /ui/login` and `/ui/logout` are checked, as every write is. An `Origin` passes when it is
//!   the server's own (`http://` or `https://` + the Host reached, or the public URL's origin)
//!   or listed in `--allowed-origins`. Without an `Origin`, `Sec-Fetch-Site: cross-site` or
//!   `same-site` is refused. Requests with neither header (the CLI, the Python client, the
//!   0.4.6 CLI, curl) pass.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use dbt_remote_core::server::EdgeSettings;
use dbt_remote_core::Error;
use warp::http::{HeaderMap, Method};
use warp::path::FullPath;
use warp::{Filter, Rejection};

use crate::reply::{Protocol, Refused};

/// What the guard accepts, resolved once at start.
#[derive(Debug, Clone)]
pub(crate) struct Guard {
    /// Origins allowed besides the request's own, normalised (lowercase, no trailing `/`).
    origins: Vec<String>,
    /// Host names allowed besides the loopback names; `None`: Host is not checked.
    hosts: Option<Vec<String>>,
}

impl Guard {
    /// The guard of a server listening on `local`, reached at `public_url`.
    pub(crate) fn new(edge: &EdgeSettings, public_url: Option<&str>, local: SocketAddr) -> Guard {
        let public = public_url.and_then(origin_of_url);
        let mut origins: Vec<String> = edge.allowed_origins.iter().map(|o| normalise(o)).collect();
        origins.extend(public.clone());
        let check_hosts = local.ip().is_loopback() || !edge.allowed_hosts.is_empty();
        let hosts = check_hosts.then(|| {
            let mut hosts: Vec<String> = edge.allowed_hosts.iter().map(|h| host_name(h)).collect();
            hosts.extend(
                public
                    .as_deref()
                    .and_then(|o| o.split("://").nth(1))
                    .map(host_name),
            );
            hosts
        });
        Guard { origins, hosts }
    }

    /// Passes the request, or says why it is refused.
    fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Error> {
        let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
        let host = header("host");
        if let (Some(allowed), Some(host)) = (&self.hosts, host) {
            if !host_allowed(allowed, host) {
                return Err(Error::Forbidden(format!(
                    "Host {host:?} is not a name of this server; add it to --allowed-hosts \
                     (DBT_REMOTE_ALLOWED_HOSTS) if clients use it"
                )));
            }
        }
        if is_public_read(method, path) {
            return Ok(());
        }
        match header("origin") {
            Some(origin) if self.origin_allowed(origin, host) => Ok(()),
            Some(origin) => Err(Error::Forbidden(format!(
                "requests from the web origin {origin:?} are refused; add it to \
                 --allowed-origins (DBT_REMOTE_ALLOWED_ORIGINS) to allow it"
            ))),
            None => match header("sec-fetch-site") {
                Some(site) if is_cross_site(site) => Err(Error::Forbidden(
                    "requests from another site are refused (Sec-Fetch-Site); list the \
                     page's origin in --allowed-origins to allow it"
                        .into(),
                )),
                _ => Ok(()),
            },
        }
    }

    /// The server's own origin (either scheme with the Host reached) or an allowed one.
    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = normalise(origin);
        let own = host.is_some_and(|host| {
            let host = host.to_ascii_lowercase();
            origin == format!("http://{host}") || origin == format!("https://{host}")
        });
        own || self.origins.contains(&origin)
    }
}

/// Reads that carry no data and no side effect, which any page may make: also the web UI's
/// shell (`/`, `/ui/…`), so that a link to a job's page from another site (a chat, a mail)
/// opens it; the page's own API calls are same-origin and checked.
fn is_public_read(method: &Method, path: &str) -> bool {
    (*method == Method::GET || *method == Method::HEAD)
        && (matches!(
            path,
            "/" | "/health" | "/check" | "/version" | "/api/v1/openapi.json"
        ) || crate::auth::is_ui_shell(path))
}

fn is_cross_site(site: &str) -> bool {
    let site = site.trim();
    site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site")
}

/// An origin as compared: lowercase, without a trailing `/`.
fn normalise(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The origin (`scheme://host[:port]`) of a URL such as `https://dbt.example.com/base/`.
fn origin_of_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    (!authority.is_empty()).then(|| normalise(&format!("{scheme}://{authority}")))
}

/// The name part of a `Host` value (`Example.com:8001` → `example.com`, `[::1]:80` → `[::1]`).
fn host_name(host: &str) -> String {
    let host = host.trim().to_ascii_lowercase();
    let name = if host.starts_with('[') {
        host.split_inclusive(']')
            .next()
            .unwrap_or(&host)
            .to_string()
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_string(),
            _ => host.clone(),
        }
    };
    name.trim_end_matches('.').to_string()
}

/// A loopback name (`localhost`, `127.0.0.1`, `[::1]`, …) or one of `allowed`.
fn host_allowed(allowed: &[String], host: &str) -> bool {
    let name = host_name(host);
    let ip = name.trim_start_matches('[').trim_end_matches(']');
    let loopback = name == "localhost" || ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback || allowed.contains(&name)
}

/// The guard as a filter: passes, or rejects with [`Refused`] in the path's protocol.
pub(crate) fn filter(guard: Guard) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    let guard = Arc::new(guard);
    warp::method()
        .and(warp::path::full())
        .and(warp::header::headers_cloned())
        .and_then(move |method: Method, path: FullPath, headers: HeaderMap| {
            let checked = guard.check(&method, path.as_str(), &headers);
            async move {
                checked.map_err(|error| {
                    warp::reject::custom(Refused {
                        error,
                        protocol: Protocol::of_path(path.as_str()),
                    })
                })
            }
        })
        .untuple_one()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(local: &str, edge: EdgeSettings, public: Option<&str>) -> Guard {
        Guard::new(&edge, public, local.parse().unwrap())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn passes(g: &Guard, method: Method, path: &str, pairs: &[(&'static str, &str)]) -> bool {
        g.check(&method, path, &headers(pairs)).is_ok()
    }

    #[test]
    fn host_names_are_read_without_their_port() {
        assert_eq!(host_name("Example.COM:8001"), "example.com");
        assert_eq!(host_name("[::1]:8001"), "[::1]");
        assert_eq!(host_name("localhost."), "localhost");
        assert_eq!(
            origin_of_url("https://dbt.example.com/x/").as_deref(),
            Some("https://dbt.example.com")
        );
    }

    #[test]
    fn a_loopback_server_accepts_loopback_names_and_its_public_host_only() {
        let g = guard(
            "127.0.0.1:8001",
            EdgeSettings::default(),
            Some("https://dbt.example.com/"),
        );
        for host in [
            "localhost:8001",
            "127.0.0.1:8001",
            "[::1]:8001",
            "127.0.0.2",
            "dbt.example.com",
        ] {
            assert!(
                passes(&g, Method::GET, "/api/v1/jobs", &[("host", host)]),
                "{host}"
            );
        }
        for host in ["evil.example:8001", "localhost.evil.example", "10.0.0.1"] {
            assert!(
                !passes(&g, Method::GET, "/health", &[("host", host)]),
                "{host}"
            );
        }
    }

    #[test]
    fn a_server_on_all_addresses_checks_host_only_when_told() {
        let open = guard("0.0.0.0:8001", EdgeSettings::default(), None);
        assert!(passes(
            &open,
            Method::GET,
            "/health",
            &[("host", "anything:1")]
        ));
        let edge = EdgeSettings {
            allowed_hosts: vec!["dbt.internal".into()],
            ..Default::default()
        };
        let strict = guard("0.0.0.0:8001", edge, None);
        assert!(passes(
            &strict,
            Method::GET,
            "/health",
            &[("host", "dbt.internal:8001")]
        ));
        assert!(!passes(
            &strict,
            Method::GET,
            "/health",
            &[("host", "anything:1")]
        ));
    }

    #[test]
    fn origins_other_than_the_own_and_the_allowed_are_refused() {
        let edge = EdgeSettings {
            allowed_origins: vec!["https://ui.example.com/".into()],
            ..Default::default()
        };
        let g = guard("127.0.0.1:8001", edge, None);
        let host = ("host", "localhost:8001");
        let post = |pairs: &[(&'static str, &str)]| passes(&g, Method::POST, "/api/v1/jobs", pairs);
        assert!(post(&[host]));
        assert!(post(&[host, ("origin", "http://localhost:8001")]));
        assert!(post(&[host, ("origin", "https://UI.example.com")]));
        assert!(post(&[host, ("sec-fetch-site", "same-origin")]));
        assert!(post(&[host, ("sec-fetch-site", "none")]));
        assert!(!post(&[host, ("origin", "https://evil.example")]));
        assert!(!post(&[host, ("origin", "null")]));
        assert!(!post(&[host, ("sec-fetch-site", "cross-site")]));
        assert!(!post(&[host, ("sec-fetch-site", "same-site")]));
        let get = |path| {
            passes(
                &g,
                Method::GET,
                path,
                &[host, ("origin", "https://evil.example")],
            )
        };
        assert!(get("/health") && get("/version") && get("/api/v1/openapi.json"));
        assert!(!get("/api/v1/jobs/x/logs/stream") && !get("/job/x/logs"));
        assert!(get("/") && get("/ui/jobs/x") && get("/ui/assets/app.js"));
        assert!(!post(&[host, ("origin", "https://evil.example")]) && !get("/ui"));
    }
}

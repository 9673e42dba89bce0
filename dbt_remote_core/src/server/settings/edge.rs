//! The settings of dbt-server's HTTP edge: which browser origins and `Host` names it accepts,
//! how long a connection may take or stay idle, how many are served at once, HTTP/2, and the
//! heartbeat of log streams (docs/security/http.md says which rule each one enforces).

use std::time::Duration;

use super::vars::{var, var_bool, var_parse};
use crate::env;
use crate::{Error, Result};

/// Default seconds a connection has to send a request's headers.
pub const DEFAULT_HEADER_READ_TIMEOUT_SECONDS: u64 = 30;
/// Default seconds a connection may stay idle between requests.
pub const DEFAULT_IDLE_TIMEOUT_SECONDS: u64 = 60;
/// Default seconds a request's body has to arrive.
pub const DEFAULT_BODY_READ_TIMEOUT_SECONDS: u64 = 300;
/// Default number of connections served at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default seconds between two heartbeats of a log stream.
pub const DEFAULT_SSE_HEARTBEAT_SECONDS: u64 = 5;

/// What the HTTP edge accepts and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSettings {
    /// Browser origins (`scheme://host[:port]`) allowed besides the server's own.
    pub allowed_origins: Vec<String>,
    /// `Host` names allowed besides the loopback names and the public URL's host. When set,
    /// a server on a non-loopback address checks `Host` too.
    pub allowed_hosts: Vec<String>,
    /// Time a connection has to send a request's headers.
    pub header_read_timeout: Duration,
    /// Time a connection may stay without any byte read or written between requests.
    pub idle_timeout: Duration,
    /// Time a request's whole body has to arrive (else 408).
    pub body_read_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog, unaccepted.
    pub max_connections: usize,
    /// Also serve HTTP/2 without TLS (h2c).
    pub http2: bool,
    /// Time between two heartbeat comments of a log stream.
    pub sse_heartbeat: Duration,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        EdgeSettings {
            allowed_origins: vec![],
            allowed_hosts: vec![],
            header_read_timeout: Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT_SECONDS),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECONDS),
            body_read_timeout: Duration::from_secs(DEFAULT_BODY_READ_TIMEOUT_SECONDS),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            http2: false,
            sse_heartbeat: Duration::from_secs(DEFAULT_SSE_HEARTBEAT_SECONDS),
        }
    }
}

/// A comma-separated list, without empty items.
fn var_list(name: &str) -> Vec<String> {
    var(name)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A number of seconds (at least 1), or `default`.
fn var_seconds(name: &str, default: Duration) -> Result<Duration> {
    match var_parse::<u64>(name)? {
        Some(0) => Err(Error::invalid(format!(
            "{name}=0: expected at least 1 second"
        ))),
        Some(secs) => Ok(Duration::from_secs(secs)),
        None => Ok(default),
    }
}

impl EdgeSettings {
    /// The defaults, overridden by every variable of [`crate::env`] that is set.
    pub fn from_env() -> Result<Self> {
        let d = EdgeSettings::default();
        Ok(EdgeSettings {
            allowed_origins: var_list(env::ALLOWED_ORIGINS),
            allowed_hosts: var_list(env::ALLOWED_HOSTS),
            header_read_timeout: var_seconds(
                env::HEADER_READ_TIMEOUT_SECONDS,
                d.header_read_timeout,
            )?,
            idle_timeout: var_seconds(env::IDLE_TIMEOUT_SECONDS, d.idle_timeout)?,
            body_read_timeout: var_seconds(env::BODY_READ_TIMEOUT_SECONDS, d.body_read_timeout)?,
            max_connections: match var_parse(env::MAX_CONNECTIONS)? {
                Some(0) => {
                    return Err(Error::invalid(format!(
                        "{}=0: expected at least 1 connection",
                        env::MAX_CONNECTIONS
                    )))
                }
                Some(n) => n,
                None => d.max_connections,
            },
            http2: var_bool(env::HTTP2)?.unwrap_or(false),
            sse_heartbeat: var_seconds(env::SSE_HEARTBEAT_SECONDS, d.sse_heartbeat)?,
        })
    }
}

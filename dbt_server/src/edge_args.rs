//! The flags of dbt-server's HTTP edge (origins, hosts, timeouts, connections), read into the
//! core's [`EdgeSettings`].

use std::time::Duration;

use clap::Args;
use dbt_remote_core::env;
use dbt_remote_core::server::{self as wiring, EdgeSettings};

#[derive(Args, Debug, Clone)]
pub struct EdgeArgs {
    /// Browser origins (comma-separated `scheme://host[:port]`) whose pages may call the
    /// server; any other Origin is refused with 403 [default: only the server's own].
    #[arg(long, env = env::ALLOWED_ORIGINS, value_name = "ORIGINS", value_delimiter = ',')]
    allowed_origins: Vec<String>,
    /// Host names (comma-separated) accepted in the Host header besides the loopback names
    /// and the host of --public-url; setting it also checks Host on a non-loopback address
    /// [default: none].
    #[arg(long, env = env::ALLOWED_HOSTS, value_name = "HOSTS", value_delimiter = ',')]
    allowed_hosts: Vec<String>,
    /// Seconds a connection has to send a request's headers.
    #[arg(long, env = env::HEADER_READ_TIMEOUT_SECONDS, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = wiring::DEFAULT_HEADER_READ_TIMEOUT_SECONDS)]
    header_read_timeout_seconds: u64,
    /// Seconds a connection may stay idle (no byte read or written) before it is closed.
    #[arg(long, env = env::IDLE_TIMEOUT_SECONDS, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = wiring::DEFAULT_IDLE_TIMEOUT_SECONDS)]
    idle_timeout_seconds: u64,
    /// Seconds a request's whole body has to arrive (else 408).
    #[arg(long, env = env::BODY_READ_TIMEOUT_SECONDS, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = wiring::DEFAULT_BODY_READ_TIMEOUT_SECONDS)]
    body_read_timeout_seconds: u64,
    /// Connections served at once; more wait, unaccepted, until one closes.
    #[arg(long, env = env::MAX_CONNECTIONS, value_parser = clap::value_parser!(u64).range(1..), default_value_t = wiring::DEFAULT_MAX_CONNECTIONS as u64)]
    max_connections: u64,
    /// Also serve HTTP/2 without TLS (h2c) [default: HTTP/1.1 only].
    #[arg(long, env = env::HTTP2, action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    http2: bool,
    /// Seconds between the heartbeat comments of a log stream.
    #[arg(long, env = env::SSE_HEARTBEAT_SECONDS, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..), default_value_t = wiring::DEFAULT_SSE_HEARTBEAT_SECONDS)]
    sse_heartbeat_seconds: u64,
}

impl EdgeArgs {
    /// The settings of these flags.
    pub fn settings(self) -> EdgeSettings {
        EdgeSettings {
            allowed_origins: self.allowed_origins,
            allowed_hosts: self.allowed_hosts,
            header_read_timeout: Duration::from_secs(self.header_read_timeout_seconds),
            idle_timeout: Duration::from_secs(self.idle_timeout_seconds),
            body_read_timeout: Duration::from_secs(self.body_read_timeout_seconds),
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            http2: self.http2,
            sse_heartbeat: Duration::from_secs(self.sse_heartbeat_seconds),
        }
    }
}

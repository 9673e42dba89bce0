//! dbt-server as a library: the HTTP routes over a [`JobService`], so tests and other Rust
//! programs can serve the API on a listener of their own.
// The warp filter of every route is one deep type; release builds need more room for it.
#![recursion_limit = "256"]

use std::future::Future;

use dbt_remote_core::JobService;

mod auth;
mod compat;
pub mod routes;

pub use routes::Config;

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: JobService,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    warp::serve(routes::routes(service, config))
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await;
}

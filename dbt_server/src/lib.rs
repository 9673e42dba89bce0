//! dbt-server as a library: the HTTP routes over a [`JobService`], so tests and other Rust
//! programs can serve the API on a listener of their own.
//!
//! Bottom-up: [`request`] reads requests into core types, [`reply`] turns every error and
//! rejection into an answer, [`auth`] gates the routes, [`routes`] (native) and [`compat`]
//! (0.4.6) hold the handlers.
// The warp filter of every route is one deep type; release builds need more room for it.
#![recursion_limit = "256"]

use std::future::Future;
use std::net::SocketAddr;

use dbt_remote_core::JobService;
use warp::Filter;

mod allow;
mod auth;
mod compat;
mod docs;
mod guard;
mod listen;
mod reply;
mod request;
pub mod routes;
mod schedules;
mod session;
mod ui;
mod ui_headers;

pub use routes::Config;

/// Every route of both protocols of a server listening on `local`, behind the guard (Host,
/// Origin) and the authentication gate, with every error and rejection answered by
/// [`reply::recover`].
pub fn app(
    service: JobService,
    config: Config,
    local: SocketAddr,
) -> impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible> + Clone {
    let guard = guard::Guard::new(&config.edge, config.public_url.as_deref(), local);
    let native = routes::routes(service.clone(), &config);
    let legacy = compat::routes(service, &config);
    let session = session::routes(&config);
    let answered = guard::filter(guard)
        .and(auth::gate(config.auth.clone()))
        .and(
            native
                .or(ui::routes())
                .unify()
                .or(legacy)
                .unify()
                .or(session)
                .unify(),
        )
        .recover(reply::recover)
        .unify();
    warp::path::full()
        .and(answered)
        .map(|path: warp::path::FullPath, answer| {
            allow::with_allow(path.as_str(), warp::Reply::into_response(answer))
        })
        .with(warp::log::custom(|info| {
            tracing::info!(
                target: "dbt_server::http",
                "{} {} {} {:?}",
                info.method(),
                info.path(),
                info.status().as_u16(),
                info.elapsed()
            );
        }))
}

/// Serves the API on `listener` until `shutdown` resolves, with the connection limits and
/// timeouts of `config.edge`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: JobService,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let local = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            tracing::error!("the listener has no address: {e}");
            return;
        }
    };
    let edge = config.edge.clone();
    listen::serve(listener, app(service, config, local), edge, shutdown).await;
}

//! The connections of the server: accepted up to a limit, served by hyper with a header-read
//! timeout and an idle timeout, HTTP/1.1 only unless HTTP/2 (h2c) is asked for, and closed
//! gracefully at shutdown.
//!
//! - Past `max_connections`, the server stops accepting: new connections wait in the kernel's
//!   listen backlog (their connect succeeds, no byte is answered) until one closes.
//! - `header_read_timeout`: a connection that has not sent a whole request head this long
//!   after it opened, or after its last answer (an idle keep-alive), is closed by hyper.
//! - `idle_timeout`: a connection on which no byte has been read or written this long is
//!   closed, whatever it is doing (a stalled body, a client that reads nothing).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use dbt_remote_core::server::EdgeSettings;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use warp::Filter;

/// Serves `filter` on the connections of `listener` until `shutdown` resolves, then waits
/// for the open connections to finish their requests.
pub(crate) async fn serve<F>(
    listener: TcpListener,
    filter: F,
    edge: EdgeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let service = warp::service(filter);
    let slots = Arc::new(Semaphore::new(edge.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A free slot first: past the limit, connections wait unaccepted.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let stream = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let stream = match stream {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(service.clone());
        let watcher = graceful.watcher();
        let edge = edge.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let (io, activity) = Tracked::new(stream);
            let builder = builder(&edge);
            // Not `serve_connection_with_upgrades`: it ignores `http1_only`, and no route upgrades.
            let conn = builder.serve_connection(TokioIo::new(io), service);
            let conn = watcher.watch(conn.into_owned());
            tokio::select! {
                result = conn => {
                    if let Err(e) = result {
                        tracing::debug!("connection ended: {e}");
                    }
                }
                _ = activity.idle(edge.idle_timeout) => {
                    tracing::debug!("closing a connection idle for {:?}", edge.idle_timeout);
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// hyper's connection settings of `edge`.
fn builder(edge: &EdgeSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(edge.header_read_timeout)
        .keep_alive(true);
    if edge.http2 {
        builder.http2().timer(TokioTimer::new());
        builder
    } else {
        builder.http1_only()
    }
}

/// After a failed accept (e.g. out of file descriptors), wait a little rather than spin.
async fn accept_failed(e: io::Error) {
    tracing::warn!("could not accept a connection: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// When a connection last read or wrote a byte, in milliseconds since it opened.
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once no byte has moved for `timeout`.
    async fn idle(&self, timeout: Duration) {
        loop {
            let last = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A TCP stream that records its activity.
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl Tracked {
    fn new(stream: TcpStream) -> (Tracked, Arc<Activity>) {
        let activity = Arc::new(Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        });
        let tracked = Tracked {
            stream,
            activity: activity.clone(),
        };
        (tracked, activity)
    }

    fn moved<T>(
        &self,
        poll: Poll<io::Result<T>>,
        bytes: impl Fn(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        if let Poll::Ready(Ok(n)) = &poll {
            if bytes(n) {
                self.activity.touch();
            }
        }
        poll
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len() > before;
        self.moved(poll, |_| read)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.moved(poll, |n| *n > 0)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.moved(poll, |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

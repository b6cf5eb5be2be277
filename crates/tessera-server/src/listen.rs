//! Serving connections: the accept loop with a cap on open connections, and per connection
//! hyper's HTTP/1 with a header-read timeout, an idle keep-alive timeout and graceful
//! shutdown. Slow or idle clients therefore cannot hold the server; the body-read timeout is
//! applied where bodies are read (`http::JsonBody`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::config::HttpLimits;

/// The most a request's line and headers may take: room for the longest URI the `http` crate
/// parses (64 KiB; longer ones get 414) plus headers. More gets 431, as Node answers above its
/// 16 KiB, and no connection can make the server buffer more than this for a head.
const MAX_HEAD_BYTES: usize = 96 * 1024;

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets each
/// connection finish the request it is serving, and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    store_descriptors: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let reserved = store_descriptors + RESERVED_DESCRIPTORS;
    let slots = Arc::new(Semaphore::new(connection_cap(
        limits.max_connections,
        reserved,
    )));
    let (stop, stopping) = watch::channel(false);
    let (open, open_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let conn = Connection {
            app: app.clone(),
            limits: limits.clone(),
            stopping: stopping.clone(),
            _open: open_rx.clone(),
            _slot: slot,
        };
        tokio::spawn(conn.run(stream, peer));
    }
    drop(listener);
    stop.send_replace(true);
    drop(open_rx);
    open.closed().await;
    Ok(())
}

/// File descriptors kept free, beside the store's own, for the listener, logs and a margin.
const RESERVED_DESCRIPTORS: usize = 64;

/// `SERVER_MAX_CONNECTIONS`, lowered to what the process's open-file limit allows: above it,
/// accepts would fail instead of waiting, and the database could not open a reader.
fn connection_cap(configured: usize, reserved: usize) -> usize {
    let Some(soft) = descriptor_limit() else {
        return configured;
    };
    let allowed = soft.saturating_sub(reserved).max(1);
    if configured > allowed {
        tracing::warn!(
            configured,
            allowed,
            "SERVER_MAX_CONNECTIONS is above what the open-file limit allows; using the lower value"
        );
        return allowed;
    }
    configured
}

/// The soft limit on open files, where the system tells it (Linux's `/proc/self/limits`).
fn descriptor_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// A failed accept: a connection reset before it was accepted is nothing; anything else (out
/// of file descriptors, say) is logged and retried after a pause rather than spun on.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// One accepted connection and what it holds while open.
struct Connection {
    app: Router,
    limits: HttpLimits,
    stopping: watch::Receiver<bool>,
    /// Dropped when the connection ends; `serve` waits for all of these at shutdown.
    _open: watch::Receiver<()>,
    /// The connection's place under `SERVER_MAX_CONNECTIONS`.
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(mut self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched {
            inner: stream,
            activity: activity.clone(),
        });
        let app = self.app.clone();
        let busy = activity.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let serving = busy.begin();
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                let res = app.oneshot(req).await;
                drop(serving);
                res
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.headers_timeout)
            .max_buf_size(MAX_HEAD_BYTES)
            .keep_alive(true);
        let conn = builder.serve_connection(io, service);
        let mut conn = std::pin::pin!(conn);
        let idle = activity.idle_for(self.limits.keep_alive_timeout);
        let mut idle = std::pin::pin!(idle);
        let mut draining = false;
        loop {
            tokio::select! {
                done = conn.as_mut() => {
                    if let Err(e) = done {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    return;
                }
                _ = self.stopping.wait_for(|s| *s), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                () = &mut idle => return,
            }
        }
    }
}

/// When a connection last moved bytes, and how many of its requests are being served.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    serving: AtomicUsize,
}

/// Marks a request as being served until dropped.
struct Serving(Arc<Activity>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.touch();
        self.0.serving.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            serving: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::SeqCst);
    }

    fn begin(self: &Arc<Self>) -> Serving {
        self.serving.fetch_add(1, Ordering::SeqCst);
        Serving(self.clone())
    }

    /// Resolves once the connection has served nothing and moved no byte for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::SeqCst));
            let due = last + limit;
            let now = Instant::now();
            if now >= due {
                if self.serving.load(Ordering::SeqCst) == 0 {
                    return;
                }
                tokio::time::sleep(limit).await;
            } else {
                tokio::time::sleep_until(due).await;
            }
        }
    }
}

/// A stream that records every byte it moves in its connection's [`Activity`].
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let out = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        out
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let out = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(out, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        out
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let out = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(out, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        out
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_under_the_open_file_limit() {
        if let Some(soft) = descriptor_limit() {
            assert!(connection_cap(usize::MAX, 100) < soft);
            assert_eq!(connection_cap(1, 100), 1);
        }
    }
}

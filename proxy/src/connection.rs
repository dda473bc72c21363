//! Connections on the public listeners, before and between requests.
//!
//! Pingora's HTTP/1 reader applies a timeout to each read, so a client that
//! sends a head one byte at a time keeps a connection forever. This layer
//! wraps Pingora's proxy application and gives every request head a
//! deadline: `header_timeout` from the moment a new connection is
//! accepted, and `keepalive_timeout` for an idle keep-alive connection to
//! start and finish the head of its next request. A connection that misses
//! its deadline is closed without a response.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;

use crate::metrics::METRICS;
use crate::proxy::ActiasProxy;

tokio::task_local! {
    /// Set by the proxy once the current request's head has been read.
    static HEAD_READ: Arc<AtomicBool>;
}

/// Records that the head of the request in progress on this task was read.
/// Does nothing outside a connection task.
pub fn mark_head_read() {
    let _ = HEAD_READ.try_with(|flag| flag.store(true, Ordering::Relaxed));
}

/// The public listeners' application: Pingora's proxy with head deadlines
/// and a cap on open connections.
pub struct Connections {
    proxy: Arc<HttpProxy<ActiasProxy>>,
    header_timeout: Duration,
    keepalive_timeout: Duration,
    max_connections: usize,
    send_timeout: Duration,
    open: Arc<AtomicUsize>,
    /// Wall time, in seconds since the Unix epoch, of the last warning
    /// about a rejected connection, so that a flood logs one line a second.
    last_warning: AtomicU64,
}

/// One open connection, counted until it is dropped.
struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        METRICS.connections_open.dec();
    }
}

impl Connections {
    pub fn new(
        proxy: HttpProxy<ActiasProxy>,
        header_timeout: Duration,
        keepalive_timeout: Duration,
        max_connections: usize,
        send_timeout: Duration,
    ) -> Self {
        Self {
            proxy: Arc::new(proxy),
            header_timeout,
            keepalive_timeout,
            max_connections,
            send_timeout,
            open: Arc::new(AtomicUsize::new(0)),
            last_warning: AtomicU64::new(0),
        }
    }

    /// Counts a new connection, or returns `None` when `max_connections`
    /// are already open.
    fn admit(&self) -> Option<OpenConnection> {
        let admitted = self
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                (open < self.max_connections).then_some(open + 1)
            })
            .is_ok();
        if admitted {
            METRICS.connections_open.inc();
            return Some(OpenConnection(self.open.clone()));
        }
        METRICS.connections_rejected.inc();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        if self.last_warning.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(
                max_connections = self.max_connections,
                "closed a new connection because limits.max_connections are open"
            );
        }
        None
    }

    /// Runs one request on `session`. Returns `None` when the connection
    /// must close, including when the head missed `deadline`.
    async fn serve_one(
        &self,
        session: ServerSession,
        deadline: Duration,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let head_read = Arc::new(AtomicBool::new(false));
        let work = HEAD_READ.scope(
            head_read.clone(),
            self.proxy.process_new_http(session, shutdown),
        );
        tokio::pin!(work);
        let reused = tokio::select! {
            biased;
            reused = &mut work => reused,
            _ = tokio::time::sleep(deadline) => {
                if !head_read.load(Ordering::Relaxed) {
                    tracing::debug!(timeout_ms = deadline.as_millis() as u64, "request head timed out");
                    return None;
                }
                work.await
            }
        };
        reused.map(|reused| reused.consume().0)
    }
}

#[async_trait]
impl ServerApp for Connections {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = self.admit()?;
        // Pingora's own idle timeout, in whole seconds, is set past the
        // deadline so that the deadline is what closes idle connections.
        let keepalive_seconds = self.keepalive_timeout.as_secs() + 2;
        let mut stream = stream;
        let mut deadline = self.header_timeout;
        loop {
            let mut session = ServerSession::new_http1(stream);
            // A client that stops reading would otherwise keep the response,
            // and its memory, for as long as the connection stays open.
            session.set_write_timeout(Some(self.send_timeout));
            if *shutdown.borrow() {
                session.set_keepalive(None);
            } else {
                session.set_keepalive(Some(keepalive_seconds));
            }
            stream = self.serve_one(session, deadline, shutdown).await?;
            deadline = self.keepalive_timeout;
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

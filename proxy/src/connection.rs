//! Connections on the public listeners, before and between requests.
//!
//! Pingora's HTTP/1 reader applies a timeout to each read, so a client that
//! sends a head one byte at a time keeps a connection forever. This layer
//! wraps Pingora's proxy application and gives every request head a
//! deadline: `header_timeout` from the moment a new connection is
//! accepted, and `keepalive_timeout` for an idle keep-alive connection to
//! start and finish the head of its next request. A connection that misses
//! its deadline is closed without a response.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;

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

/// The public listeners' application: Pingora's proxy with head deadlines.
pub struct Connections {
    proxy: Arc<HttpProxy<ActiasProxy>>,
    header_timeout: Duration,
    keepalive_timeout: Duration,
}

impl Connections {
    pub fn new(
        proxy: HttpProxy<ActiasProxy>,
        header_timeout: Duration,
        keepalive_timeout: Duration,
    ) -> Self {
        Self {
            proxy: Arc::new(proxy),
            header_timeout,
            keepalive_timeout,
        }
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
        // Pingora's own idle timeout, in whole seconds, is set past the
        // deadline so that the deadline is what closes idle connections.
        let keepalive_seconds = self.keepalive_timeout.as_secs() + 2;
        let mut stream = stream;
        let mut deadline = self.header_timeout;
        loop {
            let mut session = ServerSession::new_http1(stream);
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

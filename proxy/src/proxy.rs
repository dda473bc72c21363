//! The request path: Pingora's `ProxyHttp` phases, one module each.
//!
//! One request makes one pass:
//! 1. `request_filter` finds the route in the snapshot and runs its script,
//!    which either responds or records edits for the origin.
//! 2. `upstream_peer` picks a server of the route's origin.
//! 3. `upstream_request_filter` applies the recorded edits and adds the
//!    forwarding headers.
//! 4. `logging` writes the access-log line and records the metrics.
//!
//! `fail_to_proxy` turns origin failures into 502 and 504 responses.

mod context;
mod front_door;
mod logging;
mod request_filter;
mod respond;
mod upstream_peer;
mod upstream_request_filter;

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::prelude::*;
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{ErrorSource, ErrorType};

pub use context::{RequestContext, IN_FLIGHT};

use crate::metrics::METRICS;
use crate::snapshot::Snapshot;

/// The proxy service, with the current snapshot.
pub struct ActiasProxy {
    snapshot: Arc<ArcSwap<Snapshot>>,
}

impl ActiasProxy {
    /// Creates the service around a shared, swappable snapshot.
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>) -> Self {
        Self { snapshot }
    }
}

#[async_trait]
impl ProxyHttp for ActiasProxy {
    type CTX = RequestContext;

    /// Starts a request on the snapshot that is current now.
    fn new_ctx(&self) -> Self::CTX {
        crate::connection::mark_head_read();
        RequestContext::new(self.snapshot.load_full())
    }

    /// Runs first for every request. Returns `true` when the response has
    /// been written here (by a script, or as 404, 405 or 500) and `false`
    /// to continue to the origin.
    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        request_filter::run(session, ctx).await
    }

    /// Runs when the request goes to an origin; returns the server to use.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        upstream_peer::select(ctx)
    }

    /// Runs before the request header is sent to the origin; applies the
    /// script's edits and the forwarding headers.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        upstream_request_filter::apply(session, upstream_request, ctx)
    }

    /// Runs when proxying fails; writes 502, or 504 for an origin timeout.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        error: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        upstream_peer::fail(session, error, ctx).await
    }

    /// Runs after a connection to the origin is made or taken from the pool.
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&Digest>,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let origin = ctx.origin_name.as_deref().unwrap_or("");
        let reused = if reused { "true" } else { "false" };
        METRICS
            .origin_connections
            .with_label_values(&[origin, reused])
            .inc();
        Ok(())
    }

    /// Keeps Pingora from logging, at error level, clients that went away
    /// (the client's doing, in the access log) and origin failures (logged
    /// as warnings with the request id by `fail_to_proxy`).
    fn suppress_error_log(&self, _session: &Session, _ctx: &Self::CTX, error: &Error) -> bool {
        match error.esource() {
            ErrorSource::Upstream => true,
            ErrorSource::Downstream => matches!(
                error.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            ),
            _ => false,
        }
    }

    /// Runs once at the end of every request, whatever happened.
    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut Self::CTX) {
        logging::write(session, error, ctx);
    }
}

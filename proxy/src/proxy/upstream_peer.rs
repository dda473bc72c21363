//! Second phase: choose the origin server, and respond when the origin fails.

use pingora::prelude::*;
use pingora::proxy::{FailToProxy, Session};
use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora::ErrorType;

use super::{respond, RequestContext};
use crate::metrics::METRICS;

/// Picks the next server of the matched route's origin.
pub fn select(ctx: &mut RequestContext) -> Result<Box<HttpPeer>> {
    let origin = ctx
        .route
        .and_then(|index| ctx.snapshot.routes.get(index))
        .and_then(|route| route.origin.as_ref());
    let Some(origin) = origin else {
        return Error::e_explain(
            ErrorType::InternalError,
            "the request reached upstream_peer without a route origin",
        );
    };
    let Some(peer) = origin.select_peer() else {
        return Error::e_explain(
            ErrorType::ConnectNoRoute,
            format!("origin `{}` has no server to send to", origin.name),
        );
    };
    ctx.origin_name = Some(origin.name.clone());
    ctx.origin_address = Some(peer.address().to_string());
    ctx.origin_started = Some(std::time::Instant::now());
    Ok(Box::new(peer))
}

/// Writes the error response for a request that could not be proxied:
/// 504 when the origin timed out, 502 for other origin failures.
pub async fn fail(session: &mut Session, error: &Error, ctx: &mut RequestContext) -> FailToProxy {
    let timed_out = matches!(
        error.etype(),
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
    );
    let (status, message) = match (error.etype(), error.esource()) {
        (ErrorType::HTTPStatus(code), _) => (*code, "the request failed"),
        (_, source) => match source {
            ErrorSource::Upstream if timed_out => {
                (504, "504 Gateway Timeout: the origin timed out")
            }
            ErrorSource::Upstream => (502, "502 Bad Gateway: the origin failed"),
            ErrorSource::Downstream => match error.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                    (0, "")
                }
                _ => (
                    400,
                    "400 Bad Request: the request body could not be read; it has an invalid \
                     chunk or ended before its length",
                ),
            },
            ErrorSource::Internal | ErrorSource::Unset => (500, "500 Internal Server Error"),
        },
    };

    if let (Some(origin), ErrorSource::Upstream) = (&ctx.origin_name, error.esource()) {
        let kind = if timed_out {
            "timeout"
        } else if matches!(
            error.etype(),
            ErrorType::ConnectError
                | ErrorType::ConnectRefused
                | ErrorType::ConnectNoRoute
                | ErrorType::TLSHandshakeFailure
        ) {
            "connect"
        } else {
            "other"
        };
        METRICS
            .origin_failures
            .with_label_values(&[origin.as_str(), kind])
            .inc();
    }
    if status >= 500 {
        tracing::warn!(
            request_id = %ctx.request_id,
            route = %ctx.route_name(),
            origin = ctx.origin_address.as_deref().unwrap_or("-"),
            status,
            error = %error,
            "request to origin failed"
        );
    }
    if status > 0 && session.response_written().is_none() {
        // The connection closes after this response, and the response
        // carries `Connection: close`.
        session.set_keepalive(None);
        if let Err(e) = respond::error(session, status, message, &ctx.request_id, &[]).await {
            tracing::debug!(request_id = %ctx.request_id, error = %e, "cannot write error response");
        }
    }
    FailToProxy {
        error_code: status,
        can_reuse_downstream: false,
    }
}

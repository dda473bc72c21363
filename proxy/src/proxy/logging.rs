//! Last phase: one access-log line per request.

use pingora::prelude::*;
use pingora::proxy::Session;

use super::RequestContext;

/// Writes the access-log line for a finished request under the
/// `actias::access` target.
pub fn write(session: &mut Session, error: Option<&Error>, ctx: &mut RequestContext) {
    let status = session
        .response_written()
        .map_or(0, |response| response.status.as_u16());
    let request = session.req_header();
    let client = session
        .client_addr()
        .and_then(|address| address.as_inet())
        .map(|address| address.ip().to_string())
        .unwrap_or_default();
    let host = request
        .headers
        .get(http::header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    tracing::info!(
        target: "actias::access",
        request_id = %ctx.request_id,
        client = %client,
        method = %request.method,
        host = %host,
        path = %request.uri.path(),
        status,
        bytes = session.body_bytes_sent(),
        route = %ctx.route_name(),
        script = ctx.script_ran,
        origin = ctx.origin_address.as_deref().unwrap_or("-"),
        duration_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
        error = error.map(|e| e.to_string()).unwrap_or_default(),
    );
}

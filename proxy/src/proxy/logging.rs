//! Last phase: the access-log line and the request metrics.

use pingora::prelude::*;
use pingora::proxy::Session;

use super::RequestContext;
use crate::logging::{field, ACCESS_TARGET};
use crate::metrics::{status_class, METRICS, UNMATCHED};

/// Records the metrics of a finished request and writes its access-log
/// line under the `actias::access` target.
pub fn write(session: &mut Session, error: Option<&Error>, ctx: &mut RequestContext) {
    let status = session
        .response_written()
        .map_or(0, |response| response.status.as_u16());
    let elapsed = ctx.started.elapsed();
    record_metrics(session, status, elapsed.as_secs_f64(), ctx);

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
        target: ACCESS_TARGET,
        request_id = %ctx.request_id,
        client = %client,
        method = %request.method,
        host = %field(host),
        path = %field(truncate(request.uri.path(), MAX_LOGGED_PATH)),
        status,
        bytes = session.body_bytes_sent(),
        route = %ctx.route_name(),
        script = ctx.script_ran,
        origin = ctx.origin_address.as_deref().unwrap_or("-"),
        duration_ms = (elapsed.as_secs_f64() * 1e6).round() / 1000.0,
        error = %match (&ctx.logged_error, error) {
            (Some(script), _) => field(script).into_owned(),
            (None, Some(e)) => field(&e.to_string()).into_owned(),
            (None, None) => String::new(),
        },
    );
}

/// Longest path written to the access log, in bytes, so that a client
/// cannot make each line as long as its request target.
const MAX_LOGGED_PATH: usize = 2048;

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn record_metrics(session: &Session, status: u16, seconds: f64, ctx: &RequestContext) {
    let route_metrics = match ctx.route.and_then(|index| ctx.snapshot.routes.get(index)) {
        Some(route) => &*route.metrics,
        None => &*UNMATCHED,
    };
    route_metrics.count_request(session.req_header().method.as_str(), status);
    route_metrics.request_duration.observe(seconds);
    let class = status_class(status);

    if let (Some(origin), Some(started)) = (&ctx.origin_name, ctx.origin_started) {
        METRICS
            .origin_requests
            .with_label_values(&[origin.as_str(), class])
            .inc();
        METRICS
            .origin_duration
            .with_label_values(&[origin.as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
}

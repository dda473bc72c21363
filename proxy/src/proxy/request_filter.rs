//! First phase: find the route and run its script.

use bytes::{Bytes, BytesMut};
use http::header::{ALLOW, CONTENT_LENGTH, HOST};
use http::HeaderValue;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::{respond, RequestContext};
use crate::metrics::{thread_cpu_seconds, METRICS};
use crate::routing::{normalize_host, Lookup, NormalizedPath};
use crate::script::{Outcome, RequestInput};

/// Largest body that is shown to a script and can still be forwarded to
/// the origin afterwards. Pingora replays a body it has already read from
/// a buffer of this size (64 KiB in Pingora 0.9).
const REPLAYABLE_BODY_BYTES: usize = 64 * 1024;

/// Finds the route and runs its script. Returns `true` when a response was
/// written.
pub async fn run(session: &mut Session, ctx: &mut RequestContext) -> Result<bool> {
    let snapshot = ctx.snapshot.clone();
    let request = session.req_header();
    let host_header = request
        .headers
        .get(HOST)
        .and_then(|value| value.to_str().ok())
        .or_else(|| request.uri.host())
        .unwrap_or("");
    let host = normalize_host(host_header);
    let path = NormalizedPath::parse(request.uri.path());
    let method = request.method.as_str().to_string();
    let host_header = host_header.to_string();

    let (route_index, params) = match snapshot.router.lookup(&host, &method, &path) {
        Lookup::Found { route, params } => (route, params),
        Lookup::NotFound => {
            tracing::debug!(request_id = %ctx.request_id, %host, "no route matches");
            let message = "404 Not Found: no route matches this host and path";
            respond::error(session, 404, message, &ctx.request_id, &[]).await?;
            return Ok(true);
        }
        Lookup::MethodNotAllowed { allow } => {
            let allow = HeaderValue::from_str(&allow.join(", "))
                .unwrap_or_else(|_| HeaderValue::from_static(""));
            let message = "405 Method Not Allowed: this path takes other methods";
            respond::error(session, 405, message, &ctx.request_id, &[(ALLOW, allow)]).await?;
            return Ok(true);
        }
    };
    ctx.route = Some(route_index);
    let route = &snapshot.routes[route_index];
    tracing::debug!(request_id = %ctx.request_id, route = %route.name, "route matched");
    let Some(script) = &route.script else {
        return Ok(false);
    };

    let body = match read_body(session, route.origin.is_some(), &snapshot.limits).await? {
        BodyRead::Read(body) => body,
        BodyRead::TooLarge(limit) => {
            let message = format!("413 Content Too Large: the request body exceeds {limit} bytes");
            respond::error(session, 413, &message, &ctx.request_id, &[]).await?;
            session.set_keepalive(None);
            return Ok(true);
        }
    };

    let request = session.req_header();
    let input = RequestInput {
        request_id: &ctx.request_id,
        method: &method,
        url: format!("http://{host_header}{}", request.uri),
        path: path.to_path_string(),
        raw_path: request.uri.path(),
        raw_query: request.uri.query(),
        headers: &request.headers,
        body,
        params: &params,
        host: &host,
        client_ip: client_ip(session),
        route: &route.name,
    };
    let cpu_start = thread_cpu_seconds();
    let outcome = script.run(&input);
    drop(input);
    ctx.script_ran = true;
    METRICS
        .script_cpu
        .with_label_values(&[route.name.as_str()])
        .observe(thread_cpu_seconds() - cpu_start);
    let result = if outcome.is_ok() { "ok" } else { "error" };
    METRICS
        .script_runs
        .with_label_values(&[route.name.as_str(), result])
        .inc();

    match outcome {
        Ok(Outcome::Respond(response)) => {
            respond::send(
                session,
                response.status.as_u16(),
                &response.headers,
                response.body,
            )
            .await?;
            Ok(true)
        }
        Ok(Outcome::FallThrough(edits)) => {
            if route.origin.is_none() {
                tracing::warn!(
                    request_id = %ctx.request_id,
                    route = %route.name,
                    script = %script.chunk_name,
                    "script returned nothing and the route has no origin"
                );
                let message = "502 Bad Gateway: the script returned no response and this \
                               route has no origin to forward to";
                respond::error(session, 502, message, &ctx.request_id, &[]).await?;
                return Ok(true);
            }
            ctx.edits = Some(edits);
            Ok(false)
        }
        Err(error) => {
            tracing::warn!(
                request_id = %ctx.request_id,
                route = %route.name,
                script = %script.chunk_name,
                error = %error,
                "script failed"
            );
            let message = "500 Internal Server Error: the script failed";
            respond::error(session, 500, message, &ctx.request_id, &[]).await?;
            Ok(true)
        }
    }
}

enum BodyRead {
    /// The body, or `None` when it was left unread for the origin.
    Read(Option<Bytes>),
    /// The body exceeds this many bytes.
    TooLarge(usize),
}

/// Reads the request body for the script.
///
/// On a route with an origin, only a body whose declared length fits the
/// replay buffer is read, so that it can still be forwarded; longer or
/// chunked bodies stream to the origin unread and the script sees `nil`.
async fn read_body(
    session: &mut Session,
    has_origin: bool,
    limits: &crate::config::LimitsSection,
) -> Result<BodyRead> {
    if session.as_downstream_mut().is_body_empty() {
        return Ok(BodyRead::Read(Some(Bytes::new())));
    }
    let declared = session
        .req_header()
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());

    let limit = if has_origin {
        match declared {
            Some(length) if length <= REPLAYABLE_BODY_BYTES => {
                session.as_downstream_mut().enable_retry_buffering();
                length
            }
            _ => return Ok(BodyRead::Read(None)),
        }
    } else {
        limits.max_request_body_bytes
    };
    if declared.is_some_and(|length| length > limit) {
        return Ok(BodyRead::TooLarge(limit));
    }

    let mut body = BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > limit {
            return Ok(BodyRead::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(BodyRead::Read(Some(body.freeze())))
}

fn client_ip(session: &Session) -> String {
    session
        .client_addr()
        .and_then(|address| address.as_inet())
        .map(|address| address.ip().to_string())
        .unwrap_or_default()
}

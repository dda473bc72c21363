//! First phase: find the route and run its script.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use http::header::{ALLOW, CONTENT_LENGTH, HOST};
use http::HeaderValue;
use pingora::prelude::*;
use pingora::proxy::Session;

use super::{front_door, respond, RequestContext};
use crate::config::OnFailure;
use crate::metrics::METRICS;
use crate::routing::{encode_path, normalize_host, Lookup, NormalizedPath};
use crate::script::{Outcome, RequestInput, ScriptError};

/// Largest body that is shown to a script and can still be forwarded to
/// the origin afterwards. Pingora replays a body it has already read from
/// a buffer of this size (64 KiB in Pingora 0.9).
const REPLAYABLE_BODY_BYTES: usize = 64 * 1024;

/// Finds the route and runs its script. Returns `true` when a response was
/// written.
pub async fn run(session: &mut Session, ctx: &mut RequestContext) -> Result<bool> {
    let snapshot = ctx.snapshot.clone();
    let raw_head = || {
        session
            .as_downstream()
            .as_http1()
            .map(|http1| http1.get_headers_raw_bytes())
    };
    if let Some(rejection) = front_door::check(session.req_header(), raw_head, &snapshot.limits) {
        tracing::debug!(request_id = %ctx.request_id, status = rejection.status, "request head rejected");
        ctx.logged_error = Some(rejection.message.to_string());
        session.set_keepalive(None);
        respond::error(
            session,
            rejection.status,
            rejection.message,
            &ctx.request_id,
            &[],
        )
        .await?;
        return Ok(true);
    }
    let request = session.req_header();
    // An absolute-form target's authority takes precedence over Host
    // (RFC 9112, section 3.2.2).
    let host_header = request
        .uri
        .authority()
        .map(|authority| authority.as_str())
        .or_else(|| {
            request
                .headers
                .get(HOST)
                .and_then(|value| value.to_str().ok())
        })
        .unwrap_or("");
    let host = normalize_host(host_header);
    let path = NormalizedPath::parse(request.uri.path());
    if path.restructured {
        // The origin must see the path that was routed, not one that its own
        // normalisation could resolve to a route this request did not match.
        ctx.forward_path = Some(encode_path(&path.to_path_string()));
    }
    let method = request.method.as_str().to_string();
    let host_header = host_header.to_string();

    let lookup = snapshot.router.lookup(&host, &method, &path);
    if let Some(lenient) = NormalizedPath::parse_as_lenient_origin(request.uri.path()) {
        // An origin that decodes `%2F` to `/` or drops `;` parameters
        // serves another reading of this path. Refuse when that reading
        // belongs to another route, or climbs out of its directory to a
        // path that no route may take.
        let other = snapshot.router.lookup(&host, &method, &lenient).route();
        if other != lookup.route() && (other.is_some() || lenient.restructured) {
            tracing::debug!(request_id = %ctx.request_id, %host, "lenient path reading changes the route");
            let message = "400 Bad Request: read as some origins read it, with encoded slashes \
                           (%2F, %5C) as slashes and `;` parameters removed, this path would \
                           take another route";
            ctx.logged_error = Some(message.to_string());
            session.set_keepalive(None);
            respond::error(session, 400, message, &ctx.request_id, &[]).await?;
            return Ok(true);
        }
    }
    let (route_index, params) = match lookup {
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
    if crate::fetch::sent_by_route(&session.req_header().headers, &route.name) {
        // The handler that sent this subrequest keeps a VM of this route
        // while it waits, so running the script again could exhaust them.
        tracing::warn!(
            request_id = %ctx.request_id,
            route = %route.name,
            "rejected a subrequest that came back to the route that sent it"
        );
        let message =
            "508 Loop Detected: a script's subrequest came back to the route that sent it";
        respond::error(session, 508, message, &ctx.request_id, &[]).await?;
        return Ok(true);
    }

    let limits = BodyLimits {
        per_request: route.max_request_body_bytes,
        all_requests: snapshot.limits.max_buffered_body_bytes,
    };
    // The reservation lives until the script has run, since the script's
    // request table refers to the body.
    let (body, _reservation) = match read_body(session, route.origin.is_some(), limits).await? {
        BodyRead::Read(body, reservation) => (body, reservation),
        BodyRead::Busy => {
            tracing::warn!(
                request_id = %ctx.request_id,
                route = %route.name,
                limit = limits.all_requests,
                "request body rejected: limits.max_buffered_body_bytes are in use"
            );
            bodies_busy(session, ctx).await?;
            return Ok(true);
        }
        BodyRead::TooLarge(limit) => {
            let message = format!(
                "413 Content Too Large: the request body exceeds {limit} bytes \
                 (limits.max_request_body_bytes)"
            );
            ctx.logged_error = Some(message.clone());
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
    let (outcome, cpu_used) = script.run(&input, route.cpu_limit).await;
    drop(input);
    ctx.script_ran = true;
    route.metrics.script_cpu.observe(cpu_used.as_secs_f64());
    match &outcome {
        Ok(_) => route.metrics.script_ok.inc(),
        Err(ScriptError::Limit { .. }) => route.metrics.script_limit.inc(),
        Err(_) => route.metrics.script_error.inc(),
    }

    match outcome {
        Ok(Outcome::Respond(response)) => {
            // A client that does not read keeps the body in memory until
            // the write finishes or `send_timeout_ms` passes, so the body
            // shares the budget of request bodies while it is written.
            let mut response_reservation = BodyReservation::default();
            let is_head = method == "HEAD";
            if !is_head && !response_reservation.grow(response.body.len(), limits.all_requests) {
                tracing::warn!(
                    request_id = %ctx.request_id,
                    route = %route.name,
                    bytes = response.body.len(),
                    limit = limits.all_requests,
                    "script response dropped: limits.max_buffered_body_bytes are in use"
                );
                bodies_busy(session, ctx).await?;
                return Ok(true);
            }
            respond::send(
                session,
                response.status.as_u16(),
                &response.headers,
                response.body,
            )
            .await?;
            drop(response_reservation);
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
            let text = error.to_string();
            let first = text.lines().next().unwrap_or_default();
            ctx.logged_error = Some(crate::logging::one_line(first));
            let (status, message) = match &error {
                ScriptError::Limit { message, detail } => {
                    tracing::warn!(
                        request_id = %ctx.request_id,
                        route = %route.name,
                        script = %script.chunk_name,
                        limit = %message,
                        error = %crate::logging::one_line(detail),
                        "script stopped by a limit"
                    );
                    (
                        route.limit_status,
                        "the script exceeded its CPU time or memory limit",
                    )
                }
                _ => {
                    tracing::warn!(
                        request_id = %ctx.request_id,
                        route = %route.name,
                        script = %script.chunk_name,
                        error = %crate::logging::one_line(&error.to_string()),
                        "script failed"
                    );
                    (route.error_status, "the script failed")
                }
            };
            if route.on_failure == OnFailure::Origin && route.origin.is_some() {
                return Ok(false);
            }
            let reason = http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error");
            let text = format!("{status} {reason}: {message}");
            respond::error(session, status, &text, &ctx.request_id, &[]).await?;
            Ok(true)
        }
    }
}

/// Sends 503 when a body does not fit in `limits.max_buffered_body_bytes`,
/// and closes the connection, since an unread request body may follow.
async fn bodies_busy(session: &mut Session, ctx: &mut RequestContext) -> Result<()> {
    let message = "503 Service Unavailable: bodies in memory have reached \
                   limits.max_buffered_body_bytes; retry shortly";
    ctx.logged_error = Some(message.to_string());
    let retry = (http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    session.set_keepalive(None);
    respond::error(session, 503, message, &ctx.request_id, &[retry]).await
}

enum BodyRead {
    /// The body, or `None` when it was left unread for the origin, and
    /// its share of the process-wide body memory.
    Read(Option<Bytes>, BodyReservation),
    /// The body exceeds this many bytes.
    TooLarge(usize),
    /// The body does not fit in what is left of the process-wide limit.
    Busy,
}

/// Body size limits for one request.
#[derive(Clone, Copy)]
struct BodyLimits {
    /// The route's `max_request_body_bytes`.
    per_request: usize,
    /// `limits.max_buffered_body_bytes`, for every request together.
    all_requests: usize,
}

/// Request body bytes held for scripts across the process.
static BUFFERED_BODY_BYTES: AtomicUsize = AtomicUsize::new(0);

/// A share of the process-wide body memory, returned when dropped.
#[derive(Default)]
struct BodyReservation {
    bytes: usize,
}

impl BodyReservation {
    /// Adds `more` bytes to the share, or returns false when they do not
    /// fit under `limit` together with every other request's share.
    fn grow(&mut self, more: usize, limit: usize) -> bool {
        let reserved =
            BUFFERED_BODY_BYTES.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|total| *total <= limit)
            });
        if reserved.is_err() {
            return false;
        }
        self.bytes += more;
        METRICS.body_buffered.add(more as i64);
        true
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        BUFFERED_BODY_BYTES.fetch_sub(self.bytes, Ordering::AcqRel);
        METRICS.body_buffered.sub(self.bytes as i64);
    }
}

/// Reads the request body for the script.
///
/// On a route with an origin, only a body whose declared length fits the
/// replay buffer is read, so that it can still be forwarded; longer or
/// chunked bodies stream to the origin unread and the script gets `nil`.
async fn read_body(
    session: &mut Session,
    has_origin: bool,
    limits: BodyLimits,
) -> Result<BodyRead> {
    let mut reservation = BodyReservation::default();
    if session.as_downstream_mut().is_body_empty() {
        return Ok(BodyRead::Read(Some(Bytes::new()), reservation));
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
            _ => return Ok(BodyRead::Read(None, reservation)),
        }
    } else {
        limits.per_request
    };
    if declared.is_some_and(|length| length > limit) {
        return Ok(BodyRead::TooLarge(limit));
    }
    if let Some(length) = declared {
        if !reservation.grow(length, limits.all_requests) {
            return Ok(BodyRead::Busy);
        }
    }
    // A client that asked to wait for 100 Continue (curl does for bodies
    // over 1 MiB) would otherwise wait its own timeout before sending.
    let expects_continue = session
        .req_header()
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue {
        session
            .as_downstream_mut()
            .write_continue_response()
            .await?;
    }

    let mut body = BytesMut::with_capacity(declared.unwrap_or(0));
    // A body that cannot be read (an invalid chunk, a closed connection) is
    // the client's fault, so mark the error as downstream: 400, not 500.
    while let Some(chunk) = session.read_request_body().await.map_err(|mut e| {
        e.as_down();
        e
    })? {
        if body.len() + chunk.len() > limit {
            return Ok(BodyRead::TooLarge(limit));
        }
        // A chunked body reserves as it arrives.
        let unreserved = (body.len() + chunk.len()).saturating_sub(reservation.bytes);
        if unreserved > 0 && !reservation.grow(unreserved, limits.all_requests) {
            return Ok(BodyRead::Busy);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(BodyRead::Read(Some(body.freeze()), reservation))
}

fn client_ip(session: &Session) -> String {
    session
        .client_addr()
        .and_then(|address| address.as_inet())
        .map(|address| address.ip().to_string())
        .unwrap_or_default()
}

//! Third phase: shape the request header sent to the origin.

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderName, HeaderValue, Uri};
use pingora::prelude::*;
use pingora::proxy::Session;
use pingora::ErrorType;

use super::RequestContext;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Hop-by-hop headers (RFC 9110, section 7.6.1) that apply to the client's
/// connection only. `Transfer-Encoding` is left to Pingora, which frames the
/// body it forwards.
const HOP_BY_HOP: [&str; 5] = ["keep-alive", "proxy-connection", "te", "trailer", "upgrade"];

/// Applies the script's edits, drops hop-by-hop headers and adds
/// `X-Forwarded-For` and `X-Forwarded-Proto`.
pub fn apply(
    session: &mut Session,
    upstream: &mut RequestHeader,
    ctx: &mut RequestContext,
) -> Result<()> {
    let mut edits = ctx.edits.take().unwrap_or_default();
    if edits.path.is_none() {
        edits.path = ctx.forward_path.take();
    }
    {
        if edits.path.is_some() || edits.query.is_some() {
            let path = edits
                .path
                .unwrap_or_else(|| upstream.uri.path().to_string());
            let query = match edits.query {
                Some(query) => query,
                None => upstream.uri.query().unwrap_or("").to_string(),
            };
            let target = if query.is_empty() {
                path
            } else {
                format!("{path}?{query}")
            };
            let uri: Uri = target.parse().map_err(|e| {
                Error::explain(
                    ErrorType::InternalError,
                    format!("the script set an invalid request target `{target}`: {e}"),
                )
            })?;
            upstream.set_uri(uri);
        }
        for name in &edits.remove_headers {
            upstream.remove_header(name.as_str());
        }
        for (name, values) in edits.set_headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                Error::explain(
                    ErrorType::InternalError,
                    format!("the script set an invalid header name `{name}`"),
                )
            })?;
            upstream.remove_header(&name);
            for value in values {
                let value = HeaderValue::from_bytes(&value).map_err(|_| {
                    Error::explain(
                        ErrorType::InternalError,
                        format!("the script set an invalid value for header `{name}`"),
                    )
                })?;
                upstream.append_header(name.clone(), value)?;
            }
        }
    }

    remove_hop_by_hop(upstream, session.is_upgrade_req());

    let client = session
        .client_addr()
        .and_then(|address| address.as_inet())
        .map(|address| address.ip().to_string());
    if let Some(client) = client {
        let mut forwarded: Vec<String> = upstream
            .headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        forwarded.push(client);
        let forwarded = forwarded.join(", ");
        upstream.insert_header(X_FORWARDED_FOR, forwarded)?;
    }
    upstream.insert_header(X_FORWARDED_PROTO, "http")?;
    Ok(())
}

/// Removes the headers named in `Connection` and the standard hop-by-hop
/// headers, keeping `Connection` and `Upgrade` for protocol upgrades.
fn remove_hop_by_hop(upstream: &mut RequestHeader, upgrade: bool) {
    let listed: Vec<String> = upstream
        .headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect();
    if upgrade {
        for name in listed {
            if name != "upgrade" {
                upstream.remove_header(name.as_str());
            }
        }
        for name in HOP_BY_HOP {
            if name != UPGRADE.as_str() {
                upstream.remove_header(name);
            }
        }
        return;
    }
    for name in listed {
        upstream.remove_header(name.as_str());
    }
    for name in HOP_BY_HOP {
        upstream.remove_header(name);
    }
    upstream.remove_header(&CONNECTION);
}

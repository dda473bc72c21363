//! Writing responses from the proxy itself: script responses and errors.

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderName, HeaderValue};
use pingora::prelude::*;
use pingora::proxy::Session;

/// Writes a complete response. Framing headers from `headers` are
/// ignored, because the proxy sets `Content-Length` from `body`.
pub async fn send(
    session: &mut Session,
    status: u16,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
) -> Result<()> {
    let mut response = ResponseHeader::build(status, Some(headers.len() + 1))?;
    if status == 413 {
        // The name since RFC 9110; the http crate still has the old one.
        response.set_reason_phrase(Some("Content Too Large"))?;
    }
    for (name, value) in headers {
        if name == CONTENT_LENGTH
            || name == TRANSFER_ENCODING
            || name == CONNECTION
            || name == UPGRADE
        {
            continue;
        }
        response.append_header(name.clone(), value.clone())?;
    }
    // 204 and 304 responses have no body (RFC 9110, sections 15.3.5 and
    // 15.4.5), and 204 no Content-Length either.
    let body = match status {
        204 | 304 => Bytes::new(),
        _ => body,
    };
    if status != 204 && status != 304 {
        response.insert_header(CONTENT_LENGTH, body.len())?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(response), head_only || body.is_empty())
        .await?;
    if !head_only && !body.is_empty() {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Writes a short plain-text error that ends with the request id.
pub async fn error(
    session: &mut Session,
    status: u16,
    message: &str,
    request_id: &str,
    extra: &[(HeaderName, HeaderValue)],
) -> Result<()> {
    let body = format!("{message}\nrequest id: {request_id}\n");
    let mut headers = vec![(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    )];
    headers.extend_from_slice(extra);
    send(session, status, &headers, Bytes::from(body)).await
}

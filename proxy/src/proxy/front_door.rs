//! Checks of the request head that run before routing: framing that could
//! smuggle a second request, and size limits.
//!
//! Pingora already rejects invalid or differing Content-Length values,
//! Transfer-Encoding other than a final `chunked`, Transfer-Encoding on
//! HTTP/1.0, obsolete line folding and invalid chunk sizes with 400. This
//! module adds what it lets through: a request with both Content-Length and
//! Transfer-Encoding, a Content-Length repeated with the same value, a
//! transfer coding other than `chunked` before it (501), a Host header that
//! is repeated or is not a name or address, a request target over
//! `max_uri_bytes` and a head over `max_header_bytes`.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use pingora::http::RequestHeader;

use crate::config::LimitsSection;

/// A rejected request head: the status and the reason sent to the client.
pub struct Rejection {
    pub status: u16,
    pub message: &'static str,
}

/// Returns why the request head must be rejected, if it must. `raw_head`
/// returns the head as received: its length is the head size, and its
/// lines show a Content-Length that Pingora drops when Transfer-Encoding is
/// present.
pub fn check(
    request: &RequestHeader,
    raw_head: impl FnOnce() -> Option<Bytes>,
    limits: &LimitsSection,
) -> Option<Rejection> {
    let raw = raw_head();
    let raw_len = raw.as_ref().map(Bytes::len);
    // Routing uses the Host header. Pingora keeps only the path of an
    // absolute-form target (`GET http://a.test/x`) and forwards the target
    // as sent, so the origin could serve a host that was never routed.
    let target = raw
        .as_ref()
        .and_then(|head| head.split(|&b| b == b' ').nth(1).map(<[u8]>::to_vec));
    if target.is_some_and(|target| !target.starts_with(b"/")) {
        return Some(Rejection {
            status: 400,
            message: "400 Bad Request: the request target must be a path starting with `/`, \
                      with the host in the Host header",
        });
    }
    if request.version == http::Version::HTTP_11
        && !request.headers.contains_key(http::header::HOST)
    {
        return Some(Rejection {
            status: 400,
            message: "400 Bad Request: the request has no Host header (required since HTTP/1.1)",
        });
    }
    let mut hosts = request.headers.get_all(HOST).iter();
    if let Some(host) = hosts.next() {
        if hosts.next().is_some() {
            return Some(Rejection {
                status: 400,
                message: "400 Bad Request: the request has more than one Host header",
            });
        }
        // Scripts see the host inside `request.url`, so characters such as
        // `/`, `?` or `@` would let a client choose what that URL names.
        if !is_valid_host(host.as_bytes()) {
            return Some(Rejection {
                status: 400,
                message: "400 Bad Request: the Host header must be a host name or IP address \
                          with an optional port",
            });
        }
    }
    let has_encoding = request.headers.contains_key(TRANSFER_ENCODING);
    let has_length = request.headers.contains_key(CONTENT_LENGTH)
        || (has_encoding
            && raw
                .as_ref()
                .is_some_and(|head| has_content_length_line(head)));
    if has_length && has_encoding {
        return Some(Rejection {
            status: 400,
            message: "400 Bad Request: the request has both Content-Length and Transfer-Encoding",
        });
    }
    // Pingora accepts codings before the final `chunked` and forwards the
    // body as plain chunked, which would drop the other coding.
    let other_coding = request
        .headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .any(|coding| !coding.trim_ascii().eq_ignore_ascii_case(b"chunked"));
    if other_coding {
        return Some(Rejection {
            status: 501,
            message: "501 Not Implemented: only the chunked transfer coding is supported",
        });
    }
    // Pingora accepts a repeated Content-Length when the values agree, and
    // would forward every copy. An origin that reads them differently could
    // take part of the body as the next request.
    let mut lengths = request.headers.get_all(CONTENT_LENGTH).iter();
    let first = lengths.next();
    if lengths.next().is_some() || first.is_some_and(|value| value.as_bytes().contains(&b',')) {
        return Some(Rejection {
            status: 400,
            message: "400 Bad Request: the request has more than one Content-Length value",
        });
    }

    let target = request
        .uri
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if target > limits.max_uri_bytes {
        return Some(Rejection {
            status: 414,
            message: "414 URI Too Long: the request target exceeds the limit",
        });
    }

    // The head as received, or else the request line plus each header
    // line with its ": " and CRLF (values lose surrounding spaces there).
    let head: usize = raw_len.unwrap_or(0).max(
        target
            + request.method.as_str().len()
            + 12
            + request
                .headers
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 4)
                .sum::<usize>(),
    );
    if head > limits.max_header_bytes {
        return Some(Rejection {
            status: 431,
            message: "431 Request Header Fields Too Large: the request head exceeds the limit",
        });
    }
    None
}

/// Returns true when `value` is a DNS name, an IPv4 address or a bracketed
/// IPv6 address, with an optional port. An empty value is allowed: a
/// client sends it for a target without an authority (RFC 9112).
fn is_valid_host(value: &[u8]) -> bool {
    let (name, port) = match value.strip_prefix(b"[") {
        Some(rest) => {
            let Some(end) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let literal = &rest[..end];
            if literal.is_empty()
                || !literal
                    .iter()
                    .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return false;
            }
            (&[][..], &rest[end + 1..])
        }
        None => match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &[][..]),
        },
    };
    // Labels are not empty and do not start with `-`; one trailing dot
    // (a fully qualified name) is allowed.
    let name = name.strip_suffix(b".").unwrap_or(name);
    let name_ok = name.is_empty()
        || name.split(|&b| b == b'.').all(|label| {
            !label.is_empty()
                && label[0] != b'-'
                && label
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    let port_ok = match port.strip_prefix(b":") {
        Some(digits) => {
            digits.iter().all(u8::is_ascii_digit)
                && std::str::from_utf8(digits)
                    .ok()
                    .is_some_and(|text| text.is_empty() || text.parse::<u16>().is_ok())
        }
        None => port.is_empty(),
    };
    name_ok && port_ok
}

/// Returns true when a raw request head has a `Content-Length` line.
fn has_content_length_line(head: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length:";
    head.split(|&b| b == b'\n')
        .skip(1)
        .any(|line| line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_must_be_name_or_address() {
        for good in [
            "a.test",
            "A-b_c.test:8080",
            "127.0.0.1",
            "[::1]",
            "[::1]:443",
            "[::ffff:10.0.0.1]",
            "",
            "a.test.",
            "a.test:",
        ] {
            assert!(is_valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "a.test/x",
            "a.test?x",
            "a@b.test",
            "a.test:80:80",
            "a.test:http",
            "a.test:123456",
            "a.test:99999",
            "-a.test",
            "a..test",
            ".a.test",
            "a.test..",
            "[::1",
            "[]",
            "[::1]x",
            "[::1]/x",
            "a b",
            "a%2Fb",
            "a.test#",
        ] {
            assert!(!is_valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn finds_content_length_in_raw_head() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\ncontent-LENGTH: 5\r\n\r\n";
        assert!(has_content_length_line(head));
        let head = b"POST /content-length: HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(!has_content_length_line(head));
    }
}

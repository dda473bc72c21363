//! Request path normalisation and path patterns.
//!
//! Paths are compared segment by segment after percent-decoding each
//! segment and removing `.` and `..` segments. Decoding happens per
//! segment, so an encoded slash (`%2F`) stays a character of its segment
//! and never splits it.

use std::collections::HashMap;

use percent_encoding::percent_decode_str;

/// A request path split into decoded segments, with dot-segments and
/// repeated slashes removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    pub segments: Vec<String>,
    /// Normalisation removed a dot-segment or an empty segment, so the raw
    /// path would name another resource than the one that was routed.
    pub restructured: bool,
}

impl NormalizedPath {
    /// Normalises the path part of a request target (no query string).
    pub fn parse(raw: &str) -> Self {
        let mut segments: Vec<String> = Vec::new();
        let mut restructured = false;
        let trimmed = raw.strip_prefix('/').unwrap_or(raw);
        let parts: Vec<&str> = trimmed.split('/').collect();
        let last = parts.len() - 1;
        for (index, part) in parts.into_iter().enumerate() {
            let decoded = percent_decode_str(part).decode_utf8_lossy();
            match decoded.as_ref() {
                "." | ".." => {
                    restructured = true;
                    if decoded == ".." {
                        segments.pop();
                    }
                    // `/a/..` names the directory `/`, so keep the trailing slash.
                    if index == last {
                        segments.push(String::new());
                    }
                }
                // `//` inside a path merges into one slash, as in nginx; a
                // trailing empty segment is the trailing slash and stays.
                "" if index != last => restructured = true,
                _ => segments.push(decoded.into_owned()),
            }
        }
        if segments.is_empty() {
            segments.push(String::new());
        }
        Self {
            segments,
            restructured,
        }
    }

    /// Normalises the path as a lenient origin could read it: `%25`
    /// decoded twice, `%2F`, `%5C` and `\\` taken for slashes, and `;`
    /// parameters removed from each segment (`..;/` is `../` to Tomcat).
    /// Returns `None` when the path has none of these, so both readings
    /// are the same.
    pub fn parse_as_lenient_origin(raw: &str) -> Option<Self> {
        let lower = raw.to_ascii_lowercase();
        let lenient = ["%25", "%2f", "%5c", "\\", ";", "%3b"]
            .iter()
            .any(|marker| lower.contains(marker));
        if !lenient {
            return None;
        }
        let once = replace_ignoring_case(raw, &["%25"], "%");
        let split = replace_ignoring_case(&once, &["%2f", "%5c", "\\"], "/");
        let without_parameters: Vec<&str> = split
            .split('/')
            .map(|segment| segment.split([';']).next().unwrap_or(""))
            .map(|segment| {
                let lower = segment.to_ascii_lowercase();
                match lower.find("%3b") {
                    Some(at) => &segment[..at],
                    None => segment,
                }
            })
            .collect();
        Some(Self::parse(&without_parameters.join("/")))
    }

    /// Returns the path as one string. Characters that would change how
    /// it splits (`/` and `%` inside a segment) are percent-encoded again.
    pub fn to_path_string(&self) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            out.push('/');
            for c in segment.chars() {
                match c {
                    '/' => out.push_str("%2F"),
                    '%' => out.push_str("%25"),
                    _ => out.push(c),
                }
            }
        }
        out
    }
}

/// Replaces each of `needles` (lowercase ASCII), in any letter case, with
/// `with`.
fn replace_ignoring_case(haystack: &str, needles: &[&str], with: &str) -> String {
    let mut out = String::with_capacity(haystack.len());
    let mut rest = haystack;
    'outer: while !rest.is_empty() {
        for needle in needles {
            let matches = rest
                .get(..needle.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(needle));
            if matches {
                out.push_str(with);
                rest = &rest[needle.len()..];
                continue 'outer;
            }
        }
        let next = rest.chars().next().map_or(1, char::len_utf8);
        out.push_str(&rest[..next]);
        rest = &rest[next..];
    }
    out
}

/// Percent-encodes the characters that may not appear in a request-line
/// path; existing `%XX` escapes are kept as they are.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        let keep = byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&byte);
        if keep {
            out.push(byte as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(HEX[usize::from(byte >> 4)] as char);
            out.push(HEX[usize::from(byte & 0xF)] as char);
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// Specificity of a path pattern. Greater ranks win.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathRank {
    /// `/static/*`, ranked by the number of segments before the `*`.
    Prefix(usize),
    /// `/users/:id`, ranked by the number of literal segments.
    Param(usize),
    /// `/health`.
    Exact,
}

/// A path pattern from a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Segment>,
    /// The pattern ends in `/*` and matches any rest of the path.
    prefix: bool,
}

impl PathPattern {
    /// Parses `/exact`, `/prefix/*` or `/with/:param` as written in the config.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let Some(body) = pattern.strip_prefix('/') else {
            return Err(format!("path pattern `{pattern}` must start with `/`"));
        };
        let mut parts: Vec<&str> = body.split('/').collect();
        let prefix = parts.last() == Some(&"*");
        if prefix {
            parts.pop();
        }
        let mut names = Vec::new();
        let mut segments = Vec::new();
        for part in parts {
            if part.contains('*') {
                return Err(format!(
                    "path pattern `{pattern}` has `*` inside it; `*` may only be the last \
                     segment, as in `/static/*`"
                ));
            }
            if let Some(name) = part.strip_prefix(':') {
                let valid = !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !valid {
                    return Err(format!(
                        "path pattern `{pattern}` has an invalid parameter `{part}`; use \
                         letters, digits and `_`, as in `/users/:id`"
                    ));
                }
                if names.contains(&name) {
                    return Err(format!(
                        "path pattern `{pattern}` names the parameter `{name}` twice"
                    ));
                }
                names.push(name);
                segments.push(Segment::Param(name.to_string()));
            } else {
                let decoded = percent_decode_str(part).decode_utf8_lossy().into_owned();
                segments.push(Segment::Literal(decoded));
            }
        }
        Ok(Self { segments, prefix })
    }

    /// Returns the rank of this pattern among others that match.
    pub fn rank(&self) -> PathRank {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        if self.prefix {
            PathRank::Prefix(self.segments.len())
        } else if literals < self.segments.len() {
            PathRank::Param(literals)
        } else {
            PathRank::Exact
        }
    }

    /// Matches `path`, returning the captured parameters.
    pub fn matches(&self, path: &NormalizedPath) -> Option<HashMap<String, String>> {
        let actual = &path.segments;
        if self.prefix {
            // `/static/*` takes `/static` as well as everything below it.
            let bare = actual.len() == 1 && actual[0].is_empty();
            if actual.len() < self.segments.len() && !(self.segments.is_empty() && bare) {
                return None;
            }
        } else if actual.len() != self.segments.len() {
            return None;
        }
        let mut params = HashMap::new();
        for (pattern, segment) in self.segments.iter().zip(actual) {
            match pattern {
                Segment::Literal(literal) if literal == segment => {}
                Segment::Literal(_) => return None,
                Segment::Param(_) if segment.is_empty() => return None,
                Segment::Param(name) => {
                    params.insert(name.clone(), segment.clone());
                }
            }
        }
        Some(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(raw: &str) -> NormalizedPath {
        NormalizedPath::parse(raw)
    }

    #[test]
    fn normalizes_dot_segments_and_decoding() {
        assert_eq!(path("/a/./b/../c").to_path_string(), "/a/c");
        assert_eq!(path("/a/%2e%2E/b").to_path_string(), "/b");
        assert_eq!(path("/../../etc").to_path_string(), "/etc");
        assert_eq!(path("/caf%C3%A9").to_path_string(), "/café");
        assert_eq!(path("/a/..").to_path_string(), "/");
        assert_eq!(path("/").to_path_string(), "/");
    }

    #[test]
    fn lenient_reading_splits_and_drops_parameters() {
        let lenient = |raw: &str| {
            NormalizedPath::parse_as_lenient_origin(raw).map(|path| path.to_path_string())
        };
        assert_eq!(lenient("/admin/x"), None);
        assert_eq!(lenient("/admin%2fx").as_deref(), Some("/admin/x"));
        assert_eq!(lenient("/public/..%2Fadmin/x").as_deref(), Some("/admin/x"));
        assert_eq!(lenient("/a%5Cb\\c").as_deref(), Some("/a/b/c"));
        assert_eq!(lenient("/caf%C3%A9%2F").as_deref(), Some("/café/"));
        assert_eq!(lenient("/public/..;/admin").as_deref(), Some("/admin"));
        assert_eq!(lenient("/public/..;x=1/admin").as_deref(), Some("/admin"));
        assert_eq!(
            lenient("/public/%2e%2e%3b/admin").as_deref(),
            Some("/admin")
        );
        assert_eq!(lenient("/public/..%252Fadmin").as_deref(), Some("/admin"));
        assert_eq!(lenient("/users/a;b").as_deref(), Some("/users/a"));
        assert_eq!(path("/admin%2Fx").to_path_string(), "/admin%2Fx");
    }

    #[test]
    fn encode_path_escapes_unsafe_bytes() {
        assert_eq!(encode_path("/a b/ü?x#"), "/a%20b/%C3%BC%3Fx%23");
        assert_eq!(encode_path("/files/a%2Fb"), "/files/a%2Fb");
    }

    #[test]
    fn merges_repeated_slashes() {
        assert_eq!(path("//admin//x").to_path_string(), "/admin/x");
        assert!(path("//admin/x").restructured);
        assert!(path("/a/../b").restructured);
        assert!(!path("/a/b/").restructured);
        assert_eq!(path("/a/b/").to_path_string(), "/a/b/");
    }

    #[test]
    fn encoded_slash_stays_in_segment() {
        let p = path("/files/a%2Fb");
        assert_eq!(p.segments, ["files", "a/b"]);
        assert_eq!(p.to_path_string(), "/files/a%2Fb");
    }

    #[test]
    fn patterns_match_by_kind() {
        let exact = PathPattern::parse("/health").unwrap();
        assert!(exact.matches(&path("/health")).is_some());
        assert!(exact.matches(&path("/health/")).is_none());

        let prefix = PathPattern::parse("/static/*").unwrap();
        assert!(prefix.matches(&path("/static")).is_some());
        assert!(prefix.matches(&path("/static/a/b")).is_some());
        assert!(prefix.matches(&path("/staticx")).is_none());

        let all = PathPattern::parse("/*").unwrap();
        assert!(all.matches(&path("/")).is_some());
        assert!(all.matches(&path("/anything/here")).is_some());

        let param = PathPattern::parse("/users/:id").unwrap();
        let params = param.matches(&path("/users/a%2Fb")).unwrap();
        assert_eq!(params["id"], "a/b");
        assert!(param.matches(&path("/users/")).is_none());
    }

    #[test]
    fn ranks_exact_over_param_over_prefix() {
        let exact = PathPattern::parse("/users/me").unwrap().rank();
        let param = PathPattern::parse("/users/:id").unwrap().rank();
        let prefix = PathPattern::parse("/users/*").unwrap().rank();
        assert!(exact > param);
        assert!(param > prefix);
    }

    #[test]
    fn rejects_bad_patterns() {
        assert!(PathPattern::parse("health").is_err());
        assert!(PathPattern::parse("/a*/b").is_err());
        assert!(PathPattern::parse("/:a/:a").is_err());
        assert!(PathPattern::parse("/:").is_err());
    }
}

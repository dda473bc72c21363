//! Host patterns and the normalisation of the Host header.

/// A host pattern from a route: an exact name or a `*.` wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// A full host name, lowercase, without a trailing dot.
    Exact(String),
    /// The suffix that a wildcard matches, with its leading dot
    /// (`.example.com` for `*.example.com`). It matches names at any depth
    /// below the suffix but not the suffix itself.
    Wildcard(String),
}

impl HostPattern {
    /// Parses a pattern as written in the config.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let lower = pattern.trim_end_matches('.').to_ascii_lowercase();
        if lower == "*" {
            return Err(
                "`*` is not a host pattern; set `default: true` on the route to take any host"
                    .into(),
            );
        }
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid_label = |label: &str| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let is_ipv6 = name.starts_with('[') && name.ends_with(']');
        if !is_ipv6 && (name.is_empty() || !name.split('.').all(valid_label)) {
            return Err(format!(
                "`{pattern}` is not a host name or `*.` wildcard; use letters, digits, `-` and \
                 dots, for example `api.example.com` or `*.example.com`"
            ));
        }
        Ok(if wildcard {
            Self::Wildcard(format!(".{name}"))
        } else {
            Self::Exact(name.to_string())
        })
    }
}

/// Returns the host of a Host header or URL authority: lowercase, without
/// the port and without a trailing dot.
pub fn normalize_host(raw: &str) -> String {
    let without_port = if raw.starts_with('[') {
        match raw.find(']') {
            Some(end) => &raw[..=end],
            None => raw,
        }
    } else {
        match raw.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => raw,
        }
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

/// Yields the wildcard suffixes that could match `host`, longest first:
/// `.b.example.com`, `.example.com`, `.com` for `a.b.example.com`.
pub fn wildcard_suffixes(host: &str) -> impl Iterator<Item = &str> {
    host.char_indices()
        .filter(|(_, c)| *c == '.')
        .map(move |(index, _)| &host[index..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_strips_port_case_and_dot() {
        assert_eq!(normalize_host("Example.COM:8080"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("example.com.:80"), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
    }

    #[test]
    fn wildcard_suffixes_longest_first() {
        let suffixes: Vec<_> = wildcard_suffixes("a.b.example.com").collect();
        assert_eq!(suffixes, [".b.example.com", ".example.com", ".com"]);
    }

    #[test]
    fn parse_rejects_bad_patterns() {
        assert!(HostPattern::parse("*").is_err());
        assert!(HostPattern::parse("exa mple.com").is_err());
        assert!(HostPattern::parse("a..b").is_err());
        assert_eq!(
            HostPattern::parse("*.Example.com."),
            Ok(HostPattern::Wildcard(".example.com".into()))
        );
    }
}

//! Route lookup: from host, method and path to one route.
//!
//! The router is built once per config snapshot. Host lookup is a hash
//! lookup for the exact name, then one per wildcard suffix of the name, so
//! its cost grows with the number of labels in the host and not with the
//! number of routes. Within a host, the most specific path wins
//! (exact over parameter over prefix), then declaration order. When no
//! route of an exact host matches the path, wildcard routes and then the
//! default route are tried.

mod host;
mod path;

use std::collections::HashMap;

pub use host::{normalize_host, wildcard_suffixes, HostPattern};
pub use path::{encode_path, NormalizedPath, PathPattern, PathRank};

use crate::config::RouteSection;

/// The path and method rules of one route.
#[derive(Debug)]
struct RouteRules {
    /// Empty means every path.
    paths: Vec<PathPattern>,
    /// Uppercase; empty means every method.
    methods: Vec<String>,
}

/// The outcome of a lookup.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Index of the route in the config, and the captured path parameters.
    Found {
        route: usize,
        params: HashMap<String, String>,
    },
    /// A route took the path but not the method; the methods it takes.
    MethodNotAllowed { allow: Vec<String> },
    /// No route takes this host and path.
    NotFound,
}

impl Lookup {
    /// Returns the index of the matched route, if any.
    pub fn route(&self) -> Option<usize> {
        match self {
            Lookup::Found { route, .. } => Some(*route),
            _ => None,
        }
    }
}

/// Host, path and method matching for one config snapshot.
#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<String, Vec<usize>>,
    wildcard: HashMap<String, Vec<usize>>,
    default: Option<usize>,
    rules: Vec<RouteRules>,
}

impl Router {
    /// Builds the router for checked routes; patterns that do not parse
    /// are skipped because `config::load` has already reported them.
    pub fn new(routes: &[RouteSection]) -> Self {
        let mut router = Router::default();
        for (index, route) in routes.iter().enumerate() {
            for host in &route.hosts {
                match HostPattern::parse(host) {
                    Ok(HostPattern::Exact(name)) => {
                        router.exact.entry(name).or_default().push(index)
                    }
                    Ok(HostPattern::Wildcard(suffix)) => {
                        router.wildcard.entry(suffix).or_default().push(index)
                    }
                    Err(_) => {}
                }
            }
            if route.default && router.default.is_none() {
                router.default = Some(index);
            }
            router.rules.push(RouteRules {
                paths: route
                    .paths
                    .iter()
                    .filter_map(|p| PathPattern::parse(p).ok())
                    .collect(),
                methods: route
                    .methods
                    .iter()
                    .map(|m| m.to_ascii_uppercase())
                    .collect(),
            });
        }
        router
    }

    /// Finds the route for a normalised host, a method and a path.
    pub fn lookup(&self, host: &str, method: &str, path: &NormalizedPath) -> Lookup {
        let mut allow: Vec<String> = Vec::new();

        if let Some(found) = self.best_in(self.exact.get(host), method, path, &mut allow) {
            return found;
        }
        for suffix in wildcard_suffixes(host) {
            if let Some(found) = self.best_in(self.wildcard.get(suffix), method, path, &mut allow) {
                return found;
            }
        }
        let default = self.default.map(|index| vec![index]);
        if let Some(found) = self.best_in(default.as_ref(), method, path, &mut allow) {
            return found;
        }

        if allow.is_empty() {
            Lookup::NotFound
        } else {
            allow.sort();
            allow.dedup();
            Lookup::MethodNotAllowed { allow }
        }
    }

    /// Returns the most specific match among `candidates`, recording in
    /// `allow` the methods of routes whose path matched but method did not.
    fn best_in(
        &self,
        candidates: Option<&Vec<usize>>,
        method: &str,
        path: &NormalizedPath,
        allow: &mut Vec<String>,
    ) -> Option<Lookup> {
        let mut best: Option<(PathRank, usize, HashMap<String, String>)> = None;
        for &index in candidates? {
            let rules = &self.rules[index];
            let Some((rank, params)) = match_paths(&rules.paths, path) else {
                continue;
            };
            // A route that takes GET also takes HEAD, as in nginx.
            let method_ok = rules.methods.is_empty()
                || rules.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
                || (method == "HEAD" && rules.methods.iter().any(|m| m == "GET"));
            if !method_ok {
                allow.extend(rules.methods.iter().cloned());
                continue;
            }
            // Strictly greater, so that the earlier route wins a tie.
            if best
                .as_ref()
                .is_none_or(|(best_rank, ..)| rank > *best_rank)
            {
                best = Some((rank, index, params));
            }
        }
        best.map(|(_, route, params)| Lookup::Found { route, params })
    }
}

fn match_paths(
    patterns: &[PathPattern],
    path: &NormalizedPath,
) -> Option<(PathRank, HashMap<String, String>)> {
    if patterns.is_empty() {
        return Some((PathRank::Prefix(0), HashMap::new()));
    }
    let mut best: Option<(PathRank, HashMap<String, String>)> = None;
    for pattern in patterns {
        if let Some(params) = pattern.matches(path) {
            let rank = pattern.rank();
            if best.as_ref().is_none_or(|(best_rank, _)| rank > *best_rank) {
                best = Some((rank, params));
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, hosts: &[&str], paths: &[&str], methods: &[&str]) -> RouteSection {
        RouteSection {
            index: 0,
            name: name.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            default: false,
            paths: paths.iter().map(|p| p.to_string()).collect(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            script: None,
            origin: Some("o".into()),
            limits: Default::default(),
            kv: Vec::new(),
            on_failure: Default::default(),
            error_status: 500,
            limit_status: 503,
            env: Default::default(),
            secrets: Default::default(),
            fetch: Default::default(),
            schedule: None,
        }
    }

    fn found(router: &Router, host: &str, method: &str, path: &str) -> Option<usize> {
        match router.lookup(host, method, &NormalizedPath::parse(path)) {
            Lookup::Found { route, .. } => Some(route),
            _ => None,
        }
    }

    #[test]
    fn exact_host_beats_wildcard() {
        let router = Router::new(&[
            route("wild", &["*.example.com"], &[], &[]),
            route("api", &["api.example.com"], &[], &[]),
        ]);
        assert_eq!(found(&router, "api.example.com", "GET", "/"), Some(1));
        assert_eq!(found(&router, "www.example.com", "GET", "/"), Some(0));
        assert_eq!(found(&router, "a.b.example.com", "GET", "/"), Some(0));
        assert_eq!(found(&router, "example.com", "GET", "/"), None);
    }

    #[test]
    fn specific_path_then_declaration_order() {
        let router = Router::new(&[
            route("prefix", &["h"], &["/users/*"], &[]),
            route("param", &["h"], &["/users/:id"], &[]),
            route("exact", &["h"], &["/users/me"], &[]),
            route("param-again", &["h"], &["/users/:name"], &[]),
        ]);
        assert_eq!(found(&router, "h", "GET", "/users/me"), Some(2));
        assert_eq!(found(&router, "h", "GET", "/users/42"), Some(1));
        assert_eq!(found(&router, "h", "GET", "/users/42/posts"), Some(0));
    }

    #[test]
    fn method_mismatch_reports_allowed_methods() {
        let router = Router::new(&[route("post", &["h"], &["/form"], &["POST"])]);
        let lookup = router.lookup("h", "GET", &NormalizedPath::parse("/form"));
        assert_eq!(
            lookup,
            Lookup::MethodNotAllowed {
                allow: vec!["POST".into()]
            }
        );
    }

    #[test]
    fn default_route_takes_unknown_hosts() {
        let mut fallback = route("fallback", &[], &[], &[]);
        fallback.default = true;
        let router = Router::new(&[route("named", &["a.test"], &["/x"], &[]), fallback]);
        assert_eq!(found(&router, "other.test", "GET", "/"), Some(1));
        assert_eq!(found(&router, "a.test", "GET", "/x"), Some(0));
        assert_eq!(found(&router, "a.test", "GET", "/y"), Some(1));
    }
}

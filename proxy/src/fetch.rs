//! Subrequests that scripts make with `fetch`: which hosts and addresses a
//! route may reach, the HTTP clients, and the per-request caps.
//!
//! An `http://` subrequest to the incoming request's host, when one of the
//! route's `hosts` names it, goes to the route's origin like a fall-through
//! request, so a handler can change the origin's response.
//!
//! Every other subrequest is checked against the route's allow-list. Each
//! address its host resolves to must also be public, unless the route
//! allows private ones, and redirects are checked again at every hop.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method};

use crate::config::FetchSection;
use crate::origin::Origin;
use crate::runtimes::LazyRuntime;

/// Most redirects followed for one subrequest.
const MAX_REDIRECTS: usize = 10;

/// One entry of a route's `fetch.allow` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    /// This host only.
    Exact(String),
    /// Any subdomain of this suffix (the suffix starts with a dot).
    Subdomains(String),
}

impl HostRule {
    /// Parses `api.example.com` or `*.example.com`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        let fix = "write a host name such as `api.example.com` or `*.example.com`, without a \
                   scheme, port or path";
        let (rule, name) = match lower.strip_prefix("*.") {
            Some(rest) => (Self::Subdomains(format!(".{rest}")), rest),
            None => (Self::Exact(lower.clone()), lower.as_str()),
        };
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            || name.parse::<IpAddr>().is_ok();
        if !valid {
            return Err(format!("fetch host `{text}` is not a host name; {fix}"));
        }
        Ok(rule)
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => host == name,
            Self::Subdomains(suffix) => host.ends_with(suffix.as_str()),
        }
    }
}

/// True when `ip` is reachable on the public internet: not loopback,
/// private, link-local, shared (carrier-grade NAT), multicast, broadcast,
/// documentation or unspecified.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, _, _] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || (a == 192 && b == 88 && v4.octets()[2] == 99)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let segments = v6.segments();
            // IPv4-compatible (::a.b.c.d) and IPv4-translated
            // (::ffff:0:a.b.c.d) addresses carry an IPv4 address.
            if segments[..5] == [0; 5] && (segments[5] == 0 || segments[5] == 0xffff)
                || segments[..4] == [0; 4] && segments[4] == 0xffff && segments[5] == 0
            {
                let v4 = std::net::Ipv4Addr::new(
                    (segments[6] >> 8) as u8,
                    segments[6] as u8,
                    (segments[7] >> 8) as u8,
                    segments[7] as u8,
                );
                return !v6.is_unspecified() && !v6.is_loopback() && is_public(IpAddr::V4(v4));
            }
            // 6to4 (2002::/16) embeds an IPv4 address in the next 32 bits.
            if segments[0] == 0x2002 {
                let v4 = std::net::Ipv4Addr::new(
                    (segments[1] >> 8) as u8,
                    segments[1] as u8,
                    (segments[2] >> 8) as u8,
                    segments[2] as u8,
                );
                return is_public(IpAddr::V4(v4));
            }
            let first = segments[0];
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                || segments[..4] == [0x0100, 0, 0, 0]
                || first == 0x2001 && segments[1] < 0x0200
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || first == 0x0064 && v6.segments()[1] == 0xff9b)
        }
    }
}

/// Header that every subrequest carries: how many subrequests deep it is.
/// The admin listener rejects requests that carry it, and a request that
/// arrives this way may make subrequests only while the depth is below
/// [`MAX_SUBREQUEST_DEPTH`], which stops a script that fetches its own route.
pub const SUBREQUEST_DEPTH_HEADER: &str = "actias-subrequest-depth";

/// Depth at which a request may no longer make subrequests: a client's
/// request is at depth 0, its subrequests at 1, and so on.
pub const MAX_SUBREQUEST_DEPTH: u32 = 3;

/// Header that lists the routes a chain of subrequests has come from, as
/// tags that name no route: a subrequest that reaches a route on this list
/// gets 508, since that route's handler is waiting for it.
pub const SUBREQUEST_ROUTES_HEADER: &str = "actias-subrequest-routes";

/// Returns the tag of `route` in this process: 16 hex digits of a hash of
/// the name with a key chosen at random when the process starts.
pub fn route_tag(route: &str) -> String {
    use sha2::{Digest, Sha256};
    static KEY: OnceLock<[u8; 16]> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        let mut key = [0u8; 16];
        // Without randomness the tags are still unique, only guessable.
        let _ = getrandom::fill(&mut key);
        key
    });
    let digest = Sha256::new()
        .chain_update(key)
        .chain_update(route.as_bytes())
        .finalize();
    crate::bindings::encode_hex(&digest[..8])
}

/// Returns true when `headers` show a subrequest that `route`'s handler
/// sent, directly or through other routes.
pub fn sent_by_route(headers: &http::HeaderMap, route: &str) -> bool {
    let mut lists = headers.get_all(SUBREQUEST_ROUTES_HEADER).iter().peekable();
    if lists.peek().is_none() {
        return false;
    }
    let tag = route_tag(route);
    lists
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|listed| listed.trim() == tag)
}

/// Returns the subrequest depth that `headers` declare, 0 when none.
pub fn subrequest_depth(headers: &http::HeaderMap) -> u32 {
    headers
        .get(SUBREQUEST_DEPTH_HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

/// The reason a subrequest failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The route may not reach this host or address.
    #[error("{0}")]
    Refused(String),
    /// The request, the URL or an option is invalid.
    #[error("{0}")]
    Invalid(String),
    #[error("the subrequest took longer than {0} ms")]
    Timeout(u128),
    #[error("the response body is larger than the route's fetch.max_response_bytes of {0} bytes")]
    TooLarge(usize),
    #[error(
        "the response bodies of this call do not fit in the {0} bytes left of the script's \
         memory limit; fetch fewer or smaller responses at a time"
    )]
    OverMemory(usize),
    #[error("{0}")]
    Failed(String),
}

impl FetchError {
    /// Label of the outcome in metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Refused(_) => "refused",
            Self::Invalid(_) => "invalid",
            Self::Timeout(_) => "timeout",
            Self::TooLarge(_) | Self::OverMemory(_) => "too_large",
            Self::Failed(_) => "error",
        }
    }
}

/// One subrequest, as the script described it.
pub struct FetchRequest {
    pub method: Method,
    pub url: url::Url,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<Bytes>,
    /// A shorter timeout than the route's.
    pub timeout: Option<Duration>,
    /// Follow redirects (true) or return them to the script.
    pub follow_redirects: bool,
    /// Bytes that the response bodies of one `fetch` or `fetch_all` call
    /// may use together: what was left of the script's memory limit when
    /// the call began. The bodies are read outside the Lua heap.
    pub body_budget: Option<Arc<BodyBudget>>,
}

/// The bytes that the response bodies of one call may still use.
pub struct BodyBudget {
    /// Bytes at the start of the call, for the error message.
    pub total: usize,
    left: std::sync::atomic::AtomicUsize,
}

impl BodyBudget {
    /// Starts a budget of `total` bytes.
    pub fn new(total: usize) -> Self {
        Self {
            total,
            left: std::sync::atomic::AtomicUsize::new(total),
        }
    }

    /// Takes `bytes` from the budget; false when fewer are left.
    fn take(&self, bytes: usize) -> bool {
        use std::sync::atomic::Ordering;
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(bytes)
            })
            .is_ok()
    }
}

/// A response to a subrequest, body read in full.
pub struct FetchResponse {
    pub status: u16,
    pub headers: Vec<(String, Bytes)>,
    pub body: Bytes,
    /// URL of the response, after redirects.
    pub url: String,
}

/// The fetch settings and clients of one route.
pub struct Fetcher {
    route: String,
    allow: Vec<HostRule>,
    allow_private: bool,
    pub max_requests: u32,
    pub max_in_flight: usize,
    timeout: Duration,
    max_response_bytes: usize,
    origin: Option<Arc<Origin>>,
    /// The route's host patterns: only a request whose host one of them
    /// names may have its subrequests to that host sent to the origin.
    route_hosts: Vec<crate::routing::HostPattern>,
    /// Clients are built on first use; most routes never fetch.
    following: OnceLock<Result<reqwest::Client, String>>,
    manual: OnceLock<Result<reqwest::Client, String>>,
    to_origin: OnceLock<Result<reqwest::Client, String>>,
    /// Serves every subrequest in place of the network, under `actias test`.
    fixture: Option<FetchFixture>,
}

/// A function that serves subrequests in place of the network.
pub type FetchFixture = Arc<
    dyn Fn(FetchRequest) -> futures::future::BoxFuture<'static, Result<FetchResponse, FetchError>>
        + Send
        + Sync,
>;

impl Fetcher {
    /// Prepares fetching for `route`; no client is built yet.
    pub fn new(
        route: &str,
        hosts: &[String],
        section: &FetchSection,
        origin: Option<Arc<Origin>>,
    ) -> Self {
        Self {
            route_hosts: hosts
                .iter()
                .filter_map(|host| crate::routing::HostPattern::parse(host).ok())
                .collect(),
            route: route.to_string(),
            allow: section
                .allow
                .iter()
                .filter_map(|host| HostRule::parse(host).ok())
                .collect(),
            allow_private: section.allow_private,
            max_requests: section.max_requests,
            max_in_flight: section.max_in_flight,
            timeout: Duration::from_millis(section.timeout_ms),
            max_response_bytes: section.max_response_bytes,
            origin,
            following: OnceLock::new(),
            manual: OnceLock::new(),
            to_origin: OnceLock::new(),
            fixture: None,
        }
    }

    /// Serves every subrequest with `fixture` instead of the network. The
    /// caps and the depth check still apply; addresses are not checked.
    pub fn with_fixture(mut self, fixture: FetchFixture) -> Self {
        self.fixture = Some(fixture);
        self
    }

    /// Name of the route, for metrics.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// Sends `request` on the fetch runtime and waits for the response.
    /// `incoming_host` is the Host of the request being handled, if any: a
    /// subrequest to that host goes to the route's origin.
    ///
    /// The subrequest runs apart from the script, so that reading a large
    /// body never counts against the handler's CPU slice, and a handler
    /// that is dropped stops its subrequests.
    pub async fn send(
        self: &Arc<Self>,
        mut request: FetchRequest,
        incoming_host: Option<String>,
        depth: u32,
        incoming_routes: Option<&str>,
    ) -> Result<FetchResponse, FetchError> {
        if depth >= MAX_SUBREQUEST_DEPTH {
            return Err(FetchError::Refused(format!(
                "this request is itself a subrequest {depth} levels deep, and subrequests stop \
                 at {MAX_SUBREQUEST_DEPTH} levels; shorten the chain of routes that fetch one \
                 another through the proxy"
            )));
        }
        request
            .headers
            .retain(|(name, _)| name != SUBREQUEST_DEPTH_HEADER);
        request.headers.push((
            HeaderName::from_static(SUBREQUEST_DEPTH_HEADER),
            HeaderValue::from(depth + 1),
        ));
        request
            .headers
            .retain(|(name, _)| name != SUBREQUEST_ROUTES_HEADER);
        let routes = match incoming_routes {
            Some(listed) if !listed.is_empty() => format!("{listed},{}", route_tag(&self.route)),
            _ => route_tag(&self.route),
        };
        if let Ok(value) = HeaderValue::from_str(&routes) {
            request
                .headers
                .push((HeaderName::from_static(SUBREQUEST_ROUTES_HEADER), value));
        }
        if let Some(fixture) = &self.fixture {
            return fixture(request).await;
        }
        let fetcher = self.clone();
        let task = FETCH_RUNTIME
            .handle()
            .map_err(FetchError::Failed)?
            .spawn(async move { fetcher.send_here(request, incoming_host.as_deref()).await });
        let guard = AbortOnDrop(task.abort_handle());
        let result = task.await;
        drop(guard);
        result.map_err(|e| FetchError::Failed(format!("the subrequest task failed: {e}")))?
    }

    async fn send_here(
        &self,
        mut request: FetchRequest,
        incoming_host: Option<&str>,
    ) -> Result<FetchResponse, FetchError> {
        let host = request
            .url
            .host_str()
            .map(|h| {
                h.trim_matches(['[', ']'])
                    .trim_end_matches('.')
                    .to_ascii_lowercase()
            })
            .ok_or_else(|| FetchError::Invalid(format!("URL `{}` has no host", request.url)))?;
        // The client picks the Host header, so a subrequest goes to the
        // origin only when that host is one the route names, and never for
        // an https URL, which requests TLS to that name.
        let to_origin = match (&self.origin, incoming_host) {
            (Some(origin), Some(incoming))
                if request.url.scheme() == "http"
                    && host_without_port(incoming) == host
                    && self.names_host(&host) =>
            {
                Some(origin.clone())
            }
            _ => None,
        };
        let timeout = request
            .timeout
            .map_or(self.timeout, |asked| asked.min(self.timeout));
        let mut following = false;
        let client = match &to_origin {
            Some(origin) => {
                let target = origin.fetch_target().ok_or_else(|| {
                    FetchError::Failed(format!("origin `{}` has no server", origin.name))
                })?;
                request
                    .headers
                    .retain(|(name, _)| name != http::header::HOST);
                if let Some(incoming) = incoming_host {
                    if let Ok(value) = HeaderValue::from_str(incoming) {
                        request.headers.push((http::header::HOST, value));
                    }
                }
                let path = request.url[url::Position::BeforePath..].to_string();
                request.url = url::Url::parse(&format!("{}{path}", target.base)).map_err(|e| {
                    FetchError::Invalid(format!("cannot build the origin URL: {e}"))
                })?;
                client(&self.to_origin, || origin_client(origin, &target))?
            }
            None => {
                let own_host = incoming_host.is_some_and(|incoming| {
                    self.origin.is_some() && host_without_port(incoming) == host
                });
                self.check_host(&host, &request.url)
                    .map_err(|error| match error {
                        // Allowing the address would only send the subrequest
                        // back through the proxy.
                        FetchError::Refused(message) if own_host => FetchError::Refused(format!(
                            "{message}. To send a subrequest for the request's own host to the \
                         route's origin, list that host in the route's `hosts` (a `default` \
                         route does not name it) and use an http:// URL"
                        )),
                        other => other,
                    })?;
                request
                    .headers
                    .retain(|(name, _)| name != http::header::HOST);
                following = request.follow_redirects;
                if request.follow_redirects {
                    client(&self.following, || self.public_client(true))?
                } else {
                    client(&self.manual, || self.public_client(false))?
                }
            }
        };
        let body_budget = request.body_budget.take();
        let mut builder = client.request(request.method, request.url).timeout(timeout);
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let mut response = builder
            .send()
            .await
            .map_err(|e| self.classify(e, timeout))?;
        let status = response.status().as_u16();
        let url = response.url().to_string();
        // reqwest returns a redirect it cannot follow (`file:`, `ftp:`, a
        // malformed Location) as the response itself.
        if following && matches!(status, 301 | 302 | 303 | 307 | 308) {
            if let Some(location) = response.headers().get(http::header::LOCATION) {
                let location = String::from_utf8_lossy(location.as_bytes());
                return Err(FetchError::Refused(format!(
                    "{url} redirected to `{}`, which is not an http or https URL; pass \
                     redirect = \"manual\" to get the redirect response instead",
                    crate::logging::one_line(&location.chars().take(200).collect::<String>())
                )));
            }
        }
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    Bytes::copy_from_slice(value.as_bytes()),
                )
            })
            .collect();
        let mut body = BytesMut::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.classify(e, timeout))?
        {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(FetchError::TooLarge(self.max_response_bytes));
            }
            if let Some(budget) = &body_budget {
                if !budget.take(chunk.len()) {
                    return Err(FetchError::OverMemory(budget.total));
                }
            }
            body.extend_from_slice(&chunk);
        }
        Ok(FetchResponse {
            status,
            headers,
            body: body.freeze(),
            url,
        })
    }

    /// True when one of the route's host patterns matches `host`.
    fn names_host(&self, host: &str) -> bool {
        self.route_hosts.iter().any(|pattern| match pattern {
            crate::routing::HostPattern::Exact(name) => name == host,
            crate::routing::HostPattern::Wildcard(suffix) => host.ends_with(suffix.as_str()),
        })
    }

    /// Checks a host against the allow-list, and an address literal
    /// against the private-address rule.
    fn check_host(&self, host: &str, url: &url::Url) -> Result<(), FetchError> {
        check_host(&self.route, &self.allow, self.allow_private, host, url)
    }

    fn public_client(&self, follow: bool) -> Result<reqwest::Client, String> {
        let resolver = Arc::new(CheckedResolver {
            route: self.route.clone(),
            allow_private: self.allow_private,
        });
        let redirect = if follow {
            let route = self.route.clone();
            let allow = self.allow.clone();
            let allow_private = self.allow_private;
            reqwest::redirect::Policy::custom(move |attempt| {
                // `previous` starts with the original URL.
                if attempt.previous().len() > MAX_REDIRECTS {
                    return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
                }
                let url = attempt.url().clone();
                let host = url
                    .host_str()
                    .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                    .unwrap_or_default();
                match check_host(&route, &allow, allow_private, &host, &url) {
                    Ok(()) => attempt.follow(),
                    Err(refused) => attempt.error(refused),
                }
            })
        } else {
            reqwest::redirect::Policy::none()
        };
        // `no_proxy`: a proxy from the environment would receive every
        // subrequest, and the address check would see only the proxy's.
        reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(resolver)
            .redirect(redirect)
            .user_agent(concat!("actias/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())
    }

    fn classify(&self, error: reqwest::Error, timeout: Duration) -> FetchError {
        if let Some(refused) = find_source::<FetchError>(&error) {
            return FetchError::Refused(refused.to_string());
        }
        if error.is_timeout() {
            return FetchError::Timeout(timeout.as_millis());
        }
        FetchError::Failed(describe(&error))
    }
}

/// Aborts a spawned subrequest when the handler waiting for it is dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The runtime that runs every subrequest, on two threads of its own.
static FETCH_RUNTIME: LazyRuntime = LazyRuntime::new("actias-fetch", 2);

fn client(
    cell: &OnceLock<Result<reqwest::Client, String>>,
    build: impl FnOnce() -> Result<reqwest::Client, String>,
) -> Result<reqwest::Client, FetchError> {
    cell.get_or_init(build)
        .clone()
        .map_err(|e| FetchError::Failed(format!("cannot build the HTTP client: {e}")))
}

fn check_host(
    route: &str,
    allow: &[HostRule],
    allow_private: bool,
    host: &str,
    url: &url::Url,
) -> Result<(), FetchError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::Invalid(format!(
            "URL `{url}` has the scheme `{}`; fetch takes http and https URLs",
            url.scheme()
        )));
    }
    if !allow.is_empty() && !allow.iter().any(|rule| rule.matches(host)) {
        return Err(FetchError::Refused(format!(
            "route `{route}` may not fetch from `{host}`; add it to the route's fetch.allow list"
        )));
    }
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(ip) = literal {
        if !allow_private && !is_public(ip) {
            return Err(private_address_error(route, host, ip));
        }
    }
    Ok(())
}

fn private_address_error(route: &str, host: &str, ip: IpAddr) -> FetchError {
    FetchError::Refused(format!(
        "route `{route}` may not fetch from `{host}`: its address {ip} is loopback, private or \
         otherwise not public; set fetch.allow_private on the route to allow it"
    ))
}

/// Resolves names with the system resolver and refuses a name when any of
/// its addresses is not public, unless the route allows private ones.
struct CheckedResolver {
    route: String,
    allow_private: bool,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let route = self.route.clone();
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if !allow_private {
                if let Some(address) = addresses.iter().find(|a| !is_public(a.ip())) {
                    let refused: Box<dyn std::error::Error + Send + Sync> =
                        Box::new(private_address_error(&route, &host, address.ip()));
                    return Err(refused);
                }
            }
            let addresses: reqwest::dns::Addrs = Box::new(addresses.into_iter());
            Ok(addresses)
        })
    }
}

/// The address and settings that subrequests to an origin connect with.
pub struct OriginTarget {
    /// `scheme://host:port` of the first server.
    pub base: String,
    /// Host name to connect to instead, when the name in `base` is the TLS
    /// server name rather than the server's address.
    pub resolve: Option<(String, Vec<SocketAddr>)>,
    pub verify_certificate: bool,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

fn origin_client(origin: &Origin, target: &OriginTarget) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(target.connect_timeout)
        .read_timeout(target.read_timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .danger_accept_invalid_certs(!target.verify_certificate);
    if let Some((name, addresses)) = &target.resolve {
        builder = builder.resolve_to_addrs(name, addresses);
    }
    builder
        .build()
        .map_err(|e| format!("origin `{}`: {e}", origin.name))
}

fn host_without_port(host: &str) -> String {
    let host = host.trim();
    let host = if host.starts_with('[') {
        host.split_once(']')
            .map_or(host, |(h, _)| h)
            .trim_start_matches('[')
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn find_source<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        current = error.source();
    }
    None
}

/// Describes a client error down to its innermost cause, which names what went wrong
/// (connection refused, certificate not trusted) rather than the layer.
fn describe(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut current = std::error::Error::source(error);
    while let Some(cause) = current {
        message = format!("{message}: {cause}");
        current = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn host_rules_match_exact_names_and_subdomains() {
        let exact = HostRule::parse("API.example.com").unwrap();
        assert!(exact.matches("api.example.com"));
        assert!(!exact.matches("x.api.example.com"));
        let wildcard = HostRule::parse("*.example.com").unwrap();
        assert!(wildcard.matches("a.example.com"));
        assert!(!wildcard.matches("example.com"));
        assert!(!wildcard.matches("badexample.com"));
        assert!(HostRule::parse("https://example.com").is_err());
        assert!(HostRule::parse("example.com/path").is_err());
    }

    #[test]
    fn strips_ports_from_hosts() {
        assert_eq!(host_without_port("Example.com:8080"), "example.com");
        assert_eq!(host_without_port("[::1]:80"), "::1");
        assert_eq!(host_without_port("example.com."), "example.com");
    }
}

//! The admin listener: `/metrics`, `/healthz` and `/readyz`.
//!
//! It runs as its own Pingora service on its own address, so user traffic
//! never reaches it and it keeps responding when the public listeners are
//! saturated.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{header, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::kv::KvStore;
use crate::metrics::METRICS;
use crate::reload::Reloader;

/// Serves the admin endpoints.
pub struct AdminApp {
    /// Public listener addresses that must accept connections to be ready.
    listeners: Vec<SocketAddr>,
    /// The key-value store, which must respond to a ping to be ready.
    kv_store: Option<Arc<dyn KvStore>>,
    /// Runs `POST /reload`.
    reloader: Option<Arc<Reloader>>,
    /// Set once every listener has accepted a connection.
    listening: AtomicBool,
    /// Names accepted in the Host header besides IP addresses and
    /// `localhost`, lowercase.
    hosts: Vec<String>,
}

impl AdminApp {
    pub fn new(
        listeners: Vec<SocketAddr>,
        kv_store: Option<Arc<dyn KvStore>>,
        reloader: Option<Arc<Reloader>>,
        hosts: &[String],
    ) -> Self {
        Self {
            listeners,
            kv_store,
            reloader,
            listening: AtomicBool::new(false),
            hosts: hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        }
    }

    /// Returns true when the request's Host names this listener: an IP
    /// address, `localhost` or one of `admin.hosts`. A web page whose name
    /// an attacker points at 127.0.0.1 (DNS rebinding) sends its own name.
    fn host_allowed(&self, host: Option<&str>) -> bool {
        let Some(host) = host else {
            return true;
        };
        let name = crate::routing::normalize_host(host);
        let name = name.trim_start_matches('[').trim_end_matches(']');
        name.is_empty()
            || name == "localhost"
            || name.parse::<IpAddr>().is_ok()
            || self.hosts.iter().any(|allowed| *allowed == name)
    }

    /// Returns `None` when ready, or the reason it is not.
    async fn not_ready(&self) -> Option<String> {
        if let Some(store) = &self.kv_store {
            // Probes have short timeouts, so a store that is slow to respond
            // counts as not ready rather than holding the probe.
            match tokio::time::timeout(Duration::from_secs(1), store.ping()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Some(format!("the key-value store does not respond: {e}")),
                Err(_) => return Some("the key-value store did not respond within 1 s".into()),
            }
        }
        if self.listening.load(Ordering::Relaxed) {
            return None;
        }
        for address in &self.listeners {
            let target = loopback_for(*address);
            let connect = tokio::net::TcpStream::connect(target);
            match tokio::time::timeout(Duration::from_millis(500), connect).await {
                Ok(Ok(_)) => {}
                _ => {
                    return Some(format!(
                        "listener {address} is not accepting connections yet"
                    ))
                }
            }
        }
        self.listening.store(true, Ordering::Relaxed);
        None
    }
}

impl AdminApp {
    /// Runs the scheduled handler of `route` now and describes the run.
    async fn run_scheduled(&self, route: &str) -> (StatusCode, &'static str, Vec<u8>) {
        let Some(reloader) = &self.reloader else {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                b"scheduled runs are not available\n".to_vec(),
            );
        };
        let snapshot = reloader.current();
        let Some(index) = snapshot.routes.iter().position(|r| r.name == route) else {
            return (
                StatusCode::NOT_FOUND,
                "text/plain",
                format!("there is no route `{route}`\n").into_bytes(),
            );
        };
        if !snapshot.routes[index]
            .script
            .as_ref()
            .is_some_and(|script| script.has_scheduled_handler)
        {
            return (
                StatusCode::CONFLICT,
                "text/plain",
                format!(
                    "route `{route}` has no scheduled handler; its script must call \
                     add_event_listener(\"scheduled\", function(event) ... end)\n"
                )
                .into_bytes(),
            );
        }
        let report = match crate::schedule::run_by_hand(snapshot, index).await {
            Ok(report) => report,
            Err(error) => {
                tracing::error!(route, error, "scheduled run by hand failed to start");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("scheduled run of `{route}` failed to start: {error}\n").into_bytes(),
                );
            }
        };
        let millis = report.duration.as_secs_f64() * 1000.0;
        match report.error {
            None => (
                StatusCode::OK,
                "text/plain",
                format!("scheduled run of `{route}`: ok in {millis:.1} ms\n").into_bytes(),
            ),
            Some(error) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!(
                    "scheduled run of `{route}`: {} after {millis:.1} ms\n{error}\n",
                    report.outcome
                )
                .into_bytes(),
            ),
        }
    }

    /// Runs a reload and describes its result.
    async fn reload(&self) -> (StatusCode, &'static str, Vec<u8>) {
        let Some(reloader) = self.reloader.clone() else {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                b"reload is not available\n".to_vec(),
            );
        };
        let result = tokio::task::spawn_blocking(move || reloader.reload("admin")).await;
        match result {
            Ok(Ok(loaded)) => (
                StatusCode::OK,
                "text/plain",
                format!(
                    "reloaded: {} route{}, {} script{}\n",
                    loaded.routes,
                    if loaded.routes == 1 { "" } else { "s" },
                    loaded.scripts,
                    if loaded.scripts == 1 { "" } else { "s" },
                )
                .into_bytes(),
            ),
            Ok(Err(problems)) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "text/plain",
                format!("reload failed; the running config stays\n{problems}\n").into_bytes(),
            ),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("reload failed: {e}\n").into_bytes(),
            ),
        }
    }
}

/// Maps an unspecified bind address (`0.0.0.0`, `::`) to loopback, so the
/// readiness check can connect to it.
fn loopback_for(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), address.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), address.port())
        }
        _ => address,
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
        let from_script = session
            .req_header()
            .headers
            .contains_key(crate::fetch::SUBREQUEST_DEPTH_HEADER);
        let host = session
            .req_header()
            .headers
            .get(header::HOST)
            .map(|value| value.to_str().unwrap_or("\u{fffd}"));
        let host_allowed = self.host_allowed(host);
        let (status, content_type, body) = match path.as_str() {
            _ if !host_allowed => {
                let host = crate::logging::one_line(host.unwrap_or_default());
                tracing::warn!(%host, path = %path, "rejected an admin request for an unknown host");
                (
                    StatusCode::MISDIRECTED_REQUEST,
                    "text/plain",
                    format!(
                        "the Host `{host}` is not an IP address, localhost or a name listed in \
                         admin.hosts; add it to admin.hosts to reach the admin listener by \
                         that name\n"
                    )
                    .into_bytes(),
                )
            }
            // A route allowed to fetch private addresses could otherwise
            // reload the proxy or run another route's scheduled handler.
            _ if from_script => {
                tracing::warn!(path = %path, "rejected an admin request sent by a script's fetch");
                (
                    StatusCode::FORBIDDEN,
                    "text/plain",
                    b"the admin endpoints do not accept subrequests from scripts\n".to_vec(),
                )
            }
            // A browser sends `Origin` on cross-site requests; an operator's
            // curl does not, so such requests cannot reload from a web page.
            "/reload" if session.req_header().headers.contains_key(header::ORIGIN) => (
                StatusCode::FORBIDDEN,
                "text/plain",
                b"reload is not allowed from a browser page\n".to_vec(),
            ),
            "/reload" if method == http::Method::POST => self.reload().await,
            "/reload" => (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"use POST /reload\n".to_vec(),
            ),
            p if p.starts_with("/scheduled/")
                && session.req_header().headers.contains_key(header::ORIGIN) =>
            {
                (
                    StatusCode::FORBIDDEN,
                    "text/plain",
                    b"scheduled runs cannot be started from a browser page\n".to_vec(),
                )
            }
            p if p.starts_with("/scheduled/") && method == http::Method::POST => {
                self.run_scheduled(&p["/scheduled/".len()..]).await
            }
            p if p.starts_with("/scheduled/") => (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"use POST /scheduled/ROUTE\n".to_vec(),
            ),
            "/metrics" => (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                METRICS.encode(),
            ),
            "/healthz" => (StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => match self.not_ready().await {
                None => (StatusCode::OK, "text/plain", b"ready\n".to_vec()),
                Some(reason) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: {reason}\n").into_bytes(),
                ),
            },
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                b"not found; the admin endpoints are /metrics, /healthz, /readyz, POST /reload and \
                  POST /scheduled/ROUTE\n"
                    .to_vec(),
            ),
        };
        let length = body.len();
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, length)
            .body(body)
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_ready_until_listener_accepts() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test runtime");
        runtime.block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let address = listener.local_addr().expect("address");
            drop(listener);

            let app = AdminApp::new(vec![address], None, None, &[]);
            let reason = app.not_ready().await.expect("nothing listens yet");
            assert!(reason.contains(&address.to_string()), "{reason}");

            let _listener = tokio::net::TcpListener::bind(address)
                .await
                .expect("rebind");
            assert_eq!(app.not_ready().await, None);
        });
    }

    #[test]
    fn unspecified_addresses_map_to_loopback() {
        let any: SocketAddr = "0.0.0.0:8080".parse().expect("address");
        assert_eq!(
            loopback_for(any),
            "127.0.0.1:8080".parse().expect("address")
        );
        let any6: SocketAddr = "[::]:8080".parse().expect("address");
        assert_eq!(loopback_for(any6), "[::1]:8080".parse().expect("address"));
    }
}

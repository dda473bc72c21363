//! Origins: the servers behind routes, and how a peer is picked for each
//! request.
//!
//! Server names are resolved once, when the snapshot is built. Several
//! servers are balanced round-robin with Pingora's load balancer, and
//! connections to them are pooled by Pingora's connector.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::upstreams::peer::HttpPeer;

use crate::config::OriginSection;

/// A named group of servers and the settings for connecting to them.
pub struct Origin {
    pub name: String,
    balancer: LoadBalancer<RoundRobin>,
    /// Every resolved server address, in config order.
    addresses: Vec<SocketAddr>,
    /// Host name of each resolved address, for the default TLS SNI.
    hosts: HashMap<SocketAddr, String>,
    tls: bool,
    sni: Option<String>,
    verify_certificate: bool,
    connect_timeout: Duration,
    read_timeout: Duration,
}

impl Origin {
    /// Resolves the servers of `section` and builds its balancer.
    pub fn new(section: &OriginSection) -> Result<Self, String> {
        let mut hosts = HashMap::new();
        let mut addresses = Vec::new();
        for server in &section.servers {
            let resolved = server.to_socket_addrs().map_err(|e| {
                format!(
                    "cannot resolve server `{server}` of origin `{}`: {e}",
                    section.name
                )
            })?;
            let host = server
                .rsplit_once(':')
                .map(|(host, _)| host.trim_matches(['[', ']']).to_string())
                .unwrap_or_default();
            for address in resolved {
                hosts.insert(address, host.clone());
                addresses.push(address);
            }
        }
        if addresses.is_empty() {
            return Err(format!(
                "origin `{}` has no server addresses after resolving its names",
                section.name
            ));
        }
        let balancer = LoadBalancer::try_from_iter(addresses.clone())
            .map_err(|e| format!("cannot build the balancer of `{}`: {e}", section.name))?;
        Ok(Self {
            name: section.name.clone(),
            balancer,
            addresses,
            hosts,
            tls: section.tls,
            sni: section.sni.clone(),
            verify_certificate: section.verify_certificate,
            connect_timeout: Duration::from_millis(section.connect_timeout_ms),
            read_timeout: Duration::from_millis(section.read_timeout_ms),
        })
    }

    /// Picks the next server and returns a peer for it.
    pub fn select_peer(&self) -> Option<HttpPeer> {
        let backend = self.balancer.select(b"", 256)?;
        let address = *backend.addr.as_inet()?;
        let sni = match &self.sni {
            Some(sni) => sni.clone(),
            None => self.hosts.get(&address).cloned().unwrap_or_default(),
        };
        let mut peer = HttpPeer::new(address, self.tls, sni);
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.total_connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = Some(self.read_timeout);
        peer.options.verify_cert = self.verify_certificate;
        peer.options.verify_hostname = self.verify_certificate;
        Some(peer)
    }

    /// Picks the next server for a subrequest made with `fetch`.
    ///
    /// Over TLS the URL names the server name for the certificate, and the
    /// client is set to connect to the servers' addresses instead.
    pub fn fetch_target(&self) -> Option<crate::fetch::OriginTarget> {
        let backend = self.balancer.select(b"", 256)?;
        let address = *backend.addr.as_inet()?;
        let mut target = crate::fetch::OriginTarget {
            base: format!("http://{address}"),
            resolve: None,
            verify_certificate: self.verify_certificate,
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
        };
        if self.tls {
            let name = match &self.sni {
                Some(sni) => sni.clone(),
                None => self.hosts.get(&address).cloned().unwrap_or_default(),
            };
            if name.is_empty() || name.parse::<std::net::IpAddr>().is_ok() {
                target.base = format!("https://{address}");
            } else {
                target.base = format!("https://{name}:{}", address.port());
                target.resolve = Some((name, self.addresses.clone()));
            }
        }
        Some(target)
    }
}

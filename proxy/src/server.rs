//! Start-up: load the config, build the first snapshot, bind the listeners
//! and hand control to Pingora.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;

use crate::admin::AdminApp;
use crate::config::{self, Config, Problems, DEFAULT_LISTEN};
use crate::logging;
use crate::metrics::METRICS;
use crate::proxy::ActiasProxy;
use crate::script::ScriptCache;
use crate::snapshot::Snapshot;

/// Most compiled scripts kept in the cache.
const SCRIPT_CACHE_CAPACITY: u64 = 10_000;

/// A failure to start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config or a script has problems; each is listed.
    #[error("{0}")]
    Config(Problems),
    /// A listener address cannot be bound.
    #[error(
        "cannot listen on {address}: {source}; stop the process that uses it or change `listeners`"
    )]
    Bind {
        address: String,
        source: std::io::Error,
    },
}

/// Loads the config at `path` and builds its snapshot, as `actias check`
/// does. Returns the config and the snapshot.
/// Every problem of the config and of its scripts is reported in one run.
pub fn load(path: &Path, vms_per_script: usize) -> Result<(Config, Snapshot), Problems> {
    let (config, mut problems) = config::load_partial(path);
    let Some(config) = config else {
        return Err(Problems(problems));
    };
    let cache = ScriptCache::new(SCRIPT_CACHE_CAPACITY);
    match Snapshot::build(&config, &cache, vms_per_script) {
        Ok(snapshot) if problems.is_empty() => Ok((config, snapshot)),
        Ok(_) => Err(Problems(problems)),
        Err(more) => {
            problems.extend(more.0);
            Err(Problems(problems))
        }
    }
}

/// Runs the proxy until it is told to stop. Does not return on success.
pub fn run(path: &Path, upgrade: bool) -> Result<(), StartError> {
    let threads = config::load(path)
        .map(|config| config.file.server.threads)
        .unwrap_or(1);
    let (config, snapshot) = load(path, threads).map_err(|problems| {
        METRICS.config_loads.with_label_values(&["failure"]).inc();
        StartError::Config(problems)
    })?;
    METRICS.config_loads.with_label_values(&["success"]).inc();
    logging::init(&config.file.log);

    let mut listeners: Vec<String> = config
        .file
        .listeners
        .iter()
        .map(|listener| listener.address.clone())
        .collect();
    if listeners.is_empty() {
        listeners.push(DEFAULT_LISTEN.to_string());
    }
    // Pingora binds later and cannot report a busy port clearly, so try
    // each address first. An upgrading process takes the old one's sockets.
    let admin = &config.file.admin;
    let mut bound = listeners.clone();
    if admin.enabled {
        bound.push(admin.address.clone());
    }
    if !upgrade {
        for address in &bound {
            TcpListener::bind(address).map_err(|source| StartError::Bind {
                address: address.clone(),
                source,
            })?;
        }
    }

    tracing::info!(
        config = %path.display(),
        routes = snapshot.routes.len(),
        scripts = snapshot.script_count,
        "config loaded"
    );
    let shared = Arc::new(ArcSwap::from_pointee(snapshot));

    let server_section = &config.file.server;
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(server_section.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(server_section.graceful_shutdown_timeout_seconds),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        daemon: false,
        nocapture: false,
        test: false,
        conf: None,
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let mut service =
        pingora::proxy::http_proxy_service(&server.configuration, ActiasProxy::new(shared));
    for address in &listeners {
        service.add_tcp(address);
        tracing::info!(%address, "listening");
    }
    server.add_service(service);

    if admin.enabled {
        let addresses = listeners.iter().filter_map(|a| a.parse().ok()).collect();
        let mut admin_service =
            pingora::services::listening::Service::new("admin".into(), AdminApp::new(addresses));
        admin_service.threads = Some(1);
        admin_service.add_tcp(&admin.address);
        tracing::info!(address = %admin.address, "admin listening");
        server.add_service(admin_service);
    }
    server.run_forever();
}

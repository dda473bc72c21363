//! Start-up: load the config, build the first snapshot, bind the listeners
//! and hand control to Pingora.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::config::{self, Config, Problems, DEFAULT_LISTEN};
use crate::connection::Connections;
use crate::kv::{self, KvError, KvStore};
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
    /// The key-value store cannot be opened.
    #[error("cannot open the key-value store: {0}; check the `kv` section of the config")]
    Kv(KvError),
    /// A listener address cannot be bound.
    #[error(
        "cannot listen on {address}: {source}; stop the process that uses it or change `{key}`"
    )]
    Bind {
        address: String,
        /// The config key that names the address.
        key: &'static str,
        source: std::io::Error,
    },
}

/// Loads the config at `path` and builds its snapshot, as `actias check`
/// does. Returns the config and the snapshot.
/// Every problem of the config and of its scripts is reported in one run.
pub fn load(
    path: &Path,
    vms_per_script: usize,
    kv_store: Option<Arc<dyn KvStore>>,
) -> Result<(Config, Snapshot), Problems> {
    let (config, mut problems) = config::load_partial(path);
    let Some(config) = config else {
        return Err(Problems(problems));
    };
    let cache = ScriptCache::new(SCRIPT_CACHE_CAPACITY);
    match Snapshot::build(&config, &cache, vms_per_script, kv_store) {
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
    // Start logging before the scripts load, so that their top-level `print`
    // and `log.*` lines are kept.
    let first = config::load(path).map_err(|problems| {
        METRICS.config_loads.with_label_values(&["failure"]).inc();
        StartError::Config(problems)
    })?;
    logging::init(&first.file.log);
    let threads = first.file.server.threads;
    let kv_store = open_kv(&first)?;
    let (config, snapshot) = load(path, threads, Some(kv_store.clone())).map_err(|problems| {
        METRICS.config_loads.with_label_values(&["failure"]).inc();
        StartError::Config(problems)
    })?;
    METRICS.config_loads.with_label_values(&["success"]).inc();
    METRICS.register_routes(
        snapshot
            .routes
            .iter()
            .map(|route| (route.name.as_str(), route.script.is_some())),
    );

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
    let mut bound: Vec<(&str, &'static str)> = listeners
        .iter()
        .map(|a| (a.as_str(), "listeners"))
        .collect();
    if admin.enabled {
        bound.push((admin.address.as_str(), "admin.address"));
    }
    if !upgrade {
        for (address, key) in bound {
            TcpListener::bind(address).map_err(|source| StartError::Bind {
                address: address.to_string(),
                key,
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
    // Each worker thread runs its own runtime and accept loop, and tasks stay
    // on the thread that accepted them. A long script yields every few
    // milliseconds of CPU time (see `script::budget`), so the other
    // connections of its thread keep moving.
    let conf = ServerConf {
        threads,
        work_stealing: false,
        listener_tasks_per_fd: threads,
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

    let proxy = pingora::proxy::http_proxy(&server.configuration, ActiasProxy::new(shared));
    let limits = &config.file.limits;
    let connections = Connections::new(
        proxy,
        Duration::from_millis(limits.header_timeout_ms),
        Duration::from_millis(limits.keepalive_timeout_ms),
    );
    let mut service = Service::new("actias".into(), connections);
    for address in &listeners {
        service.add_tcp(address);
        tracing::info!(%address, "listening");
    }
    server.add_service(service);

    if admin.enabled {
        let addresses = listeners.iter().filter_map(|a| a.parse().ok()).collect();
        let mut admin_service =
            Service::new("admin".into(), AdminApp::new(addresses, Some(kv_store)));
        admin_service.threads = Some(1);
        admin_service.add_tcp(&admin.address);
        tracing::info!(address = %admin.address, "admin listening");
        server.add_service(admin_service);
    }
    server.run_forever();
}

/// Opens the configured key-value store. The store's background tasks (the
/// Scylla driver's connections) run on a runtime of their own that lives as
/// long as the process, apart from Pingora's worker runtimes.
fn open_kv(config: &Config) -> Result<Arc<dyn KvStore>, StartError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("actias-kv")
        .enable_all()
        .build()
        .map_err(|e| {
            StartError::Kv(KvError::Backend {
                backend: "runtime",
                detail: e.to_string(),
            })
        })?;
    let store = runtime
        .block_on(kv::open(&config.file.kv, &config.base_dir))
        .map_err(StartError::Kv)?;
    tracing::info!(backend = store.backend(), "key-value store open");
    // The runtime must outlive every request, so it is never dropped.
    std::mem::forget(runtime);
    Ok(store)
}

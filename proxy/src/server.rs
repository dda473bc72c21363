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
use crate::reload::Reloader;
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
    /// The `--seed` file cannot be imported.
    #[error("cannot seed the key-value store: {0}")]
    Seed(KvError),
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

/// Start options of `actias run` and `actias dev`.
#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Take over the listening sockets of a running Actias.
    pub upgrade: bool,
    /// Development mode: debug logs of route decisions in text, file
    /// watching, and the embedded store whatever the config sets.
    pub dev: bool,
    /// JSON file of `{"namespace": [records]}` imported into the store
    /// before the scripts load (development mode).
    pub seed: Option<std::path::PathBuf>,
}

/// Runs the proxy until a signal stops it. Does not return on success.
pub fn run(path: &Path, options: RunOptions) -> Result<(), StartError> {
    let mut first = config::load(path).map_err(|problems| {
        METRICS.config_loads.with_label_values(&["failure"]).inc();
        StartError::Config(problems)
    })?;
    let overrides: fn(&mut Config) = if options.dev { dev_overrides } else { |_| {} };
    overrides(&mut first);
    // Start logging before the scripts load, so that their top-level `print`
    // and `log.*` lines are kept.
    logging::init(&first.file.log);
    let threads = first.file.server.threads;

    // The control runtime runs the key-value store's background tasks and
    // the SIGHUP handler, apart from Pingora's worker runtimes, for as long
    // as the process lives.
    let control = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("actias-control")
        .enable_all()
        .build()
        .map_err(|e| {
            StartError::Kv(KvError::Backend {
                backend: "runtime",
                detail: e.to_string(),
            })
        })?;
    let kv_store = control
        .block_on(kv::open(&first.file.kv, &first.base_dir))
        .map_err(StartError::Kv)?;
    tracing::info!(backend = kv_store.backend(), "key-value store open");
    if let Some(seed) = &options.seed {
        control
            .block_on(seed_store(kv_store.as_ref(), seed))
            .map_err(StartError::Seed)?;
    }

    let cache = ScriptCache::new(SCRIPT_CACHE_CAPACITY);
    let snapshot = build(&first, &cache, threads, Some(kv_store.clone())).map_err(|problems| {
        METRICS.config_loads.with_label_values(&["failure"]).inc();
        StartError::Config(problems)
    })?;
    let config = first;
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
    if !options.upgrade {
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
    let reloader = Arc::new(Reloader::new(
        &config,
        shared.clone(),
        cache,
        threads,
        Some(kv_store.clone()),
        overrides,
    ));
    control.spawn(reload_on_sighup(reloader.clone()));
    control.spawn(crate::schedule::run_schedules(shared.clone()));
    control.spawn(exit_when_drained(Duration::from_secs(
        config.file.server.grace_period_seconds,
    )));
    if config.file.server.watch {
        let interval = Duration::from_millis(config.file.server.watch_interval_ms);
        if let Err(e) = reloader.clone().watch(interval) {
            tracing::error!(error = %e, "cannot start watching the config for changes");
        }
    }
    // The control runtime must outlive every request, so it is never dropped.
    std::mem::forget(control);

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
        upgrade_sock: server_section.upgrade_sock.clone(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade: options.upgrade,
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
        limits.max_connections,
        Duration::from_millis(limits.send_timeout_ms),
    );
    let mut service = Service::new("actias".into(), connections);
    for address in &listeners {
        service.add_tcp(address);
        tracing::info!(%address, "listening");
    }
    server.add_service(service);

    if admin.enabled {
        let addresses = listeners.iter().filter_map(|a| a.parse().ok()).collect();
        let app = AdminApp::new(addresses, Some(kv_store), Some(reloader), &admin.hosts);
        let mut admin_service = Service::new("admin".into(), app);
        admin_service.threads = Some(1);
        admin_service.add_tcp(&admin.address);
        tracing::info!(address = %admin.address, "admin listening");
        server.add_service(admin_service);
    }
    server.run_forever();
}

/// Settings of `actias dev`, applied over the config at start and reload.
fn dev_overrides(config: &mut Config) {
    config.file.log.format = config::LogFormat::Text;
    config.file.log.level = "info,actias=debug".to_string();
    config.file.kv.backend = config::KvBackend::Embedded;
    config.file.server.watch = true;
}

/// Builds the snapshot of a checked config.
fn build(
    config: &Config,
    cache: &ScriptCache,
    threads: usize,
    kv_store: Option<Arc<dyn KvStore>>,
) -> Result<Snapshot, Problems> {
    Snapshot::build(config, cache, threads, kv_store)
}

/// After SIGTERM or SIGQUIT, exits as soon as no request is in progress.
///
/// Pingora itself stops accepting at the signal and ends the process when
/// `grace_period_seconds` have passed. This only ends it earlier, when
/// there is nothing left to wait for. After SIGQUIT the listeners go to
/// the new process first, which Pingora retries for up to five seconds,
/// so the early exit waits that long.
async fn exit_when_drained(grace: Duration) {
    use tokio::signal::unix::{signal, SignalKind};

    let (Ok(mut terminate), Ok(mut quit)) =
        (signal(SignalKind::terminate()), signal(SignalKind::quit()))
    else {
        tracing::warn!("cannot watch for SIGTERM; shutdown waits the whole grace period");
        return;
    };
    let handoff = tokio::select! {
        _ = terminate.recv() => Duration::ZERO,
        _ = quit.recv() => Duration::from_secs(6),
    };
    let started = tokio::time::Instant::now();
    tokio::time::sleep(handoff).await;
    loop {
        let in_flight = crate::proxy::IN_FLIGHT.load(std::sync::atomic::Ordering::Relaxed);
        if in_flight == 0 {
            tracing::info!("no request in progress; exiting");
            std::process::exit(0);
        }
        if started.elapsed() >= grace {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reloads the config on every SIGHUP.
async fn reload_on_sighup(reloader: Arc<Reloader>) {
    use tokio::signal::unix::{signal, SignalKind};

    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::error!(error = %e, "cannot handle SIGHUP; reload through the admin listener");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        let reloader = reloader.clone();
        // A failed reload was logged and counted by `reload`.
        let _ = tokio::task::spawn_blocking(move || reloader.reload("SIGHUP")).await;
    }
}

/// Imports a development seed file: `{"namespace": [records]}` in the
/// bulk format of `actias kv import`.
async fn seed_store(store: &dyn KvStore, path: &Path) -> Result<(), KvError> {
    let invalid = |message: String| KvError::Invalid(message);
    let text = std::fs::read_to_string(path).map_err(|e| {
        invalid(format!(
            "cannot read the seed file {} given with --seed: {e}; pass the path of an \
                 existing JSON file",
            path.display()
        ))
    })?;
    let seed: std::collections::BTreeMap<String, Vec<kv::tool::Record>> =
        serde_json::from_str(&text).map_err(|e| {
            invalid(format!(
                "{}: expected {{\"namespace\": [{{\"key\": ..., \"value\": ...}}]}}: {e}",
                path.display()
            ))
        })?;
    for (namespace, records) in seed {
        let count = kv::tool::import(store, &namespace, records).await?;
        tracing::info!(namespace = %namespace, keys = count, "seeded the key-value store");
    }
    Ok(())
}

//! Hot reload: build a whole new snapshot, then swap it in.
//!
//! A reload parses and checks the config, compiles every changed script
//! (unchanged ones come from the cache by content hash), loads their VMs
//! and builds the router. Only then is the snapshot swapped. A request
//! keeps the snapshot it started on, so it runs on the old or the new
//! config, never a mix. A reload that fails keeps the running snapshot and
//! logs every problem.
//!
//! Reloads are triggered by SIGHUP, by `POST /reload` on the admin
//! listener, and by a poll of the config file and scripts for changes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::config::{self, Config, Problems};
use crate::kv::KvStore;
use crate::metrics::METRICS;
use crate::script::ScriptCache;
use crate::snapshot::Snapshot;

/// Size and modification time of each watched file; `None` when missing.
type Fingerprint = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

/// Counts of a successful reload.
#[derive(Debug, Clone, Copy)]
pub struct Loaded {
    pub routes: usize,
    pub scripts: usize,
}

/// Rebuilds and swaps the snapshot that the proxy serves.
pub struct Reloader {
    path: PathBuf,
    vms_per_script: usize,
    kv_store: Option<Arc<dyn KvStore>>,
    cache: ScriptCache,
    current: Arc<ArcSwap<Snapshot>>,
    /// Settings that only a restart applies, as last loaded.
    restart_only: Mutex<Vec<(&'static str, String)>>,
    /// Files behind the current snapshot, as last seen by the watcher.
    watched: Mutex<Fingerprint>,
    /// Serialises reloads, so that two triggers never interleave.
    serial: Mutex<()>,
    /// Settings applied over every loaded config, as `actias dev` does.
    overrides: fn(&mut Config),
}

impl Reloader {
    /// Creates a reloader for the snapshot built from `config`.
    pub fn new(
        config: &Config,
        current: Arc<ArcSwap<Snapshot>>,
        cache: ScriptCache,
        vms_per_script: usize,
        kv_store: Option<Arc<dyn KvStore>>,
        overrides: fn(&mut Config),
    ) -> Self {
        Self {
            overrides,
            path: config.path.clone(),
            vms_per_script,
            kv_store,
            cache,
            current,
            restart_only: Mutex::new(restart_only(config)),
            watched: Mutex::new(fingerprint(&watched_paths(config))),
            serial: Mutex::new(()),
        }
    }

    /// Returns the snapshot being served.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Reloads now. `trigger` names the cause in the log.
    pub fn reload(&self, trigger: &str) -> Result<Loaded, Problems> {
        let _serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        let (mut config, mut problems) = config::load_partial(&self.path);
        if let Some(config) = config.as_mut() {
            (self.overrides)(config);
        }
        if let Some(config) = &config {
            *self.watched.lock().unwrap_or_else(|p| p.into_inner()) =
                fingerprint(&watched_paths(config));
        }
        let built = config.as_ref().and_then(|config| {
            match Snapshot::build(
                config,
                &self.cache,
                self.vms_per_script,
                self.kv_store.clone(),
            ) {
                Ok(snapshot) => Some(snapshot),
                Err(more) => {
                    problems.extend(more.0);
                    None
                }
            }
        });

        let (Some(config), Some(snapshot), true) = (config, built, problems.is_empty()) else {
            METRICS.config_loads.with_label_values(&["failure"]).inc();
            for problem in &problems {
                tracing::warn!(trigger, problem = %problem, "config reload failed; the running config stays");
            }
            return Err(Problems(problems));
        };

        let loaded = Loaded {
            routes: snapshot.routes.len(),
            scripts: snapshot.script_count,
        };
        METRICS.register_routes(
            snapshot
                .routes
                .iter()
                .map(|route| (route.name.as_str(), route.script.is_some())),
        );
        self.current.store(Arc::new(snapshot));
        METRICS.config_loads.with_label_values(&["success"]).inc();

        let fixed = restart_only(&config);
        let mut previous = self.restart_only.lock().unwrap_or_else(|p| p.into_inner());
        let changed: Vec<&str> = fixed
            .iter()
            .zip(previous.iter())
            .filter(|(now, before)| now.1 != before.1)
            .map(|(now, _)| now.0)
            .collect();
        if !changed.is_empty() {
            tracing::warn!(
                changed = changed.join(", "),
                "these settings changed and take effect after a restart; the running \
                 process keeps the values it started with"
            );
            *previous = fixed;
        }
        tracing::info!(
            trigger,
            routes = loaded.routes,
            scripts = loaded.scripts,
            "config reloaded"
        );
        Ok(loaded)
    }

    /// Polls the config file and scripts every `interval` and reloads when
    /// one of them changed. Runs on its own thread until the process ends.
    pub fn watch(self: Arc<Self>, interval: Duration) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("actias-watch".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                let changed = {
                    let watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
                    let paths: Vec<PathBuf> = watched.iter().map(|(p, _)| p.clone()).collect();
                    fingerprint(&paths) != *watched
                };
                if changed {
                    // A failed reload was logged and counted by `reload`.
                    let _ = self.reload("file change");
                }
            })
            .map(|_| ())
    }
}

/// Returns the settings that a reload cannot apply, each with its key and
/// its value as comparable text.
fn restart_only(config: &Config) -> Vec<(&'static str, String)> {
    let file = &config.file;
    // The connection limits are read once, by the listeners.
    let limits = &file.limits;
    vec![
        ("server", format!("{:?}", file.server)),
        ("listeners", format!("{:?}", file.listeners)),
        ("admin", format!("{:?}", file.admin)),
        ("log", format!("{:?}", file.log)),
        ("kv", format!("{:?}", file.kv)),
        (
            "limits.header_timeout_ms",
            limits.header_timeout_ms.to_string(),
        ),
        (
            "limits.keepalive_timeout_ms",
            limits.keepalive_timeout_ms.to_string(),
        ),
        ("limits.max_connections", limits.max_connections.to_string()),
        ("limits.send_timeout_ms", limits.send_timeout_ms.to_string()),
    ]
}

/// Returns the config file and every script it names.
fn watched_paths(config: &Config) -> Vec<PathBuf> {
    let mut paths = vec![config.path.clone()];
    for route in &config.file.routes {
        if let Some(script) = &route.script {
            let path = config.script_path(script);
            if !paths.contains(&path) {
                paths.push(path);
            }
        }
    }
    paths
}

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    paths
        .iter()
        .map(|path| (path.clone(), file_state(path)))
        .collect()
}

fn file_state(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

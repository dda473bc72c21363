//! The config snapshot: routes, origins and loaded scripts, built whole
//! and never changed.
//!
//! A request keeps an `Arc` of the snapshot it started on, so a reload
//! that swaps in a new snapshot never changes a request halfway.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::bindings::RouteEnv;
use crate::config::{Config, LimitsSection, OnFailure, Problem, Problems};
use crate::fetch::Fetcher;
use crate::kv::KvStore;
use crate::metrics::RouteMetrics;
use crate::origin::Origin;
use crate::routing::Router;
use crate::schedule::Schedule;
use crate::script::{RouteScript, ScriptCache, ScriptError, VmSettings};

/// One route, ready to serve.
pub struct Route {
    pub name: String,
    pub script: Option<Arc<RouteScript>>,
    pub origin: Option<Arc<Origin>>,
    /// CPU time the fetch handler may use per request.
    pub cpu_limit: Duration,
    /// Largest body read for the script on a route without an origin.
    pub max_request_body_bytes: usize,
    pub on_failure: OnFailure,
    pub error_status: u16,
    pub limit_status: u16,
    /// This route's metric series.
    pub metrics: Arc<RouteMetrics>,
    /// When the scheduled handler runs: the expression and its parse.
    pub schedule: Option<(String, Schedule)>,
}

/// Everything a request needs from the configuration.
pub struct Snapshot {
    pub router: Router,
    pub routes: Vec<Route>,
    pub limits: LimitsSection,
    /// Number of distinct script files loaded.
    pub script_count: usize,
}

impl Snapshot {
    /// Builds a snapshot from a checked config, compiling scripts through
    /// `cache` and loading `vms_per_script` VMs for each route with a script.
    pub fn build(
        config: &Config,
        cache: &ScriptCache,
        vms_per_script: usize,
        kv_store: Option<Arc<dyn KvStore>>,
    ) -> Result<Self, Problems> {
        let mut problems = Vec::new();

        let mut origins = HashMap::new();
        for section in &config.file.origins {
            let index = section.index;
            // A server without a valid port was reported by `config::load`;
            // resolving it would report it a second time.
            let ports_valid = !section.servers.is_empty()
                && section.servers.iter().all(|server| {
                    server
                        .rsplit_once(':')
                        .is_some_and(|(_, port)| port.parse::<u16>().is_ok_and(|p| p > 0))
                });
            if !ports_valid {
                continue;
            }
            match Origin::new(section) {
                Ok(origin) => {
                    origins.insert(section.name.clone(), Arc::new(origin));
                }
                Err(message) => problems.push(config.problem(format!("origins[{index}]"), message)),
            }
        }

        let mut routes = Vec::new();
        let mut script_files = Vec::new();
        let defaults = &config.file.limits;
        for section in &config.file.routes {
            let index = section.index;
            let memory_limit = section.limits.memory_bytes.unwrap_or(defaults.memory_bytes);
            let origin = section
                .origin
                .as_ref()
                .and_then(|name| origins.get(name).cloned());
            let env = match route_env(config, section) {
                Ok(env) => Arc::new(env),
                Err(unreadable) => {
                    problems.extend(unreadable);
                    continue;
                }
            };
            let schedule = section
                .schedule
                .as_ref()
                .and_then(|text| Some((text.clone(), crate::schedule::parse(text).ok()?)));
            let script = match &section.script {
                None => None,
                Some(script) => {
                    let path = config.script_path(script);
                    if !script_files.contains(&path) {
                        script_files.push(path.clone());
                    }
                    let chunk_name = format!("{}/{}", section.name, script);
                    let settings = VmSettings {
                        route: section.name.clone(),
                        chunk_name,
                        memory_limit,
                        kv_store: kv_store.clone(),
                        kv_namespaces: section.kv.clone(),
                        kv_max_operations: section
                            .limits
                            .max_kv_operations
                            .unwrap_or(defaults.max_kv_operations),
                        kv_max_write_bytes: section
                            .limits
                            .max_kv_write_bytes
                            .unwrap_or(defaults.max_kv_write_bytes),
                        env: env.clone(),
                        fetcher: Some(Arc::new(Fetcher::new(
                            &section.name,
                            &section.hosts,
                            &section.fetch,
                            origin.clone(),
                        ))),
                    };
                    match load_script(&path, settings, cache, vms_per_script) {
                        Ok(script) => {
                            let missing = if schedule.is_some() && !script.has_scheduled_handler {
                                Some((
                                    "schedule",
                                    "the route has a schedule but its script registers no \
                                     scheduled handler; call add_event_listener(\"scheduled\", \
                                     function(event) ... end)",
                                ))
                            } else if section.schedule.is_none() && !script.has_fetch_handler {
                                Some((
                                    "script",
                                    "the script registers no fetch handler; call \
                                     add_event_listener(\"fetch\", function(request) ... end), \
                                     or set a `schedule` for a scheduled handler",
                                ))
                            } else {
                                None
                            };
                            if let Some((field, message)) = missing {
                                problems.push(
                                    config.problem(format!("routes[{index}].{field}"), message),
                                );
                            }
                            Some(Arc::new(script))
                        }
                        Err(LoadFailure::Problem(problem)) => {
                            problems.push(problem);
                            None
                        }
                        Err(LoadFailure::Unreadable(error)) => {
                            problems.push(config.problem(
                                format!("routes[{index}].script"),
                                format!("cannot read script `{}`: {error}", path.display()),
                            ));
                            None
                        }
                    }
                }
            };
            let cpu_ms = section.limits.cpu_ms.unwrap_or(defaults.cpu_ms);
            routes.push(Route {
                name: section.name.clone(),
                script,
                origin,
                cpu_limit: Duration::from_millis(cpu_ms),
                max_request_body_bytes: section
                    .limits
                    .max_request_body_bytes
                    .unwrap_or(defaults.max_request_body_bytes),
                on_failure: section.on_failure,
                error_status: section.error_status,
                limit_status: section.limit_status,
                metrics: Arc::new(RouteMetrics::new(&section.name)),
                schedule,
            });
        }

        if !problems.is_empty() {
            return Err(Problems(problems));
        }
        Ok(Self {
            router: Router::new(&config.file.routes),
            routes,
            limits: config.file.limits.clone(),
            script_count: script_files.len(),
        })
    }
}

/// Reads the variables and secrets of a route; a secret that cannot be
/// read is a problem of the config, reported without its value.
fn route_env(
    config: &Config,
    section: &crate::config::RouteSection,
) -> Result<RouteEnv, Vec<Problem>> {
    let index = section.index;
    let mut env = RouteEnv {
        variables: section
            .env
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
        secrets: Vec::new(),
    };
    let mut problems = Vec::new();
    for (name, source) in &section.secrets {
        let key = format!("routes[{index}].secrets.{name}");
        let value: Result<String, Problem> = match (&source.env, &source.file) {
            (Some(variable), None) => std::env::var(variable).map_err(|_| {
                config.problem(
                    key.clone(),
                    format!(
                        "secret `{name}` comes from the environment variable `{variable}`, \
                         which is not set (or not UTF-8); set it for the proxy process"
                    ),
                )
            }),
            (None, Some(file)) => {
                let path = config.script_path(file);
                std::fs::read_to_string(&path)
                    .map(|text| {
                        let text = text.strip_suffix('\n').unwrap_or(&text);
                        text.strip_suffix('\r').unwrap_or(text).to_string()
                    })
                    .map_err(|e| {
                        config.problem(
                            key.clone(),
                            format!(
                                "secret `{name}` comes from `{}`, which cannot be read: {e}",
                                path.display()
                            ),
                        )
                    })
            }
            // Reported by `config::load`.
            _ => continue,
        };
        match value {
            Ok(value) => env.secrets.push((name.clone(), value)),
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        Ok(env)
    } else {
        Err(problems)
    }
}

enum LoadFailure {
    /// The file cannot be read; reported against the config key.
    Unreadable(std::io::Error),
    /// The script does not compile or load; reported against the script.
    Problem(Problem),
}

/// Reads, compiles and loads one script.
fn load_script(
    path: &PathBuf,
    settings: VmSettings,
    cache: &ScriptCache,
    vms: usize,
) -> Result<RouteScript, LoadFailure> {
    let source = std::fs::read(path).map_err(LoadFailure::Unreadable)?;
    let problem = |line: Option<usize>, message: String| {
        LoadFailure::Problem(Problem {
            file: path.clone(),
            line,
            key: None,
            message,
        })
    };
    let bytecode = cache
        .get_or_compile(&source)
        .map_err(|e| problem(e.line, format!("syntax error: {}", e.message)))?;
    let chunk_name = settings.chunk_name.clone();
    RouteScript::new(settings, bytecode, vms).map_err(|e| {
        let line = match &e {
            ScriptError::Load(message) => line_in(message, &chunk_name),
            _ => None,
        };
        let message = match e {
            ScriptError::Load(message) => {
                let message = first_line(&message);
                let message = message.strip_prefix("runtime error: ").unwrap_or(message);
                format!("error while loading: {message}")
            }
            other => other.to_string(),
        };
        problem(line, message)
    })
}

/// Finds `chunk:LINE:` in a Lua error message.
pub fn line_in(message: &str, chunk_name: &str) -> Option<usize> {
    let start = message.find(&format!("{chunk_name}:"))? + chunk_name.len() + 1;
    let digits: String = message[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or(message)
}

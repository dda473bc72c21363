//! The YAML file format, as serde reads it.
//!
//! These types mirror the file one to one and reject unknown keys. They
//! hold no derived state: `config::load` checks them and `snapshot` turns
//! them into the structures that serve requests.

use serde::Deserialize;

/// Default public listener address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";

/// Process-wide settings handed to Pingora.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Worker threads that serve requests.
    pub threads: usize,
    /// Seconds that in-flight requests get to finish after SIGTERM or
    /// SIGQUIT; the process exits as soon as none is left.
    pub grace_period_seconds: u64,
    /// Seconds that Pingora's runtimes get to stop after the grace period.
    pub graceful_shutdown_timeout_seconds: u64,
    /// Reload when the config file or a script changes.
    pub watch: bool,
    /// Milliseconds between checks of the config file and scripts.
    pub watch_interval_ms: u64,
    /// Unix socket on which an upgrading process receives the listeners.
    pub upgrade_sock: String,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            threads: 2,
            grace_period_seconds: 30,
            graceful_shutdown_timeout_seconds: 5,
            watch: true,
            watch_interval_ms: 1000,
            upgrade_sock: "/tmp/actias-upgrade.sock".to_string(),
        }
    }
}

/// One public listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSection {
    /// Position of this item in its list in the file, for messages.
    #[serde(skip)]
    pub index: usize,
    /// `host:port` to bind, for example `0.0.0.0:8080`.
    pub address: String,
}

/// Default admin listener address.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9090";

/// The admin listener: metrics and health endpoints, never user traffic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Serve the admin endpoints.
    pub enabled: bool,
    /// `host:port` of the admin listener; keep it off public interfaces.
    pub address: String,
    /// Host names accepted in the Host header besides IP addresses and
    /// `localhost`.
    pub hosts: Vec<String>,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            enabled: true,
            address: DEFAULT_ADMIN.to_string(),
            hosts: Vec::new(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// `time LEVEL target: message key=value ...` per line.
    Text,
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Line format of every log line, access log included.
    pub format: LogFormat,
    /// Write one access-log line per request.
    pub access_log: bool,
    /// Default filter, such as `info` or `info,actias=debug`; the
    /// `RUST_LOG` environment variable overrides it.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            access_log: true,
            level: "info".to_string(),
        }
    }
}

/// Key-value backend that scripts use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvBackend {
    /// A redb file on this machine.
    #[default]
    Embedded,
    /// A ScyllaDB (or Cassandra) cluster.
    Scylla,
}

/// The key-value store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvSection {
    pub backend: KvBackend,
    pub embedded: EmbeddedSection,
    pub scylla: ScyllaSection,
}

/// Settings of the embedded backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedSection {
    /// Database file, relative to the config file's directory.
    pub path: String,
    /// Seconds between sweeps that delete expired keys.
    pub sweep_interval_seconds: u64,
}

impl Default for EmbeddedSection {
    fn default() -> Self {
        Self {
            path: "data/kv.redb".to_string(),
            sweep_interval_seconds: 60,
        }
    }
}

/// Settings of the ScyllaDB backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScyllaSection {
    /// Contact points, `host:port`.
    pub nodes: Vec<String>,
    /// Keyspace that contains the tables. It is created if missing.
    pub keyspace: String,
    /// Replication of the keyspace when it is created, as CQL options.
    pub replication: std::collections::BTreeMap<String, serde_yaml::Value>,
    /// Consistency level of every statement, such as `local_quorum`.
    pub consistency: String,
    /// Milliseconds a statement may take before it fails with a timeout.
    pub request_timeout_ms: u64,
    /// Milliseconds to wait for a connection to a node.
    pub connect_timeout_ms: u64,
}

impl Default for ScyllaSection {
    fn default() -> Self {
        let mut replication = std::collections::BTreeMap::new();
        replication.insert("class".to_string(), "SimpleStrategy".into());
        replication.insert("replication_factor".to_string(), 1.into());
        Self {
            nodes: vec!["127.0.0.1:9042".to_string()],
            keyspace: "actias".to_string(),
            replication,
            consistency: "local_quorum".to_string(),
            request_timeout_ms: 2_000,
            connect_timeout_ms: 5_000,
        }
    }
}

impl ScyllaSection {
    /// Returns the replication options as a CQL map literal.
    pub fn replication_literal(&self) -> String {
        let entries: Vec<String> = self
            .replication
            .iter()
            .map(|(key, value)| {
                let value = match value {
                    serde_yaml::Value::String(text) => text.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                format!(
                    "'{}': '{}'",
                    key.replace('\'', "''"),
                    value.replace('\'', "''")
                )
            })
            .collect();
        format!("{{{}}}", entries.join(", "))
    }

    /// Returns the configured consistency level.
    pub fn consistency(&self) -> Result<scylla::statement::Consistency, crate::kv::KvError> {
        crate::kv::parse_consistency(&self.consistency).ok_or_else(|| {
            crate::kv::KvError::Invalid(format!(
                "consistency `{}` is not a CQL consistency level; use local_quorum, quorum, one \
                 or another level",
                self.consistency
            ))
        })
    }
}

/// Limits applied to every request; routes may override the script ones.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// CPU time, in milliseconds, that a fetch handler may use per request.
    pub cpu_ms: u64,
    /// Memory, in bytes, that one script VM may allocate.
    pub memory_bytes: usize,
    /// Key-value operations that one request or scheduled run may make.
    pub max_kv_operations: u32,
    /// Bytes of keys, values and metadata that one request or scheduled
    /// run may write to the key-value store.
    pub max_kv_write_bytes: usize,
    /// Largest request body, in bytes, read into memory for a script.
    pub max_request_body_bytes: usize,
    /// Maximum request target (path and query) length, in bytes. A longer one gets 414.
    pub max_uri_bytes: usize,
    /// Largest request head (request line and headers), in bytes; larger
    /// gets 431.
    pub max_header_bytes: usize,
    /// Milliseconds a new connection has to send a complete request head.
    pub header_timeout_ms: u64,
    /// Milliseconds an idle keep-alive connection has to send the complete
    /// head of its next request.
    pub keepalive_timeout_ms: u64,
    /// Client connections open at once on the public listeners; a new one
    /// past this is closed at once.
    pub max_connections: usize,
    /// Milliseconds a write to a client may wait for the client to read;
    /// then the connection is closed.
    pub send_timeout_ms: u64,
    /// Request body bytes that all requests together may hold in memory
    /// for scripts; a body that does not fit gets 503.
    pub max_buffered_body_bytes: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            cpu_ms: 50,
            memory_bytes: 64 * 1024 * 1024,
            max_kv_operations: 1000,
            max_kv_write_bytes: 32 * 1024 * 1024,
            max_request_body_bytes: 10 * 1024 * 1024,
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 32 * 1024,
            header_timeout_ms: 10_000,
            keepalive_timeout_ms: 60_000,
            max_connections: 10_000,
            send_timeout_ms: 60_000,
            max_buffered_body_bytes: 512 * 1024 * 1024,
        }
    }
}

/// Script limits of one route; unset values take the `limits` section's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteLimitsSection {
    pub cpu_ms: Option<u64>,
    pub memory_bytes: Option<usize>,
    pub max_kv_operations: Option<u32>,
    pub max_kv_write_bytes: Option<usize>,
    pub max_request_body_bytes: Option<usize>,
}

/// Action of a route when its script fails or hits a limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Respond with `error_status` or `limit_status`.
    #[default]
    Respond,
    /// Forward the request, unchanged, to the route's origin.
    Origin,
}

/// An origin: one or more servers that receive fall-through requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginSection {
    /// Position of this item in its list in the file, for messages.
    #[serde(skip)]
    pub index: usize,
    /// Name that routes refer to.
    pub name: String,
    /// `host:port` of each server; several are balanced round-robin.
    pub servers: Vec<String>,
    /// Connect to the servers over TLS.
    #[serde(default)]
    pub tls: bool,
    /// Server name sent in the TLS handshake; defaults to the server's host.
    #[serde(default)]
    pub sni: Option<String>,
    /// Verify the origin's certificate when `tls` is on.
    #[serde(default = "default_true")]
    pub verify_certificate: bool,
    /// Milliseconds to wait for a TCP (and TLS) connection.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Milliseconds to wait for each read from the origin.
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
}

/// A route: which requests it takes, and what serves them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Position of this item in its list in the file, for messages.
    #[serde(skip)]
    pub index: usize,
    /// Name used in logs, metrics and `request.route`.
    pub name: String,
    /// Host patterns: `example.com` or `*.example.com`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Take requests whose host no route names.
    #[serde(default)]
    pub default: bool,
    /// Path patterns: `/health`, `/static/*`, `/users/:id`; empty means all.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Methods this route takes; empty means all.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Lua script, relative to the config file's directory.
    #[serde(default)]
    pub script: Option<String>,
    /// Name of the origin that receives requests the script does not respond to.
    #[serde(default)]
    pub origin: Option<String>,
    /// Script limits that override the `limits` section for this route.
    #[serde(default)]
    pub limits: RouteLimitsSection,
    /// Key-value namespaces the script may open with `kv.namespace`.
    #[serde(default)]
    pub kv: Vec<String>,
    /// Action when the script fails or hits a limit.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Status sent when the script raises an error.
    #[serde(default = "default_error_status")]
    pub error_status: u16,
    /// Status sent when the script exceeds its CPU or memory limit.
    #[serde(default = "default_limit_status")]
    pub limit_status: u16,
    /// Plain variables the script reads from `env`.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Secrets the script reads from `env`, each taken from an environment
    /// variable or a file.
    #[serde(default)]
    pub secrets: std::collections::BTreeMap<String, SecretSource>,
    /// The hosts and limits of `fetch` on this route.
    #[serde(default)]
    pub fetch: FetchSection,
    /// Cron expression on which the script's scheduled handler runs.
    #[serde(default)]
    pub schedule: Option<String>,
}

/// The source of one secret: exactly one of the two fields is set.
///
/// Read through [`SecretSourceFields`] so that an error never quotes a
/// value, which may be the secret itself pasted into the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "serde_yaml::Value")]
pub struct SecretSource {
    /// Name of an environment variable of the proxy process.
    pub env: Option<String>,
    /// File that contains the secret, relative to the config file's directory;
    /// one trailing newline is removed.
    pub file: Option<String>,
}

/// The fields of a secret source, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretSourceFields {
    env: Option<String>,
    file: Option<String>,
}

impl TryFrom<serde_yaml::Value> for SecretSource {
    type Error = String;

    fn try_from(value: serde_yaml::Value) -> Result<Self, String> {
        let fix = "write `{env: VARIABLE}` or `{file: PATH}`, and keep the secret itself out \
                   of the config";
        if !value.is_mapping() {
            return Err(format!("a secret must be a mapping; {fix}"));
        }
        let fields: SecretSourceFields = serde_yaml::from_value(value).map_err(|_| {
            format!("a secret takes only the keys `env` and `file` with text values; {fix}")
        })?;
        Ok(Self {
            env: fields.env,
            file: fields.file,
        })
    }
}

/// Limits and permissions of `fetch` on one route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FetchSection {
    /// Hosts the script may fetch, such as `api.example.com` or
    /// `*.example.com`; empty allows every host with a public address.
    pub allow: Vec<String>,
    /// Also allow loopback, private and link-local addresses.
    pub allow_private: bool,
    /// Most subrequests one request (or one scheduled run) may make.
    pub max_requests: u32,
    /// Maximum subrequests in flight at once for one request.
    pub max_in_flight: usize,
    /// Milliseconds a subrequest may take, body included; a script may
    /// ask for less.
    pub timeout_ms: u64,
    /// Largest response body, in bytes, read for the script.
    pub max_response_bytes: usize,
}

impl Default for FetchSection {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            allow_private: false,
            max_requests: 50,
            max_in_flight: 6,
            timeout_ms: 10_000,
            max_response_bytes: 10 * 1024 * 1024,
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    pub server: ServerSection,
    pub listeners: Vec<ListenerSection>,
    pub admin: AdminSection,
    pub log: LogSection,
    pub kv: KvSection,
    pub limits: LimitsSection,
    pub origins: Vec<OriginSection>,
    pub routes: Vec<RouteSection>,
}

fn default_error_status() -> u16 {
    500
}

fn default_limit_status() -> u16 {
    503
}

fn default_true() -> bool {
    true
}

fn default_connect_timeout_ms() -> u64 {
    2_000
}

fn default_read_timeout_ms() -> u64 {
    30_000
}

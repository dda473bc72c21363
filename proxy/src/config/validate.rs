//! Structural and semantic checks of a config file.
//!
//! Each section and each list item is deserialized on its own, so that one
//! bad route does not hide the problems of the next. Semantic checks then
//! look across sections: names, references, patterns and addresses.

use std::collections::HashSet;
use std::net::SocketAddr;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use super::file::{ConfigFile, ListenerSection, OnFailure, OriginSection, RouteSection};
use super::{Config, Problem};
use crate::routing::{HostPattern, PathPattern};

/// A structural error before the file could be turned into a [`ConfigFile`].
pub struct StructureError {
    /// Key path, empty for the whole document.
    pub key: String,
    /// Line reported by the YAML parser itself, for syntax errors.
    pub line: Option<usize>,
    pub message: String,
}

/// Smallest memory limit that leaves room for the Luau libraries and the
/// bindings of a fresh VM (about 200 KiB with Luau 0.740).
const MIN_MEMORY_BYTES: usize = 1024 * 1024;

const SECTIONS: &str = "server, listeners, admin, log, limits, kv, origins, routes";

/// Result of deserialization: every section and item that parsed, and one
/// error for each that did not.
pub struct Deserialized {
    /// `None` when the text is not YAML or not a mapping.
    pub file: Option<ConfigFile>,
    pub errors: Vec<StructureError>,
    /// Names of origins that failed to parse, so that routes naming them
    /// are not also reported as referring to an undefined origin.
    pub broken_origins: Vec<String>,
}

/// Deserializes `text`, collecting one error per bad section or list item.
pub fn deserialize(text: &str) -> Deserialized {
    let failed = |errors| Deserialized {
        file: None,
        errors,
        broken_origins: Vec::new(),
    };
    let document: Value = match serde_yaml::from_str(text) {
        Ok(document) => document,
        Err(e) => {
            return failed(vec![StructureError {
                key: String::new(),
                line: e.location().map(|l| l.line()),
                message: format!("invalid YAML: {}", strip_location(&e.to_string())),
            }])
        }
    };
    let mapping = match document {
        Value::Null => serde_yaml::Mapping::new(),
        Value::Mapping(mapping) => mapping,
        _ => {
            return failed(vec![error(
                "",
                format!("the config must be a mapping with the sections {SECTIONS}"),
            )])
        }
    };

    let mut file = ConfigFile::default();
    let mut errors = Vec::new();
    let mut broken_origins = Vec::new();
    for (key, value) in mapping {
        let Some(name) = key.as_str() else {
            errors.push(error("", "section names must be strings".into()));
            continue;
        };
        match name {
            "server" => section(name, value, &mut errors, |v| file.server = v),
            "limits" => section(name, value, &mut errors, |v| file.limits = v),
            "admin" => section(name, value, &mut errors, |v| file.admin = v),
            "log" => section(name, value, &mut errors, |v| file.log = v),
            "kv" => section(name, value, &mut errors, |v| file.kv = v),
            "listeners" => file.listeners = items(name, value, &mut errors),
            "origins" => {
                broken_origins = item_names(&value);
                file.origins = items(name, value, &mut errors);
                broken_origins.retain(|n| !file.origins.iter().any(|o| &o.name == n));
            }
            "routes" => file.routes = items(name, value, &mut errors),
            other => errors.push(error(
                other,
                format!("unknown key `{other}`; the sections are {SECTIONS}"),
            )),
        }
    }
    Deserialized {
        file: Some(file),
        errors,
        broken_origins,
    }
}

/// Returns the `name` of each item of a YAML list.
fn item_names(value: &Value) -> Vec<String> {
    let Value::Sequence(items) = value else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| item.get("name")?.as_str().map(str::to_string))
        .collect()
}

fn section<T: DeserializeOwned>(
    name: &str,
    value: Value,
    errors: &mut Vec<StructureError>,
    store: impl FnOnce(T),
) {
    if value.is_null() {
        return;
    }
    match from_value(name, value) {
        Ok(parsed) => store(parsed),
        Err(e) => errors.push(e),
    }
}

/// A list item that remembers its position in the file.
trait Indexed {
    fn set_index(&mut self, index: usize);
}

macro_rules! indexed {
    ($($section:ty),*) => {
        $(impl Indexed for $section {
            fn set_index(&mut self, index: usize) {
                self.index = index;
            }
        })*
    };
}

indexed!(ListenerSection, OriginSection, RouteSection);

fn items<T: DeserializeOwned + Indexed>(
    name: &str,
    value: Value,
    errors: &mut Vec<StructureError>,
) -> Vec<T> {
    let sequence = match value {
        Value::Null => return Vec::new(),
        Value::Sequence(sequence) => sequence,
        _ => {
            errors.push(error(name, format!("`{name}` must be a list")));
            return Vec::new();
        }
    };
    let mut parsed = Vec::new();
    for (index, item) in sequence.into_iter().enumerate() {
        match from_value::<T>(&format!("{name}[{index}]"), item) {
            Ok(mut value) => {
                value.set_index(index);
                parsed.push(value);
            }
            Err(e) => errors.push(e),
        }
    }
    parsed
}

fn from_value<T: DeserializeOwned>(prefix: &str, value: Value) -> Result<T, StructureError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let mut key = prefix.to_string();
        if inner != "." && !inner.is_empty() {
            if !inner.starts_with('[') {
                key.push('.');
            }
            key.push_str(&inner);
        }
        error(
            &key,
            plain_types(&strip_location(&e.into_inner().to_string())),
        )
    })
}

/// Checks a listening address, telling a port out of range apart from text
/// that is not an address at all.
fn socket_address(address: &str, example: &str) -> Result<(), String> {
    if address.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    if let Some((ip, port)) = address.rsplit_once(':') {
        let ip_ok = ip
            .strip_prefix('[')
            .and_then(|ip| ip.strip_suffix(']'))
            .map_or_else(
                || ip.parse::<std::net::Ipv4Addr>().is_ok(),
                |ip| ip.parse::<std::net::Ipv6Addr>().is_ok(),
            );
        if ip_ok && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "port {port} in `{address}` is out of range; use a port from 1 to 65535"
            ));
        }
    }
    Err(format!(
        "`{address}` is not an IP address and port; write it as {example}"
    ))
}

/// Replaces Rust type names in a serde message with what to write, and
/// adds the fix: `expected u64` becomes `expected a whole number of 0 or
/// more; write the number without quotes or a fraction`.
fn plain_types(message: &str) -> String {
    for (rust, plain) in [
        ("expected u64", "expected a whole number of 0 or more"),
        ("expected u32", "expected a whole number of 0 or more"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected usize", "expected a whole number of 0 or more"),
        ("expected i64", "expected a whole number"),
    ] {
        if let Some(start) = message.find(rust) {
            let end = start + rust.len();
            if message[end..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_alphanumeric())
            {
                return format!(
                    "{}{plain}{}; write the number without quotes or a fraction",
                    &message[..start],
                    &message[end..]
                );
            }
        }
    }
    if message.starts_with("invalid type") && message.ends_with("expected a string") {
        return format!("{message}; put the value in quotes");
    }
    message.to_string()
}

fn error(key: &str, message: String) -> StructureError {
    StructureError {
        key: key.to_string(),
        line: None,
        message,
    }
}

/// Removes serde_yaml's " at line L column C" suffix; lines are reported
/// separately.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(cut) => message[..cut].to_string(),
        None => message.to_string(),
    }
}

/// Checks values and references across sections. `broken_origins` are
/// origin names whose definitions failed to parse.
pub fn check(config: &Config, broken_origins: &[String]) -> Vec<Problem> {
    let file = &config.file;
    let mut problems = Vec::new();
    let mut problem = |key: String, message: String| problems.push(config.problem(key, message));

    if file.server.threads == 0 || file.server.threads > 1024 {
        problem(
            "server.threads".into(),
            format!(
                "threads is {}; set a number of worker threads from 1 to 1024",
                file.server.threads
            ),
        );
    }
    if file.server.watch_interval_ms == 0 {
        problem(
            "server.watch_interval_ms".into(),
            "watch_interval_ms must be at least 1; set `watch: false` to stop watching".into(),
        );
    }
    if file.server.upgrade_sock.is_empty() {
        problem(
            "server.upgrade_sock".into(),
            "upgrade_sock is empty; set a path such as /tmp/actias-upgrade.sock".into(),
        );
    }
    let limits = &file.limits;
    for (key, value, example) in [
        ("cpu_ms", limits.cpu_ms as usize, "50"),
        ("memory_bytes", limits.memory_bytes, "67108864"),
        (
            "max_kv_operations",
            limits.max_kv_operations as usize,
            "1000",
        ),
        ("max_kv_write_bytes", limits.max_kv_write_bytes, "33554432"),
        (
            "max_request_body_bytes",
            limits.max_request_body_bytes,
            "10485760",
        ),
        ("max_uri_bytes", limits.max_uri_bytes, "8192"),
        ("max_header_bytes", limits.max_header_bytes, "32768"),
        (
            "header_timeout_ms",
            limits.header_timeout_ms as usize,
            "10000",
        ),
        (
            "keepalive_timeout_ms",
            limits.keepalive_timeout_ms as usize,
            "60000",
        ),
        ("max_connections", limits.max_connections, "10000"),
        ("send_timeout_ms", limits.send_timeout_ms as usize, "60000"),
        (
            "max_buffered_body_bytes",
            limits.max_buffered_body_bytes,
            "536870912",
        ),
    ] {
        if value == 0 {
            problem(
                format!("limits.{key}"),
                format!("{key} is 0; set a positive value, such as {example}"),
            );
        }
    }
    if limits.memory_bytes > 0 && limits.memory_bytes < MIN_MEMORY_BYTES {
        problem(
            "limits.memory_bytes".into(),
            format!(
                "memory_bytes is {}; a script VM needs at least {MIN_MEMORY_BYTES} bytes",
                limits.memory_bytes
            ),
        );
    }

    let mut addresses = HashSet::new();
    for listener in &file.listeners {
        let index = listener.index;
        if !addresses.insert(listener.address.as_str()) {
            problem(
                format!("listeners[{index}].address"),
                format!("listener address `{}` is listed twice", listener.address),
            );
        }
        if let Err(message) = socket_address(&listener.address, "`0.0.0.0:8080` or `[::]:8080`") {
            problem(format!("listeners[{index}].address"), message);
        }
    }

    if file.admin.enabled {
        if let Err(message) = socket_address(&file.admin.address, "`127.0.0.1:9090`") {
            problem("admin.address".into(), message);
        }
        for (index, name) in file.admin.hosts.iter().enumerate() {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
            if !valid {
                problem(
                    format!("admin.hosts[{index}]"),
                    format!(
                        "`{name}` is not a host name; list names without port or scheme, \
                         such as `actias-1.internal`"
                    ),
                );
            }
        }
        let public = file
            .listeners
            .iter()
            .any(|l| l.address == file.admin.address);
        if public {
            problem(
                "admin.address".into(),
                format!(
                    "admin address `{}` is also a public listener; use another port",
                    file.admin.address
                ),
            );
        }
    }
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&file.log.level) {
        problem(
            "log.level".into(),
            format!(
                "`{}` is not a log filter ({e}); write `info` or `info,actias=debug`",
                file.log.level
            ),
        );
    }

    check_kv(&file.kv, &mut problem);

    let mut origin_names = HashSet::new();
    for origin in &file.origins {
        let key = format!("origins[{}]", origin.index);
        if !valid_name(&origin.name) {
            problem(
                format!("{key}.name"),
                format!(
                    "origin name `{}` is invalid; use letters, digits, `_`, `-` and `.`",
                    origin.name
                ),
            );
        } else if !origin_names.insert(origin.name.as_str()) {
            problem(
                format!("{key}.name"),
                format!(
                    "origin name `{}` is used twice; names must be unique",
                    origin.name
                ),
            );
        }
        if origin.servers.is_empty() {
            problem(
                format!("{key}.servers"),
                format!(
                    "origin `{}` has no servers; list at least one `host:port`",
                    origin.name
                ),
            );
        }
        for (server_index, server) in origin.servers.iter().enumerate() {
            if let Err(message) = check_server_address(server) {
                problem(format!("{key}.servers[{server_index}]"), message);
            }
        }
        if origin.connect_timeout_ms == 0 {
            problem(
                format!("{key}.connect_timeout_ms"),
                "connect_timeout_ms must be at least 1".into(),
            );
        }
        if origin.read_timeout_ms == 0 {
            problem(
                format!("{key}.read_timeout_ms"),
                "read_timeout_ms must be at least 1".into(),
            );
        }
        if matches!(&origin.sni, Some(sni) if sni.is_empty()) {
            problem(
                format!("{key}.sni"),
                "sni is empty; remove it to send the server's host name".into(),
            );
        }
    }

    for name in broken_origins {
        origin_names.insert(name.as_str());
    }

    let buffered = file.limits.max_buffered_body_bytes;
    if buffered > 0 && file.limits.max_request_body_bytes > buffered {
        problem(
            "limits.max_request_body_bytes".into(),
            format!(
                "max_request_body_bytes is {}, more than limits.max_buffered_body_bytes ({buffered}), \
                 so a body of that size could never be read; lower it or raise \
                 limits.max_buffered_body_bytes",
                file.limits.max_request_body_bytes
            ),
        );
    }

    let mut route_names = HashSet::new();
    let mut default_route: Option<&str> = None;
    for route in &file.routes {
        let key = format!("routes[{}]", route.index);
        if !valid_name(&route.name) {
            problem(
                format!("{key}.name"),
                format!(
                    "route name `{}` is invalid; use letters, digits, `_`, `-` and `.`",
                    route.name
                ),
            );
        } else if !route_names.insert(route.name.as_str()) {
            problem(
                format!("{key}.name"),
                format!(
                    "route name `{}` is used twice; names must be unique",
                    route.name
                ),
            );
        }
        if route.default {
            if let Some(first) = default_route {
                problem(
                    format!("{key}.default"),
                    format!(
                        "routes `{first}` and `{}` are both the default; keep one",
                        route.name
                    ),
                );
            }
            default_route = Some(&route.name);
        }
        check_route(route, &key, &origin_names, &mut problem);
        // A route without its own limit inherits the top-level one, which
        // is checked once below.
        let body_limit = route.limits.max_request_body_bytes.unwrap_or(0);
        if body_limit > file.limits.max_buffered_body_bytes
            && file.limits.max_buffered_body_bytes > 0
        {
            problem(
                format!("{key}.limits.max_request_body_bytes"),
                format!(
                    "max_request_body_bytes of route `{}` is {body_limit}, more than \
                     limits.max_buffered_body_bytes ({}), so a body of that size could never \
                     be read; lower it or raise limits.max_buffered_body_bytes",
                    route.name, file.limits.max_buffered_body_bytes
                ),
            );
        }
    }
    problems
}

fn check_route(
    route: &RouteSection,
    key: &str,
    origins: &HashSet<&str>,
    problem: &mut impl FnMut(String, String),
) {
    if route.hosts.is_empty() && !route.default && route.schedule.is_none() {
        problem(
            format!("{key}.hosts"),
            format!(
                "route `{}` has no hosts; list host names, set `default: true`, or set a \
                 `schedule` for a route that only runs on a schedule",
                route.name
            ),
        );
    }
    for (index, host) in route.hosts.iter().enumerate() {
        if let Err(message) = HostPattern::parse(host) {
            problem(format!("{key}.hosts[{index}]"), message);
        }
    }
    for (index, path) in route.paths.iter().enumerate() {
        if let Err(message) = PathPattern::parse(path) {
            problem(format!("{key}.paths[{index}]"), message);
        }
    }
    for (index, method) in route.methods.iter().enumerate() {
        // A method is an HTTP token (RFC 9110, section 5.6.2).
        let valid = !method.is_empty()
            && method
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid {
            problem(
                format!("{key}.methods[{index}]"),
                format!("`{method}` is not an HTTP method; write it as GET, POST and so on"),
            );
        }
    }
    if route.script.is_none() && route.origin.is_none() {
        problem(
            key.to_string(),
            format!(
                "route `{}` has neither a script nor an origin; set one or both",
                route.name
            ),
        );
    }
    for (index, namespace) in route.kv.iter().enumerate() {
        if let Err(message) = crate::kv::check_namespace(namespace) {
            problem(format!("{key}.kv[{index}]"), message);
        }
    }
    let limits = &route.limits;
    if limits.cpu_ms == Some(0) {
        problem(
            format!("{key}.limits.cpu_ms"),
            "cpu_ms must be at least 1".into(),
        );
    }
    if limits.memory_bytes.is_some_and(|m| m < MIN_MEMORY_BYTES) {
        problem(
            format!("{key}.limits.memory_bytes"),
            format!("memory_bytes must be at least {MIN_MEMORY_BYTES}"),
        );
    }
    if limits.max_kv_operations == Some(0) {
        problem(
            format!("{key}.limits.max_kv_operations"),
            "max_kv_operations must be at least 1".into(),
        );
    }
    if limits.max_kv_write_bytes == Some(0) {
        problem(
            format!("{key}.limits.max_kv_write_bytes"),
            "max_kv_write_bytes must be at least 1".into(),
        );
    }
    if limits.max_request_body_bytes == Some(0) {
        problem(
            format!("{key}.limits.max_request_body_bytes"),
            "max_request_body_bytes must be at least 1".into(),
        );
    }
    for (field, status) in [
        ("error_status", route.error_status),
        ("limit_status", route.limit_status),
    ] {
        if !(400..=599).contains(&status) {
            problem(
                format!("{key}.{field}"),
                format!("{field} {status} is not an error status; use 400 to 599"),
            );
        }
    }
    if route.on_failure == OnFailure::Origin && route.origin.is_none() {
        problem(
            format!("{key}.on_failure"),
            format!(
                "route `{}` falls through to its origin on failure but has no `origin`",
                route.name
            ),
        );
    }
    check_env(route, key, problem);
    check_fetch(&route.fetch, key, problem);
    if let Some(schedule) = &route.schedule {
        if route.script.is_none() {
            problem(
                format!("{key}.schedule"),
                format!(
                    "route `{}` has a schedule but no script to run on it; set `script`",
                    route.name
                ),
            );
        }
        if let Err(message) = crate::schedule::parse(schedule) {
            problem(format!("{key}.schedule"), message);
        }
    }
    if let Some(origin) = &route.origin {
        if !origins.contains(origin.as_str()) {
            problem(
                format!("{key}.origin"),
                format!("origin `{origin}` is not defined under `origins`"),
            );
        }
    }
}

/// Checks the names of `env` and `secrets` and where secrets come from;
/// whether a secret can be read is checked when the snapshot is built.
fn check_env(route: &RouteSection, key: &str, problem: &mut impl FnMut(String, String)) {
    let names = route
        .env
        .keys()
        .map(|name| ("env", name))
        .chain(route.secrets.keys().map(|name| ("secrets", name)));
    for (section, name) in names {
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            problem(
                format!("{key}.{section}.{name}"),
                format!(
                    "`{name}` is not a valid name; use letters, digits and `_`, not starting \
                     with a digit, so that scripts can read it as env.NAME"
                ),
            );
        }
    }
    for name in route.secrets.keys() {
        if route.env.contains_key(name) {
            problem(
                format!("{key}.secrets.{name}"),
                format!("`{name}` is both a variable under `env` and a secret; rename one"),
            );
        }
    }
    for (name, source) in &route.secrets {
        let key = format!("{key}.secrets.{name}");
        match (&source.env, &source.file) {
            (Some(_), Some(_)) | (None, None) => problem(
                key,
                format!(
                    "secret `{name}` must name exactly one source: `env: VARIABLE` or \
                     `file: path`"
                ),
            ),
            (Some(variable), None) if variable.is_empty() => problem(
                key,
                format!("secret `{name}` names an empty environment variable"),
            ),
            (None, Some(file)) if file.is_empty() => {
                problem(key, format!("secret `{name}` names an empty file path"))
            }
            _ => {}
        }
    }
}

fn check_fetch(
    fetch: &crate::config::FetchSection,
    key: &str,
    problem: &mut impl FnMut(String, String),
) {
    for (index, host) in fetch.allow.iter().enumerate() {
        if let Err(message) = crate::fetch::HostRule::parse(host) {
            problem(format!("{key}.fetch.allow[{index}]"), message);
        }
    }
    for (field, value) in [
        ("max_requests", u64::from(fetch.max_requests)),
        ("max_in_flight", fetch.max_in_flight as u64),
        ("timeout_ms", fetch.timeout_ms),
        ("max_response_bytes", fetch.max_response_bytes as u64),
    ] {
        if value == 0 {
            problem(
                format!("{key}.fetch.{field}"),
                format!("{field} is 0; set it to at least 1, or leave it out for the default"),
            );
        }
    }
}

fn check_kv(kv: &crate::config::KvSection, problem: &mut impl FnMut(String, String)) {
    if kv.embedded.path.is_empty() {
        problem(
            "kv.embedded.path".into(),
            "path is empty; set a file such as data/kv.redb".into(),
        );
    }
    if kv.embedded.sweep_interval_seconds == 0 {
        problem(
            "kv.embedded.sweep_interval_seconds".into(),
            "sweep_interval_seconds must be at least 1".into(),
        );
    }
    let scylla = &kv.scylla;
    if scylla.nodes.is_empty() {
        problem(
            "kv.scylla.nodes".into(),
            "list at least one node, such as 127.0.0.1:9042".into(),
        );
    }
    let keyspace_valid = !scylla.keyspace.is_empty()
        && scylla.keyspace.len() <= 48
        && scylla
            .keyspace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && scylla.keyspace.as_bytes()[0].is_ascii_alphabetic();
    if !keyspace_valid {
        problem(
            "kv.scylla.keyspace".into(),
            format!(
                "keyspace `{}` is invalid; use up to 48 letters, digits and `_`, starting with a letter",
                scylla.keyspace
            ),
        );
    }
    if let Err(e) = scylla.consistency() {
        problem("kv.scylla.consistency".into(), e.to_string());
    }
    if !scylla.replication.contains_key("class") {
        problem(
            "kv.scylla.replication".into(),
            "replication needs a `class`, such as SimpleStrategy or NetworkTopologyStrategy".into(),
        );
    }
    for (key, value) in [
        ("request_timeout_ms", scylla.request_timeout_ms),
        ("connect_timeout_ms", scylla.connect_timeout_ms),
    ] {
        if value == 0 {
            problem(
                format!("kv.scylla.{key}"),
                format!("{key} must be at least 1"),
            );
        }
    }
}

/// Route and origin names appear in logs, metric labels and chunk names,
/// so they are limited to a plain set of characters.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn check_server_address(server: &str) -> Result<(), String> {
    let fix = "write it as `host:port`, for example `127.0.0.1:3000`";
    let Some((host, port)) = server.rsplit_once(':') else {
        return Err(format!("server `{server}` has no port; {fix}"));
    };
    if host.is_empty() {
        return Err(format!("server `{server}` has no host; {fix}"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("server `{server}` has an invalid port; {fix}")),
        Ok(_) => Ok(()),
    }
}

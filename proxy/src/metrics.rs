//! Every Prometheus metric Actias exports, defined in one place.
//!
//! Names carry the `actias_` prefix and a unit suffix. Labels come from
//! bounded sets only: route and origin names from the config, methods
//! folded to a fixed list, status classes and outcomes. Hosts, paths and
//! keys never become labels, so traffic cannot grow the number of series.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Route label of requests that matched no route. Route names cannot
/// contain parentheses, so this never collides with a configured route.
pub const UNMATCHED_ROUTE: &str = "(unmatched)";

/// Buckets for request and origin durations, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets for script CPU time, in seconds: 10 µs to 1 s.
const CPU_BUCKETS: [f64; 12] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 1.0,
];

/// The process-wide metrics.
pub struct Metrics {
    pub registry: Registry,
    /// `actias_requests_total{route, method, status_class}`.
    pub requests: IntCounterVec,
    /// `actias_request_duration_seconds{route}`.
    pub request_duration: HistogramVec,
    /// `actias_script_runs_total{route, outcome}`, outcome `ok`, `error` or `limit`.
    pub script_runs: IntCounterVec,
    /// `actias_script_cpu_seconds{route}`.
    pub script_cpu: HistogramVec,
    /// `actias_script_cache_lookups_total{result}`, result `hit` or `miss`.
    pub script_cache: IntCounterVec,
    /// `actias_origin_requests_total{origin, status_class}`.
    pub origin_requests: IntCounterVec,
    /// `actias_origin_request_duration_seconds{origin}`.
    pub origin_duration: HistogramVec,
    /// `actias_origin_connections_total{origin, reused}`.
    pub origin_connections: IntCounterVec,
    /// `actias_origin_failures_total{origin, kind}`, kind `connect`,
    /// `timeout` or `other`.
    pub origin_failures: IntCounterVec,
    /// `actias_kv_operations_total{backend, operation, outcome}`.
    pub kv_operations: IntCounterVec,
    /// `actias_kv_operation_duration_seconds{backend, operation}`.
    pub kv_duration: HistogramVec,
    /// `actias_config_loads_total{outcome}`, outcome `success` or `failure`.
    pub config_loads: IntCounterVec,
    /// `actias_fetch_requests_total{route, outcome}`.
    pub fetch_requests: IntCounterVec,
    /// `actias_fetch_duration_seconds{route}`.
    pub fetch_duration: HistogramVec,
    /// `actias_scheduled_runs_total{route, outcome}`, outcome `ok`,
    /// `error` or `limit`.
    pub scheduled_runs: IntCounterVec,
    /// `actias_build_info{version}`, always 1.
    pub build_info: IntGaugeVec,
    /// `actias_connections_open`: client connections on the public
    /// listeners.
    pub connections_open: prometheus::IntGauge,
    /// `actias_connections_rejected_total`: connections closed at once
    /// because `limits.max_connections` were open.
    pub connections_rejected: prometheus::IntCounter,
    /// `actias_buffered_body_bytes`: request bodies held in memory for
    /// scripts and script responses being written.
    pub body_buffered: prometheus::IntGauge,
}

/// The metrics of this process.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("metric names and labels are valid constants");
            registry
                .register(Box::new(vec.clone()))
                .expect("each metric is registered once");
            vec
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let vec = HistogramVec::new(opts, labels)
                .expect("metric names and labels are valid constants");
            registry
                .register(Box::new(vec.clone()))
                .expect("each metric is registered once");
            vec
        };

        let requests = counter(
            "actias_requests_total",
            "Requests served, by route, method and status class.",
            &["route", "method", "status_class"],
        );
        let request_duration = histogram(
            "actias_request_duration_seconds",
            "Time from the request head to the end of the response, by route.",
            &["route"],
            &DURATION_BUCKETS,
        );
        let script_runs = counter(
            "actias_script_runs_total",
            "Fetch handler runs, by route and outcome (ok, error, limit).",
            &["route", "outcome"],
        );
        let script_cpu = histogram(
            "actias_script_cpu_seconds",
            "CPU time of the worker thread spent in the fetch handler, by route.",
            &["route"],
            &CPU_BUCKETS,
        );
        let script_cache = counter(
            "actias_script_cache_lookups_total",
            "Lookups of compiled scripts by content hash, by result (hit, miss).",
            &["result"],
        );
        let origin_requests = counter(
            "actias_origin_requests_total",
            "Requests forwarded to origins, by origin and status class of the result.",
            &["origin", "status_class"],
        );
        let origin_duration = histogram(
            "actias_origin_request_duration_seconds",
            "Time from choosing the origin server to the end of the response, by origin.",
            &["origin"],
            &DURATION_BUCKETS,
        );
        let origin_connections = counter(
            "actias_origin_connections_total",
            "Connections used for origin requests, by origin and whether pooled (reused).",
            &["origin", "reused"],
        );
        let origin_failures = counter(
            "actias_origin_failures_total",
            "Requests that failed at the origin before a full response, by origin and kind \
             (connect, timeout, other).",
            &["origin", "kind"],
        );
        let kv_operations = counter(
            "actias_kv_operations_total",
            "Key-value store operations, by backend, operation (get, put, delete, list) and \
             outcome (ok, invalid, timeout, error).",
            &["backend", "operation", "outcome"],
        );
        let kv_duration = histogram(
            "actias_kv_operation_duration_seconds",
            "Duration of key-value store operations, by backend and operation.",
            &["backend", "operation"],
            &DURATION_BUCKETS,
        );
        let config_loads = counter(
            "actias_config_loads_total",
            "Config loads, by outcome (success, failure).",
            &["outcome"],
        );
        let fetch_requests = counter(
            "actias_fetch_requests_total",
            "Subrequests made by scripts with fetch, by route and outcome (ok, refused, \
             invalid, timeout, too_large, error, cap).",
            &["route", "outcome"],
        );
        let fetch_duration = histogram(
            "actias_fetch_duration_seconds",
            "Duration of subrequests made with fetch, body included, by route.",
            &["route"],
            &DURATION_BUCKETS,
        );
        let scheduled_runs = counter(
            "actias_scheduled_runs_total",
            "Runs of scheduled handlers, by route and outcome (ok, error, limit).",
            &["route", "outcome"],
        );

        let build_info = IntGaugeVec::new(
            Opts::new(
                "actias_build_info",
                "Build information; the value is always 1.",
            ),
            &["version"],
        )
        .expect("metric names and labels are valid constants");
        registry
            .register(Box::new(build_info.clone()))
            .expect("each metric is registered once");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for outcome in ["success", "failure"] {
            config_loads.with_label_values(&[outcome]).reset();
        }
        for result in ["hit", "miss"] {
            script_cache.with_label_values(&[result]).reset();
        }
        let connections_open = prometheus::IntGauge::new(
            "actias_connections_open",
            "Client connections open on the public listeners.",
        )
        .expect("metric names are valid constants");
        registry
            .register(Box::new(connections_open.clone()))
            .expect("each metric is registered once");
        let connections_rejected = prometheus::IntCounter::new(
            "actias_connections_rejected_total",
            "Client connections closed at once because limits.max_connections were open.",
        )
        .expect("metric names are valid constants");
        registry
            .register(Box::new(connections_rejected.clone()))
            .expect("each metric is registered once");
        let body_buffered = prometheus::IntGauge::new(
            "actias_buffered_body_bytes",
            "Bytes of request bodies held for scripts and of script responses being written.",
        )
        .expect("metric names are valid constants");
        registry
            .register(Box::new(body_buffered.clone()))
            .expect("each metric is registered once");
        let process = prometheus::process_collector::ProcessCollector::for_self();
        if let Err(e) = registry.register(Box::new(process)) {
            tracing::warn!(error = %e, "cannot export process metrics");
        }

        Self {
            registry,
            requests,
            request_duration,
            script_runs,
            script_cpu,
            script_cache,
            origin_requests,
            origin_duration,
            origin_connections,
            origin_failures,
            kv_operations,
            kv_duration,
            config_loads,
            fetch_requests,
            fetch_duration,
            scheduled_runs,
            build_info,
            connections_open,
            connections_rejected,
            body_buffered,
        }
    }

    /// Creates the series of every outcome of every route with a script at
    /// zero, so that the first error shows as an increase.
    pub fn register_routes<'a>(&self, routes: impl IntoIterator<Item = (&'a str, bool)>) {
        for (route, has_script) in routes {
            if has_script {
                for outcome in ["ok", "error", "limit"] {
                    self.script_runs
                        .with_label_values(&[route, outcome])
                        .reset();
                }
            }
        }
    }

    /// Encodes every metric in the Prometheus text format.
    pub fn encode(&self) -> Vec<u8> {
        let mut buffer = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buffer) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        buffer
    }
}

/// Returns the status class label of an HTTP status: `2xx` and so on, or
/// `none` when no response was sent.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}

/// Returns the method label: a standard method, or `OTHER`.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "OTHER",
    }
}

/// Returns the CPU time this thread has used, in seconds.
pub fn thread_cpu_seconds() -> f64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid, writable timespec and the clock id is a
    // constant that Linux supports.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
    if result != 0 {
        return 0.0;
    }
    time.tv_sec as f64 + time.tv_nsec as f64 / 1e9
}

/// Methods with a label of their own, in the order of [`method_index`].
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "OTHER",
];
/// Status classes, in the order of [`class_index`].
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

fn method_index(method: &str) -> usize {
    let label = method_label(method);
    METHODS
        .iter()
        .position(|m| *m == label)
        .unwrap_or(METHODS.len() - 1)
}

fn class_index(status: u16) -> usize {
    let label = status_class(status);
    CLASSES
        .iter()
        .position(|c| *c == label)
        .unwrap_or(CLASSES.len() - 1)
}

/// The series of one route, looked up once instead of hashing the labels
/// on every request.
pub struct RouteMetrics {
    route: String,
    pub request_duration: prometheus::Histogram,
    pub script_cpu: prometheus::Histogram,
    pub script_ok: prometheus::IntCounter,
    pub script_error: prometheus::IntCounter,
    pub script_limit: prometheus::IntCounter,
    /// `actias_requests_total` by method and status class, created on
    /// first use so that only seen combinations are exported.
    requests: Vec<std::sync::OnceLock<prometheus::IntCounter>>,
}

impl RouteMetrics {
    /// Resolves the series of `route` in [`METRICS`].
    pub fn new(route: &str) -> Self {
        let metrics = &*METRICS;
        Self {
            route: route.to_string(),
            request_duration: metrics.request_duration.with_label_values(&[route]),
            script_cpu: metrics.script_cpu.with_label_values(&[route]),
            script_ok: metrics.script_runs.with_label_values(&[route, "ok"]),
            script_error: metrics.script_runs.with_label_values(&[route, "error"]),
            script_limit: metrics.script_runs.with_label_values(&[route, "limit"]),
            requests: (0..METHODS.len() * CLASSES.len())
                .map(|_| std::sync::OnceLock::new())
                .collect(),
        }
    }

    /// Counts one finished request.
    pub fn count_request(&self, method: &str, status: u16) {
        let (m, c) = (method_index(method), class_index(status));
        self.requests[m * CLASSES.len() + c]
            .get_or_init(|| {
                METRICS
                    .requests
                    .with_label_values(&[self.route.as_str(), METHODS[m], CLASSES[c]])
            })
            .inc();
    }
}

/// The series of requests that matched no route.
pub static UNMATCHED: LazyLock<RouteMetrics> = LazyLock::new(|| RouteMetrics::new(UNMATCHED_ROUTE));

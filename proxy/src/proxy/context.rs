//! State carried through the phases of one request.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::metrics::UNMATCHED_ROUTE;
use crate::script::RequestEdits;
use crate::snapshot::Snapshot;

/// Requests in progress in this process, for graceful shutdown.
pub static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Per-request state, created by `new_ctx`.
pub struct RequestContext {
    /// The snapshot this request runs on from start to end.
    pub snapshot: Arc<Snapshot>,
    /// Identifier shown in error responses and logs.
    pub request_id: String,
    pub started: Instant,
    /// Index of the matched route in `snapshot.routes`.
    pub route: Option<usize>,
    /// A script handled this request, whatever it decided.
    pub script_ran: bool,
    /// Changes the script asked for before forwarding.
    pub edits: Option<RequestEdits>,
    /// Normalised path to forward in place of the raw one, set when
    /// normalisation removed dot-segments or repeated slashes.
    pub forward_path: Option<String>,
    /// Reason the script failed or the proxy rejected the request, for the
    /// access log's `error` field.
    pub logged_error: Option<String>,
    /// Name of the origin this request was sent to.
    pub origin_name: Option<String>,
    /// Address of the origin server chosen for this request.
    pub origin_address: Option<String>,
    /// When the origin server was chosen.
    pub origin_started: Option<Instant>,
}

impl RequestContext {
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        Self {
            snapshot,
            request_id: next_request_id(),
            started: Instant::now(),
            route: None,
            script_ran: false,
            edits: None,
            forward_path: None,
            logged_error: None,
            origin_name: None,
            origin_address: None,
            origin_started: None,
        }
    }

    /// Returns the matched route's name, or `(unmatched)` when no route
    /// matched.
    pub fn route_name(&self) -> &str {
        self.route
            .and_then(|index| self.snapshot.routes.get(index))
            .map_or(UNMATCHED_ROUTE, |route| route.name.as_str())
    }
}

impl Drop for RequestContext {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Returns a process-unique request id: a per-process prefix taken from
/// the start time, and a counter.
fn next_request_id() -> String {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        (nanos as u32) ^ std::process::id().rotate_left(16)
    });
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix:08x}{count:08x}")
}

//! Scripts: compiling, caching and running fetch handlers.
//!
//! Source is compiled once into bytecode that is cached by content hash
//! (`compile`). Each route with a script owns a pool of VMs loaded from that
//! bytecode (`vm`), so two routes never share globals and a request never
//! compiles or creates a Lua state while VMs are free. The request table
//! and the handler's return value are converted in `request` and
//! `response`.

mod budget;
mod compile;
mod request;
mod response;
mod vm;

use std::sync::Mutex;

pub use budget::Budget;
pub use compile::{compile, Bytecode, CompileError, ScriptCache};
pub use request::{
    format_number, multi_value_table, scalar_bytes, target_edits, try_multi_value_table,
    RequestEdits, RequestInput,
};
pub use response::ScriptResponse;
use std::time::Duration;

pub use vm::{Outcome, ScheduledEvent, Vm, VmSettings};

/// A failure to load or run a script.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The VM could not be prepared; this is a fault of the proxy.
    #[error("cannot prepare the Lua VM: {0}")]
    Setup(String),
    /// The script's top level raised an error.
    #[error("{0}")]
    Load(String),
    /// The script's top level did not register a fetch handler.
    #[error(
        "the script registers no fetch handler; call \
         add_event_listener(\"fetch\", function(request) ... end)"
    )]
    NoHandler,
    /// The handler raised an error or returned something invalid.
    #[error("{0}")]
    Runtime(String),
    /// The handler exceeded its CPU time or memory limit. The message names
    /// the limit, and `detail` contains the Lua error at the point of the stop.
    #[error("{message}")]
    Limit { message: String, detail: String },
}

/// Most VMs of a route in use at once, per VM it starts with (one per
/// worker thread). Only scripts that yield (key-value calls, long loops)
/// need more than one per thread.
const VMS_PER_READY: usize = 4;

/// CPU time that creating VMs after start-up may use, per second of wall
/// time, for one route. A script whose handler keeps hitting a limit loses
/// its VM each time, and each new VM runs the top level again, which could
/// cost far more than `cpu_ms` per request.
const CREATION_CPU_PER_SECOND: Duration = Duration::from_millis(100);

/// CPU time that VM creations of one route may use at once, when they have
/// not used any for a while.
const CREATION_CPU_BURST: Duration = Duration::from_secs(2);

/// Maximum wait for creation credit; a request that would wait longer fails
/// with the route's limit status.
const CREATION_MAX_WAIT: Duration = Duration::from_secs(1);

/// CPU time that a route's VM creations may still use, refilled at
/// `CREATION_CPU_PER_SECOND` up to `CREATION_CPU_BURST`.
struct CreationCredit {
    /// Nanoseconds of CPU time available; negative after a costly creation.
    nanos: i64,
    refilled: std::time::Instant,
}

impl CreationCredit {
    fn new() -> Self {
        Self {
            nanos: CREATION_CPU_BURST.as_nanos() as i64,
            refilled: std::time::Instant::now(),
        }
    }

    /// Adds the credit earned since the last refill and returns how long
    /// to wait until some is left.
    fn wait(&mut self) -> Duration {
        let now = std::time::Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64()
            * CREATION_CPU_PER_SECOND.as_nanos() as f64;
        self.nanos = (self.nanos + earned as i64).min(CREATION_CPU_BURST.as_nanos() as i64);
        self.refilled = now;
        if self.nanos > 0 {
            return Duration::ZERO;
        }
        let per_second = CREATION_CPU_PER_SECOND.as_nanos() as f64;
        Duration::from_secs_f64((1 - self.nanos) as f64 / per_second)
    }
}

/// The script of one route and its pool of ready VMs.
pub struct RouteScript {
    /// Name of the route that runs this script.
    pub route: String,
    /// Chunk name used in tracebacks: `route/script-path`.
    pub chunk_name: String,
    settings: VmSettings,
    bytecode: Bytecode,
    idle: Mutex<Vec<Vm>>,
    /// Most idle VMs kept.
    max_idle: usize,
    /// Bounds the VMs in use at once; a request waits for a permit when
    /// every VM is busy, so memory cannot grow with concurrency.
    permits: tokio::sync::Semaphore,
    /// CPU time left for creating VMs after start-up.
    creation_credit: Mutex<CreationCredit>,
    /// Held while a VM is created, so that requests arriving together
    /// create one VM at a time and each finds the credit the last one left.
    creating: tokio::sync::Mutex<()>,
    /// The script registered a fetch handler.
    pub has_fetch_handler: bool,
    /// The script registered a scheduled handler.
    pub has_scheduled_handler: bool,
}

impl RouteScript {
    /// Loads `bytecode` into `ready` VMs; the first load also checks that
    /// the script's top level runs and registers a handler.
    pub fn new(
        settings: VmSettings,
        bytecode: Bytecode,
        ready: usize,
    ) -> Result<Self, ScriptError> {
        let mut idle = Vec::with_capacity(ready.max(1));
        for _ in 0..ready.max(1) {
            idle.push(Vm::new(&bytecode, &settings).map_err(|e| redact(e, &settings))?);
        }
        let has_fetch_handler = idle[0].has_fetch_handler();
        let has_scheduled_handler = idle[0].has_scheduled_handler();
        Ok(Self {
            has_fetch_handler,
            has_scheduled_handler,
            route: settings.route.clone(),
            chunk_name: settings.chunk_name.clone(),
            settings,
            bytecode,
            idle: Mutex::new(idle),
            max_idle: ready.max(1) * VMS_PER_READY,
            permits: tokio::sync::Semaphore::new(ready.max(1) * VMS_PER_READY),
            creation_credit: Mutex::new(CreationCredit::new()),
            creating: tokio::sync::Mutex::new(()),
        })
    }

    /// Runs the fetch handler on an idle VM within `cpu_limit`. A VM that
    /// hit a limit is dropped, so the next request starts from fresh globals.
    /// Also returns the CPU time the handler used.
    pub async fn run(
        &self,
        input: &RequestInput<'_>,
        cpu_limit: Duration,
    ) -> (Result<Outcome, ScriptError>, Duration) {
        self.with_vm(async |vm: &Vm| vm.call(input, cpu_limit).await)
            .await
    }

    /// Runs the scheduled handler on an idle VM within `cpu_limit`, like
    /// [`RouteScript::run`] does for requests.
    pub async fn run_scheduled(
        &self,
        event: &ScheduledEvent,
        cpu_limit: Duration,
    ) -> (Result<(), ScriptError>, Duration) {
        self.with_vm(async |vm: &Vm| vm.call_scheduled(event, cpu_limit).await)
            .await
    }

    /// Calls `call` on an idle VM under a permit of the pool, then keeps the
    /// VM unless it reached a limit.
    async fn with_vm<T>(
        &self,
        call: impl AsyncFnOnce(&Vm) -> (Result<T, vm::CallError>, Duration),
    ) -> (Result<T, ScriptError>, Duration) {
        let Ok(_permit) = self.permits.acquire().await else {
            return (
                Err(ScriptError::Setup("the VM pool is closed".into())),
                Duration::ZERO,
            );
        };
        let vm = match self.take_vm().await {
            Ok(vm) => vm,
            Err(e) => return (Err(e), Duration::ZERO),
        };
        let (result, used) = call(&vm).await;
        let hit_limit = matches!(&result, Err(e) if e.limit.is_some());
        if hit_limit || vm.near_memory_limit() {
            tracing::debug!(route = %self.route, "dropping a VM that reached its limits");
        } else {
            self.return_vm(vm);
        }
        (result.map_err(|e| self.script_error(e)), used)
    }

    /// Turns a failed call into an error whose text contains no secret.
    fn script_error(&self, error: vm::CallError) -> ScriptError {
        let text = self.settings.env.redact(&error.error.to_string());
        let text = cut(text, MAX_ERROR_BYTES);
        match error.limit {
            Some(message) => ScriptError::Limit {
                message,
                detail: text,
            },
            None => ScriptError::Runtime(text),
        }
    }

    /// Takes an idle VM, if one is free.
    fn pop_idle(&self) -> Option<Vm> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
    }

    async fn take_vm(&self) -> Result<Vm, ScriptError> {
        if let Some(vm) = self.pop_idle() {
            return Ok(vm);
        }
        // Every VM is busy, or one was dropped after a limit: the pool grows
        // by one. The script's top level runs on a blocking thread, so that
        // it never holds up the other requests of this worker thread.
        let _creating = self.creating.lock().await;
        // A VM may have come back while this request waited its turn.
        if let Some(vm) = self.pop_idle() {
            return Ok(vm);
        }
        let wait = self
            .creation_credit
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .wait();
        if wait > CREATION_MAX_WAIT {
            return Err(ScriptError::Limit {
                message: format!(
                    "the route's new VMs used more than {} ms of CPU time per second",
                    CREATION_CPU_PER_SECOND.as_millis()
                ),
                detail: "each VM stopped by a limit is replaced, and every new VM runs the \
                         script's top level; requests fail until the route has used less"
                    .to_string(),
            });
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let bytecode = self.bytecode.clone();
        let settings = self.settings.clone();
        let (created, cpu) = tokio::task::spawn_blocking(move || {
            let started = crate::metrics::thread_cpu_seconds();
            let created = Vm::new(&bytecode, &settings).map_err(|e| redact(e, &settings));
            (created, crate::metrics::thread_cpu_seconds() - started)
        })
        .await
        .unwrap_or_else(|e| {
            let error = ScriptError::Setup(format!("the VM setup task failed: {e}"));
            (Err(error), 0.0)
        });
        self.creation_credit
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .nanos -= (cpu * 1e9) as i64;
        created
    }

    /// Keeps `vm` for the next request, unless the pool is already at its
    /// maximum.
    fn return_vm(&self, vm: Vm) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < self.max_idle {
            idle.push(vm);
        }
    }
}

/// Maximum length, in bytes, of a script error kept for logs. The rest is cut.
const MAX_ERROR_BYTES: usize = 16 * 1024;

/// Cuts `text` to at most `max` bytes, on a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// Removes secret values from the text of a load error.
fn redact(error: ScriptError, settings: &VmSettings) -> ScriptError {
    match error {
        ScriptError::Load(text) => ScriptError::Load(settings.env.redact(&text)),
        ScriptError::Runtime(text) => ScriptError::Runtime(settings.env.redact(&text)),
        other => other,
    }
}

//! Tokio runtimes started on first use, for work kept apart from Pingora's
//! worker threads and from the control runtime.

use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

/// A multi-threaded runtime built on first use and kept for the life of the
/// process.
pub struct LazyRuntime {
    name: &'static str,
    threads: usize,
    runtime: OnceLock<Result<Runtime, String>>,
}

impl LazyRuntime {
    /// Describes a runtime of `threads` worker threads named `name`.
    pub const fn new(name: &'static str, threads: usize) -> Self {
        Self {
            name,
            threads,
            runtime: OnceLock::new(),
        }
    }

    /// Returns the runtime's handle, building the runtime on first use.
    pub fn handle(&self) -> Result<&Handle, String> {
        self.runtime
            .get_or_init(|| {
                Builder::new_multi_thread()
                    .worker_threads(self.threads)
                    .thread_name(self.name)
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the {} runtime: {e}", self.name))
            })
            .as_ref()
            .map(Runtime::handle)
            .map_err(Clone::clone)
    }
}

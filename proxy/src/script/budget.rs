//! The CPU budget of a handler call, enforced through Luau's interrupt.
//!
//! Luau calls the interrupt at loop back-edges, function calls and
//! pattern-matching steps. The budget counts the worker thread's CPU time
//! only while the handler's future is being polled, so time spent on other
//! requests while the handler is suspended is not charged to it.
//!
//! Two things happen from the interrupt:
//! - after `QUANTUM` of CPU time in one poll, the handler yields, so that a
//!   long script lets the thread's other connections (and its accept loop)
//!   make progress;
//! - once the budget runs out, every later interrupt raises an error, so
//!   `pcall` and `xpcall` cannot catch the stop for long.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use mlua::VmState;

use crate::metrics::thread_cpu_seconds;

/// CPU time a handler may run before it yields to other tasks.
const QUANTUM: Duration = Duration::from_millis(2);

/// Wall time after which the thread's CPU clock, a system call to read, is
/// read again. Between interrupts a library call (a sort, a search) can run
/// for long, so the CPU clock is read by time passed, not by interrupts
/// counted.
const CPU_READ_INTERVAL: Duration = Duration::from_micros(500);

/// The budget of the call in progress on one VM.
#[derive(Default)]
pub struct Budget {
    armed: AtomicBool,
    exceeded: AtomicBool,
    limit_nanos: AtomicU64,
    /// CPU time used in the polls that have finished.
    used_nanos: AtomicU64,
    /// Thread CPU time at the start of the current poll.
    slice_start_nanos: AtomicU64,
    /// Wall time of the last read of the CPU clock.
    last_read_wall_nanos: AtomicU64,
}

impl Budget {
    /// Starts a call that may use `limit` of CPU time.
    pub fn arm(&self, limit: Duration) {
        self.limit_nanos
            .store(limit.as_nanos() as u64, Ordering::Relaxed);
        self.used_nanos.store(0, Ordering::Relaxed);
        self.exceeded.store(false, Ordering::Relaxed);
        self.slice_start_nanos
            .store(thread_cpu_nanos(), Ordering::Relaxed);
        self.last_read_wall_nanos
            .store(wall_nanos(), Ordering::Relaxed);
        self.armed.store(true, Ordering::Relaxed);
    }

    /// Ends the call; returns the CPU time it used and whether the budget
    /// ran out. A call that went past its limit inside one library call,
    /// where no interrupt could stop it, counts as out of budget too.
    pub fn disarm(&self) -> (Duration, bool) {
        self.armed.store(false, Ordering::Relaxed);
        let used = self.used_nanos.load(Ordering::Relaxed);
        let over = used > self.limit_nanos.load(Ordering::Relaxed);
        (
            Duration::from_nanos(used),
            over || self.exceeded.load(Ordering::Relaxed),
        )
    }

    /// Starts charging the thread's CPU time to the budget.
    pub fn begin_slice(&self) {
        self.slice_start_nanos
            .store(thread_cpu_nanos(), Ordering::Relaxed);
        self.last_read_wall_nanos
            .store(wall_nanos(), Ordering::Relaxed);
    }

    /// Stops charging and adds the time since `begin_slice`.
    pub fn end_slice(&self) {
        let slice =
            thread_cpu_nanos().saturating_sub(self.slice_start_nanos.load(Ordering::Relaxed));
        self.used_nanos.fetch_add(slice, Ordering::Relaxed);
    }

    /// Runs at every interrupt of the VM.
    pub fn check(&self) -> mlua::Result<VmState> {
        if !self.armed.load(Ordering::Relaxed) {
            return Ok(VmState::Continue);
        }
        if !self.exceeded.load(Ordering::Relaxed) {
            let wall = wall_nanos();
            let last = self.last_read_wall_nanos.load(Ordering::Relaxed);
            if wall.saturating_sub(last) < CPU_READ_INTERVAL.as_nanos() as u64 {
                return Ok(VmState::Continue);
            }
            self.last_read_wall_nanos.store(wall, Ordering::Relaxed);
            let slice =
                thread_cpu_nanos().saturating_sub(self.slice_start_nanos.load(Ordering::Relaxed));
            let used = self.used_nanos.load(Ordering::Relaxed) + slice;
            if used < self.limit_nanos.load(Ordering::Relaxed) {
                if slice >= QUANTUM.as_nanos() as u64 {
                    return Ok(VmState::Yield);
                }
                return Ok(VmState::Continue);
            }
            self.exceeded.store(true, Ordering::Relaxed);
        }
        Err(mlua::Error::runtime("CPU time limit exceeded"))
    }
}

/// A future whose polls are charged to a budget.
///
/// When the handler yields, mlua wakes its task at once, which puts it
/// back at the front of the worker's queue: the runtime would then poll
/// its sockets only every few dozen polls. A wake made during the handler's
/// own poll is therefore turned into `tokio::task::yield_now`, which wakes
/// the task after the runtime has polled its sockets.
pub struct Metered<'a, F> {
    inner: Pin<Box<F>>,
    budget: &'a Budget,
    /// The pending `yield_now` of the last poll, if the handler yielded.
    yielding: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<'a, F> Metered<'a, F> {
    /// Meters `inner` against `budget`.
    pub fn new(inner: F, budget: &'a Budget) -> Self {
        Self {
            inner: Box::pin(inner),
            budget,
            yielding: None,
        }
    }
}

impl<F: Future> Future for Metered<'_, F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(yielding) = self.yielding.as_mut() {
            if yielding.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.yielding = None;
        }
        let waker = Arc::new(PollWaker {
            task: cx.waker().clone(),
            polling: AtomicBool::new(true),
            woken_in_poll: AtomicBool::new(false),
        });
        let inner_waker = Waker::from(waker.clone());
        let mut inner_cx = Context::from_waker(&inner_waker);
        self.budget.begin_slice();
        let result = self.inner.as_mut().poll(&mut inner_cx);
        self.budget.end_slice();
        waker.polling.store(false, Ordering::SeqCst);
        if result.is_pending() && waker.woken_in_poll.load(Ordering::SeqCst) {
            let mut yielding: Pin<Box<dyn Future<Output = ()> + Send>> =
                Box::pin(tokio::task::yield_now());
            // The first poll of `yield_now` registers the deferred wake.
            let _ = yielding.as_mut().poll(cx);
            self.yielding = Some(yielding);
        }
        result
    }
}

/// The waker given to the handler's future: a wake during the poll is
/// noted for `Metered` to defer, and a later wake goes to the task.
struct PollWaker {
    task: Waker,
    polling: AtomicBool,
    woken_in_poll: AtomicBool,
}

impl Wake for PollWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.polling.load(Ordering::SeqCst) {
            self.woken_in_poll.store(true, Ordering::SeqCst);
        } else {
            self.task.wake_by_ref();
        }
    }
}

/// Returns nanoseconds on a monotonic clock since its first use.
fn wall_nanos() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

fn thread_cpu_nanos() -> u64 {
    (thread_cpu_seconds() * 1e9) as u64
}

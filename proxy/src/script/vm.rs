//! One Luau VM running one route's script.
//!
//! A VM is created with the bindings installed, sandboxed, and the script's
//! top level run once, which registers the fetch handler. Each request then
//! calls that handler; the VM and its globals live on between requests.

use std::sync::Arc;
use std::time::Duration;

use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, LuaOptions, StdLib, Table, Value, VmState};

use super::budget::{Budget, Metered};
use super::request::{self, RequestEdits, RequestInput};
use super::response::{self, ScriptResponse};
use super::ScriptError;
use crate::bindings;
use crate::kv::KvStore;

/// Lua source of the metatable that makes header names case-insensitive.
/// Names are stored lowercase, so lookups with any case find them.
const HEADERS_METATABLE: &str = r#"
local lower = string.lower
local rawget, rawset, type = rawget, rawset, type
return {
    __index = function(headers, name)
        if type(name) == "string" then
            return rawget(headers, lower(name))
        end
        return nil
    end,
    __newindex = function(headers, name, value)
        if type(name) == "string" then
            name = lower(name)
        end
        rawset(headers, name, value)
    end,
}
"#;

/// Decision of a handler for one request.
#[derive(Debug)]
pub enum Outcome {
    /// The script responded.
    Respond(ScriptResponse),
    /// The script returned nothing: forward to the origin with these edits.
    FallThrough(RequestEdits),
}

/// CPU time the top level of a script may use when a VM is created.
const LOAD_CPU_LIMIT: Duration = Duration::from_secs(1);

/// Returns true when `error` is, or was caused by, a failed allocation.
fn is_memory_error(error: &mlua::Error) -> bool {
    match error {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } => is_memory_error(cause),
        mlua::Error::WithContext { cause, .. } => is_memory_error(cause),
        _ => false,
    }
}

/// A failed call, and whether it was stopped by a limit.
pub struct CallError {
    pub error: mlua::Error,
    /// The CPU or memory limit stopped the script; the VM must be dropped.
    pub limit: Option<String>,
}

/// Settings of a route's VMs.
#[derive(Clone)]
pub struct VmSettings {
    pub route: String,
    /// Chunk name used in tracebacks: `route/script-path`.
    pub chunk_name: String,
    /// Memory, in bytes, the VM may allocate.
    pub memory_limit: usize,
    /// The key-value store, when one is open.
    pub kv_store: Option<Arc<dyn KvStore>>,
    /// Namespaces the route declared.
    pub kv_namespaces: Vec<String>,
    /// Most key-value operations one handler call may make.
    pub kv_max_operations: u32,
    /// Most key-value bytes one handler call may write.
    pub kv_max_write_bytes: usize,
    /// Variables and secrets the route declared.
    pub env: Arc<bindings::RouteEnv>,
    /// The route's fetch settings; `None` where subrequests are not available.
    pub fetcher: Option<Arc<crate::fetch::Fetcher>>,
}

/// The event passed to a scheduled handler.
pub struct ScheduledEvent {
    /// The cron expression that fired, or `manual` for a run by hand.
    pub cron: String,
    /// Time the run was due, in milliseconds since the Unix epoch.
    pub scheduled_time_ms: i64,
}

/// A sandboxed Luau state with the script loaded and its handler found.
pub struct Vm {
    lua: Lua,
    /// Calls a handler after recording its coroutine (`bindings::handler_entry`).
    entry: Function,
    handler: Option<Function>,
    scheduled: Option<Function>,
    headers_metatable: Table,
    budget: Arc<Budget>,
    memory_limit: usize,
}

impl Vm {
    /// Creates a VM and runs the script's top level under `chunk_name`.
    pub fn new(bytecode: &[u8], settings: &VmSettings) -> Result<Self, ScriptError> {
        let chunk_name = settings.chunk_name.as_str();
        let memory_limit = settings.memory_limit;
        let setup = |e: mlua::Error| ScriptError::Setup(e.to_string());
        // Recycled coroutines save creating one per request.
        let options = LuaOptions::new().thread_pool_size(8);
        let lua = Lua::new_with(StdLib::ALL_SAFE, options).map_err(setup)?;
        lua.set_app_data(bindings::ScriptIdentity {
            route: settings.route.clone(),
            script: settings.chunk_name.clone(),
        });
        lua.set_app_data(bindings::MemoryLimit(memory_limit));
        lua.set_app_data(bindings::KvAccess {
            store: settings.kv_store.clone(),
            route: settings.route.clone(),
            namespaces: settings.kv_namespaces.clone(),
            max_operations: settings.kv_max_operations,
            max_write_bytes: settings.kv_max_write_bytes,
        });
        lua.set_app_data(bindings::KvCall::default());
        lua.set_app_data((*settings.env).clone());
        lua.set_app_data(bindings::FetchAccess {
            fetcher: settings.fetcher.clone(),
        });
        lua.set_app_data(bindings::FetchCall::default());
        lua.set_app_data(bindings::CurrentRequest::default());
        bindings::install(&lua).map_err(setup)?;
        let headers_metatable: Table = lua
            .load(HEADERS_METATABLE)
            .set_name("=actias/headers")
            .eval()
            .map_err(setup)?;
        headers_metatable.set_readonly(true);
        lua.set_named_registry_value(bindings::HEADERS_METATABLE, &headers_metatable)
            .map_err(setup)?;
        restrict_globals(&lua).map_err(setup)?;
        lua.sandbox(true).map_err(setup)?;
        lua.set_memory_limit(memory_limit).map_err(setup)?;
        let budget = Arc::new(Budget::default());
        lua.set_app_data(budget.clone());
        let interrupt_budget = budget.clone();
        // A yield inside a coroutine the script created would return to
        // the script's own `coroutine.resume` as if the coroutine had
        // yielded, so only the handler's coroutine yields the thread.
        lua.set_interrupt(move |lua| match interrupt_budget.check()? {
            VmState::Yield if !bindings::on_handler_thread(lua) => Ok(VmState::Continue),
            state => Ok(state),
        });

        budget.arm(LOAD_CPU_LIMIT);
        budget.begin_slice();
        let loaded = lua
            .load(bytecode)
            .set_name(format!("@{chunk_name}"))
            .set_mode(ChunkMode::Binary)
            .exec();
        budget.end_slice();
        if budget.disarm().1 {
            return Err(ScriptError::Load(format!(
                "the top level ran longer than the {} ms CPU limit for loading",
                LOAD_CPU_LIMIT.as_millis()
            )));
        }
        loaded.map_err(|e| ScriptError::Load(e.to_string()))?;
        let handler = lua
            .named_registry_value::<Option<Function>>(bindings::FETCH_LISTENER)
            .map_err(setup)?;
        let scheduled = lua
            .named_registry_value::<Option<Function>>(bindings::SCHEDULED_LISTENER)
            .map_err(setup)?;
        if handler.is_none() && scheduled.is_none() {
            return Err(ScriptError::NoHandler);
        }

        let entry = bindings::handler_entry(&lua).map_err(setup)?;

        Ok(Self {
            lua,
            entry,
            handler,
            scheduled,
            headers_metatable,
            budget,
            memory_limit,
        })
    }

    /// Calls the fetch handler for one request within `cpu_limit`; returns
    /// the outcome and the CPU time the handler used.
    pub async fn call(
        &self,
        input: &RequestInput<'_>,
        cpu_limit: Duration,
    ) -> (Result<Outcome, CallError>, Duration) {
        self.budget.arm(cpu_limit);
        let result = Metered::new(self.call_handler(input), &self.budget).await;
        let (used, out_of_time) = self.budget.disarm();
        (self.classify(result, cpu_limit, out_of_time), used)
    }

    fn classify<T>(
        &self,
        result: mlua::Result<T>,
        cpu_limit: Duration,
        out_of_time: bool,
    ) -> Result<T, CallError> {
        // A failed allocation is named first: a call that ran out of memory
        // often also ran past its CPU time while it allocated.
        if let Err(error) = &result {
            if is_memory_error(error) {
                return Err(CallError {
                    error: error.clone(),
                    limit: Some(format!(
                        "memory limit of {} bytes exceeded",
                        self.memory_limit
                    )),
                });
            }
        }
        if out_of_time {
            let message = format!("CPU time limit of {} ms exceeded", cpu_limit.as_millis());
            let error = match result {
                Err(error) => error,
                Ok(_) => mlua::Error::runtime(message.clone()),
            };
            return Err(CallError {
                error,
                limit: Some(message),
            });
        }
        result.map_err(|error| CallError { error, limit: None })
    }

    /// True when the script registered a fetch handler.
    pub fn has_fetch_handler(&self) -> bool {
        self.handler.is_some()
    }

    /// True when the script registered a scheduled handler.
    pub fn has_scheduled_handler(&self) -> bool {
        self.scheduled.is_some()
    }

    /// Calls the scheduled handler within `cpu_limit`; returns the result
    /// and the CPU time the handler used.
    pub async fn call_scheduled(
        &self,
        event: &ScheduledEvent,
        cpu_limit: Duration,
    ) -> (Result<(), CallError>, Duration) {
        self.budget.arm(cpu_limit);
        let result = Metered::new(self.call_scheduled_handler(event), &self.budget).await;
        let (used, out_of_time) = self.budget.disarm();
        (self.classify(result, cpu_limit, out_of_time), used)
    }

    async fn call_scheduled_handler(&self, event: &ScheduledEvent) -> mlua::Result<()> {
        let Some(handler) = &self.scheduled else {
            return Err(mlua::Error::runtime(
                "the script registers no scheduled handler; call \
                 add_event_listener(\"scheduled\", function(event) ... end)",
            ));
        };
        self.lua.set_app_data(bindings::CurrentRequest::default());
        self.lua.set_app_data(bindings::FetchCall::default());
        self.lua.set_app_data(bindings::KvCall::default());
        let table = self.lua.create_table()?;
        table.raw_set("cron", event.cron.as_str())?;
        table.raw_set("scheduled_time", event.scheduled_time_ms)?;
        let result = self.entry.call_async::<()>((handler, table)).await;
        self.lua.set_app_data(bindings::HandlerThread(0));
        result
    }

    /// Returns true when the VM uses so much of its memory limit that it
    /// should be replaced, for example after a script caught a memory error.
    pub fn near_memory_limit(&self) -> bool {
        self.lua.used_memory() > self.memory_limit / 10 * 9
    }

    async fn call_handler(&self, input: &RequestInput<'_>) -> mlua::Result<Outcome> {
        let Some(handler) = &self.handler else {
            return Err(mlua::Error::runtime(
                "the script registers no fetch handler, so this route cannot answer requests; \
                 call add_event_listener(\"fetch\", function(request) ... end)",
            ));
        };
        self.lua.set_app_data(bindings::CurrentRequest {
            id: input.request_id.to_string(),
            lines: 0,
        });
        // The Host header as sent, so that a subrequest to the origin
        // carries it unchanged.
        let host = input
            .headers
            .get(http::header::HOST)
            .and_then(|value| value.to_str().ok())
            .unwrap_or(input.host);
        self.lua.set_app_data(bindings::KvCall::default());
        let request = request::build(&self.lua, input, &self.headers_metatable)?;
        self.lua.set_app_data(bindings::FetchCall {
            host: Some(host.to_string()),
            used: 0,
            depth: crate::fetch::subrequest_depth(input.headers),
            routes: input
                .headers
                .get(crate::fetch::SUBREQUEST_ROUTES_HEADER)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string),
            incoming: Some(bindings::IncomingTarget {
                table: request.to_pointer() as usize,
                path: input.path.clone(),
                raw_query: input.raw_query.map(str::to_string),
            }),
        });
        // Called as a coroutine, so that the interrupt can make it yield.
        let returned = self.entry.call_async::<Value>((handler, &request)).await;
        self.lua.set_app_data(bindings::HandlerThread(0));
        let returned = returned?;
        match returned {
            Value::Nil => Ok(Outcome::FallThrough(request::edits(&request, input)?)),
            Value::Table(table) => Ok(Outcome::Respond(response::from_table(&table)?)),
            other => Err(mlua::Error::runtime(format!(
                "the fetch handler returned a {}; return a table such as \
                 {{status = 200, body = \"...\"}}, or nothing to forward the request to the origin",
                crate::bindings::args::type_name(&other)
            ))),
        }
    }
}

/// Removes what the sandbox should not offer: `debug` keeps only
/// `traceback`, and `getfenv`, `setfenv` and `loadstring` are gone.
fn restrict_globals(lua: &Lua) -> mlua::Result<()> {
    let globals = lua.globals();
    // `setfenv` could swap the environment of the handler, which would
    // break the VM for every later request without any limit replacing it.
    globals.raw_set("setfenv", Value::Nil)?;
    globals.raw_set("getfenv", Value::Nil)?;
    // Luau compiles a source in one C call that the interrupt cannot stop,
    // with memory outside the VM's limit: a few megabytes of source took
    // seconds and a gigabyte.
    globals.raw_set("loadstring", Value::Nil)?;
    // Scripts may call string methods but not get the shared metatable.
    lua.load(r#"rawset(getmetatable(""), "__metatable", "the string metatable is locked")"#)
        .set_name("=actias/sandbox")
        .exec()?;
    let debug: Table = globals.raw_get("debug")?;
    let traceback: Value = debug.raw_get("traceback")?;
    let restricted = lua.create_table()?;
    restricted.raw_set("traceback", traceback)?;
    globals.raw_set("debug", restricted)?;
    Ok(())
}

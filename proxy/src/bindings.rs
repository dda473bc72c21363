//! Every function that Lua scripts can call, installed into a fresh VM.
//!
//! Bindings only touch Lua values and the traits they are given; they know
//! nothing of Pingora, of routing or of a particular storage backend. The runtime in `script` installs them before the VM is
//! sandboxed, so that scripts see them as read-only globals.

mod args;
mod crypto;
mod encoding;
mod env;
mod fetch;
mod json;
mod kv;
mod log;
mod modules;
mod time;
mod url;
mod uuid;

pub use env::RouteEnv;
pub use fetch::{FetchAccess, FetchCall, HEADERS_METATABLE};
pub use kv::KvAccess;
pub use log::{CurrentRequest, MemoryLimit, ScriptIdentity, MAX_LINES_PER_CALL};
pub use modules::MODULES;
pub use time::now_ms;

use mlua::{Error, Function, Lua, Result, Value};

/// Registry key of the function registered for the `fetch` event.
pub const FETCH_LISTENER: &str = "actias.listener.fetch";
/// Registry key of the function registered for the `scheduled` event.
pub const SCHEDULED_LISTENER: &str = "actias.listener.scheduled";

/// Installs the globals that scripts use.
pub fn install(lua: &Lua) -> Result<()> {
    let globals = lua.globals();
    globals.raw_set("json", json::create(lua)?)?;
    globals.raw_set("log", log::create(lua)?)?;
    globals.raw_set("kv", kv::create(lua)?)?;
    globals.raw_set("crypto", crypto::create(lua)?)?;
    globals.raw_set("base64", encoding::create_base64(lua)?)?;
    globals.raw_set("hex", encoding::create_hex(lua)?)?;
    globals.raw_set("uuid", uuid::create(lua)?)?;
    globals.raw_set("time", time::create(lua)?)?;
    globals.raw_set("url", url::create(lua)?)?;
    globals.raw_set("env", env::create(lua)?)?;
    fetch::install(lua, &globals)?;
    globals.raw_set("print", log::create_print(lua)?)?;
    globals.raw_set(
        "add_event_listener",
        lua.create_function(add_event_listener)?,
    )?;
    // mlua's default `require` reads the file system; this one returns
    // only the modules shipped in the binary.
    globals.raw_set("require", lua.create_function(modules::require)?)?;
    Ok(())
}

/// `add_event_listener(event, handler)`: registers the handler of an event.
fn add_event_listener(lua: &Lua, (event, handler): (String, Value)) -> Result<()> {
    let Value::Function(handler) = handler else {
        return Err(Error::runtime(format!(
            "add_event_listener: the handler for `{event}` must be a function, not a {}",
            handler.type_name()
        )));
    };
    let key = match event.as_str() {
        "fetch" => FETCH_LISTENER,
        "scheduled" => SCHEDULED_LISTENER,
        other => {
            return Err(Error::runtime(format!(
                "add_event_listener: unknown event `{other}`; the events are `fetch` and \
                 `scheduled`"
            )))
        }
    };
    if lua.named_registry_value::<Option<Function>>(key)?.is_some() {
        return Err(Error::runtime(format!(
            "add_event_listener: a {event} handler is already registered; register one"
        )));
    }
    lua.set_named_registry_value(key, handler)
}

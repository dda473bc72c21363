//! Every function that Lua scripts can call, installed into a fresh VM.
//!
//! Bindings only touch Lua values and the traits they are given; they know
//! nothing of Pingora, of routing or of a particular storage backend. The runtime in `script` installs them before the VM is
//! sandboxed, so that scripts see them as read-only globals.

mod json;
mod kv;
mod log;

pub use kv::KvAccess;
pub use log::{CurrentRequest, MemoryLimit, ScriptIdentity};

use mlua::{Error, Function, Lua, Result, Value};

/// Registry key of the function registered for the `fetch` event.
pub const FETCH_LISTENER: &str = "actias.listener.fetch";

/// Installs the globals that scripts use.
pub fn install(lua: &Lua) -> Result<()> {
    let globals = lua.globals();
    globals.raw_set("json", json::create(lua)?)?;
    globals.raw_set("log", log::create(lua)?)?;
    globals.raw_set("kv", kv::create(lua)?)?;
    globals.raw_set("print", log::create_print(lua)?)?;
    globals.raw_set(
        "add_event_listener",
        lua.create_function(add_event_listener)?,
    )?;
    // mlua's default `require` reads the file system; scripts get none.
    globals.raw_set(
        "require",
        lua.create_function(|_, name: Value| -> Result<()> {
            Err(Error::runtime(format!(
                "require: module {} is not available; Actias ships no modules for require yet",
                name.to_string().unwrap_or_else(|_| "?".into())
            )))
        })?,
    )?;
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
    match event.as_str() {
        "fetch" => {
            if lua
                .named_registry_value::<Option<Function>>(FETCH_LISTENER)?
                .is_some()
            {
                return Err(Error::runtime(
                    "add_event_listener: a fetch handler is already registered; register one",
                ));
            }
            lua.set_named_registry_value(FETCH_LISTENER, handler)
        }
        other => Err(Error::runtime(format!(
            "add_event_listener: unknown event `{other}`; the supported event is `fetch`"
        ))),
    }
}

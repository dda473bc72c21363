//! `log.debug`, `log.info`, `log.warn`, `log.error` and `print`.
//!
//! Script lines go to the proxy's log under the `actias::script` target
//! with the route, the script and the request id as fields.

use mlua::{Lua, MultiValue, Result, Table};

use crate::logging::SCRIPT_TARGET;

/// The route and chunk name of the script in a VM, stored as app data.
pub struct ScriptIdentity {
    pub route: String,
    pub script: String,
}

/// The id of the request being handled, stored as app data per call.
pub struct CurrentRequest(pub String);

#[derive(Clone, Copy)]
enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// Creates the `log` table.
pub fn create(lua: &Lua) -> Result<Table> {
    let log = lua.create_table()?;
    for (name, level) in [
        ("debug", Level::Debug),
        ("info", Level::Info),
        ("warn", Level::Warn),
        ("error", Level::Error),
    ] {
        log.raw_set(
            name,
            lua.create_function(move |lua, args: MultiValue| write(lua, level, args))?,
        )?;
    }
    Ok(log)
}

/// Creates `print`, which logs at info level.
pub fn create_print(lua: &Lua) -> Result<mlua::Function> {
    lua.create_function(|lua, args: MultiValue| write(lua, Level::Info, args))
}

/// Joins the arguments with spaces, as `print` does, and logs them.
fn write(lua: &Lua, level: Level, args: MultiValue) -> Result<()> {
    let mut message = String::new();
    for (index, value) in args.iter().enumerate() {
        if index > 0 {
            message.push(' ');
        }
        message.push_str(
            &value
                .to_string()
                .unwrap_or_else(|_| value.type_name().into()),
        );
    }
    let identity = lua.app_data_ref::<ScriptIdentity>();
    let route = identity.as_ref().map_or("", |i| i.route.as_str());
    let script = identity.as_ref().map_or("", |i| i.script.as_str());
    let request = lua.app_data_ref::<CurrentRequest>();
    let request_id = request.as_ref().map_or("", |r| r.0.as_str());
    match level {
        Level::Debug => {
            tracing::debug!(target: SCRIPT_TARGET, route, script, request_id, "{message}")
        }
        Level::Info => {
            tracing::info!(target: SCRIPT_TARGET, route, script, request_id, "{message}")
        }
        Level::Warn => {
            tracing::warn!(target: SCRIPT_TARGET, route, script, request_id, "{message}")
        }
        Level::Error => {
            tracing::error!(target: SCRIPT_TARGET, route, script, request_id, "{message}")
        }
    }
    Ok(())
}

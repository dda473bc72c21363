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

/// Memory, in bytes, that the VM may allocate, stored as app data so that
/// bindings can bound what they build outside the Lua heap.
pub struct MemoryLimit(pub usize);

/// Maximum length of a logged message, in bytes. The rest is cut.
const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// Most lines one handler call may log; later lines are dropped.
pub const MAX_LINES_PER_CALL: u32 = 100;

/// The request being handled, stored as app data and reset per call.
#[derive(Default)]
pub struct CurrentRequest {
    /// Request id, empty for scheduled runs.
    pub id: String,
    /// Lines logged so far in this call.
    pub lines: u32,
}

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
    let request_id = {
        let Some(mut request) = lua.app_data_mut::<CurrentRequest>() else {
            return Ok(());
        };
        request.lines += 1;
        if request.lines > MAX_LINES_PER_CALL {
            if request.lines == MAX_LINES_PER_CALL + 1 {
                let identity = lua.app_data_ref::<ScriptIdentity>();
                let route = identity.as_ref().map_or("", |i| i.route.as_str());
                tracing::warn!(
                    target: SCRIPT_TARGET,
                    route,
                    request_id = request.id.as_str(),
                    "the script logged {MAX_LINES_PER_CALL} lines in one request or scheduled \
                     run; its further lines in this call are dropped"
                );
            }
            return Ok(());
        }
        request.id.clone()
    };
    // Secrets are removed before the line is cut, so that no part of one
    // survives at the cut.
    let mut raw = String::new();
    for (index, value) in args.iter().enumerate() {
        if raw.len() > 2 * MAX_MESSAGE_BYTES {
            break;
        }
        if index > 0 {
            raw.push(' ');
        }
        let text = value
            .to_string()
            .unwrap_or_else(|_| value.type_name().into());
        let mut end = text.len().min(2 * MAX_MESSAGE_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        raw.push_str(&text[..end]);
    }
    if let Some(env) = lua.app_data_ref::<super::RouteEnv>() {
        raw = env.redact(&raw);
    }
    let mut message = String::new();
    // Control characters are escaped, so that a script cannot start a
    // line of its own in a text log.
    for c in raw.chars() {
        if message.len() >= MAX_MESSAGE_BYTES {
            message.push_str("...");
            break;
        }
        match c {
            '\n' => message.push_str("\\n"),
            '\r' => message.push_str("\\r"),
            c if c.is_control() && c != '\t' => message.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => message.push(c),
        }
    }
    let identity = lua.app_data_ref::<ScriptIdentity>();
    let route = identity.as_ref().map_or("", |i| i.route.as_str());
    let script = identity.as_ref().map_or("", |i| i.script.as_str());
    let request_id = request_id.as_str();
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

//! One Luau VM running one route's script.
//!
//! A VM is created with the bindings installed, sandboxed, and the script's
//! top level run once, which registers the fetch handler. Each request then
//! calls that handler; the VM and its globals live on between requests.

use mlua::chunk::ChunkMode;
use mlua::{Function, Lua, LuaOptions, StdLib, Table, Value};

use super::request::{self, RequestEdits, RequestInput};
use super::response::{self, ScriptResponse};
use super::ScriptError;
use crate::bindings;

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

/// What a handler decided for one request.
#[derive(Debug)]
pub enum Outcome {
    /// The script answered.
    Respond(ScriptResponse),
    /// The script returned nothing: forward to the origin with these edits.
    FallThrough(RequestEdits),
}

/// A sandboxed Luau state with the script loaded and its handler found.
pub struct Vm {
    lua: Lua,
    handler: Function,
    headers_metatable: Table,
}

impl Vm {
    /// Creates a VM and runs the script's top level under `chunk_name`.
    pub fn new(
        bytecode: &[u8],
        route: &str,
        chunk_name: &str,
        memory_limit: usize,
    ) -> Result<Self, ScriptError> {
        let setup = |e: mlua::Error| ScriptError::Setup(e.to_string());
        let lua = Lua::new_with(StdLib::ALL_SAFE, LuaOptions::default()).map_err(setup)?;
        lua.set_app_data(bindings::ScriptIdentity {
            route: route.to_string(),
            script: chunk_name.to_string(),
        });
        bindings::install(&lua).map_err(setup)?;
        let headers_metatable: Table = lua
            .load(HEADERS_METATABLE)
            .set_name("=actias/headers")
            .eval()
            .map_err(setup)?;
        lua.sandbox(true).map_err(setup)?;
        lua.set_memory_limit(memory_limit).map_err(setup)?;

        lua.load(bytecode)
            .set_name(format!("@{chunk_name}"))
            .set_mode(ChunkMode::Binary)
            .exec()
            .map_err(|e| ScriptError::Load(e.to_string()))?;
        let handler = lua
            .named_registry_value::<Option<Function>>(bindings::FETCH_LISTENER)
            .map_err(setup)?
            .ok_or(ScriptError::NoHandler)?;

        Ok(Self {
            lua,
            handler,
            headers_metatable,
        })
    }

    /// Calls the fetch handler for one request.
    pub fn call(&self, input: &RequestInput<'_>) -> mlua::Result<Outcome> {
        self.lua
            .set_app_data(bindings::CurrentRequest(input.request_id.to_string()));
        let request = request::build(&self.lua, input, &self.headers_metatable)?;
        let returned: Value = self.handler.call(&request)?;
        match returned {
            Value::Nil => Ok(Outcome::FallThrough(request::edits(&request, input)?)),
            Value::Table(table) => Ok(Outcome::Respond(response::from_table(&table)?)),
            other => Err(mlua::Error::runtime(format!(
                "the fetch handler returned a {}; return a table such as \
                 {{status = 200, body = \"...\"}}, or nothing to forward the request to the origin",
                other.type_name()
            ))),
        }
    }
}

//! `require`: the pure-Lua modules of `lua-stdlib/modules`, shipped inside
//! the binary.
//!
//! Each module is compiled once per process and run at most once per VM;
//! later calls in the same VM return the first result. Nothing is read
//! from the file system.

use std::sync::OnceLock;

use mlua::chunk::ChunkMode;
use mlua::{Error, Lua, Result, Table, Value};

use crate::script::Bytecode;

/// Registry key of the table of modules already run in this VM.
const LOADED: &str = "actias.modules.loaded";

/// A module that scripts can require: its name and source.
pub struct Module {
    pub name: &'static str,
    pub source: &'static str,
}

/// Every module that `require` can return.
pub const MODULES: &[Module] = &[
    Module {
        name: "cookie",
        source: include_str!("../../../lua-stdlib/modules/cookie.lua"),
    },
    Module {
        name: "router",
        source: include_str!("../../../lua-stdlib/modules/router.lua"),
    },
];

/// Compiled modules, in the order of `MODULES`.
fn compiled() -> &'static [std::result::Result<Bytecode, String>] {
    static COMPILED: OnceLock<Vec<std::result::Result<Bytecode, String>>> = OnceLock::new();
    COMPILED.get_or_init(|| {
        MODULES
            .iter()
            .map(|module| {
                // Level 1 keeps functions from being inlined, so that the
                // level argument of `error` in a module still points at
                // the script line that called it.
                mlua::chunk::Compiler::new()
                    .set_optimization_level(1)
                    .set_debug_level(1)
                    .compile(module.source.as_bytes())
                    .map(Bytecode::from)
                    .map_err(|e| e.to_string())
            })
            .collect()
    })
}

/// `require(name)`.
pub fn require(lua: &Lua, name: Value) -> Result<Value> {
    let Value::String(name) = name else {
        return Err(Error::runtime(format!(
            "require: the module name must be a string, not a {}",
            super::args::type_name(&name)
        )));
    };
    let name = name.to_string_lossy();
    let loaded = match lua.named_registry_value::<Option<Table>>(LOADED)? {
        Some(table) => table,
        None => {
            let table = lua.create_table()?;
            lua.set_named_registry_value(LOADED, &table)?;
            table
        }
    };
    if let Value::Table(module) = loaded.raw_get::<Value>(name.as_str())? {
        return Ok(Value::Table(module));
    }
    let Some(index) = MODULES.iter().position(|module| module.name == name) else {
        let names: Vec<&str> = MODULES.iter().map(|module| module.name).collect();
        return Err(Error::runtime(format!(
            "require: there is no module `{name}`; scripts can require only the modules that \
             ship with Actias: {}",
            names.join(", ")
        )));
    };
    let bytecode = compiled()[index]
        .as_ref()
        .map_err(|e| Error::runtime(format!("require: module `{name}` does not compile: {e}")))?;
    let module: Value = lua
        .load(&bytecode[..])
        .set_name(format!("@lua-stdlib/{name}.lua"))
        .set_mode(ChunkMode::Binary)
        .eval()?;
    let Value::Table(module) = module else {
        return Err(Error::runtime(format!(
            "require: module `{name}` returned a {} instead of a table",
            super::args::type_name(&module)
        )));
    };
    loaded.raw_set(name.as_str(), &module)?;
    Ok(Value::Table(module))
}

//! Every function that Lua scripts can call, installed into a fresh VM.
//!
//! Bindings only touch Lua values and the traits they are given; they know
//! nothing of Pingora, of routing or of a particular storage backend. The runtime in `script` installs them before the VM is
//! sandboxed, so that scripts see them as read-only globals.

pub(crate) mod args;
mod crypto;
mod encoding;
mod env;
mod fetch;
mod json;
mod kv;
mod log;
mod modules;
mod search;
mod time;
mod url;
mod uuid;

pub use encoding::encode_hex;
pub use env::RouteEnv;
pub use fetch::{FetchAccess, FetchCall, IncomingTarget, HEADERS_METATABLE};
pub use kv::{KvAccess, KvCall};
pub use log::{CurrentRequest, MemoryLimit, ScriptIdentity, MAX_LINES_PER_CALL};
pub use modules::MODULES;
pub use time::now_ms;

use mlua::{Error, Function, Lua, Result, Table, Value};

/// Registry key of the function registered for the `fetch` event.
pub const FETCH_LISTENER: &str = "actias.listener.fetch";
/// Registry key of the function registered for the `scheduled` event.
pub const SCHEDULED_LISTENER: &str = "actias.listener.scheduled";

/// The coroutine that runs the current handler call, stored as app data:
/// the address of its Lua thread, or 0 outside a handler call.
#[derive(Default)]
pub struct HandlerThread(pub usize);

/// Wraps a handler so that calling the result first records the calling
/// coroutine as the handler's own, which `fetch` and `kv` check.
pub fn handler_entry(lua: &Lua) -> Result<Function> {
    let mark = lua.create_function(|lua, ()| {
        let thread = lua.current_thread().to_pointer() as usize;
        lua.set_app_data(HandlerThread(thread));
        Ok(())
    })?;
    lua.load("local mark = ...\nreturn function(handler, argument)\n    mark()\n    return handler(argument)\nend")
        .set_name("=actias/entry")
        .call(mark)
}

/// Fails unless the caller runs on the coroutine of the current handler
/// call: a yield from the top level of a script, or from a coroutine the
/// script created, would never be resumed.
pub fn check_handler_thread(lua: &Lua, function: &str) -> Result<()> {
    let expected = lua.app_data_ref::<HandlerThread>().map_or(0, |t| t.0);
    if expected == 0 {
        return Err(Error::runtime(format!(
            "{function}: call it from inside a handler; it cannot run at the top level of a \
             script, which runs once when the script loads"
        )));
    }
    if !on_handler_thread(lua) {
        return Err(Error::runtime(format!(
            "{function}: call it from the handler itself; it cannot run inside a coroutine that \
             the script created with coroutine.create or coroutine.wrap"
        )));
    }
    Ok(())
}

/// Returns true when the running coroutine is the one of the current
/// handler call, not the top level or a coroutine the script created.
pub fn on_handler_thread(lua: &Lua) -> bool {
    let expected = lua.app_data_ref::<HandlerThread>().map_or(0, |t| t.0);
    expected != 0 && lua.current_thread().to_pointer() as usize == expected
}

/// Steps of a binding's loop between two checks of the CPU budget.
const CPU_CHECK_INTERVAL: u32 = 256;

/// A check of the handler's CPU budget for long loops inside bindings,
/// where Luau's interrupt does not run. The default checks nothing.
#[derive(Default)]
pub struct CpuCheck {
    budget: Option<std::sync::Arc<crate::script::Budget>>,
    steps: u32,
}

impl CpuCheck {
    /// Starts checking the budget of the VM that runs `lua`.
    pub fn new(lua: &Lua) -> Self {
        Self {
            budget: lua
                .app_data_ref::<std::sync::Arc<crate::script::Budget>>()
                .map(|budget| budget.clone()),
            steps: 0,
        }
    }

    /// Counts one step and raises the CPU limit error once the budget has
    /// run out, checked every `CPU_CHECK_INTERVAL` steps.
    pub fn step(&mut self) -> Result<()> {
        self.steps = self.steps.wrapping_add(1);
        if !self.steps.is_multiple_of(CPU_CHECK_INTERVAL) {
            return Ok(());
        }
        match &self.budget {
            Some(budget) => budget.check().map(|_| ()),
            None => Ok(()),
        }
    }
}

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
    search::install(lua)?;
    install_interruptible_sort(lua)?;
    install_interruptible_move(lua)?;
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

/// Replaces `table.sort` with one that always passes a Lua comparator.
/// Luau's default comparison runs in C without an interrupt check, so
/// sorting millions of values could run far past `cpu_ms`. A comparator
/// written in Lua reaches the interrupt on every return.
fn install_interruptible_sort(lua: &Lua) -> Result<()> {
    let table: Table = lua.globals().raw_get("table")?;
    let native: Function = table.raw_get("sort")?;
    let wrapper: Function = lua
        .load(
            "local sort = ...\n\
             local function less(a, b) return a < b end\n\
             return function(list, compare)\n\
                 return sort(list, if compare == nil then less else compare)\n\
             end\n",
        )
        .set_name("=table.sort")
        .call(native)?;
    table.raw_set("sort", wrapper)
}

/// Replaces `table.move` with one that moves long ranges in slices of
/// 4096 elements. Luau's `table.move` loops over the whole range in C
/// without an interrupt check. Moving the empty slots of an empty table
/// allocates nothing, so one call over two billion indexes ran for about a
/// minute past `cpu_ms`. The Lua loop between slices reaches the interrupt.
/// Slices go in the same direction as the whole move would, so an
/// overlapping move within one table gives the same result.
fn install_interruptible_move(lua: &Lua) -> Result<()> {
    let table: Table = lua.globals().raw_get("table")?;
    let native: Function = table.raw_get("move")?;
    let wrapper: Function = lua
        .load(
            r#"local move = ...
local SLICE = 4096
local INT_MIN, INT_MAX = -2147483648, 2147483647
local function int(n)
    return type(n) == "number" and n == math.floor(n) and n >= INT_MIN and n <= INT_MAX
end
return function(source, first, last, to, destination)
    -- Short ranges, and arguments that Luau itself turns away or converts,
    -- go to the native function and its own errors.
    if not (int(first) and int(last) and int(to)) or last - first < SLICE then
        return move(source, first, last, to, destination)
    end
    -- An empty range checks the argument types and moves nothing.
    move(source, 1, 0, to, destination)
    if not (first > 0 or last < INT_MAX + first) then
        error("invalid argument #3 to 'move' (too many elements to move)", 2)
    end
    local count = last - first
    if to > INT_MAX - count then
        error("invalid argument #4 to 'move' (destination wrap around)", 2)
    end
    local target = if destination == nil then source else destination
    if to > last or to <= first or not rawequal(source, target) then
        for offset = 0, count, SLICE do
            local stop = math.min(offset + SLICE - 1, count)
            move(source, first + offset, first + stop, to + offset, target)
        end
    else
        local offset = count - count % SLICE
        while offset >= 0 do
            local stop = math.min(offset + SLICE - 1, count)
            move(source, first + offset, first + stop, to + offset, target)
            offset -= SLICE
        end
    end
    return target
end
"#,
        )
        .set_name("=table.move")
        .call(native)?;
    table.raw_set("move", wrapper)
}

/// `add_event_listener(event, handler)`: registers the handler of an event.
fn add_event_listener(lua: &Lua, (event, handler): (String, Value)) -> Result<()> {
    let Value::Function(handler) = handler else {
        return Err(Error::runtime(format!(
            "add_event_listener: the handler for `{event}` must be a function, not a {}",
            crate::bindings::args::type_name(&handler)
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
            "add_event_listener: a {event} handler is already registered, and a script may \
             register only one; combine the two functions"
        )));
    }
    lua.set_named_registry_value(key, handler)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use mlua::{LuaOptions, StdLib, Table};

    use super::*;

    /// Functions that `install` adds or replaces: globals and the functions
    /// in the tables it adds, as `name` or `table.name`.
    fn registered() -> BTreeSet<String> {
        let lua = Lua::new_with(StdLib::ALL_SAFE, LuaOptions::new()).unwrap();
        let before: Vec<(String, Value)> = lua
            .globals()
            .pairs::<String, Value>()
            .collect::<Result<_>>()
            .unwrap();
        install(&lua).unwrap();
        let mut names = BTreeSet::new();
        for pair in lua.globals().pairs::<String, Value>() {
            let (name, value) = pair.unwrap();
            if before.iter().any(|(n, v)| *n == name && *v == value) {
                continue;
            }
            match value {
                Value::Function(_) => {
                    names.insert(name);
                }
                Value::Table(table) => {
                    for entry in table.pairs::<String, Value>() {
                        let (field, value) = entry.unwrap();
                        if matches!(value, Value::Function(_)) {
                            names.insert(format!("{name}.{field}"));
                        }
                    }
                }
                _ => {}
            }
        }
        names
    }

    /// Functions declared in `lua-stdlib/actias.d.lua`, other than the
    /// methods of classes (`Class:method`) and the `test` API of
    /// `actias test`, which `install` does not register.
    fn declared() -> BTreeSet<String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../lua-stdlib/actias.d.lua");
        let text = std::fs::read_to_string(path).unwrap();
        text.lines()
            .filter_map(|line| line.strip_prefix("function "))
            .filter_map(|rest| rest.split_once('(').map(|(name, _)| name.to_string()))
            .filter(|name| !name.contains(':') && !name.starts_with("test."))
            .collect()
    }

    #[test]
    fn definitions_match_registered_functions() {
        let registered = registered();
        let declared = declared();
        let undeclared: Vec<_> = registered.difference(&declared).collect();
        let unregistered: Vec<_> = declared.difference(&registered).collect();
        assert!(
            undeclared.is_empty(),
            "registered from Rust but not declared in lua-stdlib/actias.d.lua: {undeclared:?}"
        );
        assert!(
            unregistered.is_empty(),
            "declared in lua-stdlib/actias.d.lua but not registered: {unregistered:?}"
        );
        assert!(registered.contains("crypto.hmac"));
        assert!(registered.contains("fetch"));
    }

    #[test]
    fn reference_lists_every_function() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/lua-api.md");
        let reference = std::fs::read_to_string(path).unwrap();
        let headings: Vec<&str> = reference
            .lines()
            .filter(|line| line.starts_with('#'))
            .collect();
        let mut names: Vec<String> = declared().into_iter().collect();
        let lua = Lua::new_with(StdLib::ALL_SAFE, LuaOptions::new()).unwrap();
        install(&lua).unwrap();
        for module in MODULES {
            let table: Table = lua
                .load(format!("return require({:?})", module.name))
                .eval()
                .unwrap();
            for pair in table.pairs::<String, Value>() {
                let (field, value) = pair.unwrap();
                if matches!(value, Value::Function(_)) {
                    names.push(format!("{}.{field}", module.name));
                }
            }
        }
        let missing: Vec<&String> = names
            .iter()
            .filter(|name| {
                let heading = format!("`{name}(");
                !headings
                    .iter()
                    .any(|heading_line| heading_line.contains(&heading))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "functions without a heading in docs/lua-api.md: {missing:?}"
        );
    }
}

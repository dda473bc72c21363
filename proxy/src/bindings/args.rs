//! Checks of the arguments that scripts pass to bindings.
//!
//! mlua's own conversion errors name a Rust type; these name the Lua
//! function, the argument and what to pass instead.

use mlua::{Error, Lua, LuaString, Result, Value};

/// Returns argument `position` of `function` as a string; numbers are not
/// accepted, so that a digest of `1` is never a digest of `"1"` by accident.
pub fn string(function: &str, position: usize, value: Value) -> Result<LuaString> {
    match value {
        Value::String(text) => Ok(text),
        other => Err(Error::runtime(format!(
            "{function}: argument {position} must be a string, not a {}",
            type_name(&other)
        ))),
    }
}

/// Returns argument `position` of `function` as a whole number in `range`.
pub fn integer(
    function: &str,
    position: usize,
    value: Value,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64> {
    let number = match value {
        Value::Integer(n) => n as f64,
        Value::Number(n) => n,
        other => {
            return Err(Error::runtime(format!(
                "{function}: argument {position} must be a number, not a {}",
                type_name(&other)
            )))
        }
    };
    if number.fract() != 0.0 || number < *range.start() as f64 || number > *range.end() as f64 {
        return Err(Error::runtime(format!(
            "{function}: argument {position} is {number}; pass a whole number from {} to {}",
            range.start(),
            range.end()
        )));
    }
    Ok(number as i64)
}

/// Fails unless a result of `length` bytes fits in what is left of the
/// script's memory limit, checked before the result is built outside the
/// Lua heap.
pub fn check_result_size(lua: &Lua, function: &str, length: usize) -> Result<()> {
    let limit = lua
        .app_data_ref::<super::MemoryLimit>()
        .map_or(usize::MAX, |limit| limit.0);
    let free = limit.saturating_sub(lua.used_memory());
    if length > free {
        return Err(Error::runtime(format!(
            "{function}: the result would be {length} bytes, more than the {free} bytes left of \
             the script's memory limit of {limit} bytes; pass a shorter string"
        )));
    }
    Ok(())
}

/// Returns the name that Lua's `type` gives `value`, so integers are numbers.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Integer(_) => "number",
        other => other.type_name(),
    }
}

/// Returns the start of `text` for an error message, which may quote text
/// of any length, such as a header value or a path.
pub fn shown(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    if text.chars().count() <= MAX_CHARS {
        return text.to_string();
    }
    let start: String = text.chars().take(MAX_CHARS).collect();
    format!("{start}...")
}

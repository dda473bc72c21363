//! Linear-time replacements for the plain-text searches of Luau's string
//! library.
//!
//! Luau's `string.find` with a plain pattern and its `string.split` compare
//! the needle at every position with `memcmp`, and neither checks the
//! interrupt. A search of a long run of one byte for a long needle then takes
//! time proportional to the product of the lengths (by our estimate, hours
//! for two strings of a few megabytes), far past any CPU limit. The versions here use a
//! two-way search, linear in the haystack, and hand every pattern search to
//! Luau's own function, whose matcher does check the interrupt.

use memchr::memmem;
use mlua::{Error, Function, Lua, MultiValue, Result, Table, Value};

/// Bytes that make a pattern more than plain text; the same set Luau checks.
const SPECIALS: &[u8] = b"^$*+?.([%-";

/// Replaces `find` and `split` in the `string` table, which is also the
/// `__index` of the string metatable, so `s:find(...)` uses them too.
pub fn install(lua: &Lua) -> Result<()> {
    let string: Table = lua.globals().raw_get("string")?;
    let pattern_find: Function = string.raw_get("find")?;
    let byte_split: Function = string.raw_get("split")?;
    string.raw_set(
        "find",
        lua.create_function(move |lua, args: MultiValue| find(lua, &pattern_find, args))?,
    )?;
    string.raw_set(
        "split",
        lua.create_function(move |lua, args: MultiValue| split(lua, &byte_split, args))?,
    )?;
    Ok(())
}

/// `string.find(s, pattern, init, plain)`.
fn find(lua: &Lua, pattern_find: &Function, args: MultiValue) -> Result<MultiValue> {
    let subject = coerce(lua, args.front(), "find", 1)?;
    let pattern = coerce(lua, args.get(1), "find", 2)?;
    let plain = args
        .get(3)
        .is_some_and(|value| value.as_boolean() != Some(false) && !value.is_nil());
    let pattern_bytes = pattern.as_bytes();
    if !plain && pattern_bytes.iter().any(|byte| SPECIALS.contains(byte)) {
        return pattern_find.call(args);
    }

    let subject_bytes = subject.as_bytes();
    let length = subject_bytes.len() as i64;
    let init = match args.get(2) {
        None | Some(Value::Nil) => 1,
        Some(value) => lua.coerce_integer(value.clone())?.ok_or_else(|| {
            Error::runtime(format!(
                "invalid argument #3 to 'find' (number expected, got {})",
                super::args::type_name(value)
            ))
        })?,
    };
    // Negative positions count back from the end, as in Lua.
    let start = if init < 0 {
        (length + init + 1).max(1)
    } else {
        init.max(1)
    };
    if start > length + 1 {
        return Ok(MultiValue::from_iter([Value::Nil]));
    }
    let offset = (start - 1) as usize;
    match memmem::find(&subject_bytes[offset..], &pattern_bytes) {
        Some(found) => {
            let first = (offset + found + 1) as i64;
            let last = first + pattern_bytes.len() as i64 - 1;
            Ok(MultiValue::from_iter([
                Value::Integer(first),
                Value::Integer(last),
            ]))
        }
        None => Ok(MultiValue::from_iter([Value::Nil])),
    }
}

/// `string.split(s, separator)`: separators of two bytes or more are
/// searched here, shorter ones (already linear in Luau) by Luau.
fn split(lua: &Lua, byte_split: &Function, args: MultiValue) -> Result<Table> {
    let subject = coerce(lua, args.front(), "split", 1)?;
    let separator = match args.get(1) {
        None | Some(Value::Nil) => return byte_split.call(args),
        Some(_) => coerce(lua, args.get(1), "split", 2)?,
    };
    let separator_bytes = separator.as_bytes();
    if separator_bytes.len() < 2 {
        return byte_split.call(args);
    }

    let subject_bytes = subject.as_bytes();
    let parts = lua.create_table()?;
    let mut start = 0;
    let mut index = 0;
    // Each piece is a new string, so millions of pieces take a while.
    let mut cpu = super::CpuCheck::new(lua);
    for found in memmem::find_iter(&subject_bytes, &separator_bytes) {
        cpu.step()?;
        index += 1;
        parts.raw_set(index, lua.create_string(&subject_bytes[start..found])?)?;
        start = found + separator_bytes.len();
    }
    parts.raw_set(index + 1, lua.create_string(&subject_bytes[start..])?)?;
    Ok(parts)
}

/// Returns argument `position` as a string, converting a number as Luau
/// does, with Luau's message for any other type.
fn coerce(
    lua: &Lua,
    value: Option<&Value>,
    function: &str,
    position: usize,
) -> Result<mlua::LuaString> {
    let value = value.cloned().unwrap_or(Value::Nil);
    let type_name = super::args::type_name(&value);
    lua.coerce_string(value)?.ok_or_else(|| {
        Error::runtime(format!(
            "invalid argument #{position} to '{function}' (string expected, got {type_name})"
        ))
    })
}

#[cfg(test)]
mod tests {
    use mlua::{LuaOptions, StdLib};

    use super::*;

    fn lua() -> Lua {
        let lua = luau();
        install(&lua).unwrap();
        lua
    }

    /// Creates a VM with Luau's own string functions, to compare against.
    fn luau() -> Lua {
        Lua::new_with(StdLib::ALL_SAFE, LuaOptions::new()).unwrap()
    }

    #[test]
    fn find_matches_luau_on_plain_text() {
        let lua = lua();
        let cases = r#"
            local s = "hello world, hello"
            local function pair(a, b) return tostring(a) .. "," .. tostring(b) end
            return {
                pair(s:find("hello")),
                pair(s:find("hello", 2)),
                pair(s:find("hello", -5)),
                pair(s:find("hello", -100)),
                pair(s:find("", 19)),
                pair(s:find("", 20)),
                pair(s:find("o w", 1, true)),
                pair(s:find("l+", 1, true)),
                pair(s:find("l+")),
                pair(string.find(12345, 34)),
                pair(s:find("absent")),
                pair(s:find("hello", "3")),
            }
        "#;
        let results: Vec<String> = lua.load(cases).eval().unwrap();
        let expected: Vec<String> = luau().load(cases).eval().unwrap();
        assert_eq!(results, expected);
        assert_eq!(
            results,
            [
                "1,5", "14,18", "14,18", "1,5", "19,18", "nil,nil", "5,7", "nil,nil", "3,4", "3,4",
                "nil,nil", "14,18"
            ]
        );
    }

    #[test]
    fn find_rejects_missing_arguments() {
        let lua = lua();
        let error = lua.load("return string.find(nil, 'a')").exec().unwrap_err();
        assert!(
            error
                .to_string()
                .contains("invalid argument #1 to 'find' (string expected, got nil)"),
            "{error}"
        );
        let error = lua
            .load("return string.find('a', 'a', {})")
            .exec()
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("invalid argument #3 to 'find' (number expected, got table)"),
            "{error}"
        );
    }

    #[test]
    fn split_matches_luau() {
        let lua = lua();
        let cases = r##"
            local function joined(t) return table.concat(t, "|") .. "#" .. #t end
            return {
                joined(("a::b::::c"):split("::")),
                joined(("::a::"):split("::")),
                joined((""):split("::")),
                joined(("a,b,,c"):split()),
                joined(("a,b"):split(",")),
                joined(("abc"):split("")),
                joined(("aaaa"):split("aa")),
                joined(("aaa"):split("aa")),
            }
        "##;
        let results: Vec<String> = lua.load(cases).eval().unwrap();
        let expected: Vec<String> = luau().load(cases).eval().unwrap();
        assert_eq!(results, expected);
        assert_eq!(
            results,
            ["a|b||c#4", "|a|#3", "#1", "a|b||c#4", "a|b#2", "a|b|c#3", "||#3", "|a#2"]
        );
    }

    #[test]
    fn worst_case_searches_are_linear() {
        let lua = lua();
        // Each of these compares about 8e12 bytes with a search that checks
        // the whole needle at every position.
        let found: Vec<Value> = lua
            .load(
                r#"
                local haystack = string.rep("a", 4e6)
                local needle = string.rep("a", 2e6) .. "b"
                return {
                    string.find(haystack, needle, 1, true) == nil,
                    haystack:find(needle) == nil,
                    #haystack:split(needle) == 1,
                }
                "#,
            )
            .eval()
            .unwrap();
        assert!(
            found.iter().all(|value| value.as_boolean() == Some(true)),
            "{found:?}"
        );
    }
}

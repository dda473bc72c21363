//! `url`: parsing URLs, percent-encoding, and query strings to and from
//! tables.

use std::collections::BTreeMap;

use mlua::{Error, Lua, Result, Table, Value};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

use super::args;

/// Bytes that `url.encode` leaves as they are: RFC 3986's unreserved set.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Creates the `url` table.
pub fn create(lua: &Lua) -> Result<Table> {
    let table = lua.create_table()?;
    table.raw_set("parse", lua.create_function(parse)?)?;
    table.raw_set(
        "encode",
        lua.create_function(|lua, text: Value| {
            let text = args::string("url.encode", 1, text)?;
            let length = text.as_bytes().len().saturating_mul(3);
            args::check_result_size(lua, "url.encode", length)?;
            lua.create_string(encode(&text.as_bytes()))
        })?,
    )?;
    table.raw_set(
        "decode",
        lua.create_function(|lua, text: Value| {
            let text = args::string("url.decode", 1, text)?;
            lua.create_string(decode("url.decode", &text.as_bytes(), false)?)
        })?,
    )?;
    table.raw_set("parse_query", lua.create_function(parse_query)?)?;
    table.raw_set("build_query", lua.create_function(build_query)?)?;
    table.set_readonly(true);
    Ok(table)
}

/// Percent-encodes every byte outside the unreserved set.
pub fn encode(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, UNRESERVED).to_string()
}

/// Decodes `%XX` escapes, and `+` as a space when `plus_is_space`.
fn decode(function: &str, bytes: &[u8], plus_is_space: bool) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let digits = bytes.get(i + 1..i + 3).and_then(|pair| {
                    let text = std::str::from_utf8(pair).ok()?;
                    u8::from_str_radix(text, 16).ok()
                });
                let Some(byte) = digits else {
                    return Err(Error::runtime(format!(
                        "{function}: invalid escape at offset {i}: `%` must be followed by two \
                         hexadecimal digits; write a literal `%` as %25"
                    )));
                };
                out.push(byte);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Longest URL that `url.parse` and `fetch` accept, in bytes. Parsing runs
/// in one call that the CPU limit cannot stop. A host of many long `xn--`
/// labels costs about 0.13 ms per label (measured), so a 30 MB host ran
/// for 4 s. At this length parsing takes about 10 ms.
pub const MAX_URL_BYTES: usize = 64 * 1024;

/// Raises an error for a URL longer than [`MAX_URL_BYTES`].
pub fn check_length(function: &str, url: &str) -> Result<()> {
    if url.len() > MAX_URL_BYTES {
        return Err(Error::runtime(format!(
            "{function}: the URL is {} bytes, more than {MAX_URL_BYTES}; send long data in \
             the body",
            url.len()
        )));
    }
    Ok(())
}

/// `url.parse(text)`: the parts of an absolute URL.
fn parse(lua: &Lua, text: Value) -> Result<Table> {
    let text = args::string("url.parse", 1, text)?;
    let text = text.to_str().map_err(|_| {
        Error::runtime("url.parse: the URL is not valid UTF-8; percent-encode other bytes")
    })?;
    check_length("url.parse", &text)?;
    let parsed = url::Url::parse(&text).map_err(|e| {
        Error::runtime(format!(
            "url.parse: `{}` is not an absolute URL ({e}); pass a URL such as \
             \"https://example.com/path?q=1\"",
            truncate(&text)
        ))
    })?;
    let table = lua.create_table()?;
    table.raw_set("href", parsed.as_str())?;
    table.raw_set("scheme", parsed.scheme())?;
    if !parsed.username().is_empty() {
        table.raw_set("username", parsed.username())?;
    }
    if let Some(password) = parsed.password() {
        table.raw_set("password", password)?;
    }
    if let Some(host) = parsed.host_str() {
        table.raw_set("host", host)?;
    }
    if let Some(port) = parsed.port_or_known_default() {
        table.raw_set("port", port)?;
    }
    table.raw_set("path", parsed.path())?;
    if let Some(query) = parsed.query() {
        table.raw_set("query", query)?;
    }
    if let Some(fragment) = parsed.fragment() {
        table.raw_set("fragment", fragment)?;
    }
    Ok(table)
}

/// `url.parse_query(text)`: names to values; a repeated name gets a list.
fn parse_query(lua: &Lua, text: Value) -> Result<Table> {
    let text = args::string("url.parse_query", 1, text)?;
    let text = text.as_bytes();
    let text = text.strip_prefix(b"?").unwrap_or(&text);
    let pairs = text.split(|&b| b == b'&').filter(|pair| !pair.is_empty());
    // Each pair takes at least one 16-byte slot in the Lua heap, so a text
    // with more pairs than that can hold fails before any work.
    let count = pairs.clone().count();
    args::check_result_size(lua, "url.parse_query", count.saturating_mul(16))?;
    let mut cpu = super::CpuCheck::new(lua);
    let decoded = pairs.map(|pair| {
        cpu.step()?;
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &[][..]),
        };
        Ok((
            decode("url.parse_query", name, true)?,
            decode("url.parse_query", value, true)?,
        ))
    });
    crate::script::try_multi_value_table(lua, decoded)
}

/// `url.build_query(table)`: a query string with names in sorted order.
fn build_query(lua: &Lua, table: Value) -> Result<String> {
    let memory_limit = lua
        .app_data_ref::<super::MemoryLimit>()
        .map_or(usize::MAX, |limit| limit.0);
    // Counts the bytes read so far, which bounds the encoded result (at
    // most three times as long) by the script's own memory limit.
    let mut total = 0usize;
    let mut count = |length: usize| -> Result<()> {
        total += length + 2;
        if total.saturating_mul(3) > memory_limit {
            return Err(Error::runtime(format!(
                "url.build_query: the query would be larger than the script's memory limit of \
                 {memory_limit} bytes"
            )));
        }
        Ok(())
    };
    let Value::Table(table) = table else {
        return Err(Error::runtime(format!(
            "url.build_query: argument 1 must be a table of names to values, not a {}",
            super::args::type_name(&table)
        )));
    };
    let mut pairs = BTreeMap::new();
    let mut cpu = super::CpuCheck::new(lua);
    for entry in table.pairs::<Value, Value>() {
        cpu.step()?;
        let (name, value) = entry?;
        let name = match name {
            Value::String(name) => {
                count(name.as_bytes().len())?;
                name.as_bytes().to_vec()
            }
            other => {
                return Err(Error::runtime(format!(
                    "url.build_query: names must be strings, found a {} key",
                    super::args::type_name(&other)
                )))
            }
        };
        let mut values = Vec::new();
        let mut add = |item: Value| -> Result<()> {
            cpu.step()?;
            // Counted as written: a number such as 1e308 is 309 digits.
            let value = query_value(&name, item)?;
            count(value.len())?;
            // A repeated name is written once per value.
            count(name.len())?;
            values.push(value);
            Ok(())
        };
        // Items are read one at a time, so a long list stops at a limit
        // without being copied first.
        match value {
            Value::Table(list) => {
                for item in list.sequence_values::<Value>() {
                    add(item?)?;
                }
            }
            value => add(value)?,
        }
        pairs.insert(name, values);
    }
    let mut out = String::new();
    for (name, values) in pairs {
        for value in values {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(&encode(&name));
            out.push('=');
            out.push_str(&encode(&value));
        }
    }
    Ok(out)
}

fn query_value(name: &[u8], value: Value) -> Result<Vec<u8>> {
    match value {
        Value::String(text) => Ok(text.as_bytes().to_vec()),
        Value::Integer(n) => Ok(n.to_string().into_bytes()),
        Value::Number(n) => Ok(crate::script::format_number(n).into_bytes()),
        Value::Boolean(b) => Ok(b.to_string().into_bytes()),
        other => Err(Error::runtime(format!(
            "url.build_query: the value of `{}` is a {}; use a string, number, boolean or a \
             list of them",
            String::from_utf8_lossy(name),
            super::args::type_name(&other)
        ))),
    }
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(200) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

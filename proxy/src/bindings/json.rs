//! `json.stringify`, `json.parse`, `json.null` and `json.array`.
//!
//! Encoding walks Lua values directly into a string, without an
//! intermediate serde value. A table is a JSON array when its keys are
//! exactly `1..n` with `n > 0`, or when it carries the array metatable
//! (`json.array`), which is how an empty array survives a round trip.
//! Object keys are sorted so that equal tables encode to equal text.

use std::ffi::c_void;
use std::fmt::Write as _;

use mlua::{Error, LightUserData, Lua, Result, Table, Value};

/// Registry key of the metatable that marks a table as a JSON array.
const ARRAY_METATABLE: &str = "actias.json.array";
/// Deepest nesting of arrays and objects accepted by `stringify`.
const MAX_DEPTH: usize = 128;

/// Creates the `json` table.
pub fn create(lua: &Lua) -> Result<Table> {
    let array_metatable = lua.create_table()?;
    array_metatable.raw_set("__name", "json.array")?;
    array_metatable.set_readonly(true);
    lua.set_named_registry_value(ARRAY_METATABLE, &array_metatable)?;

    let json = lua.create_table()?;
    json.raw_set(
        "null",
        Value::LightUserData(LightUserData(std::ptr::null_mut())),
    )?;
    json.raw_set(
        "stringify",
        lua.create_function(|lua, value: Value| encode(lua, &value))?,
    )?;
    json.raw_set(
        "parse",
        lua.create_function(|lua, text: mlua::LuaString| decode(lua, &text.as_bytes()))?,
    )?;
    json.raw_set(
        "array",
        lua.create_function(|lua, table: Option<Table>| {
            let table = match table {
                Some(table) => table,
                None => lua.create_table()?,
            };
            let array_metatable: Table = lua.named_registry_value(ARRAY_METATABLE)?;
            table.set_metatable(Some(array_metatable))?;
            Ok(table)
        })?,
    )?;
    Ok(json)
}

/// Encodes a Lua value as JSON text, as `json.stringify` does.
pub fn encode(lua: &Lua, value: &Value) -> Result<String> {
    let array_metatable: Table = lua.named_registry_value(ARRAY_METATABLE)?;
    let mut encoder = Encoder {
        max_bytes: max_output(lua),
        out: String::new(),
        seen: Vec::new(),
        array_metatable,
        cpu: super::CpuCheck::new(lua),
    };
    encoder.encode(value)?;
    Ok(encoder.out)
}

/// Decodes JSON text into a Lua value, as `json.parse` does.
pub fn decode(lua: &Lua, text: &[u8]) -> Result<Value> {
    // The parse tree is built outside the Lua heap at several times the
    // size of the text, so the text may use an eighth of the VM's memory.
    let max_text = max_output(lua) / 8;
    if text.len() > max_text {
        return Err(Error::runtime(format!(
            "json.parse: the text is {} bytes; at most {max_text} bytes (an eighth of the \
             script's memory limit) can be parsed",
            text.len()
        )));
    }
    let parsed: serde_json::Value = serde_json::from_slice(text)
        .map_err(|e| Error::runtime(format!("json.parse: invalid JSON: {e}")))?;
    let array_metatable: Table = lua.named_registry_value(ARRAY_METATABLE)?;
    to_lua(
        lua,
        &parsed,
        &array_metatable,
        &mut super::CpuCheck::new(lua),
    )
}

struct Encoder {
    /// Largest output, in bytes: the VM's memory limit, since the output
    /// is built outside the Lua heap.
    max_bytes: usize,
    out: String,
    /// Tables on the path from the root, to detect cycles.
    seen: Vec<*const c_void>,
    array_metatable: Table,
    cpu: super::CpuCheck,
}

impl Encoder {
    fn encode(&mut self, value: &Value) -> Result<()> {
        self.cpu.step()?;
        match value {
            Value::Nil => self.out.push_str("null"),
            Value::LightUserData(ud) if ud.0.is_null() => self.out.push_str("null"),
            Value::Boolean(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Value::Integer(i) => {
                let _ = write!(self.out, "{i}");
            }
            Value::Number(n) => self.number(*n)?,
            Value::String(s) => self.string(&s.as_bytes())?,
            Value::Table(table) => self.table(table)?,
            other => {
                return Err(Error::runtime(format!(
                    "json.stringify: cannot encode a value of type {}",
                    other.type_name()
                )))
            }
        }
        Ok(())
    }

    fn number(&mut self, n: f64) -> Result<()> {
        if !n.is_finite() {
            return Err(Error::runtime(format!(
                "json.stringify: cannot encode the number {n}; JSON has no NaN or infinity"
            )));
        }
        // Integral values print without a fraction, as JavaScript does.
        if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
            let _ = write!(self.out, "{}", n as i64);
        } else {
            let _ = write!(
                self.out,
                "{}",
                serde_json::Number::from_f64(n).unwrap_or(0.into())
            );
        }
        Ok(())
    }

    fn string(&mut self, bytes: &[u8]) -> Result<()> {
        let text = std::str::from_utf8(bytes).map_err(|_| {
            Error::runtime(
                "json.stringify: a string is not valid UTF-8; encode binary data with base64 first",
            )
        })?;
        if self.out.len() + text.len() > self.max_bytes {
            return Err(Error::runtime(format!(
                "json.stringify: the result would exceed {} bytes, the script's memory limit",
                self.max_bytes
            )));
        }
        self.out.reserve(text.len() + 2);
        self.out.push('"');
        for c in text.chars() {
            match c {
                '"' => self.out.push_str("\\\""),
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '\r' => self.out.push_str("\\r"),
                '\t' => self.out.push_str("\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(self.out, "\\u{:04x}", c as u32);
                }
                c => self.out.push(c),
            }
        }
        self.out.push('"');
        Ok(())
    }

    fn table(&mut self, table: &Table) -> Result<()> {
        let pointer = table.to_pointer();
        if self.seen.contains(&pointer) {
            return Err(Error::runtime(
                "json.stringify: a table contains itself; JSON cannot encode cycles",
            ));
        }
        if self.seen.len() >= MAX_DEPTH {
            return Err(Error::runtime(format!(
                "json.stringify: tables are nested deeper than {MAX_DEPTH} levels"
            )));
        }
        self.seen.push(pointer);
        let result = if self.is_array(table)? {
            self.array(table)
        } else {
            self.object(table)
        };
        self.seen.pop();
        result
    }

    fn is_array(&self, table: &Table) -> Result<bool> {
        if let Some(metatable) = table.metatable() {
            if metatable == self.array_metatable {
                let length = table.raw_len();
                let count = table.pairs::<Value, Value>().count();
                if count != length {
                    return Err(Error::runtime(
                        "json.stringify: a json.array has keys other than 1..n; remove them or \
                         use a plain table for an object",
                    ));
                }
                return Ok(true);
            }
        }
        let length = table.raw_len();
        if length == 0 {
            return Ok(false);
        }
        let mut count = 0usize;
        for pair in table.pairs::<Value, Value>() {
            let (key, _) = pair?;
            let index = match key {
                Value::Integer(i) => i as f64,
                Value::Number(n) => n,
                _ => return Ok(false),
            };
            if index.fract() != 0.0 || index < 1.0 || index > length as f64 {
                return Ok(false);
            }
            count += 1;
        }
        Ok(count == length)
    }

    fn array(&mut self, table: &Table) -> Result<()> {
        self.out.push('[');
        for index in 1..=table.raw_len() {
            if index > 1 {
                self.out.push(',');
            }
            let value: Value = table.raw_get(index)?;
            self.encode(&value)?;
        }
        self.out.push(']');
        Ok(())
    }

    fn object(&mut self, table: &Table) -> Result<()> {
        let mut entries: Vec<(Vec<u8>, Value)> = Vec::new();
        for pair in table.pairs::<Value, Value>() {
            let (key, value) = pair?;
            let key = match key {
                Value::String(s) => s.as_bytes().to_vec(),
                Value::Integer(i) => i.to_string().into_bytes(),
                Value::Number(n) if n.is_finite() => {
                    let mut text = Encoder {
                        max_bytes: self.max_bytes,
                        out: String::new(),
                        seen: Vec::new(),
                        array_metatable: self.array_metatable.clone(),
                        cpu: super::CpuCheck::default(),
                    };
                    text.number(n)?;
                    text.out.into_bytes()
                }
                other => {
                    return Err(Error::runtime(format!(
                        "json.stringify: cannot use a {} as an object key; use strings or numbers",
                        other.type_name()
                    )))
                }
            };
            entries.push((key, value));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(pair) = entries.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(Error::runtime(format!(
                "json.stringify: the key \"{}\" appears twice, once as a number and once as a \
                 string",
                String::from_utf8_lossy(&pair[0].0)
            )));
        }

        self.out.push('{');
        for (index, (key, value)) in entries.iter().enumerate() {
            if index > 0 {
                self.out.push(',');
            }
            self.string(key)?;
            self.out.push(':');
            self.encode(value)?;
        }
        self.out.push('}');
        Ok(())
    }
}

fn max_output(lua: &Lua) -> usize {
    lua.app_data_ref::<super::MemoryLimit>()
        .map_or(64 * 1024 * 1024, |limit| limit.0)
}

fn to_lua(
    lua: &Lua,
    value: &serde_json::Value,
    array_metatable: &Table,
    cpu: &mut super::CpuCheck,
) -> Result<Value> {
    cpu.step()?;
    Ok(match value {
        serde_json::Value::Null => Value::LightUserData(LightUserData(std::ptr::null_mut())),
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) if i.unsigned_abs() < (1 << 53) => Value::Number(i as f64),
            _ => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::String(lua.create_string(s)?),
        serde_json::Value::Array(items) => {
            let table = lua.create_table_with_capacity(items.len(), 0)?;
            for (index, item) in items.iter().enumerate() {
                table.raw_set(index + 1, to_lua(lua, item, array_metatable, cpu)?)?;
            }
            table.set_metatable(Some(array_metatable.clone()))?;
            Value::Table(table)
        }
        serde_json::Value::Object(fields) => {
            let table = lua.create_table_with_capacity(0, fields.len())?;
            for (key, item) in fields {
                table.raw_set(key.as_str(), to_lua(lua, item, array_metatable, cpu)?)?;
            }
            Value::Table(table)
        }
    })
}

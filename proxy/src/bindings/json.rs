//! `json.stringify`, `json.parse`, `json.null` and `json.array`.
//!
//! Encoding walks Lua values directly into a string, without an
//! intermediate serde value. A table is a JSON array when its keys are
//! exactly `1..n` with `n > 0`, or when it carries the array metatable
//! (`json.array`), which is how an empty array survives a round trip.
//! Object keys are sorted so that equal tables encode to equal text.

use std::ffi::c_void;
use std::fmt::Write as _;

use std::cell::RefCell;

use mlua::{Error, LightUserData, Lua, Result, Table, Value};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

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

/// Decodes JSON text into a Lua value, as `json.parse` does. Values are
/// built in the Lua heap as the parser reads them, so the VM's memory and
/// CPU limits apply while it runs.
pub fn decode(lua: &Lua, text: &[u8]) -> Result<Value> {
    let array_metatable: Table = lua.named_registry_value(ARRAY_METATABLE)?;
    let builder = Builder {
        lua,
        array_metatable: &array_metatable,
        cpu: RefCell::new(super::CpuCheck::new(lua)),
        stopped: RefCell::new(None),
    };
    let mut parser = serde_json::Deserializer::from_slice(text);
    let parsed = BuildValue(&builder)
        .deserialize(&mut parser)
        .and_then(|value| parser.end().map(|()| value));
    match parsed {
        Ok(value) => Ok(value),
        // A Lua error (a limit, memory) stopped the parser; raise it as is.
        Err(_) if builder.stopped.borrow().is_some() => {
            Err(builder.stopped.take().expect("checked above"))
        }
        Err(e) => Err(Error::runtime(format!("json.parse: invalid JSON: {e}"))),
    }
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
                    crate::bindings::args::type_name(other)
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
        self.fits(text.len() + 2)?;
        self.out.reserve(text.len() + 2);
        self.out.push('"');
        // Escaped characters are ASCII, so runs between them end on
        // character boundaries.
        let mut run_start = 0;
        for (index, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.out.push_str(&text[run_start..index]);
            run_start = index + 1;
            if escape.is_empty() {
                let _ = write!(self.out, "\\u{byte:04x}");
            } else {
                self.out.push_str(escape);
            }
            // An escape is up to six bytes, so the output can outgrow the
            // length checked above.
            self.cpu.step()?;
            self.fits(0)?;
        }
        self.out.push_str(&text[run_start..]);
        self.out.push('"');
        Ok(())
    }

    /// Raises an error when `more` bytes would take the output past the
    /// script's memory limit.
    fn fits(&self, more: usize) -> Result<()> {
        if self.out.len() + more > self.max_bytes {
            return Err(Error::runtime(format!(
                "json.stringify: the result would exceed {} bytes, the script's memory limit",
                self.max_bytes
            )));
        }
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

    fn is_array(&mut self, table: &Table) -> Result<bool> {
        if let Some(metatable) = table.metatable() {
            if metatable == self.array_metatable {
                let length = table.raw_len();
                let mut count = 0usize;
                for pair in table.pairs::<Value, Value>() {
                    pair?;
                    self.cpu.step()?;
                    count += 1;
                }
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
            self.cpu.step()?;
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
        // Every key is written with its quotes, colon and comma, so keys
        // that cannot fit in the output stop the collection early.
        let mut key_bytes = 0usize;
        for pair in table.pairs::<Value, Value>() {
            let (key, value) = pair?;
            self.cpu.step()?;
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
                        crate::bindings::args::type_name(&other)
                    )))
                }
            };
            key_bytes += key.len() + 4;
            self.fits(key_bytes)?;
            entries.push((key, value));
        }
        let entries = sort_keys(entries, &mut self.cpu)?;
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

/// Sorts object entries by key. Runs of 4096 are sorted whole and then
/// merged with a CPU check per entry, since one sort of a million keys
/// would run far past `cpu_ms` without a check. The merge is stable, so
/// equal keys stay next to each other for the duplicate check.
fn sort_keys(
    mut entries: Vec<(Vec<u8>, Value)>,
    cpu: &mut super::CpuCheck,
) -> Result<Vec<(Vec<u8>, Value)>> {
    const RUN: usize = 4096;
    for run in entries.chunks_mut(RUN) {
        for _ in 0..run.len() {
            cpu.step()?;
        }
        run.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let mut width = RUN;
    while width < entries.len() {
        let mut merged = Vec::with_capacity(entries.len());
        let mut items = entries.into_iter();
        loop {
            let left: Vec<_> = items.by_ref().take(width).collect();
            if left.is_empty() {
                break;
            }
            let right: Vec<_> = items.by_ref().take(width).collect();
            let mut left = left.into_iter().peekable();
            let mut right = right.into_iter().peekable();
            loop {
                cpu.step()?;
                let from_left = match (left.peek(), right.peek()) {
                    (Some(a), Some(b)) => a.0 <= b.0,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (None, None) => break,
                };
                merged.extend(if from_left { left.next() } else { right.next() });
            }
        }
        entries = merged;
        width *= 2;
    }
    Ok(entries)
}

fn max_output(lua: &Lua) -> usize {
    lua.app_data_ref::<super::MemoryLimit>()
        .map_or(64 * 1024 * 1024, |limit| limit.0)
}

/// State shared by the values of one `json.parse` call.
struct Builder<'a> {
    lua: &'a Lua,
    array_metatable: &'a Table,
    cpu: RefCell<super::CpuCheck>,
    /// The Lua error that stopped the parse, which serde can only carry as
    /// text.
    stopped: RefCell<Option<Error>>,
}

impl Builder<'_> {
    /// Converts a Lua result for the parser, keeping the Lua error aside.
    fn lua<T, E: serde::de::Error>(&self, result: Result<T>) -> std::result::Result<T, E> {
        result.map_err(|error| {
            let message = error.to_string();
            *self.stopped.borrow_mut() = Some(error);
            E::custom(message)
        })
    }

    fn step<E: serde::de::Error>(&self) -> std::result::Result<(), E> {
        let checked = self.cpu.borrow_mut().step();
        self.lua(checked)
    }
}

/// Builds one JSON value as a Lua value.
struct BuildValue<'b, 'a>(&'b Builder<'a>);

impl<'de> DeserializeSeed<'de> for BuildValue<'_, '_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, parser: D) -> std::result::Result<Value, D::Error> {
        parser.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BuildValue<'_, '_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Value, E> {
        Ok(Value::LightUserData(LightUserData(std::ptr::null_mut())))
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> std::result::Result<Value, E> {
        Ok(Value::Boolean(b))
    }

    fn visit_i64<E: serde::de::Error>(self, i: i64) -> std::result::Result<Value, E> {
        Ok(Value::Number(i as f64))
    }

    fn visit_u64<E: serde::de::Error>(self, u: u64) -> std::result::Result<Value, E> {
        Ok(Value::Number(u as f64))
    }

    fn visit_f64<E: serde::de::Error>(self, f: f64) -> std::result::Result<Value, E> {
        Ok(Value::Number(f))
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> std::result::Result<Value, E> {
        let string = self.0.lua.create_string(text);
        self.0.lua(string).map(Value::String)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> std::result::Result<Value, A::Error> {
        let builder = self.0;
        let table = builder.lua(builder.lua.create_table())?;
        let mut index = 0;
        while let Some(item) = items.next_element_seed(BuildValue(builder))? {
            builder.step()?;
            index += 1;
            builder.lua(table.raw_set(index, item))?;
        }
        builder.lua(table.set_metatable(Some(builder.array_metatable.clone())))?;
        Ok(Value::Table(table))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut fields: A) -> std::result::Result<Value, A::Error> {
        let builder = self.0;
        let table = builder.lua(builder.lua.create_table())?;
        while let Some(key) = fields.next_key_seed(BuildValue(builder))? {
            let value = fields.next_value_seed(BuildValue(builder))?;
            builder.step()?;
            builder.lua(table.raw_set(key, value))?;
        }
        Ok(Value::Table(table))
    }
}

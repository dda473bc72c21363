//! The `request` table passed to a fetch handler, and the edits read back
//! from it when the handler falls through to the origin.

use std::collections::HashMap;

use bytes::Bytes;
use http::HeaderMap;
use mlua::{Error, Lua, Result, Table, Value};

use crate::routing::encode_path;

/// Request data passed to a handler.
pub struct RequestInput<'a> {
    /// Id of this request in logs and error responses.
    pub request_id: &'a str,
    pub method: &'a str,
    /// Full URL: scheme, host, raw path and query.
    pub url: String,
    /// Decoded, dot-segment-normalised path.
    pub path: String,
    /// Path as the client sent it.
    pub raw_path: &'a str,
    /// Query string without the `?`, as the client sent it.
    pub raw_query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: Option<Bytes>,
    pub params: &'a HashMap<String, String>,
    pub host: &'a str,
    pub client_ip: String,
    pub route: &'a str,
}

/// Changes a handler made to the request before falling through.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RequestEdits {
    /// New path, already percent-encoded for the request line.
    pub path: Option<String>,
    /// New query string, without the `?`; empty removes the query.
    pub query: Option<String>,
    /// Headers to set, replacing every value of that name.
    pub set_headers: Vec<(String, Vec<Vec<u8>>)>,
    /// Header names to remove.
    pub remove_headers: Vec<String>,
}

impl RequestEdits {
    /// Returns true when the handler changed nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Builds the request table. `headers_metatable` makes header lookup
/// case-insensitive.
pub fn build(lua: &Lua, input: &RequestInput<'_>, headers_metatable: &Table) -> Result<Table> {
    let request = lua.create_table_with_capacity(0, 12)?;
    request.raw_set("method", input.method)?;
    request.raw_set("url", input.url.as_str())?;
    request.raw_set("path", input.path.as_str())?;
    request.raw_set("raw_path", input.raw_path)?;
    request.raw_set("host", input.host)?;
    request.raw_set("client_ip", input.client_ip.as_str())?;
    request.raw_set("route", input.route)?;
    // `nil` when the body was left unread for the origin.
    if let Some(body) = &input.body {
        request.raw_set("body", lua.create_string(body)?)?;
    }

    let query = multi_value_table(lua, parse_query(input.raw_query))?;
    request.raw_set("query", query)?;

    let headers = multi_value_table(
        lua,
        input
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec())),
    )?;
    headers.set_metatable(Some(headers_metatable.clone()))?;
    request.raw_set("headers", headers)?;

    let params = lua.create_table_with_capacity(0, input.params.len())?;
    for (name, value) in input.params {
        params.raw_set(name.as_str(), value.as_str())?;
    }
    request.raw_set("params", params)?;
    Ok(request)
}

/// Reads back the path, query and headers of `request` and returns what
/// differs from `input`.
pub fn edits(request: &Table, input: &RequestInput<'_>) -> Result<RequestEdits> {
    let (path, query) = target_edits(request, &input.path, input.raw_query)?;
    let mut edits = RequestEdits {
        path,
        query,
        ..RequestEdits::default()
    };

    let arrived: usize = input
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let headers = read_multi_value(request, "headers", arrived + MAX_ADDED_BYTES)?;
    let mut wanted: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    // The table's metatable stores names lowercase; `rawset` can still add a
    // second spelling, which would otherwise add lines instead of replacing.
    let mut spellings: HashMap<String, String> = HashMap::new();
    for (spelled, value) in headers {
        let name = spelled.to_ascii_lowercase();
        let first = spellings
            .entry(name.clone())
            .or_insert_with(|| spelled.clone());
        if *first != spelled {
            return Err(Error::runtime(format!(
                "request.headers has both `{first}` and `{spelled}`; header names are \
                 case-insensitive, so assign through request.headers[\"{name}\"] instead of \
                 rawset, which keeps one entry per name"
            )));
        }
        // The proxy's own subrequest headers go on as they arrived, so a
        // script cannot hide a subrequest loop by forwarding without them.
        if is_subrequest_header(&name) {
            continue;
        }
        wanted.entry(name).or_default().push(value);
    }
    for name in input.headers.keys() {
        if is_subrequest_header(name.as_str()) {
            continue;
        }
        if !wanted.contains_key(name.as_str()) {
            check_framing(name.as_str())?;
            edits.remove_headers.push(name.as_str().to_string());
        }
    }
    let mut names: Vec<_> = wanted.keys().cloned().collect();
    names.sort();
    for name in names {
        let values = wanted.remove(&name).unwrap_or_default();
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(Error::runtime(format!(
                "request.headers has an invalid header name `{name}`"
            )));
        }
        if values
            .iter()
            .any(|value| http::HeaderValue::from_bytes(value).is_err())
        {
            return Err(Error::runtime(format!(
                "request.headers[\"{name}\"] has an invalid value; values may not contain line \
                 breaks or other control characters"
            )));
        }
        let current: Vec<&[u8]> = input
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        if current != values.iter().map(Vec::as_slice).collect::<Vec<_>>() {
            check_framing(&name)?;
            edits.set_headers.push((name, values));
        }
    }
    Ok(edits)
}

/// Returns the path (percent-encoded) and the query string of `request`
/// where they differ from `path` and `raw_query`, the request as it
/// arrived.
pub fn target_edits(
    request: &Table,
    path: &str,
    raw_query: Option<&str>,
) -> Result<(Option<String>, Option<String>)> {
    let edited_path = match request.raw_get::<Value>("path")? {
        Value::String(edited) => {
            let edited = edited.to_str()?.to_string();
            if edited == path {
                None
            } else if !edited.starts_with('/') {
                return Err(Error::runtime(format!(
                    "request.path `{}` must start with `/`",
                    crate::bindings::args::shown(&edited)
                )));
            } else if edited.len() > path.len() + MAX_ADDED_BYTES {
                return Err(Error::runtime(format!(
                    "request.path is {} bytes, more than {} (the path that arrived plus \
                     {MAX_ADDED_BYTES}); forward a shorter path",
                    edited.len(),
                    path.len() + MAX_ADDED_BYTES
                )));
            } else {
                Some(encode_path(&edited))
            }
        }
        other => {
            return Err(Error::runtime(format!(
                "request.path must be a string, not a {}",
                crate::bindings::args::type_name(&other)
            )))
        }
    };

    let arrived = raw_query.map_or(0, str::len);
    let query = read_multi_value(request, "query", arrived + MAX_ADDED_BYTES)?;
    let mut original: Vec<(String, Vec<u8>)> = parse_query(raw_query)
        .map(|(k, v)| (k, v.to_vec()))
        .collect();
    original.sort_by(|a, b| a.0.cmp(&b.0));
    let edited_query = (query != original).then(|| {
        let mut serializer = form_urlencoded::Serializer::new(String::new());
        for (name, value) in &query {
            serializer.append_pair(name, &String::from_utf8_lossy(value));
        }
        serializer.finish()
    });
    Ok((edited_path, edited_query))
}

/// Bytes that a script may add to the headers, the path or the query of
/// the request it forwards, beyond the size each had when it arrived.
/// The edits are read in Rust after the handler returns, where the CPU and
/// memory limits do not apply, so reading stops at this size.
const MAX_ADDED_BYTES: usize = 64 * 1024;

/// Headers that frame the body the proxy forwards; a script changing them
/// could make the origin read a second request from the body.
const FRAMING_HEADERS: [&str; 4] = ["content-length", "transfer-encoding", "connection", "te"];

/// Returns true for the headers that mark a subrequest: `actias-subrequest-*`.
fn is_subrequest_header(name: &str) -> bool {
    name.starts_with("actias-subrequest-")
}

fn check_framing(name: &str) -> Result<()> {
    if FRAMING_HEADERS.contains(&name) {
        return Err(Error::runtime(format!(
            "request.headers[\"{name}\"] frames the forwarded body and cannot be changed by a script"
        )));
    }
    Ok(())
}

fn parse_query(raw: Option<&str>) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned().into_bytes()))
}

/// Creates a table where a name seen once maps to a string and a name seen
/// several times maps to a list of strings, in order.
pub fn multi_value_table<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    lua: &Lua,
    pairs: impl Iterator<Item = (N, V)>,
) -> Result<Table> {
    try_multi_value_table(lua, pairs.map(Ok))
}

/// Does what [`multi_value_table`] does with pairs that may fail, stopping
/// at the first error.
pub fn try_multi_value_table<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    lua: &Lua,
    pairs: impl Iterator<Item = Result<(N, V)>>,
) -> Result<Table> {
    let table = lua.create_table()?;
    for pair in pairs {
        let (name, value) = pair?;
        let name = lua.create_string(name.as_ref())?;
        let value = lua.create_string(value.as_ref())?;
        match table.raw_get::<Value>(&name)? {
            Value::Nil => table.raw_set(name, value)?,
            Value::Table(list) => list.raw_push(value)?,
            first => {
                let list = lua.create_sequence_from([first, Value::String(value)])?;
                table.raw_set(name, list)?;
            }
        }
    }
    Ok(table)
}

/// Reads a table of name to string, number or list of those, as sorted
/// name and value pairs. Stops with an error once the names and values,
/// with 4 bytes for each pair's separators, pass `budget` bytes.
fn read_multi_value(request: &Table, field: &str, budget: usize) -> Result<Vec<(String, Vec<u8>)>> {
    let table = match request.raw_get::<Value>(field)? {
        Value::Table(table) => table,
        Value::Nil => return Ok(Vec::new()),
        other => {
            return Err(Error::runtime(format!(
                "request.{field} must be a table, not a {}",
                crate::bindings::args::type_name(&other)
            )))
        }
    };
    let mut pairs = Vec::new();
    let total = std::cell::Cell::new(0usize);
    let charge = |bytes: usize| {
        total.set(total.get() + bytes);
        if total.get() > budget {
            return Err(Error::runtime(format!(
                "request.{field} exceed {budget} bytes (what arrived plus {MAX_ADDED_BYTES}); \
                 forward fewer or shorter values"
            )));
        }
        Ok(())
    };
    let add = |pairs: &mut Vec<(String, Vec<u8>)>, name: &str, value: Vec<u8>| {
        charge(name.len() + value.len() + 4)?;
        pairs.push((name.to_string(), value));
        Ok::<(), Error>(())
    };
    for pair in table.pairs::<Value, Value>() {
        let (name, value) = pair?;
        let Value::String(name) = name else {
            return Err(Error::runtime(format!(
                "request.{field} has a key of type {}; keys must be strings",
                crate::bindings::args::type_name(&name)
            )));
        };
        let name = name.to_str()?.to_string();
        match value {
            Value::Table(list) => {
                let before = pairs.len();
                for item in list.sequence_values::<Value>() {
                    add(&mut pairs, &name, scalar_bytes(field, &name, item?)?)?;
                }
                // An empty list removes the name; it is counted like an
                // empty value, so that many such names still end the read.
                if pairs.len() == before {
                    charge(name.len() + 4)?;
                }
            }
            other => add(&mut pairs, &name, scalar_bytes(field, &name, other)?)?,
        }
    }
    // Stable sort by name, so repeated values keep their list order.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(pairs)
}

/// Converts a header or query value to bytes.
pub fn scalar_bytes(field: &str, name: &str, value: Value) -> Result<Vec<u8>> {
    match value {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Integer(i) => Ok(i.to_string().into_bytes()),
        Value::Number(n) => Ok(format_number(n).into_bytes()),
        Value::Boolean(b) => Ok(b.to_string().into_bytes()),
        other => Err(Error::runtime(format!(
            "{field}[\"{name}\"] is a {}; use a string, a number or a list of strings",
            crate::bindings::args::type_name(&other)
        ))),
    }
}

/// Formats a Lua number as text: integral values without a fraction.
pub fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 {
        (n as i64).to_string()
    } else {
        n.to_string()
    }
}

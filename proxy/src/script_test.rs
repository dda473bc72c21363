//! `actias test`: Lua test files for scripts, run through the same runtime
//! that serves traffic.
//!
//! A test file (`*_test.lua`) loads a script with `test.load`, which gives
//! it a key-value store seeded from a table and an origin played by a Lua
//! function. It then calls the handler with request tables and checks the
//! responses with `test.equal`. Each `test.case` passes or fails on its
//! own; a failure names the test file and line, the expected and the
//! actual value.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use mlua::{Function, Lua, LuaOptions, StdLib, Table, Value};

use crate::bindings;
use crate::config::FetchSection;
use crate::fetch::{FetchError, FetchFixture, FetchRequest, FetchResponse, Fetcher};
use crate::kv::{EmbeddedStore, Entry, KvStore};
use crate::routing::NormalizedPath;
use crate::script::{compile, Outcome, RequestEdits, RequestInput, RouteScript, VmSettings};

/// CPU time a handler gets per call in tests.
const CPU_LIMIT: Duration = Duration::from_secs(1);
/// Memory a script VM gets in tests.
const MEMORY_LIMIT: usize = 64 * 1024 * 1024;

/// Lua helpers of the test API. `equal` raises at its caller's line.
const PRELUDE: &str = r#"
local results = ...
local function show(value)
    -- `%q` writes a line break as a backslash and a real line break, which
    -- would cut the failure message at the first line.
    if type(value) == "string" then return (string.format("%q", value):gsub("\\\n", "\\n")) end
    if type(value) == "table" then
        local ok, text = pcall(json.stringify, value)
        if ok then return text end
    end
    return tostring(value)
end
local function same(a, b)
    if type(a) ~= "table" or type(b) ~= "table" then return a == b end
    for k, v in pairs(a) do if not same(v, b[k]) then return false end end
    for k in pairs(b) do if a[k] == nil then return false end end
    return true
end
test.equal = function(actual, expected, message)
    if not same(actual, expected) then
        local prefix = message and (message .. ": ") or ""
        error(prefix .. "expected " .. show(expected) .. ", got " .. show(actual), 2)
    end
end
test.case = function(name, body)
    local ok, err = pcall(body)
    table.insert(results, {name = name, ok = ok, message = ok and "" or tostring(err)})
end
"#;

/// The outcome of one test file.
pub struct FileReport {
    pub path: PathBuf,
    /// `(case name, failure message)`; no message means it passed.
    pub cases: Vec<(String, Option<String>)>,
    /// The file could not run at all.
    pub error: Option<String>,
}

/// Finds `*_test.lua` files under `root` (or `root` itself) and runs them.
pub async fn run_path(root: &Path) -> Vec<FileReport> {
    let mut files = Vec::new();
    collect(root, &mut files);
    files.sort();
    let mut reports = Vec::new();
    for file in files {
        reports.push(run_file(&file).await);
    }
    reports
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) {
    if !path.exists() {
        return;
    }
    if path.is_file() {
        files.push(path.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    for entry in entries.flatten() {
        let entry_path = entry.path();
        if entry_path.is_dir() {
            collect(&entry_path, files);
        } else if entry_path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with("_test.lua"))
        {
            files.push(entry_path);
        }
    }
}

async fn run_file(path: &Path) -> FileReport {
    let mut report = FileReport {
        path: path.to_path_buf(),
        cases: Vec::new(),
        error: None,
    };
    match execute(path).await {
        Ok(cases) => report.cases = cases,
        Err(e) => report.error = Some(e),
    }
    report
}

async fn execute(path: &Path) -> Result<Vec<(String, Option<String>)>, String> {
    let source = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let lua = Lua::new_with(StdLib::ALL_SAFE, LuaOptions::default()).map_err(|e| e.to_string())?;
    let setup = |e: mlua::Error| e.to_string();
    bindings::install(&lua).map_err(setup)?;
    let test = lua.create_table().map_err(setup)?;
    let stores: Arc<Mutex<Vec<tempfile::TempDir>>> = Arc::default();
    let load = {
        let stores = stores.clone();
        lua.create_async_function(move |lua, (script, options): (String, Option<Table>)| {
            let base = base.clone();
            let stores = stores.clone();
            async move { load_script(&lua, &base, &script, options, &stores).await }
        })
        .map_err(setup)?
    };
    test.raw_set("load", load).map_err(setup)?;
    lua.globals().raw_set("test", test).map_err(setup)?;
    let results = lua.create_table().map_err(setup)?;
    lua.load(PRELUDE)
        .set_name("=actias/test")
        .call::<()>(&results)
        .map_err(setup)?;

    let chunk = lua
        .load(&source)
        .set_name(format!("@{}", path.display()))
        .into_function()
        .map_err(|e| e.to_string())?;
    chunk
        .call_async::<()>(())
        .await
        .map_err(|e| first_line(&e.to_string()))?;

    let mut cases = Vec::new();
    for item in results.sequence_values::<Table>() {
        let item = item.map_err(setup)?;
        let name: String = item.get("name").map_err(setup)?;
        let ok: bool = item.get("ok").map_err(setup)?;
        let message: String = item.get("message").map_err(setup)?;
        cases.push((name, (!ok).then(|| first_line(&message))));
    }
    Ok(cases)
}

fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message);
    line.strip_prefix("runtime error: ")
        .unwrap_or(line)
        .to_string()
}

/// `test.load(script, {kv = {ns = {key = value}}, origin = function(request) ... end})`.
async fn load_script(
    lua: &Lua,
    base: &Path,
    script: &str,
    options: Option<Table>,
    stores: &Arc<Mutex<Vec<tempfile::TempDir>>>,
) -> mlua::Result<Function> {
    let path = base.join(script);
    let source = std::fs::read(&path).map_err(|e| {
        mlua::Error::runtime(format!("test.load: cannot read {}: {e}", path.display()))
    })?;
    let bytecode = compile(&source).map_err(|e| {
        mlua::Error::runtime(format!(
            "test.load: {}:{}: syntax error: {}",
            path.display(),
            e.line.unwrap_or(0),
            e.message
        ))
    })?;

    if let Some(options) = &options {
        for pair in options.pairs::<Value, Value>() {
            let (key, _) = pair?;
            let known = matches!(&key, Value::String(k)
                if ["kv", "origin", "fetch", "env", "secrets"].iter().any(|name| k == *name));
            if !known {
                return Err(mlua::Error::runtime(format!(
                    "test.load: unknown option {}; the options are kv, origin, fetch, env and \
                     secrets",
                    key.to_string()
                        .unwrap_or_else(|_| key.type_name().to_string())
                )));
            }
        }
    }
    let kv_seed: Option<Table> = match &options {
        Some(options) => options.get("kv")?,
        None => None,
    };
    let origin: Option<Function> = match &options {
        Some(options) => options.get("origin")?,
        None => None,
    };
    let fetcher = match options
        .as_ref()
        .map(|o| o.get::<Value>("fetch"))
        .transpose()?
    {
        None | Some(Value::Nil) => None,
        Some(Value::Function(function)) => Some(Arc::new(
            Fetcher::new("test", &[], &FetchSection::default(), None)
                .with_fixture(fetch_fixture(lua.clone(), function)),
        )),
        Some(other) => {
            return Err(mlua::Error::runtime(format!(
                "test.load: the fetch option must be a function that takes a request table and \
                 returns a response table, not a {}",
                crate::bindings::args::type_name(&other)
            )))
        }
    };
    let mut namespaces = Vec::new();
    let store: Option<Arc<dyn KvStore>> = match kv_seed {
        None => None,
        Some(seed) => {
            let dir = tempfile::TempDir::new()
                .map_err(|e| mlua::Error::runtime(format!("test.load: {e}")))?;
            let store = EmbeddedStore::open(&dir.path().join("kv.redb"), Duration::from_secs(3600))
                .map_err(|e| mlua::Error::runtime(format!("test.load: {e}")))?;
            let store: Arc<dyn KvStore> = Arc::new(store);
            let mut records = Vec::new();
            for pair in seed.pairs::<String, Table>() {
                let (namespace, keys) = pair?;
                for entry in keys.pairs::<mlua::LuaString, mlua::LuaString>() {
                    let (key, value) = entry?;
                    records.push((
                        namespace.clone(),
                        key.as_bytes().to_vec(),
                        Bytes::copy_from_slice(&value.as_bytes()),
                    ));
                }
                namespaces.push(namespace);
            }
            for (namespace, key, value) in records {
                let entry = Entry {
                    value,
                    metadata: None,
                    expires_at_ms: None,
                };
                store
                    .put(&namespace, &key, entry)
                    .await
                    .map_err(|e| mlua::Error::runtime(format!("test.load: seeding: {e}")))?;
            }
            stores.lock().unwrap_or_else(|p| p.into_inner()).push(dir);
            Some(store)
        }
    };

    let mut env = bindings::RouteEnv::default();
    for (field, list) in [("env", &mut env.variables), ("secrets", &mut env.secrets)] {
        let table: Option<Table> = match &options {
            Some(options) => options.get(field)?,
            None => None,
        };
        if let Some(table) = table {
            for pair in table.pairs::<String, String>() {
                list.push(pair?);
            }
        }
    }
    let settings = VmSettings {
        route: "test".to_string(),
        chunk_name: script.to_string(),
        memory_limit: MEMORY_LIMIT,
        kv_store: store,
        kv_namespaces: namespaces,
        kv_max_operations: crate::config::LimitsSection::default().max_kv_operations,
        kv_max_write_bytes: crate::config::LimitsSection::default().max_kv_write_bytes,
        env: Arc::new(env),
        fetcher,
    };
    let route_script = Arc::new(
        RouteScript::new(settings, bytecode, 1)
            .map_err(|e| mlua::Error::runtime(format!("test.load: {script}: {e}")))?,
    );
    let _ = lua;
    let handler_lua = lua.clone();
    lua.create_async_function(move |_, request: Option<Table>| {
        let route_script = route_script.clone();
        let origin = origin.clone();
        let lua = handler_lua.clone();
        async move { call_handler(&lua, &route_script, request, origin).await }
    })
}

/// Wraps the test's `fetch` function: each subrequest of the script is
/// passed to it as a table, and the table it returns is the response.
fn fetch_fixture(lua: Lua, function: Function) -> FetchFixture {
    Arc::new(move |request: FetchRequest| {
        let lua = lua.clone();
        let function = function.clone();
        Box::pin(async move {
            let failed = |e: mlua::Error| {
                FetchError::Failed(format!(
                    "the test's fetch function failed: {}",
                    first_line(&e.to_string())
                ))
            };
            let table = lua.create_table().map_err(failed)?;
            table
                .set("method", request.method.as_str())
                .map_err(failed)?;
            table.set("url", request.url.as_str()).map_err(failed)?;
            let headers = crate::script::multi_value_table(
                &lua,
                request
                    .headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_bytes())),
            )
            .map_err(failed)?;
            table.set("headers", headers).map_err(failed)?;
            if let Some(body) = &request.body {
                table
                    .set("body", lua.create_string(body).map_err(failed)?)
                    .map_err(failed)?;
            }
            let response: Value = function.call_async(table).await.map_err(failed)?;
            fixture_response(response, request.url.as_str()).map_err(failed)
        })
    })
}

/// Describes a Lua value for an error message: `nil`, `the string "x"`,
/// `a table`.
fn describe(value: &Value) -> String {
    match value {
        Value::Nil => "nil".to_string(),
        Value::String(text) => format!("the string {:?}", text.to_string_lossy()),
        Value::Integer(n) => n.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Boolean(b) => b.to_string(),
        other => format!("a {}", crate::bindings::args::type_name(other)),
    }
}

/// Reads the response table that a test's `fetch` function returned.
fn fixture_response(value: Value, url: &str) -> mlua::Result<FetchResponse> {
    let Value::Table(table) = value else {
        return Err(mlua::Error::runtime(format!(
            "it returned {}; return a response table such as {{status = 200, body = \"...\"}}",
            describe(&value)
        )));
    };
    let status = match table.get::<Value>("status")? {
        Value::Nil => 200,
        Value::Integer(status) if (100..=599).contains(&status) => status as u16,
        Value::Number(status) if status.fract() == 0.0 && (100.0..=599.0).contains(&status) => {
            status as u16
        }
        other => {
            return Err(mlua::Error::runtime(format!(
                "its status is {}; return a whole number from 100 to 599",
                describe(&other)
            )))
        }
    };
    let body = match table.get::<Value>("body")? {
        Value::Nil => Bytes::new(),
        Value::String(body) => Bytes::copy_from_slice(&body.as_bytes()),
        other => {
            return Err(mlua::Error::runtime(format!(
                "its body is {}; return a string",
                describe(&other)
            )))
        }
    };
    for pair in table.pairs::<Value, Value>() {
        let (key, _) = pair?;
        let known = matches!(&key, Value::String(k)
            if ["status", "headers", "body"].iter().any(|name| k == *name));
        if !known {
            let key = match &key {
                Value::String(name) => format!("`{}`", name.to_string_lossy()),
                other => describe(other),
            };
            return Err(mlua::Error::runtime(format!(
                "its response has the unknown key {key}; the keys are status, headers and body"
            )));
        }
    }
    let mut headers = Vec::new();
    let list = match table.get::<Value>("headers")? {
        Value::Nil => None,
        Value::Table(list) => Some(list),
        other => {
            return Err(mlua::Error::runtime(format!(
                "its headers are {}; return a table of names to strings or lists of strings",
                describe(&other)
            )))
        }
    };
    if let Some(list) = list {
        for pair in list.pairs::<String, Value>() {
            let (name, value) = pair?;
            let name = name.to_ascii_lowercase();
            let values = match value {
                Value::Table(values) => values
                    .sequence_values::<Value>()
                    .collect::<Result<_, _>>()?,
                other => vec![other],
            };
            for value in values {
                let value = crate::script::scalar_bytes("headers", &name, value)?;
                headers.push((name.clone(), Bytes::from(value)));
            }
        }
    }
    Ok(FetchResponse {
        status,
        headers,
        body,
        url: url.to_string(),
    })
}

/// Calls the script's handler with a request table and returns the
/// response table: the script's, or the origin fixture's after a
/// fall-through.
async fn call_handler(
    lua: &Lua,
    script: &RouteScript,
    request: Option<Table>,
    origin: Option<Function>,
) -> mlua::Result<Table> {
    let field = |name: &str| -> mlua::Result<Option<String>> {
        match &request {
            Some(table) => table.get(name),
            None => Ok(None),
        }
    };
    let method = field("method")?.unwrap_or_else(|| "GET".into());
    let target = field("path")?.unwrap_or_else(|| "/".into());
    let host = field("host")?.unwrap_or_else(|| "localhost".into());
    let body = field("body")?.map(Bytes::from).unwrap_or_default();
    let (raw_path, raw_query) = match target.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (target.clone(), None),
    };
    let mut headers = HeaderMap::new();
    if let Some(Some(table)) = request
        .as_ref()
        .map(|r| r.get::<Option<Table>>("headers"))
        .transpose()?
    {
        for pair in table.pairs::<String, mlua::LuaString>() {
            let (name, value) = pair?;
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| mlua::Error::runtime(format!("invalid header name `{name}`")))?;
            let value = HeaderValue::from_bytes(&value.as_bytes())
                .map_err(|_| mlua::Error::runtime("invalid header value"))?;
            headers.append(name, value);
        }
    }
    let params = HashMap::new();
    let input = RequestInput {
        request_id: "test",
        method: &method,
        url: format!("http://{host}{target}"),
        path: NormalizedPath::parse(&raw_path).to_path_string(),
        raw_path: &raw_path,
        raw_query: raw_query.as_deref(),
        headers: &headers,
        body: Some(body.clone()),
        params: &params,
        host: &host,
        client_ip: "127.0.0.1".into(),
        route: "test",
    };
    let (outcome, _) = script.run(&input, CPU_LIMIT).await;
    let outcome = outcome.map_err(|e| mlua::Error::runtime(format!("the handler failed: {e}")))?;
    match outcome {
        Outcome::Respond(response) => {
            let table = lua.create_table()?;
            table.set("status", response.status.as_u16())?;
            let response_headers = lua.create_table()?;
            for (name, value) in &response.headers {
                let value = lua.create_string(value.as_bytes())?;
                match response_headers.get::<Value>(name.as_str())? {
                    Value::Nil => response_headers.set(name.as_str(), value)?,
                    Value::Table(list) => list.push(value)?,
                    first => {
                        let list = lua.create_sequence_from([first, Value::String(value)])?;
                        response_headers.set(name.as_str(), list)?;
                    }
                }
            }
            table.set("headers", response_headers)?;
            table.set("body", lua.create_string(&response.body)?)?;
            Ok(table)
        }
        Outcome::FallThrough(edits) => {
            let forwarded = forwarded_request(
                lua,
                &method,
                &raw_path,
                raw_query.as_deref(),
                &headers,
                &body,
                &edits,
            )?;
            let Some(origin) = origin else {
                let table = lua.create_table()?;
                table.set("status", 502)?;
                table.set("forwarded", forwarded)?;
                return Ok(table);
            };
            let response: Table = origin.call_async(&forwarded).await?;
            if response.get::<Option<u16>>("status")?.is_none() {
                response.set("status", 200)?;
            }
            // Header names come back lowercase, as from a real origin.
            if let Some(headers) = response.get::<Option<Table>>("headers")? {
                let lowered = lua.create_table()?;
                for pair in headers.pairs::<String, Value>() {
                    let (name, value) = pair?;
                    lowered.set(name.to_ascii_lowercase(), value)?;
                }
                response.set("headers", lowered)?;
            }
            response.set("forwarded", forwarded)?;
            Ok(response)
        }
    }
}

/// Builds the request as the origin would receive it after the script's
/// edits.
fn forwarded_request(
    lua: &Lua,
    method: &str,
    raw_path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    body: &Bytes,
    edits: &RequestEdits,
) -> mlua::Result<Table> {
    let table = lua.create_table()?;
    table.set("method", method)?;
    table.set(
        "path",
        edits.path.clone().unwrap_or_else(|| raw_path.to_string()),
    )?;
    let query = edits
        .query
        .clone()
        .or_else(|| raw_query.map(str::to_string))
        .unwrap_or_default();
    table.set("query", query)?;
    let forwarded_headers = lua.create_table()?;
    for (name, value) in headers {
        if edits
            .remove_headers
            .iter()
            .any(|removed| removed == name.as_str())
        {
            continue;
        }
        forwarded_headers.set(name.as_str(), lua.create_string(value.as_bytes())?)?;
    }
    for (name, values) in &edits.set_headers {
        match values.as_slice() {
            [single] => forwarded_headers.set(name.as_str(), lua.create_string(single)?)?,
            many => {
                let list = lua.create_table()?;
                for value in many {
                    list.push(lua.create_string(value)?)?;
                }
                forwarded_headers.set(name.as_str(), list)?;
            }
        }
    }
    table.set("headers", forwarded_headers)?;
    table.set("body", lua.create_string(body)?)?;
    Ok(table)
}

//! `fetch(url_or_request, options)` and `fetch_all(list)`: subrequests
//! from a script.
//!
//! The VM keeps its route's [`Fetcher`] as app data and a [`FetchCall`]
//! that the runtime resets for every request: the incoming host and the
//! number of subrequests made so far. Both functions are async, so the
//! script yields while the subrequest is in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use http::{HeaderName, HeaderValue, Method};
use mlua::{Error, Lua, Result, Table, Value};

use crate::fetch::{BodyBudget, FetchError, FetchRequest, FetchResponse, Fetcher};

/// Registry key of the metatable that makes header names case-insensitive.
pub const HEADERS_METATABLE: &str = "actias.headers.metatable";

/// The fetch settings of the VM's route, stored as app data.
pub struct FetchAccess {
    /// `None` in VMs that cannot fetch, as in `actias check`.
    pub fetcher: Option<Arc<Fetcher>>,
}

/// Per-call state, reset by the runtime before each handler call.
#[derive(Default)]
pub struct FetchCall {
    /// Host of the request being handled; `None` for scheduled runs.
    pub host: Option<String>,
    /// Subrequests made so far in this call.
    pub used: u32,
    /// How many subrequests deep the request being handled is; 0 for a
    /// client's request and for scheduled runs.
    pub depth: u32,
    /// The `actias-subrequest-routes` list of the request being handled.
    pub routes: Option<String>,
    /// The request table passed to the handler, with the path and query it
    /// arrived with, so that `fetch(request)` sends the script's edits.
    pub incoming: Option<IncomingTarget>,
}

/// The request table of a handler call and its target as it arrived.
pub struct IncomingTarget {
    /// Address of the table, compared with the table passed to `fetch`.
    pub table: usize,
    pub path: String,
    pub raw_query: Option<String>,
}

/// Largest total size of the header names and values of one subrequest.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Headers that describe one connection or its framing; the client sets
/// its own.
const CONNECTION_HEADERS: [&str; 9] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Installs `fetch` and `fetch_all`.
pub fn install(lua: &Lua, globals: &Table) -> Result<()> {
    globals.raw_set(
        "fetch",
        lua.create_async_function(|lua, (target, options): (Value, Value)| async move {
            let mut request = build_request(&lua, "fetch", &target, &options)?;
            let (fetcher, incoming) = reserve(&lua, "fetch", 1)?;
            request.body_budget = Some(body_budget(&lua));
            let response = send(&fetcher, request, &incoming).await;
            response_table(&lua, response?)
        })?,
    )?;
    globals.raw_set(
        "fetch_all",
        lua.create_async_function(|lua, (list, extra): (Value, Value)| async move {
            if !extra.is_nil() {
                return Err(Error::runtime(
                    "fetch_all: takes one argument, the list; put options in each item, such as \
                     {url = \"https://...\", method = \"POST\"}",
                ));
            }
            let Value::Table(list) = list else {
                return Err(Error::runtime(format!(
                    "fetch_all: argument 1 must be a list of URLs or request tables, not a {}",
                    super::args::type_name(&list)
                )));
            };
            // The cap is checked before any item is read, and the bodies
            // together may not exceed the script's memory limit.
            let count = list.raw_len();
            let (fetcher, incoming) = reserve(&lua, "fetch_all", count as u32)?;
            let memory_limit = lua
                .app_data_ref::<super::MemoryLimit>()
                .map_or(usize::MAX, |limit| limit.0);
            let mut body_bytes = 0usize;
            let mut requests = Vec::with_capacity(count);
            let budget = body_budget(&lua);
            for (index, item) in list.sequence_values::<Value>().enumerate() {
                let function = format!("fetch_all: item {}", index + 1);
                let mut request = build_request(&lua, &function, &item?, &Value::Nil)?;
                request.body_budget = Some(budget.clone());
                body_bytes += request.body.as_ref().map_or(0, |body| body.len());
                if body_bytes > memory_limit {
                    return Err(Error::runtime(format!(
                        "fetch_all: the bodies add up to more than the script's memory limit \
                         of {memory_limit} bytes; send fewer or smaller bodies"
                    )));
                }
                requests.push(request);
            }

            let in_flight = fetcher.max_in_flight;
            let responses: Vec<FetchResponse> = stream::iter(requests)
                .map(|request| send(&fetcher, request, &incoming))
                .buffered(in_flight)
                .try_collect()
                .await?;
            let out = lua.create_table_with_capacity(responses.len(), 0)?;
            for response in responses {
                out.raw_push(response_table(&lua, response)?)?;
            }
            Ok(out)
        })?,
    )?;
    Ok(())
}

/// The values a subrequest carries over from the request being handled.
struct Incoming {
    host: Option<String>,
    depth: u32,
    routes: Option<String>,
}

/// Counts `count` subrequests against the route's cap and returns the
/// fetcher and what the subrequests carry over from the incoming request.
fn reserve(lua: &Lua, function: &str, count: u32) -> Result<(Arc<Fetcher>, Incoming)> {
    super::check_handler_thread(lua, function)?;
    let fetcher = lua
        .app_data_ref::<FetchAccess>()
        .and_then(|access| access.fetcher.clone())
        .ok_or_else(|| {
            Error::runtime(
                "fetch: subrequests are not available in this process; under actias test, pass a \
                 fetch function to test.load",
            )
        })?;
    let mut call = lua.app_data_mut::<FetchCall>().ok_or_else(|| {
        Error::runtime(
            "fetch: subrequests are not available in this process; under actias test, pass a \
                 fetch function to test.load",
        )
    })?;
    let after = call.used.saturating_add(count);
    if after > fetcher.max_requests {
        crate::metrics::METRICS
            .fetch_requests
            .with_label_values(&[fetcher.route(), "cap"])
            .inc();
        let requested = if count == 1 {
            String::new()
        } else {
            format!(", and this call asks for {count} more")
        };
        return Err(Error::runtime(format!(
            "{function}: this request may make at most {} subrequests (the route's \
             fetch.max_requests) and has made {}{requested}",
            fetcher.max_requests, call.used
        )));
    }
    call.used = after;
    Ok((
        fetcher,
        Incoming {
            host: call.host.clone(),
            depth: call.depth,
            routes: call.routes.clone(),
        },
    ))
}

async fn send(
    fetcher: &Arc<Fetcher>,
    request: FetchRequest,
    incoming: &Incoming,
) -> Result<FetchResponse> {
    let started = Instant::now();
    let result = fetcher
        .send(
            request,
            incoming.host.clone(),
            incoming.depth,
            incoming.routes.as_deref(),
        )
        .await;
    let metrics = &crate::metrics::METRICS;
    metrics
        .fetch_duration
        .with_label_values(&[fetcher.route()])
        .observe(started.elapsed().as_secs_f64());
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    metrics
        .fetch_requests
        .with_label_values(&[fetcher.route(), outcome])
        .inc();
    result.map_err(|e: FetchError| Error::runtime(format!("fetch: {e}")))
}

/// Sets the path and query that the script gave `table` on `url` when
/// `table` is the request passed to the handler, whose `url` still names
/// the target as it arrived.
fn apply_target_edits(lua: &Lua, table: &Table, url: &mut url::Url) -> Result<()> {
    let call = lua.app_data_ref::<FetchCall>();
    let Some(incoming) = call.as_ref().and_then(|call| call.incoming.as_ref()) else {
        return Ok(());
    };
    if incoming.table != table.to_pointer() as usize {
        return Ok(());
    }
    let (path, query) =
        crate::script::target_edits(table, &incoming.path, incoming.raw_query.as_deref())?;
    if let Some(path) = path {
        url.set_path(&path);
    }
    if let Some(query) = query {
        url.set_query((!query.is_empty()).then_some(query.as_str()));
    }
    Ok(())
}

/// Reads the target and options of one subrequest.
fn build_request(
    lua: &Lua,
    function: &str,
    target: &Value,
    options: &Value,
) -> Result<FetchRequest> {
    let options = match options {
        Value::Nil => None,
        Value::Table(options) => Some(options),
        other => {
            return Err(Error::runtime(format!(
                "{function}: the options must be a table, not a {}",
                super::args::type_name(other)
            )))
        }
    };
    let (url, base) = match target {
        Value::String(url) => (url.to_string_lossy(), None),
        Value::Table(table) => match table.raw_get::<Value>("url")? {
            Value::String(url) => (url.to_string_lossy(), Some(table)),
            other => {
                return Err(Error::runtime(format!(
                    "{function}: the request table needs a string `url`, not a {}",
                    super::args::type_name(&other)
                )))
            }
        },
        other => {
            return Err(Error::runtime(format!(
                "{function}: argument 1 must be a URL string or a request table, not a {}",
                super::args::type_name(other)
            )))
        }
    };
    super::url::check_length(function, &url)?;
    let mut url = url::Url::parse(&url).map_err(|e| {
        Error::runtime(format!(
            "{function}: `{url}` is not an absolute URL ({e}); pass a URL such as \
             \"https://api.example.com/items\""
        ))
    })?;
    if let Some(table) = base {
        apply_target_edits(lua, table, &mut url)?;
    }
    // A field of the options wins over the same field of the request table.
    let field = |name: &str| -> Result<Value> {
        if let Some(options) = options {
            let value: Value = options.raw_get(name)?;
            if !value.is_nil() {
                return Ok(value);
            }
        }
        match base {
            Some(table) => table.raw_get(name),
            None => Ok(Value::Nil),
        }
    };
    let method = match field("method")? {
        Value::Nil => Method::GET,
        Value::String(method) => Method::from_bytes(
            method.to_string_lossy().to_ascii_uppercase().as_bytes(),
        )
        .map_err(|_| {
            Error::runtime(format!(
                "{function}: `{}` is not an HTTP method; use GET, POST and so on",
                method.to_string_lossy()
            ))
        })?,
        other => {
            return Err(Error::runtime(format!(
                "{function}: method must be a string, not a {}",
                super::args::type_name(&other)
            )))
        }
    };
    let headers = read_headers(function, field("headers")?)?;
    let body = match field("body")? {
        Value::Nil => None,
        Value::String(body) => Some(Bytes::copy_from_slice(&body.as_bytes())),
        other => {
            return Err(Error::runtime(format!(
                "{function}: body must be a string, not a {}; encode tables with json.stringify",
                super::args::type_name(&other)
            )))
        }
    };
    let timeout = match options
        .map(|o| o.raw_get::<Value>("timeout_ms"))
        .transpose()?
    {
        None | Some(Value::Nil) => None,
        Some(Value::Integer(ms)) if ms > 0 => Some(Duration::from_millis(ms as u64)),
        Some(Value::Number(ms)) if ms >= 1.0 && ms.is_finite() => {
            Some(Duration::from_millis(ms as u64))
        }
        Some(other) => {
            return Err(Error::runtime(format!(
                "{function}: timeout_ms must be a positive number of milliseconds, not {}",
                describe_value(&other)
            )))
        }
    };
    let follow_redirects = match options
        .map(|o| o.raw_get::<Value>("redirect"))
        .transpose()?
    {
        None | Some(Value::Nil) => true,
        Some(Value::String(mode)) if mode == "follow" => true,
        Some(Value::String(mode)) if mode == "manual" => false,
        Some(other) => {
            return Err(Error::runtime(format!(
                "{function}: redirect must be \"follow\" or \"manual\", not {}",
                describe_value(&other)
            )))
        }
    };
    if let Some(options) = options {
        for pair in options.clone().pairs::<Value, Value>() {
            let (key, _) = pair?;
            let known = matches!(&key, Value::String(k)
                if ["method", "headers", "body", "timeout_ms", "redirect"]
                    .iter()
                    .any(|name| k == *name));
            if !known {
                return Err(Error::runtime(format!(
                    "{function}: unknown option {}; the options are method, headers, body, \
                     timeout_ms and redirect",
                    describe_value(&key)
                )));
            }
        }
    }
    Ok(FetchRequest {
        method,
        url,
        headers,
        body,
        timeout,
        follow_redirects,
        body_budget: None,
    })
}

/// Returns a budget of what is left of the script's memory limit, shared
/// by the response bodies of one call.
fn body_budget(lua: &Lua) -> Arc<BodyBudget> {
    let limit = lua
        .app_data_ref::<super::MemoryLimit>()
        .map_or(usize::MAX, |limit| limit.0);
    Arc::new(BodyBudget::new(limit.saturating_sub(lua.used_memory())))
}

fn describe_value(value: &Value) -> String {
    match value {
        Value::String(text) => format!("\"{}\"", text.to_string_lossy()),
        Value::Integer(n) => n.to_string(),
        Value::Number(n) => n.to_string(),
        other => format!("a {}", super::args::type_name(other)),
    }
}

/// Reads a headers table: names to a string, a number or a list of them.
fn read_headers(function: &str, headers: Value) -> Result<Vec<(HeaderName, HeaderValue)>> {
    let headers = match headers {
        Value::Nil => return Ok(Vec::new()),
        Value::Table(headers) => headers,
        other => {
            return Err(Error::runtime(format!(
                "{function}: headers must be a table, not a {}",
                super::args::type_name(&other)
            )))
        }
    };
    let too_large = || {
        Error::runtime(format!(
            "{function}: the headers add up to more than {MAX_HEADER_BYTES} bytes; send large \
             data in the body"
        ))
    };
    let mut out = Vec::new();
    let mut total = 0usize;
    for pair in headers.pairs::<Value, Value>() {
        let (name, value) = pair?;
        let Value::String(name) = name else {
            return Err(Error::runtime(format!(
                "{function}: header names must be strings, found a {}",
                super::args::type_name(&name)
            )));
        };
        let name_text = name.to_string_lossy();
        let header = HeaderName::from_bytes(&name.as_bytes()).map_err(|_| {
            Error::runtime(format!(
                "{function}: `{name_text}` is not a valid header name"
            ))
        })?;
        if CONNECTION_HEADERS.contains(&header.as_str()) {
            // Dropped names still cost a pass, and a table can hold every
            // spelling of them, so they count toward the cap too.
            total += name_text.len() + 1;
            if total > MAX_HEADER_BYTES {
                return Err(too_large());
            }
            continue;
        }
        let mut add = |value: Value| -> Result<()> {
            let bytes = match &value {
                Value::String(text) => text.as_bytes().to_vec(),
                Value::Integer(n) => n.to_string().into_bytes(),
                Value::Number(n) => crate::script::format_number(*n).into_bytes(),
                other => {
                    return Err(Error::runtime(format!(
                        "{function}: header `{name_text}` has a {} value; use a string, a \
                         number or a list of them",
                        super::args::type_name(other)
                    )))
                }
            };
            // Counted as written: a number such as 1e308 is 309 digits.
            total += name_text.len() + bytes.len();
            if total > MAX_HEADER_BYTES {
                return Err(too_large());
            }
            let value = HeaderValue::from_bytes(&bytes).map_err(|_| {
                Error::runtime(format!(
                    "{function}: header `{name_text}` has a value with a newline or another \
                     control character"
                ))
            })?;
            out.push((header.clone(), value));
            Ok(())
        };
        // Items are read one at a time, so a long list stops at the size
        // limit without being copied first.
        let mut items = 0usize;
        match value {
            Value::Table(list) => {
                for item in list.sequence_values::<Value>() {
                    add(item?)?;
                    items += 1;
                }
            }
            value => add(value)?,
        }
        // A name with an empty list sends nothing but still costs a pass.
        if items == 0 {
            total += name_text.len() + 1;
            if total > MAX_HEADER_BYTES {
                return Err(too_large());
            }
        }
    }
    Ok(out)
}

/// Converts a response to `{status, ok, url, headers, body}`.
fn response_table(lua: &Lua, response: FetchResponse) -> Result<Table> {
    let table = lua.create_table_with_capacity(0, 5)?;
    table.raw_set("status", response.status)?;
    table.raw_set("ok", (200..300).contains(&response.status))?;
    table.raw_set("url", response.url)?;
    let headers = crate::script::multi_value_table(lua, response.headers.into_iter())?;
    if let Ok(Some(metatable)) = lua.named_registry_value::<Option<Table>>(HEADERS_METATABLE) {
        headers.set_metatable(Some(metatable))?;
    }
    table.raw_set("headers", headers)?;
    table.raw_set("body", lua.create_string(&response.body)?)?;
    Ok(table)
}

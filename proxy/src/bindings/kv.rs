//! `kv.namespace(name)` and the methods of a namespace handle.
//!
//! Each VM gets a [`KvAccess`] as app data: the store, whichever backend it
//! is, and the namespaces its route declared. Every method is async, so a
//! script yields while the store works and its worker thread serves other
//! requests meanwhile.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mlua::{Error, Lua, LuaString, Result, Table, UserData, UserDataMethods, Value};

use super::json;
use crate::kv::{self, Entry, KvError, KvStore, ListOptions, MAX_LIST_LIMIT};

/// Longest `ttl`, in seconds (about 100 years).
const MAX_TTL_SECONDS: u64 = 100 * 365 * 24 * 3600;

/// The store and the namespaces one route may use, stored as app data.
pub struct KvAccess {
    /// `None` when no store is open, as in `actias check`.
    pub store: Option<Arc<dyn KvStore>>,
    pub route: String,
    pub namespaces: Vec<String>,
    /// Most operations one handler call may make.
    pub max_operations: u32,
    /// Most bytes of keys, values and metadata one handler call may write.
    pub max_write_bytes: usize,
}

/// Key-value operations made and bytes written so far in one handler
/// call, stored as app data and reset by the runtime before each call.
#[derive(Default)]
pub struct KvCall {
    pub used: u32,
    pub written: usize,
}

/// Counts one operation against the route's `max_kv_operations`.
fn charge(lua: &Lua, operation: &str) -> Result<()> {
    super::check_handler_thread(lua, &format!("kv {operation}"))?;
    let max = lua
        .app_data_ref::<KvAccess>()
        .map_or(u32::MAX, |access| access.max_operations);
    let Some(mut call) = lua.app_data_mut::<KvCall>() else {
        return Ok(());
    };
    if call.used >= max {
        return Err(Error::runtime(format!(
            "kv {operation}: this request (or scheduled run) already made {max} key-value \
             operations, the limit set by limits.max_kv_operations; batch the work or raise the \
             limit"
        )));
    }
    call.used += 1;
    Ok(())
}

/// Counts `bytes` written by a put against the route's
/// `max_kv_write_bytes`.
fn charge_write(lua: &Lua, bytes: usize) -> Result<()> {
    let max = lua
        .app_data_ref::<KvAccess>()
        .map_or(usize::MAX, |access| access.max_write_bytes);
    let Some(mut call) = lua.app_data_mut::<KvCall>() else {
        return Ok(());
    };
    let total = call.written.saturating_add(bytes);
    if total > max {
        return Err(Error::runtime(format!(
            "kv put: this request (or scheduled run) already wrote {} bytes, and {bytes} more \
             would pass limits.max_kv_write_bytes ({max}); write less per request or raise the \
             limit",
            call.written
        )));
    }
    call.written = total;
    Ok(())
}

/// A handle on one namespace.
struct Namespace {
    name: String,
    /// `None` in `actias check`, which runs top levels without a store.
    store: Option<Arc<dyn KvStore>>,
}

impl Namespace {
    fn store(&self, operation: &str) -> Result<&Arc<dyn KvStore>> {
        self.store.as_ref().ok_or_else(|| {
            Error::runtime(format!(
                "kv {operation}: the key-value store is not open while `actias check` runs a \
                 script's top level; make key-value calls inside a handler"
            ))
        })
    }
}

/// Creates the `kv` table.
pub fn create(lua: &Lua) -> Result<Table> {
    let table = lua.create_table()?;
    table.raw_set("namespace", lua.create_function(open_namespace)?)?;
    Ok(table)
}

fn open_namespace(lua: &Lua, name: String) -> Result<Namespace> {
    let access = lua
        .app_data_ref::<KvAccess>()
        .ok_or_else(|| Error::runtime("kv.namespace: this VM has no key-value access"))?;
    if !access.namespaces.contains(&name) {
        let declared = if access.namespaces.is_empty() {
            "none".to_string()
        } else {
            access.namespaces.join(", ")
        };
        return Err(Error::runtime(format!(
            "kv.namespace: route `{}` does not declare the namespace `{name}` (it declares: \
             {declared}); add it to the route's `kv` list in the config, or under `actias test` \
             to the `kv` option of test.load",
            access.route
        )));
    }
    Ok(Namespace {
        name,
        store: access.store.clone(),
    })
}

fn lua_error(operation: &str, error: KvError) -> Error {
    Error::runtime(format!("kv {operation}: {error}"))
}

fn key_bytes(operation: &str, key: &LuaString) -> Result<Bytes> {
    let key = Bytes::copy_from_slice(&key.as_bytes());
    kv::check_key(&key).map_err(|e| lua_error(operation, e))?;
    Ok(key)
}

fn expiration_seconds(expires_at_ms: Option<u64>) -> Option<f64> {
    expires_at_ms.map(|ms| (ms / 1000) as f64)
}

fn metadata_value(lua: &Lua, metadata: Option<&str>) -> Result<Value> {
    match metadata {
        Some(text) => json::decode(lua, text.as_bytes()),
        None => Ok(Value::Nil),
    }
}

/// Reads the options table of `put`.
fn put_entry(lua: &Lua, value: Bytes, options: Option<Table>) -> Result<Entry> {
    let mut entry = Entry {
        value,
        metadata: None,
        expires_at_ms: None,
    };
    let Some(options) = options else {
        return Ok(entry);
    };
    match options.raw_get::<Value>("ttl")? {
        Value::Nil => {}
        Value::Integer(seconds) if seconds > 0 && seconds as u64 <= MAX_TTL_SECONDS => {
            entry.expires_at_ms = Some(kv::now_ms() + seconds as u64 * 1000);
        }
        Value::Number(seconds) if seconds > 0.0 && seconds <= MAX_TTL_SECONDS as f64 => {
            let ttl = Duration::from_secs_f64(seconds);
            entry.expires_at_ms = Some(kv::now_ms() + ttl.as_millis() as u64);
        }
        other => {
            return Err(Error::runtime(format!(
                "kv put: ttl must be a positive number of seconds up to {MAX_TTL_SECONDS}, not {}",
                other
                    .to_string()
                    .unwrap_or_else(|_| other.type_name().into())
            )))
        }
    }
    match options.raw_get::<Value>("metadata")? {
        Value::Nil => {}
        metadata => entry.metadata = Some(json::encode(lua, &metadata)?),
    }
    Ok(entry)
}

/// Reads the options table of `list`.
fn list_options(options: Option<Table>) -> Result<ListOptions> {
    let mut list = ListOptions {
        prefix: Bytes::new(),
        limit: MAX_LIST_LIMIT,
        cursor: None,
    };
    let Some(options) = options else {
        return Ok(list);
    };
    if let Some(prefix) = options.raw_get::<Option<LuaString>>("prefix")? {
        list.prefix = Bytes::copy_from_slice(&prefix.as_bytes());
    }
    match options.raw_get::<Value>("limit")? {
        Value::Nil => {}
        Value::Integer(limit) if (1..=MAX_LIST_LIMIT as i64).contains(&limit) => {
            list.limit = limit as usize
        }
        Value::Number(limit)
            if limit.fract() == 0.0 && (1.0..=MAX_LIST_LIMIT as f64).contains(&limit) =>
        {
            list.limit = limit as usize
        }
        other => {
            return Err(Error::runtime(format!(
                "kv list: limit must be a whole number from 1 to {MAX_LIST_LIMIT}, not {}",
                other
                    .to_string()
                    .unwrap_or_else(|_| other.type_name().into())
            )))
        }
    }
    list.cursor = options.raw_get::<Option<String>>("cursor")?;
    Ok(list)
}

impl UserData for Namespace {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_async_method("get", |lua, this, key: LuaString| async move {
            charge(&lua, "get")?;
            let key = key_bytes("get", &key)?;
            let entry = this.store("get")?.get(&this.name, &key).await;
            match entry.map_err(|e| lua_error("get", e))? {
                Some(entry) => Ok(Value::String(lua.create_string(&entry.value)?)),
                None => Ok(Value::Nil),
            }
        });

        methods.add_async_method(
            "get_with_metadata",
            |lua, this, key: LuaString| async move {
                charge(&lua, "get_with_metadata")?;
                let key = key_bytes("get_with_metadata", &key)?;
                let entry = this.store("get_with_metadata")?.get(&this.name, &key).await;
                match entry.map_err(|e| lua_error("get_with_metadata", e))? {
                    Some(entry) => Ok((
                        Value::String(lua.create_string(&entry.value)?),
                        metadata_value(&lua, entry.metadata.as_deref())?,
                        expiration_seconds(entry.expires_at_ms),
                    )),
                    None => Ok((Value::Nil, Value::Nil, None)),
                }
            },
        );

        methods.add_async_method(
            "put",
            |lua, this, (key, value, options): (LuaString, LuaString, Option<Table>)| async move {
                charge(&lua, "put")?;
                let key = key_bytes("put", &key)?;
                let value = Bytes::copy_from_slice(&value.as_bytes());
                let entry = put_entry(&lua, value, options)?;
                kv::check_entry(&entry).map_err(|e| lua_error("put", e))?;
                let size =
                    key.len() + entry.value.len() + entry.metadata.as_ref().map_or(0, String::len);
                charge_write(&lua, size)?;
                this.store("put")?
                    .put(&this.name, &key, entry)
                    .await
                    .map_err(|e| lua_error("put", e))
            },
        );

        methods.add_async_method("delete", |lua, this, key: LuaString| async move {
            charge(&lua, "delete")?;
            let key = key_bytes("delete", &key)?;
            this.store("delete")?
                .delete(&this.name, &key)
                .await
                .map_err(|e| lua_error("delete", e))
        });

        methods.add_async_method("list", |lua, this, options: Option<Table>| async move {
            charge(&lua, "list")?;
            let options = list_options(options)?;
            let page = this
                .store("list")?
                .list(&this.name, options)
                .await
                .map_err(|e| lua_error("list", e))?;
            let keys = lua.create_table_with_capacity(page.keys.len(), 0)?;
            for listed in &page.keys {
                let item = lua.create_table_with_capacity(0, 3)?;
                item.raw_set("name", lua.create_string(&listed.name)?)?;
                item.raw_set(
                    "metadata",
                    metadata_value(&lua, listed.metadata.as_deref())?,
                )?;
                item.raw_set("expiration", expiration_seconds(listed.expires_at_ms))?;
                keys.raw_push(item)?;
            }
            let result = lua.create_table_with_capacity(0, 3)?;
            result.raw_set("keys", keys)?;
            result.raw_set("list_complete", page.cursor.is_none())?;
            result.raw_set("cursor", page.cursor)?;
            Ok(result)
        });
    }
}

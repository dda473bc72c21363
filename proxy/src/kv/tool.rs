//! `actias kv ...`: read and seed the configured store without Lua.
//!
//! Import and export use the bulk format of Workers KV: a JSON array of
//! `{"key", "value", "base64", "metadata", "expiration", "expiration_ttl"}`
//! objects, where `value` is base64-encoded when `base64` is true.

use std::io::Write;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{
    check_entry, check_key, check_namespace, now_ms, Entry, KvError, KvStore, ListOptions,
    MAX_LIST_LIMIT,
};

/// One record of an import or export file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub key: String,
    pub value: String,
    /// `value` is base64; otherwise it is the value's UTF-8 text.
    #[serde(default, skip_serializing_if = "is_false")]
    pub base64: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Expiry time, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<u64>,
    /// Seconds from now until expiry; used when `expiration` is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_ttl: Option<u64>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn invalid(message: String) -> KvError {
    KvError::Invalid(message)
}

/// Returns the value of `key`, or `None`.
pub async fn get(
    store: &dyn KvStore,
    namespace: &str,
    key: &str,
) -> Result<Option<Entry>, KvError> {
    check_namespace(namespace).map_err(invalid)?;
    check_key(key.as_bytes())?;
    store.get(namespace, key.as_bytes()).await
}

/// Stores `value` under `key`.
pub async fn put(
    store: &dyn KvStore,
    namespace: &str,
    key: &str,
    value: Bytes,
    ttl_seconds: Option<u64>,
    metadata: Option<&str>,
) -> Result<(), KvError> {
    check_namespace(namespace).map_err(invalid)?;
    check_key(key.as_bytes())?;
    let metadata = match metadata {
        Some(text) => {
            let parsed: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                invalid(format!(
                    "--metadata is not valid JSON ({e}); pass an object such as '{{\"a\":1}}'"
                ))
            })?;
            Some(parsed.to_string())
        }
        None => None,
    };
    let entry = Entry {
        value,
        metadata,
        expires_at_ms: ttl_seconds.map(|ttl| now_ms() + ttl * 1000),
    };
    check_entry(&entry)?;
    store.put(namespace, key.as_bytes(), entry).await
}

/// Removes `key`.
pub async fn delete(store: &dyn KvStore, namespace: &str, key: &str) -> Result<(), KvError> {
    check_namespace(namespace).map_err(invalid)?;
    check_key(key.as_bytes())?;
    store.delete(namespace, key.as_bytes()).await
}

/// Writes the keys under `prefix`, one per line, to `out`; follows
/// cursors until `limit` keys are written or the listing ends.
pub async fn list(
    store: &dyn KvStore,
    namespace: &str,
    prefix: &str,
    limit: usize,
    out: &mut impl Write,
) -> Result<usize, KvError> {
    check_namespace(namespace).map_err(invalid)?;
    let mut written = 0;
    let mut cursor = None;
    loop {
        let options = ListOptions {
            prefix: Bytes::copy_from_slice(prefix.as_bytes()),
            limit: (limit - written).min(MAX_LIST_LIMIT),
            cursor,
        };
        let page = store.list(namespace, options).await?;
        for key in &page.keys {
            writeln!(out, "{}", String::from_utf8_lossy(&key.name))
                .map_err(|e| invalid(format!("cannot write the listing: {e}")))?;
            written += 1;
        }
        cursor = page.cursor;
        if cursor.is_none() || written >= limit {
            return Ok(written);
        }
    }
}

/// Stores every record of `records`; returns how many were written.
pub async fn import(
    store: &dyn KvStore,
    namespace: &str,
    records: Vec<Record>,
) -> Result<usize, KvError> {
    check_namespace(namespace).map_err(invalid)?;
    let now = now_ms();
    let mut entries = Vec::with_capacity(records.len());
    for (index, record) in records.into_iter().enumerate() {
        let at =
            |message: String| invalid(format!("record {index} (key `{}`): {message}", record.key));
        check_key(record.key.as_bytes()).map_err(|e| at(e.to_string()))?;
        let value = if record.base64 {
            Bytes::from(
                STANDARD
                    .decode(&record.value)
                    .map_err(|e| at(format!("value is not valid base64: {e}")))?,
            )
        } else {
            Bytes::from(record.value.clone())
        };
        let expires_at_ms = match (record.expiration, record.expiration_ttl) {
            (Some(seconds), _) => Some(seconds * 1000),
            (None, Some(ttl)) => Some(now + ttl * 1000),
            (None, None) => None,
        };
        let entry = Entry {
            value,
            metadata: record.metadata.as_ref().map(|m| m.to_string()),
            expires_at_ms,
        };
        check_entry(&entry).map_err(|e| at(e.to_string()))?;
        entries.push((record.key, entry));
    }
    // Every record is checked before the first write, so a bad file
    // writes nothing.
    let count = entries.len();
    for (key, entry) in entries {
        store.put(namespace, key.as_bytes(), entry).await?;
    }
    Ok(count)
}

/// Returns every live record of `namespace`.
pub async fn export(store: &dyn KvStore, namespace: &str) -> Result<Vec<Record>, KvError> {
    check_namespace(namespace).map_err(invalid)?;
    let mut records = Vec::new();
    let mut cursor = None;
    loop {
        let options = ListOptions {
            prefix: Bytes::new(),
            limit: MAX_LIST_LIMIT,
            cursor,
        };
        let page = store.list(namespace, options).await?;
        for key in &page.keys {
            let Some(entry) = store.get(namespace, &key.name).await? else {
                continue;
            };
            let name = String::from_utf8(key.name.to_vec()).map_err(|_| {
                invalid(format!(
                    "key {:?} is not UTF-8 and cannot be exported as JSON",
                    key.name
                ))
            })?;
            let (value, base64) = match std::str::from_utf8(&entry.value) {
                Ok(text) => (text.to_string(), false),
                Err(_) => (STANDARD.encode(&entry.value), true),
            };
            records.push(Record {
                key: name,
                value,
                base64,
                metadata: entry
                    .metadata
                    .as_deref()
                    .and_then(|m| serde_json::from_str(m).ok()),
                expiration: entry.expires_at_ms.map(|ms| ms / 1000),
                expiration_ttl: None,
            });
        }
        cursor = page.cursor;
        if cursor.is_none() {
            return Ok(records);
        }
    }
}

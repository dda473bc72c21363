//! The key-value store behind `kv.namespace(...)` in scripts.
//!
//! One trait, [`KvStore`], with two backends: `embedded` (redb, a file on
//! this machine) and `scylla` (ScyllaDB or Cassandra through the `scylla`
//! driver). Scripts, the command line and the tests use only the trait;
//! [`Instrumented`] adds the metrics around whichever backend is open.

mod embedded;
mod instrumented;
mod scylla;
pub mod tool;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;

pub use embedded::EmbeddedStore;
pub use instrumented::Instrumented;
pub use scylla::{parse_consistency, ScyllaStore};

use crate::config::{KvBackend, KvSection};

/// Maximum key length, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value, in bytes (25 MiB, as in Workers KV).
pub const MAX_VALUE_BYTES: usize = 25 * 1024 * 1024;
/// Largest metadata, in bytes of its JSON encoding.
pub const MAX_METADATA_BYTES: usize = 1024;
/// Most keys one `list` call returns.
pub const MAX_LIST_LIMIT: usize = 1000;
/// Maximum namespace name length, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 64;

/// A stored value with what was stored alongside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Bytes,
    /// Metadata as JSON text.
    pub metadata: Option<String>,
    /// Expiry time, in milliseconds since the Unix epoch.
    pub expires_at_ms: Option<u64>,
}

/// One key of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedKey {
    pub name: Bytes,
    pub metadata: Option<String>,
    pub expires_at_ms: Option<u64>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub keys: Vec<ListedKey>,
    /// Cursor of the next page; `None` when the listing is complete.
    pub cursor: Option<String>,
}

/// Options of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub prefix: Bytes,
    /// At most this many keys, from 1 to [`MAX_LIST_LIMIT`].
    pub limit: usize,
    /// A cursor from a previous page.
    pub cursor: Option<String>,
}

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// The caller passed an invalid key, value, option or cursor.
    #[error("{0}")]
    Invalid(String),
    /// The store did not respond in time.
    #[error("the {backend} store timed out: {detail}")]
    Timeout {
        backend: &'static str,
        detail: String,
    },
    /// The store failed.
    #[error("the {backend} store failed: {detail}")]
    Backend {
        backend: &'static str,
        detail: String,
    },
}

/// A key-value store with namespaces, expiry and ordered listing.
#[async_trait]
pub trait KvStore: Send + Sync {
    /// Backend name for logs and metrics: `embedded` or `scylla`.
    fn backend(&self) -> &'static str;

    /// Returns the entry of `key`, or `None` when it is missing or expired.
    async fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Entry>, KvError>;

    /// Stores `entry` under `key`, replacing any previous entry. Returns
    /// once the write is durable.
    async fn put(&self, namespace: &str, key: &[u8], entry: Entry) -> Result<(), KvError>;

    /// Removes `key`; removing a missing key succeeds.
    async fn delete(&self, namespace: &str, key: &[u8]) -> Result<(), KvError>;

    /// Lists live keys in byte order.
    async fn list(&self, namespace: &str, options: ListOptions) -> Result<ListPage, KvError>;

    /// Checks that the store responds; used by `/readyz`.
    async fn ping(&self) -> Result<(), KvError>;
}

/// Opens the configured backend, wrapped with metrics. Relative paths are
/// resolved against `base_dir`.
pub async fn open(section: &KvSection, base_dir: &Path) -> Result<Arc<dyn KvStore>, KvError> {
    let store: Arc<dyn KvStore> = match section.backend {
        KvBackend::Embedded => {
            let path = base_dir.join(&section.embedded.path);
            let sweep = Duration::from_secs(section.embedded.sweep_interval_seconds);
            Arc::new(EmbeddedStore::open(&path, sweep)?)
        }
        KvBackend::Scylla => Arc::new(ScyllaStore::connect(&section.scylla).await?),
    };
    Ok(Arc::new(Instrumented::new(store)))
}

/// Returns the current time in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Checks a namespace name.
pub fn check_namespace(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAMESPACE_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "namespace `{name}` is invalid; use 1 to {MAX_NAMESPACE_BYTES} letters, digits, `_`, `-` and `.`"
        ))
    }
}

/// Checks a key.
pub fn check_key(key: &[u8]) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::Invalid("the key is empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::Invalid(format!(
            "the key is {} bytes; keys are at most {MAX_KEY_BYTES} bytes",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a value and its metadata before a write.
pub fn check_entry(entry: &Entry) -> Result<(), KvError> {
    if entry.value.len() > MAX_VALUE_BYTES {
        return Err(KvError::Invalid(format!(
            "the value is {} bytes; values are at most {MAX_VALUE_BYTES} bytes",
            entry.value.len()
        )));
    }
    if let Some(metadata) = &entry.metadata {
        if metadata.len() > MAX_METADATA_BYTES {
            return Err(KvError::Invalid(format!(
                "the metadata is {} bytes as JSON; metadata is at most {MAX_METADATA_BYTES} bytes",
                metadata.len()
            )));
        }
    }
    Ok(())
}

/// Encodes the last key of a page as a cursor (hexadecimal).
pub fn encode_cursor(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes a cursor made by [`encode_cursor`].
pub fn decode_cursor(cursor: &str) -> Result<Vec<u8>, KvError> {
    let invalid = || {
        KvError::Invalid(format!(
            "cursor `{cursor}` is invalid; pass a cursor from a previous list call"
        ))
    };
    let digits = cursor.as_bytes();
    if !digits.len().is_multiple_of(2) || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(invalid());
    }
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).map_err(|_| invalid())?;
            u8::from_str_radix(text, 16).map_err(|_| invalid())
        })
        .collect()
}

/// Returns the smallest byte string greater than every string that starts
/// with `prefix`, or `None` when there is none (an empty or all-`0xff`
/// prefix).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let key = b"a\x00\xffz";
        assert_eq!(decode_cursor(&encode_cursor(key)).unwrap(), key);
        assert!(decode_cursor("zz").is_err());
        assert!(decode_cursor("abc").is_err());
        assert!(decode_cursor("aéb").is_err());
    }

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}

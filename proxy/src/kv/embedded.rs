//! The embedded backend: one redb file on this machine.
//!
//! Keys are stored as `namespace 0x00 key`, so each namespace is one
//! ordered range and a prefix listing is a range scan. A record is
//! `version (1 byte) | expiry in ms (u64, 0 for none) | metadata length
//! (u32, u32::MAX for none) | metadata | value`. Every write commits with
//! redb's immediate durability, so an acknowledged write survives the
//! process being killed. Expired records read as missing at once and are
//! deleted by a background sweep.

use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{
    decode_cursor, encode_cursor, now_ms, prefix_end, Entry, KvError, KvStore, ListOptions,
    ListPage, ListedKey,
};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const RECORD_VERSION: u8 = 1;
const NO_METADATA: u32 = u32::MAX;
const BACKEND: &str = "embedded";

/// How long an operation waits for a database file that another process
/// (the one being upgraded from) still holds.
const LOCKED_WAIT: Duration = Duration::from_secs(10);

/// The redb-backed store.
pub struct EmbeddedStore {
    db: Arc<OnceLock<Arc<Database>>>,
    path: std::path::PathBuf,
}

impl EmbeddedStore {
    /// Opens or creates the database at `path` and starts a thread that
    /// deletes expired records every `sweep_interval`.
    ///
    /// redb allows one process per file. When another process has the
    /// file open, which happens while a new process takes over from an old one
    /// during an upgrade, the store opens in the background as soon as the
    /// file is free, and operations wait for it up to 10 seconds.
    pub fn open(path: &Path, sweep_interval: Duration) -> Result<Self, KvError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                failed(format!(
                    "cannot create the directory {}: {e}",
                    parent.display()
                ))
            })?;
        }
        let cell = Arc::new(OnceLock::new());
        match open_database(path) {
            Ok(db) => {
                let _ = cell.set(Arc::new(db));
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                tracing::warn!(
                    path = %path.display(),
                    "another process holds the key-value file; it opens when that process exits"
                );
                let waiting = cell.clone();
                let path = path.to_path_buf();
                std::thread::Builder::new()
                    .name("actias-kv-open".into())
                    .spawn(move || loop {
                        std::thread::sleep(Duration::from_millis(100));
                        match open_database(&path) {
                            Ok(db) => {
                                let _ = waiting.set(Arc::new(db));
                                tracing::info!(path = %path.display(), "key-value file opened");
                                return;
                            }
                            Err(redb::DatabaseError::DatabaseAlreadyOpen) => continue,
                            Err(e) => {
                                tracing::error!(error = %e, "cannot open the key-value file");
                                return;
                            }
                        }
                    })
                    .map_err(|e| failed(format!("cannot start waiting for the file: {e}")))?;
            }
            Err(e) => return Err(failed(format!("cannot open {}: {e}", path.display()))),
        }

        let weak = Arc::downgrade(&cell);
        std::thread::Builder::new()
            .name("actias-kv-sweep".into())
            .spawn(move || sweep_until_closed(weak, sweep_interval))
            .map_err(|e| failed(format!("cannot start the expiry sweep: {e}")))?;
        Ok(Self {
            db: cell,
            path: path.to_path_buf(),
        })
    }

    /// Returns the database, waiting while another process has the file open.
    async fn database(&self) -> Result<Arc<Database>, KvError> {
        let deadline = tokio::time::Instant::now() + LOCKED_WAIT;
        loop {
            if let Some(db) = self.db.get() {
                return Ok(db.clone());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(KvError::Timeout {
                    backend: BACKEND,
                    detail: format!(
                        "another process holds the key-value file {} (a running proxy, or the \
                         old process during an upgrade); `actias kv` needs the proxy stopped",
                        self.path.display()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, KvError> + Send + 'static,
    ) -> Result<T, KvError> {
        let db = self.database().await?;
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|e| failed(format!("the store task failed: {e}")))?
    }
}

fn open_database(path: &Path) -> Result<Database, redb::DatabaseError> {
    let db = Database::create(path)?;
    let created = (|| -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(TABLE)?;
        txn.commit()?;
        Ok(())
    })();
    if let Err(e) = created {
        return Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(
            e.to_string(),
        )));
    }
    Ok(db)
}

#[async_trait]
impl KvStore for EmbeddedStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Entry>, KvError> {
        let stored_key = stored_key(namespace, key);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(failed)?;
            let table = txn.open_table(TABLE).map_err(failed)?;
            let Some(record) = table.get(stored_key.as_slice()).map_err(failed)? else {
                return Ok(None);
            };
            let entry = decode(record.value())?;
            Ok(live(entry))
        })
        .await
    }

    async fn put(&self, namespace: &str, key: &[u8], entry: Entry) -> Result<(), KvError> {
        let stored_key = stored_key(namespace, key);
        self.blocking(move |db| {
            let record = encode(&entry);
            let txn = db.begin_write().map_err(failed)?;
            {
                let mut table = txn.open_table(TABLE).map_err(failed)?;
                table
                    .insert(stored_key.as_slice(), record.as_slice())
                    .map_err(failed)?;
            }
            txn.commit().map_err(failed)
        })
        .await
    }

    async fn delete(&self, namespace: &str, key: &[u8]) -> Result<(), KvError> {
        let stored_key = stored_key(namespace, key);
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(failed)?;
            {
                let mut table = txn.open_table(TABLE).map_err(failed)?;
                table.remove(stored_key.as_slice()).map_err(failed)?;
            }
            txn.commit().map_err(failed)
        })
        .await
    }

    async fn list(&self, namespace: &str, options: ListOptions) -> Result<ListPage, KvError> {
        let mut start = stored_key(namespace, &options.prefix);
        let lower = match &options.cursor {
            Some(cursor) => {
                let after = decode_cursor(cursor)?;
                if !after.starts_with(&options.prefix) {
                    return Err(KvError::Invalid(
                        "the cursor belongs to another prefix; pass the same prefix as the \
                         call that returned it"
                            .into(),
                    ));
                }
                start = stored_key(namespace, &after);
                Bound::Excluded(start)
            }
            None => Bound::Included(start),
        };
        let upper = match prefix_end(&options.prefix) {
            Some(end) => stored_key(namespace, &end),
            // Past every key of the namespace: `namespace 0x01`.
            None => {
                let mut end = namespace.as_bytes().to_vec();
                end.push(1);
                end
            }
        };
        let prefix_len = namespace.len() + 1;
        let limit = options.limit;
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(failed)?;
            let table = txn.open_table(TABLE).map_err(failed)?;
            let lower: Bound<&[u8]> = match &lower {
                Bound::Included(k) => Bound::Included(k.as_slice()),
                Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
                Bound::Unbounded => Bound::Unbounded,
            };
            let upper: Bound<&[u8]> = Bound::Excluded(upper.as_slice());
            let range = table.range((lower, upper)).map_err(failed)?;
            let mut keys = Vec::new();
            let mut more = false;
            for item in range {
                let (key, record) = item.map_err(failed)?;
                let Some(entry) = live(decode(record.value())?) else {
                    continue;
                };
                if keys.len() == limit {
                    more = true;
                    break;
                }
                keys.push(ListedKey {
                    name: Bytes::copy_from_slice(&key.value()[prefix_len..]),
                    metadata: entry.metadata,
                    expires_at_ms: entry.expires_at_ms,
                });
            }
            let cursor = more
                .then(|| keys.last().map(|k: &ListedKey| encode_cursor(&k.name)))
                .flatten();
            Ok(ListPage { keys, cursor })
        })
        .await
    }

    async fn ping(&self) -> Result<(), KvError> {
        // A readiness probe returns at once while the file is locked, with
        // the reason, instead of waiting for the lock.
        if self.db.get().is_none() {
            return Err(failed(format!(
                "another process holds {}; this process opens it when that one exits, so stop \
                 it or give this config another kv.embedded.path",
                self.path.display()
            )));
        }
        self.blocking(|db| db.begin_read().map(|_| ()).map_err(failed))
            .await
    }
}

fn failed(error: impl std::fmt::Display) -> KvError {
    KvError::Backend {
        backend: BACKEND,
        detail: error.to_string(),
    }
}

fn stored_key(namespace: &str, key: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(namespace.len() + 1 + key.len());
    stored.extend_from_slice(namespace.as_bytes());
    stored.push(0);
    stored.extend_from_slice(key);
    stored
}

fn encode(entry: &Entry) -> Vec<u8> {
    let metadata = entry.metadata.as_deref().unwrap_or("");
    let mut record = Vec::with_capacity(13 + metadata.len() + entry.value.len());
    record.push(RECORD_VERSION);
    record.extend_from_slice(&entry.expires_at_ms.unwrap_or(0).to_be_bytes());
    let length = match &entry.metadata {
        Some(m) => m.len() as u32,
        None => NO_METADATA,
    };
    record.extend_from_slice(&length.to_be_bytes());
    record.extend_from_slice(metadata.as_bytes());
    record.extend_from_slice(&entry.value);
    record
}

fn decode(record: &[u8]) -> Result<Entry, KvError> {
    let corrupt = || failed("a stored record is corrupt");
    if record.len() < 13 || record[0] != RECORD_VERSION {
        return Err(corrupt());
    }
    let expires = u64::from_be_bytes(record[1..9].try_into().map_err(|_| corrupt())?);
    let length = u32::from_be_bytes(record[9..13].try_into().map_err(|_| corrupt())?);
    let (metadata, value) = if length == NO_METADATA {
        (None, &record[13..])
    } else {
        let end = 13 + length as usize;
        let text = record.get(13..end).ok_or_else(corrupt)?;
        let text = String::from_utf8(text.to_vec()).map_err(|_| corrupt())?;
        (Some(text), &record[end..])
    };
    Ok(Entry {
        value: Bytes::copy_from_slice(value),
        metadata,
        expires_at_ms: (expires != 0).then_some(expires),
    })
}

/// Returns the entry unless it has expired.
fn live(entry: Entry) -> Option<Entry> {
    match entry.expires_at_ms {
        Some(expires) if expires <= now_ms() => None,
        _ => Some(entry),
    }
}

fn sweep_until_closed(cell: Weak<OnceLock<Arc<Database>>>, interval: Duration) {
    loop {
        std::thread::sleep(interval);
        let Some(cell) = cell.upgrade() else {
            return;
        };
        let Some(db) = cell.get() else {
            continue;
        };
        if let Err(e) = sweep(db) {
            tracing::warn!(error = %e, "the expiry sweep of the embedded store failed");
        }
    }
}

/// Deletes every expired record in one write transaction.
fn sweep(db: &Database) -> Result<(), KvError> {
    let now = now_ms();
    let txn = db.begin_write().map_err(failed)?;
    {
        let mut table = txn.open_table(TABLE).map_err(failed)?;
        table
            .retain(|_, record| {
                decode(record).map_or(true, |entry| entry.expires_at_ms.is_none_or(|e| e > now))
            })
            .map_err(failed)?;
    }
    txn.commit().map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn locked_file_reports_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        let first = EmbeddedStore::open(&path, Duration::from_secs(3600)).unwrap();
        let second = EmbeddedStore::open(&path, Duration::from_secs(3600)).unwrap();
        first.ping().await.unwrap();

        let error = second.ping().await.unwrap_err().to_string();
        assert!(error.contains("another process holds"), "{error}");
        assert!(error.contains("kv.redb"), "{error}");

        // Once the first store closes, the second opens the file.
        drop(first);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while second.ping().await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the file never opened"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

//! The ScyllaDB backend, also usable with Apache Cassandra 4 and later.
//!
//! Two tables in the configured keyspace, both created at start-up if
//! missing:
//! - `kv_entries`, keyed by `(namespace, key)`: every key is its own
//!   partition, so point reads and writes spread over the cluster and no
//!   namespace becomes a hot partition;
//! - `kv_keys`, partitioned by namespace and clustered by key in byte
//!   order: the index that prefix listings scan, with the last key of a
//!   page as the cursor.
//!
//! Every statement is prepared, idempotent, runs at the configured
//! consistency (LOCAL_QUORUM by default) and has a client timeout, so a
//! hung node costs one timeout. Expiry uses `USING TTL`, rounded up to a
//! whole second. Reads compare the stored expiry in milliseconds, so a key
//! never reads as live after its expiry time.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::ExecutionError;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Consistency;

use super::{
    decode_cursor, encode_cursor, now_ms, prefix_end, Entry, KvError, KvStore, ListOptions,
    ListPage, ListedKey,
};
use crate::config::ScyllaSection;

const BACKEND: &str = "scylla";

struct Statements {
    get: PreparedStatement,
    put_entry: PreparedStatement,
    put_key: PreparedStatement,
    delete_entry: PreparedStatement,
    delete_key: PreparedStatement,
    /// Listing from a prefix (`>=`) or after a cursor (`>`), with or
    /// without an upper bound.
    list_from: PreparedStatement,
    list_from_bounded: PreparedStatement,
    list_after: PreparedStatement,
    list_after_bounded: PreparedStatement,
    ping: PreparedStatement,
}

/// The ScyllaDB-backed store.
pub struct ScyllaStore {
    session: Session,
    statements: Statements,
}

impl ScyllaStore {
    /// Connects, creates the keyspace and tables if missing, and prepares
    /// every statement.
    pub async fn connect(section: &ScyllaSection) -> Result<Self, KvError> {
        let session = SessionBuilder::new()
            .known_nodes(&section.nodes)
            .connection_timeout(Duration::from_millis(section.connect_timeout_ms))
            .build()
            .await
            .map_err(|e| {
                failed(format!(
                    "cannot connect to {}: {e}",
                    section.nodes.join(", ")
                ))
            })?;

        let keyspace = &section.keyspace;
        let schema = [
            format!(
                "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {}",
                section.replication_literal()
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {keyspace}.kv_entries (namespace text, key blob, \
                 value blob, metadata text, expires_at bigint, PRIMARY KEY ((namespace, key)))"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {keyspace}.kv_keys (namespace text, key blob, \
                 metadata text, expires_at bigint, PRIMARY KEY ((namespace), key)) \
                 WITH CLUSTERING ORDER BY (key ASC)"
            ),
        ];
        for statement in schema {
            session
                .query_unpaged(statement.as_str(), &[])
                .await
                .map_err(|e| failed(format!("cannot create the schema ({statement}): {e}")))?;
        }

        let consistency = section.consistency()?;
        let timeout = Duration::from_millis(section.request_timeout_ms);
        let prepare = |text: String| {
            let session = &session;
            async move {
                let mut statement = session
                    .prepare(text.as_str())
                    .await
                    .map_err(|e| failed(format!("cannot prepare `{text}`: {e}")))?;
                statement.set_consistency(consistency);
                statement.set_is_idempotent(true);
                statement.set_request_timeout(Some(timeout));
                Ok::<_, KvError>(statement)
            }
        };
        let list = |comparison: &str, bounded: bool| {
            let upper = if bounded { " AND key < ?" } else { "" };
            format!(
                "SELECT key, metadata, expires_at FROM {keyspace}.kv_keys WHERE namespace = ? \
                 AND key {comparison} ?{upper} LIMIT ?"
            )
        };
        let statements = Statements {
            get: prepare(format!(
                "SELECT value, metadata, expires_at FROM {keyspace}.kv_entries \
                 WHERE namespace = ? AND key = ?"
            ))
            .await?,
            put_entry: prepare(format!(
                "INSERT INTO {keyspace}.kv_entries (namespace, key, value, metadata, expires_at) \
                 VALUES (?, ?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            put_key: prepare(format!(
                "INSERT INTO {keyspace}.kv_keys (namespace, key, metadata, expires_at) \
                 VALUES (?, ?, ?, ?) USING TTL ?"
            ))
            .await?,
            delete_entry: prepare(format!(
                "DELETE FROM {keyspace}.kv_entries WHERE namespace = ? AND key = ?"
            ))
            .await?,
            delete_key: prepare(format!(
                "DELETE FROM {keyspace}.kv_keys WHERE namespace = ? AND key = ?"
            ))
            .await?,
            list_from: prepare(list(">=", false)).await?,
            list_from_bounded: prepare(list(">=", true)).await?,
            list_after: prepare(list(">", false)).await?,
            list_after_bounded: prepare(list(">", true)).await?,
            ping: prepare("SELECT release_version FROM system.local".to_string()).await?,
        };
        Ok(Self {
            session,
            statements,
        })
    }

    /// Reads one batch of index rows after (or from) `start`.
    async fn list_batch(
        &self,
        namespace: &str,
        start: &[u8],
        inclusive: bool,
        end: Option<&[u8]>,
        limit: i32,
    ) -> Result<Vec<(Vec<u8>, Option<String>, Option<i64>)>, KvError> {
        let statements = &self.statements;
        let result = match (inclusive, end) {
            (true, None) => {
                self.session
                    .execute_unpaged(&statements.list_from, (namespace, start, limit))
                    .await
            }
            (true, Some(end)) => {
                self.session
                    .execute_unpaged(
                        &statements.list_from_bounded,
                        (namespace, start, end, limit),
                    )
                    .await
            }
            (false, None) => {
                self.session
                    .execute_unpaged(&statements.list_after, (namespace, start, limit))
                    .await
            }
            (false, Some(end)) => {
                self.session
                    .execute_unpaged(
                        &statements.list_after_bounded,
                        (namespace, start, end, limit),
                    )
                    .await
            }
        }
        .map_err(execution)?;
        let rows = result.into_rows_result().map_err(failed)?;
        rows.rows::<(Vec<u8>, Option<String>, Option<i64>)>()
            .map_err(failed)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed)
    }
}

#[async_trait]
impl KvStore for ScyllaStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Entry>, KvError> {
        let result = self
            .session
            .execute_unpaged(&self.statements.get, (namespace, key))
            .await
            .map_err(execution)?;
        let rows = result.into_rows_result().map_err(failed)?;
        let row = rows
            .maybe_first_row::<(Option<Vec<u8>>, Option<String>, Option<i64>)>()
            .map_err(failed)?;
        let Some((value, metadata, expires_at)) = row else {
            return Ok(None);
        };
        let expires_at_ms = expires_at.map(|e| e as u64);
        if expires_at_ms.is_some_and(|e| e <= now_ms()) {
            return Ok(None);
        }
        Ok(Some(Entry {
            value: Bytes::from(value.unwrap_or_default()),
            metadata,
            expires_at_ms,
        }))
    }

    async fn put(&self, namespace: &str, key: &[u8], entry: Entry) -> Result<(), KvError> {
        let expires_at = entry.expires_at_ms.map(|e| e as i64);
        // 0 means no TTL. A TTL rounds up so that the stored expiry, not the
        // TTL, decides when the key stops being readable.
        let ttl: i32 = match entry.expires_at_ms {
            Some(expires) => {
                let remaining = expires.saturating_sub(now_ms());
                (remaining.div_ceil(1000) + 1).min(i32::MAX as u64) as i32
            }
            None => 0,
        };
        let value: &[u8] = &entry.value;
        let metadata = entry.metadata.as_deref();
        let write_entry = self.session.execute_unpaged(
            &self.statements.put_entry,
            (namespace, key, value, metadata, expires_at, ttl),
        );
        let write_key = self.session.execute_unpaged(
            &self.statements.put_key,
            (namespace, key, metadata, expires_at, ttl),
        );
        let (entry_result, key_result) = tokio::join!(write_entry, write_key);
        entry_result.map_err(execution)?;
        key_result.map_err(execution)?;
        Ok(())
    }

    async fn delete(&self, namespace: &str, key: &[u8]) -> Result<(), KvError> {
        let delete_entry = self
            .session
            .execute_unpaged(&self.statements.delete_entry, (namespace, key));
        let delete_key = self
            .session
            .execute_unpaged(&self.statements.delete_key, (namespace, key));
        let (entry_result, key_result) = tokio::join!(delete_entry, delete_key);
        entry_result.map_err(execution)?;
        key_result.map_err(execution)?;
        Ok(())
    }

    async fn list(&self, namespace: &str, options: ListOptions) -> Result<ListPage, KvError> {
        let end = prefix_end(&options.prefix);
        let (mut start, mut inclusive) = match &options.cursor {
            Some(cursor) => {
                let after = decode_cursor(cursor)?;
                if !after.starts_with(&options.prefix) {
                    return Err(KvError::Invalid(
                        "the cursor belongs to another prefix; pass the same prefix as the \
                         call that returned it"
                            .into(),
                    ));
                }
                (after, false)
            }
            None => (options.prefix.to_vec(), true),
        };

        let now = now_ms();
        let mut keys = Vec::new();
        let batch = (options.limit + 1) as i32;
        loop {
            let rows = self
                .list_batch(namespace, &start, inclusive, end.as_deref(), batch)
                .await?;
            let exhausted = rows.len() < batch as usize;
            for (key, metadata, expires_at) in rows {
                start = key.clone();
                inclusive = false;
                let expires_at_ms = expires_at.map(|e| e as u64);
                if expires_at_ms.is_some_and(|e| e <= now) {
                    continue;
                }
                if keys.len() == options.limit {
                    let cursor = keys.last().map(|k: &ListedKey| encode_cursor(&k.name));
                    return Ok(ListPage { keys, cursor });
                }
                keys.push(ListedKey {
                    name: Bytes::from(key),
                    metadata,
                    expires_at_ms,
                });
            }
            if exhausted {
                return Ok(ListPage { keys, cursor: None });
            }
        }
    }

    async fn ping(&self) -> Result<(), KvError> {
        self.session
            .execute_unpaged(&self.statements.ping, &[])
            .await
            .map(|_| ())
            .map_err(execution)
    }
}

fn failed(error: impl std::fmt::Display) -> KvError {
    KvError::Backend {
        backend: BACKEND,
        detail: error.to_string(),
    }
}

fn execution(error: ExecutionError) -> KvError {
    match error {
        ExecutionError::RequestTimeout(_) => KvError::Timeout {
            backend: BACKEND,
            detail: error.to_string(),
        },
        other => failed(other),
    }
}

/// Parses a consistency level name from the config.
pub fn parse_consistency(name: &str) -> Option<Consistency> {
    Some(match name.to_ascii_lowercase().as_str() {
        "one" => Consistency::One,
        "two" => Consistency::Two,
        "three" => Consistency::Three,
        "quorum" => Consistency::Quorum,
        "all" => Consistency::All,
        "local_quorum" => Consistency::LocalQuorum,
        "each_quorum" => Consistency::EachQuorum,
        "local_one" => Consistency::LocalOne,
        _ => return None,
    })
}

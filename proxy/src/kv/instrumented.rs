//! Metrics around any backend: one count and one duration per operation.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{Entry, KvError, KvStore, ListOptions, ListPage};
use crate::metrics::METRICS;

/// A store that records `actias_kv_operations_total` and
/// `actias_kv_operation_duration_seconds` for the store it wraps.
pub struct Instrumented {
    inner: Arc<dyn KvStore>,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn KvStore>) -> Self {
        for operation in ["get", "put", "delete", "list"] {
            for outcome in ["ok", "invalid", "timeout", "error"] {
                METRICS
                    .kv_operations
                    .with_label_values(&[inner.backend(), operation, outcome])
                    .reset();
            }
        }
        Self { inner }
    }

    fn record<T>(&self, operation: &str, started: Instant, result: &Result<T, KvError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(KvError::Invalid(_)) => "invalid",
            Err(KvError::Timeout { .. }) => "timeout",
            Err(KvError::Backend { .. }) => "error",
        };
        let backend = self.inner.backend();
        METRICS
            .kv_operations
            .with_label_values(&[backend, operation, outcome])
            .inc();
        METRICS
            .kv_duration
            .with_label_values(&[backend, operation])
            .observe(started.elapsed().as_secs_f64());
    }
}

#[async_trait]
impl KvStore for Instrumented {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn get(&self, namespace: &str, key: &[u8]) -> Result<Option<Entry>, KvError> {
        let started = Instant::now();
        let result = self.inner.get(namespace, key).await;
        self.record("get", started, &result);
        result
    }

    async fn put(&self, namespace: &str, key: &[u8], entry: Entry) -> Result<(), KvError> {
        let started = Instant::now();
        let result = self.inner.put(namespace, key, entry).await;
        self.record("put", started, &result);
        result
    }

    async fn delete(&self, namespace: &str, key: &[u8]) -> Result<(), KvError> {
        let started = Instant::now();
        let result = self.inner.delete(namespace, key).await;
        self.record("delete", started, &result);
        result
    }

    async fn list(&self, namespace: &str, options: ListOptions) -> Result<ListPage, KvError> {
        let started = Instant::now();
        let result = self.inner.list(namespace, options).await;
        self.record("list", started, &result);
        result
    }

    async fn ping(&self) -> Result<(), KvError> {
        self.inner.ping().await
    }
}

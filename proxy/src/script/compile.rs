//! Compiling Luau source to bytecode, cached by content hash.

use std::sync::Arc;

use moka::sync::Cache;
use sha2::{Digest, Sha256};

/// Compiled Luau bytecode of one script.
pub type Bytecode = Arc<[u8]>;

/// A syntax error in a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// Line of the error, when the compiler reported one.
    pub line: Option<usize>,
    pub message: String,
}

/// Compiled scripts keyed by the SHA-256 of their source.
///
/// Two routes with the same source share one entry, and a reload compiles
/// only the scripts whose content changed. Failed compilations are not
/// cached.
#[derive(Clone)]
pub struct ScriptCache {
    compiled: Cache<[u8; 32], Bytecode>,
}

impl ScriptCache {
    /// Creates a cache that holds up to `capacity` compiled scripts.
    pub fn new(capacity: u64) -> Self {
        Self {
            compiled: Cache::new(capacity),
        }
    }

    /// Returns the bytecode of `source`, compiling it on a cache miss.
    pub fn get_or_compile(&self, source: &[u8]) -> Result<Bytecode, CompileError> {
        let hash: [u8; 32] = Sha256::digest(source).into();
        let lookups = &crate::metrics::METRICS.script_cache;
        if let Some(bytecode) = self.compiled.get(&hash) {
            lookups.with_label_values(&["hit"]).inc();
            return Ok(bytecode);
        }
        lookups.with_label_values(&["miss"]).inc();
        let bytecode = compile(source)?;
        self.compiled.insert(hash, bytecode.clone());
        Ok(bytecode)
    }
}

/// Compiles Luau `source` with optimisations and line information kept
/// for tracebacks.
pub fn compile(source: &[u8]) -> Result<Bytecode, CompileError> {
    let compiler = mlua::chunk::Compiler::new()
        .set_optimization_level(2)
        .set_debug_level(1);
    match compiler.compile(source) {
        Ok(bytecode) => Ok(bytecode.into()),
        Err(mlua::Error::SyntaxError { message, .. }) => Err(parse_compile_message(&message)),
        Err(other) => Err(CompileError {
            line: None,
            message: other.to_string(),
        }),
    }
}

/// Splits a Luau compiler message such as `3: Expected 'end'` (mlua may
/// keep a leading `:` or a chunk name) into its line and text.
fn parse_compile_message(message: &str) -> CompileError {
    for (index, _) in
        std::iter::once((0, ' ')).chain(message.match_indices(':').map(|(i, _)| (i + 1, ':')))
    {
        let rest = &message[index..];
        if let Some((line, text)) = rest.split_once(':') {
            if let Ok(line) = line.trim().parse() {
                return CompileError {
                    line: Some(line),
                    message: text.trim().to_string(),
                };
            }
        }
    }
    CompileError {
        line: None,
        message: message.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_error_reports_line() {
        let error = compile(b"local x = 1\nlocal = 2\n").unwrap_err();
        assert_eq!(error.line, Some(2));
        assert!(!error.message.is_empty());
    }

    #[test]
    fn cache_reuses_bytecode_for_same_source() {
        let cache = ScriptCache::new(10);
        let first = cache.get_or_compile(b"return 1").unwrap();
        let second = cache.get_or_compile(b"return 1").unwrap();
        assert!(Arc::ptr_eq(&first, &second));
    }
}

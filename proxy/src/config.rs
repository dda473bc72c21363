//! Configuration: reading the YAML file and checking every value.
//!
//! `load` returns either a checked [`Config`] or every problem found, each
//! with the file, line and key, so that an operator fixes them in one pass.
//! Turning a checked config into routes, origins and compiled scripts is
//! left to `snapshot`.

mod file;
mod locate;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

pub use file::{
    AdminSection, ConfigFile, EmbeddedSection, FetchSection, KvBackend, KvSection, LimitsSection,
    ListenerSection, LogFormat, LogSection, OnFailure, OriginSection, RouteLimitsSection,
    RouteSection, ScyllaSection, SecretSource, ServerSection, DEFAULT_ADMIN, DEFAULT_LISTEN,
};
pub use locate::Locations;

/// A checked configuration and where it came from.
#[derive(Debug)]
pub struct Config {
    /// The file that was read.
    pub path: PathBuf,
    /// Directory that relative script paths start from.
    pub base_dir: PathBuf,
    /// The parsed and checked content.
    pub file: ConfigFile,
    /// Line numbers of keys, for problems found after loading.
    pub locations: Locations,
}

impl Config {
    /// Returns a problem located at `key` in this config file.
    pub fn problem(&self, key: impl Into<String>, message: impl Into<String>) -> Problem {
        let key = key.into();
        Problem {
            file: self.path.clone(),
            line: self.locations.line_of(&key),
            key: Some(key),
            message: message.into(),
        }
    }

    /// Resolves a script path from the config against the config's directory.
    pub fn script_path(&self, script: &str) -> PathBuf {
        self.base_dir.join(script)
    }
}

/// One thing wrong with a configuration or a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File that contains the problem.
    pub file: PathBuf,
    /// Line in that file, when known.
    pub line: Option<usize>,
    /// YAML key path such as `routes[1].origin`, for problems in the config.
    pub key: Option<String>,
    /// Description of the problem and its fix.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one load, in file order.
#[derive(Debug, Clone, Default)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    /// Lists the problems file by file, in the order each file was first
    /// reported, and by line within a file. Problems without a line come
    /// last in their file's list.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut files: Vec<&PathBuf> = Vec::new();
        for problem in &self.0 {
            if !files.contains(&&problem.file) {
                files.push(&problem.file);
            }
        }
        let mut sorted: Vec<&Problem> = self.0.iter().collect();
        sorted.sort_by_key(|problem| {
            let file = files.iter().position(|file| **file == problem.file);
            (file, problem.line.unwrap_or(usize::MAX))
        });
        for (index, problem) in sorted.into_iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Reads and checks the config file at `path`.
pub fn load(path: &Path) -> Result<Config, Problems> {
    let (config, problems) = load_partial(path);
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(Problems(problems)),
    }
}

/// Reads and checks the config file at `path`, keeping every section and
/// item that parsed even when others have problems, so that later stages
/// (such as compiling scripts) can report their problems in the same run.
pub fn load_partial(path: &Path) -> (Option<Config>, Vec<Problem>) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            let problem = Problem {
                file: path.to_path_buf(),
                line: None,
                key: None,
                message: format!("cannot read the config file: {e}"),
            };
            return (None, vec![problem]);
        }
    };
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse(path, base_dir, &text)
}

/// Parses and checks config `text` as if read from `path`; see
/// [`load_partial`].
pub fn parse(path: &Path, base_dir: PathBuf, text: &str) -> (Option<Config>, Vec<Problem>) {
    let locations = Locations::parse(text);
    let deserialized = validate::deserialize(text);
    let mut problems: Vec<Problem> = deserialized
        .errors
        .into_iter()
        .map(|error| {
            let line = error.line.or_else(|| locations.line_of(&error.key));
            Problem {
                file: path.to_path_buf(),
                line,
                key: (!error.key.is_empty()).then_some(error.key),
                message: error.message,
            }
        })
        .collect();
    let Some(file) = deserialized.file else {
        return (None, problems);
    };

    let config = Config {
        path: path.to_path_buf(),
        base_dir,
        file,
        locations,
    };
    problems.extend(validate::check(&config, &deserialized.broken_origins));
    problems.sort_by_key(|problem| problem.line.unwrap_or(usize::MAX));
    (Some(config), problems)
}

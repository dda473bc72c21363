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
    ConfigFile, LimitsSection, ListenerSection, OriginSection, RouteSection, ServerSection,
    DEFAULT_LISTEN,
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
    /// What is wrong and how to fix it.
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
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.0.iter().enumerate() {
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
    let text = std::fs::read_to_string(path).map_err(|e| {
        Problems(vec![Problem {
            file: path.to_path_buf(),
            line: None,
            key: None,
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    let base_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse(path, base_dir, &text)
}

/// Parses and checks config `text` as if read from `path`.
pub fn parse(path: &Path, base_dir: PathBuf, text: &str) -> Result<Config, Problems> {
    let locations = Locations::parse(text);
    let located = |key: String, message: String| Problem {
        file: path.to_path_buf(),
        line: locations.line_of(&key),
        key: (!key.is_empty()).then_some(key),
        message,
    };

    let file = match validate::deserialize(text) {
        Ok(file) => file,
        Err(errors) => {
            let problems = errors
                .into_iter()
                .map(|error| match error.line {
                    Some(line) => Problem {
                        file: path.to_path_buf(),
                        line: Some(line),
                        key: (!error.key.is_empty()).then_some(error.key),
                        message: error.message,
                    },
                    None => located(error.key, error.message),
                })
                .collect();
            return Err(Problems(problems));
        }
    };

    let config = Config {
        path: path.to_path_buf(),
        base_dir,
        file,
        locations,
    };
    let problems = validate::check(&config);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(Problems(problems))
    }
}

//! The `actias` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use actias::server::{self, StartError};

#[derive(Parser)]
#[command(
    name = "actias",
    version,
    about = "A reverse proxy that runs Lua fetch handlers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy for development: reload on every save, log route
    /// decisions in text, and use the embedded key-value store, seeded from
    /// a JSON file when one is given.
    Dev {
        /// Config file to load.
        #[arg(long, default_value = "conf/actias.yaml")]
        config: PathBuf,
        /// JSON file of `{"namespace": [{"key": ..., "value": ...}]}` to
        /// import into the store at start.
        #[arg(long)]
        seed: Option<PathBuf>,
    },
    /// Run the proxy.
    Run {
        /// Config file to load.
        #[arg(long, default_value = "conf/actias.yaml")]
        config: PathBuf,
        /// Take over the listening sockets of a running Actias (zero-downtime
        /// upgrade); send SIGQUIT to the old process after starting this one.
        #[arg(long)]
        upgrade: bool,
    },
    /// Load the config and compile every script, report every problem, and
    /// exit with status 1 if there is any.
    Check {
        /// Config file to check.
        #[arg(long, default_value = "conf/actias.yaml")]
        config: PathBuf,
    },
    /// Run the Lua test files (`*_test.lua`) under a directory or one file.
    Test {
        /// Directory to search, or a single test file.
        #[arg(default_value = "conf/scripts")]
        path: PathBuf,
    },
    /// Read and write the configured key-value store.
    Kv {
        /// Config file whose `kv` section names the store.
        #[arg(long, default_value = "conf/actias.yaml")]
        config: PathBuf,
        #[command(subcommand)]
        command: KvCommand,
    },
}

#[derive(Subcommand)]
enum KvCommand {
    /// Print the value of a key to standard output.
    Get { namespace: String, key: String },
    /// Store a value.
    Put {
        namespace: String,
        key: String,
        value: String,
        /// Seconds until the key expires.
        #[arg(long)]
        ttl: Option<u64>,
        /// Metadata as a JSON object, at most 1024 bytes.
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Delete a key.
    Delete { namespace: String, key: String },
    /// Print the keys in byte order, one per line.
    List {
        namespace: String,
        /// Only keys that start with this prefix.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Maximum number of keys to print.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Store every record of a JSON file in the Workers KV bulk format.
    Import { namespace: String, file: PathBuf },
    /// Write every live record as JSON in the Workers KV bulk format, to a
    /// file or to standard output.
    Export {
        namespace: String,
        file: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Dev { config, seed } => start(
            &config,
            server::RunOptions {
                upgrade: false,
                dev: true,
                seed,
            },
        ),
        Command::Run { config, upgrade } => start(
            &config,
            server::RunOptions {
                upgrade,
                ..Default::default()
            },
        ),
        Command::Test { path } => run_tests(&path),
        Command::Kv { config, command } => match run_kv(&config, command) {
            Ok(code) => code,
            Err(message) => {
                eprintln!("actias kv: {message}");
                ExitCode::FAILURE
            }
        },
        Command::Check { config } => match server::load(&config, 1, None) {
            Ok((_, snapshot)) => {
                let routes = snapshot.routes.len();
                let scripts = snapshot.script_count;
                println!(
                    "{}: ok, {routes} route{}, {scripts} script{}",
                    config.display(),
                    if routes == 1 { "" } else { "s" },
                    if scripts == 1 { "" } else { "s" },
                );
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprintln!("{problems}");
                eprintln!("{}: {} problem(s)", config.display(), problems.0.len());
                ExitCode::FAILURE
            }
        },
    }
}

/// Runs one `actias kv` command against the store that `config` names.
fn run_kv(config: &std::path::Path, command: KvCommand) -> Result<ExitCode, String> {
    use std::io::Write;

    use actias::kv::{self, tool};

    let config = actias::config::load(config).map_err(|problems| problems.to_string())?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let store = kv::open(&config.file.kv, &config.base_dir)
            .await
            .map_err(|e| e.to_string())?;
        let store = store.as_ref();
        let stdout = std::io::stdout();
        match command {
            KvCommand::Get { namespace, key } => {
                match tool::get(store, &namespace, &key)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    Some(entry) => {
                        stdout
                            .lock()
                            .write_all(&entry.value)
                            .map_err(|e| e.to_string())?;
                    }
                    None => {
                        eprintln!("actias kv: key `{key}` not found in namespace `{namespace}`");
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            KvCommand::Put {
                namespace,
                key,
                value,
                ttl,
                metadata,
            } => {
                tool::put(
                    store,
                    &namespace,
                    &key,
                    value.into(),
                    ttl,
                    metadata.as_deref(),
                )
                .await
                .map_err(|e| e.to_string())?;
            }
            KvCommand::Delete { namespace, key } => {
                tool::delete(store, &namespace, &key)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            KvCommand::List {
                namespace,
                prefix,
                limit,
            } => {
                tool::list(store, &namespace, &prefix, limit, &mut stdout.lock())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            KvCommand::Import { namespace, file } => {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                let records: Vec<tool::Record> = serde_json::from_str(&text).map_err(|e| {
                    format!(
                        "{}: not a JSON array of {{\"key\", \"value\"}} records: {e}",
                        file.display()
                    )
                })?;
                let count = tool::import(store, &namespace, records)
                    .await
                    .map_err(|e| e.to_string())?;
                eprintln!("imported {count} keys into `{namespace}`");
            }
            KvCommand::Export { namespace, file } => {
                let records = tool::export(store, &namespace)
                    .await
                    .map_err(|e| e.to_string())?;
                let text = serde_json::to_string_pretty(&records).map_err(|e| e.to_string())?;
                match file {
                    Some(file) => std::fs::write(&file, text + "\n")
                        .map_err(|e| format!("cannot write {}: {e}", file.display()))?,
                    None => writeln!(stdout.lock(), "{text}").map_err(|e| e.to_string())?,
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs the proxy and turns a failure to start into an exit status.
fn start(config: &std::path::Path, options: server::RunOptions) -> ExitCode {
    match server::run(config, options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(StartError::Config(problems)) => {
            eprintln!("{problems}");
            eprintln!(
                "actias: not started; {} problem(s) in the config",
                problems.0.len()
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("actias: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `actias test` and prints one line per case and a summary.
fn run_tests(path: &std::path::Path) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("actias test: {e}");
            return ExitCode::FAILURE;
        }
    };
    let reports = runtime.block_on(actias::script_test::run_path(path));
    let (mut passed, mut failed) = (0, 0);
    for report in &reports {
        let file = report.path.display();
        if let Some(error) = &report.error {
            println!("FAIL {file}: {error}");
            failed += 1;
        }
        for (name, failure) in &report.cases {
            match failure {
                None => {
                    println!("ok   {file}: {name}");
                    passed += 1;
                }
                Some(message) => {
                    println!("FAIL {file}: {name}: {message}");
                    failed += 1;
                }
            }
        }
    }
    if reports.is_empty() {
        if path.exists() {
            println!("no *_test.lua files under {}", path.display());
        } else {
            println!(
                "{} not found; pass a directory or a test file",
                path.display()
            );
        }
        return ExitCode::FAILURE;
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

//! Shared test support: the real `actias` binary on an ephemeral port, a
//! real HTTP origin on loopback, and a raw-socket client for requests that
//! HTTP libraries would normalise.

#![allow(dead_code)]

pub mod origin;
pub mod raw;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use origin::Origin;

pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Path of the `actias` binary built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_actias")
}

/// Returns a loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// A directory holding a config file and its scripts.
pub struct ConfigDir {
    pub dir: tempfile::TempDir,
}

impl ConfigDir {
    /// Writes `actias.yaml` and each `(relative path, content)` script.
    pub fn new(config: &str, scripts: &[(&str, &str)]) -> TestResult<Self> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("actias.yaml"), config)?;
        for (path, content) in scripts {
            let full = dir.path().join(path);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(full, content)?;
        }
        Ok(Self { dir })
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("actias.yaml")
    }

    /// Runs `actias check` on this config.
    pub fn check(&self) -> TestResult<Output> {
        check(&self.config_path())
    }
}

/// Runs `actias check --config PATH`, with the secret that
/// conf/actias.example.yaml reads from the environment.
pub fn check(path: &Path) -> TestResult<Output> {
    Ok(Command::new(binary())
        .args(["check", "--config"])
        .arg(path)
        .env("ACTIAS_SESSION_KEY", "example-key-for-checks")
        .output()?)
}

/// A running proxy, killed when dropped.
pub struct Proxy {
    pub port: u16,
    /// Port of the admin listener.
    pub admin_port: u16,
    child: Child,
    log_path: PathBuf,
    config: ConfigDir,
}

impl Proxy {
    /// Starts the proxy with `config`, where `{port}` is replaced by the
    /// listening port, and waits until it accepts connections. Unless the
    /// config has an `admin` section, the admin listener gets a free port.
    pub fn start(config: &str, scripts: &[(&str, &str)]) -> TestResult<Self> {
        let port = free_port();
        let admin_port = free_port();
        let mut text = config
            .replace("{port}", &port.to_string())
            .replace("{admin_port}", &admin_port.to_string());
        if !text.starts_with("admin:") && !text.contains("\nadmin:") {
            text.push_str(&format!("\nadmin:\n  address: 127.0.0.1:{admin_port}\n"));
        }
        let config = ConfigDir::new(&text, scripts)?;
        let log_path = config.dir.path().join("actias.log");
        let child = spawn(&config.config_path(), &log_path)?;
        let mut proxy = Self {
            port,
            admin_port,
            child,
            log_path,
            config,
        };
        proxy.wait_ready()?;
        Ok(proxy)
    }

    /// Process id of the running proxy.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (such as `libc::SIGTERM`) to the proxy.
    pub fn signal(&self, signal: i32) -> TestResult {
        // SAFETY: kill(2) with a child's pid and a valid signal number has
        // no memory effects in this process.
        let result = unsafe { libc::kill(self.child.id() as i32, signal) };
        if result != 0 {
            return Err(format!("kill failed: {}", std::io::Error::last_os_error()).into());
        }
        Ok(())
    }

    /// Waits up to `limit` for the proxy to exit and returns its status.
    pub fn wait_exit(&mut self, limit: Duration) -> TestResult<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(None)
    }

    /// Starts a second process on the same config with `--upgrade`, which
    /// waits for this one to hand over its listeners on SIGQUIT.
    pub fn spawn_upgrade(&self) -> TestResult<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.dir.path().join("upgrade.log"))?;
        Ok(Command::new(binary())
            .args(["run", "--upgrade", "--config"])
            .arg(self.config.config_path())
            .env("RUST_LOG", "info,actias=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?)
    }

    /// Kills the proxy with SIGKILL, as a crash would, and starts it again
    /// on the same config, ports and data.
    pub fn kill_and_restart(&mut self) -> TestResult {
        self.child.kill()?;
        self.child.wait()?;
        self.child = spawn(&self.config.config_path(), &self.log_path)?;
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> TestResult {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("actias exited with {status}: {}", self.log()).into());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(format!("actias did not listen within 20 s: {}", self.log()).into())
    }

    /// Returns `http://127.0.0.1:ADMIN_PORT` followed by `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// Returns the log lines parsed as JSON objects; other lines are skipped.
    pub fn json_log(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Returns `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Returns everything the proxy has logged so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log_path) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// Waits up to two seconds for a log line containing every one of
    /// `parts`, and returns it.
    pub fn wait_log_line(&self, parts: &[&str]) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let log = self.log();
            let found = log
                .lines()
                .find(|line| parts.iter().all(|part| line.contains(part)));
            if let Some(line) = found {
                return Some(line.to_string());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn config_dir(&self) -> &Path {
        self.config.dir.path()
    }
}

fn spawn(config: &Path, log_path: &Path) -> TestResult<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)?;
    Ok(Command::new(binary())
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info,actias=debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?)
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns a blocking HTTP client that keeps connections alive and does
/// not follow redirects.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("build the HTTP client")
}

//! Hot reload under load: the config and a script are rewritten every half
//! second while clients send at least 1,000 requests per second, and no
//! request may fail or reach the wrong route.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{client, Proxy, TestResult};

fn live_config(version: usize, upgrade_sock: &str) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\nserver:\n  watch_interval_ms: 100\n  upgrade_sock: {upgrade_sock}\nlog:\n  access_log: false\nroutes:\n  - name: live-{}\n    default: true\n    script: live.lua\n  - name: other\n    hosts: [other.test]\n    script: other.lua\n",
        version % 2
    )
}

fn live_script(version: usize) -> String {
    format!(
        "add_event_listener(\"fetch\", function(request)\n    return {{body = \"script=v{version} route=\" .. request.route}}\nend)\n"
    )
}

const OTHER: &str = "add_event_listener(\"fetch\", function() return {body = \"other\"} end)\n";

/// Replaces `path` with `content` in one rename, as editors save.
fn write_atomically(path: &std::path::Path, content: &str) -> TestResult {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, content)?;
    std::fs::rename(&temporary, path)?;
    Ok(())
}

#[test]
fn reload_under_load_drops_nothing() -> TestResult {
    let seconds: u64 = std::env::var("ACTIAS_RELOAD_TEST_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("upgrade.sock");
    let proxy = Proxy::start(
        &live_config(0, &sock.display().to_string()),
        &[("live.lua", &live_script(0)), ("other.lua", OTHER)],
    )?;
    let config_path = proxy.config_dir().join("actias.yaml");
    let script_path = proxy.config_dir().join("live.lua");
    let port = proxy.port;

    let latest = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|thread| {
            let latest = latest.clone();
            let stop = stop.clone();
            std::thread::spawn(move || -> Result<usize, String> {
                let http = client();
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) {
                    let other = (sent + thread) % 5 == 0;
                    let host = if other { "other.test" } else { "live.test" };
                    let written_before = latest.load(Ordering::SeqCst);
                    let response = http
                        .get(format!("http://127.0.0.1:{port}/"))
                        .header("host", host)
                        .send()
                        .map_err(|e| format!("request failed: {e}"))?;
                    if response.status() != 200 {
                        return Err(format!("status {}", response.status()));
                    }
                    let body = response.text().map_err(|e| e.to_string())?;
                    let written_after = latest.load(Ordering::SeqCst);
                    if other {
                        if body != "other" {
                            return Err(format!("misrouted: other.test got {body:?}"));
                        }
                    } else {
                        check_live_body(&body, written_before, written_after)?;
                    }
                    sent += 1;
                }
                Ok(sent)
            })
        })
        .collect();

    let started = Instant::now();
    let mut version = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(500));
        version += 1;
        // Published before the files change, so that a client never sees a
        // version newer than the one it read as the latest.
        latest.store(version, Ordering::SeqCst);
        write_atomically(&script_path, &live_script(version))?;
        write_atomically(&config_path, &proxy_config_text(&proxy, version, &sock)?)?;
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut total = 0;
    for thread in load {
        total += thread.join().map_err(|_| "load thread panicked")??;
    }
    let rate = total as f64 / elapsed;
    assert!(rate >= 1000.0, "only {rate:.0} requests per second");
    let reloads = proxy.log().matches("config reloaded").count();
    assert!(
        reloads as u64 >= seconds,
        "only {reloads} reloads in {seconds} s"
    );
    Ok(())
}

/// Rewrites the test config for `version`, keeping the admin port.
fn proxy_config_text(proxy: &Proxy, version: usize, sock: &std::path::Path) -> TestResult<String> {
    let current = std::fs::read_to_string(proxy.config_dir().join("actias.yaml"))?;
    let admin = current
        .split("\nadmin:")
        .nth(1)
        .map(|rest| format!("\nadmin:{rest}"))
        .unwrap_or_default();
    let base = live_config(version, &sock.display().to_string())
        .replace("{port}", &proxy.port.to_string());
    Ok(format!("{base}{admin}"))
}

/// A live response names a script version that was written by the time the
/// response arrived, and the route name of one of the two configs.
fn check_live_body(body: &str, written_before: usize, written_after: usize) -> Result<(), String> {
    let rest = body
        .strip_prefix("script=v")
        .ok_or_else(|| format!("unexpected body {body:?}"))?;
    let (version, route) = rest
        .split_once(" route=")
        .ok_or_else(|| format!("unexpected body {body:?}"))?;
    let version: usize = version
        .parse()
        .map_err(|_| format!("bad version in {body:?}"))?;
    if version > written_after {
        return Err(format!("version {version} was not written yet: {body:?}"));
    }
    // Reloads poll every 100 ms, so a response may lag the newest write,
    // but never by more than a few versions.
    if version + 3 < written_before {
        return Err(format!(
            "stale version {version} after {written_before} was written"
        ));
    }
    if route != "live-0" && route != "live-1" {
        return Err(format!("misrouted: {body:?}"));
    }
    Ok(())
}

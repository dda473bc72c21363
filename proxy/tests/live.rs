//! Live operations: failed reloads, graceful stop, zero-downtime upgrade
//! and development mode. The reload-under-load test has a file of its own,
//! so that it does not share the CPU with these.

mod support;

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::raw::get_once;
use support::{client, Origin, Proxy, TestResult};

#[test]
fn failed_reload_keeps_running_config() -> TestResult {
    let proxy = Proxy::start(
        "listeners:\n  - address: 127.0.0.1:{port}\nserver:\n  watch: false\nroutes:\n  - name: r\n    default: true\n    script: s.lua\n",
        &[("s.lua", "add_event_listener(\"fetch\", function() return {body = \"good\"} end)")],
    )?;
    std::fs::write(
        proxy.config_dir().join("s.lua"),
        "add_event_listener(\"fetch\", function() return {body = \"bad\"}\n",
    )?;
    let cross_site = client()
        .post(proxy.admin_url("/reload"))
        .header("origin", "http://page.example")
        .send()?;
    assert_eq!(cross_site.status(), 403);
    let reload = client().post(proxy.admin_url("/reload")).send()?;
    assert_eq!(reload.status(), 422);
    let text = reload.text()?;
    assert!(text.contains("s.lua:2: syntax error"), "{text}");
    assert_eq!(client().get(proxy.url("/")).send()?.text()?, "good");

    proxy.signal(libc::SIGHUP)?;
    let line = proxy.wait_log_line(&["config reload failed", "SIGHUP"]);
    assert!(line.is_some(), "{}", proxy.log());
    let scrape = client().get(proxy.admin_url("/metrics")).send()?.text()?;
    assert!(
        scrape.contains("actias_config_loads_total{outcome=\"failure\"} 2"),
        "{scrape}"
    );

    std::fs::write(
        proxy.config_dir().join("s.lua"),
        "add_event_listener(\"fetch\", function() return {body = \"fixed\"} end)\n",
    )?;
    let reload = client().post(proxy.admin_url("/reload")).send()?;
    assert_eq!(reload.status(), 200);
    assert_eq!(client().get(proxy.url("/")).send()?.text()?, "fixed");

    // A setting that only a restart applies is named in a warning.
    let config_path = proxy.config_dir().join("actias.yaml");
    let mut config = std::fs::read_to_string(&config_path)?;
    config.push_str("\nlimits:\n  max_connections: 500\n");
    std::fs::write(&config_path, config)?;
    let reload = client().post(proxy.admin_url("/reload")).send()?;
    assert_eq!(reload.status(), 200);
    let line = proxy
        .wait_log_line(&["after a restart", "limits.max_connections"])
        .ok_or_else(|| format!("no restart warning: {}", proxy.log()))?;
    assert!(!line.contains("listeners"), "{line}");
    Ok(())
}

#[test]
fn sigterm_lets_in_flight_requests_finish() -> TestResult {
    let origin = Origin::start("slow");
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\nserver:\n  graceful_shutdown_timeout_seconds: 5\norigins:\n  - name: slow\n    servers: [\"{}\"]\nroutes:\n  - name: slow\n    default: true\n    origin: slow\n",
        origin.address()
    );
    let mut proxy = Proxy::start(&config, &[])?;
    let url = proxy.url("/slow?ms=1500");
    let in_flight =
        std::thread::spawn(move || client().get(url).send().map(|r| r.status().as_u16()));
    std::thread::sleep(Duration::from_millis(300));
    let stopped = Instant::now();
    proxy.signal(libc::SIGTERM)?;
    let status = in_flight.join().map_err(|_| "request thread panicked")??;
    assert_eq!(status, 200);
    let exit = proxy.wait_exit(Duration::from_secs(10))?;
    assert!(exit.is_some(), "the proxy did not exit");
    assert!(stopped.elapsed() < Duration::from_secs(8));
    Ok(())
}

#[test]
fn idle_proxy_exits_at_once_on_sigterm() -> TestResult {
    let mut proxy = Proxy::start(
        "listeners:\n  - address: 127.0.0.1:{port}\nroutes:\n  - name: r\n    default: true\n    script: s.lua\n",
        &[("s.lua", "add_event_listener(\"fetch\", function() return {} end)")],
    )?;
    let stopped = Instant::now();
    proxy.signal(libc::SIGTERM)?;
    let exit = proxy.wait_exit(Duration::from_secs(5))?;
    assert!(exit.is_some(), "the proxy did not exit");
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "took {:?}",
        stopped.elapsed()
    );
    Ok(())
}

#[test]
fn upgrade_hands_over_without_refusing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("upgrade.sock");
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\nserver:\n  grace_period_seconds: 10\n  graceful_shutdown_timeout_seconds: 2\n  watch: false\n  upgrade_sock: {}\nroutes:\n  - name: r\n    default: true\n    script: s.lua\n",
        sock.display()
    );
    let script = "add_event_listener(\"fetch\", function() return {body = \"pid\"} end)";
    let mut old = Proxy::start(&config, &[("s.lua", script)])?;
    let port = old.port;

    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || -> Result<usize, String> {
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = get_once(port, "upgrade.test")?;
                    if status != 200 || body != "pid" {
                        return Err(format!("status {status}, body {body:?}"));
                    }
                    sent += 1;
                }
                Ok(sent)
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(500));
    let mut new = old.spawn_upgrade()?;
    // The new process waits on the upgrade socket; give it time to listen.
    std::thread::sleep(Duration::from_millis(1500));
    old.signal(libc::SIGQUIT)?;
    let exit = old.wait_exit(Duration::from_secs(15))?;
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for thread in load {
        total += thread.join().map_err(|_| "load thread panicked")??;
    }
    let still_serving = get_once(port, "upgrade.test");
    let _ = new.kill();
    let _ = new.wait();

    assert!(exit.is_some(), "the old process did not exit");
    assert!(total > 100, "only {total} requests");
    assert_eq!(still_serving?, (200, "pid".to_string()));
    Ok(())
}

#[test]
fn dev_mode_seeds_store_and_reloads_on_save() -> TestResult {
    use std::process::{Command, Stdio};

    let dir = support::ConfigDir::new(
        "listeners:\n  - address: 127.0.0.1:{port}\nadmin:\n  enabled: false\nserver:\n  watch_interval_ms: 100\nroutes:\n  - name: hello\n    default: true\n    script: hello.lua\n    kv: [greetings]\n",
        &[
            ("hello.lua", "add_event_listener(\"fetch\", function() return {body = kv.namespace(\"greetings\"):get(\"en\")} end)\n"),
            ("dev.json", r#"{"greetings": [{"key": "en", "value": "hello"}]}"#),
        ],
    )?;
    let port = support::free_port();
    let config_path = dir.config_path();
    let text = std::fs::read_to_string(&config_path)?.replace("{port}", &port.to_string());
    std::fs::write(&config_path, text)?;
    let log_path = dir.dir.path().join("dev.log");
    let mut child = Command::new(support::binary())
        .args(["dev", "--config"])
        .arg(&config_path)
        .arg("--seed")
        .arg(dir.dir.path().join("dev.json"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()?;
    let result = (|| -> TestResult {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("dev server did not listen".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(get_once(port, "dev.test")?, (200, "hello".to_string()));
        std::fs::write(
            dir.dir.path().join("hello.lua"),
            "add_event_listener(\"fetch\", function() return {body = \"saved\"} end)\n",
        )?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if get_once(port, "dev.test")?.1 == "saved" {
                break;
            }
            if Instant::now() > deadline {
                return Err("the saved script was not served".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(&log_path)?;
        assert!(log.contains("route matched"), "{log}");
        assert!(log.contains("seeded the key-value store"), "{log}");
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

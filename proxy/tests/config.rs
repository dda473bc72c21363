//! `actias check` and start-up on shipped and broken configs.

mod support;

use std::path::Path;
use std::process::Command;

use support::{binary, check, ConfigDir, Proxy, TestResult};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn every_shipped_config_passes_check() -> TestResult {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf");
    let mut checked = 0;
    for entry in std::fs::read_dir(&conf)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let output = check(&path)?;
            assert!(
                output.status.success(),
                "{}: {}",
                path.display(),
                stderr(&output)
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "expected actias.yaml and actias.example.yaml");
    Ok(())
}

#[test]
fn check_reports_every_problem_with_line_and_key() -> TestResult {
    let config = "\
listners: []
listeners:
  - address: nothere
routes:
  - name: one
    hots: [a.test]
    script: ok.lua
  - name: two
    hosts: [\"*\"]
    paths: [\"nope\"]
    origin: ghost
  - name: two
    hosts: [ok.test]
    script: missing.lua
";
    let dir = ConfigDir::new(
        config,
        &[("ok.lua", "add_event_listener(\"fetch\", function() end)")],
    )?;
    let output = dir.check()?;
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    for expected in [
        "actias.yaml:1: listners: unknown key `listners`",
        "actias.yaml:3: listeners[0].address: `nothere` is not an IP address and port",
        "actias.yaml:6: routes[0].hots: unknown field `hots`",
        "actias.yaml:9: routes[1].hosts[0]: `*` is not a host pattern; set `default: true`",
        "actias.yaml:10: routes[1].paths[0]: path pattern `nope` must start with `/`",
        "actias.yaml:11: routes[1].origin: origin `ghost` is not defined",
        "actias.yaml:12: routes[2].name: route name `two` is used twice",
        "actias.yaml:14: routes[2].script: cannot read script",
        "8 problem(s)",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let lines: Vec<usize> = text
        .lines()
        .filter_map(|line| Some(line.split_once("actias.yaml:")?.1))
        .filter_map(|rest| rest.split(':').next()?.parse().ok())
        .collect();
    assert_eq!(lines, [1, 3, 6, 9, 10, 11, 12, 14], "{text}");
    Ok(())
}

#[test]
fn check_reports_script_file_and_line() -> TestResult {
    let config = "\
routes:
  - name: syntax
    hosts: [a.test]
    script: syntax.lua
  - name: runtime
    hosts: [b.test]
    script: runtime.lua
  - name: silent
    hosts: [c.test]
    script: silent.lua
";
    let dir = ConfigDir::new(
        config,
        &[
            ("syntax.lua", "local x = 1\nlocal = 2\n"),
            ("runtime.lua", "local x = 1\n\nerror(\"bad top level\")\n"),
            ("silent.lua", "local x = 1\n"),
        ],
    )?;
    let output = dir.check()?;
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(text.contains("syntax.lua:2: syntax error"), "{text}");
    assert!(
        text.contains("runtime.lua:3: error while loading"),
        "{text}"
    );
    assert!(text.contains("bad top level"), "{text}");
    assert!(
        text.contains("silent.lua: the script registers no fetch handler"),
        "{text}"
    );
    assert!(text.contains("3 problem(s)"), "{text}");
    Ok(())
}

#[test]
fn check_reports_invalid_yaml_with_line() -> TestResult {
    let dir = ConfigDir::new("routes:\n  - name: a\n    hosts: [x\n  bad: : :\n", &[])?;
    let output = dir.check()?;
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(text.contains("actias.yaml:4: invalid YAML"), "{text}");
    Ok(())
}

#[test]
fn check_reports_bad_origin_values() -> TestResult {
    let config = "\
origins:
  - name: app
    servers: [\"127.0.0.1\", \"host:0\"]
    connect_timeout_ms: 0
routes:
  - name: r
    default: true
";
    let dir = ConfigDir::new(config, &[])?;
    let text = stderr(&dir.check()?);
    assert!(
        text.contains("actias.yaml:3: origins[0].servers[0]: server `127.0.0.1` has no port"),
        "{text}"
    );
    assert!(
        text.contains("origins[0].servers[1]: server `host:0` has an invalid port"),
        "{text}"
    );
    assert!(
        text.contains(
            "actias.yaml:4: origins[0].connect_timeout_ms: connect_timeout_ms must be at least 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("actias.yaml:6: routes[0]: route `r` has neither a script nor an origin"),
        "{text}"
    );
    Ok(())
}

#[test]
fn run_refuses_to_start_with_broken_script() -> TestResult {
    let dir = ConfigDir::new(
        "routes:\n  - name: r\n    default: true\n    script: bad.lua\n",
        &[(
            "bad.lua",
            "add_event_listener(\"fetch\", function()\n  return {\nend)\n",
        )],
    )?;
    let output = Command::new(binary())
        .args(["run", "--config"])
        .arg(dir.config_path())
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(text.contains("bad.lua:3: syntax error"), "{text}");
    assert!(text.contains("not started"), "{text}");
    Ok(())
}

#[test]
fn run_reports_busy_listener() -> TestResult {
    let busy = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = busy.local_addr()?.port();
    let dir = ConfigDir::new(
        &format!("listeners:\n  - address: 127.0.0.1:{port}\nroutes:\n  - name: r\n    default: true\n    script: ok.lua\n"),
        &[("ok.lua", "add_event_listener(\"fetch\", function() return {} end)")],
    )?;
    let output = Command::new(binary())
        .args(["run", "--config"])
        .arg(dir.config_path())
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(
        text.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{text}"
    );
    Ok(())
}

#[test]
fn run_logs_listener_and_counts() -> TestResult {
    let proxy = Proxy::start(
        "listeners:\n  - address: 127.0.0.1:{port}\nroutes:\n  - name: a\n    hosts: [a.test]\n    script: s.lua\n  - name: b\n    hosts: [b.test]\n    script: s.lua\n",
        &[("s.lua", "add_event_listener(\"fetch\", function() return {} end)")],
    )?;
    let loaded = proxy
        .wait_log_line(&["config loaded"])
        .ok_or_else(|| proxy.log())?;
    let loaded: serde_json::Value = serde_json::from_str(&loaded)?;
    assert_eq!(loaded["routes"], 2);
    assert_eq!(loaded["scripts"], 1);
    let address = format!("\"address\":\"127.0.0.1:{}\"", proxy.port);
    let listening = proxy.wait_log_line(&["\"listening\"", &address]);
    assert!(listening.is_some(), "{}", proxy.log());
    Ok(())
}

#[test]
fn help_lists_defaults() -> TestResult {
    for command in ["run", "check"] {
        let output = Command::new(binary()).args([command, "--help"]).output()?;
        assert!(output.status.success());
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("[default: conf/actias.yaml]"), "{text}");
    }
    Ok(())
}

#[test]
fn check_rejects_duplicate_listeners() -> TestResult {
    let dir = ConfigDir::new(
        "listeners:\n  - address: 127.0.0.1:21600\n  - address: 127.0.0.1:21600\nroutes:\n  - name: r\n    default: true\n    script: ok.lua\n",
        &[("ok.lua", "add_event_listener(\"fetch\", function() return {} end)")],
    )?;
    let text = stderr(&dir.check()?);
    assert!(text.contains("actias.yaml:3: listeners[1].address: listener address `127.0.0.1:21600` is listed twice"), "{text}");
    Ok(())
}

#[test]
fn check_rejects_body_limits_past_the_process_limit() -> TestResult {
    let dir = ConfigDir::new(
        "limits:\n  max_buffered_body_bytes: 1000\n  max_request_body_bytes: 1000\nadmin:\n  hosts: [\"a.test:80\"]\nroutes:\n  - name: r\n    default: true\n    script: ok.lua\n    limits:\n      max_request_body_bytes: 2000\n",
        &[("ok.lua", "add_event_listener(\"fetch\", function() return {} end)")],
    )?;
    let text = stderr(&dir.check()?);
    assert!(
        text.contains("routes[0].limits.max_request_body_bytes: max_request_body_bytes of route `r` is 2000, more than limits.max_buffered_body_bytes (1000)"),
        "{text}"
    );
    assert!(
        text.contains("admin.hosts[0]: `a.test:80` is not a host name"),
        "{text}"
    );

    // An inherited limit is reported once, where it is set.
    let dir = ConfigDir::new(
        "limits:\n  max_buffered_body_bytes: 1000\nroutes:\n  - name: r\n    default: true\n    script: ok.lua\n",
        &[("ok.lua", "add_event_listener(\"fetch\", function() return {} end)")],
    )?;
    let text = stderr(&dir.check()?);
    assert!(
        text.contains("limits.max_request_body_bytes: max_request_body_bytes is 10485760, more than limits.max_buffered_body_bytes (1000)"),
        "{text}"
    );
    assert!(!text.contains("routes[0]"), "{text}");
    Ok(())
}

#[test]
fn check_names_types_in_plain_words() -> TestResult {
    let dir = ConfigDir::new(
        "limits:\n  cpu_ms: fifty\nroutes:\n  - name: r\n    default: true\n    script: ok.lua\n    env:\n      N: 5\n",
        &[("ok.lua", "add_event_listener(\"fetch\", function() return {} end)")],
    )?;
    let text = stderr(&dir.check()?);
    assert!(
        text.contains("limits.cpu_ms: invalid type: string \"fifty\", expected a whole number of 0 or more; write the number without quotes or a fraction"),
        "{text}"
    );
    assert!(
        text.contains("expected a string; put the value in quotes"),
        "{text}"
    );
    Ok(())
}

#[test]
fn check_tells_a_port_out_of_range_from_a_bad_address() -> TestResult {
    let dir = ConfigDir::new(
        "listeners:\n  - address: 127.0.0.1:99999\n  - address: localhost:80\nadmin:\n  address: \"[::1]:70000\"\n",
        &[],
    )?;
    let text = stderr(&dir.check()?);
    assert!(
        text.contains("listeners[0].address: port 99999 in `127.0.0.1:99999` is out of range; use a port from 1 to 65535"),
        "{text}"
    );
    assert!(
        text.contains("listeners[1].address: `localhost:80` is not an IP address and port"),
        "{text}"
    );
    assert!(
        text.contains("admin.address: port 70000 in `[::1]:70000` is out of range"),
        "{text}"
    );
    Ok(())
}

/// The compose and Kubernetes configs carry copies of shipped scripts,
/// because kustomize reads files only under its own directory. The copies
/// must not drift from `conf/scripts`.
#[test]
fn deploy_script_copies_match_conf() -> TestResult {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (copy, original) in [
        (
            "deploy/compose/actias/scripts/visits.lua",
            "conf/scripts/visits.lua",
        ),
        (
            "deploy/compose/actias/scripts/add-header.lua",
            "conf/scripts/add-header.lua",
        ),
        (
            "deploy/kubernetes/config/visits.lua",
            "conf/scripts/visits.lua",
        ),
    ] {
        let copied = std::fs::read_to_string(root.join(copy))?;
        let shipped = std::fs::read_to_string(root.join(original))?;
        assert_eq!(copied, shipped, "{copy} differs from {original}");
    }
    Ok(())
}

//! The admin listener, Prometheus metrics and the access log.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::{client, Origin, Proxy, TestResult};

const SCRIPT: &str = r#"
add_event_listener("fetch", function(request)
    if request.path == "/lua" then
        log.info("answered", request.path)
        return {body = "from lua"}
    end
    if request.path == "/fail" then
        error("deliberate failure")
    end
end)
"#;

fn start(origin: &Origin) -> TestResult<Proxy> {
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\norigins:\n  - name: backend\n    servers: [\"{}\"]\nroutes:\n  - name: edge\n    hosts: [edge.test]\n    script: edge.lua\n    origin: backend\n",
        origin.address()
    );
    Proxy::start(&config, &[("edge.lua", SCRIPT)])
}

/// Returns the value of the sample `name{labels}` in a scrape, where
/// `labels` is the exact label text Prometheus prints.
fn sample(scrape: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.parse().ok())
}

fn get(proxy: &Proxy, host: &str, path: &str) -> TestResult<u16> {
    let response = client().get(proxy.url(path)).header("host", host).send()?;
    Ok(response.status().as_u16())
}

#[test]
fn counters_match_the_traffic() -> TestResult {
    let origin = Origin::start("backend");
    let proxy = start(&origin)?;
    for _ in 0..3 {
        assert_eq!(get(&proxy, "edge.test", "/lua")?, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&proxy, "edge.test", "/origin")?, 200);
    }
    assert_eq!(get(&proxy, "edge.test", "/fail")?, 500);
    for _ in 0..4 {
        assert_eq!(get(&proxy, "unknown.test", "/")?, 404);
    }

    let scrape = client().get(proxy.admin_url("/metrics")).send()?.text()?;
    let requests = "actias_requests_total";
    assert_eq!(
        sample(
            &scrape,
            requests,
            r#"method="GET",route="edge",status_class="2xx""#
        ),
        Some(5.0),
        "{scrape}"
    );
    assert_eq!(
        sample(
            &scrape,
            requests,
            r#"method="GET",route="edge",status_class="5xx""#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &scrape,
            requests,
            r#"method="GET",route="(unmatched)",status_class="4xx""#
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(
            &scrape,
            "actias_request_duration_seconds_count",
            r#"route="edge""#
        ),
        Some(6.0)
    );
    assert_eq!(
        sample(
            &scrape,
            "actias_request_duration_seconds_count",
            r#"route="(unmatched)""#
        ),
        Some(4.0)
    );

    let runs = "actias_script_runs_total";
    assert_eq!(
        sample(&scrape, runs, r#"outcome="ok",route="edge""#),
        Some(5.0)
    );
    assert_eq!(
        sample(&scrape, runs, r#"outcome="error",route="edge""#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &scrape,
            "actias_script_cpu_seconds_count",
            r#"route="edge""#
        ),
        Some(6.0)
    );

    assert_eq!(
        sample(
            &scrape,
            "actias_origin_requests_total",
            r#"origin="backend",status_class="2xx""#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &scrape,
            "actias_origin_request_duration_seconds_count",
            r#"origin="backend""#
        ),
        Some(2.0)
    );
    let new = sample(
        &scrape,
        "actias_origin_connections_total",
        r#"origin="backend",reused="false""#,
    )
    .unwrap_or(0.0);
    let reused = sample(
        &scrape,
        "actias_origin_connections_total",
        r#"origin="backend",reused="true""#,
    )
    .unwrap_or(0.0);
    assert_eq!(new + reused, 2.0, "{scrape}");
    assert!(new >= 1.0);

    assert_eq!(
        sample(
            &scrape,
            "actias_script_cache_lookups_total",
            r#"result="miss""#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&scrape, "actias_config_loads_total", r#"outcome="success""#),
        Some(1.0)
    );
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert_eq!(sample(&scrape, "actias_build_info", &version), Some(1.0));
    for name in [
        "actias_requests_total",
        "actias_request_duration_seconds",
        "actias_script_cpu_seconds",
    ] {
        assert!(
            scrape.contains(&format!("# HELP {name} ")),
            "no help for {name}"
        );
    }
    Ok(())
}

#[test]
fn random_hosts_and_paths_add_no_series() -> TestResult {
    let origin = Origin::start("backend");
    let proxy = start(&origin)?;
    let series = |scrape: &str| -> BTreeSet<String> {
        scrape
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.rsplit_once(' ').map(|(series, _)| series.to_string()))
            .collect()
    };
    // Warm up every label combination the random traffic can produce.
    assert_eq!(get(&proxy, "edge.test", "/lua")?, 200);
    assert_eq!(get(&proxy, "warm.test", "/")?, 404);
    let before = series(&client().get(proxy.admin_url("/metrics")).send()?.text()?);

    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let url = proxy.url("");
            std::thread::spawn(move || -> Result<(), String> {
                let http = client();
                for index in 0..25_000u64 {
                    let value = (thread * 1_000_003 + index) * 2_654_435_761 % 1_000_000_007;
                    let host = format!("h{value}.random.test");
                    let path = format!("/p/{value}/{}", value % 97);
                    let response = http
                        .get(format!("{url}{path}"))
                        .header("host", host)
                        .send()
                        .map_err(|e| e.to_string())?;
                    if response.status() != 404 {
                        return Err(format!("unexpected status {}", response.status()));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for thread in threads {
        thread.join().map_err(|_| "load thread panicked")??;
    }

    let scrape = client().get(proxy.admin_url("/metrics")).send()?.text()?;
    let after = series(&scrape);
    let added: Vec<_> = after.difference(&before).collect();
    assert!(added.is_empty(), "new series: {added:?}");
    assert_eq!(
        sample(
            &scrape,
            "actias_requests_total",
            r#"method="GET",route="(unmatched)",status_class="4xx""#
        ),
        Some(100_001.0)
    );
    Ok(())
}

#[test]
fn health_endpoints_answer_on_admin_port_only() -> TestResult {
    let origin = Origin::start("backend");
    let proxy = start(&origin)?;
    let http = client();
    let health = http.get(proxy.admin_url("/healthz")).send()?;
    assert_eq!(health.status(), 200);
    let ready = http.get(proxy.admin_url("/readyz")).send()?;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text()?, "ready\n");
    assert_eq!(http.get(proxy.admin_url("/other")).send()?.status(), 404);
    // The public listener routes /metrics like any other path.
    let public = http
        .get(proxy.url("/metrics"))
        .header("host", "nobody.test")
        .send()?;
    assert_eq!(public.status(), 404);
    Ok(())
}

#[test]
fn admin_rejects_unknown_host_names() -> TestResult {
    let config = "listeners:\n  - address: 127.0.0.1:{port}\nadmin:\n  address: 127.0.0.1:{admin_port}\n  hosts: [scrape.internal]\nroutes:\n  - name: r\n    default: true\n    script: r.lua\n";
    let script = "add_event_listener(\"fetch\", function() return {body = \"r\"} end)";
    let proxy = Proxy::start(config, &[("r.lua", script)])?;
    let http = client();
    // A page on a rebound name reaches 127.0.0.1 with its own name as Host.
    for host in [
        "rebound.example",
        "localhost.rebound.example",
        "127.0.0.1.example",
    ] {
        let response = http
            .get(proxy.admin_url("/metrics"))
            .header("host", host)
            .send()?;
        assert_eq!(response.status(), 421, "{host}");
        assert!(response.text()?.contains("admin.hosts"), "{host}");
    }
    for host in [
        "localhost",
        "LOCALHOST:9090",
        "127.0.0.1",
        "[::1]:9090",
        "scrape.internal:80",
    ] {
        let response = http
            .get(proxy.admin_url("/healthz"))
            .header("host", host)
            .send()?;
        assert_eq!(response.status(), 200, "{host}");
    }
    Ok(())
}

#[test]
fn access_log_has_one_line_per_request() -> TestResult {
    let origin = Origin::start("backend");
    let proxy = start(&origin)?;
    assert_eq!(get(&proxy, "edge.test", "/lua")?, 200);
    assert_eq!(get(&proxy, "edge.test", "/origin")?, 200);
    assert_eq!(get(&proxy, "edge.test", "/fail")?, 500);
    assert_eq!(get(&proxy, "unknown.test", "/missing")?, 404);

    let mut access = Vec::new();
    for _ in 0..100 {
        access = proxy
            .json_log()
            .into_iter()
            .filter(|entry| entry["target"] == "actias::access")
            .collect();
        if access.len() >= 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(access.len(), 4, "{}", proxy.log());
    let by_path = |path: &str| -> TestResult<&Value> {
        access
            .iter()
            .find(|entry| entry["path"] == path)
            .ok_or_else(|| format!("no access line for {path}").into())
    };

    let lua = by_path("/lua")?;
    assert_eq!(lua["status"], 200);
    assert_eq!(lua["route"], "edge");
    assert_eq!(lua["script"], true);
    assert_eq!(lua["origin"], "-");
    assert_eq!(lua["method"], "GET");
    assert_eq!(lua["client"], "127.0.0.1");
    assert_eq!(lua["bytes"], 8);
    assert!(lua["request_id"].as_str().is_some_and(|id| id.len() == 16));
    assert!(lua["duration_ms"].as_f64().is_some());
    assert!(lua["timestamp"].as_str().is_some());

    let forwarded = by_path("/origin")?;
    assert_eq!(forwarded["status"], 200);
    assert_eq!(forwarded["script"], true);
    assert_eq!(forwarded["origin"], origin.address());

    let failed = by_path("/fail")?;
    assert_eq!(failed["status"], 500);

    let missed = by_path("/missing")?;
    assert_eq!(missed["status"], 404);
    assert_eq!(missed["route"], "(unmatched)");
    assert_eq!(missed["script"], false);
    Ok(())
}

#[test]
fn script_log_lines_carry_route_and_script() -> TestResult {
    let origin = Origin::start("backend");
    let proxy = start(&origin)?;
    assert_eq!(get(&proxy, "edge.test", "/lua")?, 200);
    let line = proxy
        .wait_log_line(&["\"answered /lua\""])
        .ok_or_else(|| proxy.log())?;
    let entry: Value = serde_json::from_str(&line)?;
    assert_eq!(entry["target"], "actias::script");
    assert_eq!(entry["level"], "INFO");
    assert_eq!(entry["route"], "edge");
    assert_eq!(entry["script"], "edge/edge.lua");
    assert!(entry["request_id"]
        .as_str()
        .is_some_and(|id| id.len() == 16));
    Ok(())
}

#[test]
fn access_log_can_be_turned_off() -> TestResult {
    let proxy = Proxy::start(
        "listeners:\n  - address: 127.0.0.1:{port}\nlog:\n  access_log: false\nroutes:\n  - name: r\n    default: true\n    script: s.lua\n",
        &[("s.lua", "add_event_listener(\"fetch\", function() return {body = \"x\"} end)")],
    )?;
    assert_eq!(client().get(proxy.url("/")).send()?.status(), 200);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let access = proxy
        .json_log()
        .into_iter()
        .filter(|entry| entry["target"] == "actias::access")
        .count();
    assert_eq!(access, 0, "{}", proxy.log());
    Ok(())
}

#[test]
fn kv_operations_are_counted() -> TestResult {
    let script = r#"
add_event_listener("fetch", function(request)
    local ns = kv.namespace("counted")
    ns:put("k", "v")
    ns:get("k")
    ns:get("k")
    pcall(ns.get, ns, "")
    return {body = "ok"}
end)
"#;
    let proxy = Proxy::start(
        "listeners:\n  - address: 127.0.0.1:{port}\nroutes:\n  - name: kv\n    default: true\n    script: kv.lua\n    kv: [counted]\n",
        &[("kv.lua", script)],
    )?;
    assert_eq!(client().get(proxy.url("/")).send()?.status(), 200);
    let scrape = client().get(proxy.admin_url("/metrics")).send()?.text()?;
    let ops = "actias_kv_operations_total";
    assert_eq!(
        sample(
            &scrape,
            ops,
            r#"backend="embedded",operation="put",outcome="ok""#
        ),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(
        sample(
            &scrape,
            ops,
            r#"backend="embedded",operation="get",outcome="ok""#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &scrape,
            ops,
            r#"backend="embedded",operation="get",outcome="error""#
        ),
        Some(0.0)
    );
    let durations = "actias_kv_operation_duration_seconds_count";
    assert_eq!(
        sample(&scrape, durations, r#"backend="embedded",operation="get""#),
        Some(2.0)
    );
    Ok(())
}

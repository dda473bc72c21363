//! One conformance suite for the key-value store, run through the Lua API
//! against both backends: the embedded store, and a real CQL node when
//! `ACTIAS_TEST_SCYLLA` names one (`.ci/run` starts Cassandra and sets it).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::{client, Proxy, TestResult};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Embedded,
    Scylla,
}

/// Returns the kv section for `backend`, or `None` when the Scylla tests
/// cannot run here. In CI (`CI=true`) a missing node is an error.
fn kv_section(backend: Backend) -> TestResult<Option<String>> {
    match backend {
        Backend::Embedded => Ok(Some("kv:\n  backend: embedded\n  embedded:\n    path: data/kv.redb\n".into())),
        Backend::Scylla => match std::env::var("ACTIAS_TEST_SCYLLA") {
            Ok(nodes) => Ok(Some(format!(
                "kv:\n  backend: scylla\n  scylla:\n    nodes: [\"{nodes}\"]\n    keyspace: actias_test\n    consistency: one\n"
            ))),
            Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
                Err("ACTIAS_TEST_SCYLLA is not set in CI; .ci/run must start the CQL node".into())
            }
            Err(_) => {
                eprintln!("skipped: set ACTIAS_TEST_SCYLLA=127.0.0.1:9042 to run the Scylla backend tests");
                Ok(None)
            }
        },
    }
}

/// Returns a namespace name unique to this test process and call, so that
/// tests sharing one Scylla keyspace never read each other's keys.
fn unique_namespace(case: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{case}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Starts a proxy whose default route runs `script` with access to
/// `namespace` (as `NS` in the script) and to nothing else.
fn start(backend: Backend, namespace: &str, script: &str) -> TestResult<Option<Proxy>> {
    let Some(kv) = kv_section(backend)? else {
        return Ok(None);
    };
    let script = script.replace("NS", namespace);
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\n{kv}routes:\n  - name: store\n    default: true\n    script: store.lua\n    kv: [\"{namespace}\"]\n    limits:\n      cpu_ms: 5000\n"
    );
    Ok(Some(Proxy::start(&config, &[("store.lua", &script)])?))
}

/// Runs `path` and returns the body, failing with the proxy log when the
/// script did not respond with 200.
fn call(proxy: &Proxy, path: &str) -> TestResult<String> {
    let response = client().get(proxy.url(path)).send()?;
    let status = response.status();
    let body = response.text()?;
    if status != 200 {
        return Err(format!("{path}: {status}: {body}\n{}", proxy.log()).into());
    }
    Ok(body)
}

/// Wraps Lua checks so that a failed `assert` responds 200 with the message,
/// which the test then compares.
const HARNESS: &str = r#"
local function check(name, f)
    local ok, err = pcall(f)
    if ok then return "ok" end
    return name .. ": " .. tostring(err)
end
"#;

const BASICS: &str = r#"
add_event_listener("fetch", function(request)
    return {body = check("basics", function()
        local ns = kv.namespace("NS")
        assert(ns:get("missing") == nil, "missing key is not nil")
        ns:put("k", "v1")
        assert(ns:get("k") == "v1", "first value")
        ns:put("k", "v2")
        assert(ns:get("k") == "v2", "overwritten value")
        ns:delete("k")
        assert(ns:get("k") == nil, "deleted key")
        ns:delete("k")
        local binary = ""
        for i = 0, 255 do binary = binary .. string.char(i) end
        ns:put("bin\0key", binary)
        assert(ns:get("bin\0key") == binary, "binary value")
        local value, metadata, expiration = ns:get_with_metadata("bin\0key")
        assert(value == binary, "binary value with metadata")
        assert(metadata == nil, "no metadata")
        assert(expiration == nil, "no expiration")
        ns:put("meta", "x", {metadata = {owner = "ops", tags = json.array({"a", "b"}), n = 3}})
        local _, meta = ns:get_with_metadata("meta")
        assert(meta.owner == "ops" and meta.n == 3, "metadata fields")
        assert(json.stringify(meta.tags) == '["a","b"]', "metadata array")
    end)}
end)
"#;

const ERRORS: &str = r#"
add_event_listener("fetch", function(request)
    local ns = kv.namespace("NS")
    local results = {}
    local function capture(name, f)
        local ok, err = pcall(f)
        results[name] = ok and "no error" or tostring(err)
    end
    capture("undeclared", function() kv.namespace("other") end)
    capture("long key", function() ns:put(string.rep("k", 513), "v") end)
    capture("empty key", function() ns:get("") end)
    capture("large value", function() ns:put("big", string.rep("v", 25 * 1024 * 1024 + 1)) end)
    capture("bad ttl", function() ns:put("t", "v", {ttl = -5}) end)
    capture("huge ttl", function() ns:put("t", "v", {ttl = 1e300}) end)
    capture("bad limit", function() ns:list({limit = 5000}) end)
    capture("bad cursor", function() ns:list({cursor = "zz"}) end)
    capture("large metadata", function() ns:put("m", "v", {metadata = {blob = string.rep("m", 2000)}}) end)
    capture("max key", function() ns:put(string.rep("k", 512), "v") end)
    return {body = json.stringify(results)}
end)
"#;

const TTL: &str = r#"
add_event_listener("fetch", function(request)
    local ns = kv.namespace("NS")
    if request.path == "/put" then
        ns:put("short", "lived", {ttl = 1})
        ns:put("long", "lived", {ttl = 3600})
        local value, _, expiration = ns:get_with_metadata("short")
        assert(value == "lived", "readable before expiry")
        assert(math.abs(expiration - (os.time() + 1)) <= 2, "expiration in seconds")
        return {body = "put"}
    end
    local value, metadata, expiration = ns:get_with_metadata("short")
    local listed = {}
    for _, key in ipairs(ns:list().keys) do table.insert(listed, key.name) end
    return {body = json.stringify({
        short = value == nil and expiration == nil and metadata == nil,
        long = ns:get("long"),
        listed = table.concat(listed, ","),
    })}
end)
"#;

const LISTING: &str = r#"
add_event_listener("fetch", function(request)
    local ns = kv.namespace("NS")
    if request.path == "/fill" then
        for i = 0, 24 do
            ns:put(string.format("p/%02d", i), "v", {metadata = {i = i}})
        end
        ns:put("q/1", "v")
        ns:put("p", "v")
        return {body = "filled"}
    end
    local options = {prefix = "p/", limit = 10}
    if request.query.cursor then options.cursor = request.query.cursor end
    local page = ns:list(options)
    local names = {}
    for _, key in ipairs(page.keys) do
        table.insert(names, key.name .. "=" .. tostring(key.metadata and key.metadata.i))
    end
    return {body = json.stringify({
        names = table.concat(names, ","),
        cursor = page.cursor or "",
        complete = page.list_complete,
        all = #ns:list().keys,
    })}
end)
"#;

const WRITER: &str = r#"
add_event_listener("fetch", function(request)
    local ns = kv.namespace("NS")
    if request.path == "/write" then
        ns:put("writer/" .. request.query.id, request.query.id)
        ns:put("shared", request.query.id)
        return {body = "written"}
    end
    local page = ns:list({prefix = "writer/"})
    return {body = json.stringify({count = #page.keys, shared = ns:get("shared")})}
end)
"#;

fn basics(backend: Backend) -> TestResult {
    let Some(proxy) = start(
        backend,
        &unique_namespace("basics"),
        &format!("{HARNESS}{BASICS}"),
    )?
    else {
        return Ok(());
    };
    assert_eq!(call(&proxy, "/")?, "ok");
    Ok(())
}

fn errors(backend: Backend) -> TestResult {
    let Some(proxy) = start(backend, &unique_namespace("errors"), ERRORS)? else {
        return Ok(());
    };
    let results: serde_json::Value = serde_json::from_str(&call(&proxy, "/")?)?;
    let text = |name: &str| results[name].as_str().unwrap_or_default().to_string();
    assert!(
        text("undeclared").contains("does not declare the namespace `other`"),
        "{}",
        text("undeclared")
    );
    assert!(
        text("long key").contains("keys are at most 512 bytes"),
        "{}",
        text("long key")
    );
    assert!(
        text("empty key").contains("the key is empty"),
        "{}",
        text("empty key")
    );
    assert!(
        text("large value").contains("values are at most 26214400 bytes"),
        "{}",
        text("large value")
    );
    assert!(
        text("bad ttl").contains("ttl must be a positive number"),
        "{}",
        text("bad ttl")
    );
    assert!(
        text("huge ttl").contains("ttl must be a positive number"),
        "{}",
        text("huge ttl")
    );
    assert!(
        text("bad limit").contains("limit must be a whole number from 1 to 1000"),
        "{}",
        text("bad limit")
    );
    assert!(
        text("bad cursor").contains("cursor `zz` is invalid"),
        "{}",
        text("bad cursor")
    );
    assert!(
        text("large metadata").contains("metadata is at most 1024 bytes"),
        "{}",
        text("large metadata")
    );
    assert_eq!(text("max key"), "no error");
    Ok(())
}

fn ttl(backend: Backend) -> TestResult {
    let Some(proxy) = start(backend, &unique_namespace("ttl"), TTL)? else {
        return Ok(());
    };
    assert_eq!(call(&proxy, "/put")?, "put");
    std::thread::sleep(Duration::from_millis(1300));
    let state: serde_json::Value = serde_json::from_str(&call(&proxy, "/check")?)?;
    assert_eq!(state["short"], true, "{state}");
    assert_eq!(state["long"], "lived");
    assert_eq!(state["listed"], "long");
    Ok(())
}

fn listing(backend: Backend) -> TestResult {
    let Some(mut proxy) = start(backend, &unique_namespace("list"), LISTING)? else {
        return Ok(());
    };
    assert_eq!(call(&proxy, "/fill")?, "filled");
    let page = |proxy: &Proxy, cursor: &str| -> TestResult<serde_json::Value> {
        let path = if cursor.is_empty() {
            "/page".to_string()
        } else {
            format!("/page?cursor={cursor}")
        };
        Ok(serde_json::from_str(&call(proxy, &path)?)?)
    };

    let first = page(&proxy, "")?;
    let expected: Vec<String> = (0..10).map(|i| format!("p/{i:02}={i}")).collect();
    assert_eq!(first["names"], expected.join(","));
    assert_eq!(first["complete"], false);
    assert_eq!(first["all"], 27);
    let cursor = first["cursor"].as_str().unwrap_or_default().to_string();
    assert!(!cursor.is_empty());

    // The cursor is plain data: it still works after the process restarts.
    proxy.kill_and_restart()?;
    let second = page(&proxy, &cursor)?;
    let expected: Vec<String> = (10..20).map(|i| format!("p/{i:02}={i}")).collect();
    assert_eq!(second["names"], expected.join(","));
    assert_eq!(second["complete"], false);

    let third = page(&proxy, second["cursor"].as_str().unwrap_or_default())?;
    let expected: Vec<String> = (20..25).map(|i| format!("p/{i:02}={i}")).collect();
    assert_eq!(third["names"], expected.join(","));
    assert_eq!(third["complete"], true);
    assert_eq!(third["cursor"], "");
    Ok(())
}

fn concurrent_writers(backend: Backend) -> TestResult {
    let Some(proxy) = start(backend, &unique_namespace("writers"), WRITER)? else {
        return Ok(());
    };
    let writers: Vec<_> = (0..4)
        .map(|thread| {
            let url = proxy.url("");
            std::thread::spawn(move || -> Result<(), String> {
                let http = client();
                for index in 0..10 {
                    let id = thread * 10 + index;
                    let response = http
                        .get(format!("{url}/write?id={id}"))
                        .send()
                        .map_err(|e| e.to_string())?;
                    if response.status() != 200 {
                        return Err(format!("write {id}: {}", response.status()));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for writer in writers {
        writer.join().map_err(|_| "writer panicked")??;
    }
    let state: serde_json::Value = serde_json::from_str(&call(&proxy, "/read")?)?;
    assert_eq!(state["count"], 40, "{state}");
    let shared: u32 = state["shared"].as_str().unwrap_or("x").parse()?;
    assert!(shared < 40);
    Ok(())
}

macro_rules! both_backends {
    ($($case:ident),*) => {
        mod embedded {
            $(#[test]
            fn $case() -> super::TestResult {
                super::$case(super::Backend::Embedded)
            })*
        }
        mod scylla {
            $(#[test]
            fn $case() -> super::TestResult {
                super::$case(super::Backend::Scylla)
            })*
        }
    };
}

both_backends!(basics, errors, ttl, listing, concurrent_writers);

#[test]
fn embedded_writes_survive_kill() -> TestResult {
    let namespace = unique_namespace("crash");
    let script = r#"
add_event_listener("fetch", function(request)
    local ns = kv.namespace("NS")
    if request.path == "/write" then
        ns:put("key/" .. request.query.id, "value " .. request.query.id)
        return {body = "acknowledged"}
    end
    local missing = {}
    for id = 0, 49 do
        if ns:get("key/" .. id) ~= "value " .. id then table.insert(missing, id) end
    end
    return {body = "missing:" .. table.concat(missing, ",")}
end)
"#;
    let Some(mut proxy) = start(Backend::Embedded, &namespace, script)? else {
        return Ok(());
    };
    let http = client();
    for id in 0..50 {
        let body = http
            .get(proxy.url(&format!("/write?id={id}")))
            .send()?
            .text()?;
        assert_eq!(body, "acknowledged");
    }
    proxy.kill_and_restart()?;
    assert_eq!(call(&proxy, "/check")?, "missing:");
    Ok(())
}

#[test]
fn command_line_reads_and_seeds_the_store() -> TestResult {
    use std::process::Command;

    let dir = support::ConfigDir::new(
        "kv:\n  embedded:\n    path: data/kv.redb\nroutes:\n  - name: r\n    default: true\n    script: s.lua\n    kv: [seed]\n",
        &[("s.lua", "add_event_listener(\"fetch\", function() return {body = kv.namespace(\"seed\"):get(\"greeting\") or \"none\"} end)")],
    )?;
    let kv = |args: &[&str]| {
        Command::new(support::binary())
            .arg("kv")
            .arg("--config")
            .arg(dir.config_path())
            .args(args)
            .output()
    };

    let put = kv(&[
        "put",
        "seed",
        "greeting",
        "hello",
        "--metadata",
        "{\"lang\":\"en\"}",
    ])?;
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let get = kv(&["get", "seed", "greeting"])?;
    assert_eq!(String::from_utf8_lossy(&get.stdout), "hello");
    let missing = kv(&["get", "seed", "absent"])?;
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("key `absent` not found"));

    let import_file = dir.dir.path().join("import.json");
    std::fs::write(
        &import_file,
        r#"[{"key": "a", "value": "//4=", "base64": true}, {"key": "b", "value": "text", "expiration_ttl": 3600}]"#,
    )?;
    let import = kv(&["import", "seed", import_file.to_str().ok_or("path")?])?;
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    let list = kv(&["list", "seed"])?;
    assert_eq!(String::from_utf8_lossy(&list.stdout), "a\nb\ngreeting\n");

    let export = kv(&["export", "seed"])?;
    let records: serde_json::Value = serde_json::from_slice(&export.stdout)?;
    assert_eq!(records[0]["key"], "a");
    assert_eq!(records[0]["value"], "//4=");
    assert_eq!(records[0]["base64"], true);
    assert!(records[1]["expiration"].as_u64().is_some());
    assert_eq!(records[2]["metadata"]["lang"], "en");

    let bad_file = dir.dir.path().join("bad.json");
    std::fs::write(&bad_file, r#"[{"key": "", "value": "x"}]"#)?;
    let bad = kv(&["import", "seed", bad_file.to_str().ok_or("path")?])?;
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("record 0 (key ``): the key is empty"));
    Ok(())
}

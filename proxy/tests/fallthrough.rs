//! Requests that reach an origin: plain proxying, script edits, bodies,
//! balancing, connection reuse and origin failures.

mod support;

use serde_json::Value;
use support::{client, free_port, raw, Origin, Proxy, TestResult};

const EDIT_SCRIPT: &str = r#"
add_event_listener("fetch", function(request)
    if request.path == "/answer" then
        return {body = "from lua"}
    end
    if request.path == "/edit" then
        request.headers["X-Added"] = "added"
        request.headers["X-Remove-Me"] = nil
        request.headers["X-List"] = {"1", "2"}
        request.path = "/rewritten/a b"
        request.query.extra = "yes"
        request.query.drop = nil
    end
    if request.path == "/body" then
        request.headers["X-Seen-Body"] = request.body
    end
    if request.path == "/large" then
        request.headers["X-Body-Is-Nil"] = tostring(request.body == nil)
    end
end)
"#;

fn config(origins: &[&Origin], script: bool, extra_origin: &str) -> String {
    let servers: Vec<String> = origins
        .iter()
        .map(|o| format!("\"{}\"", o.address()))
        .collect();
    let script_line = if script { "\n    script: edit.lua" } else { "" };
    format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\norigins:\n  - name: app\n    servers: [{}]\n    connect_timeout_ms: 500\n    read_timeout_ms: 500\n{extra_origin}routes:\n  - name: app\n    default: true\n    origin: app{script_line}\n",
        servers.join(", ")
    )
}

fn echo(response: &raw::RawResponse) -> TestResult<Value> {
    assert_eq!(response.status, 200, "{}", response.body_text());
    Ok(serde_json::from_slice(&response.body)?)
}

fn header<'a>(echo: &'a Value, name: &str) -> Vec<&'a str> {
    echo["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pair| {
            pair[0]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .filter_map(|pair| pair[1].as_str())
        .collect()
}

#[test]
fn origin_route_forwards_request_unchanged() -> TestResult {
    let origin = Origin::start("one");
    let proxy = Proxy::start(&config(&[&origin], false, ""), &[])?;
    let request = b"PUT /some/Path%20x?b=2&a=1&a=3 HTTP/1.1\r\nHost: app.test\r\nX-Mixed-Case: Value  With  Spaces\r\nX-Dup: 1\r\nX-Dup: 2\r\nX-Forwarded-For: 10.0.0.1\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world";
    let response = raw::send(proxy.port, request)?;
    let echo = echo(&response)?;
    assert_eq!(
        echo["request_line"],
        "PUT /some/Path%20x?b=2&a=1&a=3 HTTP/1.1"
    );
    assert_eq!(echo["body"], "hello world");
    assert_eq!(header(&echo, "Host"), ["app.test"]);
    assert_eq!(header(&echo, "X-Mixed-Case"), ["Value  With  Spaces"]);
    assert_eq!(header(&echo, "X-Dup"), ["1", "2"]);
    assert_eq!(header(&echo, "X-Forwarded-For"), ["10.0.0.1, 127.0.0.1"]);
    assert_eq!(header(&echo, "X-Forwarded-Proto"), ["http"]);
    assert!(header(&echo, "Connection").is_empty());
    assert_eq!(response.header_values("set-cookie"), ["a=1", "b=2"]);
    Ok(())
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() -> TestResult {
    let origin = Origin::start("one");
    let proxy = Proxy::start(&config(&[&origin], false, ""), &[])?;
    let request = b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close, X-Private\r\nX-Private: secret\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Public: ok\r\n\r\n";
    let echo = echo(&raw::send(proxy.port, request)?)?;
    assert!(header(&echo, "X-Private").is_empty());
    assert!(header(&echo, "Keep-Alive").is_empty());
    assert!(header(&echo, "TE").is_empty());
    assert_eq!(header(&echo, "X-Public"), ["ok"]);
    Ok(())
}

#[test]
fn script_edits_reach_the_origin() -> TestResult {
    let origin = Origin::start("one");
    let proxy = Proxy::start(&config(&[&origin], true, ""), &[("edit.lua", EDIT_SCRIPT)])?;
    let request = b"GET /edit?keep=1&drop=2 HTTP/1.1\r\nHost: app.test\r\nX-Remove-Me: 1\r\nX-Keep: kept\r\nConnection: close\r\n\r\n";
    let echo = echo(&raw::send(proxy.port, request)?)?;
    assert_eq!(echo["target"], "/rewritten/a%20b?extra=yes&keep=1");
    assert_eq!(header(&echo, "X-Added"), ["added"]);
    assert_eq!(header(&echo, "X-List"), ["1", "2"]);
    assert_eq!(header(&echo, "X-Keep"), ["kept"]);
    assert!(header(&echo, "X-Remove-Me").is_empty());

    let answered = client().get(proxy.url("/answer")).send()?;
    assert_eq!(answered.text()?, "from lua");
    Ok(())
}

#[test]
fn body_read_by_script_still_reaches_origin() -> TestResult {
    let origin = Origin::start("one");
    let proxy = Proxy::start(&config(&[&origin], true, ""), &[("edit.lua", EDIT_SCRIPT)])?;
    let response = client().post(proxy.url("/body")).body("payload").send()?;
    assert_eq!(response.status(), 200);
    let echo: Value = response.json()?;
    assert_eq!(echo["body"], "payload");
    assert_eq!(header(&echo, "X-Seen-Body"), ["payload"]);
    Ok(())
}

#[test]
fn large_body_streams_to_origin_unread() -> TestResult {
    let origin = Origin::start("one");
    let proxy = Proxy::start(&config(&[&origin], true, ""), &[("edit.lua", EDIT_SCRIPT)])?;
    let body = "x".repeat(300 * 1024);
    let response = client()
        .post(proxy.url("/large"))
        .body(body.clone())
        .send()?;
    assert_eq!(response.status(), 200);
    let echo: Value = response.json()?;
    assert_eq!(echo["body_length"], body.len());
    assert_eq!(header(&echo, "X-Body-Is-Nil"), ["true"]);
    Ok(())
}

#[test]
fn servers_are_balanced_round_robin() -> TestResult {
    let first = Origin::start("first");
    let second = Origin::start("second");
    let proxy = Proxy::start(&config(&[&first, &second], false, ""), &[])?;
    let http = client();
    let mut seen = Vec::new();
    for _ in 0..6 {
        let response = http.get(proxy.url("/")).send()?;
        seen.push(response.headers()["x-origin"].to_str()?.to_string());
    }
    let firsts = seen.iter().filter(|name| *name == "first").count();
    assert_eq!(firsts, 3, "{seen:?}");
    assert!(seen.windows(2).all(|pair| pair[0] != pair[1]), "{seen:?}");
    Ok(())
}

#[test]
fn origin_connections_are_reused() -> TestResult {
    let origin = Origin::start("one");
    let proxy = Proxy::start(&config(&[&origin], false, ""), &[])?;
    let http = client();
    for _ in 0..50 {
        assert_eq!(http.get(proxy.url("/")).send()?.status(), 200);
    }
    // One client connection lands on one worker thread, whose pool keeps
    // the origin connection. Pingora 0.9 sometimes fails to take a pooled
    // connection under load and opens another, so allow a few in 50.
    assert!(
        origin.accepted_connections() <= 5,
        "{}",
        origin.accepted_connections()
    );
    Ok(())
}

#[test]
fn unreachable_origin_gives_502() -> TestResult {
    let closed_port = free_port();
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\norigins:\n  - name: down\n    servers: [\"127.0.0.1:{closed_port}\"]\nroutes:\n  - name: down\n    default: true\n    origin: down\n"
    );
    let proxy = Proxy::start(&config, &[])?;
    let response = client().get(proxy.url("/")).send()?;
    assert_eq!(response.status(), 502);
    let address = format!("127.0.0.1:{closed_port}");
    let line = proxy.wait_log_line(&["request to origin failed", &address]);
    assert!(line.is_some(), "{}", proxy.log());
    Ok(())
}

#[test]
fn slow_origin_gives_504() -> TestResult {
    let origin = Origin::start("slow");
    let proxy = Proxy::start(&config(&[&origin], false, ""), &[])?;
    let response = client().get(proxy.url("/slow?ms=2000")).send()?;
    assert_eq!(response.status(), 504);
    let line = proxy.wait_log_line(&["request to origin failed", &origin.address()]);
    assert!(line.is_some(), "{}", proxy.log());
    Ok(())
}

#[test]
fn script_without_origin_that_returns_nothing_gives_502() -> TestResult {
    let script = "add_event_listener(\"fetch\", function(request) end)\n";
    let proxy = Proxy::start(
        "listeners:\n  - address: 127.0.0.1:{port}\nroutes:\n  - name: lonely\n    default: true\n    script: nothing.lua\n",
        &[("nothing.lua", script)],
    )?;
    let response = client().get(proxy.url("/")).send()?;
    assert_eq!(response.status(), 502);
    assert!(response.text()?.contains("no origin"));
    Ok(())
}

#[test]
fn origin_sees_the_path_that_was_routed() -> TestResult {
    let origin = Origin::start("one");
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\norigins:\n  - name: app\n    servers: [\"{}\"]\nroutes:\n  - name: admin\n    hosts: [o.test]\n    paths: [\"/admin/*\"]\n    script: deny.lua\n    origin: app\n  - name: public\n    hosts: [o.test]\n    origin: app\n",
        origin.address()
    );
    let deny =
        "add_event_listener(\"fetch\", function() return {status = 403, body = \"denied\"} end)";
    let proxy = Proxy::start(&config, &[("deny.lua", deny)])?;
    let send = |target: &str| {
        let request = format!("GET {target} HTTP/1.1\r\nHost: o.test\r\nConnection: close\r\n\r\n");
        raw::send(proxy.port, request.as_bytes())
    };

    let dotted = send("/admin/%2e%2e/public")?;
    assert_eq!(echo(&dotted)?["target"], "/public");
    let doubled = send("//admin/x")?;
    assert_eq!(doubled.status, 403, "{}", doubled.body_text());
    let plain = send("/public/a%20b?x=1")?;
    assert_eq!(echo(&plain)?["target"], "/public/a%20b?x=1");
    Ok(())
}

#[test]
fn script_without_edits_keeps_header_order() -> TestResult {
    let origin = Origin::start("one");
    let proxy = Proxy::start(
        &config(&[&origin], true, ""),
        &[(
            "edit.lua",
            "add_event_listener(\"fetch\", function(request) local _ = request.headers end)",
        )],
    )?;
    let request = b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Rep: 2\r\nX-Rep: 1\r\nX-Case: A\r\nConnection: close\r\n\r\n";
    let echo = echo(&raw::send(proxy.port, request)?)?;
    assert_eq!(header(&echo, "X-Rep"), ["2", "1"]);
    let names: Vec<&str> = echo["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|pair| pair[0].as_str())
        .collect();
    assert!(names.contains(&"X-Case"), "{names:?}");
    Ok(())
}

#[test]
fn every_forwarded_for_line_is_kept() -> TestResult {
    let origin = Origin::start("one");
    let proxy = Proxy::start(&config(&[&origin], false, ""), &[])?;
    let request = b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\nConnection: close\r\n\r\n";
    let echo = echo(&raw::send(proxy.port, request)?)?;
    assert_eq!(
        header(&echo, "X-Forwarded-For"),
        ["1.1.1.1, 2.2.2.2, 127.0.0.1"]
    );
    Ok(())
}

#[test]
fn invalid_header_edit_is_a_script_error() -> TestResult {
    let origin = Origin::start("one");
    let script = "add_event_listener(\"fetch\", function(request) request.headers[\"X-Bad\"] = \"a\\nb\" end)";
    let config = config(&[&origin], true, "").replace(
        "    origin: app\n",
        "    origin: app\n    error_status: 500\n",
    );
    let proxy = Proxy::start(&config, &[("edit.lua", script)])?;
    let response = client().get(proxy.url("/")).send()?;
    assert_eq!(response.status(), 500);
    let line = proxy.wait_log_line(&["script failed", "x-bad"]);
    assert!(line.is_some(), "{}", proxy.log());
    assert_eq!(origin.accepted_connections(), 0);
    Ok(())
}

#[test]
fn rawset_header_spelling_is_a_script_error() -> TestResult {
    let origin = Origin::start("one");
    let script = "add_event_listener(\"fetch\", function(request) rawset(request.headers, \"X-Role\", \"guest\") end)";
    let proxy = Proxy::start(&config(&[&origin], true, ""), &[("edit.lua", script)])?;
    let response = client()
        .get(proxy.url("/"))
        .header("x-role", "admin")
        .send()?;
    assert_eq!(response.status(), 500);
    let line = proxy.wait_log_line(&["script failed", "has both `X-Role` and `x-role`"]);
    assert!(line.is_some(), "{}", proxy.log());
    assert_eq!(origin.accepted_connections(), 0);

    // Without the client's line there is one spelling, which goes through.
    let response = client().get(proxy.url("/")).send()?;
    let echo: Value = serde_json::from_str(&response.text()?)?;
    assert_eq!(header(&echo, "x-role"), ["guest"]);
    Ok(())
}

#[test]
fn oversized_edits_fail_while_read() -> TestResult {
    let origin = Origin::start("one");
    let script = r#"
add_event_listener("fetch", function(request)
    local n = 1000000
    if request.path == "/header" then request.headers["x-a"] = table.create(n, "a") end
    if request.path == "/empty" then
        for i = 1, 20000 do request.headers["x-" .. i] = {} end
    end
    if request.path == "/query" then request.query = {a = table.create(n, "a")} end
    if request.path == "/path" then request.path = string.rep("/ ", 100000) end
    if request.path == "/fits" then request.headers["x-a"] = table.create(1000, "a") end
end)
"#;
    // The Lua side of each case takes some CPU time, more so in debug
    // builds, and the cases are about what happens after it.
    let config = config(&[&origin], true, "").replace(
        "    script: edit.lua\n",
        "    script: edit.lua\n    limits:\n      cpu_ms: 5000\n",
    );
    let proxy = Proxy::start(&config, &[("edit.lua", script)])?;
    for (path, expected) in [
        ("/header", "request.headers exceed"),
        ("/empty", "request.headers exceed"),
        ("/query", "request.query exceed"),
        ("/path", "request.path is 200000 bytes, more than"),
    ] {
        let response = client().get(proxy.url(path)).send()?;
        assert_eq!(response.status(), 500, "{path}");
        let line = proxy.wait_log_line(&["script failed", expected]);
        assert!(line.is_some(), "{path}: no {expected:?} in {}", proxy.log());
    }
    assert_eq!(origin.accepted_connections(), 0);

    let response = client().get(proxy.url("/fits")).send()?;
    let echo: Value = serde_json::from_str(&response.text()?)?;
    assert_eq!(header(&echo, "x-a").len(), 1000);
    Ok(())
}

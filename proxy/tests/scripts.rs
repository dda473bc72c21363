//! Fetch handlers behind the real proxy: the request table, responses,
//! JSON and script errors.

mod support;

use serde_json::Value;
use support::{client, raw, Proxy, TestResult};

const HELLO: &str = include_str!("../../conf/scripts/hello.lua");

fn single_script_proxy(script: &str) -> TestResult<Proxy> {
    Proxy::start(
        "listeners:\n  - address: 127.0.0.1:{port}\nroutes:\n  - name: main\n    default: true\n    paths: [\"/*\", \"/items/:id\"]\n    script: main.lua\n",
        &[("main.lua", script)],
    )
}

#[test]
fn hello_handler_answers_json() -> TestResult {
    let proxy = single_script_proxy(HELLO)?;
    let response = client().get(proxy.url("/")).send()?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text()?, r#"{"hello":"world"}"#);
    Ok(())
}

#[test]
fn request_table_has_every_field() -> TestResult {
    let script = r#"
add_event_listener("fetch", function(request)
    return {
        body = json.stringify({
            method = request.method,
            url = request.url,
            path = request.path,
            raw_path = request.raw_path,
            query_a = request.query.a,
            query_list = request.query.list,
            accept_mixed_case = request.headers["X-Custom"],
            repeated = request.headers["x-repeated"],
            body = request.body,
            id = request.params.id,
            host = request.host,
            client_ip = request.client_ip,
            route = request.route,
        }),
    }
end)
"#;
    let proxy = single_script_proxy(script)?;
    let request = format!(
        "POST /items/a%2Fb?a=1&list=x&list=y HTTP/1.1\r\nHost: Example.COM:{}\r\nX-Custom: yes\r\n\
         X-Repeated: one\r\nX-Repeated: two\r\nContent-Length: 5\r\n\r\nhello",
        proxy.port
    );
    let response = raw::send(proxy.port, request.as_bytes())?;
    assert_eq!(response.status, 200, "{}", response.body_text());
    let fields: Value = serde_json::from_slice(&response.body)?;
    assert_eq!(fields["method"], "POST");
    assert_eq!(
        fields["url"],
        format!(
            "http://Example.COM:{}/items/a%2Fb?a=1&list=x&list=y",
            proxy.port
        )
    );
    assert_eq!(fields["path"], "/items/a%2Fb");
    assert_eq!(fields["raw_path"], "/items/a%2Fb");
    assert_eq!(fields["query_a"], "1");
    assert_eq!(fields["query_list"], serde_json::json!(["x", "y"]));
    assert_eq!(fields["accept_mixed_case"], "yes");
    assert_eq!(fields["repeated"], serde_json::json!(["one", "two"]));
    assert_eq!(fields["body"], "hello");
    assert_eq!(fields["id"], "a/b");
    assert_eq!(fields["host"], "example.com");
    assert_eq!(fields["client_ip"], "127.0.0.1");
    assert_eq!(fields["route"], "main");
    Ok(())
}

#[test]
fn response_status_headers_and_lists() -> TestResult {
    let script = r#"
add_event_listener("fetch", function(request)
    if request.path == "/alias" then
        return {status_code = 201, body = "created"}
    end
    return {
        status = 418,
        headers = {["Set-Cookie"] = {"a=1", "b=2"}, ["X-Number"] = 7},
        body = "teapot",
    }
end)
"#;
    let proxy = single_script_proxy(script)?;
    let response = raw::send(
        proxy.port,
        b"GET /cookies HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )?;
    assert_eq!(response.status, 418);
    assert_eq!(response.header_values("set-cookie"), ["a=1", "b=2"]);
    assert_eq!(response.header_values("x-number"), ["7"]);
    assert_eq!(response.body_text(), "teapot");

    let alias = client().get(proxy.url("/alias")).send()?;
    assert_eq!(alias.status(), 201);
    assert_eq!(alias.text()?, "created");
    Ok(())
}

#[test]
fn script_error_returns_500_without_traceback() -> TestResult {
    let script = "add_event_listener(\"fetch\", function(request)\n    local t = nil\n    return t.field\nend)\n";
    let proxy = single_script_proxy(script)?;
    let response = client().get(proxy.url("/boom")).send()?;
    assert_eq!(response.status(), 500);
    let body = response.text()?;
    assert!(body.contains("request id: "), "{body}");
    assert!(!body.contains("main.lua"), "{body}");
    assert!(!body.contains("traceback"), "{body}");
    let request_id = body
        .lines()
        .find_map(|line| line.strip_prefix("request id: "))
        .ok_or("no request id")?;

    let line = proxy
        .wait_log_line(&["script failed", request_id])
        .ok_or_else(|| format!("no log line for the failure: {}", proxy.log()))?;
    let entry: Value = serde_json::from_str(&line)?;
    assert_eq!(entry["level"], "WARN");
    assert_eq!(entry["route"], "main");
    assert_eq!(entry["script"], "main/main.lua");
    let error = entry["error"].as_str().unwrap_or_default();
    assert!(error.contains("main/main.lua:3"), "{error}");
    assert!(error.contains("traceback"), "{error}");
    Ok(())
}

#[test]
fn invalid_return_values_fail_clearly() -> TestResult {
    let script = r#"
add_event_listener("fetch", function(request)
    if request.path == "/string" then return "text" end
    if request.path == "/status" then return {status = 99} end
    if request.path == "/header" then return {headers = {["X-Bad"] = "a\nb"}} end
    if request.path == "/body" then return {body = {}} end
    if request.path == "/name" then return {headers = {["X Bad"] = "v"}} end
    if request.path == "/key" then return {headers = {[1] = "v"}} end
    if request.path == "/integer" then return 7 end
    return {}
end)
"#;
    let proxy = single_script_proxy(script)?;
    for (path, expected) in [
        ("/string", "the fetch handler returned a string"),
        ("/status", "response status 99 is invalid"),
        ("/header", "response header `X-Bad` has an invalid value"),
        ("/body", "response body must be a string"),
        (
            "/name",
            "response header name `X Bad` is invalid; use letters, digits",
        ),
        (
            "/key",
            "response header names must be strings, not a number",
        ),
        ("/integer", "the fetch handler returned a number;"),
    ] {
        let response = client().get(proxy.url(path)).send()?;
        assert_eq!(response.status(), 500, "{path}");
        let line = proxy.wait_log_line(&["script failed", expected]);
        assert!(line.is_some(), "{path}: no log line with {expected:?}");
    }
    let empty = client().get(proxy.url("/")).send()?;
    assert_eq!(empty.status(), 200);
    assert_eq!(empty.text()?, "");
    Ok(())
}

#[test]
fn json_round_trips_and_rejects_bad_values() -> TestResult {
    let script = r#"
local function try(f, ...)
    local ok, err = pcall(f, ...)
    if ok then return "ok" end
    return tostring(err)
end
add_event_listener("fetch", function(request)
    local cycle = {}
    cycle.self = cycle
    local parsed = json.parse('{"a":[1,2,{"b":null}],"e":[],"o":{},"s":"\\u00e9"}')
    return {body = json.stringify({
        empty = json.stringify({}),
        array = json.stringify({1, "two", true}),
        nested = json.stringify({list = {{x = 1}}, n = 1.5}),
        number_keys = json.stringify({[10] = "a", [20] = "b"}),
        empty_array = json.stringify(json.array()),
        round_trip = json.stringify(parsed),
        null_is_sentinel = parsed.a[3].b == json.null,
        nan = try(json.stringify, {x = 0/0}),
        cycle = try(json.stringify, cycle),
        bool_key = try(json.stringify, {[true] = 1}),
        bad_parse = try(json.parse, "{oops"),
        func = try(json.stringify, {f = print}),
    })}
end)
"#;
    let proxy = single_script_proxy(script)?;
    let response = client().get(proxy.url("/")).send()?;
    assert_eq!(response.status(), 200);
    let fields: Value = serde_json::from_str(&response.text()?)?;
    assert_eq!(fields["empty"], "{}");
    assert_eq!(fields["array"], r#"[1,"two",true]"#);
    assert_eq!(fields["nested"], r#"{"list":[{"x":1}],"n":1.5}"#);
    assert_eq!(fields["number_keys"], r#"{"10":"a","20":"b"}"#);
    assert_eq!(fields["empty_array"], "[]");
    assert_eq!(
        fields["round_trip"],
        r#"{"a":[1,2,{"b":null}],"e":[],"o":{},"s":"é"}"#
    );
    assert_eq!(fields["null_is_sentinel"], true);
    let text = |key: &str| fields[key].as_str().unwrap_or_default().to_string();
    assert!(
        text("nan").contains("JSON has no NaN or infinity"),
        "{}",
        text("nan")
    );
    assert!(text("cycle").contains("cycles"), "{}", text("cycle"));
    assert!(
        text("bool_key").contains("cannot use a boolean as an object key"),
        "{}",
        text("bool_key")
    );
    assert!(
        text("bad_parse").contains("json.parse: invalid JSON"),
        "{}",
        text("bad_parse")
    );
    assert!(
        text("func").contains("cannot encode a value of type function"),
        "{}",
        text("func")
    );
    Ok(())
}

#[test]
fn routes_do_not_share_globals() -> TestResult {
    let counter = r#"
count = (count or 0) + 1
add_event_listener("fetch", function(request)
    seen = (seen or 0) + 1
    return {body = request.route .. ":" .. tostring(seen)}
end)
"#;
    let proxy = Proxy::start(
        "listeners:\n  - address: 127.0.0.1:{port}\nserver:\n  threads: 1\nroutes:\n  - name: one\n    hosts: [one.test]\n    script: counter.lua\n  - name: two\n    hosts: [two.test]\n    script: counter.lua\n",
        &[("counter.lua", counter)],
    )?;
    let http = client();
    let get = |host: &str| -> TestResult<String> {
        Ok(http
            .get(proxy.url("/"))
            .header("host", host)
            .send()?
            .text()?)
    };
    assert_eq!(get("one.test")?, "one:1");
    assert_eq!(get("one.test")?, "one:2");
    assert_eq!(get("two.test")?, "two:1");
    Ok(())
}

#[test]
fn file_system_require_is_unavailable() -> TestResult {
    let script = r#"
add_event_listener("fetch", function(request)
    local ok, err = pcall(require, "./secrets")
    return {body = tostring(ok) .. " " .. tostring(err)}
end)
"#;
    let proxy = single_script_proxy(script)?;
    let body = client().get(proxy.url("/")).send()?.text()?;
    assert!(body.starts_with("false"), "{body}");
    assert!(body.contains("there is no module `./secrets`"), "{body}");
    Ok(())
}

#[test]
fn bodiless_statuses_send_no_body() -> TestResult {
    let script = r#"
add_event_listener("fetch", function(request)
    if request.path == "/204" then return {status = 204, body = "x"} end
    return {status = 304, body = "x"}
end)
"#;
    let proxy = single_script_proxy(script)?;
    let no_content = raw::send(
        proxy.port,
        b"GET /204 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )?;
    assert_eq!(no_content.status, 204);
    assert!(no_content.header_values("content-length").is_empty());
    assert!(no_content.body.is_empty());
    let not_modified = raw::send(
        proxy.port,
        b"GET /304 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )?;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    Ok(())
}

#[test]
fn get_route_answers_head_without_body() -> TestResult {
    let proxy = Proxy::start(
        "listeners:\n  - address: 127.0.0.1:{port}\nroutes:\n  - name: r\n    default: true\n    methods: [GET]\n    script: hello.lua\n",
        &[("hello.lua", HELLO)],
    )?;
    let response = client().head(proxy.url("/")).send()?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "17");
    assert_eq!(response.text()?, "");
    Ok(())
}

#[test]
fn json_rejects_ambiguous_tables() -> TestResult {
    let script = r#"
add_event_listener("fetch", function(request)
    local _, duplicate = pcall(json.stringify, {[1] = "a", ["1"] = "b"})
    local _, mixed = pcall(json.stringify, json.array({1, 2, x = 3}))
    return {body = tostring(duplicate) .. "\n" .. tostring(mixed)}
end)
"#;
    let proxy = single_script_proxy(script)?;
    let body = client().get(proxy.url("/")).send()?.text()?;
    assert!(body.contains("the key \"1\" appears twice"), "{body}");
    assert!(
        body.contains("a json.array has keys other than 1..n"),
        "{body}"
    );
    Ok(())
}

//! The script standard library behind the real proxy: crypto, encodings,
//! time, url, uuid, env and secrets, `fetch` against a real origin on
//! loopback, scheduled handlers and the shipped modules.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::origin::Origin;
use support::{client, ConfigDir, Proxy, TestResult};

/// Starts a proxy with one default route running `script`; `extra` is
/// YAML appended to the route (indented by four spaces).
fn proxy_with(script: &str, extra: &str) -> TestResult<Proxy> {
    Proxy::start(
        &format!(
            "listeners:\n  - address: 127.0.0.1:{{port}}\nroutes:\n  - name: main\n    \
             default: true\n    script: main.lua\n{extra}"
        ),
        &[("main.lua", script)],
    )
}

/// Returns the JSON body of `GET path`, failing on a non-200 status.
fn get_json(proxy: &Proxy, path: &str) -> TestResult<Value> {
    let response = client().get(proxy.url(path)).send()?;
    let status = response.status();
    let text = response.text()?;
    assert_eq!(status, 200, "{text}\n{}", proxy.log());
    Ok(serde_json::from_str(&text)?)
}

/// Returns the value of header `name`, in any case, among the headers the
/// test origin echoed.
fn echoed_header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

/// Value of the sample whose line starts with `series` in the admin
/// listener's metrics, or 0 when there is none.
fn metric(proxy: &Proxy, series: &str) -> TestResult<f64> {
    let text = client().get(proxy.admin_url("/metrics")).send()?.text()?;
    Ok(text
        .lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0))
}

#[test]
fn crypto_and_encodings_give_known_answers() -> TestResult {
    let script = r#"
add_event_listener("fetch", function(request)
    local random = crypto.random_bytes(32)
    return {body = json.stringify({
        sha1 = hex.encode(crypto.sha1("abc")),
        sha256 = hex.encode(crypto.sha256("abc")),
        sha512 = hex.encode(crypto.sha512("abc")),
        hmac_sha1 = hex.encode(crypto.hmac("sha1", "Jefe", "what do ya want for nothing?")),
        hmac_sha256 = hex.encode(crypto.hmac("SHA256", "Jefe", "what do ya want for nothing?")),
        hmac_sha512 = hex.encode(crypto.hmac("sha512", "Jefe", "what do ya want for nothing?")),
        equal = crypto.constant_time_equal("secret", "secret"),
        unequal = crypto.constant_time_equal("secret", "secreT"),
        shorter = crypto.constant_time_equal("secret", "secre"),
        random_length = #random,
        random_differs = random ~= crypto.random_bytes(32),
        base64 = base64.encode("hello?>\255"),
        base64_back = base64.decode("aGVsbG8/Pg==") == "hello?>",
        base64_url = base64.url_encode("hello?>\255"),
        base64_url_back = base64.url_decode("aGVsbG8_Pg") == "hello?>",
        base64_url_padded = base64.url_decode("aGVsbG8_Pg==") == "hello?>",
        hex = hex.encode("\0\1\123\255"),
        hex_back = hex.decode("00017BfF") == "\0\1\123\255",
    })}
end)
"#;
    let proxy = proxy_with(script, "")?;
    let body = get_json(&proxy, "/")?;
    assert_eq!(body["sha1"], "a9993e364706816aba3e25717850c26c9cd0d89d");
    assert_eq!(
        body["sha256"],
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(
        body["sha512"],
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
         2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
    );
    // RFC 2202 and RFC 4231, test case 2.
    assert_eq!(
        body["hmac_sha1"],
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    );
    assert_eq!(
        body["hmac_sha256"],
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(
        body["hmac_sha512"],
        "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554\
         9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
    );
    assert_eq!(body["equal"], true);
    assert_eq!(body["unequal"], false);
    assert_eq!(body["shorter"], false);
    assert_eq!(body["random_length"], 32);
    assert_eq!(body["random_differs"], true);
    assert_eq!(body["base64"], "aGVsbG8/Pv8=");
    assert_eq!(body["base64_url"], "aGVsbG8_Pv8");
    for key in [
        "base64_back",
        "base64_url_back",
        "base64_url_padded",
        "hex_back",
    ] {
        assert_eq!(body[key], true, "{key}");
    }
    assert_eq!(body["hex"], "00017bff");
    Ok(())
}

#[test]
fn time_url_and_uuid_helpers_work() -> TestResult {
    let script = r#"
add_event_listener("fetch", function(request)
    local parsed = url.parse("https://user:pw@Example.com/a%20b/c?x=1&y=2#top")
    local query = url.parse_query("?a=1&b=x+y&a=2&c=%2F&empty")
    return {body = json.stringify({
        now = time.now(),
        rfc3339 = time.format_rfc3339(1445412480123),
        http_date = time.format_http_date(1445412480000),
        parsed_rfc3339 = time.parse_rfc3339("2015-10-21T09:28:00.123+02:00"),
        parsed_http_date = time.parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT"),
        parsed = parsed,
        default_port = url.parse("http://example.com").port,
        encoded = url.encode("a b/c?d=é~"),
        decoded = url.decode("a%20b%2Fc+d"),
        query = query,
        built = url.build_query({b = "x y", a = {"1", 2}, c = true}),
        v4 = uuid.v4(),
        v7_first = uuid.v7(),
        v7_second = uuid.v7(),
    })}
end)
"#;
    let proxy = proxy_with(script, "")?;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let body = get_json(&proxy, "/")?;
    let now = body["now"].as_i64().expect("time.now() is an integer");
    assert!((now - before).abs() < 5_000, "{now} vs {before}");
    assert_eq!(body["rfc3339"], "2015-10-21T07:28:00.123Z");
    assert_eq!(body["http_date"], "Wed, 21 Oct 2015 07:28:00 GMT");
    assert_eq!(body["parsed_rfc3339"], 1445412480123i64);
    assert_eq!(body["parsed_http_date"], 1445412480000i64);
    let parsed = &body["parsed"];
    assert_eq!(parsed["scheme"], "https");
    assert_eq!(parsed["host"], "example.com");
    assert_eq!(parsed["port"], 443);
    assert_eq!(parsed["username"], "user");
    assert_eq!(parsed["password"], "pw");
    assert_eq!(parsed["path"], "/a%20b/c");
    assert_eq!(parsed["query"], "x=1&y=2");
    assert_eq!(parsed["fragment"], "top");
    assert_eq!(body["default_port"], 80);
    assert_eq!(body["encoded"], "a%20b%2Fc%3Fd%3D%C3%A9~");
    assert_eq!(body["decoded"], "a b/c+d");
    assert_eq!(
        body["query"],
        serde_json::json!({"a": ["1", "2"], "b": "x y", "c": "/", "empty": ""})
    );
    assert_eq!(body["built"], "a=1&a=2&b=x%20y&c=true");
    let v4 = body["v4"].as_str().unwrap_or_default();
    assert_eq!(v4.len(), 36, "{v4}");
    assert_eq!(&v4[14..15], "4", "{v4}");
    let (first, second) = (
        body["v7_first"].as_str().unwrap_or_default(),
        body["v7_second"].as_str().unwrap_or_default(),
    );
    assert_eq!(&first[14..15], "7", "{first}");
    assert!(first < second, "v7 ids are time-ordered: {first} {second}");
    Ok(())
}

#[test]
fn bad_input_raises_errors_that_name_the_fix() -> TestResult {
    let script = r#"
-- Spellings of a header that fetch drops, built here where the top level
-- has a second of CPU time: about 4000 distinct names of 17 bytes.
local dropped = {}
local name = "transfer-encoding"
for mask = 0, 7999 do
    local parts = {}
    for i = 1, #name do
        local c = string.sub(name, i, i)
        if bit32.extract(mask, (i - 1) % 13) == 1 then c = string.upper(c) end
        parts[i] = c
    end
    dropped[table.concat(parts)] = "x"
end
local calls = {
    {"base64.decode", function() return base64.decode("not base64!") end},
    {"base64.url_decode", function() return base64.url_decode("a+b/") end},
    {"hex.decode odd", function() return hex.decode("abc") end},
    {"hex.decode digit", function() return hex.decode("zz") end},
    {"crypto.sha256 nil", function() return crypto.sha256(nil) end},
    {"crypto.sha1 number", function() return crypto.sha1(12) end},
    {"crypto.hmac algorithm", function() return crypto.hmac("md5", "k", "m") end},
    {"crypto.random_bytes zero", function() return crypto.random_bytes(0) end},
    {"crypto.random_bytes fraction", function() return crypto.random_bytes(1.5) end},
    {"time.format_rfc3339", function() return time.format_rfc3339(-1) end},
    {"time.parse_rfc3339", function() return time.parse_rfc3339("yesterday") end},
    {"time.parse_http_date", function() return time.parse_http_date("2015-10-21") end},
    {"time.parse_http_date year", function()
        return time.parse_http_date("Fri, 31 Dec 9999 23:30:00 -0100")
    end},
    {"time.parse_rfc3339 year", function() return time.parse_rfc3339("1969-12-31T23:59:59Z") end},
    {"url.parse", function() return url.parse("/relative/path") end},
    {"url.decode", function() return url.decode("100%zz") end},
    {"url.build_query", function() return url.build_query("a=1") end},
    {"url.build_query value", function() return url.build_query({a = {print}}) end},
    {"require", function() return require("socket") end},
    {"fetch target", function() return fetch(42) end},
    {"fetch url", function() return fetch("not a url") end},
    {"fetch scheme", function() return fetch("ftp://example.com/file") end},
    {"fetch option", function() return fetch("http://example.com", {tiemout_ms = 5}) end},
    {"fetch method", function() return fetch("http://example.com", {method = "BAD METHOD"}) end},
    {"fetch header", function() return fetch("http://example.com", {headers = {["x-a"] = "a\nb"}}) end},
    {"fetch_all", function() return fetch_all("http://example.com") end},
    {"fetch_all options", function() return fetch_all({}, {timeout_ms = 5}) end},
    {"url.build_query size", function()
        return url.build_query({k = table.create(200, string.rep("x", 1048576))})
    end},
    {"fetch headers size", function()
        return fetch("http://example.com", {headers = {x = table.create(100, string.rep("a", 1024))}})
    end},
    {"fetch headers numbers", function()
        return fetch("http://127.0.0.1:9/", {headers = {a = table.create(1985, 1e308)}})
    end},
    {"fetch dropped headers", function()
        return fetch("http://127.0.0.1:9/", {headers = dropped})
    end},
    {"url.parse length", function()
        return url.parse("http://" .. string.rep("xn--tda", 22000) .. ".test/")
    end},
    {"fetch url length", function()
        return fetch("http://127.0.0.1:9/" .. string.rep("a", 70000))
    end},
    {"fetch in a coroutine", function()
        return coroutine.wrap(function() return fetch("http://example.com") end)()
    end},
}
add_event_listener("fetch", function(request)
    local out = {}
    for _, call in ipairs(calls) do
        local ok, err = pcall(call[2])
        out[call[1]] = ok and "no error" or tostring(err)
    end
    return {body = json.stringify(out)}
end)
"#;
    let proxy = proxy_with(script, "")?;
    let body = get_json(&proxy, "/")?;
    let expected = [
        ("base64.decode", "base64.decode: invalid input"),
        ("base64.url_decode", "pass URL-safe base64"),
        ("hex.decode odd", "even number of hexadecimal digits"),
        ("hex.decode digit", "is not a hexadecimal digit"),
        (
            "crypto.sha256 nil",
            "crypto.sha256: argument 1 must be a string, not a nil",
        ),
        ("crypto.sha1 number", "must be a string, not a number"),
        ("crypto.hmac algorithm", "unknown algorithm `md5`"),
        ("crypto.random_bytes zero", "whole number from 1 to 65536"),
        (
            "crypto.random_bytes fraction",
            "whole number from 1 to 65536",
        ),
        ("time.format_rfc3339", "whole number from 0 to"),
        ("time.parse_rfc3339", "`yesterday` is not an RFC 3339 time"),
        ("time.parse_http_date", "is not an HTTP date"),
        (
            "time.parse_http_date year",
            "is outside the supported range",
        ),
        ("time.parse_rfc3339 year", "pass a time from 1970"),
        ("url.parse", "`/relative/path` is not an absolute URL"),
        ("url.decode", "invalid escape at offset 3"),
        ("url.build_query", "argument 1 must be a table"),
        ("url.build_query value", "value of `a` is a function"),
        ("require", "there is no module `socket`"),
        ("fetch target", "must be a URL string or a request table"),
        ("fetch url", "`not a url` is not an absolute URL"),
        ("fetch scheme", "has the scheme `ftp`"),
        ("fetch option", "unknown option \"tiemout_ms\""),
        ("fetch method", "`BAD METHOD` is not an HTTP method"),
        ("fetch header", "header `x-a` has a value with a newline"),
        ("fetch_all", "must be a list of URLs or request tables"),
        ("fetch_all options", "takes one argument, the list"),
        (
            "url.build_query size",
            "larger than the script's memory limit",
        ),
        (
            "fetch headers size",
            "headers add up to more than 65536 bytes",
        ),
        (
            "fetch headers numbers",
            "headers add up to more than 65536 bytes",
        ),
        (
            "fetch dropped headers",
            "headers add up to more than 65536 bytes",
        ),
        ("url.parse length", "bytes, more than 65536"),
        ("fetch url length", "bytes, more than 65536"),
        ("fetch in a coroutine", "cannot run inside a coroutine"),
    ];
    for (call, fragment) in expected {
        let message = body[call].as_str().unwrap_or_default();
        assert!(message.contains(fragment), "{call}: {message}");
    }
    Ok(())
}

#[test]
fn fetch_reaches_an_allowed_origin_on_loopback() -> TestResult {
    let origin = Origin::start("upstream");
    let script = format!(
        r#"
add_event_listener("fetch", function(request)
    local response = fetch("http://127.0.0.1:{port}/items?x=1", {{
        method = "POST",
        headers = {{["X-Token"] = "t1", ["X-List"] = {{"a", "b"}}, ["Content-Length"] = "999"}},
        body = "payload",
    }})
    local echo = json.parse(response.body)
    return {{body = json.stringify({{
        status = response.status,
        ok = response.ok,
        url = response.url,
        origin_header = response.headers["X-Origin"],
        cookies = response.headers["set-cookie"],
        method = echo.method,
        target = echo.target,
        body = echo.body,
        headers = echo.headers,
    }})}}
end)
"#,
        port = origin.port
    );
    let proxy = proxy_with(
        &script,
        "    fetch:\n      allow: [\"127.0.0.1\"]\n      allow_private: true\n",
    )?;
    let body = get_json(&proxy, "/")?;
    assert_eq!(body["status"], 200);
    assert_eq!(body["ok"], true);
    assert_eq!(
        body["url"],
        format!("http://127.0.0.1:{}/items?x=1", origin.port)
    );
    assert_eq!(body["origin_header"], "upstream");
    assert_eq!(body["cookies"], serde_json::json!(["a=1", "b=2"]));
    assert_eq!(body["method"], "POST");
    assert_eq!(body["target"], "/items?x=1");
    assert_eq!(body["body"], "payload");
    let headers: Vec<(String, String)> = serde_json::from_value(body["headers"].clone())?;
    let values = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(values("x-token"), ["t1"]);
    assert_eq!(values("x-list"), ["a", "b"]);
    // The client frames the body itself; the script's length is dropped.
    assert_eq!(values("content-length"), ["7"]);
    assert_eq!(
        metric(
            &proxy,
            "actias_fetch_requests_total{outcome=\"ok\",route=\"main\"}"
        )?,
        1.0
    );
    Ok(())
}

#[test]
fn fetch_rejects_private_and_unlisted_hosts() -> TestResult {
    let origin = Origin::start("private");
    let config = "listeners:\n  - address: 127.0.0.1:{port}\nroutes:\n  - name: open\n    hosts: \
         [open.test]\n    script: main.lua\n  - name: listed\n    hosts: [listed.test]\n    \
         script: main.lua\n    fetch:\n      allow: [\"api.example.com\", \"*.example.org\"]\n      \
         allow_private: true\n  - name: hops\n    hosts: [hops.test]\n    script: main.lua\n    \
         fetch:\n      allow: [\"127.0.0.1\"]\n      allow_private: true\n";
    let script = r#"
add_event_listener("fetch", function(request)
    local target = request.headers["x-target"]
    local ok, err = pcall(fetch, target)
    return {body = ok and "fetched" or tostring(err)}
end)
"#;
    let proxy = Proxy::start(config, &[("main.lua", script)])?;
    let get = |host: &str, target: String| -> TestResult<String> {
        Ok(client()
            .get(proxy.url("/"))
            .header("host", host)
            .header("x-target", target)
            .send()?
            .text()?)
    };
    let port = origin.port;
    for target in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://127.1:{port}/"),
        format!("http://0x7f000001:{port}/"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/".to_string(),
    ] {
        let message = get("open.test", target.clone())?;
        assert!(
            message.contains("is loopback, private or otherwise not public")
                && message.contains("fetch.allow_private"),
            "{target}: {message}"
        );
    }
    let message = get("listed.test", format!("http://127.0.0.1:{port}/"))?;
    assert!(
        message.contains("may not fetch from `127.0.0.1`; add it to the route's fetch.allow list"),
        "{message}"
    );
    // Each hop of a redirect is checked against the allow-list.
    let message = get(
        "hops.test",
        format!("http://127.0.0.1:{port}/redirect?to=http://localhost:{port}/"),
    )?;
    assert!(
        message.contains("may not fetch from `localhost`"),
        "{message}"
    );
    assert_eq!(
        get(
            "hops.test",
            format!("http://127.0.0.1:{port}/redirect?to=http://127.0.0.1:{port}/x")
        )?,
        "fetched"
    );
    // A redirect to another scheme raises instead of returning the 302.
    let message = get(
        "hops.test",
        format!("http://127.0.0.1:{port}/redirect?to=file:///etc/passwd"),
    )?;
    assert!(
        message.contains("redirected to `file:///etc/passwd`, which is not an http or https URL"),
        "{message}"
    );
    // Only the two allowed hops of the last request reached the origin,
    // plus the redirecting hops of the refused ones.
    assert!(
        origin.accepted_connections() <= 4,
        "{}",
        origin.accepted_connections()
    );
    assert_eq!(
        metric(
            &proxy,
            "actias_fetch_requests_total{outcome=\"refused\",route=\"open\"}"
        )?,
        7.0
    );
    Ok(())
}

#[test]
fn fetch_stops_at_timeouts_size_and_request_caps() -> TestResult {
    let origin = Origin::start("capped");
    let script = format!(
        r#"
local base = "http://127.0.0.1:{port}"
add_event_listener("fetch", function(request)
    if request.path == "/timeout" then
        local ok, err = pcall(fetch, base .. "/slow?ms=3000", {{timeout_ms = 200}})
        return {{body = tostring(err)}}
    elseif request.path == "/large" then
        local ok, err = pcall(fetch, base .. "/" .. string.rep("x", 300))
        return {{body = tostring(err)}}
    elseif request.path == "/cap" then
        local made, message = 0, ""
        for i = 1, 6 do
            local ok, err = pcall(fetch, base .. "/n" .. i)
            if ok then made += 1 else message = tostring(err) end
        end
        return {{body = made .. " " .. message}}
    elseif request.path == "/all" then
        local list = {{}}
        for i = 1, 4 do list[i] = base .. "/slow?ms=300&i=" .. i end
        local responses = fetch_all(list)
        local targets = {{}}
        for i, response in ipairs(responses) do targets[i] = json.parse(response.body).target end
        local ok, err = pcall(fetch_all, {{base .. "/a", base .. "/b"}})
        return {{body = json.stringify({{targets = targets, over = tostring(err)}})}}
    end
end)
"#,
        port = origin.port
    );
    // The origin echoes the request: about 300 bytes for `/slow`, over 600
    // for the long path of `/large`.
    let proxy = proxy_with(
        &script,
        "    fetch:\n      allow_private: true\n      max_requests: 5\n      max_in_flight: 2\n      \
         max_response_bytes: 500\n",
    )?;
    let body = get_json(&proxy, "/all")?;
    let targets: Vec<String> = serde_json::from_value(body["targets"].clone())?;
    assert_eq!(targets.len(), 4);
    for (index, target) in targets.iter().enumerate() {
        assert_eq!(
            target,
            &format!("/slow?ms=300&i={}", index + 1),
            "{targets:?}"
        );
    }
    assert!(
        body["over"]
            .as_str()
            .unwrap_or_default()
            .contains("at most 5 subrequests"),
        "{body}"
    );
    // Four slow requests, two in flight at a time.
    assert_eq!(origin.max_slow_at_once(), 2);

    let started = Instant::now();
    let text = client().get(proxy.url("/timeout")).send()?.text()?;
    assert!(
        text.contains("the subrequest took longer than 200 ms"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_millis(2500));

    let text = client().get(proxy.url("/large")).send()?.text()?;
    assert!(
        text.contains("larger than the route's fetch.max_response_bytes of 500 bytes"),
        "{text}"
    );

    // The cap counts per request: this one starts from zero again. The
    // cap metric counts each refused call, the fetch_all above included.
    let text = client().get(proxy.url("/cap")).send()?.text()?;
    assert!(
        text.starts_with("5 ") && text.contains("at most 5 subrequests"),
        "{text}"
    );
    assert_eq!(
        metric(
            &proxy,
            "actias_fetch_requests_total{outcome=\"cap\",route=\"main\"}"
        )?,
        2.0
    );

    Ok(())
}

#[test]
fn fetch_request_reaches_route_origin() -> TestResult {
    let origin = Origin::start("backend");
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\norigins:\n  - name: backend\n    \
         servers: [\"{}\"]\nroutes:\n  - name: main\n    hosts: [shop.test]\n    script: \
         main.lua\n    origin: backend\n",
        origin.address()
    );
    let script = r#"
add_event_listener("fetch", function(request)
    request.headers["x-added"] = "by-script"
    if request.path == "/old/cart" then
        request.path = "/new/cart"
        request.query.page = "2"
    end
    local response = fetch(request)
    local echo = json.parse(response.body)
    return {
        status = response.status,
        headers = {["x-origin"] = response.headers["x-origin"]},
        body = json.stringify({wrapped = true, target = echo.target, headers = echo.headers}),
    }
end)
"#;
    let proxy = Proxy::start(&config, &[("main.lua", script)])?;
    let response = client()
        .get(proxy.url("/cart?id=3"))
        .header("host", "shop.test")
        .send()?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-origin"], "backend");
    let body: Value = response.json()?;
    assert_eq!(body["wrapped"], true);
    assert_eq!(body["target"], "/cart?id=3");
    let headers: Vec<(String, String)> = serde_json::from_value(body["headers"].clone())?;
    let header = |name: &str| echoed_header(&headers, name);
    assert_eq!(header("host").as_deref(), Some("shop.test"));
    assert_eq!(header("x-added").as_deref(), Some("by-script"));

    // Path and query edits apply to `fetch(request)` as to a fall-through.
    let edited: Value = client()
        .get(proxy.url("/old/cart?id=3"))
        .header("host", "shop.test")
        .send()?
        .json()?;
    assert_eq!(edited["target"], "/new/cart?id=3&page=2");
    Ok(())
}

#[test]
fn env_secrets_stay_in_route() -> TestResult {
    let config = "listeners:\n  - address: 127.0.0.1:{port}\nroutes:\n  - name: main\n    \
                  hosts: [main.test]\n    script: main.lua\n    env:\n      GREETING: hello\n    \
                  secrets:\n      TOKEN: {file: token.txt}\n      HOME_DIR: {env: HOME}\n  \
                  - name: other\n    hosts: [other.test]\n    script: main.lua\n";
    let script = r#"
add_event_listener("fetch", function(request)
    if request.path == "/fail" then
        log.warn("token is " .. env.TOKEN)
        error("cannot use " .. env.TOKEN)
    end
    local ok = pcall(function() env.GREETING = "changed" end)
    return {body = json.stringify({
        greeting = env.GREETING or "none",
        token = env.TOKEN or "none",
        home = env.HOME_DIR or "none",
        writable = ok,
    })}
end)
"#;
    let proxy = Proxy::start(
        config,
        &[("main.lua", script), ("token.txt", "tok-3f9a-secret\n")],
    )?;
    let get = |host: &str, path: &str| client().get(proxy.url(path)).header("host", host).send();
    let body: Value = get("main.test", "/")?.json()?;
    assert_eq!(body["greeting"], "hello");
    assert_eq!(body["token"], "tok-3f9a-secret");
    assert_eq!(
        body["home"],
        std::env::var("HOME").unwrap_or_default().as_str()
    );
    assert_eq!(body["writable"], false);
    let other: Value = get("other.test", "/")?.json()?;
    assert_eq!(other["token"], "none");
    assert_eq!(other["greeting"], "none");

    let failed = get("main.test", "/fail")?;
    assert_eq!(failed.status(), 500);
    let text = failed.text()?;
    assert!(!text.contains("tok-3f9a"), "{text}");
    assert!(proxy.wait_log_line(&["token is [secret TOKEN]"]).is_some());
    assert!(proxy
        .wait_log_line(&["cannot use [secret TOKEN]"])
        .is_some());
    assert!(!proxy.log().contains("tok-3f9a"), "{}", proxy.log());
    Ok(())
}

#[test]
fn unreadable_secrets_and_bad_keys_fail_the_check() -> TestResult {
    let config = "routes:\n  - name: main\n    default: true\n    script: main.lua\n    \
                  secrets:\n      MISSING: {env: ACTIAS_TEST_NO_SUCH_VARIABLE}\n      \
                  NOFILE: {file: absent.txt}\n      BOTH: {env: HOME, file: x}\n    \
                  env:\n      1BAD: x\n    fetch:\n      allow: [\"https://example.com\"]\n      \
                  max_in_flight: 0\n  - name: timed\n    script: timed.lua\n    schedule: \
                  \"61 * * * *\"\n  - name: nohandler\n    script: main.lua\n    schedule: \
                  \"@hourly\"\n";
    let script = "add_event_listener(\"fetch\", function() return {} end)\n";
    let dir = ConfigDir::new(config, &[("main.lua", script), ("timed.lua", script)])?;
    let output = dir.check()?;
    let text = String::from_utf8_lossy(&output.stderr).to_string()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    for fragment in [
        "routes[0].secrets.BOTH",
        "exactly one source",
        "routes[0].env.1BAD",
        "routes[0].fetch.allow[0]",
        "`https://example.com` is not a host name",
        "routes[0].fetch.max_in_flight",
        "routes[1].schedule",
        "minute field has `61`",
    ] {
        assert!(text.contains(fragment), "missing {fragment}:\n{text}");
    }

    // With the structure fixed, the unreadable secrets and the missing
    // scheduled handler are reported when the scripts load.
    let config = "routes:\n  - name: main\n    default: true\n    script: main.lua\n    \
                  secrets:\n      MISSING: {env: ACTIAS_TEST_NO_SUCH_VARIABLE}\n  - name: \
                  filed\n    hosts: [f.test]\n    script: main.lua\n    secrets:\n      \
                  NOFILE: {file: absent.txt}\n  - name: nohandler\n    script: main.lua\n    \
                  schedule: \"@hourly\"\n";
    let dir = ConfigDir::new(config, &[("main.lua", script)])?;
    let output = dir.check()?;
    let text = String::from_utf8_lossy(&output.stderr).to_string()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    for fragment in [
        "environment variable `ACTIAS_TEST_NO_SUCH_VARIABLE`, which is not set",
        "absent.txt`, which cannot be read",
        "routes[2].schedule",
        "registers no scheduled handler",
    ] {
        assert!(text.contains(fragment), "missing {fragment}:\n{text}");
    }
    Ok(())
}

#[test]
fn scheduled_runs_survive_failures() -> TestResult {
    let config = "listeners:\n  - address: 127.0.0.1:{port}\nroutes:\n  - name: counter\n    \
                  script: counter.lua\n    schedule: \"0 0 1 1 *\"\n    kv: [jobs]\n  - name: \
                  web\n    default: true\n    script: web.lua\n    kv: [jobs]\n";
    let counter = r#"
add_event_listener("scheduled", function(event)
    local jobs = kv.namespace("jobs")
    local runs = tonumber(jobs:get("runs") or "0") + 1
    jobs:put("runs", tostring(runs))
    jobs:put("cron", event.cron)
    if runs == 2 then
        error("the second run fails")
    end
end)
"#;
    let web = r#"
add_event_listener("fetch", function(request)
    local jobs = kv.namespace("jobs")
    return {body = (jobs:get("runs") or "0") .. " " .. (jobs:get("cron") or "-")}
end)
"#;
    let proxy = Proxy::start(config, &[("counter.lua", counter), ("web.lua", web)])?;
    let trigger = || client().post(proxy.admin_url("/scheduled/counter")).send();
    let first = trigger()?;
    assert_eq!(first.status(), 200);
    assert!(first.text()?.contains("scheduled run of `counter`: ok"));
    let second = trigger()?;
    assert_eq!(second.status(), 500);
    let text = second.text()?;
    assert!(text.contains("the second run fails"), "{text}");
    assert_eq!(trigger()?.status(), 200);
    assert_eq!(client().get(proxy.url("/")).send()?.text()?, "3 manual");
    assert_eq!(
        metric(
            &proxy,
            "actias_scheduled_runs_total{outcome=\"ok\",route=\"counter\"}"
        )?,
        2.0
    );
    assert_eq!(
        metric(
            &proxy,
            "actias_scheduled_runs_total{outcome=\"error\",route=\"counter\"}"
        )?,
        1.0
    );
    assert!(proxy
        .wait_log_line(&["scheduled run failed", "counter", "the second run fails"])
        .is_some());

    let missing = client()
        .post(proxy.admin_url("/scheduled/nothing"))
        .send()?;
    assert_eq!(missing.status(), 404);
    let no_handler = client().post(proxy.admin_url("/scheduled/web")).send()?;
    assert_eq!(no_handler.status(), 409);
    assert_eq!(
        client()
            .get(proxy.admin_url("/scheduled/counter"))
            .send()?
            .status(),
        405
    );
    Ok(())
}

#[test]
fn schedules_fire_on_the_minute() -> TestResult {
    // The heavy route comes first, so its run starts first.
    let config = "listeners:\n  - address: 127.0.0.1:{port}\nroutes:\n  - name: heavy\n    \
                  script: heavy.lua\n    schedule: \"* * * * *\"\n    limits:\n      \
                  cpu_ms: 3000\n  - name: ticker\n    script: ticker.lua\n    schedule: \
                  \"* * * * *\"\n";
    let ticker = r#"
add_event_listener("scheduled", function(event)
    log.info("tick at " .. time.format_rfc3339(event.scheduled_time) .. " by " .. event.cron)
end)
"#;
    // A spin inside a coroutine never yields the thread, so it keeps one
    // thread busy until the CPU limit stops it.
    let heavy = r#"
add_event_listener("scheduled", function(event)
    coroutine.wrap(function() while true do end end)()
end)
"#;
    let proxy = Proxy::start(config, &[("ticker.lua", ticker), ("heavy.lua", heavy)])?;
    // The next minute boundary is at most 60 s away.
    let deadline = Instant::now() + Duration::from_secs(75);
    let line = loop {
        if let Some(line) = proxy
            .log()
            .lines()
            .find(|line| line.contains("tick at") && line.contains("by * * * * *"))
        {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled run within 75 s:\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(line.contains(":00.000Z by"), "{line}");
    assert!(proxy
        .wait_log_line(&["scheduled run", "ticker", "\"outcome\":\"ok\""])
        .is_some());

    // The heavy run of the same minute did not delay the ticker's.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !proxy.log().contains("scheduled run failed") {
        assert!(
            Instant::now() < deadline,
            "the heavy run never stopped:\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = proxy.log();
    let stopped = log
        .lines()
        .find(|line| line.contains("scheduled run failed"))
        .unwrap_or_default();
    assert!(stopped.contains("\"route\":\"heavy\""), "{stopped}");
    assert!(stopped.contains("\"outcome\":\"limit\""), "{stopped}");
    let tick_at = log.find("tick at");
    let heavy_at = log.find("scheduled run failed");
    assert!(tick_at < heavy_at, "{log}");
    Ok(())
}

#[test]
fn shipped_modules_route_requests_and_build_cookies() -> TestResult {
    let script = r#"
local router = require("router")
local cookie = require("cookie")
local app = router.new()
app:get("/users/:id", function(request, params)
    return {
        headers = {["set-cookie"] = cookie.serialize("seen", params.id, {path = "/", http_only = true})},
        body = "user " .. params.id .. " cookie " .. tostring(cookie.get(request, "session")),
    }
end)
add_event_listener("fetch", function(request)
    return app:handle(request)
end)
"#;
    let proxy = proxy_with(script, "")?;
    let response = client()
        .get(proxy.url("/users/42"))
        .header("cookie", "a=1; session=\"abc\"")
        .send()?;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["set-cookie"],
        "seen=42; Path=/; HttpOnly"
    );
    assert_eq!(response.text()?, "user 42 cookie abc");
    let response = client().post(proxy.url("/users/42")).send()?;
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    assert_eq!(client().get(proxy.url("/nope")).send()?.status(), 404);
    Ok(())
}

#[test]
fn script_log_lines_are_capped_per_request() -> TestResult {
    let script = r#"
add_event_listener("fetch", function(request)
    for i = 1, 150 do log.info("line " .. i) end
    return {body = "done"}
end)
"#;
    let proxy = proxy_with(script, "")?;
    assert_eq!(client().get(proxy.url("/")).send()?.text()?, "done");
    assert!(proxy
        .wait_log_line(&["logged 100 lines in one request"])
        .is_some());
    let log = proxy.log();
    assert!(log.contains("\"line 100\""), "{log}");
    assert!(!log.contains("\"line 101\""));
    Ok(())
}

#[test]
fn session_example_signs_and_fetches() -> TestResult {
    let origin = Origin::start("profiles");
    let script = include_str!("../../conf/scripts/session.lua");
    let key_file = "secret-session-key-for-this-test\n";
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\norigins:\n  - name: app\n    servers: \
         [\"{}\"]\nroutes:\n  - name: session\n    hosts: [session.test]\n    script: \
         session.lua\n    origin: app\n    secrets:\n      SESSION_KEY: {{file: key.txt}}\n",
        origin.address()
    );
    let proxy = Proxy::start(&config, &[("session.lua", script), ("key.txt", key_file)])?;
    let send = |method: reqwest::Method, path: &str, cookie: Option<&str>| {
        let mut request = client()
            .request(method, proxy.url(path))
            .header("host", "session.test");
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send()
    };
    let unauthenticated = send(reqwest::Method::GET, "/profile", None)?;
    assert_eq!(unauthenticated.status(), 401);

    let login = send(reqwest::Method::POST, "/login?user=ada", None)?;
    assert_eq!(login.status(), 204);
    let set_cookie = login.headers()["set-cookie"].to_str()?.to_string();
    let session = set_cookie.split(';').next().unwrap_or_default().to_string();
    assert!(session.starts_with("session=ada:"), "{set_cookie}");

    let profile = send(reqwest::Method::GET, "/profile", Some(&session))?;
    assert_eq!(profile.status(), 200);
    let body: Value = profile.json()?;
    assert_eq!(body["user"], "ada");
    assert_eq!(body["profile"]["origin"], "profiles");
    assert_eq!(body["profile"]["target"], "/users/ada");

    let forged = session.replace("session=ada", "session=eve");
    assert_eq!(
        send(reqwest::Method::GET, "/profile", Some(&forged))?.status(),
        401
    );
    // Paths the script does not route fall through to the origin.
    let other: Value = send(reqwest::Method::GET, "/about", None)?.json()?;
    assert_eq!(other["target"], "/about");
    assert!(!proxy.log().contains("secret-session-key"));
    Ok(())
}

#[test]
fn check_rejects_top_level_fetch_and_pasted_secrets() -> TestResult {
    let config = "routes:\n  - name: main\n    default: true\n    script: main.lua\n    \
                  fetch: {allow_private: true}\n";
    let script = "local early = fetch(\"http://127.0.0.1:9/\")\n\
                  add_event_listener(\"fetch\", function() return {} end)\n";
    let dir = ConfigDir::new(config, &[("main.lua", script)])?;
    let output = dir.check()?;
    let text = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("call it from inside a handler"), "{text}");

    let config = "routes:\n  - name: main\n    default: true\n    script: main.lua\n    \
                  secrets:\n      KEY: \"pasted-secret-value\"\n";
    let script = "add_event_listener(\"fetch\", function() return {} end)\n";
    let dir = ConfigDir::new(config, &[("main.lua", script)])?;
    let output = dir.check()?;
    let text = String::from_utf8_lossy(&output.stderr).to_string();
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("routes[0].secrets.KEY"), "{text}");
    assert!(
        text.contains("keep the secret itself out of the config"),
        "{text}"
    );
    assert!(!text.contains("pasted-secret-value"), "{text}");
    Ok(())
}

#[test]
fn fetch_ignores_client_chosen_host() -> TestResult {
    let origin = Origin::start("diverted");
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\norigins:\n  - name: app\n    servers: \
         [\"{}\"]\nroutes:\n  - name: catchall\n    default: true\n    script: main.lua\n    \
         origin: app\n    fetch:\n      allow: [\"localhost\"]\n",
        origin.address()
    );
    let script = r#"
add_event_listener("fetch", function(request)
    local ok, err = pcall(fetch, "http://" .. request.headers.host .. "/private")
    return {body = ok and "reached the origin" or tostring(err)}
end)
"#;
    let proxy = Proxy::start(&config, &[("main.lua", script)])?;
    // The default route names no host, so a Host header of the client's
    // choosing is checked like any other subrequest host.
    let text = client()
        .get(proxy.url("/"))
        .header("host", format!("localhost:{}", origin.port))
        .send()?
        .text()?;
    assert!(
        text.contains("is loopback, private or otherwise not public"),
        "{text}"
    );
    assert_eq!(origin.accepted_connections(), 0);
    Ok(())
}

#[test]
fn subrequests_cannot_loop_or_reach_admin() -> TestResult {
    let script = r#"
local next_hop = {["/a"] = "/b", ["/b"] = "/c", ["/c"] = "/d", ["/d"] = "/e", ["/self"] = "/self"}
add_event_listener("fetch", function(request)
    if request.path == "/admin" then
        local response = fetch(request.headers["x-target"], {method = "POST"})
        return {body = response.status .. " " .. response.body}
    end
    local depth = request.headers["actias-subrequest-depth"] or "0"
    local base = request.url:match("^(http://[^/]+)")
    -- A script cannot lower the depth by setting the header itself.
    local ok, result = pcall(fetch, base .. next_hop[request.path],
        {headers = {["actias-subrequest-depth"] = "0", ["actias-subrequest-routes"] = ""}})
    if ok then
        return {body = depth .. ">" .. result.body}
    end
    return {body = depth .. "!" .. tostring(result)}
end)
"#;
    let mut config = String::from("listeners:\n  - address: 127.0.0.1:{port}\nroutes:\n");
    for name in ["a", "b", "c", "d", "self", "admin"] {
        config.push_str(&format!(
            "  - name: {name}\n    hosts: [\"127.0.0.1\"]\n    paths: [/{name}]\n    script: hop.lua\n    fetch:\n      \
             allow_private: true\n"
        ));
    }
    let proxy = Proxy::start(&config, &[("hop.lua", script)])?;

    // Four routes in a chain: the fourth is three subrequests deep.
    let chain = client().get(proxy.url("/a")).send()?.text()?;
    assert!(chain.starts_with("0>1>2>3!"), "{chain}");
    assert!(chain.contains("subrequests stop at 3 levels"), "{chain}");

    // A route that fetches itself gets 508 at once.
    let looped = client().get(proxy.url("/self")).send()?.text()?;
    assert!(
        looped.starts_with("0>508 Loop Detected: a script's subrequest came back"),
        "{looped}"
    );

    for path in ["/reload", "/scheduled/a"] {
        let body = client()
            .get(proxy.url("/admin"))
            .header("x-target", proxy.admin_url(path))
            .send()?
            .text()?;
        assert_eq!(
            body, "403 the admin endpoints do not accept subrequests from scripts\n",
            "{path}"
        );
    }
    assert!(
        proxy
            .wait_log_line(&[
                "rejected an admin request sent by a script's fetch",
                "/reload"
            ])
            .is_some(),
        "{}",
        proxy.log()
    );
    Ok(())
}

#[test]
fn fetch_bodies_must_fit_in_memory_left() -> TestResult {
    let origin = Origin::start("echo");
    let script = format!(
        r#"
local base = "http://127.0.0.1:{port}/echo"
add_event_listener("fetch", function(request)
    local payload = string.rep("x", 1024 * 1024)
    if request.path == "/one" then
        local response = fetch(base, {{method = "POST", body = payload}})
        return {{body = tostring(#response.body > #payload)}}
    end
    local list = {{}}
    for i = 1, 3 do list[i] = {{url = base, method = "POST", body = payload}} end
    local ok, err = pcall(fetch_all, list)
    return {{body = tostring(ok) .. " " .. tostring(err)}}
end)
"#,
        port = origin.port
    );
    // The origin echoes each 1 MiB body back: one response fits in the
    // 4 MiB VM next to the payload, three at once do not.
    let proxy = proxy_with(
        &script,
        "    fetch:\n      allow_private: true\n    limits:\n      memory_bytes: 4194304\n",
    )?;
    assert_eq!(client().get(proxy.url("/one")).send()?.text()?, "true");
    let text = client().get(proxy.url("/all")).send()?.text()?;
    assert!(text.starts_with("false "), "{text}");
    assert!(
        text.contains("bytes left of the script's memory limit"),
        "{text}"
    );
    assert!(
        metric(
            &proxy,
            "actias_fetch_requests_total{outcome=\"too_large\",route=\"main\"}"
        )? >= 1.0
    );
    Ok(())
}

#[test]
fn forwarded_requests_keep_subrequest_headers() -> TestResult {
    let origin = Origin::start("backend");
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\norigins:\n  - name: backend\n    \
         servers: [\"{}\"]\nroutes:\n  - name: main\n    default: true\n    script: \
         main.lua\n    origin: backend\n",
        origin.address()
    );
    let script = r#"
add_event_listener("fetch", function(request)
    request.headers["actias-subrequest-depth"] = nil
    request.headers["actias-subrequest-routes"] = "forged"
    request.headers["x-kept"] = "yes"
end)
"#;
    let proxy = Proxy::start(&config, &[("main.lua", script)])?;
    let body: Value = client()
        .get(proxy.url("/"))
        .header("actias-subrequest-depth", "2")
        .header("actias-subrequest-routes", "0123456789abcdef")
        .send()?
        .json()?;
    let headers: Vec<(String, String)> = serde_json::from_value(body["headers"].clone())?;
    let header = |name: &str| echoed_header(&headers, name);
    assert_eq!(header("actias-subrequest-depth").as_deref(), Some("2"));
    assert_eq!(
        header("actias-subrequest-routes").as_deref(),
        Some("0123456789abcdef")
    );
    assert_eq!(header("x-kept").as_deref(), Some("yes"));
    Ok(())
}

#[test]
fn default_route_fetch_explains_origin_rule() -> TestResult {
    let origin = Origin::start("backend");
    let config = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\norigins:\n  - name: backend\n    \
         servers: [\"{}\"]\nroutes:\n  - name: main\n    default: true\n    script: \
         main.lua\n    origin: backend\n",
        origin.address()
    );
    let script = r#"
add_event_listener("fetch", function(request)
    local ok, err = pcall(fetch, request)
    return {body = tostring(err)}
end)
"#;
    let proxy = Proxy::start(&config, &[("main.lua", script)])?;
    let text = client().get(proxy.url("/")).send()?.text()?;
    assert!(text.contains("set fetch.allow_private"), "{text}");
    assert!(
        text.contains("list that host in the route's `hosts` (a `default` route does not name it)"),
        "{text}"
    );
    Ok(())
}

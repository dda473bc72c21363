//! Route selection behind the real proxy: hosts, wildcards, defaults,
//! path precedence and path normalisation.

mod support;

use support::{raw, Proxy, TestResult};

/// Every route responds with its own name and the path it saw.
const ECHO_ROUTE: &str = r#"
add_event_listener("fetch", function(request)
    local id = request.params.id or ""
    return {body = request.route .. " " .. request.path .. " " .. id}
end)
"#;

const CONFIG: &str = r#"
listeners:
  - address: 127.0.0.1:{port}
routes:
  - name: wildcard
    hosts: ["*.example.com"]
    script: echo.lua
  - name: api
    hosts: ["api.example.com"]
    script: echo.lua
  - name: prefix
    hosts: ["paths.test"]
    paths: ["/users/*"]
    script: echo.lua
  - name: param
    hosts: ["paths.test"]
    paths: ["/users/:id"]
    script: echo.lua
  - name: exact
    hosts: ["paths.test"]
    paths: ["/users/me"]
    script: echo.lua
  - name: files
    hosts: ["paths.test"]
    paths: ["/files/:id"]
    script: echo.lua
  - name: posts-only
    hosts: ["paths.test"]
    paths: ["/form"]
    methods: [POST]
    script: echo.lua
"#;

fn get(proxy: &Proxy, host: &str, target: &str) -> TestResult<raw::RawResponse> {
    let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    raw::send(proxy.port, request.as_bytes())
}

fn body(proxy: &Proxy, host: &str, target: &str) -> TestResult<String> {
    let response = get(proxy, host, target)?;
    assert_eq!(
        response.status,
        200,
        "{host}{target}: {}",
        response.body_text()
    );
    Ok(response.body_text())
}

fn start() -> TestResult<Proxy> {
    Proxy::start(CONFIG, &[("echo.lua", ECHO_ROUTE)])
}

#[test]
fn hosts_ignore_case_port_and_trailing_dot() -> TestResult {
    let proxy = start()?;
    assert_eq!(body(&proxy, "api.example.com", "/")?, "api / ");
    assert_eq!(body(&proxy, "API.Example.COM", "/")?, "api / ");
    assert_eq!(body(&proxy, "api.example.com:8080", "/")?, "api / ");
    assert_eq!(body(&proxy, "api.example.com.", "/")?, "api / ");
    assert_eq!(body(&proxy, "API.example.com.:443", "/")?, "api / ");
    Ok(())
}

#[test]
fn wildcard_takes_subdomains_but_not_apex() -> TestResult {
    let proxy = start()?;
    assert_eq!(body(&proxy, "www.example.com", "/")?, "wildcard / ");
    assert_eq!(body(&proxy, "a.b.example.com", "/")?, "wildcard / ");
    assert_eq!(get(&proxy, "example.com", "/")?.status, 404);
    Ok(())
}

#[test]
fn unknown_host_gets_404_with_request_id() -> TestResult {
    let proxy = start()?;
    let response = get(&proxy, "nobody.test", "/")?;
    assert_eq!(response.status, 404);
    assert!(response.body_text().contains("request id: "));
    Ok(())
}

#[test]
fn default_route_takes_unknown_hosts() -> TestResult {
    let config = "listeners:\n  - address: 127.0.0.1:{port}\nroutes:\n  - name: named\n    hosts: [named.test]\n    script: echo.lua\n  - name: fallback\n    default: true\n    script: echo.lua\n";
    let proxy = Proxy::start(config, &[("echo.lua", ECHO_ROUTE)])?;
    assert_eq!(body(&proxy, "named.test", "/")?, "named / ");
    assert_eq!(body(&proxy, "other.test", "/")?, "fallback / ");
    Ok(())
}

#[test]
fn exact_beats_parameter_beats_prefix() -> TestResult {
    let proxy = start()?;
    assert_eq!(body(&proxy, "paths.test", "/users/me")?, "exact /users/me ");
    assert_eq!(
        body(&proxy, "paths.test", "/users/42")?,
        "param /users/42 42"
    );
    assert_eq!(
        body(&proxy, "paths.test", "/users/42/posts")?,
        "prefix /users/42/posts "
    );
    assert_eq!(body(&proxy, "paths.test", "/users")?, "prefix /users ");
    assert_eq!(get(&proxy, "paths.test", "/other")?.status, 404);
    Ok(())
}

#[test]
fn encoded_slash_stays_in_its_segment() -> TestResult {
    let proxy = start()?;
    assert_eq!(
        body(&proxy, "paths.test", "/files/a%2Fb")?,
        "files /files/a%2Fb a/b"
    );
    Ok(())
}

#[test]
fn ambiguous_encoded_slash_gets_400() -> TestResult {
    let proxy = start()?;
    // An origin that decodes `%2F` would serve `/users/a/b` (the prefix
    // route), `/users/me` (the exact route) or `/secret` (no route at all).
    for target in [
        "/users/a%2Fb",
        "/users/x%2F..%2Fme",
        "/files/..%2f..%2Fsecret",
        "/files/x%5C..%5C..%5Csecret",
        "/files/..;/users/me",
        "/files/%2e%2e;x=1/users/me",
        "/files/..%252Fusers/me",
    ] {
        let response = get(&proxy, "paths.test", target)?;
        assert_eq!(response.status, 400, "{target}: {}", response.body_text());
        assert!(
            response.body_text().contains("encoded slashes"),
            "{target}: {}",
            response.body_text()
        );
    }
    Ok(())
}

#[test]
fn dot_segments_are_resolved_before_matching() -> TestResult {
    let proxy = start()?;
    assert_eq!(
        body(&proxy, "paths.test", "/files/../users/me")?,
        "exact /users/me "
    );
    assert_eq!(
        body(&proxy, "paths.test", "/users/x/%2e%2e/me")?,
        "exact /users/me "
    );
    assert_eq!(
        body(&proxy, "paths.test", "/../../users/./me")?,
        "exact /users/me "
    );
    assert_eq!(
        body(&proxy, "paths.test", "/users/%6De")?,
        "exact /users/me "
    );
    Ok(())
}

#[test]
fn wrong_method_gets_405_with_allow() -> TestResult {
    let proxy = start()?;
    let response = get(&proxy, "paths.test", "/form")?;
    assert_eq!(response.status, 405);
    assert_eq!(response.header_values("allow"), ["POST"]);
    let post = raw::send(
        proxy.port,
        b"POST /form HTTP/1.1\r\nHost: paths.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )?;
    assert_eq!(post.status, 200);
    assert_eq!(post.body_text(), "posts-only /form ");
    Ok(())
}

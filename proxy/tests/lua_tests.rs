//! `actias test`: the shipped script tests pass, and a failing test names
//! its file, line, expected and actual value.

mod support;

use std::path::Path;
use std::process::Command;

use support::{binary, TestResult};

#[test]
fn shipped_script_tests_pass() -> TestResult {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/scripts");
    let output = Command::new(binary()).arg("test").arg(&scripts).output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("hello_test.lua: answers hello world as JSON"),
        "{text}"
    );
    assert!(
        text.contains("visits_test.lua: counts on from the stored value"),
        "{text}"
    );
    assert!(
        text.contains("add-header_test.lua: forwards with the added header"),
        "{text}"
    );
    assert!(
        text.contains("session_test.lua: a valid session fetches the profile"),
        "{text}"
    );
    assert!(text.contains(" 0 failed"), "{text}");
    Ok(())
}

#[test]
fn failing_case_reports_file_line_and_values() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("answer.lua"),
        "add_event_listener(\"fetch\", function(request) return {status = 200, body = request.path} end)\n",
    )?;
    std::fs::write(
        dir.path().join("answer_test.lua"),
        "local handler = test.load(\"answer.lua\")\ntest.case(\"passes\", function() test.equal(handler({path = \"/a\"}).body, \"/a\") end)\ntest.case(\"fails\", function()\n    test.equal(handler({path = \"/b\"}).body, \"/c\", \"body\")\nend)\n",
    )?;
    let output = Command::new(binary())
        .arg("test")
        .arg(dir.path())
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("answer_test.lua: passes"), "{text}");
    assert!(
        text.contains("answer_test.lua:4: body: expected \"/c\", got \"/b\""),
        "{text}"
    );
    assert!(text.contains("1 passed, 1 failed"), "{text}");
    Ok(())
}

#[test]
fn missing_tests_are_an_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let output = Command::new(binary())
        .arg("test")
        .arg(dir.path())
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains("no *_test.lua files"));
    Ok(())
}

#[test]
fn fetch_fixture_answers_and_reports_misuse() -> TestResult {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("proxy.lua"),
        r#"add_event_listener("fetch", function(request)
    local ok, response = pcall(fetch, "https://api.example.com/items?page=2", {method = "POST", body = "x"})
    if not ok then return {status = 502, body = tostring(response)} end
    return {status = response.status, headers = {["x-seen"] = response.headers["x-a"]}, body = response.body}
end)
"#,
    )?;
    std::fs::write(
        dir.path().join("proxy_test.lua"),
        r#"local seen
local handler = test.load("proxy.lua", {fetch = function(request)
    seen = request
    return {status = 201, headers = {["X-A"] = {"1", "2"}}, body = "made"}
end})
test.case("answers from the fixture", function()
    local response = handler({path = "/"})
    test.equal(response.status, 201)
    test.equal(response.body, "made")
    test.equal(response.headers["x-seen"], {"1", "2"})
    test.equal(seen.method, "POST")
    test.equal(seen.url, "https://api.example.com/items?page=2")
    test.equal(seen.body, "x")
end)
local broken = test.load("proxy.lua", {fetch = function() return "nope" end})
test.case("a fixture that returns no table fails the fetch", function()
    local response = broken({path = "/"})
    test.equal(response.status, 502)
    test.equal(string.find(response.body, "the test's fetch function failed: it returned the string", 1, true) ~= nil, true, response.body)
end)
test.case("a fetch option that is not a function is an error", function()
    local ok, err = pcall(test.load, "proxy.lua", {fetch = {}})
    test.equal(ok, false)
    test.equal(string.find(tostring(err), "the fetch option must be a function", 1, true) ~= nil, true, tostring(err))
end)
"#,
    )?;
    let output = Command::new(binary())
        .arg("test")
        .arg(dir.path())
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("3 passed, 0 failed"), "{text}");
    Ok(())
}

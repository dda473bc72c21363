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

//! Turning a fetch handler's return value into a response.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use mlua::{Error, Result, Table, Value};

use super::request::scalar_bytes;

/// Largest total size of a script's response headers, in bytes.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// A response written by a script.
#[derive(Debug)]
pub struct ScriptResponse {
    pub status: StatusCode,
    /// Headers in the order the script listed them; a name may repeat.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// Converts the table a handler returned.
pub fn from_table(table: &Table) -> Result<ScriptResponse> {
    let status = match table.raw_get::<Value>("status")? {
        Value::Nil => table.raw_get::<Value>("status_code")?,
        status => status,
    };
    let status = match status {
        Value::Nil => StatusCode::OK,
        Value::Integer(code) => status_code(code as f64)?,
        Value::Number(code) => status_code(code)?,
        other => {
            return Err(Error::runtime(format!(
                "response status must be a number, not a {}",
                crate::bindings::args::type_name(&other)
            )))
        }
    };

    let body = match table.raw_get::<Value>("body")? {
        Value::Nil => Bytes::new(),
        Value::String(body) => Bytes::copy_from_slice(&body.as_bytes()),
        other => {
            return Err(Error::runtime(format!(
                "response body must be a string, not a {}; use json.stringify for tables",
                crate::bindings::args::type_name(&other)
            )))
        }
    };

    let mut headers = Vec::new();
    let mut header_bytes = 0usize;
    match table.raw_get::<Value>("headers")? {
        Value::Nil => {}
        Value::Table(map) => {
            for pair in map.pairs::<Value, Value>() {
                let (name, value) = pair?;
                let Value::String(name) = name else {
                    return Err(Error::runtime(format!(
                        "response header names must be strings, not a {}; write the headers \
                         as {{[\"Content-Type\"] = \"text/plain\"}}",
                        crate::bindings::args::type_name(&name)
                    )));
                };
                // The first line of a name is counted before the name is
                // checked, so that names with empty lists also reach the cap.
                header_bytes += name.as_bytes().len() + 4;
                if header_bytes > MAX_HEADER_BYTES {
                    return Err(Error::runtime(format!(
                        "response headers exceed {MAX_HEADER_BYTES} bytes; send large data in the body"
                    )));
                }
                let name_text = name.to_string_lossy();
                let header_name = HeaderName::from_bytes(&name.as_bytes()).map_err(|_| {
                    Error::runtime(format!(
                        "response header name `{name_text}` is invalid; use letters, digits \
                         and - (or !#$%&'*+.^_`|~), with no spaces or colons"
                    ))
                })?;
                let mut first = true;
                let mut push = |value: Value| -> Result<()> {
                    let bytes = scalar_bytes("headers", &name_text, value)?;
                    let value = HeaderValue::from_bytes(&bytes).map_err(|_| {
                        Error::runtime(format!(
                            "response header `{name_text}` has an invalid value; values may \
                             not contain line breaks or other control characters"
                        ))
                    })?;
                    header_bytes += value.len();
                    if !first {
                        header_bytes += header_name.as_str().len() + 4;
                    }
                    first = false;
                    if header_bytes > MAX_HEADER_BYTES {
                        return Err(Error::runtime(format!(
                            "response headers exceed {MAX_HEADER_BYTES} bytes; send large data in the body"
                        )));
                    }
                    headers.push((header_name.clone(), value));
                    Ok(())
                };
                match value {
                    Value::Table(list) => {
                        for item in list.sequence_values::<Value>() {
                            push(item?)?;
                        }
                    }
                    other => push(other)?,
                }
            }
        }
        other => {
            return Err(Error::runtime(format!(
                "response headers must be a table, not a {}",
                crate::bindings::args::type_name(&other)
            )))
        }
    }

    Ok(ScriptResponse {
        status,
        headers,
        body,
    })
}

fn status_code(code: f64) -> Result<StatusCode> {
    let valid = code.fract() == 0.0 && (200.0..=599.0).contains(&code);
    if !valid {
        return Err(Error::runtime(format!(
            "response status {code} is invalid; use a whole number from 200 to 599"
        )));
    }
    StatusCode::from_u16(code as u16)
        .map_err(|_| Error::runtime(format!("response status {code} is invalid")))
}

//! `time`: the wall clock in milliseconds since the Unix epoch, and its
//! RFC 3339 and HTTP date forms.

use chrono::{DateTime, SecondsFormat, Utc};
use mlua::{Error, Lua, Result, Table, Value};

use super::args;

/// Latest time accepted, in milliseconds: the end of the year 9999.
const MAX_MS: i64 = 253_402_300_799_999;

/// Creates the `time` table.
pub fn create(lua: &Lua) -> Result<Table> {
    let table = lua.create_table()?;
    table.raw_set("now", lua.create_function(|_, ()| Ok(now_ms()))?)?;
    table.raw_set(
        "format_rfc3339",
        lua.create_function(|_, ms: Value| {
            let time = datetime("time.format_rfc3339", ms)?;
            Ok(time.to_rfc3339_opts(SecondsFormat::Millis, true))
        })?,
    )?;
    table.raw_set(
        "format_http_date",
        lua.create_function(|_, ms: Value| {
            let time = datetime("time.format_http_date", ms)?;
            Ok(time.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        })?,
    )?;
    table.raw_set(
        "parse_rfc3339",
        lua.create_function(|_, text: Value| {
            let text = args::string("time.parse_rfc3339", 1, text)?;
            let text = text.to_string_lossy();
            DateTime::parse_from_rfc3339(&text)
                .map(|time| time.timestamp_millis())
                .map_err(|e| {
                    Error::runtime(format!(
                        "time.parse_rfc3339: `{text}` is not an RFC 3339 time ({e}); pass a time \
                         such as \"2026-12-04T18:30:00Z\""
                    ))
                })
        })?,
    )?;
    table.raw_set(
        "parse_http_date",
        lua.create_function(|_, text: Value| {
            let text = args::string("time.parse_http_date", 1, text)?;
            let text = text.to_string_lossy();
            DateTime::parse_from_rfc2822(&text)
                .map(|time| time.timestamp_millis())
                .map_err(|e| {
                    Error::runtime(format!(
                        "time.parse_http_date: `{text}` is not an HTTP date ({e}); pass a date \
                         such as \"Fri, 04 Dec 2026 18:30:00 GMT\""
                    ))
                })
        })?,
    )?;
    table.set_readonly(true);
    Ok(table)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn datetime(function: &str, ms: Value) -> Result<DateTime<Utc>> {
    let ms = args::integer(function, 1, ms, 0..=MAX_MS)?;
    DateTime::from_timestamp_millis(ms).ok_or_else(|| {
        Error::runtime(format!(
            "{function}: {ms} is outside the supported range; pass milliseconds from 0 to {MAX_MS}"
        ))
    })
}

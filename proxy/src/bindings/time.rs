//! `time`: the wall clock in milliseconds since the Unix epoch, and its
//! RFC 3339 and HTTP date forms.

use chrono::format::ParseErrorKind;
use chrono::{DateTime, Datelike, NaiveDateTime, SecondsFormat, Utc, Weekday};
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
            let time = DateTime::parse_from_rfc3339(&text).map_err(|e| {
                Error::runtime(format!(
                    "time.parse_rfc3339: `{}` is not an RFC 3339 time ({e}); pass a time \
                     such as \"2026-12-04T18:30:00Z\"",
                    args::shown(&text)
                ))
            })?;
            in_range("time.parse_rfc3339", &text, time.timestamp_millis())
        })?,
    )?;
    table.raw_set(
        "parse_http_date",
        lua.create_function(|_, text: Value| {
            let text = args::string("time.parse_http_date", 1, text)?;
            let text = text.to_string_lossy();
            let ms = parse_http_date(&text).map_err(|e| {
                Error::runtime(format!(
                    "time.parse_http_date: `{}` is not an HTTP date ({e}); pass a date \
                     such as \"Fri, 04 Dec 2026 18:30:00 GMT\"",
                    args::shown(&text)
                ))
            })?;
            in_range("time.parse_http_date", &text, ms)
        })?,
    )?;
    table.set_readonly(true);
    Ok(table)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Parses the preferred HTTP date form and the two obsolete ones that
/// RFC 9110 (section 5.6.7) requires recipients to accept: RFC 850
/// (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime
/// (`Sun Nov  6 08:49:37 1994`). Returns milliseconds since the epoch.
fn parse_http_date(text: &str) -> std::result::Result<i64, String> {
    let preferred = match DateTime::parse_from_rfc2822(text) {
        Ok(time) => return Ok(time.timestamp_millis()),
        Err(e) => e,
    };
    if let Some(time) = parse_rfc850(text.trim(), Utc::now().year())? {
        return Ok(time.and_utc().timestamp_millis());
    }
    if let Ok(time) = NaiveDateTime::parse_from_str(text.trim(), "%a %b %e %H:%M:%S %Y") {
        return Ok(time.and_utc().timestamp_millis());
    }
    Err(match preferred.kind() {
        ParseErrorKind::Impossible => {
            "there is no such date, or the weekday does not match it".to_string()
        }
        _ => preferred.to_string(),
    })
}

/// Parses `Sunday, 06-Nov-94 08:49:37 GMT`. Returns `None` when `text` is
/// not in this form. A two-digit year more than 50 years after
/// `current_year` is read as the latest past year with those digits, as
/// RFC 9110 requires.
fn parse_rfc850(
    text: &str,
    current_year: i32,
) -> std::result::Result<Option<NaiveDateTime>, String> {
    let Some((weekday, rest)) = text.split_once(", ") else {
        return Ok(None);
    };
    let Ok(weekday) = weekday.parse::<Weekday>() else {
        return Ok(None);
    };
    // Any year works while parsing; the real one is set below, before the
    // weekday is compared.
    let Ok(time) = NaiveDateTime::parse_from_str(rest, "%d-%b-%y %H:%M:%S GMT") else {
        return Ok(None);
    };
    let century = current_year - current_year.rem_euclid(100);
    let mut year = century + time.year().rem_euclid(100);
    if year > current_year + 50 {
        year -= 100;
    }
    let Some(time) = time.with_year(year) else {
        return Err(format!("there is no {} {year}", time.format("%d %b")));
    };
    if time.weekday() != weekday {
        return Err(format!(
            "{} is a {}, not a {weekday}",
            time.format("%d %b %Y"),
            time.format("%A")
        ));
    }
    Ok(Some(time))
}

/// Returns `ms` when the other time functions take it, so that a parsed
/// time can always be formatted again.
fn in_range(function: &str, text: &str, ms: i64) -> Result<i64> {
    if (0..=MAX_MS).contains(&ms) {
        return Ok(ms);
    }
    Err(Error::runtime(format!(
        "{function}: `{}` is outside the supported range; pass a time from 1970 to the end \
         of 9999",
        args::shown(text)
    )))
}

fn datetime(function: &str, ms: Value) -> Result<DateTime<Utc>> {
    let ms = args::integer(function, 1, ms, 0..=MAX_MS)?;
    DateTime::from_timestamp_millis(ms).ok_or_else(|| {
        Error::runtime(format!(
            "{function}: {ms} is outside the supported range; pass milliseconds from 0 to {MAX_MS}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_in_all_three_forms() {
        let expected = 784_111_777_000;
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").ok(),
            Some(expected)
        );
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT").ok(),
            Some(expected)
        );
        assert_eq!(
            parse_http_date("Sun Nov  6 08:49:37 1994").ok(),
            Some(expected)
        );
        assert!(parse_http_date("Sun Nov  6 08:49:37").is_err());
        assert!(parse_http_date("Monday, 06-Nov-94 08:49:37 GMT").is_err());
        assert!(parse_http_date("2015-10-21").is_err());
    }

    #[test]
    fn two_digit_years_stay_within_fifty_years_ahead() {
        let in_year =
            |text: &str, current: i32| parse_rfc850(text, current).unwrap().map(|time| time.year());
        // Each weekday matches the expected year, so a wrong year fails.
        assert_eq!(
            in_year("Thursday, 06-Nov-70 08:49:37 GMT", 2026),
            Some(2070)
        );
        assert_eq!(in_year("Sunday, 06-Nov-94 08:49:37 GMT", 2026), Some(1994));
        assert_eq!(
            in_year("Wednesday, 06-Nov-24 08:49:37 GMT", 2026),
            Some(2024)
        );
        assert_eq!(
            in_year("Wednesday, 06-Nov-24 08:49:37 GMT", 2075),
            Some(2024)
        );
        assert_eq!(
            in_year("Thursday, 06-Nov-80 08:49:37 GMT", 2026),
            Some(1980)
        );
        assert!(parse_rfc850("Sunday, 06-Nov-70 08:49:37 GMT", 2026).is_err());
        assert_eq!(
            parse_rfc850("Sun, 06 Nov 1994 08:49:37 GMT", 2026),
            Ok(None)
        );
    }
}

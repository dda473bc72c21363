//! Cron schedules: parsing five-field expressions and finding the next
//! time one fires, in UTC.
//!
//! The fields are minute, hour, day of month, month and day of week, each
//! a `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a comma
//! list of those; months and days also take names (`jan`, `mon`). As in
//! Vixie cron, when both the day of month and the day of week are
//! restricted, a day matching either one fires. `@hourly`, `@daily`,
//! `@weekly`, `@monthly` and `@yearly` stand for their usual expressions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};

use crate::metrics::METRICS;
use crate::script::{ScheduledEvent, ScriptError};
use crate::snapshot::{Route, Snapshot};

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    days_of_week: u64,
    /// The day-of-month field was `*`.
    any_day_of_month: bool,
    /// The day-of-week field was `*`.
    any_day_of_week: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Parses a cron expression; the error names the field and the fix.
pub fn parse(expression: &str) -> Result<Schedule, String> {
    let expanded = match expression.trim() {
        "@hourly" => "0 * * * *",
        "@daily" | "@midnight" => "0 0 * * *",
        "@weekly" => "0 0 * * 0",
        "@monthly" => "0 0 1 * *",
        "@yearly" | "@annually" => "0 0 1 1 *",
        other => other,
    };
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    if fields.len() != 5 && expanded.starts_with('@') {
        return Err(format!(
            "schedule `{expression}` is not a known shortcut; use @hourly, @daily, @weekly, \
             @monthly or @yearly, or five fields such as \"*/5 * * * *\""
        ));
    }
    if fields.len() != 5 {
        return Err(format!(
            "schedule `{expression}` has {} fields; write five: minute hour day-of-month month \
             day-of-week, for example \"*/5 * * * *\"",
            fields.len()
        ));
    }
    let field = |index: usize, name: &str, min: u32, max: u32, names: &[&str]| {
        parse_field(fields[index], min, max, names)
            .map_err(|detail| format!("schedule `{expression}`: the {name} field {detail}"))
    };
    let minutes = field(0, "minute", 0, 59, &[])?;
    let hours = field(1, "hour", 0, 23, &[])?;
    let days_of_month = field(2, "day-of-month", 1, 31, &[])?;
    let months = field(3, "month", 1, 12, &MONTHS)?;
    let mut days_of_week = field(4, "day-of-week", 0, 7, &DAYS)?;
    // 7 is another name for Sunday.
    if days_of_week & (1 << 7) != 0 {
        days_of_week = (days_of_week | 1) & !(1 << 7);
    }
    Ok(Schedule {
        minutes,
        hours,
        days_of_month,
        months,
        days_of_week,
        any_day_of_month: fields[2] == "*",
        any_day_of_week: fields[4] == "*",
    })
}

/// Parses one field into a bit set of the values it matches.
fn parse_field(field: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let value = |text: &str| -> Result<u32, String> {
        let lower = text.to_ascii_lowercase();
        if let Some(position) = names.iter().position(|name| *name == lower) {
            // Month names count from 1, day names from 0.
            return Ok(position as u32 + min.min(1));
        }
        match text.parse::<u32>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ if names.is_empty() => Err(format!("has `{text}`; use a number from {min} to {max}")),
            _ => Err(format!(
                "has `{text}`; use a number from {min} to {max} or a name such as `{}`",
                names[0]
            )),
        }
    };
    let mut set = 0u64;
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => match step.parse::<u32>() {
                Ok(step) if step > 0 => (range, step),
                _ => return Err(format!("has the step `{step}`; use a whole number from 1")),
            },
            None => (part, 1),
        };
        let (start, end) = if range == "*" {
            (min, max)
        } else if let Some((start, end)) = range.split_once('-') {
            (value(start)?, value(end)?)
        } else {
            let start = value(range)?;
            // `5/15` means from 5 to the end in steps of 15.
            (start, if step > 1 { max } else { start })
        };
        if start > end {
            return Err(format!(
                "has the range `{range}` that runs backwards; write the smaller value first"
            ));
        }
        let mut n = start;
        while n <= end {
            set |= 1 << n;
            n += step;
        }
    }
    Ok(set)
}

impl Schedule {
    /// Returns the first time after `after` (to the minute) at which the
    /// schedule fires, or `None` when it never does (such as `0 0 30 2 *`).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = after.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
        let mut time = start;
        // Every valid schedule fires within eight years (leap days).
        let horizon = start + Duration::days(8 * 366);
        while time < horizon {
            if self.months & (1 << time.month()) == 0 {
                let (year, month) = if time.month() == 12 {
                    (time.year() + 1, 1)
                } else {
                    (time.year(), time.month() + 1)
                };
                time = Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).single()?;
                continue;
            }
            if !self.day_matches(&time) {
                time = Utc
                    .with_ymd_and_hms(time.year(), time.month(), time.day(), 0, 0, 0)
                    .single()?
                    + Duration::days(1);
                continue;
            }
            if self.hours & (1 << time.hour()) == 0 {
                time = time.with_minute(0)? + Duration::hours(1);
                continue;
            }
            if self.minutes & (1 << time.minute()) == 0 {
                time += Duration::minutes(1);
                continue;
            }
            return Some(time);
        }
        None
    }

    fn day_matches(&self, time: &DateTime<Utc>) -> bool {
        let by_month = self.days_of_month & (1 << time.day()) != 0;
        let by_week = self.days_of_week & (1 << time.weekday().num_days_from_sunday()) != 0;
        match (self.any_day_of_month, self.any_day_of_week) {
            (true, true) => true,
            (false, true) => by_month,
            (true, false) => by_week,
            (false, false) => by_month || by_week,
        }
    }
}

/// Runs the scheduled handlers of the served snapshot on time, for as long
/// as the process lives. A reload that changes a route's schedule takes
/// effect from the next tick; a run already started finishes on the
/// snapshot it began with.
pub async fn run_schedules(shared: Arc<ArcSwap<Snapshot>>) {
    let mut due: HashMap<(String, String), DateTime<Utc>> = HashMap::new();
    loop {
        let now = Utc::now();
        let snapshot = shared.load_full();
        let mut seen = Vec::new();
        for (index, route) in snapshot.routes.iter().enumerate() {
            let Some((expression, schedule)) = &route.schedule else {
                continue;
            };
            let key = (route.name.clone(), expression.clone());
            let next = *due
                .entry(key.clone())
                .or_insert_with(|| schedule.next_after(now).unwrap_or(DateTime::<Utc>::MAX_UTC));
            if now >= next {
                let started = start_run(
                    snapshot.clone(),
                    index,
                    expression.clone(),
                    next.timestamp_millis(),
                );
                if let Err(error) = started {
                    tracing::error!(route = %route.name, error, "scheduled run not started");
                }
                due.insert(
                    key.clone(),
                    schedule.next_after(now).unwrap_or(DateTime::<Utc>::MAX_UTC),
                );
            }
            seen.push(key);
        }
        due.retain(|key, _| seen.contains(key));
        // Wake at the next whole second, so that a run starts within a
        // second of its minute and a reload is seen within a second.
        let millis = 1000 - (Utc::now().timestamp_subsec_millis() as u64 % 1000);
        tokio::time::sleep(std::time::Duration::from_millis(millis.max(1))).await;
    }
}

/// Starts a run of the route at `index` in `snapshot`.
fn start_run(
    snapshot: Arc<Snapshot>,
    index: usize,
    cron: String,
    scheduled_time_ms: i64,
) -> Result<tokio::sync::oneshot::Receiver<RunReport>, String> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    // Each run gets a thread of its own, so a run that never yields, such
    // as one busy inside a coroutine it created, delays no other run, no
    // request and no reload.
    std::thread::Builder::new()
        .name("actias-scheduled".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    tracing::error!(%error, "cannot start a runtime for a scheduled run");
                    return;
                }
            };
            let report =
                runtime.block_on(run_now(&snapshot.routes[index], &cron, scheduled_time_ms));
            let _ = sender.send(report);
            runtime.shutdown_background();
        })
        .map_err(|e| format!("cannot start a thread for the scheduled run: {e}"))?;
    Ok(receiver)
}

/// Runs the route at `index` in `snapshot` once, as `manual`, on a thread
/// of its own like timed runs, and waits for the report.
pub async fn run_by_hand(snapshot: Arc<Snapshot>, index: usize) -> Result<RunReport, String> {
    start_run(
        snapshot,
        index,
        "manual".to_string(),
        crate::bindings::now_ms(),
    )?
    .await
    .map_err(|_| "the scheduled run ended without a report; see the log".to_string())
}

/// The result of one scheduled run.
pub struct RunReport {
    /// `ok`, `error` or `limit`.
    pub outcome: &'static str,
    pub duration: std::time::Duration,
    /// The error, with secrets removed, when the run failed.
    pub error: Option<String>,
}

/// Runs the scheduled handler of `route` once, logs the run and counts it.
pub async fn run_now(route: &Route, cron: &str, scheduled_time_ms: i64) -> RunReport {
    let started = Instant::now();
    let Some(script) = &route.script else {
        return RunReport {
            outcome: "error",
            duration: started.elapsed(),
            error: Some(format!("route `{}` has no script", route.name)),
        };
    };
    let event = ScheduledEvent {
        cron: cron.to_string(),
        scheduled_time_ms,
    };
    let (result, cpu) = script.run_scheduled(&event, route.cpu_limit).await;
    let duration = started.elapsed();
    let (outcome, error) = match result {
        Ok(()) => ("ok", None),
        Err(ScriptError::Limit { message, detail }) => {
            ("limit", Some(format!("{message}: {detail}")))
        }
        Err(other) => ("error", Some(other.to_string())),
    };
    METRICS
        .scheduled_runs
        .with_label_values(&[route.name.as_str(), outcome])
        .inc();
    let duration_ms = duration.as_secs_f64() * 1000.0;
    let cpu_ms = cpu.as_secs_f64() * 1000.0;
    match &error {
        None => tracing::info!(
            route = %route.name,
            cron,
            outcome,
            duration_ms,
            cpu_ms,
            "scheduled run"
        ),
        Some(error) => tracing::warn!(
            route = %route.name,
            cron,
            outcome,
            duration_ms,
            cpu_ms,
            error = %error.replace('\n', " | "),
            "scheduled run failed"
        ),
    }
    RunReport {
        outcome,
        duration,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn next(expression: &str, after: &str) -> String {
        parse(expression)
            .unwrap()
            .next_after(at(after))
            .map(|t| t.to_rfc3339())
            .unwrap_or_else(|| "never".into())
    }

    #[test]
    fn finds_the_next_minute_hour_and_day() {
        assert_eq!(
            next("* * * * *", "2026-12-04T18:30:10Z"),
            "2026-12-04T18:31:00+00:00"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-12-04T18:30:00Z"),
            "2026-12-04T18:45:00+00:00"
        );
        assert_eq!(
            next("0 3 * * *", "2026-12-04T18:30:00Z"),
            "2026-12-05T03:00:00+00:00"
        );
        assert_eq!(
            next("@monthly", "2026-12-04T18:30:00Z"),
            "2027-01-01T00:00:00+00:00"
        );
        assert_eq!(
            next("30 9 * * mon-fri", "2026-12-04T18:30:00Z"),
            "2026-12-07T09:30:00+00:00"
        );
        assert_eq!(
            next("0 0 29 feb *", "2026-12-04T18:30:00Z"),
            "2028-02-29T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 * * 7", "2026-12-04T18:30:00Z"),
            "2026-12-06T00:00:00+00:00"
        );
        assert_eq!(
            next("5/20 * * * *", "2026-12-04T18:30:00Z"),
            "2026-12-04T18:45:00+00:00"
        );
        // Day of month or day of week, when both are set.
        assert_eq!(
            next("0 0 13 * fri", "2026-12-04T18:30:00Z"),
            "2026-12-11T00:00:00+00:00"
        );
        assert_eq!(next("0 0 30 2 *", "2026-12-04T18:30:00Z"), "never");
    }

    #[test]
    fn rejects_bad_fields_with_the_field_named() {
        let error = parse("* * *").unwrap_err();
        assert!(error.contains("has 3 fields"), "{error}");
        let error = parse("61 * * * *").unwrap_err();
        assert!(error.contains("minute field has `61`"), "{error}");
        let error = parse("* * * * */0").unwrap_err();
        assert!(error.contains("step `0`"), "{error}");
        let error = parse("* 5-2 * * *").unwrap_err();
        assert!(error.contains("runs backwards"), "{error}");
        let error = parse("* * * smarch *").unwrap_err();
        assert!(error.contains("month field"), "{error}");
    }
}

//! Log output: one subscriber for lifecycle logs, the access log and
//! script logs, in JSON or text lines on standard error.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSection};

/// Target of access-log lines.
pub const ACCESS_TARGET: &str = "actias::access";
/// Target of lines written by scripts through `log.*` and `print`.
pub const SCRIPT_TARGET: &str = "actias::script";

/// Returns `text` with line breaks and other control characters escaped,
/// so that text a script controls (an error message) stays on one log line.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

/// Installs the global subscriber. `RUST_LOG` overrides `section.level`;
/// the access log is filtered out when `section.access_log` is off.
pub fn init(section: &LogSection) {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&section.level));
    if !section.access_log {
        if let Ok(directive) = format!("{ACCESS_TARGET}=off").parse() {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match section.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    if let Err(e) = result {
        eprintln!("actias: cannot install the logger: {e}");
    }
}

//! Log output: one subscriber for lifecycle logs, the access log and
//! script logs, in JSON or text lines on standard error.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Set when log lines are text, where a field value runs to the next space.
static TEXT_FORMAT: AtomicBool = AtomicBool::new(false);

/// Returns a client-controlled field value as it must be logged: in text
/// lines, a value with spaces, quotes, `=` or control characters is quoted
/// and escaped, so that it cannot pass for further fields.
pub fn field(text: &str) -> Cow<'_, str> {
    quote_for_text(text, TEXT_FORMAT.load(Ordering::Relaxed))
}

fn quote_for_text(text: &str, text_format: bool) -> Cow<'_, str> {
    let plain = !text.is_empty()
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=');
    if plain || !text_format {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(format!("{text:?}"))
    }
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
    TEXT_FORMAT.store(section.format == LogFormat::Text, Ordering::Relaxed);
    if let Err(e) = result {
        eprintln!("actias: cannot install the logger: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_fields_with_spaces_are_quoted() {
        assert_eq!(quote_for_text("a.test", true), "a.test");
        assert_eq!(
            quote_for_text("a.test status=200", true),
            r#""a.test status=200""#
        );
        assert_eq!(quote_for_text("x\"y", true), r#""x\"y""#);
        assert_eq!(quote_for_text("a\nb", true), r#""a\nb""#);
        assert_eq!(quote_for_text("", true), r#""""#);
        assert_eq!(quote_for_text("a status=200", false), "a status=200");
    }
}

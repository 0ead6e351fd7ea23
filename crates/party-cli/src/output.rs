//! Writing to standard output: plain tables, times for people, and JSON.

use std::io::Write;

use jiff::{SignedDuration, Timestamp};
use party::TaskError;

/// Write `text` to standard output. A closed pipe (`party list | head`) is not an error.
pub(crate) fn print(text: &str) -> Result<(), TaskError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(TaskError::failed(format!(
            "cannot write to standard output: {e}"
        ))),
        _ => Ok(()),
    }
}

/// Write `value` as pretty JSON and a newline.
pub(crate) fn print_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<(), TaskError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| TaskError::failed(format!("cannot write JSON: {e}")))?;
    print(&format!("{text}\n"))
}

/// A JSON array written a part at a time, as [`print_json`] writes a whole one: pretty, each
/// element indented by two spaces, `[]` when it has none.
#[derive(Debug, Default)]
pub(crate) struct JsonArray {
    started: bool,
}

impl JsonArray {
    /// Write these elements after those already written.
    pub(crate) fn print(
        &mut self,
        values: impl IntoIterator<Item = serde_json::Value>,
    ) -> Result<(), TaskError> {
        let mut text = String::new();
        for value in values {
            let pretty = serde_json::to_string_pretty(&value)
                .map_err(|e| TaskError::failed(format!("cannot write JSON: {e}")))?;
            text.push_str(if self.started { ",\n  " } else { "[\n  " });
            self.started = true;
            // Pretty JSON breaks lines only between tokens (a string's line breaks are
            // escaped), so indenting every line nests the element.
            text.push_str(&pretty.replace('\n', "\n  "));
        }
        print(&text)
    }

    /// Close the array.
    pub(crate) fn end(self) -> Result<(), TaskError> {
        print(if self.started { "\n]\n" } else { "[]\n" })
    }
}

/// Flush standard output before the process exits.
pub(crate) fn flush() {
    let _ = std::io::stdout().flush();
}

/// The widest a table cell is printed; longer values are cut with `...` (`show` and `--json`
/// have them whole).
pub(crate) const MAX_CELL_CHARS: usize = 64;

/// A plain-text table: a header row and left-aligned columns two spaces apart. Every cell is
/// made safe for a terminal ([`cell`]; the last column, which is not padded, is escaped but
/// not cut); no value, however long, can break the layout.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let last = row.len().saturating_sub(1);
            // The last column is not padded, so it is shown whole (escaped).
            row.iter()
                .enumerate()
                .map(|(i, c)| if i == last { field(c) } else { cell(c) })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                // Padded by hand: `format!("{:<width$}")` panics for widths past u16::MAX.
                let pad = width.saturating_sub(cell.chars().count()) + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// A value as a table shows it: control characters escaped (an ESC byte stored in a task never
/// reaches the terminal raw) and cut to [`MAX_CELL_CHARS`].
pub(crate) fn cell(value: &str) -> String {
    truncate(&party::validate::printable(value), MAX_CELL_CHARS)
}

/// A value as `show` prints it: whole, with control characters escaped.
pub(crate) fn field(value: &str) -> String {
    party::validate::printable(value).into_owned()
}

/// A time for a table: RFC 3339 UTC to the second, e.g. `2027-01-31T09:00:00Z`.
pub(crate) fn short_time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// How far `t` is from `now`, for people: `in 29m`, `3s ago`, `now`.
pub(crate) fn relative(t: Timestamp, now: Timestamp) -> String {
    let d = t.duration_since(now);
    if d.abs() < SignedDuration::from_secs(1) {
        return "now".to_string();
    }
    let text = rough(d.abs());
    if d.is_positive() {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// A duration rounded to its largest unit or two: `1d4h`, `29m`, `45s`.
pub(crate) fn rough(d: SignedDuration) -> String {
    let secs = d.as_secs().abs();
    let (days, hours, mins, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (days, hours, mins) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) if s == 0 => format!("{m}m"),
        (0, 0, m) => format!("{m}m{s}s"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h{m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d{h}h"),
    }
}

/// Shorten `text` to at most `max` characters, marking the cut with `...`.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let kept: String = text.chars().take(max.saturating_sub(3)).collect();
    format!("{kept}...")
}

/// `-` for nothing.
pub(crate) fn or_dash(text: Option<String>) -> String {
    text.unwrap_or_else(|| "-".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["ID", "STATE"],
            &[
                vec!["a".into(), "done".into()],
                vec!["bbb".into(), "x".into()],
            ],
        );
        assert_eq!(t, "ID   STATE\na    done\nbbb  x\n");
    }

    #[test]
    fn tables_survive_long_values_and_escape_control_characters() {
        let long = "q".repeat(70_000);
        let t = table(
            &["QUEUE", "DATA"],
            &[
                vec![long, "x".into()],
                vec!["a\u{1b}[2Jb".into(), "y\u{7}".into()],
            ],
        );
        assert!(t.lines().all(|l| l.chars().count() < 100), "{t}");
        assert!(!t.contains('\u{1b}'), "{t}");
        assert!(t.contains("a\\u{1b}[2Jb"), "{t}");
        assert!(t.contains("y\\u{7}") && !t.contains('\u{7}'), "{t}");
    }

    #[test]
    fn relative_times_read_naturally() {
        let now: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(relative(now, now), "now");
        assert_eq!(relative(now + SignedDuration::from_mins(29), now), "in 29m");
        assert_eq!(relative(now - SignedDuration::from_secs(3), now), "3s ago");
        assert_eq!(
            relative(now + SignedDuration::from_hours(28), now),
            "in 1d4h"
        );
        assert_eq!(rough(SignedDuration::from_secs(5400)), "1h30m");
    }
}

//! Durations written as a number and a unit: `90s`, `30m`, `2h`, `7d`, `1w`, combinable as `1h30m`.

use jiff::SignedDuration;

/// The accepted form, repeated in every error message.
const FORM: &str = "write a whole number followed by a unit s, m, h, d or w \
                    (like 90s, 30m, 2h, 7d or 1w), combined from the largest unit \
                    to the smallest (like 1h30m)";

/// Units from largest to smallest, with their length in seconds.
const UNITS: [(char, i64, &str); 5] = [
    ('w', 7 * 86_400, "weeks"),
    ('d', 86_400, "days"),
    ('h', 3_600, "hours"),
    ('m', 60, "minutes"),
    ('s', 1, "seconds"),
];

/// Parses a duration such as `90s`, `30m`, `2h`, `7d`, `1w` or a combination like `1h30m`.
///
/// Units are `s` (seconds), `m` (minutes), `h` (hours), `d` (days of exactly 24 hours) and
/// `w` (weeks of exactly 7 days). Components are whole numbers, each unit appears at most once,
/// from the largest to the smallest; spaces between components are allowed (`1h 30m`).
/// A day here is always 24 hours: for "the same wall-clock time every day" use a cron rule.
///
/// # Errors
///
/// A message naming what was wrong (missing unit, unknown unit, fraction, sign, order,
/// overflow) and the accepted form.
///
/// # Example
///
/// ```
/// use party::recurrence::parse_duration;
/// use jiff::SignedDuration;
///
/// assert_eq!(parse_duration("1h30m"), Ok(SignedDuration::from_mins(90)));
/// assert!(parse_duration("90").unwrap_err().contains("unit"));
/// ```
pub fn parse_duration(s: &str) -> Result<SignedDuration, String> {
    let fail = |what: String| Err(format!("invalid duration {s:?}: {what}; {FORM}"));
    let text = s.trim();
    if text.is_empty() {
        return fail("it is empty".into());
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut total: i64 = 0;
    // Index into UNITS of the last unit used; the next one must be smaller.
    let mut last_unit: Option<usize> = None;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            let c = text[i..].chars().next().unwrap_or(' ');
            return match c {
                '-' | '+' => fail("a duration has no sign".into()),
                _ => fail(format!("expected a number where {:?} is", &text[i..])),
            };
        }
        let digits = &text[start..i];
        let Ok(n) = digits.parse::<i64>() else {
            return fail(format!("{digits} is too large"));
        };
        let Some(&c) = bytes.get(i) else {
            return fail(format!("{digits} has no unit"));
        };
        if c == b'.' || c == b',' {
            return fail("only whole numbers are allowed (write 1h30m, not 1.5h)".into());
        }
        let c = (c as char).to_ascii_lowercase();
        let Some(unit) = UNITS.iter().position(|(u, _, _)| *u == c) else {
            let rest: String = text[i..]
                .chars()
                .take_while(|c| c.is_alphabetic())
                .collect();
            let rest = if rest.is_empty() {
                text[i..].chars().take(1).collect()
            } else {
                rest
            };
            return fail(format!("unknown unit {rest:?}"));
        };
        // Reject longer unit words like "min" or "hours": only the single letter is accepted.
        if bytes.get(i + 1).is_some_and(|b| b.is_ascii_alphabetic()) {
            let word: String = text[i..]
                .chars()
                .take_while(|c| c.is_alphabetic())
                .collect();
            return fail(format!("unknown unit {word:?}"));
        }
        i += 1;
        if let Some(prev) = last_unit {
            if unit == prev {
                return fail(format!("the unit {c} appears twice"));
            }
            if unit < prev {
                return fail(format!(
                    "{} come after {}; put larger units first",
                    UNITS[unit].2, UNITS[prev].2
                ));
            }
        }
        last_unit = Some(unit);
        let Some(secs) = n
            .checked_mul(UNITS[unit].1)
            .and_then(|v| total.checked_add(v))
        else {
            return fail("it is too large".into());
        };
        total = secs;
    }
    // SignedDuration holds i64 seconds, but keep durations within what timestamps can use.
    if total > MAX_SECONDS {
        return fail("it is too large (at most 100 years)".into());
    }
    Ok(SignedDuration::from_secs(total))
}

/// Durations are limited to 100 years: beyond that no timestamp arithmetic is meaningful.
pub(crate) const MAX_SECONDS: i64 = 100 * 366 * 86_400;

/// Formats a duration the way [`parse_duration`] reads it: `30m`, `1h30m`, `7d`, `1d12h`.
///
/// Weeks are written as days (`14d`), which reads naturally for billing periods. Fractions of a
/// second are written with `ms`, `us` or `ns` only for durations that have them; those forms are
/// for display and are not accepted by [`parse_duration`]. A negative duration gets a leading `-`.
///
/// # Example
///
/// ```
/// use party::recurrence::format_duration;
/// use jiff::SignedDuration;
///
/// assert_eq!(format_duration(SignedDuration::from_mins(90)), "1h30m");
/// assert_eq!(format_duration(SignedDuration::from_secs(0)), "0s");
/// ```
pub fn format_duration(d: SignedDuration) -> String {
    let mut out = String::new();
    if d.is_negative() {
        out.push('-');
    }
    let d = d.unsigned_abs();
    let mut secs = d.as_secs();
    for (unit, len, _) in UNITS.iter().skip(1) {
        let len = *len as u64;
        let n = secs / len;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
            secs %= len;
        }
    }
    let nanos = d.subsec_nanos();
    if nanos > 0 {
        if nanos % 1_000_000 == 0 {
            out.push_str(&format!("{}ms", nanos / 1_000_000));
        } else if nanos % 1_000 == 0 {
            out.push_str(&format!("{}us", nanos / 1_000));
        } else {
            out.push_str(&format!("{nanos}ns"));
        }
    }
    if out.is_empty() || out == "-" {
        out.push_str("0s");
    }
    out
}
